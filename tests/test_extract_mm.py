"""The real mmpose/mmdet models, built from the configs shipped in the packages with random
weights saved as checkpoints, loaded through the same path users use."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from signgen.cli import main
from signgen.keypoints import load_keypoints
from signgen.keypoints.layout import NUM_POINTS
from signgen.keypoints.models import get_model
from signgen.video import write_video

pytestmark = pytest.mark.mm

W, H, FPS, T = 160, 120, 12.5, 4


def _save_random_checkpoint(config, path, legacy_keys: bool = False) -> dict:
    """Build the model of ``config`` (random init) and save it like a real checkpoint."""
    from mmengine.config import Config
    from mmengine.logging import HistoryBuffer
    from mmpose.apis import init_model

    model = init_model(Config.fromfile(str(config)), None, device="cpu")
    state = model.state_dict()
    if legacy_keys:  # mmpose 0.x checkpoints (the HRNet whole-body ones) name the head so
        state = {k.replace("head.", "keypoint_head.", 1): v for k, v in state.items()}
    hist = HistoryBuffer()
    hist.update(1.0)
    meta = {"epoch": 210, "mmpose_version": "0.x", "seed": np.int64(0), "time": "2020-09-18"}
    torch.save({"state_dict": state, "meta": meta, "message_hub": {"loss": hist}}, path)
    return model.state_dict()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    wb, hand = get_model("hrnet-w32-wholebody"), get_model("hrnetv2-w18-hand")
    wb_state = _save_random_checkpoint(wb.config_path(), root / wb.checkpoint, legacy_keys=True)
    _save_random_checkpoint(hand.config_path(), root / hand.checkpoint)
    return {"dir": root, "wb": wb, "hand": hand, "wb_state": wb_state}


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (T, H, W, 3), dtype=np.uint8)  # (T, H, W, 3)
    path = tmp_path_factory.mktemp("mmvideo") / "clip.mp4"
    write_video(path, frames, fps=FPS)
    return str(path)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def check_sequence(path) -> np.ndarray:
    seq = load_keypoints(path)
    assert seq.points.shape == (T, NUM_POINTS, 3)
    assert (seq.width, seq.height) == (W, H)
    assert seq.fps == pytest.approx(FPS)
    scores = seq.points[..., 2]
    assert np.isfinite(seq.points).all()
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    assert scores.max() > 0.0  # the model did produce something
    return seq.points


def test_extract_cli_named_model_auto_box(weights, video, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SIGNGEN_WEIGHTS_DIR", str(weights["dir"]))
    out = tmp_path / "seq.json"
    rc, _, err = run_cli(
        capsys, "keypoints", "extract", "--video", video, "-o", out,
        "--model", "hrnet-w32-wholebody", "--batch-size", 2, "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert rc == 0, err
    check_sequence(out)
    meta = json.loads(out.read_text())["meta"]["extractor"]
    assert meta["checkpoint"] == weights["wb"].checkpoint and meta["bbox"] == "auto"


def test_extract_cli_explicit_config_full_and_fixed_box(weights, video, tmp_path, capsys):
    cfg, ckpt = weights["wb"].config_path(), weights["dir"] / weights["wb"].checkpoint
    for bbox in ("full", "20,10,140,120"):
        out = tmp_path / f"seq_{bbox.replace(',', '_')}.json"
        rc, _, err = run_cli(
            capsys, "keypoints", "extract", "--video", video, "-o", out, "--bbox", bbox,
            "--pose-config", cfg, "--pose-checkpoint", ckpt, "--batch-size", 4,
            "--no-flip-test", "--quiet",
        )  # fmt: skip
        assert rc == 0, err
        pts = check_sequence(out)
        if bbox != "full":
            # top-down decoding keeps x inside the box enlarged 1.25x (15 px per side here),
            # give or take one heatmap cell (150 px crop / 48 heatmap columns)
            slack = 15 + 150 / 48 + 0.5
            assert pts[..., 0].min() >= 20 - slack and pts[..., 0].max() <= 140 + slack


def test_extract_cli_wrong_config_is_a_clear_error(weights, video, tmp_path, capsys):
    out = tmp_path / "seq.json"
    hand_ckpt = weights["dir"] / weights["hand"].checkpoint
    # a whole-body config with the hand checkpoint: weights do not match
    rc, _, err = run_cli(
        capsys, "keypoints", "extract", "--video", video, "-o", out,
        "--pose-config", weights["wb"].config_path(), "--pose-checkpoint", hand_ckpt,
    )  # fmt: skip
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "does not match" in err
    # the hand config itself: not a 133-point model
    rc, _, err = run_cli(
        capsys, "keypoints", "extract", "--video", video, "-o", out,
        "--pose-config", weights["hand"].config_path(), "--pose-checkpoint", hand_ckpt,
    )  # fmt: skip
    assert rc == 2 and "21 keypoints" in err, err
    # not a config at all
    junk = tmp_path / "cfg.py"
    junk.write_text("model = dict(type='NoSuchModel'\n")
    rc, _, err = run_cli(
        capsys, "keypoints", "extract", "--video", video, "-o", out,
        "--pose-config", junk, "--pose-checkpoint", hand_ckpt,
    )  # fmt: skip
    assert rc == 2 and "cfg.py" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_weights_are_loaded_not_random(weights):
    from signgen.keypoints.extract import MMPoseWholeBody

    model = MMPoseWholeBody(
        weights["wb"].config_path(), weights["dir"] / weights["wb"].checkpoint, device="cpu"
    )
    loaded = model.model.state_dict()
    for key in ("backbone.conv1.weight", "head.final_layer.weight"):
        torch.testing.assert_close(loaded[key], weights["wb_state"][key])


def test_hand_detector_interface(weights):
    from signgen.keypoints.extract import MMPoseHandDetector
    from signgen.metrics.hand import HandKeypointDetector, hand_pose_error

    det = MMPoseHandDetector(
        weights["hand"].config_path(), weights["dir"] / weights["hand"].checkpoint, "cpu"
    )
    assert isinstance(det, HandKeypointDetector)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(2)]
    boxes = [
        np.array([[10, 10, 70, 70], [90, 40, 150, 100]], np.float32),
        np.zeros((0, 4), np.float32),
    ]
    out = det(images, boxes)
    assert [o.shape for o in out] == [(2, 21, 3), (0, 21, 3)]
    kp = out[0]
    assert np.isfinite(kp).all() and kp[..., 2].min() >= 0 and kp[..., 2].max() <= 1
    # keypoints are in frame pixels, inside each box enlarged 1.25x, give or take one
    # heatmap cell (64 columns)
    for (x1, y1, x2, y2), k in zip(boxes[0], kp):
        pad = 0.125 * (x2 - x1) + 1.25 * (x2 - x1) / 64 + 0.5
        assert (k[:, 0] >= x1 - pad).all() and (k[:, 0] <= x2 + pad).all()
        assert (k[:, 1] >= y1 - pad).all() and (k[:, 1] <= y2 + pad).all()
    # identical frames -> zero Hand PE through the metric's own code path
    frames = np.stack(images)  # (2, H, W, 3)
    hand_boxes = np.full((2, 2, 4), -1.0, np.float32)
    hand_boxes[0] = boxes[0]
    err, present = hand_pose_error(det, frames, frames, hand_boxes)
    assert present.tolist() == [2, 0] and err[0] == pytest.approx(0.0) and np.isnan(err[1])


def test_person_detector_feeds_auto_boxes(weights, video, tmp_path):
    import mmdet
    from mmdet.apis import init_detector
    from mmengine.config import Config

    from signgen.keypoints.extract import MMDetPersonDetector, MMPoseWholeBody, extract_keypoints

    cfg_path = f"{mmdet.__path__[0]}/.mim/configs/rtmdet/rtmdet_tiny_8xb32-300e_coco.py"
    det_model = init_detector(Config.fromfile(cfg_path), None, device="cpu")
    ckpt = tmp_path / "rtmdet_tiny.pth"
    state = det_model.state_dict()
    for level in range(3):  # make every anchor a confident "person" (class 0) so that NMS
        bias = state[f"bbox_head.rtm_cls.{level}.bias"]  # (mmcv's compiled op) has work
        bias[:] = -10.0
        bias[0] = 10.0
    torch.save({"state_dict": state, "meta": {"epoch": 300}}, ckpt)
    detector = MMDetPersonDetector(cfg_path, ckpt, device="cpu", score_thr=0.5)
    rng = np.random.default_rng(2)
    found = detector([rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(2)])
    assert len(found) == 2
    for box in found:  # a box inside the frame
        assert box is not None and box.shape == (4,)
        assert 0 <= box[0] <= box[2] <= W and 0 <= box[1] <= box[3] <= H
    model = MMPoseWholeBody(
        weights["wb"].config_path(),
        weights["dir"] / weights["wb"].checkpoint,
        device="cpu",
        flip_test=False,
    )
    seq = extract_keypoints(video, model, bbox="auto", detector=detector, progress=False)
    assert seq.points.shape == (T, NUM_POINTS, 3) and seq.size == (W, H)
    # a detector that finds nobody: the whole frame is used instead
    detector.score_thr = 1.1
    assert detector([np.zeros((H, W, 3), np.uint8)]) == [None]
    seq = extract_keypoints(video, model, bbox="auto", detector=detector, progress=False)
    assert seq.points.shape == (T, NUM_POINTS, 3)
