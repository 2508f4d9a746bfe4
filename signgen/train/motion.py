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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from signgen.errors import InputError
from signgen.models.motion import MotionModuleConfig, TemporalDenoiser, save_motion_module
from signgen.train.common import freeze, pose_to_uint8


@dataclass
class MotionTrainConfig:
    """The ``motion:`` section of a motion-training config."""

    base_model: str = ""  # exported per-frame FPDM folder (frozen)
    init_from: str | None = None  # a motion module folder to start from (e.g. AnimateDiff's)
    module: MotionModuleConfig = field(default_factory=MotionModuleConfig)
    window: int = 16  # frames per training window (AnimateDiff: 16)
    stride: int = 8  # frames between window starts in a clip
    offset_noise: float = 0.1  # as the per-frame FPDM recipe
    drop_pose: float = 0.2  # per-window condition dropout (the per-frame recipe's values)
    drop_source: float = 0.2
    drop_fusion: float = 0.2
    drop_focal: float = 0.1  # MCLD models only

    def check(self) -> None:
        if self.window < 1 or not 1 <= self.stride <= self.window:
            raise InputError(
                f"motion.window must be >= 1 and motion.stride in [1, window], got "
                f"{self.window} and {self.stride}"
            )
        if self.window > self.module.max_frames:
            raise InputError(
                f"motion.window={self.window} exceeds motion.module.max_frames="
                f"{self.module.max_frames} (the motion module's frame positions)"
            )
        for name in ("drop_pose", "drop_source", "drop_fusion", "drop_focal"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"motion.{name} must be a probability in [0, 1]")


# --------------------------------------------------------------------------- data


class ClipWindows(Dataset):
    """Windows of ``window`` consecutive frames of the videos of one split, source = the
    video's first frame.

    Items: ``source`` uint8 (H0, W0, 3) frame 0; ``source_keypoints`` float32 (133, 3) in
    model pixels; ``target`` uint8 (F, H0, W0, 3); ``target_pose`` float32 (F, 3, H, W) in
    [0, 1] drawn at the model resolution; ``keypoints`` float32 (F, 133, 3) in model pixels;
    ``video`` (str) and ``start`` (first frame index). Geometry as
    :class:`signgen.data.pairs.PairDataset`: letterbox to the model aspect, then scale.
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        split: str,
        resolution: tuple[int, int],
        window: int,
        stride: int,
        max_windows: int | None = None,
    ) -> None:
        from signgen.data.pairs import read_manifest
        from signgen.sampling.windows import window_plan

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
        from signgen.models.preprocess import Letterbox
        from signgen.pose.draw import draw_pose

        video, start = self.items[i]
        entry = self.videos[video]
        kp = _load_keypoints(str(entry.keypoints_file))  # (T, 133, 3) native pixels
        h, w = self.resolution
        box = Letterbox.fit((entry.width, entry.height), (w, h))
        pw, ph = box.padded_size
        scale = np.array([w / pw, h / ph, 1.0], np.float32)
        frames = range(start, start + self.window)
        pads = [box.points_to_padded(kp[t]) for t in frames]  # (133, 3) padded-frame pixels
        poses = np.stack([draw_pose(p, (pw, ph), (w, h)) for p in pads])  # (F, H, W, 3) uint8
        src_pad = box.points_to_padded(kp[0])
        return {
            "source": torch.from_numpy(load_frame(entry, 0).copy()),
            "source_keypoints": torch.from_numpy((src_pad * scale).astype(np.float32)),
            "target": torch.from_numpy(np.stack([load_frame(entry, t) for t in frames])),
            "target_pose": torch.from_numpy(poses).permute(0, 3, 1, 2).float() / 255.0,
            "keypoints": torch.from_numpy(np.stack(pads) * scale).float(),
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
        resolution: tuple[int, int],
        source_size: tuple[int, int],
        source_mean: tuple[float, ...],
        source_std: tuple[float, ...],
        cfg: MotionTrainConfig,
    ) -> None:
        super().__init__()
        self.temporal = temporal
        self.vae, self.source_encoder, self.ipf = vae, source_encoder, ipf
        for m in (vae, source_encoder, ipf, temporal.denoiser):
            freeze(m)
        temporal.motion.requires_grad_(True)
        self.scheduler = scheduler
        self.resolution, self.source_size = tuple(resolution), tuple(source_size)
        self.source_mean, self.source_std = tuple(source_mean), tuple(source_std)
        self.cfg = cfg

    @classmethod
    def from_pipeline(cls, pipe: Any, motion: Any, cfg: MotionTrainConfig) -> MotionTrainModule:
        """From a loaded per-frame :class:`~signgen.sampling.pipeline.FPDMPipeline`."""
        proc = pipe.image_processor
        return cls(
            TemporalDenoiser(pipe.denoiser, motion), vae=pipe.vae,
            source_encoder=pipe.source_encoder, ipf=pipe.ipf, scheduler=pipe.scheduler,
            resolution=proc.resolution, source_size=proc.source_size,
            source_mean=proc.source_mean, source_std=proc.source_std, cfg=cfg,
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
        from signgen.models.preprocess import to_model_input

        dev = self.device
        f = batch["target"].shape[1]
        frames = batch["target"].flatten(0, 1)  # (B*F, H0, W0, 3)
        x = to_model_input(frames, self.resolution).to(dev)  # (B*F, 3, H, W)
        z0 = self.vae.encode(x).latent_dist.sample(generator=generator)
        z0 = z0 * self.vae.config.scaling_factor  # (B*F, c, h, w)
        pose = batch["target_pose"].flatten(0, 1).to(dev)  # (B*F, 3, H, W) in [0, 1]
        src = to_model_input(batch["source"], self.source_size, self.source_mean, self.source_std)
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
            xs = to_model_input(batch["source"], self.resolution).to(dev)
            lat = self.vae.encode(xs).latent_dist.mode() * self.vae.config.scaling_factor
            out["source_latents"] = _per_window(lat, f)  # (B*F, c, h, w)
        if denoiser.has_focal:  # MCLD: focal tokens of the clip's first frame
            from signgen.models.mcld import batch_focal_inputs

            focal = batch_focal_inputs(
                denoiser.focal_adapter, self.source_encoder, batch, self.resolution,
                self.source_mean, self.source_std, dev,
            )  # fmt: skip
            out.update({k: _per_window(v, f) for k, v in focal.items()})
        return out

    def target_for(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target of the scheduler's prediction type (as signgen.train.fpdm)."""
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.scheduler.get_velocity(z0, noise, t)
        if kind == "sample":
            return z0
        raise ValueError(f"unsupported prediction_type {kind!r}")

    def forward(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        from signgen.train.fpdm import sample_timesteps

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
        loss = F.mse_loss(pred.float(), self.target_for(z0, noise, t).float())
        return loss, {}

    def export(self, out_dir: str | Path) -> Path:
        """Write the trained motion module to ``out_dir/motion_module``."""
        return save_motion_module(self.temporal.motion, out_dir)
