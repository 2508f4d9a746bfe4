"""Frozen source encoders (DINOv2, or CLIP vision for ablation B1)."""

from __future__ import annotations

from typing import Any

import torch


def encode_source(source_encoder: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """Source encoder -> its full last hidden state (B, N, Ds): CLS + patch tokens.

    ``pixel_values`` (B, 3, H, W) come from the image processor
    (:meth:`signgen.models.processor.FPDMImageProcessor.source_pixels`).
    DINOv2-L at 512x512 gives N = 1 + 36 * 36 = 1297 tokens of Ds = 1024. Computed once
    per clip at sampling time.
    """
    return source_encoder(pixel_values=pixel_values).last_hidden_state
