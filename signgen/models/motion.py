"""Temporal FPDM: AnimateDiff's motion module on the per-frame FPDM UNet, not a fork.

The motion module is diffusers' :class:`~diffusers.MotionAdapter` (Guo et al., "AnimateDiff:
Animate Your Personalized Text-to-Image Diffusion Models without Specific Tuning", ICLR
2024): one ``AnimateDiffTransformer3D`` (temporal self-attention across the frames of a
window, sinusoidal frame positions) after each resnet/attention pair of every down, mid and
up block. It is placed on the plain ``UNet2DConditionModel`` of
:class:`~signgen.models.fpdm.FPDMDenoiser` by forward hooks, at exactly the places where
diffusers' ``UNetMotionModel`` calls it (a test checks the two agree), so that

* the UNet keeps its class, its weights and its state-dict keys: a per-frame model folder
  loads unchanged, and the motion module is a folder of its own (``motion_module/``:
  ``config.json`` + ``diffusion_pytorch_model.safetensors``, a standard ``MotionAdapter``;
  AnimateDiff's published adapters load into it for UNets of the same block layout);
* FPDM's own extensions keep working: the fusion embedding through the identity class
  embedding is per *frame* (it depends on the frame's pose), the pose features enter after
  ``conv_in`` through the denoiser's hook, spatial source latents are extra input channels,
  and MCLD's decoupled cross-attention processors stay on the UNet's attention layers. The
  motion modules are not submodules of the UNet, so ``unet.attn_processors`` and
  ``set_attn_processor`` (which MCLD's ``install`` uses) never see them.

Why not ``UNetMotionModel.from_unet2d``: its forward takes one timestep and one time
embedding per *clip* (``emb.repeat_interleave(num_frames)``), has no class embedding at all
(FPDM's fusion MLP output would be dropped), rebuilds the UNet under another class with
its own config (the per-frame folder would no longer load as a ``UNet2DConditionModel``),
and replaces IP-Adapter processors only, not MCLD's.

Batch layout. The frames of a window share the batch axis: a batch of B windows of F
frames is ``(B*F, C, h, w)``, frame f of window b at row ``b*F + f`` (window-major, what
``AnimateDiffTransformer3D`` reshapes to ``(B, C, F, h, w)``). Cumulative guidance stacks
its branches on the same axis, branch-major: ``[uncond (B*F); src (B*F); full (B*F)]`` is
``(nb*B)`` windows of F frames, so the layout holds for the guidance call unchanged. Every
per-frame condition (pose, fusion embedding, timestep, drop masks) follows the same order.

An untrained module changes nothing: each temporal transformer's output projection is
zero-initialised (AnimateDiff's ``zero_initialize``), so its residual block returns its
input exactly and the temporal denoiser returns the per-frame denoiser's prediction bit for
bit (tested).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import MotionAdapter, UNet2DConditionModel
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

from signgen.errors import FormatError, MissingWeightsError
from signgen.models.fpdm import Conditions, FPDMDenoiser
from signgen.models.motion_config import MotionModuleConfig

__all__ = [
    "MOTION_FOLDER",
    "MotionHooks",
    "MotionModuleConfig",
    "TemporalDenoiser",
    "build_motion_module",
    "load_motion_module",
    "render_defaults",
    "save_motion_module",
    "set_render_defaults",
]

MOTION_FOLDER = "motion_module"  # sub-folder of a model folder holding the motion module
# Private key of the motion module's config.json holding its render defaults (window,
# overlap, taper): diffusers keeps "_" keys through save/load and passes none to __init__.
RENDER_DEFAULTS = "_signgen_render"
DEFAULT_TAPER = "linear"


def _layers_per_block(unet: UNet2DConditionModel) -> tuple[int, ...]:
    lpb = unet.config.layers_per_block
    n = len(unet.config.down_block_types)
    return (int(lpb),) * n if isinstance(lpb, int) else tuple(int(v) for v in lpb)


def build_motion_module(
    unet: UNet2DConditionModel, cfg: MotionModuleConfig | None = None
) -> MotionAdapter:
    """A new motion module shaped for ``unet``, output projections zero-initialised."""
    cfg = cfg or MotionModuleConfig()
    widths = tuple(int(c) for c in unet.config.block_out_channels)
    groups = int(cfg.norm_num_groups or unet.config.norm_num_groups)
    bad = [c for c in widths if c % groups or c % cfg.num_attention_heads]
    if bad:
        raise ValueError(
            f"motion module: UNet block widths {widths} must be divisible by "
            f"norm_num_groups={groups} and num_attention_heads={cfg.num_attention_heads}"
        )
    adapter = MotionAdapter(
        block_out_channels=widths,
        motion_layers_per_block=_layers_per_block(unet),
        motion_transformer_layers_per_block=cfg.transformer_layers,
        motion_mid_block_layers_per_block=_mid_attentions(unet) if cfg.mid_block else 1,
        motion_transformer_layers_per_mid_block=cfg.transformer_layers,
        motion_num_attention_heads=cfg.num_attention_heads,
        motion_norm_num_groups=groups,
        motion_max_seq_length=cfg.max_frames,
        use_motion_mid_block=cfg.mid_block,
    )
    return zero_init_motion_module(adapter)


def zero_init_motion_module(adapter: MotionAdapter) -> MotionAdapter:
    """Zero every temporal transformer's ``proj_out`` (AnimateDiff's ``zero_initialize``):
    each motion layer is then an exact identity (a residual block adding 0)."""
    for m in _transformers(adapter):
        nn.init.zeros_(m.proj_out.weight)
        nn.init.zeros_(m.proj_out.bias)
    return adapter


def _transformers(adapter: MotionAdapter) -> list[AnimateDiffTransformer3D]:
    return [m for m in adapter.modules() if isinstance(m, AnimateDiffTransformer3D)]


def _mid_attentions(unet: UNet2DConditionModel) -> int:
    mid = unet.mid_block
    attns = getattr(mid, "attentions", None) if mid is not None else None
    if not attns or any(a is None for a in attns):
        raise ValueError(
            "motion module: the UNet's mid block has no attention layers to follow "
            "(set mid_block: false)"
        )
    return len(attns)


def _hosts(block: nn.Module) -> list[nn.Module]:
    """The modules of a UNet block after which AnimateDiff puts a motion layer: each
    attention of a cross-attention block, each resnet of a plain one (as
    ``UNetMotionModel``'s ``CrossAttnDownBlockMotion`` / ``DownBlockMotion`` do)."""
    attns = getattr(block, "attentions", None)
    if attns is not None and len(attns) and all(a is not None for a in attns):
        return list(attns)
    return list(block.resnets)


def motion_sites(
    unet: UNet2DConditionModel, adapter: MotionAdapter
) -> list[tuple[nn.Module, AnimateDiffTransformer3D]]:
    """(UNet module, motion layer applied to its output) pairs, in forward order; raises
    ValueError naming the first mismatch when ``adapter`` was built for another UNet."""
    sites: list[tuple[nn.Module, AnimateDiffTransformer3D]] = []

    def pair(where: str, hosts: list[nn.Module], layers: nn.ModuleList, width: int) -> None:
        if len(hosts) != len(layers):
            raise ValueError(
                f"motion module does not fit this UNet: {where} has {len(hosts)} layers, "
                f"the motion module {len(layers)}"
            )
        for host, layer in zip(hosts, layers):
            if layer.in_channels != width:
                raise ValueError(
                    f"motion module does not fit this UNet: {where} is {width} channels "
                    f"wide, its motion layer {layer.in_channels}"
                )
            sites.append((host, layer))

    widths = list(unet.config.block_out_channels)
    if len(adapter.down_blocks) != len(unet.down_blocks):
        raise ValueError(
            f"motion module does not fit this UNet: {len(adapter.down_blocks)} down blocks, "
            f"the UNet has {len(unet.down_blocks)}"
        )
    for i, (block, mm) in enumerate(zip(unet.down_blocks, adapter.down_blocks)):
        pair(f"down block {i}", _hosts(block), mm.motion_modules, widths[i])
    if adapter.mid_block is not None:
        if unet.mid_block is None or not getattr(unet.mid_block, "attentions", None):
            raise ValueError("motion module has a mid-block layer but the UNet's mid block none")
        mid = adapter.mid_block.motion_modules
        pair("the mid block", list(unet.mid_block.attentions), mid, widths[-1])
    for i, (block, mm) in enumerate(zip(unet.up_blocks, adapter.up_blocks)):
        pair(f"up block {i}", _hosts(block), mm.motion_modules, widths[::-1][i])
    return sites


class MotionHooks:
    """Forward hooks that run a motion module's layers on the UNet's block outputs.

    Installed once (like MCLD's attention processors) and removed by :meth:`remove`. The
    frame count of the current call is ``num_frames``; ``None`` makes every hook a no-op.
    A temporal call sets it; calls without gradients reset it to ``None`` on exit, calls
    with gradients leave it set, because gradient checkpointing of the UNet's resnets
    re-runs their forward (and so these hooks) during ``backward``, after the call returned.
    """

    def __init__(self, sites: list[tuple[nn.Module, nn.Module]]) -> None:
        """``sites``: (host, layer) pairs (:func:`motion_sites`); a layer is called as
        ``layer(x, num_frames=F)`` on its host's (B*F, C, h, w) output."""
        self.num_frames: int | None = None
        self._handles = [host.register_forward_hook(self._hook(layer)) for host, layer in sites]

    def _hook(self, layer: nn.Module):
        def run(_module: nn.Module, _args: tuple, out: Any) -> Any:
            f = self.num_frames
            if f is None:
                return out
            # Transformer2DModel returns a tuple (return_dict=False inside UNet blocks).
            x = out[0] if isinstance(out, tuple) else out  # (B*F, C, h, w)
            assert x.shape[0] % f == 0, f"batch {x.shape[0]} is not whole windows of {f} frames"
            y = layer(x, num_frames=f)  # (B*F, C, h, w), temporal attention within windows
            return (y, *out[1:]) if isinstance(out, tuple) else y

        return run

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class TemporalDenoiser(nn.Module):
    """An :class:`FPDMDenoiser` plus a motion module: windows of F frames denoised jointly.

    Same interface as the per-frame denoiser (``encode_conditions`` is its own), with the
    window length ``num_frames`` added: every tensor is ``(B*F, ...)`` in the window-major
    layout of the module docstring. ``num_frames=None`` runs the per-frame model alone.
    """

    def __init__(self, denoiser: FPDMDenoiser, motion: MotionAdapter) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.motion = motion
        self.hooks = MotionHooks(motion_sites(denoiser.unet, motion))

    @property
    def max_frames(self) -> int:
        return int(self.motion.config.motion_max_seq_length)

    def encode_conditions(self, *args: Any, **kwargs: Any) -> Conditions:
        """The per-frame denoiser's :meth:`FPDMDenoiser.encode_conditions` (per frame rows)."""
        return self.denoiser.encode_conditions(*args, **kwargs)

    def denoise(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        cond: Conditions,
        num_frames: int | None,
    ) -> torch.Tensor:
        """noisy_latents (B*F, c, h, w), timesteps (B*F,) or scalar -> (B*F, c, h, w)."""
        if num_frames is not None:
            if not 1 <= num_frames <= self.max_frames:
                raise ValueError(
                    f"windows of {num_frames} frames: this motion module takes 1 to "
                    f"{self.max_frames} frames (motion_max_seq_length)"
                )
            if noisy_latents.shape[0] % num_frames:
                raise ValueError(
                    f"batch of {noisy_latents.shape[0]} frames is not whole windows of "
                    f"{num_frames} frames"
                )
        self.hooks.num_frames = num_frames
        try:
            return self.denoiser.denoise(noisy_latents, timesteps, cond)
        finally:
            if not torch.is_grad_enabled():
                self.hooks.num_frames = None

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        pose: torch.Tensor,
        source_hidden: torch.Tensor,
        fusion: torch.Tensor | None,
        *,
        num_frames: int | None,
        **condition_kwargs: Any,
    ) -> torch.Tensor:
        """Prediction (B*F, c, h, w); ``condition_kwargs`` as :meth:`FPDMDenoiser.forward`."""
        cond = self.encode_conditions(pose, source_hidden, fusion, **condition_kwargs)
        return self.denoise(noisy_latents, timesteps, cond, num_frames)


def set_render_defaults(motion: MotionAdapter, window: int, overlap: int, taper: str) -> None:
    """Record the window, overlap and taper renders use by default (the training window),
    saved in the module's own config.json."""
    assert 1 <= window <= int(motion.config.motion_max_seq_length) and 0 <= overlap < window
    motion.register_to_config(**{RENDER_DEFAULTS: {"window": int(window),
                                                  "overlap": int(overlap), "taper": taper}})  # fmt: skip


def render_defaults(motion: MotionAdapter) -> tuple[int, int, str]:
    """(window, overlap, taper) of renders that give none: the module's recorded defaults;
    for a module without them (e.g. AnimateDiff's), windows of min(16, max_frames) frames
    overlapping by a quarter, linear taper."""
    saved = motion.config.get(RENDER_DEFAULTS) or {}
    window = int(saved.get("window") or min(16, int(motion.config.motion_max_seq_length)))
    overlap = int(saved.get("overlap", window // 4))
    return window, overlap, str(saved.get("taper") or DEFAULT_TAPER)


def save_motion_module(motion: MotionAdapter, model_dir: str | Path) -> Path:
    """Write ``model_dir/motion_module/`` (config.json + safetensors); returns that path.
    The folder is written next to its final name and renamed when complete."""
    import shutil
    import tempfile

    target = Path(model_dir) / MOTION_FOLDER
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{MOTION_FOLDER}.", dir=target.parent))
    try:
        motion.save_pretrained(tmp, safe_serialization=True)
        old = None
        if target.exists():
            old = target.with_name(f".{MOTION_FOLDER}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_motion_module(path: str | Path, unet: UNet2DConditionModel | None = None) -> MotionAdapter:
    """A motion module from a local folder (a model folder holding ``motion_module/``, or
    that sub-folder itself); safetensors only, never a download. With ``unet``, checks
    that the module fits it (:class:`~signgen.errors.FormatError` otherwise)."""
    p = Path(path)
    if (p / MOTION_FOLDER).is_dir():
        p = p / MOTION_FOLDER
    if not (p / "config.json").is_file():
        raise MissingWeightsError(
            f"no motion module at {path} (expected {MOTION_FOLDER}/config.json)"
        )
    try:
        motion = MotionAdapter.from_pretrained(p, use_safetensors=True, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise FormatError(
            f"cannot load the motion module at {p}: {str(exc).splitlines()[0]}"
        ) from None
    if unet is not None:
        try:
            motion_sites(unet, motion)
        except ValueError as exc:
            raise FormatError(f"{p}: {exc}") from None
    return motion
