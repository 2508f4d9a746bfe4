"""Pose retargeting (signgen.keypoints.retarget) and ``signgen keypoints retarget``.

The skeletons here are built by forward kinematics from the layout's own bone lists
(``layout.BODY_LIMBS``, ``layout.HAND_BONES``), independently of the module's tree: a
person is a set of bone lengths, a pose a set of bone angles, so "A's pose on B's body"
is known exactly and every acceptance property can be checked against it.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from signgen.cli import main
from signgen.errors import InputError
from signgen.keypoints import KeypointSequence, load_keypoints
from signgen.keypoints import layout as L
from signgen.keypoints.retarget import (
    RetargetWarning,
    load_reference,
    retarget_points,
    retarget_sequence,
)

HANDS = (L.LEFT_HAND.start, L.RIGHT_HAND.start)
ARM_BONES = ((L.LEFT_SHOULDER, L.LEFT_ELBOW), (L.LEFT_ELBOW, L.LEFT_WRIST),
             (L.RIGHT_SHOULDER, L.RIGHT_ELBOW), (L.RIGHT_ELBOW, L.RIGHT_WRIST))  # fmt: skip
TORSO_BONES = ((L.LEFT_SHOULDER, L.RIGHT_SHOULDER), (L.LEFT_SHOULDER, L.LEFT_HIP),
               (L.RIGHT_SHOULDER, L.RIGHT_HIP))  # fmt: skip
HAND_BONES = tuple((h + a, h + b) for h in HANDS for a, b in L.HAND_BONES)
BONES = ARM_BONES + TORSO_BONES + HAND_BONES
HEAD = (L.LEFT_EYE, L.RIGHT_EYE, L.LEFT_EAR, L.RIGHT_EAR, *L.FACE)


def person(rng: np.random.Generator, scale: float) -> dict:
    """Bone lengths (pixels) of one person: its own proportions around ``scale``."""

    def jitter(v: float) -> float:
        return float(v * scale * rng.uniform(0.85, 1.15))

    return {
        "half_shoulders": jitter(45),
        "neck": jitter(35),
        "flank": jitter(120),
        "upper": [jitter(60), jitter(60)],
        "fore": [jitter(55), jitter(55)],
        "hand": [[jitter(9) for _ in range(20)] for _ in range(2)],
        "wrist_offset": np.array([1.5, -1.0]) * scale,
        # The head: a rigid patch of points around the nose (a person's own face shape).
        "head": rng.normal(0, 12 * scale, size=(len(HEAD), 2)),
        "centre": np.array([rng.uniform(90, 120), rng.uniform(110, 140)]),
    }


def motion(rng: np.random.Generator, T: int) -> dict:
    """Bone angles (radians, image axes) per frame: smooth random walks around a pose."""

    def walk(base: float, n: int = 1, step: float = 0.15) -> np.ndarray:
        return base + np.cumsum(rng.normal(0, step, size=(T, n)), axis=0)

    return {
        "sway": np.cumsum(rng.normal(0, 1.0, size=(T, 2)), axis=0),
        "shoulders": walk(0.0, step=0.02)[:, 0],
        "neck": walk(-np.pi / 2, step=0.03)[:, 0],
        "head": walk(0.0, step=0.03)[:, 0],
        "flank": walk(np.pi / 2, 2, step=0.01),
        "upper": walk(np.pi / 2, 2),
        "fore": walk(-np.pi / 2, 2),
        "hand": walk(-np.pi / 2, 40, step=0.2).reshape(T, 2, 20),
    }


def unit(a: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(a), np.sin(a)], axis=-1)


def pose(p: dict, m: dict) -> np.ndarray:
    """Person ``p`` performing motion ``m``: (T, 133, 3), legs and feet missing."""
    T = m["sway"].shape[0]
    pts = np.zeros((T, L.NUM_POINTS, 3))
    neck = p["centre"] + m["sway"]
    half = p["half_shoulders"] * unit(m["shoulders"])
    pts[:, L.LEFT_SHOULDER, :2] = neck + half
    pts[:, L.RIGHT_SHOULDER, :2] = neck - half
    nose = neck + p["neck"] * unit(m["neck"])
    pts[:, L.NOSE, :2] = nose
    c, s = np.cos(m["head"])[:, None], np.sin(m["head"])[:, None]
    hx, hy = p["head"][:, 0], p["head"][:, 1]
    pts[:, list(HEAD), :2] = nose[:, None] + np.stack([c * hx - s * hy, s * hx + c * hy], -1)
    for i, (sh, el, wr, hip, hand) in enumerate(
        ((L.LEFT_SHOULDER, L.LEFT_ELBOW, L.LEFT_WRIST, L.LEFT_HIP, HANDS[0]),
         (L.RIGHT_SHOULDER, L.RIGHT_ELBOW, L.RIGHT_WRIST, L.RIGHT_HIP, HANDS[1]))
    ):  # fmt: skip
        pts[:, hip, :2] = pts[:, sh, :2] + p["flank"] * unit(m["flank"][:, i])
        pts[:, el, :2] = pts[:, sh, :2] + p["upper"][i] * unit(m["upper"][:, i])
        pts[:, wr, :2] = pts[:, el, :2] + p["fore"][i] * unit(m["fore"][:, i])
        pts[:, hand, :2] = pts[:, wr, :2] + p["wrist_offset"]
        for k, (a, b) in enumerate(L.HAND_BONES):
            pts[:, hand + b, :2] = pts[:, hand + a, :2] + p["hand"][i][k] * unit(m["hand"][:, i, k])
    pts[..., 2] = 0.9
    pts[:, 13:23, 2] = 0.0  # knees, ankles, feet: below the frame
    return pts.astype(np.float32)


def lengths(pts: np.ndarray, bones=BONES) -> np.ndarray:
    a, b = np.array(bones).T
    return np.linalg.norm(pts[..., b, :2] - pts[..., a, :2], axis=-1)


def angles(pts: np.ndarray, bones=BONES) -> np.ndarray:
    a, b = np.array(bones).T
    v = pts[..., b, :2] - pts[..., a, :2]
    return np.arctan2(v[..., 1], v[..., 0])


def angle_diff(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs((x - y + np.pi) % (2 * np.pi) - np.pi)


@pytest.fixture
def pair():
    """(driver A performing a motion, reference = B in another pose, A's motion on B)."""
    rng = np.random.default_rng(0)
    a, b = person(rng, 1.0), person(rng, 1.25)
    drive_motion = motion(rng, 12)
    ref = pose(b, motion(rng, 1))[0]
    return pose(a, drive_motion), ref, pose(b, drive_motion), a, b


# ---- acceptance -------------------------------------------------------------------------


def test_onto_its_own_first_frame_changes_nothing(pair):
    drive = pair[0].copy()
    rng = np.random.default_rng(1)
    drive[..., 2] = rng.uniform(0.05, 1.0, size=drive.shape[:2])  # some below min_score
    drive[:, 13:23, 2] = 0
    drive[0, [L.NOSE, L.LEFT_EAR, L.RIGHT_EAR, L.LEFT_SHOULDER, L.RIGHT_SHOULDER], 2] = 0.9
    drive[3:5, L.LEFT_HAND.start : L.LEFT_HAND.stop, 2] = 0  # a hand lost for two frames
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RetargetWarning)
        out, fit = retarget_points(drive, drive[0])
    assert fit.scale == pytest.approx(1.0) and fit.anchor_frame == 0
    seen = drive[..., 2] > 0
    np.testing.assert_allclose(out[seen], drive[seen], atol=1e-3)


def test_bone_lengths_are_the_references(pair):
    drive, ref, *_ = pair
    out, _ = retarget_points(drive, ref)
    ref_len = lengths(ref)
    assert not np.allclose(lengths(drive)[0], ref_len, rtol=0.05)  # the bodies differ
    np.testing.assert_allclose(lengths(out), np.broadcast_to(ref_len, (len(out), len(BONES))),
                               rtol=0.01)  # fmt: skip

    # The head patch takes the reference's size (RMS distance of its points to the nose).
    def head_size(p):
        return np.sqrt(((p[..., list(HEAD), :2] - p[..., [L.NOSE], :2]) ** 2).sum(-1).mean(-1))

    np.testing.assert_allclose(head_size(out), head_size(ref), rtol=0.01)


def test_joint_angles_of_the_driver_are_kept(pair):
    drive, ref, *_ = pair
    out, _ = retarget_points(drive, ref)
    head_bones = tuple((L.NOSE, k) for k in HEAD)
    bones = BONES + head_bones
    assert angle_diff(angles(out, bones), angles(drive, bones)).max() < 1e-4
    # ... which is the ground truth for arms and hands: A's motion on B's body, up to B's
    # place in the frame (known only from B's own first frame, here in another pose). The
    # face keeps the driver's shape at the reference's size (a rigid patch).
    truth = pair[2]
    for root, points in ((L.LEFT_SHOULDER, [L.LEFT_ELBOW, L.LEFT_WRIST]),
                         (L.RIGHT_SHOULDER, [L.RIGHT_ELBOW, L.RIGHT_WRIST]),
                         (L.LEFT_HAND.start, list(L.LEFT_HAND)),
                         (L.RIGHT_HAND.start, list(L.RIGHT_HAND))):  # fmt: skip
        got = out[:, points, :2] - out[:, [root], :2]
        want = truth[:, points, :2] - truth[:, [root], :2]
        np.testing.assert_allclose(got, want, atol=1e-2)


def test_missing_points_stay_missing(pair):
    drive, ref, *_ = pair
    drive = drive.copy()
    rng = np.random.default_rng(2)
    lost = rng.uniform(size=drive.shape[:2]) < 0.2
    lost[:, [L.LEFT_SHOULDER, L.RIGHT_SHOULDER]] = False  # keep the fit possible
    drive[lost, 2] = 0
    out, _ = retarget_points(drive, ref)
    np.testing.assert_array_equal(out[..., 2], drive[..., 2])  # scores pass through
    assert (out[drive[..., 2] == 0] == 0).all()  # missing: score 0, x = y = 0
    assert (out[drive[..., 2] > 0, 2] > 0).all()
    assert np.isfinite(out).all()


def test_a_point_whose_parent_is_missing_hangs_off_the_next_ancestor(pair):
    drive, ref, *_ = pair
    drive = drive.copy()
    drive[4, L.LEFT_ELBOW, 2] = 0
    out, fit = retarget_points(drive, ref)
    # The wrist keeps its driver offset from the shoulder, scaled by the global fit.
    got = out[4, L.LEFT_WRIST, :2] - out[4, L.LEFT_SHOULDER, :2]
    want = fit.scale * (drive[4, L.LEFT_WRIST, :2] - drive[4, L.LEFT_SHOULDER, :2])
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_hands_follow_their_wrists(pair):
    drive, ref, *_ = pair
    drive = drive.copy()
    # Frame 1: the left forearm swings, the hand is carried rigidly (same shape), nothing
    # else moves.
    drive[1] = drive[0]
    elbow = drive[0, L.LEFT_ELBOW, :2]
    old_wrist = drive[0, L.LEFT_WRIST, :2]
    turn = 0.6
    c, s = np.cos(turn), np.sin(turn)
    new_wrist = elbow + np.array([[c, -s], [s, c]]) @ (old_wrist - elbow)
    hand = slice(L.LEFT_HAND.start, L.LEFT_HAND.stop)
    drive[1, L.LEFT_WRIST, :2] = new_wrist
    drive[1, hand, :2] += new_wrist - old_wrist
    out, fit = retarget_points(drive, ref)
    moved = out[1, L.LEFT_WRIST, :2] - out[0, L.LEFT_WRIST, :2]
    assert np.linalg.norm(moved) > 5
    np.testing.assert_allclose(out[1, hand, :2] - out[0, hand, :2],
                               np.broadcast_to(moved, (21, 2)), atol=1e-3)  # fmt: skip
    # The hand's root is the retargeted body wrist (plus the driver's scaled offset).
    np.testing.assert_allclose(
        out[:, L.LEFT_HAND.start, :2] - out[:, L.LEFT_WRIST, :2],
        fit.scale * (drive[:, L.LEFT_HAND.start, :2] - drive[:, L.LEFT_WRIST, :2]),
        atol=1e-3,
    )


# ---- edge cases -------------------------------------------------------------------------


def test_reference_missing_an_arm_keeps_the_driver_length_and_warns_once(pair):
    drive, ref, *_ = pair
    ref = ref.copy()
    ref[[L.LEFT_ELBOW, L.LEFT_WRIST], 2] = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, fit = retarget_points(drive, ref)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RetargetWarning)]
    assert len(msgs) == 1, msgs
    assert "left upper arm" in msgs[0] and "left forearm" in msgs[0]
    assert "right" not in msgs[0]
    left = ((L.LEFT_SHOULDER, L.LEFT_ELBOW), (L.LEFT_ELBOW, L.LEFT_WRIST))
    np.testing.assert_allclose(lengths(out, left), fit.scale * lengths(drive, left), rtol=1e-4)
    right = ((L.RIGHT_SHOULDER, L.RIGHT_ELBOW),)
    np.testing.assert_allclose(lengths(out, right)[:, 0], lengths(ref, right)[0], rtol=1e-3)


def test_reference_without_hands_names_them_once(pair):
    drive, ref, *_ = pair
    ref = ref.copy()
    ref[L.LEFT_HAND.start : L.RIGHT_HAND.stop, 2] = 0
    with pytest.warns(RetargetWarning, match="left hand, right hand") as rec:
        retarget_points(drive, ref)
    assert len(rec) == 1


def test_zero_length_bones(pair):
    drive, ref, *_ = pair
    drive, ref = drive.copy(), ref.copy()
    tip, mid = L.LEFT_HAND.start + 8, L.LEFT_HAND.start + 7  # index finger tip and DIP
    drive[5, tip, :2] = drive[5, mid, :2]  # the driver's bone vanishes in one frame
    thumb_tip, thumb_ip = L.RIGHT_HAND.start + 4, L.RIGHT_HAND.start + 3
    drive[0, thumb_tip, :2] = drive[0, thumb_ip, :2]  # ... and in the anchor frame
    ref[L.LEFT_HAND.start + 12, :2] = ref[L.LEFT_HAND.start + 11, :2]  # zero in the reference
    with pytest.warns(RetargetWarning, match="left middle finger"):
        out, fit = retarget_points(drive, ref)
    assert np.isfinite(out).all()
    assert lengths(out[5], ((mid, tip),))[0] == pytest.approx(0, abs=1e-4)
    # The thumb tip's ratio comes from the frames where the driver's bone is seen.
    bone = ((thumb_ip, thumb_tip),)
    np.testing.assert_allclose(lengths(out[1:], bone), lengths(ref, bone)[0], rtol=0.01)
    mid_bone = ((L.LEFT_HAND.start + 11, L.LEFT_HAND.start + 12),)
    np.testing.assert_allclose(lengths(out, mid_bone), fit.scale * lengths(drive, mid_bone),
                               rtol=1e-4)  # fmt: skip


def test_all_missing_frames(pair):
    drive, ref, *_ = pair
    drive = drive.copy()
    drive[[0, 6, 7], :, 2] = 0  # the first frame and two more: nothing detected
    out, fit = retarget_points(drive, ref)
    assert fit.anchor_frame == 1  # the fit moves to the first frame with a torso
    assert (out[[0, 6, 7]] == 0).all()
    # The other frames do not depend on the empty ones.
    alone, _ = retarget_points(drive[1:6], ref)
    np.testing.assert_allclose(out[1:6], alone, atol=1e-4)


def test_global_fit_scale_and_translation():
    rng = np.random.default_rng(5)
    p = person(rng, 1.0)
    drive = pose(p, motion(rng, 4))
    ref = drive[0].copy()
    ref[:, :2] = ref[:, :2] * 0.5 + np.array([30.0, -12.0])  # the same body, half size, moved
    out, fit = retarget_points(drive, ref)
    assert fit.scale == pytest.approx(0.5)
    seen = drive[..., 2] > 0
    want = drive.copy()
    want[..., :2] = drive[..., :2] * 0.5 + np.array([30.0, -12.0])
    np.testing.assert_allclose(out[seen], want[seen], atol=1e-3)


def test_no_shared_torso_is_an_input_error(pair):
    drive, ref, *_ = pair
    ref = ref.copy()
    ref[:17, 2] = 0
    with pytest.raises(InputError, match="torso"):
        retarget_points(drive, ref)


def test_retarget_sequence_is_in_reference_pixels(pair):
    drive, ref, *_ = pair
    seq = KeypointSequence(drive, 210, 260, 25.0, meta={"signer": "A"})
    out = retarget_sequence(seq, ref, (420, 520))
    assert (out.width, out.height, out.fps) == (420, 520, 25.0)
    assert out.meta["signer"] == "A" and out.meta["retarget"]["anchor_frame"] == 0
    np.testing.assert_allclose(out.points, retarget_points(drive, ref)[0])


# ---- the synthetic world: B performing A's motion --------------------------------------


def test_on_the_synthetic_world_error_is_at_least_halved():
    """The world's own ground truth (pose_from_motion: A's motion on B's body)."""
    from signgen.data.synthetic import pose_from_motion, sample_signer, sample_signer_motion

    rng = np.random.default_rng(3)
    raw, rt = [], []
    for i in range(6):
        a, b = sample_signer(rng, "A"), sample_signer(rng, "B")
        m_a = sample_signer_motion(np.random.default_rng([i, 0]), 16, a.body)
        m_b = sample_signer_motion(np.random.default_rng([i, 1]), 1, b.body)
        drive, truth = pose_from_motion(m_a, a.body), pose_from_motion(m_a, b.body)
        out, _ = retarget_points(drive, pose_from_motion(m_b, b.body)[0])
        seen = truth[..., 2] > 0
        raw.append(np.linalg.norm(drive[..., :2] - truth[..., :2], axis=-1)[seen].mean())
        rt.append(np.linalg.norm(out[..., :2] - truth[..., :2], axis=-1)[seen].mean())
    assert np.mean(rt) < 0.5 * np.mean(raw), (raw, rt)


# ---- reading a reference, and the command -----------------------------------------------


def test_load_reference_from_an_image_uses_the_extractor(tmp_path, pair):
    from signgen.video import write_png_frames

    write_png_frames(tmp_path, np.zeros((1, 260, 210, 3), np.uint8))
    image = next(tmp_path.glob("*.png"))
    calls = []

    def extractor(frame):
        calls.append(frame.shape)
        return pair[1]

    points, size = load_reference(image, extractor=extractor)
    assert calls == [(260, 210, 3)] and size == (210, 260)
    np.testing.assert_array_equal(points, pair[1])


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("signgen: error:"), err
    for frag in fragments:
        assert frag in lines[0], err


def test_cli_retarget_writes_reference_size(tmp_path, capsys, pair):
    drive, ref, *_ = pair
    KeypointSequence(drive, 210, 260, 25.0).save(tmp_path / "drive.json")
    ref_seq = KeypointSequence(np.stack([ref, ref]), 420, 520, 50.0)
    ref_seq.save(tmp_path / "ref.json")
    out = tmp_path / "out.json"
    rc, stdout, err = run_cli(capsys, "keypoints", "retarget", tmp_path / "drive.json",
                              "--reference", tmp_path / "ref.json", "-o", out)  # fmt: skip
    assert rc == 0, err
    assert "12 frames, 420x520, 25 fps" in stdout
    seq = load_keypoints(out)
    assert seq.size == (420, 520) and seq.fps == 25.0
    np.testing.assert_allclose(seq.points, retarget_points(drive, ref)[0], atol=1e-3)


def test_cli_warning_is_one_line(tmp_path, capsys, pair):
    drive, ref, *_ = pair
    ref = ref.copy()
    ref[L.RIGHT_HAND.start : L.RIGHT_HAND.stop, 2] = 0
    KeypointSequence(drive, 210, 260, 25.0).save(tmp_path / "drive.json")
    KeypointSequence(ref[None], 210, 260, 25.0).save(tmp_path / "ref.json")
    rc, _, err = run_cli(capsys, "keypoints", "retarget", tmp_path / "drive.json",
                         "--reference", tmp_path / "ref.json", "-o", tmp_path / "o.json")  # fmt: skip
    assert rc == 0
    assert err.strip().splitlines() == [
        next(ln for ln in err.splitlines() if ln.startswith("signgen: warning:"))
    ]
    assert "right hand" in err


def test_cli_bad_inputs_one_line_no_output(tmp_path, capsys, pair, monkeypatch):
    drive, ref, *_ = pair
    KeypointSequence(drive, 210, 260, 25.0).save(tmp_path / "drive.json")
    no_torso = ref.copy()
    no_torso[:17, 2] = 0
    KeypointSequence(no_torso[None], 210, 260, 25.0).save(tmp_path / "no_torso.json")
    (tmp_path / "bad.json").write_text(json.dumps({"hello": 1}))
    from signgen.video import write_png_frames

    write_png_frames(tmp_path / "img", np.zeros((1, 40, 30, 3), np.uint8))
    image = next((tmp_path / "img").glob("*.png"))
    monkeypatch.delenv("SIGNGEN_WEIGHTS_DIR", raising=False)
    out = tmp_path / "out.json"
    drv = tmp_path / "drive.json"
    cases = [
        ((tmp_path / "nope.json", "--reference", drv), ("not found",)),
        ((drv, "--reference", tmp_path / "nope.json"), ("reference not found",)),
        ((drv, "--reference", tmp_path / "bad.json"), ("bad.json",)),
        ((drv, "--reference", tmp_path / "no_torso.json"), ("torso",)),
        ((drv, "--reference", image), ("signgen keypoints extract", "SIGNGEN_WEIGHTS_DIR")),
        ((drv, "--reference", drv, "--min-score", "2"), ("--min-score",)),
    ]
    for argv, fragments in cases:
        rc, _, err = run_cli(capsys, "keypoints", "retarget", *argv, "-o", out)
        assert_one_line_error(rc, err, *fragments)
        assert not out.exists()
        assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".out*"))
    rc, _, err = run_cli(capsys, "keypoints", "retarget", drv, "--reference", drv, "-o", tmp_path)
    assert_one_line_error(rc, err, "folder")
