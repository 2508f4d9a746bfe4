"""Typed configuration of an FPDM model and the factory that builds its components.

A preset (``configs/model/*.yaml``) names, per component, either a ``pretrained`` source
(a local folder or a Hugging Face hub id, always loaded with ``local_files_only=True``;
point ``HF_HOME`` at a cache that holds the weights and set ``HF_HUB_OFFLINE=1``) or
nothing, in which case the component is built with random weights from its inline
``config`` (the architecture). The inline architecture is also what
``build_components(cfg, device="meta")`` uses to build the full-size model without any
weights (shape and parameter-count checks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from signgen.config import from_dict, load_yaml
from signgen.errors import InputError, MissingWeightsError
from signgen.models.preprocess import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

SOURCE_ENCODER_KINDS = ("dinov2", "clip")
VAE_KINDS = ("kl", "patch")
POS_INTERPOLATIONS = ("transformers", "dino")
FUSION_VARIANTS = ("silu", "fpdm")  # = signgen.models.modules.FusionMLP.VARIANTS
FOCAL_REGIONS = ("face", "left_hand", "right_hand")  # = signgen.models.mcld.REGIONS


# The paper's cumulative guidance (W_SRC, W_FUSE): the default of model configs and of
# model folders that predate saved guidance.
PAPER_GUIDANCE = (2.0, 2.0)


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
    """Multi-focal conditioning (DESIGN.md section 6, :mod:`signgen.models.mcld`): focal
    tokens of the source's face and hands through decoupled cross-attention."""

    enabled: bool = False  # False = plain FPDM conditioning
    regions: tuple[str, ...] = ("face", "left_hand", "right_hand")
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
    # Default cumulative guidance (W_SRC, W_FUSE) of renders that give none; saved with the
    # model. The paper's 2, 2.
    guidance: tuple[float, float] = PAPER_GUIDANCE
    # Source detail transfer threshold of renders (signgen.sampling.detail), in [0, 1]
    # intensity units; saved with the model. 0 = off (every paper recipe).
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
        if len(self.resolution) != 2 or min(self.resolution) <= 0:
            raise InputError(f"resolution must be [H, W] > 0, got {self.resolution!r}")
        if len(self.guidance) != 2:
            raise InputError(f"guidance must be [W_SRC, W_FUSE], got {self.guidance!r}")
        from signgen.sampling.detail import check_detail_transfer

        self.detail_transfer = check_detail_transfer(self.detail_transfer, InputError)
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
        bad = [r for r in m.regions if r not in FOCAL_REGIONS]
        if bad or not m.regions:
            raise InputError(f"mcld.regions must be a non-empty subset of {list(FOCAL_REGIONS)}")
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


CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"


def load_model_config(path_or_name: str | Path, overrides: list[str] | None = None):
    """Load ``configs/model/<name>.yaml`` (or a path) into an :class:`FPDMModelConfig`."""
    from signgen.config import apply_overrides

    p = Path(path_or_name)
    if not p.suffix and not p.exists():
        p = CONFIG_DIR / f"{path_or_name}.yaml"
    data = apply_overrides(load_yaml(p), overrides or [])
    return from_dict(FPDMModelConfig, data)


@contextlib.contextmanager
def _init_context(device: str, seed: int) -> Iterator[None]:
    """Seeded random init on CPU, or no allocation at all on the meta device."""
    if device == "meta":
        with torch.device("meta"):
            yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _load(cls: Any, section: PretrainedSection, what: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` strictly offline, with a user-facing error when absent."""
    try:
        return cls.from_pretrained(
            section.pretrained,
            **({"subfolder": section.subfolder} if section.subfolder else {}),
            local_files_only=True,
            **kwargs,
        )
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(
            f"cannot load the {what} from {section.pretrained!r}"
            f"{f' (subfolder {section.subfolder})' if section.subfolder else ''} offline: "
            f"{str(exc).splitlines()[0]}. Give a local folder, or put the weights in the "
            "Hugging Face cache (HF_HOME) beforehand; signgen never downloads."
        ) from None


def build_components(
    cfg: FPDMModelConfig, device: str = "cpu", *, load_pretrained: bool | None = None
) -> dict[str, Any]:
    """Create every FPDM component from ``cfg``.

    ``device="meta"`` builds the architecture without weights (pretrained sources are
    ignored); ``device="cpu"`` loads ``pretrained`` sources (offline) and random-initialises
    the rest with ``cfg.seed``. Returns a dict with keys vae, unet, pose_encoder,
    source_encoder, source_projector, ipf (or None), fusion_mlp (or None), scheduler, and
    focal_adapter (MCLD; only when ``cfg.mcld.enabled``).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModel,
        CLIPVisionModelWithProjection,
        Dinov2Config,
        Dinov2Model,
    )

    from signgen.models.dinov2 import Dinov2ModelDino
    from signgen.models.ipf import IPFModel
    from signgen.models.modules import (
        Combiner,
        FusionMLP,
        PatchAutoencoder,
        PoseEncoder,
        SourceProjector,
    )
    from signgen.sampling.schedulers import make_scheduler

    if device not in ("cpu", "meta"):
        raise ValueError(f"build_components builds on 'cpu' or 'meta', got {device!r}")
    pretrained = (device != "meta") if load_pretrained is None else load_pretrained
    out: dict[str, Any] = {}
    use_fusion = cfg.ipf.enabled

    with _init_context(device, cfg.seed):
        # VAE (frozen)
        if cfg.vae.kind == "patch":
            out["vae"] = PatchAutoencoder(**cfg.vae.config)
        elif pretrained and cfg.vae.pretrained:
            out["vae"] = _load(AutoencoderKL, cfg.vae, "VAE")
        else:
            out["vae"] = AutoencoderKL(**cfg.vae.config)

        # UNet, with the identity class embedding that carries the fusion MLP output.
        class_embed = {"class_embed_type": "identity" if use_fusion else None}
        if pretrained and cfg.unet.pretrained:
            out["unet"] = _load(UNet2DConditionModel, cfg.unet, "UNet", **class_embed)
        else:
            out["unet"] = UNet2DConditionModel(**{**cfg.unet.config, **class_embed})
        if cfg.unet.source_residual and not (pretrained and cfg.unet.pretrained):
            nn.init.zeros_(out["unet"].conv_out.weight)  # starts as the copy of the source
            nn.init.zeros_(out["unet"].conv_out.bias)
        unet_cfg = out["unet"].config
        c0 = unet_cfg.block_out_channels[0]
        time_dim = unet_cfg.time_embedding_dim or 4 * c0

        out["pose_encoder"] = PoseEncoder(
            conditioning_embedding_channels=c0,
            conditioning_channels=cfg.pose_encoder.conditioning_channels,
            block_out_channels=tuple(cfg.pose_encoder.block_out_channels),
            zero_init=cfg.pose_encoder.zero_init,
        )

        # Source encoder (frozen): DINOv2 (paper) or CLIP vision (ablation B1).
        se = cfg.source_encoder
        enc_cls, conf_cls = (
            (Dinov2ModelDino if se.pos_interpolation == "dino" else Dinov2Model, Dinov2Config)
            if se.kind == "dinov2"
            else (CLIPVisionModel, CLIPVisionConfig)
        )
        if pretrained and se.pretrained:
            out["source_encoder"] = _load(enc_cls, se, f"source encoder ({se.kind})")
        else:
            out["source_encoder"] = enc_cls(conf_cls(**se.config))
        ds = int(out["source_encoder"].config.hidden_size)
        out["source_projector"] = SourceProjector(
            in_dim=ds,
            out_dim=int(unet_cfg.cross_attention_dim),
            hidden_dim=cfg.source_projector.hidden_dim,
            dropout=cfg.source_projector.dropout,
        )

        out["ipf"] = None
        out["fusion_mlp"] = None
        if use_fusion:
            ipf_cfg = cfg.ipf
            if pretrained and ipf_cfg.pretrained:
                ipf = IPFModel.from_pretrained(ipf_cfg.pretrained)
            else:
                if pretrained and ipf_cfg.clip.pretrained:
                    vision = _load(CLIPVisionModelWithProjection, ipf_cfg.clip, "IPF CLIP tower")
                else:
                    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**ipf_cfg.clip.config))
                d = int(vision.config.projection_dim)
                comb = Combiner(
                    embed_dim=d,
                    projection_dim=ipf_cfg.combiner.projection_dim,
                    hidden_dim=ipf_cfg.combiner.hidden_dim,
                    dropout=ipf_cfg.combiner.dropout,
                )
                ipf = IPFModel(
                    vision,
                    comb,
                    image_size=ipf_cfg.image_size,
                    mode=ipf_cfg.mode,
                    normalize_embeddings=ipf_cfg.normalize_embeddings,
                )
            out["ipf"] = ipf
            d = ipf.embed_dim
            out["fusion_mlp"] = FusionMLP(
                in_dim=d,
                hidden_dim=cfg.fusion.hidden_dim or d,
                out_dim=time_dim,
                variant=cfg.fusion.variant,
                dropout=cfg.fusion.dropout,
            )

        if cfg.mcld.enabled:  # built last: plain components get the same init either way
            out["focal_adapter"] = build_focal_adapter(cfg, out["unet"], ds, init=device != "meta")

    sch = cfg.scheduler
    out["scheduler"] = make_scheduler(
        sch.name,
        base=(_load_scheduler_config(sch) if pretrained and sch.pretrained else dict(sch.config)),
        prediction_type=sch.prediction_type,
    )
    return out


def build_focal_adapter(cfg: FPDMModelConfig, unet: Any, encoder_dim: int, init: bool = True):
    """The MCLD :class:`~signgen.models.mcld.FocalAdapter` for ``unet`` (random init; the
    focal K/V start as copies of the UNet's own when ``init``)."""
    from signgen.models.mcld import FocalAdapter

    m = cfg.mcld
    adapter = FocalAdapter.for_unet(
        unet,
        encoder_dim=encoder_dim,
        regions=tuple(m.regions),
        tokens_per_region=m.tokens_per_region,
        resampler_dim=m.resampler.dim,
        resampler_depth=m.resampler.depth,
        resampler_heads=m.resampler.heads,
        resampler_dim_head=m.resampler.dim_head,
        resampler_ffn_ratio=m.resampler.ffn_ratio,
        scale=m.scale,
        guidance=m.guidance,
        crop_size=m.crop_size,
        padding=m.padding,
        min_side=m.min_side,
        min_score=m.min_score,
        min_points=m.min_points,
    )
    if init:
        adapter.init_from_unet(unet)
    return adapter


def _load_scheduler_config(section: SchedulerConfig) -> dict[str, Any]:
    from diffusers import DDIMScheduler

    try:
        return dict(
            DDIMScheduler.load_config(
                section.pretrained, subfolder=section.subfolder, local_files_only=True
            )
        )
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(
            f"cannot load the scheduler config from {section.pretrained!r} offline: "
            f"{str(exc).splitlines()[0]}"
        ) from None
