"""``signgen train refiner-motion``: the source refiner's temporal layers on a frozen model.

The layers (:mod:`signgen.models.refiner_motion`) learn to make the refiner's frames of a
temporal render change from one frame to the next as the true frames do. Their inputs are
the frozen model's own temporal renders (``refiner_motion.base_model``: a folder with a
``refiner/`` and a ``motion_module/``), made once before the first step:

1. renders: every frame of each training clip, rendered as ``signgen render --temporal``
   renders it without the refiner (its default steps or ``refiner_motion.render_steps``,
   seed ``seed``, shared noise, no detail transfer), cached as PNGs under
   ``refiner_motion.cache_dir`` (default ``output_dir/renders``) exactly as
   ``signgen train refiner`` caches its renders (:mod:`signgen.train.refiner`), keyed by
   the base model's files, steps, seed and the temporal flag;
2. training items: windows of ``refiner_motion.window`` consecutive frames starting every
   ``refiner_motion.stride`` frames of a clip (the last one ending at the clip's end);
3. loss, per window of refined frames y_t against true frames x_t: the refiner's
   L1 + ``ssim_weight`` x (1 - SSIM), plus ``temporal_weight`` x mean |(y_t - y_t-1) -
   (x_t - x_t-1)|, which is what the flicker error measures, pixel by pixel.

Evaluation: the same on the windows of the dev clips (the first ``data.max_eval_pairs``),
also for the refiner without its temporal layers (``frame_*``) for reference. Export: the
base model folder as it is plus ``refiner_motion/``, listed in its ``model_index.json``
with the folder's ``--temporal`` default (``refiner_motion.render_motion_module``: through
the motion module, or every frame denoised alone).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from signgen.errors import InputError
from signgen.train.refiner import RefinerFrames, refiner_loss

log = logging.getLogger(__name__)


class RefinerWindows(Dataset):
    """Windows of ``window`` consecutive frames of one split's clips, every ``stride``
    frames: each item holds :class:`~signgen.train.refiner.RefinerFrames`' tensors stacked
    to (window, 3, H, W). Clips shorter than the window are left out."""

    def __init__(
        self, prepared: str | Path, split: str, window: int, stride: int, renders: Path,
        max_windows: int | None = None,
    ) -> None:  # fmt: skip
        from signgen.sampling.windows import window_plan

        self.frames = RefinerFrames(prepared, split, 1, renders)
        first = {}
        for i, (v, _) in enumerate(self.frames.items):
            first.setdefault(v, i)
        self.items: list[range] = []
        for v, e in self.frames.videos.items():
            if e.frames < window:
                continue
            plan = window_plan(e.frames, window, window - stride)
            self.items += [range(first[v] + s, first[v] + t) for s, t in plan]
        if not self.items:
            raise InputError(f"no {split!r} clip has {window} frames (refiner_motion.window)")
        if max_windows is not None:
            self.items = self.items[:max_windows]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def videos(self) -> dict[str, Any]:
        return self.frames.videos

    def render_path(self, video: str, frame: int) -> Path:
        return self.frames.render_path(video, frame)

    def missing(self) -> dict[str, list[int]]:
        """video -> the frames of its kept windows that have no render yet."""
        out: dict[str, list[int]] = {}
        for j in sorted({j for r in self.items for j in r}):
            v, t = self.frames.items[j]
            if not self.render_path(v, t).is_file():
                out.setdefault(v, []).append(t)
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        frames = [self.frames[j] for j in self.items[i]]
        return {k: torch.stack([f[k] for f in frames]) for k in frames[0]}


def temporal_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |(y_t - y_t-1) - (x_t - x_t-1)| of (B, F, 3, H, W) windows."""
    return (pred.diff(dim=1) - target.diff(dim=1)).abs().mean()


class RefinerMotionTrainModule(nn.Module):
    """The refiner (frozen) with its temporal layers, and the loss: ``forward(batch)`` ->
    (loss, logs); ``batch`` tensors (B, F, 3, H, W). ``temporal=False`` runs the refiner
    alone (the evaluation's reference)."""

    def __init__(self, refiner: nn.Module, motion: nn.Module, ssim_weight: float,
                 temporal_weight: float) -> None:  # fmt: skip
        from signgen.models.refiner_motion import TemporalRefiner
        from signgen.train.common import freeze

        super().__init__()
        freeze(refiner)
        self.temporal_refiner = TemporalRefiner(refiner, motion)
        self.ssim_weight, self.temporal_weight = ssim_weight, temporal_weight

    @property
    def motion(self) -> nn.Module:
        return self.temporal_refiner.motion

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def refine(self, batch: dict[str, Any], temporal: bool = True) -> torch.Tensor:
        """Refined windows (B, F, 3, H, W)."""
        b, f = batch["render"].shape[:2]
        render, source, pose = (batch[k].to(self.device).flatten(0, 1)
                                for k in ("render", "source", "pose"))  # fmt: skip
        out = self.temporal_refiner(render, source, pose, num_frames=f if temporal else None)
        return out.view(b, f, *out.shape[1:])

    def forward(
        self, batch: dict[str, Any], generator: torch.Generator | None = None,
        temporal: bool = True,
    ) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
        pred = self.refine(batch, temporal)
        target = batch["target"].to(self.device)
        loss, logs = refiner_loss(pred.flatten(0, 1), target.flatten(0, 1), self.ssim_weight)
        tl = temporal_loss(pred, target)
        return loss + self.temporal_weight * tl, {**logs, "temporal": float(tl.detach())}


class RefinerMotionTask:
    """``signgen train refiner-motion``: the :class:`~signgen.train.loop.Task` that trains a
    refiner's temporal layers on a frozen model (``refiner_motion.base_model``); module
    docstring."""

    def __init__(self, cfg: Any, device: torch.device) -> None:
        from signgen.models.refiner_motion import RefinerMotion
        from signgen.runtime import quiet_libraries
        from signgen.sampling.loading import resolve_model_dir
        from signgen.sampling.options import RenderOptions
        from signgen.sampling.pipeline import FPDMPipeline
        from signgen.train.refiner import prepare_render_cache, render_missing

        quiet_libraries()
        self.cfg, rc = cfg, cfg.refiner_motion
        self.base = resolve_model_dir(rc.base_model)
        pipe = FPDMPipeline.from_pretrained(self.base).to(device)
        if pipe.refiner is None or pipe.motion_module is None:
            raise InputError(
                f"{self.base}: refiner-motion trains on a model with a refiner/ and a "
                "motion_module/ (signgen train refiner, signgen train motion)"
            )
        steps = rc.render_steps or pipe.default_steps
        options = RenderOptions(steps=steps, seed=cfg.seed, detail_transfer=0.0, refine=False,
                                temporal=True, batch_size=rc.render_batch_size)  # fmt: skip
        cache = Path(rc.cache_dir or Path(cfg.output_dir) / "renders")
        prepare_render_cache(cache, self.base, steps, cfg.seed, temporal=True)
        d = cfg.data
        # data.max_train_pairs / max_eval_pairs: at most this many windows (the first clips').
        self.train_set = RefinerWindows(d.prepared, d.train_split, rc.window, rc.stride,
                                        cache / d.train_split, d.max_train_pairs)  # fmt: skip
        self.eval_set = RefinerWindows(d.prepared, "dev", rc.window, rc.window, cache / "dev",
                                       d.max_eval_pairs)  # fmt: skip
        for windows in (self.train_set, self.eval_set):
            render_missing(pipe, windows, options)
        refiner = pipe.refiner
        del pipe
        motion = RefinerMotion(
            block_out_channels=tuple(refiner.config.block_out_channels), sites=list(rc.sites),
            window=rc.window, overlap=rc.render_overlap, taper=rc.render_taper,
        )  # fmt: skip
        self.module = RefinerMotionTrainModule(refiner, motion, rc.ssim_weight,
                                               rc.temporal_weight)  # fmt: skip

    def train_dataset(self) -> Dataset:
        return self.train_set

    @torch.no_grad()
    def evaluate(self, module: nn.Module, step: int) -> dict[str, float]:
        """Dev loss, L1, SSIM and temporal loss, with and without the temporal layers."""
        from signgen.train.common import eval_batches

        sums: dict[str, float] = {}
        n = 0
        for batch in eval_batches(self.eval_set, 1):
            for prefix, temporal in (("dev", True), ("dev_frame", False)):
                loss, logs = module(batch, temporal=temporal)
                for k, v in {"loss": float(loss), **logs}.items():
                    sums[f"{prefix}_{k}"] = sums.get(f"{prefix}_{k}", 0.0) + v
            n += 1
        return {k: v / max(n, 1) for k, v in sums.items()}

    @torch.no_grad()
    def samples(self, module: nn.Module, step: int, out_dir: Path) -> None:
        """A strip of the first dev window's first ``refiner_motion.num_samples`` frames:
        rows base render | refiner alone | with temporal layers | true frame."""
        k = self.cfg.refiner_motion.num_samples
        if k < 1 or not len(self.eval_set):
            return
        batch = {n: v[None] for n, v in self.eval_set[0].items()}
        rows = [batch["render"][0], module.refine(batch, False)[0].cpu(),
                module.refine(batch, True)[0].cpu(), batch["target"][0]]  # fmt: skip
        grid = torch.cat([torch.cat(list(r[:k].clamp(0, 1)), dim=2) for r in rows], dim=1)
        out_dir.mkdir(parents=True, exist_ok=True)
        image = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(image).save(out_dir / f"refiner-motion-step{step:07d}.png")

    def export(self, module: nn.Module, out_dir: Path) -> None:
        """The base model folder (copied as it is) plus ``refiner_motion/``, listed in its
        ``model_index.json``; written next to ``out_dir`` and renamed onto it."""
        from signgen.models.refiner_motion import REFINER_MOTION_FOLDER
        from signgen.train.common import export_with_component

        export_with_component(
            self.base, out_dir, REFINER_MOTION_FOLDER, module.motion,
            ["signgen.models.refiner_motion", "RefinerMotion"],
            temporal_motion_module=bool(self.cfg.refiner_motion.render_motion_module),
        )  # fmt: skip
