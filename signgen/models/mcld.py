"""Multi-focal conditioning (MCLD) for faces and hands: focal tokens + decoupled attention.

After "Multi-focal Conditioned Latent Diffusion for Person Image Synthesis" (Liu et al.
2025; docs/model.md), adapted to signers: the focal regions are the face and both
hands of the SOURCE frame.

1. Boxes. For each region (face 23-90, left hand 91-111, right hand 112-132 of COCO-
   WholeBody, :mod:`signgen.keypoints.layout`) the keypoints with score >= ``min_score``
   give a box, made square, padded by ``padding`` x its side on each side, at least
   ``min_side`` x the image's shorter side, and moved (then clamped) inside the image
   (:func:`region_boxes`). A region with fewer than ``min_points`` such keypoints is
   *missing*.
2. Crops. ``torchvision.ops.roi_align`` resamples each box to ``crop_size`` x
   ``crop_size`` (:func:`crop_regions`), differentiable and antialiased by its adaptive
   sampling ratio. Crops are taken from the source letterboxed to the model resolution,
   with keypoints in the same pixels, in training and rendering alike.
3. Encoder. The pipeline's own frozen source encoder (DINOv2, or CLIP for ablation B1)
   encodes the crops (:meth:`FocalAdapter.encode_regions`): its full last hidden state
   per crop, computed once per clip at rendering time.
4. Resampler. A trainable perceiver resampler (diffusers' ``IPAdapterPlusImageProjection``:
   the resampler of IP-Adapter Plus, Ye et al. 2023, which follows Flamingo's Perceiver
   Resampler, Alayrac et al. 2022) turns each crop's tokens into ``tokens_per_region``
   tokens of the UNet's cross-attention width; a learned region embedding is added.
   **Missing-region fallback**: the K tokens of a missing region are replaced by a
   learned per-region "missing" token set, so the UNet sees "no face/hand visible" as
   its own condition, distinct from the null condition below.
5. Decoupled cross-attention (IP-Adapter): the focal tokens are appended to the source
   tokens in ``encoder_hidden_states``; the UNet's cross-attention layers (attn2) get a
   :class:`FocalAttnProcessor` that splits the last ``num_tokens`` tokens off and computes
   ``out = Attn(Q, K_src, V_src) + scale * Attn(Q, K_focal, V_focal)`` with their OWN
   key/value projections (held, and saved, by :class:`FocalAdapter`, so the UNet stays a
   plain ``UNet2DConditionModel`` with unchanged state-dict keys).
6. Null focal condition (condition dropout in training, the guidance branches without
   focal tokens): all-zero focal tokens. The focal key/value projections have no bias,
   so zero tokens give zero values and the focal branch adds exactly nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import IPAdapterPlusImageProjection
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from signgen.models.regions import REGIONS


# ---- geometry ----------------------------------------------------------------------------------
def region_boxes(
    points: torch.Tensor,
    image_size: tuple[int, int],
    regions: Sequence[str] = tuple(REGIONS),
    *,
    padding: float = 0.25,
    min_side: float = 0.1,
    min_score: float = 0.3,
    min_points: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Square, padded, clamped boxes of the focal regions.

    points (B, 133, 3) x, y, score in pixels of an image of ``image_size`` = (H, W).
    Returns boxes (B, R, 4) float x1, y1, x2, y2 in pixels and present (B, R) bool. A
    missing region gets the largest centred square (its crop is computed but unused).
    """
    h, w = (float(v) for v in image_size)
    pts = torch.as_tensor(points, dtype=torch.float32)
    assert pts.ndim == 3 and pts.shape[1:] == (133, 3), tuple(pts.shape)
    boxes, present = [], []
    for name in regions:
        idx = REGIONS[name]
        p = pts[:, idx.start : idx.stop]  # (B, n, 3)
        valid = p[..., 2] >= min_score  # (B, n)
        inf = torch.tensor(float("inf"))
        x1 = torch.where(valid, p[..., 0], inf).amin(1)  # (B,)
        y1 = torch.where(valid, p[..., 1], inf).amin(1)
        x2 = torch.where(valid, p[..., 0], -inf).amax(1)
        y2 = torch.where(valid, p[..., 1], -inf).amax(1)
        ok = valid.sum(1) >= min_points  # (B,)
        cx = torch.where(ok, (x1 + x2) / 2, torch.tensor(w / 2))
        cy = torch.where(ok, (y1 + y2) / 2, torch.tensor(h / 2))
        side = torch.where(ok, torch.maximum(x2 - x1, y2 - y1), torch.tensor(min(h, w)))
        side = (side * (1 + 2 * padding)).clamp(min=min_side * min(h, w), max=min(h, w))
        # Move the square inside the image (its side never exceeds the shorter side).
        bx1 = (cx - side / 2).clamp(min=0.0)
        bx1 = torch.minimum(bx1, w - side)
        by1 = (cy - side / 2).clamp(min=0.0)
        by1 = torch.minimum(by1, h - side)
        boxes.append(torch.stack([bx1, by1, bx1 + side, by1 + side], dim=-1))  # (B, 4)
        present.append(ok)
    return torch.stack(boxes, 1), torch.stack(present, 1)  # (B, R, 4), (B, R)


def crop_regions(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """images (B, C, H, W), boxes (B, R, 4) pixels -> crops (B, R, C, size, size).

    ``torchvision.ops.roi_align`` (aligned, adaptive sampling ratio): bilinear resampling
    that averages several samples per output pixel when shrinking.
    """
    from torchvision.ops import roi_align

    b, r = boxes.shape[:2]
    idx = torch.arange(b, device=images.device, dtype=images.dtype).repeat_interleave(r)
    rois = torch.cat([idx[:, None], boxes.reshape(b * r, 4).to(images)], dim=1)  # (B*R, 5)
    crops = roi_align(images, rois, output_size=(size, size), spatial_scale=1.0,
                      sampling_ratio=-1, aligned=True)  # fmt: skip
    return crops.view(b, r, images.shape[1], size, size)


def region_weight_map(
    points: torch.Tensor,
    size: tuple[int, int],
    latent_size: tuple[int, int],
    face_w: float,
    hand_w: float,
    *,
    padding: float = 0.25,
    min_side: float = 0.1,
    min_score: float = 0.3,
    min_points: int = 3,
) -> torch.Tensor:
    """Per-latent-pixel loss weights: 1, ``face_w`` in the face box, ``hand_w`` in the hand
    boxes (the larger weight where boxes overlap); MCLD's face-region loss weight extended
    to the hands.

    points (B, 133, 3) in pixels of an image of ``size`` = (H, W) (the TARGET keypoints);
    latent_size = (h, w). A latent pixel is in a box when its centre is. Returns
    (B, 1, h, w) float32; regions that are missing keep weight 1.
    """
    boxes, present = region_boxes(
        points, size, tuple(REGIONS), padding=padding, min_side=min_side,
        min_score=min_score, min_points=min_points,
    )  # fmt: skip
    (hh, ww), (lh, lw) = size, latent_size
    ys = (torch.arange(lh, dtype=torch.float32) + 0.5) * (hh / lh)  # (h,) centres in pixels
    xs = (torch.arange(lw, dtype=torch.float32) + 0.5) * (ww / lw)  # (w,)
    bx = boxes[..., None, None]  # (B, R, 4, 1, 1)
    inside = (
        (xs >= bx[:, :, 0])
        & (xs < bx[:, :, 2])
        & (ys[:, None] >= bx[:, :, 1])
        & (ys[:, None] < bx[:, :, 3])
    ) & present[..., None, None]  # fmt: skip  (B, R, h, w)
    weights = torch.tensor([face_w if n == "face" else hand_w for n in REGIONS])  # (R,)
    per_region = torch.where(inside, weights.view(1, -1, 1, 1), -torch.inf)  # (B, R, h, w)
    out = torch.where(inside.any(1, keepdim=True), per_region.amax(1, keepdim=True), 1.0)
    return out.float()  # (B, 1, h, w)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(w * (pred - target)^2) / sum(w) over all elements (w broadcast over channels):
    a weighted mean, so the loss keeps the scale of the plain MSE (equal to it for w = 1)."""
    w = weight.to(pred.dtype).expand_as(pred)
    return (w * (pred - target) ** 2).sum() / w.sum()


# ---- decoupled cross-attention ---------------------------------------------------------------
class FocalAttnProcessor:
    """Decoupled cross-attention (IP-Adapter, Ye et al. 2023, Eq. 5) for a UNet attn2 layer.

    ``encoder_hidden_states`` (B, N + n, C) = [source tokens; n focal tokens];
    out = Attn(Q, K_src, V_src) + scale * Attn(Q, K_focal, V_focal), the focal keys and
    values from this processor's own ``to_k``/``to_v``. The source part is computed exactly
    as diffusers' ``AttnProcessor2_0`` does; with ``scale == 0`` the focal part is skipped.

    A plain object (not an ``nn.Module``), so the UNet's state dict keeps its own keys; the
    projections belong to the :class:`FocalAdapter` that installed it (``adapter.scale`` is
    read at call time).
    """

    def __init__(self, adapter: FocalAdapter, to_k: nn.Linear, to_v: nn.Linear) -> None:
        self.adapter = adapter
        self.to_k = to_k
        self.to_v = to_v

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        n = self.adapter.num_tokens
        assert encoder_hidden_states is not None and encoder_hidden_states.shape[1] > n, (
            "FocalAttnProcessor expects [source tokens; focal tokens] as encoder_hidden_states"
        )
        focal = encoder_hidden_states[:, -n:]  # (B, n, C)
        encoder_hidden_states = encoder_hidden_states[:, :-n]  # (B, N, C)
        scale = float(self.adapter.scale)

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(
                attention_mask, sequence_length, batch_size
            )
            attention_mask = attention_mask.view(
                batch_size, attn.heads, -1, attention_mask.shape[-1]
            )
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, h, L, d)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, h, N, d)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )  # (B, h, L, d)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        if scale != 0.0:  # the decoupled focal branch
            fk = self.to_k(focal.to(self.to_k.weight.dtype)).to(query.dtype)
            fv = self.to_v(focal.to(self.to_v.weight.dtype)).to(query.dtype)
            fk = fk.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, h, n, d)
            fv = fv.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            if attn.norm_k is not None:
                fk = attn.norm_k(fk)
            focal_out = F.scaled_dot_product_attention(
                query, fk, fv, dropout_p=0.0, is_causal=False
            )
            focal_out = focal_out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
            hidden_states = hidden_states + scale * focal_out.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)  # linear proj
        hidden_states = attn.to_out[1](hidden_states)  # dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(
                batch_size, channel, height, width
            )
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def cross_attention_layers(unet: nn.Module) -> list[tuple[str, Attention]]:
    """(name, module) of the UNet's cross-attention layers (attn2 of its transformer blocks)."""
    return [
        (name, m)
        for name, m in unet.named_modules()
        if isinstance(m, Attention) and m.is_cross_attention
    ]


# ---- the focal module ----------------------------------------------------------------------------
class FocalAdapter(ModelMixin, ConfigMixin):
    """Focal tokens of the source's face and hands + the decoupled K/V projections.

    Built for one UNet (``attn_layers``/``attn_dims``: its cross-attention layers and their
    key/value widths; :meth:`for_unet`). ``forward`` maps the frozen encoder's crop tokens
    to focal tokens; :meth:`install` sets a :class:`FocalAttnProcessor` on each of the
    UNet's cross-attention layers. See the module docstring for the whole design.
    """

    @register_to_config
    def __init__(
        self,
        encoder_dim: int = 1024,
        cross_attention_dim: int = 1024,
        attn_layers: tuple[str, ...] = (),
        attn_dims: tuple[int, ...] = (),
        regions: tuple[str, ...] = ("face", "left_hand", "right_hand"),
        tokens_per_region: int = 4,
        resampler_dim: int = 768,
        resampler_depth: int = 2,
        resampler_heads: int = 12,
        resampler_dim_head: int = 64,
        resampler_ffn_ratio: float = 4.0,
        scale: float = 1.0,
        guidance: float = 2.0,
        crop_size: int = 224,
        padding: float = 0.25,
        min_side: float = 0.1,
        min_score: float = 0.3,
        min_points: int = 3,
    ) -> None:
        super().__init__()
        unknown = [r for r in regions if r not in REGIONS]
        if unknown:
            raise ValueError(f"unknown focal region(s) {unknown}; choose from {list(REGIONS)}")
        if len(attn_layers) != len(attn_dims):
            raise ValueError("attn_layers and attn_dims must have the same length")
        r, k, c = len(regions), int(tokens_per_region), int(cross_attention_dim)
        self.resampler = IPAdapterPlusImageProjection(
            embed_dims=encoder_dim,
            output_dims=c,
            hidden_dims=resampler_dim,
            depth=resampler_depth,
            dim_head=resampler_dim_head,
            heads=resampler_heads,
            num_queries=k,
            ffn_ratio=resampler_ffn_ratio,
        )
        self.region_embedding = nn.Parameter(torch.randn(r, c) * 0.02)  # (R, C)
        self.missing_tokens = nn.Parameter(torch.randn(r, k, c) * 0.02)  # (R, K, C)
        # Decoupled keys/values, one pair per cross-attention layer; no bias (null = zeros).
        self.to_k = nn.ModuleList(nn.Linear(c, d, bias=False) for d in attn_dims)
        self.to_v = nn.ModuleList(nn.Linear(c, d, bias=False) for d in attn_dims)
        self.scale = float(scale)  # runtime attribute: set_scale / pipeline option

    @classmethod
    def for_unet(cls, unet: nn.Module, encoder_dim: int, **kwargs: Any) -> FocalAdapter:
        """An adapter whose K/V projections match ``unet``'s cross-attention layers."""
        layers = cross_attention_layers(unet)
        if not layers:
            raise ValueError("the UNet has no cross-attention layers to attach focal tokens to")
        return cls(
            encoder_dim=encoder_dim,
            cross_attention_dim=int(unet.config.cross_attention_dim),
            attn_layers=tuple(n for n, _ in layers),
            attn_dims=tuple(int(m.to_k.out_features) for _, m in layers),
            **kwargs,
        )

    @property
    def num_tokens(self) -> int:
        """Focal tokens appended to the source tokens: regions x tokens per region."""
        return len(self.config.regions) * int(self.config.tokens_per_region)

    def set_scale(self, scale: float) -> None:
        self.scale = float(scale)

    @torch.no_grad()
    def init_from_unet(self, unet: nn.Module) -> None:
        """Start the focal K/V as copies of the UNet's own (as IP-Adapter training does)."""
        for (_, m), k, v in zip(self._layers(unet), self.to_k, self.to_v, strict=True):
            k.weight.copy_(m.to_k.weight)
            v.weight.copy_(m.to_v.weight)

    def _layers(self, unet: nn.Module) -> list[tuple[str, Attention]]:
        layers = dict(cross_attention_layers(unet))
        names = list(self.config.attn_layers)
        if sorted(layers) != sorted(names):
            raise ValueError(
                "focal adapter was built for another UNet: its cross-attention layers "
                f"{names[:2]}... do not match the UNet's {sorted(layers)[:2]}..."
            )
        for (name, m), d in zip(((n, layers[n]) for n in names), self.config.attn_dims):
            if m.to_k.out_features != d or m.to_k.in_features != self.config.cross_attention_dim:
                raise ValueError(f"focal adapter layer {name} does not match the UNet's widths")
        return [(n, layers[n]) for n in names]

    def install(self, unet: nn.Module) -> None:
        """Set a :class:`FocalAttnProcessor` on each cross-attention layer of ``unet``
        (``unet.set_attn_processor``; self-attention processors are kept)."""
        procs = dict(unet.attn_processors)
        for (name, _), k, v in zip(self._layers(unet), self.to_k, self.to_v, strict=True):
            procs[f"{name}.processor"] = FocalAttnProcessor(self, k, v)
        unet.set_attn_processor(procs)

    def forward(self, hidden: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """hidden (B, R, N, Ds) encoder tokens of the crops, present (B, R) bool ->
        focal tokens (B, R * K, C); missing regions get the learned missing tokens."""
        b, r, n, ds = hidden.shape
        assert r == len(self.config.regions), (r, self.config.regions)
        dtype = self.region_embedding.dtype
        tokens = self.resampler(hidden.reshape(b * r, n, ds).to(dtype))  # (B*R, K, C)
        tokens = tokens.view(b, r, -1, tokens.shape[-1]) + self.region_embedding[None, :, None]
        present = torch.as_tensor(present, device=tokens.device).bool().view(b, r, 1, 1)
        tokens = torch.where(present, tokens, self.missing_tokens[None])  # (B, R, K, C)
        return tokens.reshape(b, r * tokens.shape[2], tokens.shape[3])

    @torch.no_grad()
    def encode_regions(
        self,
        encoder: nn.Module,
        images: torch.Tensor,
        points: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen-encoder tokens of the focal crops.

        images (B, 3, H, W) in [0, 1] (the source, letterboxed to the model resolution),
        points (B, 133, 3) in its pixels -> hidden (B, R, N, Ds), present (B, R) bool.
        """
        cfg = self.config
        b = images.shape[0]
        boxes, present = region_boxes(
            points.detach().float().cpu(), tuple(images.shape[-2:]), cfg.regions,
            padding=cfg.padding, min_side=cfg.min_side, min_score=cfg.min_score,
            min_points=cfg.min_points,
        )  # fmt: skip
        crops = crop_regions(images.float(), boxes.to(images.device), int(cfg.crop_size))
        crops = crops.flatten(0, 1)  # (B*R, 3, s, s)
        m = torch.tensor(mean, device=crops.device).view(1, 3, 1, 1)
        s = torch.tensor(std, device=crops.device).view(1, 3, 1, 1)
        px = ((crops - m) / s).to(next(encoder.parameters()).dtype)
        kwargs = {}
        if getattr(encoder.config, "model_type", "") == "clip_vision_model":
            kwargs["interpolate_pos_encoding"] = True  # CLIP at a crop size of its own
        hidden = encoder(pixel_values=px, **kwargs).last_hidden_state  # (B*R, N, Ds)
        return hidden.view(b, len(cfg.regions), *hidden.shape[1:]), present.to(images.device)


# ---- training helpers (used by `signgen train fpdm`) ----------------------------------------------
@torch.no_grad()
def batch_focal_inputs(
    adapter: FocalAdapter,
    encoder: nn.Module,
    batch: dict[str, Any],
    resolution: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Focal-crop tokens of a training batch (:class:`signgen.data.pairs.PairDataset` items):
    the source letterboxed to the model ``resolution`` (H, W) and its keypoints in model
    pixels (``source_keypoints``), as the pipeline does at rendering time.
    Returns denoiser keyword arguments ``focal_hidden`` (B, R, N, Ds), ``focal_present``."""
    from signgen.models.preprocess import to_model_input

    images = to_model_input(batch["source"], resolution, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    hidden, present = adapter.encode_regions(
        encoder, images.to(device), torch.as_tensor(batch["source_keypoints"]), mean, std
    )
    return {"focal_hidden": hidden, "focal_present": present}


def batch_loss_weights(
    adapter: FocalAdapter,
    batch: dict[str, Any],
    resolution: tuple[int, int],
    latent_size: tuple[int, int],
    face_w: float,
    hand_w: float,
) -> torch.Tensor | None:
    """(B, 1, h, w) region loss weights from the TARGET keypoints (``keypoints``, model
    pixels) with the adapter's box settings, or None when both weights are 1."""
    if face_w == 1.0 and hand_w == 1.0:
        return None
    c = adapter.config
    return region_weight_map(
        torch.as_tensor(batch["keypoints"]).float().cpu(), resolution, latent_size, face_w,
        hand_w, padding=c.padding, min_side=c.min_side, min_score=c.min_score,
        min_points=c.min_points,
    )  # fmt: skip
