"""Hand PE with MediaPipe Hands: a named detector, reported as ``hand_pe_mediapipe`` only.

The evaluation plumbing is tested with an injected stand-in detector (fast, exact); the real
MediaPipe detector runs on real Phoenix frames (skipped when the shared data are absent).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from shared_data import ground_truth_frames, phoenix_gifs

from signgen.cli import main
from signgen.errors import InputError
from signgen.keypoints.sequence import KeypointSequence
from signgen.metrics.evaluate import EvalConfig, run_evaluation
from signgen.metrics.hand import hand_crop_boxes, hand_pose_error

H, W, T = 80, 96, 3


class _Detector:
    """21 points at the box centre shifted by the crop's mean brightness; ``lost`` boxes
    (frame, hand) of the *first* image list it sees come back with scores 0 (not found)."""

    def __init__(self, lost=()):
        self.lost = set(lost)
        self.calls = 0

    def __call__(self, images, boxes):
        first = self.calls == 0
        self.calls += 1
        out = []
        for i, (img, bx) in enumerate(zip(images, boxes)):
            kps = np.zeros((len(bx), 21, 3), np.float32)
            for k, (x1, y1, x2, y2) in enumerate(bx.astype(int)):
                kps[k, :, 0] = (x1 + x2) / 2 + img[y1:y2, x1:x2].mean() / 10
                kps[k, :, 1] = (y1 + y2) / 2
                kps[k, :, 2] = 0.0 if first and (i, k) in self.lost else 1.0
            out.append(kps)
        return out


def test_hands_not_found_are_left_out():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 255, (2, H, W, 3), dtype=np.uint8)
    gt = rng.integers(0, 255, (2, H, W, 3), dtype=np.uint8)
    pts = np.zeros((133, 3), np.float32)
    pts[100] = (20, 20, 1)
    pts[121] = (70, 50, 1)
    boxes = np.stack([hand_crop_boxes(pts, H, W)] * 2)  # (2, 2, 4)
    full, n_full = hand_pose_error(_Detector(), pred, gt, boxes)
    assert n_full.tolist() == [2, 2]
    err, n = hand_pose_error(_Detector(lost={(0, 1)}), pred, gt, boxes)  # frame 0: right lost
    assert n.tolist() == [1, 2]
    one = abs(pred[0, 0:60, 0:60].mean() - gt[0, 0:60, 0:60].mean()) / 10  # the left hand only
    assert err[0] == pytest.approx(one, abs=1e-4) and err[0] != pytest.approx(full[0])
    assert err[1] == pytest.approx(full[1])
    err, n = hand_pose_error(_Detector(lost={(0, 0), (0, 1)}), pred, gt, boxes)
    assert n[0] == 0 and np.isnan(err[0])


def _world(root):
    rng = np.random.default_rng(1)
    for side in ("gt", "pred"):
        (root / side / "clip").mkdir(parents=True)
    for i in range(T):
        g = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        p = np.clip(g.astype(int) + rng.integers(-40, 40, g.shape), 0, 255).astype(np.uint8)
        Image.fromarray(g).save(root / "gt" / "clip" / f"images{i + 1:04d}.png")
        Image.fromarray(p).save(root / "pred" / "clip" / f"images{i + 1:04d}.png")
    pts = np.zeros((T, 133, 3), np.float32)
    pts[:, 100] = (25, 30, 1)
    pts[:, 121] = (70, 45, 1)
    (root / "kp").mkdir()
    KeypointSequence(pts, W, H, 25).save(root / "kp" / "clip.json")
    return root / "pred", root / "gt", root / "kp"


@pytest.mark.parametrize("detector", ["hrnetv2", "mediapipe"])
def test_reported_under_the_detectors_own_name(tmp_path, detector):
    pred, gt, kp = _world(tmp_path)
    out = tmp_path / "m.csv"
    cfg = EvalConfig(
        str(pred), str(gt), str(out), metrics=("hand_pe",), keypoints=str(kp),
        hand_detector=detector,
    )  # fmt: skip
    summary = run_evaluation(cfg, hand_detector=_Detector(), progress=False)
    df = pd.read_csv(out)
    name, other = (
        ("hand_pe", "hand_pe_mediapipe")
        if detector == "hrnetv2"
        else ("hand_pe_mediapipe", "hand_pe")
    )
    assert name in df and other not in df
    assert name in summary["mean"] and other not in summary["mean"]
    assert np.isfinite(summary["mean"][name])
    assert name in summary["implementations"] and other not in summary["implementations"]
    if detector == "mediapipe":
        assert "MediaPipe Hands" in summary["implementations"][name]
        html = tmp_path / "r.html"
        assert main(["report", str(out), "-o", str(html)]) == 0
        assert "MediaPipe Hands" in html.read_text()


def test_mediapipe_takes_no_hrnet_files(tmp_path, capsys):
    cfg = EvalConfig("p", "g", "m.csv", metrics=("hand_pe",), keypoints="k",
                     hand_detector="mediapipe", hand_config="hand.py")  # fmt: skip
    with pytest.raises(InputError, match="--hand-detector mediapipe"):
        cfg.check()
    with pytest.raises(InputError, match="--hand-detector"):
        EvalConfig("p", "g", "m.csv", hand_detector="openpose").check()
    pred, gt, kp = _world(tmp_path)
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "m.csv"),
               "--metrics", "hand_pe", "--keypoints", str(kp), "--hand-detector", "mediapipe",
               "--hand-checkpoint", "x.pth"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--hand-detector mediapipe" in err[0], err


# ---- the real detector on real frames --------------------------------------------------------


@pytest.fixture(scope="module")
def phoenix_hands():
    """Ground-truth frames of one sample clip and the MediaPipe Holistic keypoints on them."""
    from signgen.keypoints.holistic import HolisticExtractor

    frames = ground_truth_frames(phoenix_gifs()[-1])[:12]  # the clip with both hands up
    with HolisticExtractor() as model:
        pts = np.stack([model(f) for f in frames])  # (T, 133, 3)
    return frames, pts


def test_mediapipe_hands_locates_real_hands_in_frame_pixels(phoenix_hands, capfd):
    """On the 60x60 Hand PE boxes, MediaPipe Hands finds the hands Holistic found, at the same
    place in frame pixels (a detector answering in crop pixels would be off by tens of px)."""
    from signgen.keypoints.holistic import MediaPipeHandDetector

    frames, pts = phoenix_hands
    detector = MediaPipeHandDetector()
    total = found = 0
    gaps = []  # per hand: median distance to Holistic's 21 points, px
    for t in range(len(frames)):
        boxes = hand_crop_boxes(pts[t], 260, 210)  # (2, 4), -1 rows for skipped hands
        for side, start in ((0, 91), (1, 112)):
            if boxes[side, 0] < 0:
                continue
            total += 1
            kp = detector([frames[t]], [boxes[side : side + 1].astype(np.float32)])[0][0]
            if kp[0, 2] == 0:
                continue
            found += 1
            gaps.append(
                np.median(np.linalg.norm(kp[:, :2] - pts[t, start : start + 21, :2], axis=-1))
            )
    assert total >= 10 and found >= 0.7 * total, (found, total)
    # two models on blurred hands: a few px apart, now and then more (the boxes start 50+ px
    # from the frame origin, so coordinates left in window pixels would be far off)
    assert np.median(gaps) < 6 and np.percentile(gaps, 75) < 10, np.round(gaps, 1)
    for noise in ("TensorFlow Lite", "W0000", "absl::"):
        assert noise not in capfd.readouterr().err


def test_cli_evaluate_real_frames_with_mediapipe_hand_pe(phoenix_hands, tmp_path):
    frames, pts = phoenix_hands
    for side, data in (("gt", frames), ("pred", np.roll(frames, 2, axis=1))):  # 2 px down
        d = tmp_path / side / "clip"
        d.mkdir(parents=True)
        for i, f in enumerate(data):
            Image.fromarray(f).save(d / f"images{i + 1:04d}.png")
    (tmp_path / "kp").mkdir()
    KeypointSequence(pts, 210, 260, 25).save(tmp_path / "kp" / "clip.json")
    out = tmp_path / "m.csv"
    rc = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
               "-o", str(out), "--metrics", "hand_pe", "--keypoints", str(tmp_path / "kp"),
               "--hand-detector", "mediapipe", "--no-progress"])  # fmt: skip
    assert rc == 0
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert "hand_pe" not in summary["mean"]
    # every keypoint moved 2 px down: mean |dx| + |dy| close to 2
    assert summary["mean"]["hand_pe_mediapipe"] == pytest.approx(2.0, abs=1.5)
