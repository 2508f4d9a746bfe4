"""FPDMPipeline: every FPDM component in one diffusers ``DiffusionPipeline``, and the render.

Persistence is diffusers' own: the components are registered with ``register_modules``
and ``save_pretrained``/``from_pretrained`` write and read them, one subfolder each, with
``model_index.json`` naming their classes; the pipeline-level settings are the pipeline's
config in the same file. A model folder::

    model_index.json  component classes; ``image_processor`` (the processor's config:
                      resolution, resize mode, source preprocessing), ``guidance`` (default
                      W_SRC, W_FUSE; absent = the paper's 2, 2), ``steps`` (default
                      denoising steps; absent = the paper's 20), ``detail_transfer``
                      (default threshold of that post-processor; 0 = off) and
                      ``source_residual`` (the spatial-source denoiser's residual prediction;
                      absent = false); the default sampler is the ``scheduler`` component
    vae/  unet/  pose_encoder/  source_encoder/  source_projector/  scheduler/
    ipf/  fusion_mlp/         (optional: models with Image-Pose Fusion, signgen.models.ipf)
    focal_adapter/            (optional: MCLD, signgen.models.mcld; the UNet stays plain)
    motion_module/            (optional: temporal FPDM, signgen.models.motion; loaded also
                              when model_index.json does not list it)
    refiner/                  (optional: the source refiner, signgen.models.refiner)

The image processor is a ``ConfigMixin`` with no weights (like diffusers'
``VaeImageProcessor``, which diffusers' pipelines build in ``__init__`` rather than save),
so it travels as config, not as a subfolder: diffusers' loader saves and loads only
classes with weights or their own ``save_pretrained`` (models, schedulers, tokenizers).
Loading adds two things around diffusers' loader (:mod:`signgen.sampling.loading`): hub
ids resolve through the local cache only, and ``model_index.json`` is checked against a
class allow-list before anything is imported (it also reads the layout of folders written
before, so they load unchanged). How the parts fit: ``docs/render_path.md``.

The render (:meth:`FPDMPipeline.render`, in numbered steps):

1. check the inputs (:func:`signgen.sampling.inputs.check_clip`) and the options against
   the model (:class:`signgen.sampling.options.RenderOptions`, validated when made);
2. prepare the clip once: encode the first frame (source tokens, IPF embedding, MCLD
   focal crops, the spatial-source latents) and bind the post-processors to it;
3. per batch of frames: draw the pose images in the first frame's geometry (the image
   processor), the same for the IPF;
4. initial noise, per frame (:mod:`signgen.sampling.loop`);
5. denoise: one batched UNet call per step for every guidance branch that runs
   (:mod:`signgen.sampling.guidance`);
6. decode with the VAE;
7. map back to the first frame's exact size (the processor's inverse geometry), refine
   with the model's source refiner when it has one (:mod:`signgen.models.refiner`: the
   frame, the first frame and the pose drawn at that size) and run the post-processors
   (:mod:`signgen.sampling.detail`).

Steps 4-6 are :meth:`FPDMPipeline.generate`, which ``render-pairs`` and the training sample
grids call too. Frames are generated and yielded batch by batch: nothing grows with the
length of the sequence except the keypoint array.

Temporal renders (``options.temporal``, :meth:`FPDMPipeline.render_clips`) take the same
steps for whole clips at once: the clip's latents on the CPU, windows of W frames through
the motion module one call at a time, their predictions blended in the overlaps, by the
same loop (:func:`signgen.sampling.loop.sample`); pose images are drawn per window and
step, never kept for the whole clip (docs/temporal.md).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline

from signgen.devices import resolve_device, resolve_dtype
from signgen.errors import InputError, MissingWeightsError
from signgen.keypoints.sequence import KeypointSequence
from signgen.models.config import PAPER_GUIDANCE, PAPER_STEPS
from signgen.models.encoders import encode_source
from signgen.models.factory import build_denoiser
from signgen.models.modules import vae_downscale_factor
from signgen.models.motion import TemporalDenoiser, motion_sites, render_defaults
from signgen.models.preprocess import tensor_to_uint8, uint8_to_tensor
from signgen.models.processor import FPDMImageProcessor
from signgen.models.refiner import REFINER_FOLDER
from signgen.models.refiner_motion import REFINER_MOTION_FOLDER, TemporalRefiner
from signgen.models.schedulers import make_scheduler, scheduler_key
from signgen.sampling.detail import DetailTransfer
from signgen.sampling.guidance import GuidancePlan, fpdm_chain
from signgen.sampling.inputs import check_clip
from signgen.sampling.loading import (
    MODEL_INDEX,
    check_model_folder,
    check_model_index,
    default_model_path,
    resolve_model_dir,
)
from signgen.sampling.loop import decode, denoise, initial_noise, sample
from signgen.sampling.options import RenderOptions
from signgen.sampling.windows import window_plan, window_weights

__all__ = [
    "MODEL_INDEX",
    "ClipSource",
    "EncodedSource",
    "FPDMPipeline",
    "default_model_path",
    "load_default_pipeline",
]

logger = logging.getLogger(__name__)


@dataclass
class EncodedSource:
    """What the model needs of a clip's first frame, computed once per clip."""

    hidden: torch.Tensor  # (1, N, Ds) source-encoder last hidden state
    clip_emb: torch.Tensor | None  # (1, D) IPF/CLIP embedding of the source, or None
    width: int  # first frame size = output size
    height: int
    # Further per-clip conditions, as keyword arguments of the denoiser's encode_conditions:
    # MCLD focal_hidden (1, R, N', Ds) + focal_present (1, R); spatial-source latents (1, c, h, w).
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class ClipSource:
    """A clip's first frame, prepared once: its encoding and its bound post-processors
    (each maps frames (1, 3, H, W) at the first frame's size to the same)."""

    encoded: EncodedSource
    postprocess: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = ()
    # The first frame (1, 3, H, W) in [0, 1] at its own size when the source refiner runs.
    refine_source: torch.Tensor | None = None


class FPDMPipeline(DiffusionPipeline):
    """All FPDM components, saved and loaded by diffusers, and the render (module docstring).

    Components as diffusers names them (``ipf``/``fusion_mlp``: models with Image-Pose
    Fusion; ``focal_adapter``: MCLD). ``image_processor``: an :class:`FPDMImageProcessor`
    or its config; ``guidance`` (W_SRC, W_FUSE), ``steps`` and ``detail_transfer`` are the
    defaults of renders that give none; ``source_residual`` selects the residual prediction of a
    spatial-source UNet (:mod:`signgen.models.spatial`). Arguments are unannotated:
    diffusers reads annotations to check loaded types.
    """

    _optional_components = ["ipf", "fusion_mlp", "focal_adapter", "motion_module", REFINER_FOLDER,  # noqa: RUF012 - diffusers' name
                            REFINER_MOTION_FOLDER]  # fmt: skip

    def __init__(
        self,
        vae,
        unet,
        pose_encoder,
        source_encoder,
        source_projector,
        scheduler,
        ipf=None,
        fusion_mlp=None,
        focal_adapter=None,
        motion_module=None,
        refiner=None,
        refiner_motion=None,
        image_processor=None,
        guidance=PAPER_GUIDANCE,
        detail_transfer=0.0,
        source_residual=False,
        steps=PAPER_STEPS,
        temporal_motion_module=True,
    ) -> None:
        super().__init__()
        ipf = ipf if fusion_mlp is not None else None  # an IPF without a fusion MLP is unused
        self.register_modules(
            vae=vae, unet=unet, pose_encoder=pose_encoder, source_encoder=source_encoder,
            source_projector=source_projector, scheduler=scheduler, ipf=ipf,
            fusion_mlp=fusion_mlp, focal_adapter=focal_adapter, motion_module=motion_module,
            refiner=refiner, refiner_motion=refiner_motion,
        )  # fmt: skip
        if not isinstance(image_processor, FPDMImageProcessor):
            image_processor = FPDMImageProcessor.from_config(dict(image_processor or {}))
        self._image_processor = image_processor
        if ipf is not None:  # one geometry for the IPF's inputs and the model's
            ipf.check_resize_mode(image_processor.resize_mode, "this model")
        from signgen import __version__

        self.register_to_config(
            image_processor={k: v for k, v in image_processor.config.items() if k[0] != "_"},
            guidance=[float(guidance[0]), float(guidance[1])],
            detail_transfer=float(detail_transfer),
            source_residual=bool(source_residual),
            steps=int(steps),
            temporal_motion_module=bool(temporal_motion_module),
            _signgen_version=__version__,
        )
        self.denoiser = build_denoiser(
            unet, pose_encoder, source_projector, fusion_mlp, focal_adapter,
            source_residual=source_residual,
        )  # fmt: skip
        if source_residual and scheduler.config.prediction_type != "sample":
            raise ValueError(
                "a source-residual model predicts the clean sample: its scheduler's "
                f"prediction_type must be 'sample', not {scheduler.config.prediction_type!r}"
            )
        factor = vae_downscale_factor(vae)
        if factor != pose_encoder.downscale_factor:
            raise ValueError(
                f"VAE downsamples by {factor} but the pose encoder by "
                f"{pose_encoder.downscale_factor}; they must agree"
            )
        if self.resolution[0] % factor or self.resolution[1] % factor:
            raise ValueError(f"resolution {self.resolution} must be divisible by {factor}")
        self.vae_scale_factor = factor
        if motion_module is not None:
            motion_sites(unet, motion_module)  # ValueError naming the mismatch
        if refiner_motion is not None:
            if refiner is None:
                raise ValueError("refiner_motion/ (the refiner's temporal layers) needs a refiner/")
            refiner_motion.sites(refiner)  # ValueError naming the mismatch
        self._temporal_refiner: TemporalRefiner | None = None
        self._temporal: TemporalDenoiser | None = None

    @property
    def image_processor(self) -> FPDMImageProcessor:
        return self._image_processor

    @property
    def resolution(self) -> tuple[int, int]:
        """(H, W) the model runs at."""
        return self._image_processor.resolution

    @property
    def default_guidance(self) -> tuple[float, float]:
        """(W_SRC, W_FUSE) of renders that give none (the pipeline config's ``guidance``)."""
        w_src, w_fuse = self.config["guidance"]
        return float(w_src), float(w_fuse)

    @property
    def default_steps(self) -> int:
        """Denoising steps of renders that give none (the pipeline config's ``steps``)."""
        return int(self.config.get("steps", PAPER_STEPS))

    def steps_for(self, options: RenderOptions) -> int:
        """The denoising steps a render with ``options`` takes (its own, else the model's)."""
        return self.default_steps if options.steps is None else int(options.steps)

    @property
    def detail_transfer(self) -> float:
        """Detail-transfer threshold of renders that give none (0 = off)."""
        return float(self.config["detail_transfer"])

    def _modules(self) -> list[torch.nn.Module]:
        return [m for m in self.components.values() if isinstance(m, torch.nn.Module)]

    def eval(self) -> FPDMPipeline:
        """Inference mode for every module (dropout off, no gradients); returns self.

        ``from_config``/``from_pretrained`` do this; components passed in by hand
        (``from_components``, e.g. a training loop's modules) are left as they are.
        """
        for m in self._modules():
            m.eval().requires_grad_(False)
        return self

    def to(
        self, device: Any = None, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> FPDMPipeline:
        """Move every module to ``device`` and/or cast it to ``dtype`` (either may be given
        alone, as with ``torch.nn.Module.to``); other options go to diffusers' ``to``."""
        if kwargs:
            return super().to(*(a for a in (device, dtype) if a is not None), **kwargs)
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        device = torch.device(device) if device is not None else self.device
        # Only name a dtype when it changes: diffusers warns whenever one is named.
        cast = {"dtype": dtype} if dtype is not None and dtype != self.dtype else {}
        for m in self._modules():
            m.to(device=device, **cast)
        return self

    # -- building and persistence ---------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any) -> FPDMPipeline:
        """Build from an :class:`FPDMModelConfig` (pretrained parts offline, rest random)."""
        from signgen.models.factory import build_components

        return cls.from_components(cfg, build_components(cfg, device="cpu")).eval()

    @classmethod
    def from_components(cls, cfg: Any, comps: dict[str, Any]) -> FPDMPipeline:
        """Assemble (e.g. trained) components as returned by ``build_components(cfg)``;
        the image processor and the render defaults come from ``cfg``."""
        return cls(
            **comps,
            image_processor=FPDMImageProcessor.from_model_config(cfg),
            guidance=tuple(cfg.guidance),
            steps=cfg.steps,
            detail_transfer=cfg.detail_transfer,
            source_residual=cfg.unet.source_residual,
        )

    def save_pretrained(self, directory: str | os.PathLike, **kwargs: Any) -> Path:
        """diffusers' ``save_pretrained`` (safetensors), made atomic: written to a temporary
        folder next to ``directory`` and renamed onto it (replaced whole) on success."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            super().save_pretrained(tmp, safe_serialization=True, **kwargs)
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
                os.replace(target, old / target.name)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @classmethod
    def load_config(cls, pretrained_model_name_or_path: str | os.PathLike, *args, **kwargs):
        """diffusers' reader of ``model_index.json``, then the allow-list and the earlier
        layout (:func:`signgen.sampling.loading.check_model_index`)."""
        out = super().load_config(pretrained_model_name_or_path, *args, **kwargs)
        where = Path(pretrained_model_name_or_path) / MODEL_INDEX
        if isinstance(out, tuple):
            return (check_model_index(out[0], where), *out[1:])
        return check_model_index(out, where)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        local_files_only: bool = True,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
    ) -> FPDMPipeline:
        """Load a model folder: a local directory or a Hugging Face hub id.

        Hub ids resolve through the local cache only by default (``local_files_only``;
        set ``HF_HOME`` to the cache, ``HF_HUB_OFFLINE=1`` to forbid the network).
        Missing components raise :class:`MissingWeightsError` naming the folder.
        """
        root = resolve_model_dir(path, local_files_only)
        if not (root / MODEL_INDEX).is_file():
            raise MissingWeightsError(f"{root} is not an FPDM model folder (no {MODEL_INDEX})")
        try:
            index = cls.load_config(root)
            check_model_folder(root, index)
            _import_component_libraries()  # diffusers resolves classes in imported modules
            pipe = super().from_pretrained(str(root), local_files_only=True)
        except MissingWeightsError:
            raise
        except (OSError, ValueError) as exc:
            raise MissingWeightsError(
                f"cannot load the model in {root}: {str(exc).splitlines()[0]}"
            ) from None
        return pipe.eval().to(resolve_device(device), resolve_dtype(dtype))

    # -- step 1: options against the model ---------------------------------------------------
    def guidance_plan(self, options: RenderOptions) -> GuidancePlan:
        """The guidance chain and weights of ``options`` on this model (its defaults where
        ``options`` gives none); a focal weight for a model without MCLD is an InputError.
        Temporal options are checked against the model's motion module too
        (:meth:`temporal_settings`): this is the one check of the options against a model."""
        if options.temporal:
            self.temporal_settings(options)
        focal = self.focal_adapter is not None
        if options.guidance_focal is not None and not focal:
            raise InputError(
                "focal guidance given, but this model has no focal (MCLD) conditioning"
            )
        w_src, w_fuse = options.guidance or self.default_guidance
        weights: tuple[float, ...] = (w_src, w_fuse)
        if focal:
            w_focal = options.guidance_focal
            w_focal = float(self.focal_adapter.config.guidance if w_focal is None else w_focal)
            weights = (w_src, w_focal, w_fuse)
        return GuidancePlan(fpdm_chain(focal), weights, skip_zero=options.skip_zero_branches)

    def temporal_settings(self, options: RenderOptions) -> tuple[int, int, str]:
        """(window, overlap, taper) of a temporal render's denoising: ``options``' values, else
        the motion module's defaults; a model without a motion module is an InputError.
        Without the motion module (:meth:`uses_motion_module`): (1, 0, "uniform"), every
        frame denoised alone (only the refiner's temporal layers act, on their own windows)."""
        if not self.uses_motion_module(options):
            if self.temporal_refiner is None:
                raise InputError(
                    "--temporal without a motion module (--no-motion-module, or a model that "
                    "has none) needs a model whose refiner has temporal layers "
                    "(MODEL/refiner_motion/, trained by `signgen train refiner-motion`)"
                )
            return 1, 0, "uniform"
        if self.motion_module is None:
            raise InputError(
                "--temporal needs a model with a motion module (MODEL/motion_module/, trained "
                "by `signgen train motion`); this model has none"
            )
        window, overlap, taper = render_defaults(self.motion_module)
        window = options.window or window
        overlap = overlap if options.overlap is None else options.overlap
        most = int(self.motion_module.config.motion_max_seq_length)
        if window > most:
            raise InputError(f"window {window} is longer than this motion module's {most} frames")
        if overlap >= window:
            raise InputError(f"overlap {overlap} must be smaller than the window ({window})")
        return window, overlap, options.taper or taper

    def uses_motion_module(self, options: RenderOptions) -> bool:
        """Whether a temporal render denoises through the motion module: ``options``' choice,
        else the model's (``temporal_motion_module`` in its folder; True by default), for a
        model that has one."""
        if options.motion_module is not None:
            return options.motion_module
        return bool(self.config.get("temporal_motion_module", True)) and (
            self.motion_module is not None
        )

    @property
    def temporal_denoiser(self) -> TemporalDenoiser:
        """The denoiser with the motion module hooked on (built once per motion module)."""
        motion = self.motion_module
        assert motion is not None, "no motion module"
        current = self._temporal
        if current is None or current.motion is not motion or current.denoiser is not self.denoiser:
            if current is not None:
                current.hooks.remove()
            self._temporal = current = TemporalDenoiser(self.denoiser, motion)
        return current

    @temporal_denoiser.setter
    def temporal_denoiser(self, temporal: TemporalDenoiser) -> None:
        """Render through an existing temporal denoiser of this pipeline's denoiser (a
        training run's, whose motion hooks are already on the UNet): its motion module
        becomes the pipeline's."""
        assert temporal.denoiser is self.denoiser, "a temporal denoiser of another UNet"
        if self._temporal is not None and self._temporal is not temporal:
            self._temporal.hooks.remove()
        self.register_modules(motion_module=temporal.motion)
        self._temporal = temporal

    @property
    def temporal_refiner(self) -> TemporalRefiner | None:
        """The refiner with its temporal layers hooked on (built once per pair; the hooks
        are no-ops in per-frame renders), or None for a model without them."""
        refiner, motion = self.refiner, getattr(self, REFINER_MOTION_FOLDER, None)
        if refiner is None or motion is None:
            return None
        current = self._temporal_refiner
        if current is None or current.motion is not motion or current.refiner is not refiner:
            if current is not None:
                current.hooks.remove()
            self._temporal_refiner = current = TemporalRefiner(refiner, motion)
        return current

    def make_scheduler(self, name: str | None = None):
        """A fresh scheduler (own state) of type ``name`` (None: the model's) with the
        model's noise schedule."""
        return make_scheduler(name or scheduler_key(self.scheduler), self.scheduler)

    # -- step 2: the first frame, once per clip ---------------------------------------------
    @torch.no_grad()
    def encode_source(
        self,
        source_image: np.ndarray,
        source_points: np.ndarray | None = None,
        *,
        model_points: np.ndarray | None = None,
    ) -> EncodedSource:
        """First frame uint8 (H, W, 3) -> what the model conditions on (:class:`EncodedSource`).

        MCLD models also encode the face and hand crops located by ``source_points``
        (133, 3), the first frame's keypoints in its pixels (or ``model_points``, already in
        model pixels, as training batches carry them); without either every region is
        treated as missing (a warning says so). The crops come from the frame at the model
        resolution, as in training (PairDataset).
        """
        proc, device, dtype = self._image_processor, self.device, self.dtype
        img = np.asarray(source_image)[None]  # (1, H, W, 3)
        hidden = encode_source(self.source_encoder, proc.source_pixels(img).to(device, dtype))
        clip_emb = None
        if self.ipf is not None:
            px = proc.preprocess(img, self.ipf.image_size, self.ipf.mean, self.ipf.std)
            clip_emb = self.ipf.embed(px.to(device, dtype))  # (1, D)
        extras: dict[str, torch.Tensor] = {}
        if self.focal_adapter is not None:
            if model_points is None and source_points is not None:
                model_points = proc.points_to_model(source_points, (img.shape[2], img.shape[1]))
            if model_points is None:
                logger.warning(
                    "MCLD model without source keypoints: face and hands treated as missing"
                )
                model_points = np.zeros((133, 3), np.float32)
            x = proc.preprocess(img, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # [0, 1]
            hidden_f, present = self.focal_adapter.encode_regions(
                self.source_encoder, x.to(device), torch.from_numpy(np.asarray(model_points))[None],
                proc.source_mean, proc.source_std,
            )  # fmt: skip
            extras.update(focal_hidden=hidden_f, focal_present=present)
        extras.update(
            self.denoiser.encode_source_extras(self.vae, proc.preprocess(img).to(device, dtype))
        )
        return EncodedSource(hidden, clip_emb, width=img.shape[2], height=img.shape[1],
                             extras=extras)  # fmt: skip

    def prepare_clip(
        self,
        source_image: np.ndarray,
        options: RenderOptions,
        source_points: np.ndarray | None = None,
    ) -> ClipSource:
        """Encode the first frame and bind the post-processors ``options`` ask for (the
        detail transfer: ``options.detail_transfer``, None = the model's threshold; the
        source refiner: ``options.refine`` and a model that has one)."""
        post = []
        threshold = (
            self.detail_transfer if options.detail_transfer is None else options.detail_transfer
        )
        if threshold > 0:
            post.append(
                DetailTransfer(threshold).bind(np.asarray(source_image), self._image_processor)
            )
        refine = None
        if options.refine and self.refiner is not None:
            refine = uint8_to_tensor(np.asarray(source_image))  # (1, 3, H, W)
        return ClipSource(
            self.encode_source(source_image, source_points), tuple(post), refine_source=refine
        )

    # -- the render ---------------------------------------------------------------------------
    def render(
        self,
        source_image: np.ndarray,
        keypoints: KeypointSequence,
        options: RenderOptions | None = None,
        *,
        source_points: np.ndarray | None = None,
        progress: bool | Any = False,
        **changes: Any,
    ) -> Iterator[np.ndarray]:
        """Yield the clip's frames batch by batch as uint8 (b, H, W, 3), in order.

        ``source_image`` is the first frame (H, W, 3) uint8 RGB; the output has its exact
        size. ``keypoints`` has one pose per output frame. ``options``: how to render
        (default :class:`RenderOptions`), with ``changes`` applied (e.g. ``steps=10``).
        MCLD models: ``source_points`` (133, 3) are the first frame's keypoints in its
        pixels (default: the first pose of ``keypoints``). ``progress``: a tqdm bar (or
        True for a new one on stderr) updated per frame, or with ``options.temporal`` per
        frame and denoising step (frames x steps in all).
        """
        opts = options or RenderOptions()
        if changes:
            opts = opts.replace(**changes)
        # 1. Check inputs and options (before any compute).
        kp = check_clip(source_image, keypoints)
        self.guidance_plan(opts)
        if self.focal_adapter is not None and source_points is None:
            source_points = kp.points[0]
        bar = _progress_bar(progress, len(kp) * (self.steps_for(opts) if opts.temporal else 1))
        try:
            # 2. The first frame, once per clip.
            clip = self.prepare_clip(source_image, opts, source_points)
            if opts.temporal:  # 3-7 for the whole clip (render_clips)
                for _, frames in self.render_clips([clip], [kp.points], opts, progress=bar):
                    yield frames
                return
            for start in range(0, len(kp), opts.batch_size):
                stop = min(start + opts.batch_size, len(kp))
                frames = self.render_frames(
                    [clip] * (stop - start), kp.points[start:stop], list(range(start, stop)), opts
                )
                if bar is not None:
                    bar.update(stop - start)
                yield np.stack(frames)  # (b, H, W, 3)
        finally:
            if bar is not None and progress is True:
                bar.close()

    # Over 80 lines: the temporal render's steps 3-7 share the clips' frame tables (points,
    # sizes, sources, fusion embeddings) through the window prediction function; split up,
    # they would travel as a dozen arguments. Its numbered steps are those of the module
    # docstring.
    @torch.no_grad()
    def render_clips(
        self,
        clips: Sequence[ClipSource],
        points: Sequence[np.ndarray],
        options: RenderOptions | None = None,
        *,
        seeds: Sequence[int] | None = None,
        progress: Any = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Temporal render of whole clips (docs/temporal.md): yields ``(clip index, frames)``,
        frames uint8 (b, H_i, W_i, 3) at that clip's first-frame size, clip after clip, in
        frame order, batches of ``options.batch_size`` frames.

        ``clips[k]`` is clip k's prepared first frame (:meth:`prepare_clip`), ``points[k]``
        its keypoints (T_k, 133, 3) in that first frame's pixels, ``seeds[k]`` its seed
        (default ``options.seed`` for all). The clips are denoised together: windows of W
        frames (overlap O, :meth:`temporal_settings`) of every clip, ``batch_size // W`` of
        them per model call (at least one), so short clips share calls; a clip's frames do
        not depend on the clips it is rendered with (up to float rounding). ``progress``: a
        tqdm bar updated per frame and denoising step.
        """
        # Over 80 lines: steps 3-7 of the render path for a set of clips, in the order of
        # docs/render_path.md; the window closures share the clips' frame layout built here.
        opts = options or RenderOptions(temporal=True)
        plan = self.guidance_plan(opts)
        window, overlap, taper = self.temporal_settings(opts)
        temporal = self.temporal_denoiser if self.uses_motion_module(opts) else None
        proc = self._image_processor
        device, dtype, nb = self.device, self.dtype, plan.num_branches
        seeds = [opts.seed] * len(clips) if seeds is None else list(seeds)
        assert len(clips) == len(points) == len(seeds) > 0
        # The clips one after the other: frame i of the batch is frame index[i] of clip of[i].
        lengths = [len(p) for p in points]
        offsets = np.cumsum([0, *lengths])
        of = np.repeat(np.arange(len(clips)), lengths)  # (T,)
        index = np.concatenate([np.arange(n) for n in lengths])  # (T,)
        kp = np.concatenate([np.asarray(p, np.float32) for p in points])  # (T, 133, 3)
        assert kp.shape[1:] == (133, 3), kp.shape
        sizes = [(c.encoded.width, c.encoded.height) for c in clips]
        windows, weights = [], []
        for k, n in enumerate(lengths):
            spans = window_plan(n, window, overlap)
            windows += [(s + int(offsets[k]), e + int(offsets[k])) for s, e in spans]
            weights += window_weights(spans, taper)

        def frames(idx: np.ndarray) -> tuple[list[EncodedSource], list[tuple[int, int]]]:
            return [clips[of[i]].encoded for i in idx], [sizes[of[i]] for i in idx]

        # 3. Per-frame fusion embeddings, once per clip (T, D) on the CPU; pose images are
        #    drawn per window below, never kept for the whole clip.
        fusion = None
        if self.ipf is not None:
            parts = []
            for s in range(0, len(kp), opts.batch_size):
                idx = np.arange(s, min(s + opts.batch_size, len(kp)))
                srcs, sz = frames(idx)
                ipf_pose = self.ipf.preprocess(proc.draw_poses(kp[idx], sz, self.ipf.image_size))
                parts.append(self._fusion(srcs, None, ipf_pose).float().cpu())
            fusion = torch.cat(parts)  # (T, D)

        # 4. Initial noise, one generator per frame: the clip's latents, on the CPU.
        h, w = (v // self.vae_scale_factor for v in self.resolution)
        noise, gens = initial_noise([seeds[k] for k in of], index.tolist(),
                                    (self.unet.config.out_channels, h, w),
                                    independent=opts.independent_noise)  # fmt: skip

        def predict(spans, model_input, t):
            """Guided predictions (n, L, c, h, w) of n windows of L frames, on the CPU."""
            idx = np.concatenate([np.arange(s, e) for s, e in spans])  # window-major frames
            n_frames, length = len(idx), spans[0][1] - spans[0][0]
            x = torch.cat([model_input(s, e) for s, e in spans]).to(device, dtype)  # (n*L, c, h, w)
            srcs, sz = frames(idx)
            pose = uint8_to_tensor(proc.draw_poses(kp[idx], sz)).to(device, dtype)
            f = None if fusion is None else fusion[idx].to(device, dtype)
            cond = self._conditions(srcs, pose, f, plan)
            xs, ts = torch.cat([x] * nb), t.to(device).expand(nb * n_frames)
            if temporal is None:  # --no-motion-module: frames alone
                pred = self.denoiser.denoise(xs, ts, cond).float()
            else:
                pred = temporal.denoise(xs, ts, cond, num_frames=length).float()
            return plan.combine(pred).view(len(spans), length, *x.shape[1:]).cpu()

        # 5. Denoise: the one loop, window by window.
        latents = sample(
            predict, self.make_scheduler(opts.scheduler), noise, self.steps_for(opts),
            windows=windows, weights=weights,
            windows_per_call=max(1, opts.batch_size // window), generators=gens,
            on_run=None if progress is None else progress.update,
            consume_noise=True,  # the clip's noise becomes its latents: one (T, c, h, w) copy
        )  # fmt: skip
        # 6. Decode and 7. map back, per clip in batches of frames (in windows of frames
        #    through the refiner's temporal layers, when they run).
        temporal_refine = opts.temporal_refine and self.temporal_refiner is not None
        for k, clip in enumerate(clips):
            lo, hi = int(offsets[k]), int(offsets[k + 1])
            if temporal_refine and clip.refine_source is not None:
                for frames in self._finish_windows(clip, latents[lo:hi], kp[lo:hi]):
                    yield k, frames
                continue
            for s in range(lo, hi, opts.batch_size):
                e = min(s + opts.batch_size, hi)
                images = decode(self.vae, latents[s:e].to(device), dtype)  # (b, 3, H, W)
                yield k, np.stack(self._finish([clip] * (e - s), images, kp[s:e]))

    def __call__(self, source_image: np.ndarray, keypoints: KeypointSequence, *args, **kwargs):
        """All frames at once, uint8 (T, H, W, 3); prefer :meth:`render` for long clips."""
        return np.concatenate(list(self.render(source_image, keypoints, *args, **kwargs)))

    @torch.no_grad()
    def render_frames(
        self,
        clips: Sequence[ClipSource],
        points: np.ndarray,
        frame_indices: Sequence[int],
        options: RenderOptions | None = None,
        *,
        seed: int | Sequence[int] | None = None,
        scheduler: Any = None,
    ) -> list[np.ndarray]:
        """Generate one batch of frames; the frames may come from different clips.

        ``clips[i]`` is frame i's prepared clip (:meth:`prepare_clip`), ``points[i]``
        (133, 3) its keypoints in that first frame's pixels, ``frame_indices[i]`` its index
        in the clip, ``seed`` its clip's seed (one per frame, or one for all; default
        ``options.seed``). Returns b uint8 (H_i, W_i, 3) frames at each first frame's size.
        """
        opts = options or RenderOptions()
        proc = self._image_processor
        points = np.asarray(points, dtype=np.float32)
        assert points.shape == (len(clips), 133, 3), points.shape
        sizes = [(c.encoded.width, c.encoded.height) for c in clips]
        # 3. Pose images in each first frame's geometry, at the model resolution (b, 3, H, W)
        #    in [0, 1], and for the IPF at its input size.
        pose = uint8_to_tensor(proc.draw_poses(points, sizes))
        ipf_pose = None
        if self.ipf is not None:
            ipf_pose = self.ipf.preprocess(proc.draw_poses(points, sizes, self.ipf.image_size))
        images = self.generate([c.encoded for c in clips], pose, frame_indices, opts,
                               seed=seed, ipf_pose=ipf_pose, scheduler=scheduler)  # fmt: skip
        return self._finish(clips, images, points)

    def _finish(
        self, clips: Sequence[ClipSource], images: torch.Tensor, points: np.ndarray
    ) -> list[np.ndarray]:
        """7. Images (b, 3, H, W) at the model resolution -> b uint8 (H_i, W_i, 3) frames:
        back to each first frame's exact size, the source refiner (for clips prepared with
        it; ``points[i]`` (133, 3): frame i's keypoints), then the clip's post-processors."""
        sizes = [(c.encoded.width, c.encoded.height) for c in clips]
        frames = self._image_processor.postprocess(images, sizes)
        out = []
        for clip, frame, pts, size in zip(clips, frames, points, sizes, strict=True):
            if clip.refine_source is not None:
                frame = self.refine(frame, clip.refine_source, self.refiner_pose(pts, size))
            out.append(self._post(clip, frame))
        return out

    @staticmethod
    def _post(clip: ClipSource, frame: torch.Tensor) -> np.ndarray:
        """The clip's post-processors on one (1, 3, H, W) frame -> uint8 (H, W, 3)."""
        for post in clip.postprocess:
            frame = post(frame)  # (1, 3, H_i, W_i)
        return tensor_to_uint8(frame)[0]

    def _finish_windows(
        self, clip: ClipSource, latents: torch.Tensor, points: np.ndarray
    ) -> Iterator[np.ndarray]:
        """7. with the refiner's temporal layers, for one clip's latents (T, c, h, w) and
        keypoints (T, 133, 3): uint8 (b, H, W, 3) frames in frame order. Windows of the
        layers' ``window`` frames overlapping by ``overlap`` (:mod:`signgen.sampling.windows`)
        are decoded, mapped back and refined together; the refined frames are blended where
        windows overlap and yielded as soon as no later window holds them, so memory does
        not grow with the clip."""
        cfg = self.refiner_motion.config
        spans = window_plan(len(latents), int(cfg.window), int(cfg.overlap))
        weights = window_weights(spans, str(cfg.taper))
        size = (clip.encoded.width, clip.encoded.height)
        dev, dt = self.device, self.dtype
        blended: dict[int, torch.Tensor] = {}
        ready_in: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # frame -> (render, pose)
        done = 0
        for j, ((s, e), w) in enumerate(zip(spans, weights, strict=True)):
            # Decode, map back and draw the pose once per frame: overlapping windows share them.
            a = max(s, max(ready_in, default=-1) + 1)
            if a < e:
                images = decode(self.vae, latents[a:e].to(dev), dt)
                mapped = self._image_processor.postprocess(images, [size] * (e - a))
                for t, f in zip(range(a, e), mapped, strict=True):
                    ready_in[t] = (f, self.refiner_pose(points[t], size))
            frames = torch.cat([ready_in[t][0] for t in range(s, e)])
            pose = torch.cat([ready_in[t][1] for t in range(s, e)])
            source = clip.refine_source.expand(e - s, -1, -1, -1)
            out = self.temporal_refiner(frames.to(dev, dt), source.to(dev, dt),
                                         pose.to(dev, dt), num_frames=e - s).float().cpu()  # fmt: skip
            for i, t in enumerate(range(s, e)):
                blended[t] = blended.get(t, 0) + float(w[i]) * out[i : i + 1]
            ready = spans[j + 1][0] if j + 1 < len(spans) else len(latents)
            for t in [t for t in ready_in if t < ready]:
                del ready_in[t]
            if ready > done:
                yield np.stack([self._post(clip, blended.pop(t)) for t in range(done, ready)])
                done = ready

    @torch.no_grad()
    def refine(
        self, frame: torch.Tensor, first_frame: torch.Tensor, pose: torch.Tensor
    ) -> torch.Tensor:
        """The source refiner on one frame: (1, 3, H, W) render, first frame and pose image
        in [0, 1] at the output size -> the refined frame (1, 3, H, W) on the CPU."""
        dev, dt = self.device, self.dtype
        out = self.refiner(frame.to(dev, dt), first_frame.to(dev, dt), pose.to(dev, dt))
        return out.float().cpu()

    def refiner_pose(self, points: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """The source refiner's pose image of keypoints (133, 3) in a frame of ``size``
        (W, H): drawn at that size, as :func:`signgen.pose.draw.draw_pose` draws the model's
        (1, 3, H, W) in [0, 1]."""
        from signgen.pose.draw import draw_pose

        return uint8_to_tensor(draw_pose(np.asarray(points), size))

    @torch.no_grad()
    def generate(
        self,
        sources: Sequence[EncodedSource],
        pose: torch.Tensor,
        frame_indices: Sequence[int],
        options: RenderOptions | None = None,
        *,
        seed: int | Sequence[int] | None = None,
        ipf_pose: torch.Tensor | None = None,
        scheduler: Any = None,
    ) -> torch.Tensor:
        """Steps 4-6 from ready pose images: (b, 3, H, W) float pose images in [0, 1] at the
        model resolution -> (b, 3, H, W) float images at the model resolution, nominally in
        [0, 1] (not clamped: resample first, then clamp, as :meth:`render_frames` does).

        :meth:`render_frames` draws the pose images from keypoints; datasets that come with
        their own pose images (DeepFashion's OpenPose-18 skeletons, training batches) call
        this directly. ``ipf_pose``: the IPF's preprocessed pose pixels; None = the IPF
        preprocessing of ``pose`` itself (as in training). ``scheduler``: a scheduler
        object to use instead of a fresh one of ``options.scheduler``.
        """
        opts = options or RenderOptions()
        b = len(sources)
        assert pose.shape == (b, 3, *self.resolution), (tuple(pose.shape), self.resolution)
        assert len(frame_indices) == b
        seed = opts.seed if seed is None else seed
        seeds = [int(seed)] * b if np.ndim(seed) == 0 else [int(s) for s in seed]  # type: ignore[arg-type]
        plan = self.guidance_plan(opts)
        sched = scheduler if scheduler is not None else self.make_scheduler(opts.scheduler)
        pose = pose.to(self.device, self.dtype)
        cond = self._conditions(sources, pose, self._fusion(sources, pose, ipf_pose), plan)
        # 4. Initial noise, one generator per frame.
        h, w = (v // self.vae_scale_factor for v in self.resolution)
        noise, gens = initial_noise(seeds, frame_indices, (self.unet.config.out_channels, h, w),
                                    independent=opts.independent_noise)  # fmt: skip
        # 5. Denoise, 6. decode.
        latents = denoise(self.denoiser, sched, cond, noise.to(self.device), plan,
                          self.steps_for(opts),
                          generators=gens, dtype=self.dtype)  # fmt: skip
        return decode(self.vae, latents, self.dtype)  # (b, 3, H, W)

    def _fusion(
        self,
        sources: Sequence[EncodedSource],
        pose: torch.Tensor | None,
        ipf_pose: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Fusion embeddings (b, D) of the frames (None without IPF): the IPF's fusion of
        each source's embedding with its pose, from ``ipf_pose`` (the IPF's preprocessed
        pose pixels) or, when None, the IPF preprocessing of ``pose`` (b, 3, H, W) in [0, 1]
        (as in training)."""
        if self.ipf is None:
            return None
        device, dtype = self.device, self.dtype
        if ipf_pose is None:
            assert pose is not None
            ipf_pose = self.ipf.preprocess(
                pose.float().clamp(0, 1).mul(255).round().to(torch.uint8)
                .permute(0, 2, 3, 1).cpu()
            )  # fmt: skip
        b = ipf_pose.shape[0]
        pose_emb = self.ipf.embed(ipf_pose.to(device, dtype))  # (b, D)
        src_emb = _cat_per_frame([s.clip_emb for s in sources]).expand(b, -1)  # (b, D)
        return self.ipf.fuse(src_emb, pose_emb)  # (b, D)

    def _conditions(
        self,
        sources: Sequence[EncodedSource],
        pose: torch.Tensor,
        fusion: torch.Tensor | None,
        plan: GuidancePlan,
    ) -> Any:
        """The denoiser's conditions of the branches ``plan`` runs, stacked along the batch
        (nb*b rows each, branch-major): pose images (b, 3, H, W) on the device, per-frame
        sources (one object per clip: its tokens are then broadcast, not copied)."""
        b, nb = pose.shape[0], plan.num_branches
        hidden = _cat_per_frame([s.hidden for s in sources])  # (1|b, N, Ds)
        extras = {k: _per_branch(_cat_per_frame([s.extras[k] for s in sources]), nb)
                  for k in sources[0].extras}  # fmt: skip
        return self.denoiser.encode_conditions(
            pose.repeat(nb, 1, 1, 1),  # (nb*b, 3, H, W)
            _per_branch(hidden, nb),
            None if fusion is None else fusion.repeat(nb, 1),
            **plan.drop_masks(b, self.device),
            **extras,
        )


# ---- helpers ------------------------------------------------------------------------------
def _cat_per_frame(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-frame (1, ...) tensors -> (1, ...) when all are the same object, else (b, ...)."""
    first = tensors[0]
    if all(t is first for t in tensors):
        return first
    return torch.cat(list(tensors))


def _per_branch(t: torch.Tensor, nb: int) -> torch.Tensor:
    """(1|b, ...) -> (1, ...) kept (broadcast by the denoiser), else (nb*b, ...)."""
    return t if t.shape[0] == 1 else t.repeat(nb, *([1] * (t.ndim - 1)))


def _progress_bar(progress: bool | Any, total: int):
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="frame", desc="render", dynamic_ncols=True)
    return progress or None


# ---- default model --------------------------------------------------------------------------
def load_default_pipeline(
    *, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32
) -> tuple[FPDMPipeline, bool]:
    """(pipeline, trained): the bundled demo model, or, while none is bundled, a tiny
    random-init model from ``configs/model/tiny.yaml`` (seeded) with ``trained=False``."""
    path = default_model_path()
    if (path / MODEL_INDEX).is_file():
        return FPDMPipeline.from_pretrained(path, device=device, dtype=dtype), True
    from signgen.models.config import CONFIG_DIR, load_model_config

    tiny = CONFIG_DIR / "tiny.yaml"
    if not tiny.is_file():
        raise MissingWeightsError(
            f"no bundled demo model at {path} and no {tiny} to build an untrained one; "
            "pass --model DIR"
        )
    pipe = FPDMPipeline.from_config(load_model_config(tiny))
    return pipe.to(resolve_device(device), resolve_dtype(dtype)), False


def _import_component_libraries() -> None:
    """Import every library a model folder's allow-list (``COMPONENT_CLASSES``) may name:
    diffusers' loader looks classes up in modules that are already imported."""
    import diffusers  # noqa: F401
    import transformers  # noqa: F401

    import signgen.models.dinov2
    import signgen.models.ipf
    import signgen.models.mcld
    import signgen.models.modules  # noqa: F401
