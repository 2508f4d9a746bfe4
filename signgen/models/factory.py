"""Model factories: every FPDM component built from an :class:`FPDMModelConfig`.

``build_components`` loads ``pretrained`` sources strictly offline and random-initialises
the rest from the inline architecture with the config's seed (or builds on the meta device,
without weights); ``build_denoiser`` picks the denoiser a model's components call for (the
spatial-source wrapper when the UNet takes source latents). Nothing here imports the
sampling code: a render pipeline is assembled from these components by
:meth:`signgen.sampling.pipeline.FPDMPipeline.from_config`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from signgen.errors import MissingWeightsError
from signgen.models.config import FPDMModelConfig, PretrainedSection, SchedulerConfig
from signgen.models.schedulers import make_scheduler


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
    focal_adapter (MCLD; only when ``cfg.mcld.enabled``). The components are created in a
    fixed order (the seeded init of each depends on it): MCLD last, so plain components
    get the same weights with and without it.
    """
    from signgen.models.modules import FusionMLP, PoseEncoder, SourceProjector

    if device not in ("cpu", "meta"):
        raise ValueError(f"build_components builds on 'cpu' or 'meta', got {device!r}")
    pretrained = (device != "meta") if load_pretrained is None else load_pretrained
    out: dict[str, Any] = {"ipf": None, "fusion_mlp": None}
    with _init_context(device, cfg.seed):
        out["vae"] = _build_vae(cfg, pretrained)
        out["unet"] = unet = _build_unet(cfg, pretrained)
        c0 = unet.config.block_out_channels[0]
        out["pose_encoder"] = PoseEncoder(
            conditioning_embedding_channels=c0,
            conditioning_channels=cfg.pose_encoder.conditioning_channels,
            block_out_channels=tuple(cfg.pose_encoder.block_out_channels),
            zero_init=cfg.pose_encoder.zero_init,
        )
        out["source_encoder"] = _build_source_encoder(cfg, pretrained)
        ds = int(out["source_encoder"].config.hidden_size)
        out["source_projector"] = SourceProjector(
            in_dim=ds,
            out_dim=int(unet.config.cross_attention_dim),
            hidden_dim=cfg.source_projector.hidden_dim,
            dropout=cfg.source_projector.dropout,
        )
        if cfg.ipf.enabled:
            out["ipf"] = ipf = _build_ipf(cfg, pretrained)
            d = ipf.embed_dim
            out["fusion_mlp"] = FusionMLP(
                in_dim=d,
                hidden_dim=cfg.fusion.hidden_dim or d,
                out_dim=unet.config.time_embedding_dim or 4 * c0,
                variant=cfg.fusion.variant,
                dropout=cfg.fusion.dropout,
            )
        if cfg.mcld.enabled:
            out["focal_adapter"] = build_focal_adapter(cfg, unet, ds, init=device != "meta")
    sch = cfg.scheduler
    out["scheduler"] = make_scheduler(
        sch.name,
        base=(_load_scheduler_config(sch) if pretrained and sch.pretrained else dict(sch.config)),
        prediction_type=sch.prediction_type,
    )
    return out


def _build_vae(cfg: FPDMModelConfig, pretrained: bool) -> nn.Module:
    """The frozen autoencoder: Stable Diffusion's AutoencoderKL or the patch transform."""
    from diffusers import AutoencoderKL

    from signgen.models.modules import PatchAutoencoder

    if cfg.vae.kind == "patch":
        return PatchAutoencoder(**cfg.vae.config)
    if pretrained and cfg.vae.pretrained:
        return _load(AutoencoderKL, cfg.vae, "VAE")
    return AutoencoderKL(**cfg.vae.config)


def _build_unet(cfg: FPDMModelConfig, pretrained: bool) -> nn.Module:
    """The UNet, with the identity class embedding that carries the fusion MLP output."""
    from diffusers import UNet2DConditionModel

    class_embed = {"class_embed_type": "identity" if cfg.ipf.enabled else None}
    if pretrained and cfg.unet.pretrained:
        return _load(UNet2DConditionModel, cfg.unet, "UNet", **class_embed)
    unet = UNet2DConditionModel(**{**cfg.unet.config, **class_embed})
    if cfg.unet.source_residual:  # a fresh source-residual model starts as the source's copy
        nn.init.zeros_(unet.conv_out.weight)
        nn.init.zeros_(unet.conv_out.bias)
    return unet


def _build_source_encoder(cfg: FPDMModelConfig, pretrained: bool) -> nn.Module:
    """The frozen source encoder: DINOv2 (the paper's) or CLIP vision (ablation B1)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model

    from signgen.models.dinov2 import Dinov2ModelDino

    se = cfg.source_encoder
    dinov2 = Dinov2ModelDino if se.pos_interpolation == "dino" else Dinov2Model
    enc_cls, conf_cls = (
        (dinov2, Dinov2Config) if se.kind == "dinov2" else (CLIPVisionModel, CLIPVisionConfig)
    )
    if pretrained and se.pretrained:
        return _load(enc_cls, se, f"source encoder ({se.kind})")
    return enc_cls(conf_cls(**se.config))


def _build_ipf(cfg: FPDMModelConfig, pretrained: bool) -> nn.Module:
    """Stage 1 (frozen here): a trained IPF folder, or a CLIP tower + a fresh Combiner."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from signgen.models.ipf import IPFModel
    from signgen.models.modules import Combiner

    ipf_cfg = cfg.ipf
    if pretrained and ipf_cfg.pretrained:
        ipf = IPFModel.from_pretrained(ipf_cfg.pretrained)
        ipf.check_resize_mode(cfg.resize_mode, ipf_cfg.pretrained)
        return ipf
    if pretrained and ipf_cfg.clip.pretrained:
        vision = _load(CLIPVisionModelWithProjection, ipf_cfg.clip, "IPF CLIP tower")
    else:
        vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**ipf_cfg.clip.config))
    comb = Combiner(
        embed_dim=int(vision.config.projection_dim),
        projection_dim=ipf_cfg.combiner.projection_dim,
        hidden_dim=ipf_cfg.combiner.hidden_dim,
        dropout=ipf_cfg.combiner.dropout,
    )
    return IPFModel(
        vision,
        comb,
        image_size=ipf_cfg.image_size,
        mode=ipf_cfg.mode,
        normalize_embeddings=ipf_cfg.normalize_embeddings,
        resize_mode=cfg.resize_mode,
    )


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


def build_denoiser(
    unet: Any,
    pose_encoder: Any,
    source_projector: Any,
    fusion_mlp: Any | None = None,
    focal_adapter: Any | None = None,
    *,
    source_residual: bool = False,
):
    """The denoiser these components call for: FPDM's
    (:class:`~signgen.models.fpdm.FPDMDenoiser`), or, when the UNet also takes the source
    frame's latents (in_channels = 2 x out_channels; the demo model),
    :class:`~signgen.models.spatial.SpatialSourceDenoiser` with ``source_residual``."""
    from signgen.models.fpdm import FPDMDenoiser
    from signgen.models.spatial import SpatialSourceDenoiser

    parts = (unet, pose_encoder, source_projector, fusion_mlp, focal_adapter)
    if unet.config.in_channels != unet.config.out_channels:
        return SpatialSourceDenoiser(*parts, source_residual=source_residual)
    if source_residual:
        raise ValueError(
            "source_residual needs spatial source latents (a UNet with in_channels = "
            "2 * out_channels)"
        )
    return FPDMDenoiser(*parts)
