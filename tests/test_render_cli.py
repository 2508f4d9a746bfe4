"""`signgen render` end to end on a generated video + keypoint file, and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from signgen.cli import main
from signgen.keypoints.sequence import KeypointSequence
from signgen.models.config import load_model_config
from signgen.sampling.pipeline import FPDMPipeline, default_model_path
from signgen.video import VideoWriter, probe, read_frames

W, H, FPS, T = 22, 26, 12.5, 5


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("render")
    rng = np.random.default_rng(0)
    with VideoWriter(d / "first.mp4", fps=25, width=W, height=H) as w:
        for _ in range(3):
            w.write(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    pts = np.zeros((T, 133, 3), np.float32)
    pts[..., 0] = rng.uniform(0, W, (T, 133))
    pts[..., 1] = rng.uniform(0, H, (T, 133))
    pts[..., 2] = 1.0
    KeypointSequence(pts, W, H, FPS).save(d / "seq.json")
    FPDMPipeline.from_config(load_model_config("tiny")).save_pretrained(d / "model")
    return d


def _render(files, out_dir, *extra: str) -> int:
    return main([
        "render", "--video", str(files / "first.mp4"), "--keypoints", str(files / "seq.json"),
        "--model", str(files / "model"), "-o", str(out_dir / "out.mp4"), "--steps", "2",
        *extra,
    ])  # fmt: skip


def test_render_end_to_end(files, tmp_path, capsys):
    rc = _render(files, tmp_path, "--frames-dir", str(tmp_path / "frames"), "--batch-size", "2")
    assert rc == 0
    info = probe(tmp_path / "out.mp4")
    assert (info.width, info.height) == (W, H)
    assert info.num_frames == T
    assert info.fps == pytest.approx(FPS)
    pngs = sorted((tmp_path / "frames").glob("*.png"))
    assert len(pngs) == T and pngs[0].name == "images0001.png"
    out = capsys.readouterr()
    assert f"wrote {T} frames" in out.out and "frames/s" in out.out
    # The PNGs are the frames the pipeline renders (same seed, lossless), in order.
    pipe = FPDMPipeline.from_pretrained(files / "model")
    from signgen.keypoints.io import load_keypoints
    from signgen.video import read_first_frame

    first = read_first_frame(files / "first.mp4")
    expected = pipe(first, load_keypoints(files / "seq.json"), steps=2)
    got = read_frames(tmp_path / "frames")
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected).max() <= 1


def test_default_output_name_in_cwd(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main([
        "render", "--video", str(files / "first.mp4"), "--keypoints", str(files / "seq.json"),
        "--model", str(files / "model"), "--steps", "1",
    ])  # fmt: skip
    assert rc == 0 and (tmp_path / "first_signgen.mp4").is_file()


def test_without_model_says_untrained(files, tmp_path, capsys):
    if (default_model_path() / "model_index.json").is_file():
        pytest.skip("a demo model is bundled")
    rc = main([
        "render", "--video", str(files / "first.mp4"), "--keypoints", str(files / "seq.json"),
        "-o", str(tmp_path / "o.mp4"), "--steps", "1",
    ])  # fmt: skip
    assert rc == 0 and (tmp_path / "o.mp4").is_file()
    assert "UNTRAINED" in capsys.readouterr().err


def _bad(files, tmp_path, capsys, *, video=None, keypoints=None, model=None, extra=()):
    out = tmp_path / "out" / "bad.mp4"
    frames = tmp_path / "out" / "frames"
    rc = main([
        "render", "--video", str(video or files / "first.mp4"),
        "--keypoints", str(keypoints or files / "seq.json"),
        "--model", str(model or files / "model"), "-o", str(out), "--frames-dir", str(frames),
        "--steps", "1", *extra,
    ])  # fmt: skip
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "render:" not in ln]  # drop progress bar lines
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("signgen: error: "), err
    assert not out.exists() and not frames.exists()
    leftovers = list(out.parent.iterdir()) if out.parent.exists() else []
    assert not leftovers, leftovers
    return lines[0]


def test_empty_sequence(files, tmp_path, capsys):
    empty = tmp_path / "empty.json"
    doc = KeypointSequence(np.zeros((1, 133, 3)), W, H, FPS).to_json_dict()
    doc["frames"] = []
    empty.write_text(json.dumps(doc))
    assert "0 frames" in _bad(files, tmp_path, capsys, keypoints=empty)


def test_size_mismatch(files, tmp_path, capsys):
    other = tmp_path / "other.json"
    KeypointSequence(np.ones((2, 133, 3)), 2 * W + 7, H, FPS).save(other)
    assert "aspect ratio" in _bad(files, tmp_path, capsys, keypoints=other)


def test_undecodable_video(files, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01 definitely not a video " * 64)
    _bad(files, tmp_path, capsys, video=bad)


def test_model_missing_component(files, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(files / "model", model)
    shutil.rmtree(model / "pose_encoder")
    assert "pose_encoder" in _bad(files, tmp_path, capsys, model=model)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu(files, tmp_path, capsys):
    assert "CUDA" in _bad(files, tmp_path, capsys, extra=("--device", "cuda"))


@pytest.mark.parametrize("extra", [("--steps", "0"), ("--batch-size", "0"), ("--batch-size", "-3")])
def test_non_positive_steps_or_batch(files, tmp_path, capsys, extra):
    assert "positive" in _bad(files, tmp_path, capsys, extra=extra)


def test_unknown_scheduler(files, tmp_path, capsys):
    assert "scheduler" in _bad(files, tmp_path, capsys, extra=("--scheduler", "plms"))


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    text = capsys.readouterr().out
    for needle in ("--guidance", "--independent-noise", "letterbox", "examples:", "default 20"):
        assert needle in text
