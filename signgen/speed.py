"""GPU speed options: precision, attention kernel, memory layout, compilation, VAE slicing.

Each option is a small function that changes modules in place; :func:`apply_render_options`
applies the speed fields of a :class:`~signgen.sampling.options.RenderOptions` (``signgen
render`` / ``render-many`` flags ``--dtype``, ``--attention``, ``--channels-last``,
``--compile``, ``--vae-slicing``) to a loaded pipeline, and :func:`apply_training_options`
applies the training config's keys (``train.attention``, ``train.channels_last``,
``train.compile``, ``train.frozen_dtype``, read by :func:`training_speed_options`) to a
stage-2 training module. None of them changes what the model computes beyond
floating-point rounding (reduced precision: that precision's rounding). docs/hardware.md
gives the measured effect of each.

* ``dtype``: weights and activations of every render module in bf16/fp16 (training keeps
  fp32 weights and uses autocast, ``train.mixed_precision``).
* ``attention``: ``sdpa`` = diffusers' ``AttnProcessor2_0``, i.e. PyTorch's
  ``scaled_dot_product_attention`` (flash / memory-efficient kernels on GPUs); ``eager`` =
  diffusers' ``AttnProcessor``, the explicit softmax(QK^T)V that materialises the attention
  matrix (for comparison and debugging). Custom processors (MCLD's decoupled
  cross-attention) are kept.
* ``channels_last``: NHWC memory format for the convolutional networks (UNet, VAE, pose
  encoder), what tensor cores' convolution kernels read natively.
* ``compile``: ``torch.compile`` of the UNet's repeated transformer blocks (regional
  compilation, diffusers' ``compile_repeated_blocks``): most of the gain of compiling the
  whole UNet at a fraction of the compile time, and it leaves the UNet's own forward
  eager, where the denoiser adds the pose features through a per-call hook.
* ``vae_slicing``: decode latents one frame at a time (``AutoencoderKL.enable_slicing``),
  so the decoder's activation peak is one frame's whatever the batch.
* ``frozen_dtype``: training only; the frozen VAE, source encoder and IPF run in bf16/fp16
  (half their weight memory and bandwidth) while the trained modules stay fp32. Inputs are
  cast to the encoder's dtype where they enter it and outputs back to the caller's dtype
  where they leave it, so callers see fp32 with or without autocast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from signgen.devices import DTYPES
from signgen.errors import InputError
from signgen.sampling.options import ATTENTION

# Classes whose instances the UNet's repeated-block compilation compiles (diffusers'
# ``UNet2DConditionModel._repeated_blocks``), used where a model does not declare them.
REPEATED_BLOCKS = ("BasicTransformerBlock",)


@dataclass
class SpeedOptions:
    """Speed settings of a render or training run (module docstring: what each does)."""

    dtype: str = "fp32"  # render weights: fp32 | bf16 | fp16
    attention: str = "sdpa"  # sdpa | eager
    channels_last: bool = False
    compile: bool = False
    compile_backend: str = "inductor"  # any torch.compile backend ("eager" traces only)
    vae_slicing: bool = False
    frozen_dtype: str | None = None  # training: frozen encoders in bf16 | fp16; None = fp32

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.attention not in ATTENTION:
            raise InputError(
                f"attention must be one of {', '.join(ATTENTION)}, got {self.attention!r}"
            )
        if self.frozen_dtype is not None and self.frozen_dtype not in ("bf16", "fp16"):
            raise InputError(f"frozen_dtype must be bf16, fp16 or unset, got {self.frozen_dtype!r}")
        if self.compile and not self.compile_backend:
            raise InputError("compile_backend must name a torch.compile backend")


# ---- single options ------------------------------------------------------------------------
def set_attention(model: nn.Module, kind: str) -> nn.Module:
    """Every standard attention processor of a diffusers model (UNet, VAE) -> ``kind``
    (``sdpa`` or ``eager``); other processors (MCLD's focal attention) stay."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if kind not in ATTENTION:
        raise InputError(f"attention must be one of {', '.join(ATTENTION)}, got {kind!r}")
    procs = getattr(model, "attn_processors", None)
    if not procs:
        return model
    make = AttnProcessor2_0 if kind == "sdpa" else AttnProcessor
    standard = (AttnProcessor, AttnProcessor2_0)
    model.set_attn_processor(
        {name: make() if type(p) in standard else p for name, p in procs.items()}
    )
    return model


def set_channels_last(*models: nn.Module | None) -> None:
    """4-D weights of ``models`` in channels-last (NHWC) memory format."""
    for m in models:
        if m is not None:
            m.to(memory_format=torch.channels_last)


def compile_repeated_blocks(unet: nn.Module, backend: str = "inductor") -> int:
    """``torch.compile`` each repeated transformer block of ``unet`` (regional
    compilation); returns how many blocks were compiled (0: none found, left eager)."""
    names = tuple(getattr(unet, "_repeated_blocks", None) or REPEATED_BLOCKS)
    n = 0
    for m in unet.modules():
        if type(m).__name__ in names:
            m.compile(backend=backend)
            n += 1
    return n


def set_vae_slicing(vae: nn.Module, enabled: bool = True) -> None:
    """Decode one frame at a time (diffusers' sliced decoding); a no-op for autoencoders
    without it (signgen's PatchAutoencoder is a reshape with no activations to save)."""
    if hasattr(vae, "enable_slicing"):
        vae.enable_slicing() if enabled else vae.disable_slicing()


def run_in_dtype(module: nn.Module, dtype: torch.dtype) -> list[Any]:
    """Run a frozen ``module`` in ``dtype``: its weights are cast, and hooks cast floating
    inputs to ``dtype`` where they enter and outputs back to the inputs' dtype where they
    leave, so a caller in fp32 gets fp32 with or without autocast. Hooks go on the module's
    entry points (:func:`_entry_points`): an autoencoder's encoder/decoder are called by
    ``encode``/``decode``, not by ``forward``. Returns the hook handles."""
    module.to(dtype=dtype)
    handles = []
    for entry in _entry_points(module):
        outer: list[torch.dtype] = []  # the callers' dtype, one per call in progress

        def pre(_m: nn.Module, args: tuple, kwargs: dict, outer=outer) -> tuple[tuple, dict]:
            found = [a.dtype for a in (*args, *kwargs.values())
                     if isinstance(a, torch.Tensor) and a.is_floating_point()]  # fmt: skip
            outer.append(found[0] if found else torch.float32)
            return _cast(args, dtype), _cast(kwargs, dtype)

        def post(_m: nn.Module, _args: tuple, _kwargs: dict, out: Any, outer=outer) -> Any:
            return _cast(out, outer.pop())

        handles.append(entry.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(entry.register_forward_hook(post, with_kwargs=True))
    return handles


def _entry_points(module: nn.Module) -> list[nn.Module]:
    """The submodules callers reach a frozen module through."""
    if hasattr(module, "encoder") and hasattr(module, "decoder"):  # AutoencoderKL
        names = ("encoder", "quant_conv", "post_quant_conv", "decoder")
        return [getattr(module, n) for n in names if getattr(module, n, None) is not None]
    if hasattr(module, "vision_model") and hasattr(module, "combiner"):  # signgen IPFModel
        return [module.vision_model, module.combiner]
    return [module]


def _cast(obj: Any, dtype: torch.dtype) -> Any:
    """Floating tensors in ``obj`` (tensors, tuples, lists, dicts, model outputs) -> dtype."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() and obj.dtype != dtype else obj
    if isinstance(obj, dict):  # also transformers' / diffusers' ModelOutput (an OrderedDict)
        for k in list(obj.keys()):
            obj[k] = _cast(obj[k], dtype)
        return obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cast(v, dtype) for v in obj)
    return obj


# ---- all of them -----------------------------------------------------------------------------
def apply_render_options(pipe: Any, opts: Any) -> Any:
    """Apply the speed fields of ``opts`` (a RenderOptions, or a :class:`SpeedOptions`:
    ``dtype``, ``attention``, ``channels_last``, ``compile``, ``vae_slicing``) to a render
    pipeline (anything with ``unet``, ``vae``, ``pose_encoder`` and ``to(dtype=...)``, e.g.
    FPDMPipeline); returns it. Apply once per loaded pipeline: compiling twice recompiles."""
    pipe.to(dtype=DTYPES[opts.dtype])
    _apply_common(pipe.unet, pipe.vae, pipe.pose_encoder, opts)
    return pipe


def training_speed_options(loop: Any) -> SpeedOptions:
    """The :class:`SpeedOptions` of a training config's ``train:`` section
    (signgen.train.config.LoopConfig: ``attention``, ``channels_last``, ``compile``,
    ``frozen_dtype``)."""
    return SpeedOptions(
        attention=loop.attention,
        channels_last=loop.channels_last,
        compile=loop.compile,
        frozen_dtype=loop.frozen_dtype,
    )


def apply_training_options(module: Any, opts: SpeedOptions) -> Any:
    """Apply ``opts`` to a stage-2 training module (signgen.train.fpdm.FPDMModule: its
    ``denoiser`` trains in fp32, ``vae``, ``source_encoder`` and ``ipf`` are frozen);
    ``opts.dtype`` does not apply (training precision is ``train.mixed_precision``)."""
    _apply_common(module.denoiser.unet, module.vae, module.denoiser.pose_encoder, opts)
    if opts.frozen_dtype is not None:
        for m in _present((module.vae, module.source_encoder, module.ipf)):
            run_in_dtype(m, DTYPES[opts.frozen_dtype])
    return module


def _apply_common(unet: nn.Module, vae: nn.Module, pose_encoder: nn.Module,
                  opts: Any) -> None:  # fmt: skip
    set_attention(unet, opts.attention)
    set_attention(vae, opts.attention)
    if opts.channels_last:
        set_channels_last(unet, vae, pose_encoder)
    set_vae_slicing(vae, opts.vae_slicing)
    if opts.compile:  # last: compiled blocks see the final dtype and layout
        compile_repeated_blocks(unet, getattr(opts, "compile_backend", "inductor"))


@contextlib.contextmanager
def saved_as_fp32(module: nn.Module) -> Iterator[None]:
    """Inside the block, every floating parameter and buffer of ``module`` is fp32 and
    contiguous (what a model folder stores whatever the speed options: safetensors refuses
    channels-last tensors, and half-precision frozen encoders must not be exported as
    such); the tensors are put back after it."""
    kept = []
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point() and (t.dtype != torch.float32 or not t.is_contiguous()):
            kept.append((t, t.data))
            t.data = t.data.to(torch.float32, memory_format=torch.contiguous_format)
    try:
        yield
    finally:
        for t, data in kept:
            t.data = data


def _present(modules: Iterable[nn.Module | None]) -> list[nn.Module]:
    return [m for m in modules if m is not None]
