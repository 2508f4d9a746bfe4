"""The denoising loop: the one function that turns conditions and noise into images.

Every path that generates goes through :func:`denoise` and :func:`decode`: ``signgen
render`` and ``render-many`` (:meth:`FPDMPipeline.render_frames`), ``render-pairs`` and the
training sample grids (:meth:`FPDMPipeline.generate`). One step is ONE batched UNet call
for every guidance branch the plan runs (:mod:`signgen.sampling.guidance`), then the
scheduler's step on the guided prediction.

Noise. Each frame has its own generator, seeded from its clip's seed (:func:`frame_seed`),
so a frame's noise does not depend on the batch size or on which other frames share its
batch: by default every frame of a clip starts from the same noise (shared noise, less
flicker); ``independent`` noise seeds each frame from (seed, frame index). Ancestral
samplers (DDPM) draw their per-step noise from the same generators.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from signgen.models.preprocess import VAE_MEAN, VAE_STD
from signgen.sampling.guidance import GuidancePlan


def frame_seed(seed: int, frame_index: int | None) -> int:
    """Seed of one frame's generator: ``seed`` itself (shared noise) or a hash of
    (seed, frame_index) (independent noise) via numpy's SeedSequence, so neighbouring
    seeds and frames do not give correlated streams."""
    if frame_index is None:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(frame_index)]).generate_state(1)[0])


def initial_noise(
    seeds: Sequence[int],
    frame_indices: Sequence[int],
    shape: tuple[int, int, int],
    *,
    independent: bool = False,
) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Per-frame initial latent noise (b, c, h, w) float32 on the CPU, and the per-frame
    generators it came from (for ancestral samplers)."""
    gens = [
        torch.Generator("cpu").manual_seed(frame_seed(s, i if independent else None))
        for s, i in zip(seeds, frame_indices, strict=True)
    ]
    return torch.stack([torch.randn(shape, generator=g) for g in gens]), gens


def denoise(
    denoiser: Any,
    scheduler: Any,
    cond: Any,
    noise: torch.Tensor,
    plan: GuidancePlan,
    num_inference_steps: int,
    *,
    generators: Sequence[torch.Generator] | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Noise (b, c, h, w) -> clean latents (b, c, h, w), float32.

    ``cond``: the denoiser's conditions of the branches ``plan`` runs, stacked along the
    batch ([branch 0; branch 1; ...], b rows each; ``denoiser.encode_conditions`` with
    ``plan.drop_masks(b)``). ``scheduler``: a fresh diffusers scheduler (its state is
    reset here); ``generators``: per-frame generators for an ancestral scheduler's noise.
    """
    b, nb = noise.shape[0], plan.num_branches
    scheduler.set_timesteps(num_inference_steps, device=noise.device)
    latents = noise * scheduler.init_noise_sigma  # (b, c, h, w) float32
    accepts = "generator" in inspect.signature(scheduler.step).parameters
    step_kwargs = {"generator": list(generators)} if accepts and generators else {}
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(torch.cat([latents] * nb), t)  # (nb*b, c, h, w)
        pred = denoiser.denoise(x.to(dtype), t.expand(nb * b), cond).float()
        pred = plan.combine(pred)  # (b, c, h, w), cumulative guidance
        latents = scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]
    return latents


def decode(vae: Any, latents: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Clean latents (b, c, h, w) -> images (b, 3, H, W) float32, nominally in [0, 1] (not
    clamped: resample first, then clamp)."""
    sf = vae.config.scaling_factor
    images = vae.decode((latents / sf).to(dtype), return_dict=False)[0]  # (b, 3, H, W)
    device = images.device
    return (images.float() * torch.tensor(VAE_STD, device=device).view(1, 3, 1, 1)
            + torch.tensor(VAE_MEAN, device=device).view(1, 3, 1, 1))  # fmt: skip
