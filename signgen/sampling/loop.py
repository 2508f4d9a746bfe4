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

import copy
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from signgen.models.preprocess import VAE_MEAN, VAE_STD
from signgen.sampling.guidance import GuidancePlan
from signgen.sampling.windows import Span, blend_runs, iter_blended, window_weights


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


# predict(spans, model_input, t) -> guided predictions (len(spans), L, c, h, w) of the windows
# ``spans`` (frames [s, e) of the latents, all of length L); ``model_input(s, e)`` gives the
# scheduler-scaled latents of frames [s, e), on the latents' device.
Predict = Callable[[list[Span], Callable[[int, int], torch.Tensor], torch.Tensor], torch.Tensor]


def sample(
    predict: Predict,
    scheduler: Any,
    noise: torch.Tensor,
    num_inference_steps: int,
    *,
    windows: Sequence[Span] | None = None,
    weights: Sequence[torch.Tensor] | None = None,
    windows_per_call: int = 1,
    generators: Sequence[torch.Generator] | None = None,
    on_run: Callable[[int], None] | None = None,
    consume_noise: bool = False,
) -> torch.Tensor:
    """THE denoising loop: initial noise (T, c, h, w) -> clean latents (T, c, h, w), float32,
    on the noise's device.

    Per step, the frames are predicted window by window (``windows``, default one window of
    all T frames: the per-frame render's batch), the predictions of frames that several
    windows share are blended (``weights``, :func:`signgen.sampling.windows.iter_blended`)
    and each run of finished frames takes the scheduler's step as soon as it is complete,
    in place. A long clip's latents can therefore live on the CPU while only the windows of
    one ``predict`` call are on the device (docs/temporal.md, "Streaming and memory").

    Each run of frames has its own copy of ``scheduler`` (the runs are the same at every
    step: :func:`~signgen.sampling.windows.blend_runs`), so schedulers with state across
    steps (DPM-Solver++'s history, Euler's step index) step each run exactly as they would
    step a batch of its own. ``generators``: one per frame, for ancestral schedulers' noise.
    ``on_run(n)`` is called after each run of n frames has taken a step (progress).
    ``consume_noise``: scale ``noise`` in place and denoise it as the latents (the returned
    tensor is ``noise``), instead of a copy: a caller that does not need its noise again
    saves one clip-sized tensor (a long temporal render's largest).
    """
    t_frames = noise.shape[0]
    windows = list(windows) if windows is not None else [(0, t_frames)]
    if weights is None:
        weights = window_weights(windows)
    scheduler.set_timesteps(num_inference_steps, device=noise.device)
    sigma = scheduler.init_noise_sigma
    latents = noise.mul_(sigma) if consume_noise else noise * sigma  # (T, c, h, w) float32
    runs = blend_runs(windows, windows_per_call)
    assert runs[0][0] == 0 and runs[-1][1] == t_frames, (runs[0], runs[-1], t_frames)
    # The copies share the schedule's tensors (alphas, sigmas: replaced by set_timesteps,
    # never written by step); 2,000 frames in windows of 16 are 167 runs.
    shared = {id(v): v for v in vars(scheduler).values() if isinstance(v, torch.Tensor)}
    schedulers = [scheduler] + [copy.deepcopy(scheduler, dict(shared)) for _ in runs[1:]]
    accepts = "generator" in inspect.signature(scheduler.step).parameters
    for t in scheduler.timesteps:

        def model_input(s: int, e: int, t: torch.Tensor = t) -> torch.Tensor:
            # Each run's frames scaled by that run's scheduler (not yet stepped at t).
            parts = [sch.scale_model_input(latents[max(s, a) : min(e, b)], t)
                     for sch, (a, b) in zip(schedulers, runs) if a < e and s < b]  # fmt: skip
            return parts[0] if len(parts) == 1 else torch.cat(parts)  # (e - s, c, h, w)

        step = functools.partial(predict, model_input=model_input, t=t)
        blended = iter_blended(step, windows, weights, windows_per_call=windows_per_call,
                               device=latents.device)  # fmt: skip
        for r, ((s, e), pred) in enumerate(blended):
            assert (s, e) == runs[r], ((s, e), runs[r])
            kw = {"generator": list(generators[s:e])} if accepts and generators else {}
            # In place: no later window of this step reads a finished run (windows.py).
            latents[s:e] = schedulers[r].step(pred, t, latents[s:e], **kw, return_dict=False)[0]
            if on_run is not None:
                on_run(e - s)
    return latents


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
    """Noise (b, c, h, w) -> clean latents (b, c, h, w), float32: the per-frame render, i.e.
    :func:`sample` with one window of the whole batch and the per-frame denoiser.

    ``cond``: the denoiser's conditions of the branches ``plan`` runs, stacked along the
    batch ([branch 0; branch 1; ...], b rows each; ``denoiser.encode_conditions`` with
    ``plan.drop_masks(b)``). ``scheduler``: a fresh diffusers scheduler (its state is
    reset here); ``generators``: per-frame generators for an ancestral scheduler's noise.
    """
    b, nb = noise.shape[0], plan.num_branches

    def predict(spans, model_input, t):
        x = torch.cat([model_input(0, b)] * nb)  # (nb*b, c, h, w), the branches' rows
        pred = denoiser.denoise(x.to(dtype), t.expand(nb * b), cond).float()
        return plan.combine(pred)[None]  # (1, b, c, h, w): cumulative guidance

    return sample(predict, scheduler, noise, num_inference_steps, generators=generators)


def decode(vae: Any, latents: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Clean latents (b, c, h, w) -> images (b, 3, H, W) float32, nominally in [0, 1] (not
    clamped: resample first, then clamp)."""
    sf = vae.config.scaling_factor
    images = vae.decode((latents / sf).to(dtype), return_dict=False)[0]  # (b, 3, H, W)
    device = images.device
    return (images.float() * torch.tensor(VAE_STD, device=device).view(1, 3, 1, 1)
            + torch.tensor(VAE_MEAN, device=device).view(1, 3, 1, 1))  # fmt: skip
