"""The source refiner's temporal layers: a motion module for the last, full-size stage.

The per-frame source refiner (:mod:`signgen.models.refiner`) returns ``render + UNet(...)``
for one frame at a time, so nothing ties its frame t to frame t + 1 but its inputs: on the
held-out synthetic clips the default render changes from frame to frame more than the
true frames do (flicker 2.13 against 1.79 grey levels), and the FPDM UNet's motion module,
which works on the 80x64 latents before the refiner, lowered that excess by 8 % only while
costing SSIM (docs/temporal.md, "5. The refiner's temporal layers").

These layers do for the refiner what a video decoder's temporal layers do for an image
decoder (Video LDM, Stable Video Diffusion's ``AutoencoderKLTemporalDecoder``): diffusers'
``TemporalResnetBlock`` (a residual block of two (3, 1, 1) convolutions across frames) on
the output of some of the refiner UNet's blocks, through forward hooks
(:class:`signgen.models.motion.MotionHooks`), the refiner's own weights untouched:

* sites: ``mid`` (the mid block) and ``up0``, ``up1``, ... (the up blocks), each a block
  whose output is a tensor of the site's width;
* the last convolution of every block starts at zero, so an untrained module leaves the
  per-frame refiner's frames unchanged (tested);
* a render runs it on windows of ``window`` consecutive frames overlapping by ``overlap``,
  the outputs blended in the overlaps (``taper``), as the FPDM UNet's motion module runs
  (:mod:`signgen.sampling.windows`); its GroupNorms see the frames of one window;
* trained by ``signgen train refiner-motion`` (:mod:`signgen.train.refiner_motion`) with
  the refiner frozen, on windows of the temporal model's renders: the refiner's loss plus
  an L1 loss on frame-to-frame differences against the true frames';
* a model folder says whether ``--temporal`` denoises through the motion module first
  (``temporal_motion_module`` in its ``model_index.json``); the demo model's does not:
  every frame is denoised alone and these layers act alone, which measured best.

Saved as ``refiner_motion/`` (config.json + safetensors) in a model folder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.resnet import TemporalResnetBlock
from torch import nn

from signgen.models.motion import DEFAULT_TAPER, MotionHooks

REFINER_MOTION_FOLDER = "refiner_motion"


class TemporalLayer(nn.Module):
    """diffusers' ``TemporalResnetBlock`` on (B*F, C, h, w) features of windows of F frames
    (window-major), its last convolution zero at the start: the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = TemporalResnetBlock(channels, channels, temb_channels=None)
        nn.init.zeros_(self.block.conv2.weight)
        nn.init.zeros_(self.block.conv2.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        bf, c, h, w = x.shape
        v = x.view(bf // num_frames, num_frames, c, h, w).transpose(1, 2)  # (B, C, F, h, w)
        y = self.block(v, None)
        return y.transpose(1, 2).reshape(bf, c, h, w)


class RefinerMotion(ModelMixin, ConfigMixin):
    """Temporal layers for a :class:`~signgen.models.refiner.SourceRefiner` (module
    docstring). ``block_out_channels``: the refiner's; ``sites``: where the layers run;
    ``window`` / ``overlap`` / ``taper``: how renders cut a clip into windows (the
    training window by default)."""

    @register_to_config
    def __init__(
        self,
        block_out_channels: Sequence[int] = (64, 96, 128),
        sites: Sequence[str] = ("mid", "up1", "up2"),
        window: int = 8,
        overlap: int = 4,
        taper: str = DEFAULT_TAPER,
    ) -> None:
        super().__init__()
        if not 1 <= window or not 0 <= overlap < window:
            raise ValueError(f"need window >= 1 and 0 <= overlap < window, got {window}, {overlap}")
        widths = {"mid": block_out_channels[-1]}
        widths |= {f"up{i}": c for i, c in enumerate(reversed(block_out_channels))}
        unknown = [s for s in sites if s not in widths]
        if unknown:
            raise ValueError(f"unknown refiner site(s) {unknown}; known: {sorted(widths)}")
        self.layers = nn.ModuleDict({s: TemporalLayer(widths[s]) for s in sites})

    def sites(self, refiner: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        """(host block, layer) pairs on ``refiner``; ValueError when the widths differ."""
        unet = refiner.unet
        if tuple(unet.config.block_out_channels) != tuple(self.config.block_out_channels):
            raise ValueError(
                f"refiner motion layers for block widths {list(self.config.block_out_channels)}"
                f", the refiner has {list(unet.config.block_out_channels)}"
            )
        hosts = {"mid": unet.mid_block} | {f"up{i}": b for i, b in enumerate(unet.up_blocks)}
        return [(hosts[s], layer) for s, layer in self.layers.items()]


class TemporalRefiner(nn.Module):
    """A source refiner plus its temporal layers: ``forward(render, source, pose,
    num_frames)`` on (B*F, 3, H, W) windows of F frames (window-major); ``num_frames=None``
    runs the per-frame refiner alone."""

    def __init__(self, refiner: nn.Module, motion: RefinerMotion) -> None:
        super().__init__()
        self.refiner = refiner
        self.motion = motion
        self.hooks = MotionHooks(motion.sites(refiner))

    def forward(
        self,
        render: torch.Tensor,
        source: torch.Tensor,
        pose: torch.Tensor,
        num_frames: int | None,
    ) -> torch.Tensor:
        if num_frames is not None and render.shape[0] % num_frames:
            raise ValueError(
                f"batch of {render.shape[0]} frames is not whole windows of {num_frames} frames"
            )
        self.hooks.num_frames = num_frames
        try:
            return self.refiner(render, source, pose)
        finally:
            if not torch.is_grad_enabled():
                self.hooks.num_frames = None
