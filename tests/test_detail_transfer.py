"""Source detail transfer (signgen.sampling.detail): where a low-resolution model's frame
agrees with the first frame, the first frame's own pixels are put back; where it changed by
more than the threshold, the generated pixels are kept alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import random_clip

from signgen.cli import main
from signgen.errors import InputError
from signgen.models.config import load_model_config
from signgen.models.preprocess import uint8_to_tensor
from signgen.models.processor import FPDMImageProcessor
from signgen.sampling.detail import DetailTransfer, detail_layers, transfer_detail
from signgen.sampling.options import RenderOptions
from signgen.sampling.pipeline import FPDMPipeline


def test_transfer_on_a_hand_computed_case():
    full = torch.tensor([0.2, 0.9, 0.5]).view(1, 3, 1, 1).expand(1, 3, 1, 4).clone()
    low = torch.full((1, 3, 1, 4), 0.5)
    # Per pixel max |generated - low|: 0, 0.05, 0.1 (= threshold), 0.3.
    gen = low.clone()
    gen[..., 1] += 0.05
    gen[0, 1, 0, 2] -= 0.1
    gen[0, 2, 0, 3] += 0.3
    out = transfer_detail(gen, full, low, threshold=0.1)
    keep = torch.tensor([1.0, 0.5, 0.0, 0.0])  # 1 - change / threshold, clamped
    torch.testing.assert_close(out, gen + keep * (full - gen))
    torch.testing.assert_close(out[..., 0], full[..., 0])  # unchanged: the first frame exactly
    # Half-way (change 0.05 of 0.1): the mean of the two, so half of the model's error on
    # a still pixel is left, not all of it as with the detail band alone (gen + full - low).
    torch.testing.assert_close(out[..., 1], (gen[..., 1] + full[..., 1]) / 2)
    torch.testing.assert_close(out[..., 3], gen[..., 3])  # moved: generated pixels alone


def test_layers_of_a_frame_at_the_model_size_carry_no_detail():
    img, _ = random_clip(frames=1, size=(16, 24))
    full, low = detail_layers(img, FPDMImageProcessor(resolution=(24, 16)))  # its own size
    torch.testing.assert_close(full, low)
    full, low = detail_layers(img, FPDMImageProcessor(resolution=(12, 8)))  # detail lost
    assert (full - low).abs().mean() > 0.05
    torch.testing.assert_close(full, uint8_to_tensor(img))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "x"])
def test_bad_thresholds_are_errors(bad):
    with pytest.raises(InputError, match="detail-transfer threshold"):
        RenderOptions(detail_transfer=bad)
    assert RenderOptions(detail_transfer=0).detail_transfer == 0.0
    with pytest.raises(ValueError, match="positive"):
        DetailTransfer(0.0)  # off is no post-processor at all, not a zero threshold


@pytest.fixture()
def pipe() -> FPDMPipeline:
    return FPDMPipeline.from_config(load_model_config("tiny", ["detail_transfer=0.1"]))


def _fake_generate(pipe: FPDMPipeline, img: np.ndarray, moved: bool):
    """generate() returning the first frame at model resolution (or it shifted by 0.5)."""
    geometry = pipe.image_processor.geometry((img.shape[1], img.shape[0]))
    low = geometry.apply(uint8_to_tensor(img))  # (1, 3, mh, mw)

    def generate(sources, pose, frame_indices, *args, **kwargs):
        x = low + 0.5 if moved else low  # moved: every pixel changed by 0.5
        return x.expand(len(sources), -1, -1, -1)

    return generate


def test_render_puts_the_first_frames_detail_back_where_nothing_changed(pipe, monkeypatch):
    img, seq = random_clip(frames=2, size=(40, 56))  # larger than the 32x32 model
    img = (img.astype(int) * 100 // 255).astype(np.uint8)  # in [0, 100]: + 0.5 stays in range
    monkeypatch.setattr(pipe, "generate", _fake_generate(pipe, img, moved=False))
    out = pipe(img, seq, steps=1)
    # Without the transfer the frame is the first frame's low-pass version: far from it.
    plain = pipe(img, seq, steps=1, detail_transfer=0)
    assert np.abs(plain.astype(int) - img.astype(int)).mean() > 10
    assert np.abs(out.astype(int) - img[None].astype(int)).max() <= 1

    monkeypatch.setattr(pipe, "generate", _fake_generate(pipe, img, moved=True))
    moved = pipe(img, seq, steps=1)
    np.testing.assert_array_equal(moved, pipe(img, seq, steps=1, detail_transfer=0))


def test_the_threshold_survives_save_load_and_the_cli_overrides_it(pipe, tmp_path: Path):
    folder = pipe.save_pretrained(tmp_path / "model")
    assert json.loads((folder / "model_index.json").read_text())["detail_transfer"] == 0.1
    assert FPDMPipeline.from_pretrained(folder).detail_transfer == 0.1
    plain = FPDMPipeline.from_config(load_model_config("tiny")).save_pretrained(tmp_path / "p")
    assert json.loads((plain / "model_index.json").read_text())["detail_transfer"] == 0.0
    assert FPDMPipeline.from_pretrained(plain).detail_transfer == 0.0

    img, seq = random_clip(frames=2, size=(24, 24))
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "first.png")
    seq.save(tmp_path / "seq.json")
    base = ["render", "--video", str(tmp_path / "first.png"), "--keypoints",
            str(tmp_path / "seq.json"), "--model", str(folder), "--steps", "1"]  # fmt: skip
    assert main([*base, "-o", str(tmp_path / "a.mp4"), "--detail-transfer", "-1"]) == 2
    assert not (tmp_path / "a.mp4").exists()
    assert main([*base, "-o", str(tmp_path / "b.mp4"), "--detail-transfer", "0"]) == 0


def test_model_config_rejects_a_negative_threshold():
    with pytest.raises(InputError, match="detail-transfer threshold"):
        load_model_config("tiny", ["detail_transfer=-1"])
