"""The pixel-aligned source path of the CPU-trained demo model: a denoiser subclass.

Spatial source latents (off in every paper recipe). A UNet whose ``in_channels`` are twice
its ``out_channels`` takes the VAE latents of the source frame concatenated to the noisy
latents, as Stable Diffusion's inpainting and InstructPix2Pix models take their image
condition. They belong to the *source* condition: ``drop_source`` zeroes them together with
the source tokens, so cumulative guidance is unchanged. FPDM itself passes the source only
through DINOv2 tokens; this path exists for models without a pretrained source encoder
(the demo model, whose frozen random-init ViT cannot carry appearance at pixel precision)
and is selected by the UNet config alone, so saved models describe themselves.

Source-residual prediction (``source_residual``, saved in the model folder's
``model_index.json``). With a clean-sample (x0) prediction type the UNet may predict the
*difference* between the target latents and the source frame's: the denoiser returns
``source_latents + unet(...)``. The residual base is the source latents as given, before
condition dropout, so it is the same in every guidance branch and cumulative guidance acts
on the residual alone. Most of a signing frame (background, clothes, the still body) is the
first frame, so a miniature model starts from the copy and spends its capacity on what the
pose moves.

Everything else (pose, tokens, fusion, focal tokens, null conditions) is the core
:class:`signgen.models.fpdm.FPDMDenoiser`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from signgen.models.fpdm import Conditions, FPDMDenoiser, _apply_keep, _keep


@dataclass
class SpatialConditions(Conditions):
    """:class:`~signgen.models.fpdm.Conditions` plus the source frame's latents."""

    source_latents: torch.Tensor | None = None  # (B, c, h, w) concatenated to the UNet input
    residual_base: torch.Tensor | None = None  # (B, c, h, w) added to the prediction


class SpatialSourceDenoiser(FPDMDenoiser):
    """FPDM's denoiser with the source frame's latents as extra UNet input channels, and,
    with ``source_residual``, the prediction taken relative to them (module docstring)."""

    spatial_source = True

    def __init__(self, *args, source_residual: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.source_residual = bool(source_residual)

    def encode_source_extras(self, vae: nn.Module, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The first frame's scaled VAE latents (1, c, h, w): the distribution's mode, as
        training encodes the source."""
        latents = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
        return {"source_latents": latents}

    def encode_conditions(
        self,
        pose: torch.Tensor,
        source_hidden: torch.Tensor,
        fusion: torch.Tensor | None,
        *,
        drop_source: torch.Tensor | None = None,
        source_latents: torch.Tensor | None = None,
        **kwargs,
    ) -> SpatialConditions:
        """The core conditions plus ``source_latents`` (B or 1, c, h, w), the scaled VAE
        latents of the source frame, dropped with the source tokens; None = the null (zero)
        latents for every sample."""
        cond = super().encode_conditions(pose, source_hidden, fusion, drop_source=drop_source,
                                         **kwargs)  # fmt: skip
        feats = cond.pose_features
        b, c = feats.shape[0], self.source_latent_channels
        if source_latents is None:  # null spatial source
            src_lat = feats.new_zeros(b, c, *feats.shape[-2:])
            base = src_lat
        else:
            src_lat = source_latents.to(feats.dtype)
            src_lat = src_lat.expand(b, -1, -1, -1) if src_lat.shape[0] == 1 else src_lat
            assert src_lat.shape == (b, c, *feats.shape[-2:]), (
                f"source latents {tuple(src_lat.shape)} do not match ({b}, {c}, "
                f"{feats.shape[-2]}, {feats.shape[-1]})"
            )
            base = src_lat  # before dropout: the same base in every guidance branch
            src_lat = _apply_keep(src_lat, _keep(drop_source, b, feats.device))
        return SpatialConditions(
            **vars(cond),
            source_latents=src_lat,
            residual_base=base if self.source_residual else None,
        )

    def denoise(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: SpatialConditions
    ) -> torch.Tensor:
        """noisy_latents (B, c, h, w) -> prediction (B, c, h, w); the UNet sees (B, 2c, h, w)."""
        x = torch.cat([noisy_latents, cond.source_latents.to(noisy_latents.dtype)], dim=1)
        out = super().denoise(x, timesteps, cond)
        if cond.residual_base is not None:  # source-residual prediction
            out = out + cond.residual_base.to(out.dtype)
        return out
