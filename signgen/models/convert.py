"""Convert the FPDM authors' PyTorch-Lightning checkpoints into a signgen model.

The published FPDM code (Lee et al., "Fusion Embedding for Pose-Guided Person Image
Synthesis with Diffusion Model") trains two Lightning modules: stage 1 ``FusionModel``
(CLIP vision tower + Combiner) and stage 2 ``FPDM`` (Stable Diffusion VAE + UNet, frozen
DINOv2, pose encoder, source projector, and a copy of the frozen stage-1 model). Their
``state_dict`` keys, by prefix, and where each goes here (see docs/reproducing.md):

===================================  ==============================================
stage 2 key prefix                   signgen component
===================================  ==============================================
``vae.``                             ``vae`` (diffusers AutoencoderKL, same keys)
``unet.class_embedding.``            ``fusion_mlp`` (their class-embedding MLP)
``unet.``                            ``unet`` (UNet2DConditionModel, same keys)
``sd_model.pose_t_proj.``            ``pose_encoder`` (ControlNet conditioning embedding)
``sd_model.srcimage_proj_model.``    ``source_projector`` (same Sequential indices)
``src_image_encoder.``               ``source_encoder`` (DINOv2; attention keys renamed
                                     to the installed transformers' names)
``fusion_model.img_encoder.``        ``ipf`` CLIP vision tower (with projection)
``fusion_model.combiner.``           ``ipf`` Combiner (layers renamed)
``sd_model.unet.``                   dropped: the same module as ``unet.``
``fusion_model.pose_encoder.``       dropped: the same module as ``img_encoder.``
===================================  ==============================================

Stage 1 checkpoints hold ``img_encoder.``, ``combiner.`` and the ``pose_encoder.`` alias.

The conversion is two steps. :func:`convert_state_dicts` is pure: it maps the keys and
infers every architecture from the tensor shapes (miniature and full-size checkpoints
alike), giving plain ``(config, state_dict)`` pairs. :func:`build_pipeline` then builds the
signgen components from them and :func:`convert_checkpoint` saves the pipeline folder.

Two things cannot be read from tensor shapes: the number of attention heads (all of
SD 2.1's UNet, DINOv2 and OpenAI CLIP use 64-dimensional heads: ``head_dim``) and the
normalisation group count (32 in every Stable Diffusion model). The model resolution, the
source-encoder input size, the guidance weight and the step count come from the
checkpoint's hyper-parameters when present; the noise schedule is Stable Diffusion 2.1's,
which FPDM fine-tunes. The folder keeps the published code's preprocessing (``squash``:
every input resized with PIL's bicubic filter) and sampler (DDPM) as its defaults.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from signgen.errors import FormatError, InputError
from signgen.models.lightning_ckpt import load_lightning_checkpoint, plain_hyperparameters

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

HEAD_DIM = 64  # attention head width of SD 2.x UNets, DINOv2 and OpenAI CLIP
NORM_GROUPS = 32  # GroupNorm groups of every Stable Diffusion UNet and VAE

# Stage-2 prefixes -> component (order matters: the class embedding before the UNet).
STAGE2_PREFIXES: tuple[tuple[str, str], ...] = (
    ("unet.class_embedding.", "fusion_mlp"),
    ("unet.", "unet"),
    ("vae.", "vae"),
    ("sd_model.pose_t_proj.", "pose_encoder"),
    ("sd_model.srcimage_proj_model.", "source_projector"),
    ("src_image_encoder.", "source_encoder"),
    ("fusion_model.img_encoder.", "ipf_vision"),
    ("fusion_model.combiner.", "combiner"),
)
STAGE1_PREFIXES: tuple[tuple[str, str], ...] = (
    ("img_encoder.", "ipf_vision"),
    ("combiner.", "combiner"),
)
# Aliases of modules stored twice (one module reachable by two attribute paths), with the
# prefix of the copy that is kept.
STAGE2_ALIASES = {
    "sd_model.unet.": "unet.",
    "fusion_model.pose_encoder.": "fusion_model.img_encoder.",
}
STAGE1_ALIASES = {"pose_encoder.": "img_encoder."}

# Their Combiner's layer names -> signgen's Combiner.
COMBINER_KEYS = {
    "kpt_projection_layer.": "pose_projection.",
    "image_projection_layer.": "source_projection.",
    "combiner_layer.": "combiner_layer.",
    "output_layer.": "output_layer.",
    "dynamic_scalar.": "gate.",
}
# DINOv2 attention names of transformers 4.x -> 5.x (renamed in transformers 5).
DINOV2_KEYS = {
    ".attention.attention.query.": ".attention.q_proj.",
    ".attention.attention.key.": ".attention.k_proj.",
    ".attention.attention.value.": ".attention.v_proj.",
    ".attention.output.dense.": ".attention.o_proj.",
}
# Stable Diffusion 2.1's noise schedule (its scheduler_config.json), v-prediction.
SD21_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
}


@dataclass
class Converted:
    """Plain result of the key mapping: per component (config kwargs, state dict)."""

    components: dict[str, tuple[dict[str, Any], StateDict]]
    resolution: tuple[int, int] = (512, 512)  # (H, W)
    source_image_size: tuple[int, int] = (512, 512)  # (H, W)
    guidance: tuple[float, float] = (2.0, 2.0)
    steps: int = 20  # their num_inference_steps
    hyperparameters: dict[str, Any] = field(default_factory=dict)


# ---- key mapping -------------------------------------------------------------------------
def split_by_prefix(
    state: Mapping[str, torch.Tensor],
    prefixes: tuple[tuple[str, str], ...],
    aliases: Mapping[str, str],
    what: str,
) -> dict[str, StateDict]:
    """Group ``state`` into components by key prefix (prefix stripped). Alias copies are
    dropped after checking they hold the same tensors as the kept copy; any key that
    matches no prefix is an error (the checkpoint is not the model we think it is)."""
    out: dict[str, StateDict] = {}
    unknown = []
    for key, value in state.items():
        alias = next((a for a in aliases if key.startswith(a)), None)
        if alias is not None:
            kept = aliases[alias] + key[len(alias) :]
            if kept not in state or state[kept].shape != value.shape:
                raise FormatError(f"{what}: {key} has no twin {kept}")
            continue
        for prefix, comp in prefixes:
            if key.startswith(prefix):
                out.setdefault(comp, {})[key[len(prefix) :]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise FormatError(
            f"{what}: not an FPDM checkpoint: {len(unknown)} unexpected key(s), e.g. {unknown[0]!r}"
        )
    return out


def rename_prefix(state: StateDict, table: Mapping[str, str]) -> StateDict:
    """Keys starting with a ``table`` key get that prefix replaced (first match)."""
    out = {}
    for key, value in state.items():
        old = next((o for o in table if key.startswith(o)), None)
        out[key if old is None else table[old] + key[len(old) :]] = value
    return out


def rename_infix(state: StateDict, table: Mapping[str, str]) -> StateDict:
    """Keys containing a ``table`` key get that part replaced (first match)."""
    out = {}
    for key, value in state.items():
        old = next((o for o in table if o in key), None)
        out[key if old is None else key.replace(old, table[old], 1)] = value
    return out


def dinov2_key_names(state: StateDict, modern: bool) -> StateDict:
    """DINOv2 attention keys in the naming of transformers >= 5 (``modern``) or 4.x."""
    return rename_infix(state, DINOV2_KEYS if modern else {v: k for k, v in DINOV2_KEYS.items()})


def _count(state: Mapping[str, Any], pattern: str) -> int:
    """Number of distinct integers N in keys matching ``pattern`` (with ``(\\d+)``)."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def _heads(width: int, what: str, head_dim: int) -> int:
    if width % head_dim:
        raise FormatError(
            f"{what} width {width} is not a multiple of the head size {head_dim}: "
            "give the checkpoint's head size with --head-dim"
        )
    return width // head_dim


# ---- architectures from shapes -----------------------------------------------------------
def _mid_block_type(sd: StateDict) -> str | None:
    if "mid_block.attentions.0.proj_in.weight" in sd:
        return "UNetMidBlock2DCrossAttn"
    return "UNetMidBlock2D" if "mid_block.resnets.0.conv1.weight" in sd else None


def infer_unet_config(sd: StateDict, head_dim: int = HEAD_DIM) -> dict[str, Any]:
    """UNet2DConditionModel kwargs of a Stable Diffusion UNet state dict (no class embedding)."""
    n_down = _count(sd, r"down_blocks\.(\d+)\.")
    widths = [int(sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(n_down)]
    down = [
        "CrossAttnDownBlock2D"
        if f"down_blocks.{i}.attentions.0.proj_in.weight" in sd
        else "DownBlock2D"
        for i in range(n_down)
    ]
    up = [
        "CrossAttnUpBlock2D" if f"up_blocks.{i}.attentions.0.proj_in.weight" in sd else "UpBlock2D"
        for i in range(_count(sd, r"up_blocks\.(\d+)\."))
    ]
    attn = next(k for k in sd if k.endswith("transformer_blocks.0.attn2.to_k.weight"))
    proj_in = next(k for k in sd if k.endswith("attentions.0.proj_in.weight"))
    time_dim = int(sd["time_embedding.linear_1.weight"].shape[0])
    conv_in = sd["conv_in.weight"]
    return {
        "sample_size": 64,
        "in_channels": int(conv_in.shape[1]),
        "out_channels": int(sd["conv_out.weight"].shape[0]),
        "down_block_types": down,
        "up_block_types": up,
        "mid_block_type": _mid_block_type(sd),
        "block_out_channels": widths,
        "layers_per_block": _count(sd, r"down_blocks\.0\.resnets\.(\d+)\."),
        "transformer_layers_per_block": _count(
            sd, r"down_blocks\.0\.attentions\.0\.transformer_blocks\.(\d+)\."
        )
        or 1,
        "attention_head_dim": [_heads(w, "UNet block", head_dim) for w in widths],
        "cross_attention_dim": int(sd[attn].shape[1]),
        "use_linear_projection": sd[proj_in].ndim == 2,
        "upcast_attention": True,  # SD 2.1; only changes half-precision rounding
        "norm_num_groups": NORM_GROUPS,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "conv_in_kernel": int(conv_in.shape[-1]),
        "conv_out_kernel": int(sd["conv_out.weight"].shape[-1]),
        "time_embedding_dim": None if time_dim == 4 * widths[0] else time_dim,
    }


def infer_vae_config(sd: StateDict) -> dict[str, Any]:
    """AutoencoderKL kwargs of a Stable Diffusion VAE state dict."""
    n = _count(sd, r"encoder\.down_blocks\.(\d+)\.")
    widths = [int(sd[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(n)]
    return {
        "in_channels": int(sd["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(sd["decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": widths,
        "layers_per_block": _count(sd, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."),
        "latent_channels": int(sd["quant_conv.weight"].shape[0]) // 2,
        "norm_num_groups": NORM_GROUPS,
        "scaling_factor": 0.18215,  # SD 2.1's VAE
    }


def infer_pose_encoder_config(sd: StateDict) -> dict[str, Any]:
    """PoseEncoder kwargs of a ControlNetConditioningEmbedding state dict (conv_in, blocks.N
    = per stage a conv then a stride-2 conv, conv_out)."""
    n_blocks = _count(sd, r"blocks\.(\d+)\.")
    widths = [int(sd["conv_in.weight"].shape[0])]
    widths += [int(sd[f"blocks.{i}.weight"].shape[0]) for i in range(1, n_blocks, 2)]
    return {
        "conditioning_embedding_channels": int(sd["conv_out.weight"].shape[0]),
        "conditioning_channels": int(sd["conv_in.weight"].shape[1]),
        "block_out_channels": widths,
    }


def infer_source_projector_config(sd: StateDict, dropout: float = 0.0) -> dict[str, Any]:
    """SourceProjector kwargs of their SrcImage_ProjModel (net.0 Linear, net.3 LayerNorm,
    net.4 Linear)."""
    hidden, d_in = (int(v) for v in sd["net.0.weight"].shape)
    return {"in_dim": d_in, "hidden_dim": hidden, "out_dim": int(sd["net.4.weight"].shape[0]),
            "dropout": dropout}  # fmt: skip


def infer_fusion_mlp_config(sd: StateDict, dropout: float = 0.2) -> dict[str, Any]:
    """FusionMLP kwargs of their class-embedding MLP: Linear-GELU-Dropout-Linear-Dropout
    (``net.0``, ``net.3``), fed zeros as the null condition."""
    hidden, d_in = (int(v) for v in sd["net.0.weight"].shape)
    return {"in_dim": d_in, "hidden_dim": hidden, "out_dim": int(sd["net.3.weight"].shape[0]),
            "variant": "fpdm", "dropout": dropout}  # fmt: skip


def infer_combiner_config(sd: StateDict) -> dict[str, Any]:
    """Combiner kwargs (signgen key names)."""
    return {
        "embed_dim": int(sd["output_layer.weight"].shape[0]),
        "projection_dim": int(sd["source_projection.weight"].shape[0]),
        "hidden_dim": int(sd["combiner_layer.weight"].shape[0]),
        "dropout": 0.5,
    }


def infer_dinov2_config(sd: StateDict, head_dim: int = HEAD_DIM) -> dict[str, Any]:
    """Dinov2Config kwargs of a DINOv2 state dict (either key naming)."""
    hidden = int(sd["embeddings.cls_token"].shape[-1])
    patch = int(sd["embeddings.patch_embeddings.projection.weight"].shape[-1])
    side = math.isqrt(int(sd["embeddings.position_embeddings"].shape[1]) - 1)
    swiglu = "encoder.layer.0.mlp.weights_in.weight" in sd  # ViT-g; its hidden width is rounded
    inter = 4 * hidden if swiglu else int(sd["encoder.layer.0.mlp.fc1.weight"].shape[0])
    if inter % hidden:
        raise FormatError(f"DINOv2 MLP width {inter} is not a multiple of its width {hidden}")
    return {
        "hidden_size": hidden,
        "num_hidden_layers": _count(sd, r"encoder\.layer\.(\d+)\."),
        "num_attention_heads": _heads(hidden, "DINOv2", head_dim),
        "mlp_ratio": inter // hidden,
        "patch_size": patch,
        "image_size": side * patch,
        "num_channels": int(sd["embeddings.patch_embeddings.projection.weight"].shape[1]),
        "use_swiglu_ffn": swiglu,
        "layerscale_value": 1.0,
    }


def infer_clip_vision_config(sd: StateDict, head_dim: int = HEAD_DIM) -> dict[str, Any]:
    """CLIPVisionConfig kwargs of a CLIPVisionModelWithProjection state dict."""
    hidden = int(sd["vision_model.embeddings.class_embedding"].shape[0])
    patch = int(sd["vision_model.embeddings.patch_embedding.weight"].shape[-1])
    n_pos = int(sd["vision_model.embeddings.position_embedding.weight"].shape[0])
    return {
        "hidden_size": hidden,
        "intermediate_size": int(sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        "num_hidden_layers": _count(sd, r"vision_model\.encoder\.layers\.(\d+)\."),
        "num_attention_heads": _heads(hidden, "CLIP", head_dim),
        "patch_size": patch,
        "image_size": math.isqrt(n_pos - 1) * patch,
        "projection_dim": int(sd["visual_projection.weight"].shape[0]),
        "num_channels": int(sd["vision_model.embeddings.patch_embedding.weight"].shape[1]),
        "hidden_act": "quick_gelu",  # OpenAI CLIP
    }


def _hw(value: Any, default: tuple[int, int]) -> tuple[int, int]:
    """Their sizes are PIL (W, H) pairs; ours (H, W)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[1]), int(value[0])
    return default


def convert_state_dicts(
    stage2: Mapping[str, torch.Tensor],
    stage1: Mapping[str, torch.Tensor] | None = None,
    hparams: Mapping[str, Any] | None = None,
    *,
    modern_dinov2_keys: bool = True,
    head_dim: int = HEAD_DIM,
    what: str = "checkpoint",
) -> Converted:
    """Authors' state dicts (+ stage-2 hyper-parameters) -> per-component configs and state
    dicts in signgen's key layout. ``stage1`` (optional) supplies the IPF instead of the
    copy inside ``stage2``. ``modern_dinov2_keys``: the installed transformers names DINOv2's
    attention ``q_proj``/``k_proj``/``v_proj``/``o_proj`` (5.x) rather than 4.x's names."""
    hp = dict(hparams or {})
    parts = split_by_prefix(stage2, STAGE2_PREFIXES, STAGE2_ALIASES, what)
    missing = [c for c in ("unet", "vae", "pose_encoder", "source_projector", "source_encoder")
               if c not in parts]  # fmt: skip
    if missing:
        raise FormatError(
            f"{what}: not an FPDM stage-2 checkpoint: no {', '.join(missing)} weights"
        )
    if stage1 is not None:
        ipf = split_by_prefix(stage1, STAGE1_PREFIXES, STAGE1_ALIASES, "stage-1 checkpoint")
        if set(ipf) != {"ipf_vision", "combiner"}:
            raise FormatError(
                "stage-1 checkpoint: not an FPDM FusionModel (needs img_encoder and combiner)"
            )
        for comp in ("ipf_vision", "combiner"):
            if comp in parts and any(
                not torch.equal(parts[comp][k], v) for k, v in ipf[comp].items() if k in parts[comp]
            ):
                logger.warning("the stage-1 checkpoint's %s differs from the copy in the stage-2 "
                               "checkpoint; using the stage-1 weights", comp)  # fmt: skip
        parts.update(ipf)
    has_fusion = "fusion_mlp" in parts
    if has_fusion and not {"ipf_vision", "combiner"} <= set(parts):
        raise FormatError(f"{what}: the UNet takes a fusion embedding but the checkpoint has no "
                          "fusion model: give the stage-1 checkpoint with --ipf")  # fmt: skip

    if "embeddings.cls_token" not in parts["source_encoder"]:
        raise FormatError(
            f"{what}: the source encoder is not DINOv2 (a CLIP source encoder, ablation B1, "
            "is not supported by this converter)"
        )
    try:
        comps = _infer_components(parts, has_fusion, hp, modern_dinov2_keys, head_dim)
    except (KeyError, StopIteration) as exc:
        raise FormatError(f"{what}: not a complete FPDM checkpoint (no tensor {exc})") from None
    g = float(hp.get("guidance_scale", 2.0))
    return Converted(
        comps,
        resolution=_hw(hp.get("model_img_size"), (512, 512)),
        source_image_size=_hw(hp.get("src_encoder_size"), (512, 512)),
        guidance=(g, g),
        steps=int(hp.get("num_inference_steps", 20)),
        hyperparameters=hp,
    )


def _infer_components(
    parts: dict[str, StateDict],
    has_fusion: bool,
    hp: Mapping[str, Any],
    modern_dinov2_keys: bool,
    head_dim: int,
) -> dict[str, tuple[dict[str, Any], StateDict]]:
    """Per component: (config inferred from shapes, state dict in signgen's key names)."""
    comps: dict[str, tuple[dict[str, Any], StateDict]] = {}
    comps["unet"] = (infer_unet_config(parts["unet"], head_dim), parts["unet"])
    comps["vae"] = (infer_vae_config(parts["vae"]), parts["vae"])
    pose = parts["pose_encoder"]
    comps["pose_encoder"] = (
        infer_pose_encoder_config(pose),
        {f"embedding.{k}": v for k, v in pose.items()},
    )
    proj = parts["source_projector"]
    comps["source_projector"] = (
        infer_source_projector_config(proj, float(hp.get("proj_drop_rate", 0.0))),
        proj,
    )
    dino = dinov2_key_names(parts["source_encoder"], modern_dinov2_keys)
    comps["source_encoder"] = (infer_dinov2_config(dino, head_dim), dino)
    if has_fusion:
        mlp = parts["fusion_mlp"]
        comps["fusion_mlp"] = (infer_fusion_mlp_config(mlp), mlp)
        comps["ipf_vision"] = (
            infer_clip_vision_config(parts["ipf_vision"], head_dim),
            parts["ipf_vision"],
        )
        comb = rename_prefix(parts["combiner"], COMBINER_KEYS)
        comps["combiner"] = (infer_combiner_config(comb), comb)
    return comps


# ---- build and save ------------------------------------------------------------------------
def _installed_dinov2_is_modern() -> bool:
    from transformers import Dinov2Config, Dinov2Model

    with torch.device("meta"):
        m = Dinov2Model(Dinov2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=1))
    return any(".attention.q_proj." in k for k in m.state_dict())


def _load(module: torch.nn.Module, sd: StateDict, name: str) -> torch.nn.Module:
    # assign=True: the module takes the (memory-mapped) checkpoint tensors, no second copy.
    result = module.load_state_dict(sd, strict=False, assign=True)
    # Non-persistent buffers (position ids) are not in checkpoints; everything else must be.
    if result.unexpected_keys or result.missing_keys:
        raise FormatError(
            f"{name}: weights do not fit the inferred architecture (missing "
            f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    return module


def build_pipeline(conv: Converted):
    """Components of ``conv`` -> an FPDMPipeline with the published code's preprocessing
    (squash: PIL bicubic to each network's size) and sampler (DDPM, the checkpoint's
    guidance and step count)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config

    from signgen.models.dinov2 import Dinov2ModelDino
    from signgen.models.ipf import IPFModel
    from signgen.models.modules import Combiner, FusionMLP, PoseEncoder, SourceProjector
    from signgen.models.preprocess import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
    from signgen.models.processor import FPDMImageProcessor
    from signgen.models.schedulers import make_scheduler
    from signgen.sampling.pipeline import FPDMPipeline

    c = conv.components
    has_fusion = "fusion_mlp" in c
    unet_cfg = {**c["unet"][0], "class_embed_type": "identity" if has_fusion else None}
    comps: dict[str, Any] = {
        "unet": _load(UNet2DConditionModel(**unet_cfg), c["unet"][1], "UNet"),
        "vae": _load(AutoencoderKL(**c["vae"][0]), c["vae"][1], "VAE"),
        "pose_encoder": _load(
            PoseEncoder(**c["pose_encoder"][0]), c["pose_encoder"][1], "pose encoder"
        ),
        "source_projector": _load(
            SourceProjector(**c["source_projector"][0]),
            c["source_projector"][1],
            "source projector",
        ),
        "source_encoder": _load(
            Dinov2ModelDino(Dinov2Config(**c["source_encoder"][0])),
            c["source_encoder"][1],
            "DINOv2 source encoder",
        ),
        "scheduler": make_scheduler("ddpm", SD21_SCHEDULE),
    }
    if has_fusion:
        vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**c["ipf_vision"][0]))
        combiner = Combiner(**c["combiner"][0])
        comps["ipf"] = IPFModel(
            _load(vision, c["ipf_vision"][1], "CLIP vision tower"),
            _load(combiner, c["combiner"][1], "Combiner"),
            # The authors squash source and pose to 224 x 224 = CLIP ViT-L/14's input size.
            image_size=(vision.config.image_size,) * 2, mean=CLIP_MEAN, std=CLIP_STD, mode="fusion",
            normalize_embeddings=False,  # their Combiner takes CLIP's image_embeds as they are
            resize_mode="squash",
        )  # fmt: skip
        comps["fusion_mlp"] = _load(
            FusionMLP(**c["fusion_mlp"][0]), c["fusion_mlp"][1], "fusion MLP"
        )
    processor = FPDMImageProcessor(
        resolution=conv.resolution,
        resize_mode="squash",  # Image.resize(size, BICUBIC) of every input, as their code
        source_size=conv.source_image_size,
        source_mean=IMAGENET_MEAN,
        source_std=IMAGENET_STD,
    )
    pipe = FPDMPipeline(
        **comps, image_processor=processor, guidance=conv.guidance, steps=conv.steps
    )
    return pipe.eval()


def convert_checkpoint(
    ckpt: str | Path,
    out_dir: str | Path,
    *,
    ipf: str | Path | None = None,
    head_dim: int = HEAD_DIM,
) -> Path:
    """``signgen convert fpdm-lightning``: read, map, build and save; returns the folder."""
    if head_dim <= 0:
        raise InputError(f"--head-dim must be positive, got {head_dim}")
    c2 = load_lightning_checkpoint(ckpt)
    c1 = load_lightning_checkpoint(ipf) if ipf is not None else None
    for path, c in ((ckpt, c2), (ipf, c1)):
        if c is not None and not isinstance(c.get("state_dict"), Mapping):
            raise FormatError(f"{path}: not a Lightning checkpoint (no state_dict)")
    conv = convert_state_dicts(
        c2["state_dict"],
        None if c1 is None else c1["state_dict"],
        plain_hyperparameters(c2),
        modern_dinov2_keys=_installed_dinov2_is_modern(),
        head_dim=head_dim,
        what=str(ckpt),
    )
    return build_pipeline(conv).save_pretrained(out_dir)
