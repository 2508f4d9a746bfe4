"""MediaPipe Holistic on real Phoenix signers (the FPDM sample GIFs; skipped when absent).

The ground-truth panel of each GIF frame is a real RWTH-PHOENIX-Weather 2014T frame (210x260):
one signer in front of a light grey-blue studio background. The signer's silhouette is taken
from the pixels (distance from the background colour of each row, which the frame's left and
right edges show), so "the joint falls on the signer" is checked against the image itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from shared_data import ground_truth_frames, phoenix_gifs, write_frames

from signgen.cli import main
from signgen.keypoints.holistic import extract_keypoints_mediapipe, native_stderr_to_log
from signgen.keypoints.io import load_keypoints
from signgen.keypoints.layout import (
    LEFT_ELBOW,
    LEFT_HAND,
    LEFT_SHOULDER,
    LEFT_WRIST,
    RIGHT_ELBOW,
    RIGHT_HAND,
    RIGHT_SHOULDER,
    RIGHT_WRIST,
)

ARM_JOINTS = (LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_ELBOW, RIGHT_ELBOW, LEFT_WRIST, RIGHT_WRIST)
CONFIDENT = 0.5
BACKGROUND_TOLERANCE = 30.0  # RGB distance from the row's background colour
EDGE = 8  # columns at each side that show the background
SLACK = 3  # pixels a joint may lie outside the silhouette (joints sit at its edge)


def silhouette(frame: np.ndarray) -> np.ndarray:
    """(H, W) bool: the signer, as the largest blob of pixels unlike the studio background."""
    img = frame.astype(np.float32)
    # the background is a vertical gradient: its colour per row, from both frame edges
    row_bg = np.median(np.concatenate([img[:, :EDGE], img[:, -EDGE:]], axis=1), axis=1)  # (H, 3)
    fg = np.linalg.norm(img - row_bg[:, None], axis=-1) > BACKGROUND_TOLERANCE
    fg = ndimage.binary_opening(fg)
    labels, n = ndimage.label(fg)
    assert n > 0, "no foreground"
    sizes = ndimage.sum(fg, labels, range(1, n + 1))
    body = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    return ndimage.binary_dilation(body, iterations=SLACK)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """name -> (ground-truth frames (T, 260, 210, 3), extracted (T, 133, 3) keypoints)."""
    out = {}
    for gif in phoenix_gifs():
        frames = ground_truth_frames(gif)
        folder = write_frames(frames, tmp_path_factory.mktemp("phoenix") / gif.stem)
        seq = extract_keypoints_mediapipe(folder, progress=False)
        out[gif.stem] = (frames, seq)
    return out


def test_133_points_per_frame_at_the_frame_size(clips):
    for name, (frames, seq) in clips.items():
        assert seq.points.shape == (len(frames), 133, 3), name
        assert seq.size == (210, 260) and seq.fps == 25.0
        assert seq.meta["extractor"]["name"] == "mediapipe-holistic"
        assert seq.meta["extractor"]["mode"] == "video"  # a clip is tracked
        assert (seq.points[:, :17, 2] > 0).all(), f"{name}: body lost in a frame"


def test_arm_joints_fall_on_the_signer(clips):
    checked = 0
    for name, (frames, seq) in clips.items():
        for t, frame in enumerate(frames):
            mask = silhouette(frame)
            # shoulders are always visible in Phoenix framing: never vacuous
            assert (seq.points[t, [LEFT_SHOULDER, RIGHT_SHOULDER], 2] >= CONFIDENT).all()
            for j in ARM_JOINTS:
                x, y, score = seq.points[t, j]
                if score < CONFIDENT or not (0 <= x < 210 and 0 <= y < 260):
                    continue  # a hand below the frame edge, or a guess
                checked += 1
                assert mask[int(y), int(x)], f"{name} frame {t}: joint {j} at ({x:.0f}, {y:.0f})"
    assert checked >= 0.8 * sum(len(f) for f, _ in clips.values()) * len(ARM_JOINTS)


def test_left_and_right_are_the_signers_own(clips):
    for name, (_, seq) in clips.items():
        p = seq.points
        # a frontal signer's left shoulder is on the image's right
        assert (p[:, LEFT_SHOULDER, 0] > p[:, RIGHT_SHOULDER, 0]).all(), name
        # each hand's wrist is the body's wrist of the same side, not the other one
        for hand, same, other in (
            (LEFT_HAND, LEFT_WRIST, RIGHT_WRIST),
            (RIGHT_HAND, RIGHT_WRIST, LEFT_WRIST),
        ):
            found = p[:, hand.start, 2] > 0
            wrist = p[found, hand.start, :2]
            d_same = np.linalg.norm(wrist - p[found, same, :2], axis=-1)
            d_other = np.linalg.norm(wrist - p[found, other, :2], axis=-1)
            assert (d_same < d_other).all(), name


def test_found_hands_start_on_the_signer(clips):
    """A found hand's wrist lies on the silhouette (its fingers may be motion-blurred into the
    background, where a pixel mask cannot follow them)."""
    hands = 0
    for name, (frames, seq) in clips.items():
        for t, frame in enumerate(frames):
            mask = silhouette(frame)
            for part in (LEFT_HAND, RIGHT_HAND):
                x, y, score = seq.points[t, part.start]
                if score == 0:
                    continue
                hands += 1
                assert mask[int(np.clip(y, 0, 259)), int(np.clip(x, 0, 209))], (name, t, part)
    assert hands >= 0.3 * 2 * sum(len(f) for f, _ in clips.values())


def test_pose_format_holistic_file_reads_back_into_the_same_points(clips, tmp_path):
    """pose-format's own MediaPipe pipeline writes a .pose; signgen reads the same 133 points."""
    from pose_format.utils.holistic import load_holistic

    name = next(iter(clips))
    frames, seq = clips[name]
    with native_stderr_to_log():
        pose = load_holistic(list(frames), fps=25, width=210, height=260, reuse=False)
    path = tmp_path / f"{name}.pose"
    with path.open("wb") as fh:
        pose.write(fh)
    back = load_keypoints(path)
    assert back.points.shape == seq.points.shape and back.size == seq.size
    np.testing.assert_allclose(back.points[..., 2], seq.points[..., 2], atol=1e-3)
    np.testing.assert_allclose(back.points[..., :2], seq.points[..., :2], atol=0.05)


def test_cli_extract_on_real_frames_stays_quiet(clips, tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("SIGNGEN_WEIGHTS_DIR", raising=False)  # auto -> mediapipe
    frames, _ = next(iter(clips.values()))
    folder = write_frames(frames[:6], tmp_path / "clip")
    rc = main(["keypoints", "extract", "--video", str(folder), "-o", str(tmp_path / "k.pose")])
    out, err = capfd.readouterr()
    assert rc == 0, err
    assert "backend mediapipe" in out
    for noise in ("TensorFlow Lite", "W0000", "absl::", "inference_feedback_manager"):
        assert noise not in err, err
    assert load_keypoints(tmp_path / "k.pose").points.shape == (6, 133, 3)
