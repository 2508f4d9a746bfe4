"""The architecture section of a motion module (:mod:`signgen.models.motion`).

Its own module, free of torch and diffusers, so that training configs
(:mod:`signgen.train.config`, read by every ``signgen`` command line) can name it without
importing them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MotionModuleConfig:
    """Architecture of a new motion module (:mod:`signgen.models.motion`; a typed config
    section, ``motion.module`` of ``signgen train motion``): AnimateDiff's defaults except
    the group count, which must divide the UNet's narrowest block."""

    num_attention_heads: int = 8  # per temporal attention (AnimateDiff: 8)
    transformer_layers: int = 1  # transformer blocks per motion layer (AnimateDiff: 1)
    max_frames: int = 32  # longest window; sinusoidal frame positions (AnimateDiff: 32)
    norm_num_groups: int | None = None  # None = the UNet's norm_num_groups
    mid_block: bool = True  # a motion layer in the UNet's mid block (AnimateDiff v2+)
