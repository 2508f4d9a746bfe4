"""Spatial source latents: the optional pixel-aligned source path (signgen.models.spatial).

A UNet with in_channels = 2 x out_channels takes the source frame's VAE latents
concatenated to the noisy latents; the model folder selects the spatial-source denoiser by
that alone. The latents are part of the source condition (dropped with it), are encoded
once per clip by the pipeline, and survive save/load and training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import random_clip, randomize, tiny_world, train_tiny_fpdm

from signgen.models.config import load_model_config
from signgen.models.spatial import SpatialSourceDenoiser
from signgen.sampling.options import RenderOptions
from signgen.sampling.pipeline import FPDMPipeline

SPATIAL = ["unet.config.in_channels=8"]  # tiny latents have 4 channels
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


@pytest.fixture(scope="module")
def pipe() -> FPDMPipeline:
    p = FPDMPipeline.from_config(load_model_config("tiny", SPATIAL))
    randomize(p.pose_encoder, 1)
    return p


def _conds(p: FPDMPipeline, b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    den = p.denoiser
    mh, mw = p.resolution
    h, w = mh // p.vae_scale_factor, mw // p.vae_scale_factor
    pose = torch.rand(b, 3, mh, mw, generator=g)
    hidden = torch.randn(b, 5, den.source_projector.config.in_dim, generator=g)
    fusion = torch.randn(b, den.fusion_mlp.config.in_dim, generator=g)
    lat = torch.randn(b, 4, h, w, generator=g)
    noisy = torch.randn(b, 4, h, w, generator=g)
    return noisy, pose, hidden, fusion, lat


def test_channel_count_selects_the_path(pipe):
    assert pipe.denoiser.source_latent_channels == 4
    plain = FPDMPipeline.from_config(load_model_config("tiny"))
    assert plain.denoiser.source_latent_channels == 0
    assert isinstance(pipe.denoiser, SpatialSourceDenoiser)
    assert not isinstance(plain.denoiser, SpatialSourceDenoiser)  # the generic core
    img, _ = random_clip(frames=3)
    assert "source_latents" not in plain.encode_source(img).extras
    _, pose, hidden, fusion, lat = _conds(plain)
    with pytest.raises(ValueError, match="no spatial source"):
        plain.denoiser.encode_conditions(pose, hidden, fusion, source_latents=lat)


def test_in_channels_must_be_one_or_two_latents():
    from signgen.models.factory import build_components
    from signgen.models.fpdm import FPDMDenoiser

    c = build_components(load_model_config("tiny", ["unet.config.in_channels=6"]))
    parts = (c["unet"], c["pose_encoder"], c["source_projector"], c["fusion_mlp"])
    with pytest.raises(ValueError, match="as many inputs as outputs"):
        FPDMDenoiser(*parts)
    with pytest.raises(ValueError, match="twice as many inputs"):
        SpatialSourceDenoiser(*parts)


def test_source_latents_reach_the_unet_and_drop_with_the_source(pipe):
    den = pipe.denoiser
    randomize(den.unet.conv_in, 2)  # a non-trivial weight on the extra input channels
    noisy, pose, hidden, fusion, lat = _conds(pipe)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        a = den(noisy, t, pose, hidden, fusion, source_latents=lat)
        b = den(noisy, t, pose, hidden, fusion, source_latents=lat + 1.0)
        assert not torch.allclose(a, b), "the source latents do not change the prediction"
        # Dropping the source zeroes the latents for that sample only.
        drop = torch.tensor([True, False])
        d = den(noisy, t, pose, hidden, fusion, source_latents=lat, drop_source=drop)
        null = den(noisy, t, pose, hidden, fusion, source_latents=torch.zeros_like(lat),
                   drop_source=drop)  # fmt: skip
        torch.testing.assert_close(d[0], null[0])
        torch.testing.assert_close(d[1], a[1])
        # None is the null condition for every sample.
        n = den(noisy, t, pose, hidden, fusion, source_latents=None)
        z = den(noisy, t, pose, hidden, fusion, source_latents=torch.zeros_like(lat))
        torch.testing.assert_close(n, z)
        # A batch of one is broadcast (one source per clip).
        one = den(noisy, t, pose, hidden, fusion, source_latents=lat[:1])
        rep = den(noisy, t, pose, hidden, fusion, source_latents=lat[:1].expand(2, -1, -1, -1))
        torch.testing.assert_close(one, rep)


def test_pipeline_encodes_the_source_latents_once_per_clip(pipe):
    from signgen.models.preprocess import to_model_input

    img, kp = random_clip(frames=3)
    opts = RenderOptions(steps=2, guidance=(2.0, 3.0))
    clip = pipe.prepare_clip(img, opts)
    x = to_model_input(img[None], pipe.resolution)
    expect = pipe.vae.encode(x).latent_dist.mode() * pipe.vae.config.scaling_factor
    latents = clip.encoded.extras["source_latents"]
    assert latents.shape == (1, 4, *expect.shape[-2:])
    torch.testing.assert_close(latents, expect)
    # The guidance branches see the source latents in src/full and zeros in uncond.
    seen = []
    orig = pipe.denoiser.denoise

    def spy(noisy, t, cond):
        seen.append(cond.source_latents.clone())
        return orig(noisy, t, cond)

    pipe.denoiser.denoise = spy
    try:
        # Guidance 2, 3: every branch has a non-zero weight, so all three are run.
        frames = pipe.render_frames([clip] * 3, kp.points, [0, 1, 2], opts)
    finally:
        del pipe.denoiser.denoise
    assert len(frames) == 3 and frames[0].shape == img.shape
    lat = seen[0]
    assert lat.shape == (9, *expect.shape[1:])  # [uncond; src; full] x 3 frames
    assert torch.count_nonzero(lat[:3]) == 0
    for i in range(3, 9):
        torch.testing.assert_close(lat[i], expect[0])


def test_the_first_frame_changes_the_render(pipe):
    img, kp = random_clip(frames=3)
    other = 255 - img
    a = pipe(img, kp, steps=2, seed=0)
    b = pipe(other, kp, steps=2, seed=0)
    assert a.shape == b.shape == (3, 26, 21, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.5


def test_save_load_keeps_the_path(pipe, tmp_path: Path):
    pipe.save_pretrained(tmp_path / "m")
    back = FPDMPipeline.from_pretrained(tmp_path / "m")
    assert back.denoiser.source_latent_channels == 4
    img, kp = random_clip(frames=3)
    np.testing.assert_array_equal(pipe(img, kp, steps=2, seed=3), back(img, kp, steps=2, seed=3))


def test_one_training_step_through_the_cli(tmp_path: Path):
    from signgen.train.config import load_train_config
    from signgen.train.stages import task_factory

    prepared = tiny_world(tmp_path / "world")
    spatial = ["unet.config.in_channels=8"]
    cfg = load_train_config(
        CONFIGS / "tiny_fpdm.yaml", [f"data.prepared={prepared}", *(f"model.{o}" for o in spatial)]
    )
    task = task_factory("fpdm")(cfg, torch.device("cpu"))
    before = task.module.denoiser.unet.conv_in.weight.detach().clone()
    out, after = train_tiny_fpdm(tmp_path, spatial, prepared=prepared)
    w = after["denoiser.unet.conv_in.weight"]
    assert w.shape == before.shape and w.shape[1] == 8
    # The source-latent input channels are trained (gradients reach them).
    assert not torch.equal(w[:, 4:], before[:, 4:])
    back = FPDMPipeline.from_pretrained(out / "export")
    assert back.denoiser.source_latent_channels == 4
