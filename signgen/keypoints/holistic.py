"""Keypoint extraction with MediaPipe Holistic, and MediaPipe Hands as a Hand PE detector.

MediaPipe's legacy ``solutions`` API (mediapipe 0.10.14, whose wheel carries every model it
runs: nothing is downloaded) gives whole-body keypoints without any checkpoint, on CPU, at
about 55 ms of CPU time per Phoenix-sized frame (``benchmarks/results/extract_speed.md``).

- **Holistic** (:class:`HolisticExtractor`): BlazePose body, FaceMesh and both hands per frame,
  mapped to COCO-WholeBody 133 by :mod:`signgen.keypoints.holistic_map`. Clips run in video
  mode (the graph tracks the person from frame to frame and smooths the landmarks); a single
  image runs in static mode (detection from scratch). ``model_complexity`` is fixed at 1:
  the wheel ships only that pose model (0 and 2 would be downloaded).
- **Hands** (:class:`MediaPipeHandDetector`): a named alternative to HRNetv2 for Hand PE.

MediaPipe's native code (TF Lite, absl/glog) writes to file descriptor 2 directly, so Python's
logging cannot silence it. Graphs start (and run once on a blank frame) inside
:func:`native_stderr_to_log`, every call runs inside it, and extraction runs hold it for the
whole clip or batch; it sends that output to the debug log (``signgen -v`` shows it)
instead of the terminal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from signgen.errors import InputError
from signgen.keypoints.holistic_map import holistic_to_wholebody
from signgen.keypoints.layout import HAND_MIDDLE_MCP
from signgen.keypoints.sequence import KeypointSequence

logger = logging.getLogger(__name__)

MODEL_COMPLEXITY = 1  # the only pose model inside the mediapipe wheel
HOLISTIC_NAME = "mediapipe-holistic"
HANDS_NAME = "mediapipe-hands"
# Hand PE with MediaPipe Hands: the window around each 60x60 hand patch that the detector sees,
# as a multiple of the patch side, and the size it is scaled to. MediaPipe finds a hand with a
# palm detector first, which needs some context around the hand: on the real Phoenix samples
# it finds far fewer hands in the bare 60x60 patch than in a 120x120 window
# (benchmarks/results/extract_speed.md, docs/keypoint_extraction.md).
HAND_CONTEXT = 2.0
HAND_INPUT_SIZE = 256


def mediapipe_version() -> str:
    """The installed mediapipe version; InputError naming the fix when it is missing."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("mediapipe")
    except PackageNotFoundError:
        raise InputError(
            "MediaPipe is not installed: run `make env` (requirements/nodeps.txt pins "
            "mediapipe==0.10.14), or use --backend hrnet"
        ) from None


_SESSION = threading.local()  # the terminal stream of the innermost active capture


@contextlib.contextmanager
def native_stderr_to_log(name: str = "mediapipe") -> Iterator[TextIO]:
    """Keep what native code writes to file descriptor 2 off the terminal for the duration.

    MediaPipe's graph threads log (TF Lite's "Created TensorFlow Lite XNNPACK delegate",
    absl/glog warnings) straight to fd 2, sometimes shortly *after* a call has returned, so
    the redirection has to cover the whole run, not single calls. Inside the block fd 2 goes
    to a temporary file, whose content is sent to the debug log (``signgen -v``) at the end.
    Python's own output still reaches the terminal: ``sys.stderr`` and the logging handlers
    that wrote to it are pointed at a duplicate of the original fd 2, which the block yields
    (give it to progress bars created inside). Nested blocks reuse the outer one.
    """
    active = getattr(_SESSION, "term", None)
    if active is not None:
        yield active
        return
    with contextlib.suppress(AttributeError, ValueError):
        sys.stderr.flush()
    try:
        python_on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        python_on_fd2 = False  # e.g. a captured stream: unaffected by the fd redirection
    saved = os.dup(2)
    old_stderr = sys.stderr
    term: TextIO = (
        os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
        if python_on_fd2
        else old_stderr
    )
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and h.stream is old_stderr
    ]
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        sys.stderr = term
        for h in handlers:
            h.setStream(term)
        _SESSION.term = term
        try:
            with warnings.catch_warnings():
                # protobuf 4's deprecation notice, raised inside mediapipe's result unpacking
                warnings.filterwarnings("ignore", message=r".*SymbolDatabase\.GetPrototype")
                yield term
        finally:
            _SESSION.term = None
            with contextlib.suppress(AttributeError, ValueError, OSError):
                term.flush()
            for h in handlers:
                h.setStream(old_stderr)
            sys.stderr = old_stderr
            os.dup2(saved, 2)
            os.close(saved)
            if term is not old_stderr:
                term.close()
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace").strip()
            if text:
                logger.debug("%s native output:\n%s", name, text)


def _solutions() -> Any:
    mediapipe_version()  # clear error when absent
    with native_stderr_to_log():
        from mediapipe.python import solutions
    return solutions


def _started(factory: Any, **options: Any) -> Any:
    """A MediaPipe solution graph, created and run once on a blank frame.

    The graph opens its TF Lite models in background threads, which log *after* the
    constructor has returned; the first ``process`` waits for them. Doing both inside one
    :func:`native_stderr_to_log` block keeps that output off the terminal even when the caller
    holds no capture of its own. A blank frame holds no person, so it leaves no tracking state.
    """
    with native_stderr_to_log():
        graph = factory(**options)
        graph.process(np.zeros((64, 64, 3), dtype=np.uint8))
    return graph


def _landmarks(lms: Any, width: int, height: int, visibility: bool = False) -> np.ndarray | None:
    """A landmark list -> (N, 2) or (N, 3 with visibility) float32 pixels; None when absent."""
    if lms is None:
        return None
    rows = [
        (p.x * width, p.y * height, p.visibility) if visibility else (p.x * width, p.y * height)
        for p in lms.landmark
    ]
    return np.asarray(rows, dtype=np.float32)


class HolisticExtractor:
    """MediaPipe Holistic on RGB frames: ``extractor(frame)`` -> (133, 3) x, y, score.

    ``static=False`` (video mode) tracks across the frames of one clip: call :meth:`reset` (or
    make a new extractor) before the next clip. ``static=True`` treats every frame on its own.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        static: bool = False,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
    ) -> None:
        self.static = bool(static)
        self.version = mediapipe_version()
        self._options = dict(
            static_image_mode=self.static,
            model_complexity=MODEL_COMPLEXITY,
            smooth_landmarks=True,
            refine_face_landmarks=False,
            min_detection_confidence=float(min_detection_confidence),
            min_tracking_confidence=float(min_tracking_confidence),
        )
        self._solutions = _solutions()
        self._graph = None
        self.reset()

    def reset(self) -> None:
        """Forget the tracked person (start of a new clip)."""
        self.close()
        self._graph = _started(self._solutions.holistic.Holistic, **self._options)

    def close(self) -> None:
        if self._graph is not None:
            with native_stderr_to_log():
                self._graph.close()
            self._graph = None

    def __enter__(self) -> HolisticExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def meta(self) -> dict[str, Any]:
        """What to record as the ``extractor`` of a sequence."""
        return {
            "name": HOLISTIC_NAME,
            "version": self.version,
            "backend": "mediapipe",
            "mode": "image" if self.static else "video",
            "model_complexity": MODEL_COMPLEXITY,
        }

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InputError(
                f"expected an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}"
            )
        assert self._graph is not None, "extractor is closed"
        h, w = frame.shape[:2]
        with native_stderr_to_log():
            res = self._graph.process(np.ascontiguousarray(frame))
        return holistic_to_wholebody(
            _landmarks(res.pose_landmarks, w, h, visibility=True),
            _landmarks(res.face_landmarks, w, h),
            _landmarks(res.left_hand_landmarks, w, h),
            _landmarks(res.right_hand_landmarks, w, h),
        )


def extract_keypoints_mediapipe(
    video: str | os.PathLike,
    *,
    static: bool | None = None,
    progress: Any = True,
    meta: dict[str, Any] | None = None,
    min_detection_confidence: float = 0.5,
) -> KeypointSequence:
    """MediaPipe Holistic on every frame of ``video`` (file, frame folder or image).

    ``static``: None picks static mode for a single image and video (tracking) mode for
    anything with several frames. ``progress``: a bool, or a tqdm bar to advance (batch
    runs share one). Returns a (T, 133, 3) sequence at the video's size and fps whose
    ``meta["extractor"]`` names MediaPipe Holistic and its version (merged with ``meta``).
    """
    from tqdm import tqdm

    from signgen.video import iter_batches, probe

    info = probe(video)
    if static is None:
        static = info.num_frames == 1 and Path(video).is_file()
    own_bar = not hasattr(progress, "update")
    frames_out: list[np.ndarray] = []
    with native_stderr_to_log() as term:
        bar = (
            tqdm(
                total=info.num_frames, unit="frame", desc="extract", file=term, disable=not progress
            )
            if own_bar
            else progress
        )
        try:
            with HolisticExtractor(
                static, min_detection_confidence=min_detection_confidence
            ) as model:
                for frames in iter_batches(video, 16):  # (B, H, W, 3) uint8 RGB
                    for frame in frames:
                        frames_out.append(model(frame))
                    bar.update(len(frames))
                extractor = model.meta
        finally:
            if own_bar:
                bar.close()
    if not frames_out:
        raise InputError(f"video has no frames: {video}")
    meta = dict(meta or {})
    meta["extractor"] = {**extractor, **dict(meta.get("extractor") or {})}
    points = np.stack(frames_out)  # (T, 133, 3)
    return KeypointSequence(points, info.width, info.height, info.fps, meta=meta)


class MediaPipeHandDetector:
    """MediaPipe Hands as a top-down hand keypoint detector (the ``mediapipe`` Hand PE variant).

    Follows :class:`signgen.metrics.hand.HandKeypointDetector`: ``detector(images, boxes)``
    with N RGB uint8 frames and N (K_i, 4) boxes x1, y1, x2, y2 returns N float32 arrays
    (K_i, 21, 3) of x, y in pixels of the frame and a score.

    Unlike HRNetv2, MediaPipe Hands detects before it locates the keypoints. Each box is
    enlarged about its centre to ``context`` (:data:`HAND_CONTEXT`) times its size (kept
    inside the frame),
    that window is scaled to :data:`HAND_INPUT_SIZE` pixels and run in static mode, and the
    detected hand whose middle knuckle lies nearest the box centre is kept. A hand that is
    not found gets 21 points of score 0; Hand PE skips it (and its counterpart).
    """

    name = HANDS_NAME

    def __init__(
        self,
        min_detection_confidence: float = 0.3,
        max_num_hands: int = 2,
        context: float = HAND_CONTEXT,
    ) -> None:
        import cv2

        if not context >= 1.0:
            raise InputError(f"hand detector context must be >= 1 (the box itself), got {context}")
        self.context = float(context)
        self._cv2 = cv2
        self.version = mediapipe_version()
        self._graph = _started(
            _solutions().hands.Hands,
            static_image_mode=True,
            max_num_hands=int(max_num_hands),
            model_complexity=MODEL_COMPLEXITY,
            min_detection_confidence=float(min_detection_confidence),
        )

    def close(self) -> None:
        if self._graph is not None:
            with native_stderr_to_log():
                self._graph.close()
            self._graph = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _one(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1]) * self.context
        side = round(min(side, w, h))
        x1 = int(min(max(round(cx - side / 2), 0), w - side))
        y1 = int(min(max(round(cy - side / 2), 0), h - side))
        window = image[y1 : y1 + side, x1 : x1 + side]  # (side, side, 3)
        scaled = self._cv2.resize(
            window, (HAND_INPUT_SIZE, HAND_INPUT_SIZE), interpolation=self._cv2.INTER_CUBIC
        )
        with native_stderr_to_log():
            res = self._graph.process(np.ascontiguousarray(scaled))
        out = np.zeros((21, 3), dtype=np.float32)
        best = np.inf
        for lms in res.multi_hand_landmarks or ():
            xy = _landmarks(lms, side, side) + np.array([x1, y1], dtype=np.float32)  # (21, 2)
            dist = float(np.hypot(*(xy[HAND_MIDDLE_MCP] - (cx, cy))))
            if dist < best:
                best = dist
                out[:, :2] = xy
                out[:, 2] = 1.0
        return out

    def __call__(
        self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        if len(images) != len(boxes):
            raise InputError(f"got {len(images)} images but {len(boxes)} box arrays")
        out = []
        for img, bxs in zip(images, boxes):
            img = np.asarray(img)
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise InputError(
                    f"expected (H, W, 3) uint8 RGB images, got {img.shape} {img.dtype}"
                )
            bxs = np.asarray(bxs, dtype=np.float32).reshape(-1, 4)  # (K, 4)
            found = [self._one(img, b) for b in bxs]
            out.append(np.stack(found) if found else np.zeros((0, 21, 3), np.float32))
        return out
