"""Clips of any length: overlapping windows of frames and the blending of their predictions.

A temporal model (:class:`signgen.models.motion.TemporalDenoiser`) sees windows of W frames.
A clip of T frames is covered by windows of W frames that overlap by O frames; at every
denoising step each window is predicted on its own and the predictions of the frames that
several windows share are blended by per-frame weights that sum to 1. This is the context
scheduler of AnimateDiff's long-video sampling and of AnimateAnyone's pipeline ("uniform"
context, predictions averaged over the windows that contain a frame); the "linear" weights
taper each window towards its edges inside the clip (in the spirit of MimicMotion's
progressive latent fusion), so a frame near a window's edge follows the window that sees it
in context.

Window plan (:func:`window_plan`): windows start every ``W - O`` frames; the last window is
aligned to the end of the clip (so it may overlap its predecessor by more than O); a clip of
T <= W frames is one window of T frames. All windows of a clip then have the same length.

Weights (:func:`window_weights`): ``uniform`` gives every window weight 1 on its frames;
``linear`` gives a window the ramp 1/(o+1), 2/(o+1), ... over an overlap of o frames with
its neighbour (and 1 elsewhere, in particular at the clip's own first and last frames).
Either way the weights are then divided, per frame, by their sum over the windows that
contain the frame, so they sum to 1 exactly where one window covers a frame and to 1 within
rounding elsewhere. Blending predictions that agree returns them unchanged.

How the render loop uses this (flat memory in clip length). A diffusion step needs every
window at the same timestep, so a step is a pass over all windows:

1. the whole clip's latents live on the CPU, ``(T, c, h, w)`` (small: 2,000 frames of
   SD's 4 x 64 x 64 latents are 131 MB in float32), drawn from per-frame generators so
   they do not depend on W or O;
2. per step, :func:`iter_blended` asks the ``predict`` callable for a few windows at a
   time (``windows_per_call``); the callable moves those windows' latents to the device,
   builds their per-frame conditions there (pose images drawn from the keypoints, the
   per-frame fusion embeddings cached on the CPU: 768 floats a frame), runs the temporal
   denoiser with the guidance branches in one batch, combines the branches and returns
   the prediction. Only the windows of one call are ever on the device;
3. :func:`iter_blended` yields each run of frames as soon as every window containing it
   has been predicted (in frame order), so the blended prediction is never held for more
   frames than the windows of one call span; the loop applies the scheduler step to that
   run and writes it back into the CPU latents in place: no later window of the same
   step reads a finished frame, so the clip's latents exist once. A scheduler that keeps
   state across steps (multistep solvers, Euler's step index) gets one instance per run
   of frames, as the per-frame render loop keeps one per batch of frames; DDIM and DDPM
   are stateless per timestep;
4. after the last step the frames are decoded in batches and streamed out as now.

The source (first frame) is encoded once per clip and its tokens are shared by every window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise

import torch

from signgen.names import TAPERS

Span = tuple[int, int]  # frames [start, stop) of the clip


def window_plan(num_frames: int, window: int, overlap: int) -> list[Span]:
    """Windows ``[start, stop)`` covering ``num_frames`` frames: ``window`` frames each,
    consecutive windows ``window - overlap`` apart, the last one ending at the last frame;
    one window of ``num_frames`` frames when ``num_frames <= window``."""
    if num_frames < 1:
        raise ValueError(f"a clip needs at least 1 frame, got {num_frames}")
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1 and 0 <= overlap < window, got {window}, {overlap}")
    if num_frames <= window:
        return [(0, num_frames)]
    stride = window - overlap
    starts = [*range(0, num_frames - window, stride), num_frames - window]
    return [(s, s + window) for s in starts]


def window_weights(plan: Sequence[Span], taper: str = "uniform") -> list[torch.Tensor]:
    """Per-window blending weights, float64 ``(stop - start,)`` each, summing to 1 per
    frame over the windows of ``plan`` that contain it (see the module docstring)."""
    if taper not in TAPERS:
        raise ValueError(f"taper must be one of {TAPERS}, got {taper!r}")
    raw = []
    for k, (s, e) in enumerate(plan):
        w = torch.ones(e - s, dtype=torch.float64)
        if taper == "linear":
            i = torch.arange(e - s, dtype=torch.float64)
            if k > 0 and (o := plan[k - 1][1] - s) > 0:  # overlap with the previous window
                w = torch.minimum(w, (i + 1) / (o + 1))
            if k + 1 < len(plan) and (o := e - plan[k + 1][0]) > 0:  # ... with the next
                w = torch.minimum(w, (e - s - i) / (o + 1))
        raw.append(w)
    total = torch.zeros(max(e for _, e in plan), dtype=torch.float64)
    for (s, e), w in zip(plan, raw):
        total[s:e] += w
    assert bool((total > 0).all()), "the windows do not cover every frame"
    return [w / total[s:e] for (s, e), w in zip(plan, raw)]


def _calls(plan: Sequence[Span], windows_per_call: int) -> list[list[int]]:
    """Indices of the windows of each ``predict`` call: up to ``windows_per_call``
    consecutive windows of the same length (a plan over several clips may mix lengths)."""
    calls: list[list[int]] = []
    for k, (s, e) in enumerate(plan):
        last = calls[-1] if calls else None
        if last and len(last) < windows_per_call and plan[last[0]][1] - plan[last[0]][0] == e - s:
            last.append(k)
        else:
            calls.append([k])
    return calls


def blend_runs(plan: Sequence[Span], windows_per_call: int = 1) -> list[Span]:
    """The runs of frames :func:`iter_blended` yields for ``plan``, in order (a pure function
    of the plan and the call size: the same at every denoising step, so a loop can keep one
    scheduler per run)."""
    calls = _calls(plan, windows_per_call)
    runs: list[Span] = []
    lo, hi = plan[0][0], plan[0][0]
    for c, call in enumerate(calls):
        hi = max(hi, *(plan[k][1] for k in call))
        done = plan[calls[c + 1][0]][0] if c + 1 < len(calls) else hi
        if done > lo:
            runs.append((lo, done))
            lo = done
    return runs


def iter_blended(
    predict: Callable[[list[Span]], torch.Tensor],
    plan: Sequence[Span],
    weights: Sequence[torch.Tensor],
    *,
    windows_per_call: int = 1,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Iterator[tuple[Span, torch.Tensor]]:
    """Blend per-window predictions, streaming: yields ``((start, stop), blended)`` runs of
    frames in order, ``blended`` ``(stop - start, *S)`` on ``device``, each as soon as
    every window containing those frames has been predicted. The runs tile the clip and are
    :func:`blend_runs` of the plan.

    ``predict(spans)`` gets up to ``windows_per_call`` consecutive spans of the plan, all of
    the same length L, and returns their predictions ``(len(spans), L, *S)``.
    """
    assert len(plan) == len(weights) and len(plan) > 0
    assert windows_per_call >= 1
    assert all(b[0] >= a[0] for a, b in pairwise(plan)), "plan must be in frame order"
    acc: torch.Tensor | None = None  # (hi - lo, *S): frames [lo, hi) not yet yielded
    lo = hi = 0
    calls = _calls(plan, windows_per_call)
    for c, call in enumerate(calls):
        spans = [plan[k] for k in call]
        pred = predict(spans)  # (n, L, *S)
        assert pred.shape[0] == len(spans), (tuple(pred.shape), spans)
        pred = pred.to(device=device, dtype=dtype)
        for j, (s, e) in enumerate(spans):
            assert pred.shape[1] == e - s, (tuple(pred.shape), (s, e))
            if acc is None:
                acc = pred.new_zeros((0, *pred.shape[2:]))
                lo = hi = s
            if e > hi:  # grow the open run to this window's end
                acc = torch.cat([acc, acc.new_zeros((e - hi, *acc.shape[1:]))])
                hi = e
            w = weights[call[j]].to(device=device, dtype=dtype)
            acc[s - lo : e - lo] += w.view(-1, *([1] * (pred.ndim - 2))) * pred[j]
        # Frames before the next call's first window are complete.
        done = plan[calls[c + 1][0]][0] if c + 1 < len(calls) else hi
        if done > lo:
            assert acc is not None
            yield (lo, done), acc[: done - lo]
            acc = acc[done - lo :]
            lo = done


def blend_windows(
    predict: Callable[[list[Span]], torch.Tensor],
    plan: Sequence[Span],
    weights: Sequence[torch.Tensor],
    **kwargs,
) -> torch.Tensor:
    """The whole clip's blended prediction ``(T, *S)`` (:func:`iter_blended`, joined)."""
    return torch.cat([chunk for _, chunk in iter_blended(predict, plan, weights, **kwargs)])
