"""PatchAutoencoder: the fixed, lossless patch "VAE" of miniature models (vae.kind: patch).

It must be an exact inverse pair, look like AutoencoderKL to the trainer and the pipeline,
and survive a model folder's save/load (an allow-listed class, safetensors only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from model_helpers import random_clip, randomize, train_tiny_fpdm

from signgen.errors import InputError
from signgen.models.config import CONFIG_DIR, load_model_config
from signgen.models.modules import PatchAutoencoder, load_vae, vae_downscale_factor
from signgen.sampling.pipeline import FPDMPipeline


def test_encode_is_space_to_depth_and_decode_inverts_it_exactly():
    ae = PatchAutoencoder(patch_size=4)
    x = torch.rand(2, 3, 16, 12) * 2 - 1
    dist = ae.encode(x).latent_dist
    z = dist.mode()
    assert z.shape == (2, 48, 4, 3)
    # Channel c * 16 + i * 4 + j of latent (y, x) is pixel (4y + i, 4x + j) of channel c.
    assert torch.equal(z[1, 2 * 16 + 3 * 4 + 1, 2, 1], x[1, 2, 4 * 2 + 3, 4 * 1 + 1])
    assert torch.equal(dist.sample(generator=torch.Generator().manual_seed(0)), z)
    assert torch.equal(ae.decode(z).sample, x)
    assert torch.equal(ae.decode(z, return_dict=False)[0], x)
    assert vae_downscale_factor(ae) == 4 and ae.latent_channels == 48


def test_patch_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of 2"):
        PatchAutoencoder(patch_size=3)


def test_load_vae_picks_the_class_named_by_the_folder(tmp_path: Path):
    from diffusers import AutoencoderKL

    PatchAutoencoder(patch_size=2, scaling_factor=2.5).save_pretrained(tmp_path / "patch")
    tiny = load_model_config("tiny").vae.config
    AutoencoderKL(**tiny).save_pretrained(tmp_path / "kl")
    patch = load_vae(tmp_path / "patch")
    assert isinstance(patch, PatchAutoencoder)
    assert patch.config.patch_size == 2 and patch.config.scaling_factor == 2.5
    assert isinstance(load_vae(tmp_path / "kl"), AutoencoderKL)
    assert vae_downscale_factor(load_vae(tmp_path / "kl")) == 8


PATCH = ["vae.kind=patch", "vae.config={patch_size: 8, scaling_factor: 2.0}",
         "unet.config.in_channels=384", "unet.config.out_channels=192"]  # fmt: skip


def _patch_config(tmp_path: Path) -> Path:
    """The tiny test model with a patch VAE of side 8 (the tiny pose encoder's /8)."""
    data = yaml.safe_load((CONFIG_DIR / "tiny.yaml").read_text())
    data["vae"] = {"kind": "patch", "config": {"patch_size": 8, "scaling_factor": 2.0}}
    data["unet"]["config"].update(in_channels=2 * 192, out_channels=192)  # + source latents
    path = tmp_path / "patch.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_vae_kind_is_an_input_error():
    with pytest.raises(InputError, match=r"vae\.kind"):
        load_model_config("tiny", ["vae.kind=vqgan"])


def test_a_patch_model_renders_and_round_trips_through_a_model_folder(tmp_path: Path):
    pipe = FPDMPipeline.from_config(load_model_config(_patch_config(tmp_path)))
    assert isinstance(pipe.vae, PatchAutoencoder) and pipe.vae_scale_factor == 8
    assert pipe.denoiser.source_latent_channels == 192
    randomize(pipe.denoiser, 3, std=0.05)
    img, seq = random_clip(frames=2, size=(40, 32))
    kw = {"steps": 2, "seed": 0}
    before = pipe(img, seq, **kw)
    assert before.shape == (2, 32, 40, 3) and before.dtype == np.uint8
    folder = pipe.save_pretrained(tmp_path / "model")
    assert (folder / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    again = FPDMPipeline.from_pretrained(folder)
    assert isinstance(again.vae, PatchAutoencoder)
    np.testing.assert_array_equal(again(img, seq, **kw), before)


def test_one_training_step_of_a_patch_model_through_the_cli(tmp_path: Path):
    """No VAE to train or load: ``signgen train fpdm`` builds the patch VAE from the model
    config, trains the denoiser on patch latents and exports a loadable model folder."""
    out, w = train_tiny_fpdm(tmp_path, PATCH)
    assert w["denoiser.unet.conv_in.weight"].shape[1] == 384
    assert torch.isfinite(w["denoiser.unet.conv_in.weight"]).all()
    back = FPDMPipeline.from_pretrained(out / "export")
    assert isinstance(back.vae, PatchAutoencoder) and back.vae_scale_factor == 8
