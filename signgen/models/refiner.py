"""The source refiner: a learned last stage that takes a low-resolution render to full size.

A model that runs below its frames' resolution (the CPU-trained demo model denoises
80x64 for a 260x210 frame) returns blurred limbs and loses every detail finer than its
pixels, even where nothing moved. The refiner is a small UNet at the output size that
sees what the denoiser saw, each at full resolution, and returns the frame:

    inputs  = [render resized to the output size, first frame, target pose image]   (9 ch)
    output  = render + UNet(space-to-depth(inputs))                                 (3 ch)

* the render carries where things are and what the denoiser chose; the first frame
  carries texture (face, clothes, background) at full resolution; the pose image, drawn
  at the output size, places the limbs more precisely than the render's pixels can;
* the UNet is diffusers' ``UNet2DModel`` (its timestep input unused: always 0) on a
  ``patch_size`` space-to-depth of the inputs (``pixel_unshuffle``): lossless, and 16x
  fewer positions for ``patch_size`` 4, so that it trains on CPU; the output is turned back
  with ``pixel_shuffle``;
* its last convolution starts at zero, so an untrained refiner returns the render
  unchanged;
* it is trained by ``signgen train refiner`` (:mod:`signgen.train.refiner`) on the frozen
  model's own renders of training clips against their true frames (L1 + SSIM), i.e. it
  learns to correct the denoiser's errors, not an assumed degradation.

It is the cascade of Imagen / SR3 (a base model, then a model at the output size
conditioned on the base model's output) without the second diffusion: a regression on
the render, as the refinement stage of pose-transfer work does. Unlike the detail
transfer (:mod:`signgen.sampling.detail`), which keeps the first frame's pixels wherever
the render agrees with it by a hand-set threshold, nothing is copied by rule: what comes
from the first frame is what the training targets taught. Why and what it measured:
docs/model.md, "The source refiner".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config

REFINER_FOLDER = "refiner"
IN_IMAGES = 3  # render, first frame, pose image


class SourceRefiner(ModelMixin, ConfigMixin):
    """(render, first frame, pose image), each (B, 3, H, W) in [0, 1] at the output size
    -> the refined frame (B, 3, H, W), nominally in [0, 1] (module docstring). Any H, W:
    the inputs are padded (edge values) to a multiple of the UNet's total stride and the
    output cropped back."""

    @register_to_config
    def __init__(
        self,
        patch_size: int = 4,
        block_out_channels: tuple[int, ...] = (64, 96, 128),
        layers_per_block: int = 1,
        norm_num_groups: int = 16,
    ) -> None:
        super().__init__()
        n = len(block_out_channels)
        self.unet = UNet2DModel(
            in_channels=IN_IMAGES * 3 * patch_size**2,
            out_channels=3 * patch_size**2,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) * n,
            up_block_types=("UpBlock2D",) * n,
            norm_num_groups=norm_num_groups,
            add_attention=False,
        )
        # Identity at the start: the render passes through unchanged.
        torch.nn.init.zeros_(self.unet.conv_out.weight)
        torch.nn.init.zeros_(self.unet.conv_out.bias)

    @property
    def stride(self) -> int:
        """Input sizes are padded to a multiple of this (space-to-depth x downsamplings)."""
        return self.config.patch_size * 2 ** (len(self.config.block_out_channels) - 1)

    def forward(
        self, render: torch.Tensor, source: torch.Tensor, pose: torch.Tensor
    ) -> torch.Tensor:
        assert render.shape == source.shape == pose.shape and render.shape[1] == 3, (
            render.shape, source.shape, pose.shape,
        )  # fmt: skip
        h, w = render.shape[-2:]
        s, p = self.stride, self.config.patch_size
        ph, pw = -h % s, -w % s
        top, left = ph // 2, pw // 2
        x = torch.cat([render, source, pose], dim=1).to(self.dtype) * 2 - 1
        x = F.pad(x, (left, pw - left, top, ph - top), mode="replicate")
        t = torch.zeros(x.shape[0], device=x.device)
        d = F.pixel_shuffle(self.unet(F.pixel_unshuffle(x, p), t).sample, p)
        return render + d[:, :, top : top + h, left : left + w].to(render.dtype)
