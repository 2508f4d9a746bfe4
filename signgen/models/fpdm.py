"""The FPDM denoiser: diffusers' UNet2DConditionModel plus FPDM's three conditions.

The UNet is extended, not forked (docs/model.md):

* pose features (PoseEncoder, at latent resolution) are added to the output of the
  UNet's ``conv_in`` through a forward hook registered for the duration of one call,
  so the UNet's own weights and state-dict keys stay those of a plain
  ``UNet2DConditionModel``;
* projected source tokens are the cross-attention ``encoder_hidden_states``;
* the fusion MLP output goes in as ``class_labels`` of an ``class_embed_type="identity"``
  UNet, which adds it to the timestep embedding.

Null conditions. A dropped condition (training-time dropout, or the branches of cumulative
guidance at sampling time) is replaced by zeros *where it enters the UNet*: zero pose
features after ``conv_in``, zero cross-attention tokens, and for F the fusion MLP's null
(:meth:`~signgen.models.modules.FusionMLP.embed`: MLP(0) as in the published FPDM code, or
a zero time-embedding offset for the earlier ``silu`` variant). The same nulls serve
training and sampling because both go through
:meth:`FPDMDenoiser.encode_conditions`.

Multi-focal conditioning (optional, :mod:`signgen.models.mcld`): with a ``focal_adapter``
the denoiser appends the focal tokens of the source's face and hands to the source tokens
and the adapter's decoupled-attention processors on the UNet's cross-attention layers split
them off again. Their null condition is all-zero focal tokens (``drop_focal``). Without an
adapter nothing changes: same calls, same numbers as plain FPDM.

This is the generic core. The pixel-aligned source path of the CPU-trained demo model
(source latents concatenated to the UNet input, optionally source-residual prediction) is
a subclass, :class:`signgen.models.spatial.SpatialSourceDenoiser`, selected by the model
folder (:func:`signgen.models.factory.build_denoiser`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from signgen.models.mcld import FocalAdapter
from signgen.models.modules import FusionMLP, PoseEncoder, SourceProjector


@dataclass
class Conditions:
    """Per-sample conditioning as the UNet consumes it (computed once, reused every step)."""

    pose_features: torch.Tensor  # (B, C0, h, w) added to conv_in's output
    tokens: torch.Tensor  # (B, N, cross_attention_dim) cross-attention keys/values
    class_emb: torch.Tensor | None  # (B, time_embed_dim) added to the time embedding
    focal_tokens: torch.Tensor | None = None  # (B, n, cross_attention_dim) MCLD focal tokens


def _keep(mask: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
    """Bool drop mask (B,) -> float keep multiplier (B,), or None when nothing is dropped."""
    if mask is None:
        return None
    mask = torch.as_tensor(mask, device=device).bool()
    assert mask.shape == (n,), f"drop mask must have shape ({n},), got {tuple(mask.shape)}"
    return (~mask).float()


def _apply_keep(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    if keep is None:
        return x
    return x * keep.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))


class FPDMDenoiser(nn.Module):
    """UNet + pose encoder + source projector (+ fusion MLP): one noise/v prediction.

    ``fusion_mlp`` is None for models without IPF (ablations B1-B3); then the UNet has no
    class embedding and ``fusion`` is ignored. ``focal_adapter`` (MCLD, optional) installs
    its decoupled cross-attention processors on the UNet.
    """

    # Whether the UNet input also carries the source frame's latents (in_channels = 2 x
    # out_channels): not in FPDM; :class:`signgen.models.spatial.SpatialSourceDenoiser`.
    spatial_source = False

    def __init__(
        self,
        unet: UNet2DConditionModel,
        pose_encoder: PoseEncoder,
        source_projector: SourceProjector,
        fusion_mlp: FusionMLP | None = None,
        focal_adapter: FocalAdapter | None = None,
    ) -> None:
        super().__init__()
        has_class = unet.config.class_embed_type == "identity"
        if (fusion_mlp is not None) != has_class:
            raise ValueError(
                "a fusion MLP needs a UNet with class_embed_type='identity' and vice versa "
                f"(fusion_mlp={'set' if fusion_mlp is not None else 'None'}, "
                f"class_embed_type={unet.config.class_embed_type!r})"
            )
        c0 = unet.config.block_out_channels[0]
        if pose_encoder.config.conditioning_embedding_channels != c0:
            raise ValueError(
                f"pose encoder outputs {pose_encoder.config.conditioning_embedding_channels} "
                f"channels but the UNet's conv_in has {c0}"
            )
        if source_projector.config.out_dim != unet.config.cross_attention_dim:
            raise ValueError(
                f"source projector outputs {source_projector.config.out_dim} but the UNet's "
                f"cross_attention_dim is {unet.config.cross_attention_dim}"
            )
        ins, outs = unet.config.in_channels, unet.config.out_channels
        if ins != (2 * outs if self.spatial_source else outs):
            raise ValueError(
                f"the UNet has in_channels={ins} and out_channels={outs}: "
                + ("a spatial-source UNet takes twice as many inputs as outputs"
                   if self.spatial_source else "FPDM's UNet takes as many inputs as outputs "
                   "(a spatial-source UNet, twice as many, is a SpatialSourceDenoiser)")
            )  # fmt: skip
        self.unet = unet
        self.pose_encoder = pose_encoder
        self.source_projector = source_projector
        self.fusion_mlp = fusion_mlp
        self.focal_adapter = focal_adapter
        if focal_adapter is not None:
            if focal_adapter.config.cross_attention_dim != unet.config.cross_attention_dim:
                raise ValueError(
                    f"focal adapter outputs {focal_adapter.config.cross_attention_dim} but the "
                    f"UNet's cross_attention_dim is {unet.config.cross_attention_dim}"
                )
            focal_adapter.install(unet)

    @property
    def has_fusion(self) -> bool:
        return self.fusion_mlp is not None

    @property
    def has_focal(self) -> bool:
        return self.focal_adapter is not None

    @property
    def source_latent_channels(self) -> int:
        """Channels of the spatial source latents the UNet expects (0: none, plain FPDM)."""
        return int(self.unet.config.in_channels - self.unet.config.out_channels)

    def encode_source_extras(self, vae: nn.Module, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-clip conditions computed from the first frame besides the encoder tokens,
        as keyword arguments of :meth:`encode_conditions`: none for FPDM. ``pixels``
        (1, 3, H, W) in [-1, 1] is the first frame at the model resolution."""
        return {}

    def encode_conditions(
        self,
        pose: torch.Tensor,
        source_hidden: torch.Tensor,
        fusion: torch.Tensor | None,
        *,
        drop_pose: torch.Tensor | None = None,
        drop_source: torch.Tensor | None = None,
        drop_fusion: torch.Tensor | None = None,
        focal_hidden: torch.Tensor | None = None,
        focal_present: torch.Tensor | None = None,
        drop_focal: torch.Tensor | None = None,
        source_latents: torch.Tensor | None = None,
    ) -> Conditions:
        """Run the condition encoders and zero the dropped conditions per sample.

        pose (B, 3, H, W) in [0, 1]; source_hidden (B or 1, N, Ds) raw source-encoder
        tokens (a batch of 1 is broadcast); fusion (B, D) or None; drop_* bool (B,).
        MCLD only: focal_hidden (B or 1, R, N', Ds) source-encoder tokens of the region
        crops and focal_present (B or 1, R) bool (``FocalAdapter.encode_regions``); None
        = the null focal condition for every sample. ``source_latents`` must be None here
        (spatial-source models: :class:`signgen.models.spatial.SpatialSourceDenoiser`).
        """
        b, device = pose.shape[0], pose.device
        feats = self.pose_encoder(pose)  # (B, C0, h, w)
        feats = _apply_keep(feats, _keep(drop_pose, b, device))
        tokens = self.source_projector(source_hidden)  # (B|1, N, C)
        tokens = tokens.expand(b, -1, -1) if tokens.shape[0] == 1 else tokens
        assert tokens.shape[0] == b, (tokens.shape, b)
        tokens = _apply_keep(tokens, _keep(drop_source, b, device))
        class_emb = None
        if self.fusion_mlp is not None:  # no F at all = the null condition for every sample
            class_emb = self.fusion_mlp.embed(fusion, _keep(drop_fusion, b, device), b)  # (B, T)
        focal = None
        if self.focal_adapter is not None:
            if focal_hidden is None:  # null focal condition: zero tokens add nothing
                focal = tokens.new_zeros(b, self.focal_adapter.num_tokens, tokens.shape[-1])
            else:
                assert focal_present is not None, "focal_hidden needs focal_present"
                focal = self.focal_adapter(focal_hidden, focal_present)  # (B|1, n, C)
                focal = focal.expand(b, -1, -1) if focal.shape[0] == 1 else focal
                assert focal.shape[0] == b, (focal.shape, b)
                focal = _apply_keep(focal, _keep(drop_focal, b, device))
        elif focal_hidden is not None:
            raise ValueError("focal_hidden given, but this denoiser has no focal adapter")
        if source_latents is not None:
            raise ValueError("source_latents given, but this UNet takes no spatial source")
        return Conditions(feats, tokens, class_emb, focal)

    def denoise(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditions
    ) -> torch.Tensor:
        """noisy_latents (B, 4, h, w), timesteps (B,) or scalar -> prediction (B, 4, h, w)."""
        feats = cond.pose_features
        assert feats.shape[-2:] == noisy_latents.shape[-2:], (
            f"pose features {tuple(feats.shape)} do not match latents {tuple(noisy_latents.shape)}"
        )

        def add_pose(_module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
            return out + feats.to(out.dtype)

        tokens = cond.tokens  # (B, N, C)
        if self.focal_adapter is not None:  # [source; focal], split again by the processors
            assert cond.focal_tokens is not None, "an MCLD denoiser needs focal tokens"
            tokens = torch.cat([tokens, cond.focal_tokens.to(tokens.dtype)], dim=1)
        handle = self.unet.conv_in.register_forward_hook(add_pose)
        try:
            out = self.unet(
                noisy_latents,
                timesteps,
                encoder_hidden_states=tokens,
                class_labels=cond.class_emb,
                return_dict=False,
            )[0]
        finally:
            handle.remove()
        return out

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        pose: torch.Tensor,
        source_hidden: torch.Tensor,
        fusion: torch.Tensor | None,
        *,
        drop_pose: torch.Tensor | None = None,
        drop_source: torch.Tensor | None = None,
        drop_fusion: torch.Tensor | None = None,
        focal_hidden: torch.Tensor | None = None,
        focal_present: torch.Tensor | None = None,
        drop_focal: torch.Tensor | None = None,
        source_latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Model prediction (B, 4, h, w) for noisy latents under the given conditions."""
        cond = self.encode_conditions(
            pose,
            source_hidden,
            fusion,
            drop_pose=drop_pose,
            drop_source=drop_source,
            drop_fusion=drop_fusion,
            focal_hidden=focal_hidden,
            focal_present=focal_present,
            drop_focal=drop_focal,
            source_latents=source_latents,
        )
        return self.denoise(noisy_latents, timesteps, cond)
