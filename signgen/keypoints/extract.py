"""Keypoint extraction with mmpose: top-down HRNet whole-body per frame, and the hand detector.

The FPDM paper's keypoints are HRNet COCO-WholeBody (133 points) run top-down: a person
box per frame, the crop warped to the model's input size (e.g. 256x192), heatmaps decoded
back to pixels of the frame. This module wraps mmpose's own pieces for that (the config's
test pipeline, ``model.test_step`` on batches of crops) and adds what a video tool needs:

- **Streaming and batching.** Frames are decoded in batches (``signgen.video``) and every
  batch of crops is one forward pass; only one batch of frames is in memory.
- **The signer's box** (``bbox``):
  ``"full"``   the whole frame for every frame;
  ``x1,y1,x2,y2`` a fixed box in pixels for every frame;
  ``"auto"``   with an mmdet person detector (``detector=``): its highest-scoring person box
  per frame (frames where it finds nobody reuse the last box, or the whole frame).
  Without a detector: the whole frame for the first batch, then for each batch a box derived
  from the keypoints of the previous batch's last frame (confident points, padded by
  ``AUTO_PAD`` of the box size on each side; the whole frame when too few points are
  confident). Sign-language videos show one signer who barely moves, so the previous
  frame's box is a good crop, tighter than the whole frame (hands and face get more
  pixels) and needs no detector; using the previous *batch* keeps the batch one forward
  pass. mmpose itself enlarges every box by 1.25 (``GetBBoxCenterScale``).
- **Safe checkpoints.** mmengine's ``load_checkpoint`` calls ``torch.load`` without
  ``weights_only``; here checkpoints are loaded with ``weights_only=True`` and an allow-list
  of the few non-tensor types that mmpose/mmengine checkpoints carry in their metadata
  (numpy arrays and scalars, mmengine's ``HistoryBuffer``). Anything else is refused with an
  error naming it. A missing checkpoint is an error; the model is never used with random
  weights.

Images enter as RGB uint8 (signgen's convention) and are flipped to BGR, which is what
mmpose's pipelines (OpenCV loading) and their ``bgr_to_rgb`` preprocessors expect.
Scores are the heatmap maxima of the model, clipped to [0, 1].
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from signgen.errors import FormatError, InputError, MissingWeightsError, UnsafePickleError
from signgen.keypoints.layout import NUM_POINTS
from signgen.keypoints.sequence import KeypointSequence

logger = logging.getLogger(__name__)

BBOX_MODES = ("auto", "full")
AUTO_PAD = 0.2  # fraction of the keypoint box added on each side in bbox="auto"
AUTO_MIN_SCORE = 0.3  # keypoints at least this confident define the auto box
AUTO_MIN_POINTS = 4  # fewer confident points -> whole frame
DEFAULT_BATCH_SIZE = 8


# ---- devices, configs, checkpoints ------------------------------------------------------


def _checkpoint_safe_globals() -> list[Any]:
    """Non-tensor types admitted when unpickling a checkpoint (``torch.load`` allow-list).

    mmpose/mmengine checkpoints keep numpy arrays and scalars in ``meta`` (dataset_meta,
    seeds) and mmengine ``HistoryBuffer`` objects in ``message_hub``. numpy moved
    ``numpy.core`` to ``numpy._core`` in 2.0; checkpoints written with numpy 1 name the old
    module, hence the aliases. A HistoryBuffer pickles its table of statistics methods as
    ``getattr(HistoryBuffer, "mean")``: ``getattr`` is admitted only as
    :func:`_restricted_getattr`, never the builtin.
    """
    from numpy._core import multiarray

    items: list[Any] = [np.ndarray, np.dtype]
    for fn in (multiarray._reconstruct, multiarray.scalar):
        items += [fn, (fn, f"numpy.core.multiarray.{fn.__name__}")]
    items += [getattr(np.dtypes, n) for n in np.dtypes.__all__ if n.endswith("DType")]
    with contextlib.suppress(ImportError):
        from mmengine.logging.history_buffer import HistoryBuffer

        items.append(HistoryBuffer)
        _GETATTR_CLASSES.add(HistoryBuffer)
        items += [(_restricted_getattr, "builtins.getattr")]
        items += [(_restricted_getattr, "__builtin__.getattr")]
    return items


_GETATTR_CLASSES: set[type] = set()


def _restricted_getattr(obj: Any, name: str) -> Any:
    """``getattr`` for unpickling: only public methods of the allow-listed classes."""
    if obj in _GETATTR_CLASSES and not name.startswith("_"):
        value = getattr(obj, name, None)
        if callable(value):
            return value
    raise UnsafePickleError(f"refused getattr({obj!r}, {name!r}) while loading a checkpoint")


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """Load a ``.pth`` checkpoint safely: ``torch.load(weights_only=True)`` plus the allow-list.

    Returns the checkpoint dict (``{"state_dict": ..., "meta": ...}`` or a bare state dict).
    Raises MissingWeightsError (no file), UnsafePickleError (a type outside the allow-list)
    or FormatError (not a torch checkpoint).
    """
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise MissingWeightsError(f"checkpoint not found: {p}")
    try:
        with torch.serialization.safe_globals(_checkpoint_safe_globals()):
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        m = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if m:
            raise UnsafePickleError(
                f"{p}: checkpoint references {m.group(1)}, which signgen does not unpickle "
                "(only tensors, numpy arrays and plain metadata are loaded, weights_only=True); "
                "if you trust the file, re-save just its state_dict with torch.save"
            ) from None
        raise FormatError(f"{p}: not a readable torch checkpoint ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise FormatError(f"{p}: not a readable torch checkpoint ({_first_line(exc)})") from None
    if not isinstance(ckpt, dict):
        raise FormatError(f"{p}: expected a checkpoint dict, got {type(ckpt).__name__}")
    return ckpt


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def load_weights(model: Any, ckpt: dict[str, Any], source: str) -> None:
    """Copy a checkpoint's weights into ``model``; FormatError unless every weight matches.

    Accepts ``{"state_dict": ...}`` and bare state dicts; strips DataParallel's ``module.``
    prefix. mmpose's own load hook renames 0.x keys (``keypoint_head`` -> ``head``).
    """
    import torch

    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, dict) or not state:
        raise FormatError(f"{source}: checkpoint has no state_dict")
    state = {
        (k[len("module.") :] if k.startswith("module.") else k): v
        for k, v in state.items()
        if isinstance(v, torch.Tensor)
    }
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch: a checkpoint of another architecture
        detail = re.sub(r"\s+", " ", str(exc))[:300]
        raise FormatError(
            f"{source}: checkpoint does not match the config's model ({detail})"
        ) from None
    if result.missing_keys:
        shown = ", ".join(result.missing_keys[:3])
        raise FormatError(
            f"{source}: checkpoint does not match the config's model: "
            f"{len(result.missing_keys)} weights missing (e.g. {shown})"
        )
    if result.unexpected_keys:
        logger.warning(
            "%s: %d checkpoint entries unused by the model (e.g. %s)",
            source,
            len(result.unexpected_keys),
            ", ".join(result.unexpected_keys[:3]),
        )


def _load_config(path: str | os.PathLike, what: str) -> Any:
    from mmengine.config import Config

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} config not found: {p}")
    try:
        cfg = Config.fromfile(str(p))
    except Exception as exc:
        raise FormatError(f"{p}: not a readable mmengine config ({_first_line(exc)})") from None
    if "model" not in cfg:
        raise FormatError(f"{p}: not a model config (no `model` section)")
    try:
        cfg.test_dataloader.dataset.pipeline  # noqa: B018 - presence check
    except AttributeError:
        raise FormatError(
            f"{p}: config has no test_dataloader.dataset.pipeline (needed for inference)"
        ) from None
    return cfg


@contextlib.contextmanager
def _scope(name: str) -> Iterator[None]:
    """Make ``name`` (mmpose / mmdet) the registry scope while building or running a model."""
    from mmengine.registry import DefaultScope, init_default_scope

    init_default_scope(name)
    with DefaultScope.overwrite_default_scope(name):
        yield


# ---- the pose model ---------------------------------------------------------------------


class TopDownPoseModel:
    """An mmpose top-down pose model (e.g. HRNet) run on boxes of RGB images.

    ``config``: an mmpose top-down config file (``TopdownPoseEstimator``); ``checkpoint``: its
    ``.pth`` (required; loaded safely, see :func:`load_checkpoint_file`).
    ``batch_size``: crops per forward pass. ``flip_test``: also run the horizontally flipped
    crop and average the heatmaps (mmpose's test-time augmentation; twice the compute);
    None keeps the config's setting (True for the HRNet configs).

    ``model(images, boxes)``: ``images`` a list of N (H, W, 3) uint8 RGB frames, ``boxes`` a
    list of N (K_i, 4) float arrays x1, y1, x2, y2 in pixels (K_i may be 0); returns N float32
    arrays (K_i, num_keypoints, 3): x, y in pixels of the frame, score in [0, 1].
    """

    expected_keypoints: int | None = None

    def __init__(
        self,
        config: str | os.PathLike,
        checkpoint: str | os.PathLike,
        device: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        flip_test: bool | None = None,
    ) -> None:
        if int(batch_size) < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        from signgen.devices import resolve_device

        self.device = str(resolve_device(device))  # mmpose/mmdet take text
        self.config_path = Path(config)
        self.checkpoint_path = Path(checkpoint)
        if not self.checkpoint_path.is_file():
            raise MissingWeightsError(f"pose checkpoint not found: {self.checkpoint_path}")
        try:
            from mmengine.dataset import Compose
            from mmpose.apis import init_model
        except ImportError as exc:
            raise InputError(
                f"keypoint extraction needs mmpose ({exc}); run `make env` "
                "(tools/build_mmcv.sh installs the OpenMMLab stack)"
            ) from None

        cfg = _load_config(self.config_path, "pose")
        if cfg.model.get("type") != "TopdownPoseEstimator":
            raise InputError(
                f"{self.config_path}: model type {cfg.model.get('type')!r} is not a top-down "
                "pose model (TopdownPoseEstimator); pick a topdown_heatmap config"
            )
        if flip_test is not None and cfg.model.get("test_cfg") is not None:
            cfg.model.test_cfg.flip_test = bool(flip_test)
        ckpt = load_checkpoint_file(self.checkpoint_path)
        with _scope(cfg.get("default_scope", "mmpose")):
            try:
                # checkpoint=None: mmpose only builds (init_cfg dropped: no download); the
                # weights are loaded below through the safe loader.
                model = init_model(cfg, checkpoint=None, device="cpu")
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise FormatError(
                    f"{self.config_path}: cannot build the model ({_first_line(exc)})"
                ) from None
            self.pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
        self.num_keypoints = int(model.dataset_meta["num_keypoints"])
        if self.expected_keypoints is not None and self.num_keypoints != self.expected_keypoints:
            raise InputError(
                f"{self.config_path}: model predicts {self.num_keypoints} keypoints, "
                f"{type(self).__name__} needs {self.expected_keypoints}"
            )
        load_weights(model, ckpt, str(self.checkpoint_path))
        meta = ckpt.get("meta") or {}
        if isinstance(meta, dict) and isinstance(meta.get("dataset_meta"), dict):
            model.dataset_meta = meta["dataset_meta"]  # mmpose 1.x checkpoints carry it
        self.scope = cfg.get("default_scope", "mmpose")
        self.model = model.to(self.device).eval()
        w, h = cfg.codec.input_size if "codec" in cfg else (0, 0)
        self.input_size = (int(w), int(h))  # (width, height) of the crops

    def __call__(
        self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        import torch
        from mmengine.dataset import pseudo_collate

        if len(images) != len(boxes):
            raise InputError(f"got {len(images)} images but {len(boxes)} box arrays")
        items: list[dict] = []
        owner: list[int] = []
        boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes]  # (K_i, 4)
        for i, (img, bxs) in enumerate(zip(images, boxes)):
            img = np.asarray(img)
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise InputError(
                    f"image {i}: expected (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}"
                )
            bgr = np.ascontiguousarray(img[..., ::-1])  # mmpose pipelines expect BGR
            for box in bxs:
                info = dict(img=bgr, bbox=box[None], bbox_score=np.ones(1, dtype=np.float32))
                info.update(self.model.dataset_meta)
                items.append(info)
                owner.append(i)
        out = [np.zeros((len(b), self.num_keypoints, 3), dtype=np.float32) for b in boxes]
        slot = [0] * len(images)
        with _scope(self.scope):
            for start in range(0, len(items), self.batch_size):
                chunk = [self.pipeline(x) for x in items[start : start + self.batch_size]]
                with torch.no_grad():
                    results = self.model.test_step(pseudo_collate(chunk))
                for res, i in zip(results, owner[start : start + self.batch_size]):
                    inst = res.pred_instances
                    kp = np.asarray(inst.keypoints, dtype=np.float32)[0]  # (N, 2)
                    sc = np.asarray(inst.keypoint_scores, dtype=np.float32)[0]  # (N,)
                    out[i][slot[i], :, :2] = kp
                    out[i][slot[i], :, 2] = np.clip(sc, 0.0, 1.0)
                    slot[i] += 1
        return out


class MMPoseWholeBody(TopDownPoseModel):
    """A 133-point COCO-WholeBody top-down model (HRNet): what ``keypoints extract`` runs."""

    expected_keypoints = NUM_POINTS


class MMPoseHandDetector(TopDownPoseModel):
    """HRNetv2 hand keypoints through mmpose: the detector behind Hand PE.

    ``detector(images, boxes)``: ``images`` N (H, W, 3) uint8 RGB frames, ``boxes`` N float
    arrays (K_i, 4) of hand boxes x1, y1, x2, y2 in pixels (from the ground-truth keypoints);
    returns N float32 arrays (K_i, 21, 3): x, y in pixels of the full frame, score in [0, 1].
    Follows :class:`signgen.metrics.hand.HandKeypointDetector`.
    """

    expected_keypoints = 21


# ---- the person detector ----------------------------------------------------------------


class MMDetPersonDetector:
    """An mmdet detector returning the highest-scoring person box of each RGB image.

    ``detector(images)`` -> list of (4,) float32 x1, y1, x2, y2, or None where no person box
    scores at least ``score_thr``.
    """

    def __init__(
        self,
        config: str | os.PathLike,
        checkpoint: str | os.PathLike,
        device: str = "auto",
        score_thr: float = 0.5,
    ) -> None:
        from signgen.devices import resolve_device

        self.device = str(resolve_device(device))  # mmpose/mmdet take text
        self.score_thr = float(score_thr)
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise MissingWeightsError(f"detector checkpoint not found: {checkpoint}")
        try:
            from mmdet.apis import init_detector
            from mmengine.dataset import Compose
        except ImportError as exc:
            raise InputError(f"--det-config needs mmdet ({exc}); run `make env`") from None
        cfg = _load_config(config, "detector")
        ckpt = load_checkpoint_file(checkpoint)
        with _scope("mmdet"):
            try:
                model = init_detector(cfg, checkpoint=None, device="cpu")
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise FormatError(
                    f"{config}: cannot build the detector ({_first_line(exc)})"
                ) from None
            pipeline = cfg.test_dataloader.dataset.pipeline.copy()
            pipeline[0] = dict(type="mmdet.LoadImageFromNDArray")  # frames, not files
            self.pipeline = Compose(pipeline)
        load_weights(model, ckpt, str(checkpoint))
        meta = ckpt.get("meta") or {}
        classes = list(
            (meta.get("dataset_meta") or {}).get("classes")
            or model.dataset_meta.get("classes")
            or []
        )
        self.person_class = classes.index("person") if "person" in classes else 0
        self.model = model.to(self.device).eval()

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        import torch
        from mmengine.dataset import pseudo_collate

        boxes: list[np.ndarray | None] = []
        with _scope("mmdet"):
            data = [
                self.pipeline(dict(img=np.ascontiguousarray(im[..., ::-1]), img_id=0))
                for im in images
            ]
            with torch.no_grad():
                results = self.model.test_step(pseudo_collate(data))
        for res in results:
            inst = res.pred_instances
            labels = inst.labels.cpu().numpy()
            scores = inst.scores.cpu().numpy()
            keep = (labels == self.person_class) & (scores >= self.score_thr)
            if not keep.any():
                boxes.append(None)
                continue
            best = int(np.argmax(np.where(keep, scores, -np.inf)))
            boxes.append(inst.bboxes[best].cpu().numpy().astype(np.float32))
        return boxes


# ---- boxes -------------------------------------------------------------------------------


def parse_bbox(text: str) -> str | np.ndarray:
    """``"auto"``, ``"full"`` or ``"x1,y1,x2,y2"`` (pixels) -> mode name or a (4,) box."""
    text = str(text).strip()
    if text in BBOX_MODES:
        return text
    parts = text.split(",")
    try:
        box = np.array([float(p) for p in parts], dtype=np.float32)
    except ValueError:
        box = np.zeros(0, dtype=np.float32)
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(
            f"invalid --bbox {text!r}: expected auto, full or x1,y1,x2,y2 in pixels with "
            "x2 > x1 and y2 > y1, e.g. 20,0,190,260"
        )
    return box


def full_frame_box(width: int, height: int) -> np.ndarray:
    """(4,) x1, y1, x2, y2 covering the whole frame."""
    return np.array([0.0, 0.0, float(width), float(height)], dtype=np.float32)


def box_from_keypoints(
    points: np.ndarray,
    width: int,
    height: int,
    min_score: float = AUTO_MIN_SCORE,
    pad: float = AUTO_PAD,
    min_points: int = AUTO_MIN_POINTS,
) -> np.ndarray | None:
    """The box around the confident keypoints of one frame, padded and clipped to the frame.

    ``points``: (N, 3) x, y, score. Each side grows by ``pad`` times the box's width/height.
    Returns a (4,) float32 box, or None when fewer than ``min_points`` points have a score
    of at least ``min_score`` or the clipped box is degenerate.
    """
    pts = np.asarray(points, dtype=np.float32)
    good = pts[(pts[:, 2] >= min_score) & np.isfinite(pts[:, :2]).all(axis=1)]  # (M, 3)
    if len(good) < min_points:
        return None
    x1, y1 = good[:, :2].min(axis=0)
    x2, y2 = good[:, :2].max(axis=0)
    dx, dy = (x2 - x1) * pad, (y2 - y1) * pad
    box = np.array(
        [max(x1 - dx, 0.0), max(y1 - dy, 0.0), min(x2 + dx, width), min(y2 + dy, height)],
        dtype=np.float32,
    )
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    return box


# ---- extraction --------------------------------------------------------------------------


class PoseModel(Protocol):
    """What :func:`extract_keypoints` needs from a pose model (see TopDownPoseModel)."""

    num_keypoints: int

    def __call__(
        self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
    ) -> list[np.ndarray]: ...


def _clip_box(bbox: np.ndarray, width: int, height: int) -> np.ndarray:
    """A user's (4,) x0, y0, x1, y1 box clipped to the frame; a box with no area left in the
    frame is an :class:`InputError`."""
    fixed = bbox.copy()
    fixed[[0, 2]] = np.clip(fixed[[0, 2]], 0, width)
    fixed[[1, 3]] = np.clip(fixed[[1, 3]], 0, height)
    if fixed[2] - fixed[0] < 2 or fixed[3] - fixed[1] < 2:
        raise InputError(
            f"--bbox {','.join(f'{v:g}' for v in bbox)} lies outside the {width}x{height} frame"
        )
    return fixed


def extract_keypoints(
    video: str | os.PathLike,
    model: PoseModel,
    *,
    bbox: str | np.ndarray = "auto",
    detector: Callable[[Sequence[np.ndarray]], list[np.ndarray | None]] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Any = True,
    meta: dict[str, Any] | None = None,
) -> KeypointSequence:
    """Run ``model`` on every frame of ``video`` (file, frame folder or image).

    ``bbox``: ``"auto"``, ``"full"`` or a (4,) box; see the module docstring for ``"auto"``
    (uses ``detector`` when given). ``progress``: a bool, or a tqdm bar to advance (batch
    runs share one). Returns a KeypointSequence of (T, 133, 3) at the video's size and fps.
    """
    from tqdm import tqdm

    from signgen.video import iter_batches, probe

    if int(batch_size) < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    if model.num_keypoints != NUM_POINTS:
        raise InputError(
            f"keypoint extraction needs a {NUM_POINTS}-point COCO-WholeBody model, this one "
            f"predicts {model.num_keypoints} keypoints"
        )
    if isinstance(bbox, str):
        bbox = parse_bbox(bbox)
    mode = "fixed" if isinstance(bbox, np.ndarray) else bbox
    if detector is not None and mode != "auto":
        raise InputError("a person detector is only used with --bbox auto")
    info = probe(video)
    width, height = info.width, info.height
    full = full_frame_box(width, height)
    fixed = _clip_box(bbox, width, height) if isinstance(bbox, np.ndarray) else full
    chunks: list[np.ndarray] = []
    last_box = full  # the box the next frame starts from in auto mode
    own_bar = not hasattr(progress, "update")
    bar = (
        tqdm(
            total=info.num_frames,
            unit="frame",
            desc="extract",
            file=sys.stderr,
            disable=not progress,
        )
        if own_bar
        else progress
    )
    with bar if own_bar else contextlib.nullcontext():
        for frames in iter_batches(video, int(batch_size)):  # (B, H, W, 3) uint8 RGB
            b = frames.shape[0]
            if mode == "fixed":
                boxes = [fixed] * b
            elif mode == "full":
                boxes = [full] * b
            elif detector is not None:
                boxes = []
                for found in detector(list(frames)):
                    last_box = found if found is not None else last_box
                    boxes.append(last_box)
            else:
                boxes = [last_box] * b
            preds = model(list(frames), [bx[None] for bx in boxes])  # B x (1, 133, 3)
            pts = np.stack([p[0] for p in preds]).astype(np.float32)  # (B, 133, 3)
            chunks.append(pts)
            if mode == "auto" and detector is None:
                derived = box_from_keypoints(pts[-1], width, height)
                last_box = derived if derived is not None else full
            bar.update(b)
    if not chunks:
        raise InputError(f"video has no frames: {video}")
    points = np.concatenate(chunks)  # (T, 133, 3)
    return KeypointSequence(points, width, height, info.fps, meta=dict(meta or {}))
