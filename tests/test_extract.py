"""Keypoint extraction logic that needs no mmcv: boxes, the frame loop, checkpoints, CLI errors.

The real mmpose models are exercised in tests/test_extract_mm.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from signgen.cli import main
from signgen.errors import FormatError, InputError, MissingWeightsError, UnsafePickleError
from signgen.keypoints import extract as ex
from signgen.keypoints.layout import NUM_POINTS
from signgen.keypoints.models import MODELS, find_checkpoint, format_model_table, get_model
from signgen.video import write_video

W, H, FPS, T = 160, 120, 12.5, 5


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    frames = np.full((T, H, W, 3), 40, dtype=np.uint8)  # (T, H, W, 3)
    for t in range(T):
        frames[t, 20:110, 50 + 2 * t : 110 + 2 * t] = (200, 150, 120)
    path = tmp_path_factory.mktemp("extract") / "clip.mp4"
    write_video(path, frames, fps=FPS)
    return str(path)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("signgen: error:"), err
    for frag in fragments:
        assert frag in lines[0], err


# ---- boxes -------------------------------------------------------------------------------


def test_parse_bbox():
    assert ex.parse_bbox("auto") == "auto"
    assert ex.parse_bbox(" full ") == "full"
    np.testing.assert_array_equal(ex.parse_bbox("1,2,30.5,40"), [1, 2, 30.5, 40])
    for bad in ("1,2,3", "a,b,c,d", "10,0,5,20", "0,10,20,10", "nan,0,1,1", "whole"):
        with pytest.raises(InputError, match="--bbox"):
            ex.parse_bbox(bad)


def test_box_from_keypoints_pads_clips_and_gives_up():
    pts = np.zeros((NUM_POINTS, 3), dtype=np.float32)
    pts[:4] = [[50, 40, 0.9], [90, 40, 0.9], [50, 100, 0.9], [90, 100, 0.9]]
    pts[4] = [0, 0, 0.1]  # not confident: ignored
    box = ex.box_from_keypoints(pts, 160, 120, pad=0.25)
    # 40 x 60 box grown by 10 px / 15 px per side, bottom clipped to the frame
    np.testing.assert_allclose(box, [40, 25, 100, 115])
    box = ex.box_from_keypoints(pts, 160, 110, pad=0.25)
    assert box[3] == 110
    pts[3, 2] = 0.0  # three confident points are too few
    assert ex.box_from_keypoints(pts, 160, 120) is None


class FakePose:
    """Puts every keypoint of a frame in the centre of its box; records the boxes."""

    num_keypoints = NUM_POINTS

    def __init__(self, score: float = 0.9) -> None:
        self.score = score
        self.calls: list[list[np.ndarray]] = []

    def __call__(self, images, boxes):
        self.calls.append([np.asarray(b, dtype=np.float32).copy() for b in boxes])
        out = []
        for img, b in zip(images, boxes):
            assert img.dtype == np.uint8 and img.shape == (H, W, 3)
            b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
            kp = np.zeros((len(b), NUM_POINTS, 3), dtype=np.float32)
            # spread points over the middle half of the box so the derived box is smaller
            u = np.linspace(0.25, 0.75, NUM_POINTS, dtype=np.float32)
            kp[:, :, 0] = b[:, :1] + u * (b[:, 2:3] - b[:, :1])
            kp[:, :, 1] = b[:, 1:2] + u * (b[:, 3:4] - b[:, 1:2])
            kp[:, :, 2] = self.score
            out.append(kp)
        return out


def boxes_used(model: FakePose) -> np.ndarray:
    return np.concatenate([np.concatenate(c) for c in model.calls])  # (T, 4)


def test_extract_full_and_fixed_boxes(video):
    model = FakePose()
    seq = ex.extract_keypoints(video, model, bbox="full", batch_size=2, progress=False)
    assert seq.points.shape == (T, NUM_POINTS, 3)
    assert (seq.width, seq.height) == (W, H) and seq.fps == pytest.approx(FPS)
    assert [len(c) for c in model.calls] == [2, 2, 1]  # streamed in batches
    np.testing.assert_array_equal(boxes_used(model), np.tile([0, 0, W, H], (T, 1)))

    model = FakePose()
    ex.extract_keypoints(video, model, bbox="10,5,150,500", batch_size=4, progress=False)
    np.testing.assert_array_equal(boxes_used(model), np.tile([10, 5, 150, H], (T, 1)))
    with pytest.raises(InputError, match="outside"):
        ex.extract_keypoints(video, model, bbox="500,5,600,50", progress=False)


def test_extract_auto_box_follows_previous_batch(video):
    model = FakePose()
    seq = ex.extract_keypoints(video, model, bbox="auto", batch_size=2, progress=False)
    used = boxes_used(model)
    np.testing.assert_array_equal(used[:2], np.tile([0, 0, W, H], (2, 1)))  # first batch
    expected = ex.box_from_keypoints(seq.points[1], W, H)  # from the last frame of batch 1
    np.testing.assert_allclose(used[2], expected)
    np.testing.assert_allclose(used[3], expected)
    assert used[2, 2] - used[2, 0] < W  # tighter than the whole frame
    # unconfident keypoints -> back to the whole frame
    model = FakePose(score=0.05)
    ex.extract_keypoints(video, model, bbox="auto", batch_size=2, progress=False)
    np.testing.assert_array_equal(boxes_used(model), np.tile([0, 0, W, H], (T, 1)))


def test_extract_auto_with_detector_reuses_last_box(video):
    found = [np.array([20, 10, 100, 110], np.float32), None, None, np.array([30, 0, 90, 100])]
    found.append(None)

    def detector(images):
        return [found.pop(0) for _ in images]

    model = FakePose()
    ex.extract_keypoints(video, model, bbox="auto", detector=detector, batch_size=3, progress=False)
    used = boxes_used(model)
    np.testing.assert_array_equal(used[1], [20, 10, 100, 110])  # no person: previous box
    np.testing.assert_array_equal(used[4], [30, 0, 90, 100])
    with pytest.raises(InputError, match="detector"):
        ex.extract_keypoints(video, FakePose(), bbox="full", detector=detector, progress=False)


def test_extract_rejects_non_wholebody_model(video):
    model = FakePose()
    model.num_keypoints = 21
    with pytest.raises(InputError, match="133"):
        ex.extract_keypoints(video, model, progress=False)


# ---- checkpoints -------------------------------------------------------------------------


def test_checkpoint_with_metadata_loads_weights_only(tmp_path):
    from mmengine.logging import HistoryBuffer

    hist = HistoryBuffer()
    hist.update(0.5)
    sd = {"backbone.w": torch.arange(6.0).reshape(2, 3)}
    meta = {
        "epoch": 210,
        "mmpose_version": "1.3.2",
        "seed": np.int64(7),
        "dataset_meta": {"sigmas": np.linspace(0, 1, 5, dtype=np.float32), "name": "coco"},
    }
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": sd, "meta": meta, "message_hub": {"loss": hist}}, path)
    ckpt = ex.load_checkpoint_file(path)
    torch.testing.assert_close(ckpt["state_dict"]["backbone.w"], sd["backbone.w"])
    assert int(ckpt["meta"]["seed"]) == 7
    np.testing.assert_array_equal(
        ckpt["meta"]["dataset_meta"]["sigmas"], meta["dataset_meta"]["sigmas"]
    )
    assert ckpt["message_hub"]["loss"].current() == 0.5


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_checkpoint_refuses_code_and_garbage(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": {"x": _Evil()}}, evil)
    with pytest.raises(UnsafePickleError, match="system"):
        ex.load_checkpoint_file(evil)
    evil2 = tmp_path / "evil2.pth"  # getattr is admitted only on allow-listed classes
    torch.save({"x": _GetattrPrivate()}, evil2)
    with pytest.raises(FormatError, match="__init_subclass__"):
        ex.load_checkpoint_file(evil2)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(FormatError):
        ex.load_checkpoint_file(junk)
    with pytest.raises(MissingWeightsError):
        ex.load_checkpoint_file(tmp_path / "absent.pth")


class _GetattrPrivate:
    def __reduce__(self):
        from mmengine.logging import HistoryBuffer

        return (getattr, (HistoryBuffer, "__init_subclass__"))


def test_load_weights_checks_every_weight():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    good = {f"module.{k}": torch.ones_like(v) for k, v in model.state_dict().items()}
    ex.load_weights(model, {"state_dict": good}, "ckpt")
    assert torch.equal(model[0].weight, torch.ones(2, 3))
    with pytest.raises(FormatError, match="missing"):
        ex.load_weights(model, {"state_dict": {"0.weight": torch.ones(2, 3)}}, "ckpt")
    with pytest.raises(FormatError, match="does not match"):
        ex.load_weights(model, {"0.weight": torch.ones(5, 3), "0.bias": torch.ones(5)}, "ckpt")


# ---- named models --------------------------------------------------------------------------


def test_named_models_and_missing_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("SIGNGEN_WEIGHTS_DIR", raising=False)
    spec = get_model("hrnet-w32-wholebody")
    assert "td-hm_hrnet-w32_8xb64-210e_coco-wholebody-256x192" in spec.config
    assert spec.url.endswith(spec.checkpoint) and spec.url.startswith("https://")
    assert get_model("hrnetv2-w18-hand").num_keypoints == 21
    with pytest.raises(MissingWeightsError) as err:
        find_checkpoint(spec)
    assert spec.checkpoint in str(err.value) and spec.url in str(err.value)
    monkeypatch.setenv("SIGNGEN_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=str(tmp_path / spec.checkpoint)):
        find_checkpoint(spec)
    (tmp_path / spec.checkpoint).write_bytes(b"x")
    assert find_checkpoint(spec) == tmp_path / spec.checkpoint
    table = format_model_table()
    for m in MODELS.values():
        assert m.name in table and m.checkpoint in table and m.url in table
    with pytest.raises(InputError, match="hrnet-w32-wholebody"):
        get_model("hrnet-w99")


def test_cli_models_lists_names(capsys):
    rc, out, _ = run_cli(capsys, "keypoints", "models")
    assert rc == 0
    assert all(name in out for name in MODELS)


# ---- CLI errors that happen before any model is loaded ---------------------------------------


def test_cli_errors(tmp_path, capsys, monkeypatch, video):
    monkeypatch.delenv("SIGNGEN_WEIGHTS_DIR", raising=False)
    out = tmp_path / "seq.json"
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 50)
    rc, _, err = run_cli(capsys, "keypoints", "extract", "--video", bad, "-o", out)
    assert_one_line_error(rc, err, "broken.mp4")
    rc, _, err = run_cli(
        capsys, "keypoints", "extract", "--video", tmp_path / "nope.mp4", "-o", out
    )
    assert_one_line_error(rc, err, "nope.mp4")
    rc, _, err = run_cli(
        capsys, "keypoints", "extract", "--video", video, "-o", out, "--backend", "hrnet"
    )
    assert_one_line_error(rc, err, MODELS["hrnet-w32-wholebody"].checkpoint, "https://")
    rc, _, err = run_cli(
        capsys, "keypoints", "extract", "--video", video, "-o", out,
        "--pose-checkpoint", tmp_path / "absent.pth",
    )  # fmt: skip
    assert_one_line_error(rc, err, "absent.pth")
    rc, _, err = run_cli(
        capsys, "keypoints", "extract", "--video", video, "-o", out,
        "--pose-config", tmp_path / "nope.py", "--pose-checkpoint", bad,
    )  # fmt: skip
    assert_one_line_error(rc, err, "nope.py")
    rc, _, err = run_cli(capsys, "keypoints", "extract", "--video", video, "-o", out, "--bbox", "x")
    assert_one_line_error(rc, err, "--bbox")
    rc, _, err = run_cli(
        capsys, "keypoints", "extract", "--video", video, "-o", out, "--batch-size", "0"
    )
    assert_one_line_error(rc, err, "--batch-size")
    assert not out.exists()
