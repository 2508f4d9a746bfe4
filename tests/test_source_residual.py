"""Source-residual prediction (unet.source_residual): the UNet predicts the target latents
minus the source frame's, so an untrained model renders the first frame and guidance acts on
the residual only (signgen.models.spatial)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from model_helpers import random_clip, randomize, train_tiny_fpdm

from signgen.errors import InputError
from signgen.models.config import CONFIG_DIR, load_model_config
from signgen.sampling.guidance import GuidancePlan, fpdm_chain
from signgen.sampling.pipeline import FPDMPipeline

RESIDUAL = ["unet.config.in_channels=8", "unet.source_residual=true",
            "scheduler.prediction_type=sample"]  # fmt: skip


def _patch_residual_config(tmp_path: Path) -> Path:
    """The tiny model on a lossless 8x8 patch VAE, predicting the source residual."""
    data = yaml.safe_load((CONFIG_DIR / "tiny.yaml").read_text())
    data["vae"] = {"kind": "patch", "config": {"patch_size": 8, "scaling_factor": 2.0}}
    data["unet"]["config"].update(in_channels=2 * 192, out_channels=192)
    data["unet"]["source_residual"] = True
    data["scheduler"]["prediction_type"] = "sample"
    path = tmp_path / "residual.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _inputs(pipe: FPDMPipeline, b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    den = pipe.denoiser
    mh, mw = pipe.resolution
    h, w = mh // pipe.vae_scale_factor, mw // pipe.vae_scale_factor
    c = den.source_latent_channels
    return (torch.randn(b, c, h, w, generator=g), torch.rand(b, 3, mh, mw, generator=g),
            torch.randn(b, 5, den.source_projector.config.in_dim, generator=g),
            torch.randn(b, den.fusion_mlp.config.in_dim, generator=g),
            torch.randn(b, c, h, w, generator=g))  # fmt: skip


def test_prediction_is_source_latents_plus_the_unet_output_in_every_branch():
    pipe = FPDMPipeline.from_config(load_model_config("tiny", RESIDUAL))
    den = pipe.denoiser
    assert den.source_residual
    noisy, pose, hidden, fusion, lat = _inputs(pipe, 1)
    # [uncond; src; full]: the uncond branch drops the source
    masks = GuidancePlan(fpdm_chain(), (2.0, 2.0), skip_zero=False).drop_masks(1)
    t = torch.tensor(300)
    rep = {"pose": pose.repeat(3, 1, 1, 1), "hidden": hidden.repeat(3, 1, 1),
           "fusion": fusion.repeat(3, 1)}  # fmt: skip
    with torch.no_grad():
        cond = den.encode_conditions(*rep.values(), **masks, source_latents=lat)
        # Built from config: conv_out is zero, so the untrained prediction IS the source.
        out = den.denoise(noisy.repeat(3, 1, 1, 1), t, cond)
        torch.testing.assert_close(out, lat.repeat(3, 1, 1, 1), rtol=0, atol=0)
        randomize(den.unet, 2, std=0.1)
        out = den.denoise(noisy.repeat(3, 1, 1, 1), t, cond)
        den.source_residual = False  # the same weights, plain prediction
        plain = den.denoise(
            noisy.repeat(3, 1, 1, 1), t,
            den.encode_conditions(*rep.values(), **masks, source_latents=lat),
        )  # fmt: skip
    assert not torch.allclose(plain, torch.zeros_like(plain))
    # The base is added after dropout: the uncond branch (source dropped) gets it too.
    torch.testing.assert_close(out - plain, lat.repeat(3, 1, 1, 1))


def test_an_untrained_residual_model_renders_the_first_frame_and_survives_save_load(
    tmp_path: Path,
):
    pipe = FPDMPipeline.from_config(load_model_config(_patch_residual_config(tmp_path)))
    img, seq = random_clip(frames=2, size=(32, 32))  # the model's size: no letterbox
    kw = {"steps": 4, "seed": 0, "guidance": (2.0, 2.0)}
    frames = pipe(img, seq, **kw)
    # Every branch predicts the source; DDIM's last step keeps sqrt(1 - alphabar_0) = 0.03
    # of its noise estimate (scaled latents / 2 -> about 0.4% of the pixel range).
    err = np.abs(frames.astype(int) - img[None].astype(int))
    assert err.mean() < 3 and err.max() < 20, (err.mean(), err.max())
    # An image unrelated to the first frame is far from it (the check can fail).
    assert np.abs(255 - img.astype(int) - img.astype(int)).mean() > 30

    randomize(pipe.denoiser.unet, 3, std=0.05)
    before = pipe(img, seq, **kw)
    folder = pipe.save_pretrained(tmp_path / "model")
    index = (folder / "model_index.json").read_text()
    assert '"source_residual": true' in index
    again = FPDMPipeline.from_pretrained(folder)
    assert again.denoiser.source_residual
    np.testing.assert_array_equal(again(img, seq, **kw), before)


BAD_RESIDUAL = [
    (["unet.source_residual=true", "scheduler.prediction_type=sample"], "in_channels"),
    (["unet.config.in_channels=8", "unet.source_residual=true",
      "scheduler.prediction_type=v_prediction"], "prediction_type"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "match"), BAD_RESIDUAL)
def test_invalid_residual_configs_are_input_errors(overrides, match):
    with pytest.raises(InputError, match=match):
        load_model_config("tiny", overrides)


def test_pipeline_refuses_a_residual_model_with_a_non_sample_scheduler():
    from signgen.models.factory import build_components
    from signgen.models.schedulers import make_scheduler

    cfg = load_model_config("tiny", RESIDUAL)
    comps = build_components(cfg)
    comps["scheduler"] = make_scheduler("ddim", comps["scheduler"], prediction_type="epsilon")
    with pytest.raises(ValueError, match="prediction_type must be 'sample'"):
        FPDMPipeline.from_components(cfg, comps)


def test_training_learns_the_residual_and_exports_a_residual_model(tmp_path: Path):
    """One CLI step: the zero conv_out moves off zero (the loss reaches it) and the export
    is a source-residual model folder that predicts the clean sample."""
    out, w = train_tiny_fpdm(tmp_path, RESIDUAL)
    assert w["denoiser.unet.conv_out.weight"].abs().sum() > 0  # zero at init, trained
    back = FPDMPipeline.from_pretrained(out / "export")
    assert back.denoiser.source_residual
    assert back.scheduler.config.prediction_type == "sample"
