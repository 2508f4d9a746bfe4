"""Render options: one validated object for ``signgen render``, ``render-many`` and ``augment``.

:class:`RenderOptions` holds everything that decides the frames besides the model and the
inputs (steps, guidance, scheduler, noise policy, detail transfer, precision) and how they
are computed (batch size, guidance-branch skipping, and the GPU speed options that
:func:`signgen.speed.apply_render_options` applies to a loaded pipeline: attention kernel,
channels-last, ``torch.compile``, VAE slicing; docs/hardware.md). It is validated once,
when it is made (a bad value is one :class:`~signgen.errors.InputError` line), and is
frozen after that: the pipeline, the Ray actors and the training sample grids take it as
it is. A value left
``None`` means "the model's own" (its default steps, guidance, focal weight, scheduler and
detail-transfer threshold, saved in the model folder), resolved by the pipeline.

The command-line options are declared once here (:func:`add_render_arguments`) for
``signgen render``, ``signgen render-many`` and ``signgen render-pairs``; ``augment`` reads
the same fields from its YAML config (``render:``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from signgen.errors import InputError
from signgen.names import DTYPE_NAMES, SCHEDULER_NAMES, TAPERS, scheduler_name

# Attention kernels (signgen.speed.set_attention): sdpa = PyTorch's
# scaled_dot_product_attention (flash / memory-efficient kernels on GPUs), eager = the
# explicit softmax(QK^T)V.
ATTENTION = ("sdpa", "eager")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True)
class RenderOptions:
    """How to render (module docstring). ``None`` = the model's own value."""

    steps: int | None = None  # denoising steps; None: the model's (the paper's 20)
    guidance: tuple[float, float] | None = None  # (W_SRC, W_FUSE) of cumulative guidance
    guidance_focal: float | None = None  # MCLD models only: W_FOCAL
    scheduler: str | None = None  # ddim | ddpm | dpm++ | euler; None: the model's
    seed: int = 0  # the clip's seed
    independent_noise: bool = False  # per-frame noise from (seed, frame) instead of shared
    detail_transfer: float | None = None  # threshold of the detail transfer; 0 = off
    refine: bool = True  # run the model's source refiner (signgen.models.refiner), if any
    # --temporal: run the refiner with its temporal layers (signgen.models.refiner_motion),
    # if the model has them; False refines each frame alone.
    temporal_refine: bool = True
    # --temporal: denoise windows through the model's motion module (True) or every frame
    # alone, so that only the refiner's temporal layers act (False); None: the model's default.
    motion_module: bool | None = None
    dtype: str = "fp32"  # precision the commands load the model in: fp32 | fp16 | bf16
    batch_size: int = 8  # frames per model call (does not change the frames)
    # Run only the guidance branches whose weight in the guided sum is not 0 (same frames
    # up to float rounding); False runs every branch, to measure what skipping saves.
    skip_zero_branches: bool = True
    # GPU speed options (same frames up to float rounding; docs/hardware.md, "Speed options").
    attention: str = "sdpa"  # sdpa | eager
    channels_last: bool = False  # NHWC weights for the UNet, VAE and pose encoder
    compile: bool = False  # torch.compile of the UNet's repeated transformer blocks
    vae_slicing: bool = False  # decode one frame at a time (decoder peak of one frame)
    # Temporal rendering (docs/temporal.md): windows of frames through the model's motion
    # module, predictions blended where windows overlap. None: the motion module's defaults.
    temporal: bool = False
    window: int | None = None  # frames per window
    overlap: int | None = None  # frames shared by consecutive windows
    taper: str | None = None  # blending weights in the overlaps: uniform | linear

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # frozen: normalise in place, once

        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if v is None and name == "steps":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise InputError(f"{name.replace('_', ' ')} must be a positive integer, got {v!r}")
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed < 2**63
        ):
            raise InputError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if self.guidance is not None:
            g = tuple(self.guidance) if isinstance(self.guidance, (list, tuple)) else ()
            if len(g) != 2 or not all(math.isfinite(_number(w)) for w in g):
                raise InputError(
                    f"guidance must be two finite numbers W_SRC W_FUSE, got {self.guidance!r}"
                )
            put("guidance", (float(g[0]), float(g[1])))
        if self.guidance_focal is not None:
            if not math.isfinite(_number(self.guidance_focal)):
                raise InputError(
                    f"focal guidance must be a finite number, got {self.guidance_focal!r}"
                )
            put("guidance_focal", float(self.guidance_focal))
        if self.detail_transfer is not None:
            t = _number(self.detail_transfer)
            if not (math.isfinite(t) and t >= 0):
                raise InputError(
                    "detail-transfer threshold must be a number >= 0 (0 = off), got "
                    f"{self.detail_transfer!r}"
                )
            put("detail_transfer", t)
        if self.scheduler is not None:
            put("scheduler", scheduler_name(str(self.scheduler)))
        if self.dtype not in DTYPE_NAMES:
            raise InputError(
                f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPE_NAMES)}"
            )
        if self.attention not in ATTENTION:
            raise InputError(
                f"attention must be one of {', '.join(ATTENTION)}, got {self.attention!r}"
            )
        for name in ("independent_noise", "skip_zero_branches", "channels_last", "compile",
                     "vae_slicing", "refine", "temporal_refine"):  # fmt: skip
            put(name, bool(getattr(self, name)))
        if self.motion_module is not None:
            put("motion_module", bool(self.motion_module))
        put("temporal", bool(self.temporal))
        self._check_windows()

    def _check_windows(self) -> None:
        for name, low in (("window", 1), ("overlap", 0)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
                raise InputError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.window is not None and self.overlap is not None and self.overlap >= self.window:
            raise InputError(
                f"overlap must be smaller than the window, got overlap {self.overlap} and "
                f"window {self.window}"
            )
        if self.taper is not None and self.taper not in TAPERS:
            raise InputError(f"taper must be one of {', '.join(TAPERS)}, got {self.taper!r}")
        given = [n for n in ("window", "overlap", "taper") if getattr(self, n) is not None]
        if given and not self.temporal:
            raise InputError(f"{'/'.join(given)} apply to temporal renders only: add --temporal")

    def replace(self, **changes: Any) -> RenderOptions:
        """A copy with ``changes`` (validated like a new one)."""
        return dataclasses.replace(self, **changes)


# ---- command line ------------------------------------------------------------------------------
GUIDANCE_HELP = (
    "cumulative guidance weights (default: the model's; 2.0 2.0 for the paper's models, as "
    "in the paper). A term whose weight comes out 0 is not computed: 2 2 costs two UNet "
    "passes per step, 1 1 (no guidance) one, most other pairs three"
)


# Over 80 lines: one declaration per render option with the help text it prints; they read
# best in the order `--help` shows them.
def add_render_arguments(
    parser: argparse.ArgumentParser, *, clip: bool = True, first_frame: bool = True
) -> None:
    """Declare the render options on ``parser`` (read back by :func:`options_from_args`).

    ``clip=True`` (``signgen render``, ``render-pairs``) also declares ``--seed`` and
    ``--batch-size``; render-many declares its own (a base seed for clips without one, and
    a batch size that mixes clips, among the cluster options). ``first_frame=False``
    (``render-pairs``: one image per pair, no clip, no MCLD) leaves out the options that
    act on a clip's frames or its first frame's keypoints (``--guidance-focal``,
    ``--detail-transfer``, ``--independent-noise``).
    """
    p = parser
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="denoising steps (default: the model's; 20 for the paper's and "
                   "converted models, as in the paper)")  # fmt: skip
    p.add_argument("--guidance", type=float, nargs=2, default=None,
                   metavar=("W_SRC", "W_FUSE"), help=GUIDANCE_HELP)  # fmt: skip
    if first_frame:
        p.add_argument("--guidance-focal", type=float, default=None, metavar="W_FOCAL",
                       help="MCLD models only: guidance weight of the face/hand focal tokens "
                       "(default: the model's; 2.0 for the paper-scale MCLD configs)")  # fmt: skip
        p.add_argument("--detail-transfer", type=float, default=None, metavar="T",
                       help="keep the first frame's own full-resolution pixels where the "
                       "generated frame agrees with it, blending up to a difference of T (0-1 "
                       "intensity; 0 = off; default: the model's: 0 for full-resolution "
                       "models, set for the 80x64 demo model)")  # fmt: skip
        p.add_argument("--no-refine", dest="refine", action="store_false",
                       help="skip the model's source refiner, the small network that takes a "
                       "low-resolution model's frames to full size (models trained with "
                       "`signgen train refiner`, such as the demo model; default: on when "
                       "the model has one)")  # fmt: skip
    p.add_argument("--scheduler", default=None, metavar="NAME",
                   help=f"sampler: {', '.join(SCHEDULER_NAMES)} (default: the model's; ddpm for "
                   "the paper's and converted models, as the FPDM authors sample)")  # fmt: skip
    p.add_argument("--dtype", default="fp32", choices=DTYPE_NAMES,
                   help="model precision (default fp32; bf16/fp16 on GPU)")  # fmt: skip
    if first_frame:
        p.add_argument("--independent-noise", action="store_true",
                       help="draw each frame's initial noise from (seed, frame index) instead "
                       "of one noise for the whole clip")  # fmt: skip
        p.add_argument("--temporal", action="store_true",
                       help="render in overlapping windows of frames through the model's motion "
                       "module (MODEL/motion_module/, trained by `signgen train motion`): the "
                       "frames of a window attend to each other, predictions are blended where "
                       "windows overlap; clips of any length in flat memory (default: off, "
                       "every frame alone)")  # fmt: skip
        p.add_argument("--no-temporal-refine", dest="temporal_refine", action="store_false",
                       help="--temporal: refine each frame alone, without the refiner's "
                       "temporal layers (MODEL/refiner_motion/, trained by `signgen train "
                       "refiner-motion`; default: on when the model has them)")  # fmt: skip
        p.add_argument("--motion-module", action=argparse.BooleanOptionalAction, default=None,
                       help="--temporal: denoise windows of frames through the model's motion "
                       "module, or (--no-motion-module) every frame alone, so that only the "
                       "refiner's temporal layers act (default: the model's; the demo model "
                       "denoises frames alone, which measured better: docs/temporal.md)")  # fmt: skip
        p.add_argument("--window", type=int, default=None, metavar="W",
                       help="--temporal: frames per window of the motion module (default: the "
                       "window it was trained on; the refiner's temporal layers keep the "
                       "windows they were trained on)")  # fmt: skip
        p.add_argument("--overlap", type=int, default=None, metavar="O",
                       help="--temporal: frames shared by consecutive windows (default: the "
                       "motion module's)")  # fmt: skip
        p.add_argument("--taper", default=None, choices=TAPERS,
                       help="--temporal: weights of overlapping predictions, uniform (the "
                       "average) or linear (ramps towards each window's edges) (default: the "
                       "motion module's)")  # fmt: skip
    g = p.add_argument_group("speed (GPU; the same frames up to float rounding)")
    g.add_argument("--attention", choices=ATTENTION, default="sdpa",
                   help="attention kernel: sdpa = PyTorch scaled_dot_product_attention "
                   "(default; flash kernels on GPUs), eager = explicit softmax(QK^T)V")  # fmt: skip
    g.add_argument("--channels-last", action="store_true",
                   help="NHWC memory format for the UNet, VAE and pose encoder")  # fmt: skip
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet's transformer blocks (the first batch "
                   "compiles: worth it for long jobs)")  # fmt: skip
    g.add_argument("--vae-slicing", action="store_true",
                   help="decode frames one at a time (lower peak memory at large "
                   "batches)")  # fmt: skip
    if clip:
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        p.add_argument("--batch-size", type=int, default=8, metavar="B",
                       help="frames generated together (default 8); does not change the "
                       "frames")  # fmt: skip


def options_from_args(
    args: argparse.Namespace, *, clip: bool = True, cls: type = RenderOptions, **extra: Any
) -> Any:
    """The options (``cls``: :class:`RenderOptions` or a subclass) of arguments parsed with
    :func:`add_render_arguments` (same ``clip``); ``extra`` are further fields of ``cls``."""
    values = {
        "steps": args.steps,
        "guidance": None if args.guidance is None else tuple(args.guidance),
        "guidance_focal": getattr(args, "guidance_focal", None),
        "scheduler": args.scheduler,
        "independent_noise": getattr(args, "independent_noise", False),
        "detail_transfer": getattr(args, "detail_transfer", None),
        "refine": getattr(args, "refine", True),
        "temporal_refine": getattr(args, "temporal_refine", True),
        "motion_module": getattr(args, "motion_module", None),
        "dtype": args.dtype,
        "attention": args.attention,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "vae_slicing": args.vae_slicing,
        "temporal": getattr(args, "temporal", False),
        "window": getattr(args, "window", None),
        "overlap": getattr(args, "overlap", None),
        "taper": getattr(args, "taper", None),
    }
    if clip:
        values.update(seed=args.seed, batch_size=args.batch_size)
    return cls(**values, **extra)
