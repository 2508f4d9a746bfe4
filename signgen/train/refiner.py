"""``signgen train refiner``: the source refiner (signgen.models.refiner) on a frozen model.

The refiner learns to correct the model's own frames, so its training inputs are the frozen
model's renders (``refiner.base_model``), made once before the first step:

1. frames: every ``refiner.every``-th frame of each clip of the training split (frame 0
   included), with the clip's first frame as the source, as a render has it;
2. renders: the base model renders them as ``signgen render`` would (its default steps or
   ``refiner.render_steps``, seed ``seed``, shared noise, no detail transfer, no refiner),
   at the frames' own size, written as PNGs under ``refiner.cache_dir`` (default
   ``output_dir/renders``): ``<split>/<video>/<frame>.png``. Kept across runs and resumes
   while the key in ``renders/key.json`` (base model files, steps, seed) is unchanged;
   frames already there are not rendered again;
3. training: L1 + ``refiner.ssim_weight`` x (1 - SSIM) of the refined frame against the
   true frame, at full size.

Evaluation: the same loss on the first ``data.max_eval_pairs`` frames of the dev clips
(every ``refiner.every``-th), with the base model's render alone for reference. Export: the
base model folder as it is, plus ``refiner/`` and its entry in ``model_index.json`` (and the
folder's default detail-transfer threshold set to ``refiner.detail_transfer``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from signgen.errors import InputError

log = logging.getLogger(__name__)


class RefinerFrames(Dataset):
    """Frames of one split for the refiner (module docstring): each item holds the base
    model's render, the clip's first frame, the true frame and the pose image drawn at the
    frame's size, float (3, H, W) in [0, 1]. ``renders`` is the split's render folder."""

    def __init__(
        self, prepared: str | Path, split: str, every: int, renders: Path,
        max_frames: int | None = None,
    ) -> None:  # fmt: skip
        from signgen.data.pairs import read_manifest

        self.videos = {v: e for v, e in read_manifest(prepared).items() if e.split == split}
        if not self.videos:
            raise InputError(f"{prepared} has no {split!r} clips")
        sizes = {(e.width, e.height) for e in self.videos.values()}
        if len(sizes) > 1:
            raise InputError(
                f"the refiner trains on frames of one size; the {split!r} clips of {prepared} "
                f"have {len(sizes)}: {sorted(sizes)}"
            )
        self.items = [(v, t) for v, e in self.videos.items() for t in range(0, e.frames, every)]
        if max_frames is not None:
            self.items = self.items[:max_frames]
        self.renders = renders
        self._first: dict[str, np.ndarray] = {}  # video -> its first frame, read once

    def __len__(self) -> int:
        return len(self.items)

    def render_path(self, video: str, frame: int) -> Path:
        return self.renders / video / f"{frame:04d}.png"

    def missing(self) -> dict[str, list[int]]:
        """video -> its frames that have no render yet."""
        out: dict[str, list[int]] = {}
        for v, t in self.items:
            if not self.render_path(v, t).is_file():
                out.setdefault(v, []).append(t)
        return out

    def _first_frame(self, video: str) -> np.ndarray:
        from signgen.data.pairs import load_frame

        if video not in self._first:
            self._first[video] = load_frame(self.videos[video], 0)
        return self._first[video]

    def __getitem__(self, i: int) -> dict[str, Any]:
        from signgen.data.pairs import _load_keypoints, load_frame
        from signgen.pose.draw import draw_pose

        video, t = self.items[i]
        e = self.videos[video]
        points = _load_keypoints(str(e.keypoints_file))[t]
        images = {
            "render": np.asarray(Image.open(self.render_path(video, t)).convert("RGB")),
            "source": self._first_frame(video),
            "target": load_frame(e, t),
            "pose": draw_pose(points, (e.width, e.height)),
        }
        return {
            k: torch.from_numpy(np.array(v)).permute(2, 0, 1).float() / 255
            for k, v in images.items()
        }


def render_key(base: Path, steps: int, seed: int, **recipe: Any) -> str:
    """What the cached renders depend on: the base model's files (names, sizes, times), the
    steps, the seed and any other ``recipe`` setting (e.g. ``temporal=True``)."""
    files = sorted(p for p in base.rglob("*") if p.is_file())
    parts = [f"{p.relative_to(base)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    parts += [str(steps), str(seed)] + [f"{k}={v}" for k, v in sorted(recipe.items())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def prepare_render_cache(cache: Path, base: Path, steps: int, seed: int, **recipe: Any) -> None:
    """Make ``cache`` the render folder of (``base``, ``steps``, ``seed``, ``recipe``):
    renders of anything else found there are removed, and the key is written to
    ``cache/key.json``. With several training processes, rank 0 does it and the others
    wait."""
    key = render_key(base, steps, seed, **recipe)
    key_file = cache / "key.json"
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        old = json.loads(key_file.read_text()).get("key") if key_file.is_file() else None
        if old != key:
            if old is not None:
                log.info("%s: renders of another base model or recipe; rendering again", cache)
                import shutil

                shutil.rmtree(cache)
            cache.mkdir(parents=True, exist_ok=True)
            key_file.write_text(json.dumps({"key": key, "base_model": str(base), "steps": steps,
                                            "seed": seed, **recipe}))  # fmt: skip
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def render_missing(pipe: Any, frames: Any, options: Any) -> None:
    """Render (and write) the frames of ``frames`` (:class:`RefinerFrames` or windows of
    them) that have none, clip by clip (``options.temporal``: whole clips); each PNG is
    written under a temporary name and renamed, so an interrupted run leaves no partial
    file. With several training processes, each renders its share of the clips."""
    from tqdm import tqdm

    from signgen.data.pairs import _load_keypoints, load_frame
    from signgen.train.loop import _dist

    rank, world = _dist()
    todo = sorted(frames.missing().items())[rank::world]
    total = sum(len(t) for _, t in todo)
    if total:
        log.info("rendering %d frames with the base model for the refiner", total)
    # A bar with ETA on a terminal (rendering takes minutes on CPU), none in logs.
    bar = tqdm(total=total, desc="base renders", unit="frame",
               disable=not total or not sys.stderr.isatty())  # fmt: skip

    def write(video: str, t: int, image: np.ndarray) -> None:
        path = frames.render_path(video, t)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, path)

    for video, idx in todo:
        e = frames.videos[video]
        clip = pipe.prepare_clip(load_frame(e, 0), options)
        points = _load_keypoints(str(e.keypoints_file))
        if options.temporal:  # a temporal render's frames depend on each other: whole clips
            wanted, t = set(idx), 0
            for _, out in pipe.render_clips([clip], [points], options):
                for image in out:
                    if t in wanted:
                        write(video, t, image)
                        bar.update(1)
                    t += 1
            continue
        for s in range(0, len(idx), options.batch_size):
            chunk = idx[s : s + options.batch_size]
            out = pipe.render_frames([clip] * len(chunk), points[chunk], chunk, options)
            for t, image in zip(chunk, out, strict=True):
                write(video, t, image)
            bar.update(len(chunk))
    bar.close()
    if world > 1:
        torch.distributed.barrier()


def refiner_loss(
    pred: torch.Tensor, target: torch.Tensor, ssim_weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 + ``ssim_weight`` x (1 - SSIM) of (B, 3, H, W) frames in [0, 1] (SSIM: Gaussian
    11/1.5, the evaluation's, on the clamped prediction)."""
    from signgen.metrics.ssim import ssim

    l1 = (pred - target).abs().mean()
    s = ssim(pred.clamp(0, 1), target, data_range=1.0, backend="torch").mean()
    loss = l1 + ssim_weight * (1 - s)
    return loss, {"l1": float(l1.detach()), "ssim": float(s.detach())}


class RefinerTrainModule(nn.Module):
    """The refiner and its loss: ``forward(batch)`` -> (loss, logs)."""

    def __init__(self, refiner: nn.Module, ssim_weight: float) -> None:
        super().__init__()
        self.refiner = refiner
        self.ssim_weight = ssim_weight

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        dev = self.device
        render, source, target, pose = (batch[k].to(dev) for k in ("render", "source", "target",
                                                                   "pose"))  # fmt: skip
        pred = self.refiner(render, source, pose)
        return refiner_loss(pred, target, self.ssim_weight)


class RefinerTask:
    """``signgen train refiner``: the :class:`~signgen.train.loop.Task` that trains a source
    refiner on a frozen model (``refiner.base_model``, a model folder); module docstring."""

    def __init__(self, cfg: Any, device: torch.device) -> None:
        from signgen.models.refiner import SourceRefiner
        from signgen.runtime import quiet_libraries
        from signgen.sampling.loading import resolve_model_dir
        from signgen.sampling.options import RenderOptions
        from signgen.sampling.pipeline import FPDMPipeline

        quiet_libraries()
        self.cfg, rc = cfg, cfg.refiner
        self.base = resolve_model_dir(rc.base_model)
        pipe = FPDMPipeline.from_pretrained(self.base).to(device)
        steps = rc.render_steps or pipe.default_steps
        options = RenderOptions(steps=steps, seed=cfg.seed, detail_transfer=0.0, refine=False,
                                batch_size=rc.render_batch_size)  # fmt: skip
        cache = Path(rc.cache_dir or Path(cfg.output_dir) / "renders")
        prepare_render_cache(cache, self.base, steps, cfg.seed)
        d = cfg.data
        self.train_set = RefinerFrames(d.prepared, d.train_split, rc.every, cache / d.train_split,
                                       d.max_train_pairs)  # fmt: skip
        self.eval_set = RefinerFrames(d.prepared, "dev", rc.every, cache / "dev",
                                      d.max_eval_pairs)  # fmt: skip
        for frames in (self.train_set, self.eval_set):
            render_missing(pipe, frames, options)
        del pipe
        refiner = SourceRefiner(**rc.module)
        self.module = RefinerTrainModule(refiner, rc.ssim_weight)

    def train_dataset(self) -> Dataset:
        return self.train_set

    def evaluate(self, module: nn.Module, step: int) -> dict[str, float]:
        """Dev loss, L1 and SSIM of the refined frames, and the SSIM of the renders alone."""
        from signgen.metrics.ssim import ssim
        from signgen.train.common import eval_batches

        sums: dict[str, float] = {}
        n = 0
        for batch in eval_batches(self.eval_set, self.cfg.train.batch_size):
            loss, logs = module(batch)
            b = batch["target"].shape[0]
            base = ssim(batch["render"], batch["target"], data_range=1.0, backend="torch")
            for k, v in {"dev_loss": float(loss), "dev_l1": logs["l1"], "dev_ssim": logs["ssim"],
                         "dev_render_ssim": float(base.mean())}.items():  # fmt: skip
                sums[k] = sums.get(k, 0.0) + v * b
            n += b
        return {k: v / max(n, 1) for k, v in sums.items()}

    def samples(self, module: nn.Module, step: int, out_dir: Path) -> None:
        """A strip per dev frame (the first ``refiner.num_samples``): first frame | pose |
        base render | refined | true frame."""
        k = min(self.cfg.refiner.num_samples, len(self.eval_set))
        if k < 1:
            return
        rows = []
        for i in range(k):
            item = self.eval_set[i]
            refined = module.refiner(*(item[n][None].to(module.device)
                                       for n in ("render", "source", "pose")))[0].cpu()  # fmt: skip
            row = [item["source"], item["pose"], item["render"], refined, item["target"]]
            rows.append(torch.cat([r.clamp(0, 1) for r in row], dim=2))
        grid = (torch.cat(rows, dim=1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        out_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(out_dir / f"refiner-step{step:07d}.png")

    def export(self, module: nn.Module, out_dir: Path) -> None:
        """The base model folder (copied as it is) plus ``refiner/``, listed in its
        ``model_index.json``; written next to ``out_dir`` and renamed onto it."""
        from signgen.models.refiner import REFINER_FOLDER
        from signgen.train.common import export_with_component

        export_with_component(
            self.base, out_dir, REFINER_FOLDER, module.refiner,
            ["signgen.models.refiner", "SourceRefiner"],
            detail_transfer=float(self.cfg.refiner.detail_transfer),
        )  # fmt: skip
