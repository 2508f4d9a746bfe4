"""FPDMPipeline: every FPDM component in one object, one folder, and the render loop.

Folder layout (``save_pretrained`` / ``from_pretrained``), diffusers-style::

    model_index.json      component classes, model resolution, source preprocessing,
                          default guidance (W_SRC, W_FUSE; absent = the paper's 2, 2),
                          ``source_residual`` (signgen.models.fpdm; absent = false) and
                          ``detail_transfer`` (signgen.sampling.detail; absent = 0, off)
    vae/  unet/  pose_encoder/  source_encoder/  source_projector/  fusion_mlp/  scheduler/
    ipf/                  (optional) CLIP vision tower + Combiner, see signgen.models.ipf
    focal_adapter/        (optional, MCLD) focal resampler + decoupled cross-attention
                          K/V, see signgen.models.mcld; the UNet folder stays plain

Rendering conventions (see :meth:`FPDMPipeline.render`):

* Geometry: the model runs at its configured resolution. The first frame is letterboxed
  to the model's aspect ratio (replicated borders), resized, and every generated frame
  is mapped back by the exact inverse (resize to the padded size, crop), so the output
  has the first frame's exact width and height. Keypoints go through the same geometry.
  Models with a ``detail_transfer`` threshold then put the first frame's fine detail back
  where the frame did not change (:mod:`signgen.sampling.detail`).
* Noise: by default every frame of a clip starts from the SAME initial latent noise,
  drawn once from ``seed`` (frames then differ only by their pose, which reduces
  flicker). ``independent_noise=True`` draws each frame's noise from a generator seeded
  with (seed, frame index). Either way a frame's noise does not depend on the batch
  size or on which other frames share its batch.
* Memory: frames are generated and yielded batch by batch; nothing grows with the
  length of the sequence except the keypoint array itself.
* MCLD models (a ``focal_adapter``): the face and hand crops of the first frame are
  encoded once per clip, located by the first frame's keypoints (``source_points``;
  default: the first pose of the sequence), and guidance has a fourth branch
  (:func:`signgen.sampling.guidance.focal_cumulative_guidance`, weight ``guidance_focal``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from signgen.errors import InputError, MissingWeightsError
from signgen.fileio import atomic_write_text
from signgen.keypoints.sequence import KeypointSequence
from signgen.models.config import PAPER_GUIDANCE
from signgen.models.encoders import encode_source
from signgen.models.fpdm import FPDMDenoiser
from signgen.models.modules import vae_downscale_factor
from signgen.models.preprocess import (
    VAE_MEAN,
    VAE_STD,
    Letterbox,
    tensor_to_uint8,
    to_model_input,
    uint8_to_tensor,
)
from signgen.sampling import detail
from signgen.sampling.guidance import branch_drop_masks, combine_branches, needed_branches
from signgen.sampling.schedulers import SCHEDULERS, make_scheduler, scheduler_name

logger = logging.getLogger(__name__)

MODEL_INDEX = "model_index.json"
# Keypoint frame size vs first-frame size: rescale (with a warning) when the aspect ratios
# agree within this relative tolerance; otherwise the keypoints belong to another video.
ASPECT_TOLERANCE = 0.01
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---- devices, dtypes, seeds -------------------------------------------------------------
def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is an InputError."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: no CUDA GPU is available (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    elif device.type != "cpu":
        raise InputError(f"unsupported device {name!r}; use auto, cpu or cuda[:N]")
    return device


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def frame_seed(seed: int, frame_index: int | None) -> int:
    """Seed of one frame's generator: ``seed`` itself (shared noise) or a hash of
    (seed, frame_index) (independent noise) via numpy's SeedSequence, so neighbouring
    seeds and frames do not give correlated streams."""
    if frame_index is None:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(frame_index)]).generate_state(1)[0])


# ---- encoded source -----------------------------------------------------------------------
@dataclass
class EncodedSource:
    """What the render loop needs of a clip's first frame; computed once per clip."""

    hidden: torch.Tensor  # (1, N, Ds) source-encoder last hidden state
    clip_emb: torch.Tensor | None  # (1, D) IPF/CLIP embedding of the source, or None
    width: int  # first frame size = output size
    height: int
    focal_hidden: torch.Tensor | None = None  # (1, R, N', Ds) MCLD crop tokens, or None
    focal_present: torch.Tensor | None = None  # (1, R) bool: region found in the first frame
    latents: torch.Tensor | None = None  # (1, c, h, w) scaled VAE latents (spatial-source UNets)
    image: np.ndarray | None = None  # (H, W, 3) uint8 first frame (source detail transfer)
    _layers: tuple[torch.Tensor, torch.Tensor] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def detail_layers(
        self, resolution: tuple[int, int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(full, low) of :func:`signgen.sampling.detail.detail_layers` on ``device``,
        computed and moved there once per clip, not once per frame."""
        if self._layers is None or self._layers[0].device != device:
            if self.image is None:
                raise ValueError("this encoded source keeps no image: no detail transfer")
            full, low = detail.detail_layers(self.image, resolution)
            self._layers = (full.to(device), low.to(device))
        return self._layers


# ---- the pipeline ---------------------------------------------------------------------------
class FPDMPipeline:
    """All FPDM components plus the render loop (numbered steps in :meth:`render_frames`)."""

    def __init__(
        self,
        *,
        vae: Any,
        unet: Any,
        pose_encoder: Any,
        source_encoder: Any,
        source_projector: Any,
        scheduler: Any,
        ipf: Any | None = None,
        fusion_mlp: Any | None = None,
        focal_adapter: Any | None = None,
        resolution: tuple[int, int] = (512, 512),
        source_image_size: tuple[int, int] = (512, 512),
        source_mean: Sequence[float] = (0.485, 0.456, 0.406),
        source_std: Sequence[float] = (0.229, 0.224, 0.225),
        source_residual: bool = False,
        guidance: Sequence[float] = PAPER_GUIDANCE,
        detail_transfer: float = 0.0,
    ) -> None:
        self.vae = vae
        self.source_encoder = source_encoder
        self.ipf = ipf if fusion_mlp is not None else None
        self.scheduler = scheduler
        self.denoiser = FPDMDenoiser(
            unet, pose_encoder, source_projector, fusion_mlp, focal_adapter=focal_adapter,
            source_residual=source_residual,
        )  # fmt: skip
        if source_residual and scheduler.config.prediction_type != "sample":
            raise ValueError(
                "a source-residual model predicts the clean sample: its scheduler's "
                f"prediction_type must be 'sample', not {scheduler.config.prediction_type!r}"
            )
        self.resolution = (int(resolution[0]), int(resolution[1]))  # (H, W)
        self.source_image_size = (int(source_image_size[0]), int(source_image_size[1]))
        self.source_mean = tuple(float(v) for v in source_mean)
        self.source_std = tuple(float(v) for v in source_std)
        # Cumulative guidance (W_SRC, W_FUSE) of renders that give none (model_index.json).
        self.default_guidance = (float(guidance[0]), float(guidance[1]))
        # Source detail transfer threshold of renders that give none (0 = off).
        self.detail_transfer = detail.check_detail_transfer(detail_transfer, ValueError)
        factor = vae_downscale_factor(vae)
        if factor != pose_encoder.downscale_factor:
            raise ValueError(
                f"VAE downsamples by {factor} but the pose encoder by "
                f"{pose_encoder.downscale_factor}; they must agree"
            )
        if self.resolution[0] % factor or self.resolution[1] % factor:
            raise ValueError(f"resolution {self.resolution} must be divisible by {factor}")
        self.vae_scale_factor = factor
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def detail_transfer_or_default(self, threshold: float | None) -> float:
        """Detail-transfer threshold; None = the model's ``detail_transfer``."""
        if threshold is None:
            return self.detail_transfer
        return detail.check_detail_transfer(threshold, InputError)

    def guidance_or_default(self, guidance: Sequence[float] | None) -> tuple[float, float]:
        """(W_SRC, W_FUSE) as floats; None = the model's ``default_guidance``."""
        g = self.default_guidance if guidance is None else guidance
        return (float(g[0]), float(g[1]))

    def eval(self) -> FPDMPipeline:
        """Inference mode for every module (dropout off, no gradients); returns self.

        ``from_config``/``from_pretrained`` do this; components passed in by hand
        (``from_components``, e.g. a training loop's modules) are left as they are.
        """
        for m in self._modules():
            m.eval().requires_grad_(False)
        return self

    # -- components ---------------------------------------------------------------------
    @property
    def unet(self):
        return self.denoiser.unet

    @property
    def pose_encoder(self):
        return self.denoiser.pose_encoder

    @property
    def source_projector(self):
        return self.denoiser.source_projector

    @property
    def fusion_mlp(self):
        return self.denoiser.fusion_mlp

    @property
    def focal_adapter(self):
        return self.denoiser.focal_adapter

    def components(self) -> dict[str, Any]:
        """Components by folder name; ``focal_adapter`` only for MCLD models."""
        extra = {} if self.focal_adapter is None else {"focal_adapter": self.focal_adapter}
        return {
            "vae": self.vae,
            "unet": self.unet,
            "pose_encoder": self.pose_encoder,
            "source_encoder": self.source_encoder,
            "source_projector": self.source_projector,
            "ipf": self.ipf,
            "fusion_mlp": self.fusion_mlp,
            "scheduler": self.scheduler,
            **extra,
        }

    def _modules(self) -> list[torch.nn.Module]:
        return [m for m in self.components().values() if isinstance(m, torch.nn.Module)]

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> FPDMPipeline:
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        for m in self._modules():
            # Only pass dtype when it changes: diffusers warns on every dtype cast.
            m.to(device=device, dtype=None if dtype == self.dtype else dtype)
        self.device, self.dtype = device, dtype
        return self

    @classmethod
    def from_config(cls, cfg: Any) -> FPDMPipeline:
        """Build from an :class:`FPDMModelConfig` (pretrained parts offline, rest random)."""
        from signgen.models.config import build_components

        return cls.from_components(cfg, build_components(cfg, device="cpu")).eval()

    @classmethod
    def from_components(cls, cfg: Any, comps: dict[str, Any]) -> FPDMPipeline:
        """Assemble (e.g. trained) components as returned by ``build_components(cfg)``;
        the resolution and source preprocessing come from ``cfg``."""
        mean, std = cfg.source_mean_std()
        return cls(
            **comps,
            resolution=tuple(cfg.resolution),
            source_image_size=tuple(cfg.source_encoder.image_size),
            source_mean=mean,
            source_std=std,
            source_residual=cfg.unet.source_residual,
            guidance=tuple(cfg.guidance),
            detail_transfer=cfg.detail_transfer,
        )

    # -- persistence --------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write every component and ``model_index.json`` to ``directory`` (replaced whole:
        written to a temporary folder next to it and renamed on success)."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            index: dict[str, Any] = {"_class_name": type(self).__name__}
            from signgen import __version__

            index["_signgen_version"] = __version__
            for name, comp in self.components().items():
                if comp is None:
                    index[name] = [None, None]
                    continue
                lib = type(comp).__module__.split(".")[0]
                index[name] = [lib, type(comp).__name__]
                if name == "scheduler":
                    comp.save_pretrained(tmp / name)
                elif lib == "signgen" and name == "ipf":
                    comp.save_pretrained(tmp / name)
                else:
                    comp.save_pretrained(tmp / name, safe_serialization=True)
            index["resolution"] = list(self.resolution)
            index["source_preprocess"] = {
                "image_size": list(self.source_image_size),
                "mean": list(self.source_mean),
                "std": list(self.source_std),
            }
            index["guidance"] = list(self.default_guidance)
            if self.denoiser.source_residual:  # absent = False (every paper recipe)
                index["source_residual"] = True
            if self.detail_transfer:  # absent = 0, off (every paper recipe)
                index["detail_transfer"] = self.detail_transfer
            atomic_write_text(tmp / MODEL_INDEX, json.dumps(index, indent=2))
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
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        local_files_only: bool = True,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
    ) -> FPDMPipeline:
        """Load a pipeline folder: a local directory or a Hugging Face hub id.

        Hub ids resolve through the local cache only by default (``local_files_only``;
        set ``HF_HOME`` to the cache, ``HF_HUB_OFFLINE=1`` to forbid the network).
        Missing components raise :class:`MissingWeightsError` naming the folder.
        """
        root = _resolve_model_dir(path, local_files_only)
        index_path = root / MODEL_INDEX
        if not index_path.is_file():
            raise MissingWeightsError(f"{root} is not an FPDM model folder (no {MODEL_INDEX})")
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as exc:
            raise MissingWeightsError(f"{index_path} is not valid JSON: {exc}") from None
        comps: dict[str, Any] = {}
        for name in ("vae", "unet", "pose_encoder", "source_encoder", "source_projector",
                     "scheduler", "ipf", "fusion_mlp", "focal_adapter"):  # fmt: skip
            entry = index.get(name)
            if entry is None or entry == [None, None]:
                if name in ("ipf", "fusion_mlp", "focal_adapter"):
                    comps[name] = None
                    continue
                raise MissingWeightsError(f"{index_path} lists no {name!r} component")
            comps[name] = _load_component(root, name, tuple(entry))
        pre = index.get("source_preprocess", {})
        pipe = cls(
            **comps,
            resolution=tuple(index.get("resolution", (512, 512))),
            source_image_size=tuple(pre.get("image_size", (512, 512))),
            source_mean=pre.get("mean", (0.485, 0.456, 0.406)),
            source_std=pre.get("std", (0.229, 0.224, 0.225)),
            source_residual=bool(index.get("source_residual", False)),
            guidance=tuple(index.get("guidance", PAPER_GUIDANCE)),
            detail_transfer=float(index.get("detail_transfer", 0.0)),
        )
        return pipe.eval().to(resolve_device(device), resolve_dtype(dtype))

    # -- step 1: inputs -------------------------------------------------------------------
    @staticmethod
    def check_inputs(
        source_image: np.ndarray,
        keypoints: KeypointSequence,
        num_inference_steps: int,
        batch_size: int,
        guidance: tuple[float, float],
    ) -> KeypointSequence:
        """Validate before any compute; returns keypoints in the first frame's pixels.

        Keypoints measured on a frame of another size are rescaled (with a warning) when
        the aspect ratios agree within 1 %; otherwise they belong to another video and
        this is an error. A static method: it needs no model, so CPU stages of distributed
        jobs validate clips before any GPU time is spent.
        """
        img = np.asarray(source_image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InputError(
                f"first frame must be uint8 (H, W, 3) RGB, got {img.dtype} {img.shape}"
            )
        if min(img.shape[:2]) < 2:
            raise InputError(f"first frame is too small: {img.shape[1]}x{img.shape[0]}")
        if not isinstance(num_inference_steps, int) or num_inference_steps <= 0:
            raise InputError(f"steps must be a positive integer, got {num_inference_steps!r}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise InputError(f"batch size must be a positive integer, got {batch_size!r}")
        if len(guidance) != 2 or not all(np.isfinite(float(w)) for w in guidance):
            raise InputError(f"guidance must be two finite numbers W_SRC W_FUSE, got {guidance!r}")
        if len(keypoints) == 0:
            raise InputError("keypoint sequence has 0 frames: nothing to render")
        h, w = img.shape[:2]
        if (keypoints.width, keypoints.height) != (w, h):
            kp_aspect = keypoints.width / keypoints.height
            aspect = w / h
            if abs(kp_aspect / aspect - 1) > ASPECT_TOLERANCE:
                raise InputError(
                    f"keypoints are for {keypoints.width}x{keypoints.height} frames but the first "
                    f"frame is {w}x{h} (different aspect ratio): they do not belong to this "
                    "video; convert them to the frame's size first"
                )
            logger.warning(
                "keypoints are for %dx%d frames, the first frame is %dx%d: rescaling keypoints",
                keypoints.width,
                keypoints.height,
                w,
                h,
            )
            keypoints = keypoints.rescaled(w, h)
        return keypoints

    # -- step 2: source, once per clip ------------------------------------------------------
    @torch.no_grad()
    def encode_source(
        self, source_image: np.ndarray, source_points: np.ndarray | None = None
    ) -> EncodedSource:
        """First frame uint8 (H, W, 3) -> source-encoder tokens and its IPF embedding.

        MCLD models also encode the face and hand crops located by ``source_points``
        (133, 3), the first frame's keypoints in its pixels; without them every region is
        treated as missing (a warning says so).
        """
        img = np.asarray(source_image)[None]  # (1, H, W, 3)
        px = to_model_input(img, self.source_image_size, self.source_mean, self.source_std)
        hidden = encode_source(self.source_encoder, px.to(self.device, self.dtype))  # (1, N, Ds)
        clip_emb = None
        if self.ipf is not None:
            clip_px = self.ipf.preprocess(img).to(self.device, self.dtype)
            clip_emb = self.ipf.embed(clip_px)  # (1, D)
        focal_hidden = focal_present = None
        if self.focal_adapter is not None:
            focal_hidden, focal_present = self._encode_focal(img, source_points)
        latents = None
        if self.denoiser.source_latent_channels:  # pixel-aligned source (signgen.models.fpdm)
            x = to_model_input(img, self.resolution).to(self.device, self.dtype)  # [-1, 1]
            dist = self.vae.encode(x).latent_dist
            latents = dist.mode() * self.vae.config.scaling_factor  # (1, c, h, w)
        return EncodedSource(
            hidden, clip_emb, width=img.shape[2], height=img.shape[1],
            focal_hidden=focal_hidden, focal_present=focal_present, latents=latents,
            image=img[0],
        )  # fmt: skip

    def _encode_focal(
        self, img: np.ndarray, points: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, H, W, 3) uint8 + (133, 3) keypoints in its pixels -> crop tokens, present.

        The crops come from the frame letterboxed to the model resolution, with the
        keypoints mapped the same way, exactly as in training (PairDataset)."""
        mh, mw = self.resolution
        if points is None:
            logger.warning("MCLD model without source keypoints: face and hands treated as missing")
            points = np.zeros((133, 3), np.float32)
        box = Letterbox.fit((img.shape[2], img.shape[1]), (mw, mh))
        pw, ph = box.padded_size
        pts = box.points_to_padded(np.asarray(points, np.float32))
        pts = pts * np.array([mw / pw, mh / ph, 1.0], np.float32)  # model pixels
        x = to_model_input(img, self.resolution, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # [0, 1]
        return self.focal_adapter.encode_regions(
            self.source_encoder, x.to(self.device), torch.from_numpy(pts)[None],
            self.source_mean, self.source_std,
        )  # fmt: skip

    # -- the render loop ----------------------------------------------------------------------
    def render(
        self,
        source_image: np.ndarray,
        keypoints: KeypointSequence,
        *,
        num_inference_steps: int = 20,
        guidance: tuple[float, float] | None = None,
        scheduler: str | None = None,
        seed: int = 0,
        batch_size: int = 8,
        independent_noise: bool = False,
        progress: bool | Any = False,
        guidance_focal: float | None = None,
        source_points: np.ndarray | None = None,
        detail_transfer: float | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield the clip's frames batch by batch as uint8 (b, H, W, 3), in order.

        ``source_image`` is the first frame (H, W, 3) uint8 RGB; the output has its exact
        size. ``keypoints`` has one pose per output frame. ``progress``: a tqdm bar (or
        True for a new one on stderr) updated per frame. ``guidance`` (W_SRC, W_FUSE): None
        = the model's ``default_guidance`` (model_index.json). MCLD models only:
        ``guidance_focal`` (default: the model's) weights the focal-token guidance term;
        ``source_points`` (133, 3) are the first frame's keypoints in its pixels (default:
        the first pose of ``keypoints``).
        ``detail_transfer``: threshold of the source detail transfer
        (:mod:`signgen.sampling.detail`); None = the model's, 0 = off.
        """
        # 1. Check inputs (before any compute). No guidance = the model's default.
        guidance = self.guidance_or_default(guidance)
        detail_transfer = self.detail_transfer_or_default(detail_transfer)
        kp = self.check_inputs(source_image, keypoints, num_inference_steps, batch_size, guidance)
        self.check_focal(guidance_focal)
        if self.focal_adapter is not None and source_points is None:
            source_points = kp.points[0]
        sched = self.make_scheduler(scheduler)
        bar = _progress_bar(progress, len(kp))
        try:
            # 2. Encode the source once per clip.
            src = self.encode_source(source_image, source_points)
            for start in range(0, len(kp), batch_size):
                stop = min(start + batch_size, len(kp))
                frames = self.render_frames(
                    [src] * (stop - start),
                    kp.points[start:stop],
                    list(range(start, stop)),
                    seed=seed,
                    num_inference_steps=num_inference_steps,
                    guidance=guidance,
                    scheduler=sched,
                    independent_noise=independent_noise,
                    guidance_focal=guidance_focal,
                    detail_transfer=detail_transfer,
                )
                if bar is not None:
                    bar.update(stop - start)
                yield np.stack(frames)  # (b, H, W, 3)
        finally:
            if bar is not None and progress is True:
                bar.close()

    def check_focal(self, guidance_focal: float | None) -> None:
        """``guidance_focal`` needs an MCLD model and must be finite."""
        if guidance_focal is None:
            return
        if self.focal_adapter is None:
            raise InputError(
                "focal guidance given, but this model has no focal (MCLD) conditioning"
            )
        if not np.isfinite(float(guidance_focal)):
            raise InputError(f"focal guidance must be a finite number, got {guidance_focal!r}")

    def __call__(self, source_image: np.ndarray, keypoints: KeypointSequence, **kwargs):
        """All frames at once, uint8 (T, H, W, 3); prefer :meth:`render` for long clips."""
        return np.concatenate(list(self.render(source_image, keypoints, **kwargs)))

    def make_scheduler(self, name: str | None = None):
        """A fresh scheduler (own state) of type ``name`` with the model's noise schedule."""
        if name is None:
            return make_scheduler(_scheduler_key(self.scheduler), self.scheduler)
        return make_scheduler(scheduler_name(name), self.scheduler)

    @torch.no_grad()
    def render_frames(
        self,
        sources: Sequence[EncodedSource],
        points: np.ndarray,
        frame_indices: Sequence[int],
        *,
        seed: int | Sequence[int] = 0,
        num_inference_steps: int = 20,
        guidance: tuple[float, float] | None = None,
        scheduler: Any = None,
        independent_noise: bool = False,
        guidance_focal: float | None = None,
        detail_transfer: float | None = None,
    ) -> list[np.ndarray]:
        """Generate one batch of frames; the frames may come from different clips.

        ``sources[i]`` is the encoded first frame of frame i's clip, ``points[i]`` (133, 3)
        its keypoints in that first frame's pixels, ``frame_indices[i]`` its index in the
        clip and ``seed`` (one per frame, or one for all) its clip's seed. Returns b uint8
        (H_i, W_i, 3) frames at each source's size. ``guidance_focal``: MCLD models only
        (default: the model's ``guidance``). ``detail_transfer``: threshold of the source
        detail transfer (:mod:`signgen.sampling.detail`; None = the model's, 0 = off).
        """
        tau = self.detail_transfer_or_default(detail_transfer)
        b = len(sources)
        points = np.asarray(points, dtype=np.float32)
        assert points.shape == (b, 133, 3), points.shape
        mh, mw = self.resolution

        # 3. Per frame: pose image at model resolution (in the letterboxed geometry of its
        #    first frame) and, for IPF, at the IPF's input size.
        boxes = [Letterbox.fit((s.width, s.height), (mw, mh)) for s in sources]
        pose = uint8_to_tensor(_draw_poses(points, boxes, (mw, mh)))  # (b, 3, mh, mw) in [0,1]
        ipf_pose = None
        if self.ipf is not None:
            ih, iw = self.ipf.image_size
            ipf_boxes = [Letterbox.fit((s.width, s.height), (iw, ih)) for s in sources]
            ipf_pose = self.ipf.preprocess(_draw_poses(points, ipf_boxes, (iw, ih)))
        images = self.generate(
            sources, pose, frame_indices, ipf_pose=ipf_pose, seed=seed,
            num_inference_steps=num_inference_steps, guidance=guidance, scheduler=scheduler,
            independent_noise=independent_noise, guidance_focal=guidance_focal,
        )  # fmt: skip

        # 7. Map back to each first frame's exact size (inverse letterbox), then put back the
        #    first frame's detail where the frame did not change (signgen.sampling.detail).
        out = []
        for i, box in enumerate(boxes):
            frame = box.invert(images[i : i + 1])  # (1, 3, H_i, W_i)
            if tau:
                frame = detail.transfer_detail(
                    frame, *sources[i].detail_layers(self.resolution, frame.device), tau
                )
            out.append(tensor_to_uint8(frame)[0])
        return out

    @torch.no_grad()
    def generate(
        self,
        sources: Sequence[EncodedSource],
        pose: torch.Tensor,
        frame_indices: Sequence[int],
        *,
        ipf_pose: torch.Tensor | None = None,
        seed: int | Sequence[int] = 0,
        num_inference_steps: int = 20,
        guidance: tuple[float, float] | None = None,
        scheduler: Any = None,
        independent_noise: bool = False,
        guidance_focal: float | None = None,
    ) -> torch.Tensor:
        """Steps 3-6 from ready pose images: (b, 3, H, W) float pose images in [0, 1] at the
        model resolution -> (b, 3, H, W) float images at the model resolution, nominally in
        [0, 1] (not clamped: resample first, then clamp, as :meth:`render_frames` does).

        :meth:`render_frames` draws the pose images from keypoints; datasets that come with
        their own pose images (DeepFashion's OpenPose-18 skeletons, ``target_pose``) call this
        directly. ``ipf_pose``: the IPF's preprocessed pose pixels; None = the IPF
        preprocessing of ``pose`` itself (as in training).
        """
        b = len(sources)
        assert pose.shape == (b, 3, *self.resolution), (tuple(pose.shape), self.resolution)
        assert len(frame_indices) == b
        seeds = [int(seed)] * b if np.ndim(seed) == 0 else [int(s) for s in seed]  # type: ignore[arg-type]
        sched = scheduler if scheduler is not None else self.make_scheduler()
        device, dtype = self.device, self.dtype
        mh, mw = self.resolution
        pose = pose.to(device, dtype)
        hidden = _cat_per_frame([s.hidden for s in sources])  # (1|b, N, Ds)
        fusion = None
        if self.ipf is not None:
            if ipf_pose is None:
                ipf_pose = self.ipf.preprocess(
                    pose.float().clamp(0, 1).mul(255).round().to(torch.uint8)
                    .permute(0, 2, 3, 1).cpu()
                )  # fmt: skip
            pose_emb = self.ipf.embed(ipf_pose.to(device, dtype))  # (b, D)
            src_emb = _cat_per_frame([s.clip_emb for s in sources]).expand(b, -1)  # (b, D)
            fusion = self.ipf.fuse(src_emb, pose_emb)  # (b, D)

        # Conditions of the guidance branches, computed once: [uncond; src; full], or
        # [uncond; src; focal; full] for MCLD models; only those whose guidance weight is
        # not 0 (no guidance runs `full` alone, the paper's 2, 2 `uncond` and `full`).
        cond_kw: dict[str, Any] = {}
        w_focal = None
        if self.focal_adapter is not None:
            self.check_focal(guidance_focal)
            w_focal = float(self.focal_adapter.config.guidance if guidance_focal is None
                            else guidance_focal)  # fmt: skip
        w_src, w_fuse = self.guidance_or_default(guidance)
        branches = needed_branches(w_src, w_fuse, w_focal)
        nb = len(branches)
        if w_focal is not None and sources[0].focal_hidden is not None:
            fh = _cat_per_frame([s.focal_hidden for s in sources])  # (1|b, R, N', Ds)
            fp = _cat_per_frame([s.focal_present for s in sources])  # (1|b, R)
            cond_kw = {"focal_hidden": fh if fh.shape[0] == 1 else fh.repeat(nb, 1, 1, 1),
                       "focal_present": fp if fp.shape[0] == 1 else fp.repeat(nb, 1)}  # fmt: skip
        if self.denoiser.source_latent_channels:
            sl = _cat_per_frame([s.latents for s in sources])  # (1|b, c, h, w)
            cond_kw["source_latents"] = sl if sl.shape[0] == 1 else sl.repeat(nb, 1, 1, 1)
        cond = self.denoiser.encode_conditions(
            pose.repeat(nb, 1, 1, 1),  # (nb*b, 3, mh, mw)
            hidden if hidden.shape[0] == 1 else hidden.repeat(nb, 1, 1),
            None if fusion is None else fusion.repeat(nb, 1),
            **branch_drop_masks(b, device, focal=w_focal is not None, branches=branches),
            **cond_kw,
        )

        # 4. Initial latents: per-frame generators, so noise is independent of batching.
        gens = [
            torch.Generator("cpu").manual_seed(frame_seed(s, i if independent_noise else None))
            for s, i in zip(seeds, frame_indices)
        ]
        shape = (
            self.unet.config.out_channels,
            mh // self.vae_scale_factor,
            mw // self.vae_scale_factor,
        )
        latents = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)
        sched.set_timesteps(num_inference_steps, device=device)
        latents = latents * sched.init_noise_sigma  # (b, 4, h, w) float32

        # 5. Denoise: ONE batched UNet call per step for all branches.
        step_kwargs = {"generator": gens} if _accepts_generator(sched) else {}
        for t in sched.timesteps:
            x = sched.scale_model_input(torch.cat([latents] * nb), t)  # (nb*b, 4, h, w)
            pred = self.denoiser.denoise(x.to(dtype), t.expand(nb * b), cond).float()
            pred = combine_branches(pred, w_src, w_fuse, w_focal, branches)  # (b, 4, h, w)
            latents = sched.step(pred, t, latents, **step_kwargs, return_dict=False)[0]

        # 6. Decode with the VAE.
        sf = self.vae.config.scaling_factor
        images = self.vae.decode((latents / sf).to(dtype), return_dict=False)[0]  # (b,3,mh,mw)
        return (images.float() * torch.tensor(VAE_STD, device=device).view(1, 3, 1, 1)
                + torch.tensor(VAE_MEAN, device=device).view(1, 3, 1, 1))  # fmt: skip


# ---- helpers ------------------------------------------------------------------------------
def _draw_poses(
    points: np.ndarray, boxes: Sequence[Letterbox], size: tuple[int, int]
) -> np.ndarray:
    """(b, 133, 3) keypoints in first-frame pixels -> (b, H, W, 3) uint8 pose images drawn
    in the letterboxed geometry of ``boxes`` at ``size`` = (W, H)."""
    from signgen.pose.draw import draw_pose

    out = np.zeros((len(boxes), size[1], size[0], 3), dtype=np.uint8)
    for i, box in enumerate(boxes):
        out[i] = draw_pose(box.points_to_padded(points[i]), box.padded_size, size)
    return out


def _cat_per_frame(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-frame (1, ...) tensors -> (1, ...) when all are the same object, else (b, ...)."""
    first = tensors[0]
    if all(t is first for t in tensors):
        return first
    return torch.cat(list(tensors))


def _accepts_generator(scheduler: Any) -> bool:
    import inspect

    return "generator" in inspect.signature(scheduler.step).parameters


def _scheduler_key(scheduler: Any) -> str:
    for key, (cls, extra) in SCHEDULERS.items():
        if type(scheduler) is cls and all(scheduler.config.get(k) == v for k, v in extra.items()):
            return key
    raise ValueError(f"unsupported scheduler class {type(scheduler).__name__}")


def _progress_bar(progress: bool | Any, total: int):
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="frame", desc="render", dynamic_ncols=True)
    return progress or None


def _resolve_model_dir(path: str | os.PathLike, local_files_only: bool) -> Path:
    p = Path(path)
    if p.is_dir():
        return p
    text = str(path)
    looks_like_hub_id = text.count("/") == 1 and not p.suffix and not text.startswith((".", "/"))
    if not looks_like_hub_id:
        raise MissingWeightsError(f"model folder not found: {p}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, local_files_only=local_files_only))
    except Exception as exc:  # hub errors vary by version; all mean "absent"
        raise MissingWeightsError(
            f"model {text!r} is neither a local folder nor in the Hugging Face cache "
            f"({type(exc).__name__}); set HF_HOME to the cache that holds it "
            "(signgen loads with local_files_only=True and never downloads)"
        ) from None


def _component_classes() -> dict[tuple[str, str], type]:
    """The classes a model folder may name (an allow-list: nothing else is imported)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionModel, Dinov2Model

    from signgen.models.dinov2 import Dinov2ModelDino
    from signgen.models.ipf import IPFModel
    from signgen.models.mcld import FocalAdapter
    from signgen.models.modules import FusionMLP, PatchAutoencoder, PoseEncoder, SourceProjector

    classes: dict[tuple[str, str], type] = {
        ("diffusers", "AutoencoderKL"): AutoencoderKL,
        ("diffusers", "UNet2DConditionModel"): UNet2DConditionModel,
        ("transformers", "Dinov2Model"): Dinov2Model,
        ("transformers", "CLIPVisionModel"): CLIPVisionModel,
        ("signgen", "Dinov2ModelDino"): Dinov2ModelDino,
        ("signgen", "PatchAutoencoder"): PatchAutoencoder,
        ("signgen", "PoseEncoder"): PoseEncoder,
        ("signgen", "SourceProjector"): SourceProjector,
        ("signgen", "FusionMLP"): FusionMLP,
        ("signgen", "IPFModel"): IPFModel,
        ("signgen", "FocalAdapter"): FocalAdapter,
    }
    for cls, _ in SCHEDULERS.values():
        classes[("diffusers", cls.__name__)] = cls
    return classes


def _load_component(root: Path, name: str, entry: tuple[str, str]) -> Any:
    folder = root / name
    config = folder / ("scheduler_config.json" if name == "scheduler" else "config.json")
    if name == "ipf":
        config = folder / "ipf_config.json"
    if not config.is_file():
        raise MissingWeightsError(
            f"model folder {root} is missing component {name!r} (expected {config})"
        )
    cls = _component_classes().get((entry[0], entry[1]))
    if cls is None:
        raise MissingWeightsError(
            f"{root / MODEL_INDEX}: component {name!r} has unsupported class {entry[0]}.{entry[1]}"
        )
    try:
        if name in ("scheduler", "ipf"):
            return cls.from_pretrained(folder)
        return cls.from_pretrained(folder, local_files_only=True)
    except MissingWeightsError:
        raise
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(
            f"cannot load component {name!r} from {folder}: {str(exc).splitlines()[0]}"
        ) from None


# ---- default model --------------------------------------------------------------------------
def default_model_path() -> Path:
    """The bundled demo model folder (``signgen/assets/demo_model``); may not exist."""
    return Path(__file__).resolve().parents[1] / "assets" / "demo_model"


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
