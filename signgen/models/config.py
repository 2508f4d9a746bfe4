"""Typed configuration of an FPDM model (dataclasses; the factory is :mod:`signgen.models.factory`).

A preset (``configs/model/*.yaml``) names, per component, either a ``pretrained`` source
(a local folder or a Hugging Face hub id, always loaded with ``local_files_only=True``;
point ``HF_HOME`` at a cache that holds the weights and set ``HF_HUB_OFFLINE=1``) or
nothing, in which case the component is built with random weights from its inline
``config`` (the architecture). The inline architecture is also what
``build_components(cfg, device="meta")`` uses to build the full-size model without any
weights (shape and parameter-count checks). This module only describes and validates;
it imports no model code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signgen.config import from_dict, load_yaml
from signgen.errors import InputError
from signgen.models.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_MODES,
)
from signgen.models.regions import REGIONS

SOURCE_ENCODER_KINDS = ("dinov2", "clip")
VAE_KINDS = ("kl", "patch")
POS_INTERPOLATIONS = ("transformers", "dino")
FUSION_VARIANTS = ("silu", "fpdm")  # = signgen.models.modules.FusionMLP.VARIANTS


# The paper's cumulative guidance (W_SRC, W_FUSE): the default of model configs and of
# model folders that predate saved guidance.
PAPER_GUIDANCE = (2.0, 2.0)
# The paper's denoising steps: the default of model configs and of model folders that
# predate saved steps.
PAPER_STEPS = 20


@dataclass
class PretrainedSection:
    """A component loaded from ``pretrained`` (+ ``subfolder``) or built from ``config``."""

    pretrained: str | None = None  # local dir or HF hub id; None = random init from config
    subfolder: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # architecture kwargs


@dataclass
class VAEConfig(PretrainedSection):
    # "kl": diffusers' AutoencoderKL (Stable Diffusion's VAE; ``config`` = its kwargs).
    # "patch": signgen's PatchAutoencoder, a fixed lossless p x p patch transform for
    # miniature CPU-trained models (``config`` = patch_size, in_channels, scaling_factor).
    kind: str = "kl"


@dataclass
class UNetConfig(PretrainedSection):
    # Source-residual prediction (signgen.models.fpdm): the UNet predicts target latents
    # minus the source frame's. Needs spatial source latents (in_channels = 2 x
    # out_channels) and scheduler.prediction_type "sample"; a UNet built from ``config``
    # then gets a zero ``conv_out``, so the untrained model renders the first frame.
    source_residual: bool = False


@dataclass
class PoseEncoderConfig:
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)  # 4 stages -> 1/8 resolution
    conditioning_channels: int = 3
    zero_init: bool = True  # False: default init of the last conv (UNet trained from scratch)


@dataclass
class SourceEncoderConfig(PretrainedSection):
    kind: str = "dinov2"  # dinov2 | clip (ablation B1)
    image_size: tuple[int, int] = (512, 512)  # (H, W) fed to the encoder
    image_mean: tuple[float, ...] | None = None  # None = the encoder's standard constants
    image_std: tuple[float, ...] | None = None
    # DINOv2 position embeddings at a non-native input size: "dino" resamples the table as
    # DINO and transformers 4.x do (signgen.models.dinov2; the FPDM authors' setting),
    # "transformers" as the installed transformers does (5.x: by size).
    pos_interpolation: str = "transformers"


@dataclass
class SourceProjectorConfig:
    hidden_dim: int | None = None  # None = cross_attention_dim
    dropout: float = 0.0  # after the GELU and after the output Linear (the authors': 0.2)


@dataclass
class CombinerConfig:
    projection_dim: int = 3072
    hidden_dim: int = 6144
    dropout: float = 0.5


@dataclass
class IPFConfig:
    enabled: bool = True
    mode: str = "fusion"  # fusion (Combiner, B5/B6) | source (CLIP source embedding, B4)
    pretrained: str | None = None  # a stage-1 IPF folder (IPFModel.save_pretrained)
    clip: PretrainedSection = field(default_factory=PretrainedSection)
    image_size: tuple[int, int] = (224, 224)
    combiner: CombinerConfig = field(default_factory=CombinerConfig)
    # True: L2-normalise CLIP embeddings before the Combiner (signgen's earlier choice);
    # False: CLIP image_embeds as they are, as in the published FPDM code.
    normalize_embeddings: bool = True


@dataclass
class FusionConfig:
    hidden_dim: int | None = None  # None = the IPF embedding dim (768 -> 768 -> 1280)
    # "fpdm": Linear-GELU-Dropout-Linear-Dropout, null F = MLP(0) (the published code);
    # "silu": Linear-SiLU-Linear, null F = zero output (signgen's earlier choice).
    variant: str = "silu"
    dropout: float = 0.0  # "fpdm" variant only (the authors': 0.2)


@dataclass
class SchedulerConfig(PretrainedSection):
    name: str = "ddim"  # ddim | ddpm | dpm++ | euler
    prediction_type: str | None = None  # None = keep the scheduler config's (v for SD 2.1)


@dataclass
class ResamplerConfig:
    """Perceiver resampler of the focal tokens (IP-Adapter Plus; see signgen.models.mcld)."""

    dim: int = 768  # width of the latent queries
    depth: int = 2  # resampler blocks (cross-attention + feed-forward)
    heads: int = 12
    dim_head: int = 64
    ffn_ratio: float = 4.0


@dataclass
class MCLDConfig:
    """Multi-focal conditioning (docs/model.md, :mod:`signgen.models.mcld`): focal
    tokens of the source's face and hands through decoupled cross-attention."""

    enabled: bool = False  # False = plain FPDM conditioning
    regions: tuple[str, ...] = tuple(REGIONS)
    tokens_per_region: int = 4  # K resampled tokens per region
    crop_size: int = 224  # crops fed to the (shared, frozen) source encoder
    padding: float = 0.25  # box padding, fraction of the box side on each side
    min_side: float = 0.1  # smallest box side, fraction of the image's shorter side
    min_score: float = 0.3  # keypoints below this score are ignored
    min_points: int = 3  # a region with fewer valid keypoints is missing
    resampler: ResamplerConfig = field(default_factory=ResamplerConfig)
    scale: float = 1.0  # weight of the decoupled focal attention
    guidance: float = 2.0  # default w_focal of the 4-branch cumulative guidance
    # Training (read by `signgen train fpdm`):
    drop: float = 0.1  # per-sample dropout probability of the focal tokens
    face_loss_weight: float = 1.0  # loss weight of the target's face box (latent pixels)
    hand_loss_weight: float = 1.0  # loss weight of the target's hand boxes


@dataclass
class FPDMModelConfig:
    resolution: tuple[int, int] = (512, 512)  # (H, W) the model runs at
    # How frames become network inputs and outputs go back (signgen.models.preprocess):
    # "letterbox" (signgen's: pad with replicated borders, keep the aspect) or "squash" (the
    # published FPDM code's plain PIL-bicubic resize). One geometry for stage 1 (the IPF's
    # inputs), stage 2 (VAE, source encoder, pose images, MCLD crops) and rendering; saved
    # with the model (its image processor and its IPF).
    resize_mode: str = "letterbox"
    # Default denoising steps of renders that give none; saved with the model. The paper's 20.
    steps: int = PAPER_STEPS
    # Default cumulative guidance (W_SRC, W_FUSE) of renders that give none; saved with the
    # model. The paper's 2, 2.
    guidance: tuple[float, float] = PAPER_GUIDANCE
    # Default threshold of the source detail transfer post-processor of renders
    # (signgen.sampling.detail), in [0, 1] intensity units; saved with the model (a render
    # setting, read by no network). 0 = off (every paper recipe).
    detail_transfer: float = 0.0
    seed: int = 0  # seed of random initialisation (components without pretrained weights)
    vae: VAEConfig = field(default_factory=VAEConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    pose_encoder: PoseEncoderConfig = field(default_factory=PoseEncoderConfig)
    source_encoder: SourceEncoderConfig = field(default_factory=SourceEncoderConfig)
    source_projector: SourceProjectorConfig = field(default_factory=SourceProjectorConfig)
    ipf: IPFConfig = field(default_factory=IPFConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    mcld: MCLDConfig = field(default_factory=MCLDConfig)

    def __post_init__(self) -> None:
        if self.source_encoder.kind not in SOURCE_ENCODER_KINDS:
            raise InputError(
                f"source_encoder.kind must be one of {SOURCE_ENCODER_KINDS}, "
                f"got {self.source_encoder.kind!r}"
            )
        if self.source_encoder.pos_interpolation not in POS_INTERPOLATIONS:
            raise InputError(
                f"source_encoder.pos_interpolation must be one of {POS_INTERPOLATIONS}, "
                f"got {self.source_encoder.pos_interpolation!r}"
            )
        if self.fusion.variant not in FUSION_VARIANTS:
            raise InputError(
                f"fusion.variant must be one of {FUSION_VARIANTS}, got {self.fusion.variant!r}"
            )
        if self.vae.kind not in VAE_KINDS:
            raise InputError(f"vae.kind must be one of {VAE_KINDS}, got {self.vae.kind!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise InputError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0:
            raise InputError(f"steps must be a positive integer, got {self.steps!r}")
        if len(self.resolution) != 2 or min(self.resolution) <= 0:
            raise InputError(f"resolution must be [H, W] > 0, got {self.resolution!r}")
        if len(self.guidance) != 2:
            raise InputError(f"guidance must be [W_SRC, W_FUSE], got {self.guidance!r}")
        if not (isinstance(self.detail_transfer, (int, float)) and math.isfinite(self.detail_transfer)
                and self.detail_transfer >= 0):  # fmt: skip
            raise InputError(
                "detail_transfer: the detail-transfer threshold must be a number >= 0 (0 = off), "
                f"got {self.detail_transfer!r}"
            )
        self.detail_transfer = float(self.detail_transfer)
        u = self.unet
        if u.source_residual:
            ins, outs = u.config.get("in_channels", 4), u.config.get("out_channels", 4)
            if not u.pretrained and ins != 2 * outs:
                raise InputError(
                    "unet.source_residual needs spatial source latents: unet.config."
                    "in_channels must be twice out_channels"
                )
            if self.scheduler.prediction_type != "sample":
                raise InputError(
                    "unet.source_residual predicts the clean sample: set "
                    f"scheduler.prediction_type to 'sample' (got {self.scheduler.prediction_type!r})"
                )
        m = self.mcld
        bad = [r for r in m.regions if r not in REGIONS]
        if bad or not m.regions:
            raise InputError(f"mcld.regions must be a non-empty subset of {list(REGIONS)}")
        if m.tokens_per_region < 1 or m.crop_size < 2:
            raise InputError("mcld.tokens_per_region must be >= 1 and mcld.crop_size >= 2")
        if not 0.0 <= m.drop <= 1.0:
            raise InputError(f"mcld.drop must be a probability in [0, 1], got {m.drop}")
        if m.face_loss_weight <= 0 or m.hand_loss_weight <= 0:
            raise InputError("mcld.face_loss_weight and mcld.hand_loss_weight must be > 0")

    def source_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        se = self.source_encoder
        default = (IMAGENET_MEAN, IMAGENET_STD) if se.kind == "dinov2" else (CLIP_MEAN, CLIP_STD)
        return tuple(se.image_mean or default[0]), tuple(se.image_std or default[1])


# The presets ship inside the package (signgen/configs -> the repository's configs/).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"


def load_model_config(path_or_name: str | Path, overrides: list[str] | None = None):
    """Load ``configs/model/<name>.yaml`` (or a path) into an :class:`FPDMModelConfig`."""
    from signgen.config import apply_overrides

    p = Path(path_or_name)
    if not p.suffix and not p.exists():
        p = CONFIG_DIR / f"{path_or_name}.yaml"
    data = apply_overrides(load_yaml(p), overrides or [])
    return from_dict(FPDMModelConfig, data)
