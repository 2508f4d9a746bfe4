"""Training the motion module (:mod:`signgen.models.motion`) on clips, the per-frame FPDM
frozen: the data (windows of consecutive frames) and the loss.

Data (:class:`ClipWindows`): from a prepared dataset (``signgen prepare synthetic`` or
``phoenix``; the manifest of :mod:`signgen.data.pairs`), every window of ``window``
consecutive frames of every video of a split, windows ``stride`` frames apart and the last
one aligned to the video's end (the plan of :func:`signgen.sampling.windows.window_plan`);
the source is always the clip's first frame, as at rendering time. Videos shorter than a
window are left out.

Loss (:class:`MotionTrainModule`), per step, AnimateDiff's recipe on FPDM's conditions:

1. frozen encodings: the target frames' latents and pose images per frame; the source
   tokens, IPF source embedding, spatial source latents and MCLD focal tokens once per
   clip, shared by the clip's frames; the fusion embedding per frame (it depends on the
   frame's pose);
2. independent noise per frame (plus FPDM's offset noise), ONE timestep per window;
3. condition dropout per window (one draw for all its frames, so a window is either
   conditioned or not, as the guidance branches are at rendering time);
4. the temporal denoiser on the window-major batch ``(B*F, ...)``; MSE against the
   scheduler's prediction type, as :mod:`signgen.train.fpdm`.

Only the motion module's parameters require gradients; the per-frame model (UNet, pose
encoder, source projector, fusion MLP, focal adapter) stays in eval mode, so its dropout is
off and its weights are those of the model it was loaded from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from signgen.errors import InputError
from signgen.models.motion import TemporalDenoiser, save_motion_module
from signgen.train.common import freeze, pose_to_uint8
from signgen.train.config import MotionTrainConfig

__all__ = ["ClipWindows", "MotionTask", "MotionTrainConfig", "MotionTrainModule"]


# --------------------------------------------------------------------------- data


class ClipWindows(Dataset):
    """Windows of ``window`` consecutive frames of the videos of one split, source = the
    video's first frame.

    Items: ``source`` uint8 (H0, W0, 3) frame 0; ``source_keypoints`` float32 (133, 3) in
    model pixels; ``target`` uint8 (F, H0, W0, 3); ``target_pose`` float32 (F, 3, H, W) in
    [0, 1] drawn at the model resolution; ``keypoints`` float32 (F, 133, 3) in model pixels;
    ``video`` (str) and ``start`` (first frame index). Geometry as
    :class:`signgen.data.pairs.PairDataset`: the model's ``resize_mode`` (letterbox to the
    model aspect then scale, or squash).
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        split: str,
        resolution: tuple[int, int],
        window: int,
        stride: int,
        max_windows: int | None = None,
        resize_mode: str = "letterbox",
    ) -> None:
        from signgen.data.pairs import read_manifest
        from signgen.models.preprocess import RESIZE_MODES
        from signgen.sampling.windows import window_plan

        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        self.resize_mode = resize_mode
        self.root = Path(prepared_dir)
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.window = int(window)
        videos = [v for v in read_manifest(self.root).values() if v.split == split]
        if not videos:
            raise InputError(f"{self.root}/manifest.csv has no videos in split {split!r}")
        self.videos = {v.video: v for v in videos}
        self.items: list[tuple[str, int]] = []  # (video, first frame of the window)
        for v in videos:
            if v.frames >= window:
                self.items += [
                    (v.video, s) for s, _ in window_plan(v.frames, window, window - stride)
                ]
        if not self.items:
            longest = max(v.frames for v in videos)
            raise InputError(
                f"no video of split {split!r} in {self.root} has {window} frames (the longest "
                f"has {longest}): lower motion.window"
            )
        if max_windows is not None:
            self.items = self.items[:max_windows]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from signgen.data.pairs import _load_keypoints, load_frame
        from signgen.models.preprocess import fit_geometry
        from signgen.pose.draw import draw_pose

        video, start = self.items[i]
        entry = self.videos[video]
        kp = _load_keypoints(str(entry.keypoints_file))  # (T, 133, 3) native pixels
        h, w = self.resolution
        box = fit_geometry(self.resize_mode, (entry.width, entry.height), (w, h))
        frames = range(start, start + self.window)
        poses = np.stack([draw_pose(*box.canvas(kp[t]), (w, h)) for t in frames])  # (F, H, W, 3)
        return {
            "source": torch.from_numpy(load_frame(entry, 0).copy()),
            "source_keypoints": torch.from_numpy(box.points_to_model(kp[0]).astype(np.float32)),
            "target": torch.from_numpy(np.stack([load_frame(entry, t) for t in frames])),
            "target_pose": torch.from_numpy(poses).permute(0, 3, 1, 2).float() / 255.0,
            "keypoints": torch.from_numpy(
                np.stack([box.points_to_model(kp[t]) for t in frames])
            ).float(),
            "video": video,
            "start": start,
        }


# --------------------------------------------------------------------------- loss


def _per_window(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, ...) per window -> (B*F, ...) per frame, window-major."""
    return x.repeat_interleave(frames, dim=0)


class MotionTrainModule(nn.Module):
    """Frozen per-frame FPDM + trainable motion module; ``forward(batch) -> (loss, logs)``
    on :class:`ClipWindows` batches."""

    def __init__(
        self,
        temporal: TemporalDenoiser,
        *,
        vae: nn.Module,
        source_encoder: nn.Module,
        ipf: nn.Module | None,
        scheduler: Any,
        processor: Any,
        cfg: MotionTrainConfig,
    ) -> None:
        super().__init__()
        self.temporal = temporal
        self.vae, self.source_encoder, self.ipf = vae, source_encoder, ipf
        for m in (vae, source_encoder, ipf, temporal.denoiser):
            freeze(m)
        temporal.motion.requires_grad_(True)
        self.scheduler = scheduler
        # The per-frame model's image processor: its geometry for every network input.
        self.processor = processor
        self.resolution = processor.resolution
        self.cfg = cfg

    @classmethod
    def from_pipeline(cls, pipe: Any, motion: Any, cfg: MotionTrainConfig) -> MotionTrainModule:
        """From a loaded per-frame :class:`~signgen.sampling.pipeline.FPDMPipeline`."""
        return cls(
            TemporalDenoiser(pipe.denoiser, motion), vae=pipe.vae,
            source_encoder=pipe.source_encoder, ipf=pipe.ipf, scheduler=pipe.scheduler,
            processor=pipe.image_processor, cfg=cfg,
        )  # fmt: skip

    def train(self, mode: bool = True) -> MotionTrainModule:
        super().train(mode)
        for m in (self.vae, self.source_encoder, self.ipf, self.temporal.denoiser):
            if m is not None:
                m.eval()  # the frozen per-frame model never trains (no dropout)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.temporal.motion.parameters()).device

    @torch.no_grad()
    def conditions(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor | None]:
        """Frozen encodings, per frame (B*F rows, window-major); the source's once per clip."""
        from signgen.models.encoders import encode_source

        dev, proc = self.device, self.processor
        f = batch["target"].shape[1]
        frames = batch["target"].flatten(0, 1)  # (B*F, H0, W0, 3)
        x = proc.preprocess(frames).to(dev)  # (B*F, 3, H, W)
        z0 = self.vae.encode(x).latent_dist.sample(generator=generator)
        z0 = z0 * self.vae.config.scaling_factor  # (B*F, c, h, w)
        pose = batch["target_pose"].flatten(0, 1).to(dev)  # (B*F, 3, H, W) in [0, 1]
        src = proc.source_pixels(batch["source"])
        hidden = _per_window(encode_source(self.source_encoder, src.to(dev)), f)  # (B*F, N, Ds)
        fusion = None
        if self.ipf is not None:
            src_emb = self.ipf.embed(self.ipf.preprocess(batch["source"]).to(dev))  # (B, D)
            pose_emb = self.ipf.embed(self.ipf.preprocess(pose_to_uint8(pose).cpu()).to(dev))
            fusion = self.ipf.fuse(_per_window(src_emb, f), pose_emb)  # (B*F, D)
        out: dict[str, torch.Tensor | None] = {"z0": z0, "pose": pose, "hidden": hidden,
                                               "fusion": fusion}  # fmt: skip
        denoiser = self.temporal.denoiser
        if denoiser.source_latent_channels:  # the mode, as the render pipeline encodes it
            xs = proc.preprocess(batch["source"]).to(dev)
            lat = self.vae.encode(xs).latent_dist.mode() * self.vae.config.scaling_factor
            out["source_latents"] = _per_window(lat, f)  # (B*F, c, h, w)
        if denoiser.has_focal:  # MCLD: focal tokens of the clip's first frame
            from signgen.models.mcld import batch_focal_inputs

            focal = batch_focal_inputs(
                denoiser.focal_adapter, self.source_encoder, batch, proc, dev
            )
            out.update({k: _per_window(v, f) for k, v in focal.items()})
        return out

    def forward(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        from signgen.train.fpdm import regression_target, sample_timesteps

        c = self.conditions(batch, generator)
        z0 = c["z0"]  # (B*F, c, h, w)
        b, f = batch["target"].shape[:2]
        dev, cfg = z0.device, self.cfg
        kw = {"generator": generator} if generator is not None else {}
        noise = torch.randn(z0.shape, device=dev, **kw)  # independent per frame
        if cfg.offset_noise > 0:
            noise = noise + cfg.offset_noise * torch.randn(
                b * f, z0.shape[1], 1, 1, device=dev, **kw
            )
        n_t = self.scheduler.config.num_train_timesteps
        t = _per_window(sample_timesteps(b, n_t, device=dev, generator=generator), f)  # (B*F,)
        noisy = self.scheduler.add_noise(z0, noise, t)
        drops: dict[str, torch.Tensor | None] = {}
        if self.training:  # one draw per window, shared by its frames; never at evaluation
            names = ["drop_pose", "drop_source", "drop_fusion"]
            names += ["drop_focal"] if self.temporal.denoiser.has_focal else []
            for name in names:
                drops[name] = _per_window(torch.rand(b, device=dev, **kw) < getattr(cfg, name), f)
        focal = {k: c[k] for k in ("focal_hidden", "focal_present") if k in c}
        cond = self.temporal.encode_conditions(
            c["pose"], c["hidden"], c["fusion"], **drops, **focal,
            source_latents=c.get("source_latents"),
        )  # fmt: skip
        pred = self.temporal.denoise(noisy, t, cond, num_frames=f)  # (B*F, c, h, w)
        loss = F.mse_loss(pred.float(), regression_target(self.scheduler, z0, noise, t).float())
        return loss, {}

    def export(self, out_dir: str | Path) -> Path:
        """Write the trained motion module to ``out_dir/motion_module``."""
        return save_motion_module(self.temporal.motion, out_dir)


# --------------------------------------------------------------------------- the stage


class MotionTask:
    """``signgen train motion``: the :class:`~signgen.train.loop.Task` that trains a motion
    module on a frozen per-frame FPDM (``motion.base_model``, a model folder).

    Checkpoints, resume and Ray Train need nothing of their own: the loop saves and
    synchronises only the parameters that require gradients, i.e. the motion module's.
    The export is the base model folder copied as it is, plus ``motion_module/``.
    """

    def __init__(self, cfg: Any, device: torch.device) -> None:
        from signgen.models.motion import (
            build_motion_module,
            load_motion_module,
            set_render_defaults,
        )
        from signgen.runtime import quiet_libraries
        from signgen.sampling.loading import resolve_model_dir
        from signgen.sampling.pipeline import FPDMPipeline

        quiet_libraries()  # no per-component loading bars in the training log
        self.cfg, self.device, mc = cfg, device, cfg.motion
        self.base = resolve_model_dir(mc.base_model)
        pipe = FPDMPipeline.from_pretrained(self.base)
        pipe.register_modules(motion_module=None)  # a base's own module is not trained on
        if mc.init_from:
            motion = load_motion_module(mc.init_from, pipe.unet)
        else:
            try:
                motion = build_motion_module(pipe.unet, mc.module)
            except ValueError as exc:
                raise InputError(f"motion.module: {exc}") from None
        if mc.window > int(motion.config.motion_max_seq_length):
            raise InputError(
                f"motion.window={mc.window} exceeds the motion module's "
                f"{motion.config.motion_max_seq_length} frames"
            )
        set_render_defaults(motion, mc.window, mc.overlap, mc.render_taper)
        if cfg.train.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
        self.pipe = pipe
        self.module = MotionTrainModule.from_pipeline(pipe, motion, mc)
        # The sample strips render through the pipeline with the module being trained.
        pipe.temporal_denoiser = self.module.temporal
        d = cfg.data
        self.train_set = ClipWindows(d.prepared, d.train_split, pipe.resolution, mc.window,
                                     mc.stride, max_windows=d.max_train_pairs)  # fmt: skip
        # Evaluation: non-overlapping windows of the dev clips, the first max_eval_pairs.
        self.eval_set = ClipWindows(d.prepared, d.eval_split, pipe.resolution, mc.window,
                                    mc.window, max_windows=d.max_eval_pairs)  # fmt: skip

    def train_dataset(self) -> Dataset:
        return self.train_set

    def evaluate(self, module: nn.Module, step: int) -> dict[str, float]:
        """Dev loss at fixed noise, timesteps and no dropout (comparable across steps)."""
        from signgen.train.common import fixed_dev_loss

        return {"dev_loss": fixed_dev_loss(module, self.eval_set, self.cfg.train.batch_size)}

    def samples(self, module: nn.Module, step: int, out_dir: Path) -> None:
        """Strips of the first two windows of a few dev clips: ground truth, the per-frame
        render and the temporal render (same seed, independent noise, motion.sample_steps
        DDIM steps), every second frame."""
        from PIL import Image

        from signgen.keypoints.sequence import KeypointSequence
        from signgen.sampling.options import RenderOptions

        mc = self.cfg.motion
        if mc.num_samples < 1:
            return
        # The last training call (with gradients) left its window length on the motion
        # hooks (signgen.models.motion.MotionHooks); per-frame renders must not see it.
        module.temporal.hooks.num_frames = None
        videos = list(dict.fromkeys(v for v, _ in self.eval_set.items))[: mc.num_samples]
        opts = RenderOptions(steps=mc.sample_steps, independent_noise=True, batch_size=16)
        rows = []
        for video in videos:
            entry = self.eval_set.videos[video]
            n = min(entry.frames, 2 * mc.window)
            from signgen.data.pairs import _load_keypoints, load_frame

            gt = np.stack([load_frame(entry, t) for t in range(n)])  # (n, H, W, 3)
            kp = KeypointSequence(_load_keypoints(str(entry.keypoints_file))[:n],
                                  entry.width, entry.height, 25.0)  # fmt: skip
            per_frame = self.pipe(gt[0], kp, opts)
            temporal = self.pipe(gt[0], kp, opts.replace(temporal=True))
            for clip in (gt, per_frame, temporal):
                rows.append(np.concatenate(list(clip[::2]), axis=1))
        out_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows, axis=0)).save(out_dir / f"strip-step{step:07d}.png")

    def export(self, module: nn.Module, out_dir: Path) -> None:
        """The base model folder (copied as it is) plus ``motion_module/``, written next to
        ``out_dir`` and renamed onto it."""
        from signgen.models.motion import MOTION_FOLDER
        from signgen.train.common import export_base_plus

        export_base_plus(self.base, out_dir, MOTION_FOLDER, module.export)
