"""The synthetic signer world: layout on disk, determinism, keypoints match the pixels."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest

from signgen.cli import main
from signgen.data.synthetic import (
    SignerAppearance,
    SyntheticConfig,
    render_signer,
    sample_motion,
    sample_signer,
    split_signers,
    write_dataset,
)
from signgen.keypoints import layout as L
from signgen.keypoints import load_keypoints
from signgen.keypoints.formats.mska import read_mska
from signgen.keypoints.sequence import from_json_dict

W, H = 64, 80


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    rc = main(["prepare", "synthetic", "-o", str(out), "--signers", "5", "--videos", "6",
               "--frames", "5", "--size", f"{W}x{H}", "--seed", "3", "-q",
               "--pairs-per-video", "4"])  # fmt: skip
    assert rc == 0
    return out


def test_phoenix_layout(world: Path):
    root = world / "PHOENIX-2014-T"
    for split in ("train", "dev", "test"):
        corpus = root / "annotations" / "manual" / f"PHOENIX-2014-T.{split}.corpus.csv"
        rows = list(csv.reader(corpus.open(), delimiter="|"))
        assert rows[0] == ["name", "video", "start", "end", "speaker", "orth", "translation"]
        assert len(rows) >= 2
        for row in rows[1:]:
            name, speaker = row[0], row[4]
            assert speaker.startswith("Signer")
            frames = sorted((root / "features" / f"fullFrame-{W}x{H}px" / split / name).iterdir())
            assert [f.name for f in frames] == [f"images{i:04d}.png" for i in range(1, 6)]
        with open(world / "keypoints" / f"Phoenix-2014T.{split}", "rb") as fh:
            data = pickle.load(fh)
        names = [r[0] for r in rows[1:]]
        assert sorted(data) == sorted(names)
        sample = data[names[0]]
        assert set(sample) == {"name", "gloss", "text", "num_frames", "keypoint"}
        assert tuple(sample["keypoint"].shape) == (5, 133, 3)
        assert str(sample["keypoint"].dtype) == "torch.float32"
        import json

        seq = from_json_dict(json.loads((world / "keypoints" / "json" / split /
                                         f"{names[0]}.json").read_text()))  # fmt: skip
        assert (seq.width, seq.height) == (W, H)
        # MSKA pickles hold Phoenix 210 x 260 pixels: the world's points, rescaled.
        mska = read_mska(world / "keypoints" / f"Phoenix-2014T.{split}", sample=names[0])
        assert (mska.width, mska.height) == (210, 260)
        scale = np.array([210 / W, 260 / H], np.float32)
        np.testing.assert_array_equal(mska.points[..., 2], seq.points[..., 2])
        seen = seq.points[..., 2] > 0  # the reader zeroes the x, y of missing points
        assert seen.any()
        np.testing.assert_allclose(mska.points[seen, :2], seq.points[seen, :2] * scale, atol=1e-3)


def test_prepared_files_and_unseen_signers(world: Path):
    manifest = list(csv.DictReader((world / "prepared" / "manifest.csv").open()))
    signers = {
        s: {r["signer"] for r in manifest if r["split"] == s} for s in ("train", "dev", "test")
    }
    assert signers["train"].isdisjoint(signers["dev"] | signers["test"])
    assert signers["dev"].isdisjoint(signers["test"])
    dev_pairs = list(csv.DictReader((world / "prepared" / "dev_pairs.csv").open()))
    assert {p["source_frame"] for p in dev_pairs} == {"0"}
    assert sorted(int(p["target_frame"]) for p in dev_pairs) == list(range(5)) * (
        len(dev_pairs) // 5
    )
    train_pairs = list(csv.DictReader((world / "prepared" / "train_pairs.csv").open()))
    n_train = sum(r["split"] == "train" for r in manifest)
    assert len(train_pairs) == 4 * n_train


def test_split_signers_rules():
    s = split_signers(8)
    assert set(s["train"]).isdisjoint(s["test"]) and s["test"] and s["dev"]
    assert split_signers(2)["test"] == [0, 1]  # too few to hold out: shared (documented)


def test_deterministic_given_seed(tmp_path: Path):
    def make(seed: int, name: str) -> tuple[bytes, bytes]:
        cfg = SyntheticConfig(out=str(tmp_path / name), signers=3, videos=3, frames=3,
                              width=W, height=H, seed=seed, train_pairs_per_video=2)  # fmt: skip
        write_dataset(cfg, progress=False)
        png = next((tmp_path / name).rglob("images0003.png")).read_bytes()
        # The pickle's bytes name each torch storage by its memory address, so compare
        # what it holds.
        with open(tmp_path / name / "keypoints" / "Phoenix-2014T.train", "rb") as fh:
            kp = {k: {f: v.numpy().tobytes() if f == "keypoint" else v for f, v in d.items()}
                  for k, d in pickle.load(fh).items()}  # fmt: skip
        return png, kp

    a, b, c = make(7, "a"), make(7, "b"), make(8, "c")
    assert a == b
    assert a[0] != c[0]


def test_hand_knuckles_lie_on_skin():
    rng = np.random.default_rng(0)
    for k in range(4):
        signer = sample_signer(rng, f"S{k}")
        # A background that is far from skin, so that a skin-coloured pixel proves the hand.
        app = SignerAppearance(**{**signer.appearance.__dict__, "background_top": (0, 0, 255),
                                  "background_bottom": (0, 0, 255)})  # fmt: skip
        pts = sample_motion(rng, 10, (210, 260), signer.body)
        skin = np.array(app.skin, dtype=float)
        for t in range(0, 10, 3):
            img = render_signer(app, pts[t], (210, 260))
            for idx in (L.LEFT_HAND_KNUCKLE, L.RIGHT_HAND_KNUCKLE):
                x, y = np.round(pts[t, idx, :2]).astype(int)
                assert 0 <= x < 210 and 0 <= y < 260
                dist = np.abs(img[y, x].astype(float) - skin).max()
                assert dist < 40, (k, t, idx, img[y, x], skin)


def test_image_follows_keypoints():
    rng = np.random.default_rng(1)
    signer = sample_signer(rng, "S")
    pts = sample_motion(rng, 1, (210, 260), signer.body)[0]
    a = render_signer(signer.appearance, pts, (210, 260))
    moved = pts.copy()
    moved[L.RIGHT_HAND.start : L.RIGHT_HAND.stop, 0] += 12.0
    b = render_signer(signer.appearance, moved, (210, 260))
    diff = np.abs(a.astype(int) - b.astype(int)).sum(-1) > 30
    ys, xs = np.nonzero(diff)
    assert diff.sum() > 20
    hand = pts[L.RIGHT_HAND.start : L.RIGHT_HAND.stop, :2]
    # every changed pixel is near the old or new hand
    assert xs.min() >= hand[:, 0].min() - 8 and xs.max() <= hand[:, 0].max() + 20
    assert ys.min() >= hand[:, 1].min() - 8 and ys.max() <= hand[:, 1].max() + 8


def test_motion_is_smooth_and_in_frame():
    rng = np.random.default_rng(2)
    pts = sample_motion(rng, 50, (210, 260))
    assert pts.shape == (50, 133, 3) and pts.dtype == np.float32
    visible = pts[0, :, 2] > 0
    assert visible[:17].sum() >= 11 and visible[23:].all()
    step = np.linalg.norm(np.diff(pts[:, visible, :2], axis=0), axis=-1)
    assert step.max() < 15.0  # pixels per frame at 25 fps
    xy = pts[:, 23:, :2]
    assert xy[..., 0].min() > 0 and xy[..., 0].max() < 210
    assert xy[..., 1].min() > 0 and xy[..., 1].max() < 260
    # wrists actually move (signing, not a still image)
    assert np.ptp(pts[:, L.LEFT_WRIST, :2], axis=0).max() > 10


def test_bad_size_is_a_user_error(tmp_path: Path, capsys):
    rc = main(["prepare", "synthetic", "-o", str(tmp_path / "x"), "--size", "64by80"])
    assert rc == 2
    assert "--size" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ---- B performs A: one motion on another body (ground truth for retargeting) -------------


def _bone(pts: np.ndarray, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Length and angle (to the image x axis) of bone a -> b in every frame."""
    v = pts[:, b, :2].astype(np.float64) - pts[:, a, :2]
    return np.linalg.norm(v, axis=-1), np.arctan2(v[:, 1], v[:, 0])


def _angle_diff(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs((x - y + np.pi) % (2 * np.pi) - np.pi)


def test_b_performs_a_has_bs_lengths_and_as_angles():
    from signgen.data.synthetic import pose_from_motion, sample_signer_motion

    rng = np.random.default_rng(4)
    a, b = sample_signer(rng, "A"), sample_signer(rng, "B")
    motion = sample_signer_motion(np.random.default_rng(9), 40, a.body)
    pa = pose_from_motion(motion, a.body)
    ba = pose_from_motion(motion, b.body)
    # Arms: A's angles, B's lengths, in every frame.
    for (p, c), key in (((L.LEFT_SHOULDER, L.LEFT_ELBOW), "upper_arm"),
                        ((L.LEFT_ELBOW, L.LEFT_WRIST), "forearm"),
                        ((L.RIGHT_SHOULDER, L.RIGHT_ELBOW), "upper_arm"),
                        ((L.RIGHT_ELBOW, L.RIGHT_WRIST), "forearm")):  # fmt: skip
        len_a, ang_a = _bone(pa, p, c)
        len_ba, ang_ba = _bone(ba, p, c)
        np.testing.assert_allclose(len_a, getattr(a.body, key), rtol=1e-5)
        np.testing.assert_allclose(len_ba, getattr(b.body, key), rtol=1e-5)
        assert _angle_diff(ang_ba, ang_a).max() < 1e-4
    # Hands (every finger bone) and the shoulder line: A's angles, lengths scaled by B's
    # hand size / shoulder width over A's.
    hand_bones = [(h + i, h + j) for h in (L.LEFT_HAND.start, L.RIGHT_HAND.start)
                  for i, j in L.HAND_BONES]  # fmt: skip
    for bones, ratio in ((hand_bones, b.body.hand / a.body.hand),
                         ([(L.RIGHT_SHOULDER, L.LEFT_SHOULDER)],
                          b.body.shoulder_width / a.body.shoulder_width)):  # fmt: skip
        for p, c in bones:
            len_a, ang_a = _bone(pa, p, c)
            len_ba, ang_ba = _bone(ba, p, c)
            np.testing.assert_allclose(len_ba, ratio * len_a, rtol=1e-4)
            assert _angle_diff(ang_ba, ang_a).max() < 1e-3
    # Head: A's tilt (the ear line's angle), B's head width.
    len_a, ang_a = _bone(pa, L.RIGHT_EAR, L.LEFT_EAR)
    len_ba, ang_ba = _bone(ba, L.RIGHT_EAR, L.LEFT_EAR)
    assert _angle_diff(ang_ba, ang_a).max() < 1e-3
    np.testing.assert_allclose(len_ba / len_a, b.body.head_width / a.body.head_width, rtol=1e-4)
    # B's own place in the frame, A's sway: the necks differ by a constant offset.
    neck = (ba[:, L.LEFT_SHOULDER, :2] + ba[:, L.RIGHT_SHOULDER, :2]) / 2 - (
        pa[:, L.LEFT_SHOULDER, :2] + pa[:, L.RIGHT_SHOULDER, :2]
    ) / 2
    np.testing.assert_allclose(neck, neck[:1].repeat(len(neck), 0), atol=1e-3)
    np.testing.assert_allclose(
        neck[0],
        [b.body.centre_x - a.body.centre_x, b.body.shoulder_y - a.body.shoulder_y],
        atol=1e-3,
    )
    # A performing its own motion is what the world has always drawn for A.
    again = sample_motion(np.random.default_rng(9), 40, (210, 260), a.body)
    np.testing.assert_array_equal(pa, again)


def test_retarget_pairs_on_disk(tmp_path: Path):
    import json

    from signgen.data.synthetic import read_retarget_pairs

    out = tmp_path / "world"
    rc = main(["prepare", "synthetic", "-o", str(out), "--signers", "10", "--videos", "30",
               "--frames", "3", "--size", f"{W}x{H}", "--seed", "2", "-q",
               "--retarget-pairs", "1"])  # fmt: skip
    assert rc == 0
    from signgen.data.pairs import frame_path, load_frame, read_manifest

    manifest = read_manifest(out / "prepared")
    pairs = read_retarget_pairs(out / "prepared")
    assert {p.target.split for p in pairs} == {"dev", "test"}
    assert all(p.target.video not in manifest for p in pairs)  # kept out of training/eval
    bodies = {s["name"]: s for s in json.loads((out / "signers.json").read_text())}
    for p in pairs:
        driver, appearance = manifest[p.driver_video], manifest[p.appearance_video]
        assert driver.signer == p.driver_signer != p.target.signer == appearance.signer
        assert driver.split == appearance.split == p.target.split
        assert all(frame_path(p.target, t).is_file() for t in range(3))
        target = load_keypoints(p.target.keypoints_file).points
        drive = load_keypoints(driver.keypoints_file).points
        # B's forearm length (at the world's size), A's forearm angle.
        sx = W / 210
        len_t, ang_t = _bone(target, L.LEFT_ELBOW, L.LEFT_WRIST)
        _, ang_d = _bone(drive, L.LEFT_ELBOW, L.LEFT_WRIST)
        assert _angle_diff(ang_t, ang_d).max() < 0.05  # anisotropic W x H scaling aside
        body = bodies[p.target.signer]["body"]
        np.testing.assert_allclose(len_t / sx, body["forearm"], rtol=0.02)
        # The frames are renders of B (B's appearance) drawing those keypoints (stored to
        # 1e-4 px, so a few anti-aliased edge pixels may differ by a level).
        app = bodies[p.target.signer]["appearance"]
        b_app = SignerAppearance(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in app.items()})  # fmt: skip
        diff = load_frame(p.target, 1).astype(int) - render_signer(b_app, target[1], (W, H))
        assert np.abs(diff).mean() < 0.05
