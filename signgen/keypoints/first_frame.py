"""The keypoints of one frame: an image's, or the first frame of a video or frame folder.

Pose retargeting needs the skeleton of the signer in the first frame (``docs/retargeting.md``),
and MCLD models locate that signer's face and hands with it. When no keypoint file gives
those points, every command that needs them (``signgen render --retarget``, ``signgen
keypoints retarget --reference IMAGE``, the read stage of ``signgen render-many``) extracts
them here, with one choice of pose model: the ``auto`` backend of ``signgen keypoints
extract`` (``docs/keypoint_extraction.md``), i.e. the HRNet whole-body model when its
checkpoint is found locally, else MediaPipe Holistic (offline, its models ship with the
package). One frame has nothing to track, so MediaPipe runs in static-image mode (a fresh
graph per frame) and HRNet on the whole frame.
"""

from __future__ import annotations

import argparse
import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from signgen.errors import InputError
from signgen.keypoints import layout as L

__all__ = [
    "BACKENDS",
    "FrameExtractor",
    "first_frame_extractor",
    "first_frame_keypoints",
    "mmpose_first_frame_extractor",
    "resolve_backend",
]

BACKENDS = ("auto", "mediapipe", "hrnet")
# A frame in which fewer than two torso points (nose, eyes, ears, shoulders, hips) reach the
# pose drawer's threshold shows no signer the keypoints could be used for: retargeting fits
# on those points (docs/retargeting.md).
_TORSO = (L.NOSE, L.LEFT_EYE, L.RIGHT_EYE, L.LEFT_EAR, L.RIGHT_EAR,
          L.LEFT_SHOULDER, L.RIGHT_SHOULDER, L.LEFT_HIP, L.RIGHT_HIP)  # fmt: skip
_MIN_SCORE = 0.3  # signgen.pose.draw's default threshold


@dataclass
class FrameExtractor:
    """``extractor(frame)``: (H, W, 3) uint8 RGB -> (133, 3) x, y (pixels), score.

    ``backend`` is the model that runs (``mediapipe`` or ``hrnet``) and ``why`` the reason it
    was chosen (the ``auto`` rule's words). :meth:`close` frees the model.
    """

    backend: str
    why: str
    _run: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    _close: Callable[[], None] = field(default=lambda: None, repr=False)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InputError(
                f"expected an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}"
            )
        points = np.asarray(self._run(frame), dtype=np.float32)
        if points.shape != (L.NUM_POINTS, 3):
            raise InputError(f"the pose model gave {points.shape} keypoints, not (133, 3)")
        return points

    @property
    def description(self) -> str:
        """E.g. ``mediapipe (auto: $SIGNGEN_WEIGHTS_DIR is not set, no HRNet checkpoint)``."""
        return f"{self.backend} ({self.why})"

    def close(self) -> None:
        self._close()

    def __enter__(self) -> FrameExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve_backend(
    backend: str = "auto", *, model: str | None = None, checkpoint: str | None = None
) -> tuple[str, str]:
    """(backend, why): ``auto`` is ``signgen keypoints extract``'s rule (HRNet when its
    checkpoint is found locally or an HRNet model or checkpoint is named, else MediaPipe)."""
    from signgen.keypoints.extract_cli import choose_backend

    if backend not in BACKENDS:
        raise InputError(f"unknown pose backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    named = model is not None or checkpoint is not None
    if backend == "mediapipe" and named:
        raise InputError("a pose model or checkpoint names an HRNet model; the mediapipe "
                         "backend takes none")  # fmt: skip
    if backend == "auto" and named:
        return "hrnet", "auto: an HRNet model or checkpoint was named"
    return choose_backend(argparse.Namespace(backend=backend))


def mmpose_first_frame_extractor(
    model: str | None = None, checkpoint: str | None = None, device: str = "auto"
) -> Callable[[np.ndarray], np.ndarray]:
    """The top-down mmpose whole-body model of ``signgen keypoints extract`` (HRNet-W32 unless
    ``model`` names another) on the whole frame, as extraction does for a clip's first frame.
    Returns frame -> (133, 3). MissingWeightsError / InputError when its checkpoint or
    mmpose is missing."""
    from signgen.keypoints.extract import MMPoseWholeBody, full_frame_box
    from signgen.keypoints.models import resolve_model

    config, ckpt = resolve_model(model, None, checkpoint)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"(mmcv|mmengine|mmpose|mmdet)(\.|$)")
        net = MMPoseWholeBody(config, ckpt, device=device, batch_size=1)

    def extract(frame: np.ndarray) -> np.ndarray:
        box = full_frame_box(frame.shape[1], frame.shape[0])[None]  # (1, 4)
        return np.asarray(net([frame], [box])[0][0], dtype=np.float32)  # (133, 3)

    return extract


def first_frame_extractor(
    backend: str = "auto",
    *,
    model: str | None = None,
    checkpoint: str | None = None,
    device: str = "auto",
) -> FrameExtractor:
    """The pose model for single frames (module docstring), loaded once; reuse it for many
    frames. ``model`` / ``checkpoint`` / ``device`` are HRNet's (a named model of ``signgen
    keypoints models`` and its .pth). InputError (or MissingWeightsError) naming the fix
    when the chosen backend cannot run."""
    chosen, why = resolve_backend(backend, model=model, checkpoint=checkpoint)
    if chosen == "hrnet":
        return FrameExtractor("hrnet", why, mmpose_first_frame_extractor(model, checkpoint, device))
    from signgen.keypoints.holistic import HolisticExtractor, native_stderr_to_log

    with native_stderr_to_log():
        holistic = HolisticExtractor(static=True)
    used = False

    def run(frame: np.ndarray) -> np.ndarray:
        # A fresh graph per frame: even in static-image mode Holistic's face landmarks
        # depend on the frame it saw before (up to 0.7 px on a 128 x 128 photograph), and
        # a frame's keypoints must not depend on which frames a worker extracted earlier.
        nonlocal used
        if used:
            holistic.reset()
        used = True
        return holistic(frame)

    return FrameExtractor("mediapipe", why, run, holistic.close)


@contextlib.contextmanager
def _quiet_native(extractor: FrameExtractor) -> Iterator[None]:
    """MediaPipe's native code logs to fd 2 around its calls: keep it off the terminal."""
    if extractor.backend != "mediapipe":
        yield
        return
    from signgen.keypoints.holistic import native_stderr_to_log

    with native_stderr_to_log():
        yield


def first_frame_keypoints(
    source: str | Path | np.ndarray,
    extractor: FrameExtractor | Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    fix: str = "",
) -> tuple[np.ndarray, tuple[int, int]]:
    """Keypoints (133, 3) of an image's or a video's first frame, and its (width, height).

    ``source``: an image, video or frame folder, or the frame itself ((H, W, 3) uint8 RGB).
    ``extractor``: a :class:`FrameExtractor` (or any frame -> (133, 3) callable) to reuse;
    default: :func:`first_frame_extractor` (``auto``), loaded for this one frame. A frame in
    which the model finds no signer (fewer than two confident torso points) is an
    InputError, ending with ``fix`` (what the caller's user can do instead).
    """
    from signgen.video import read_first_frame

    frame = np.asarray(source) if isinstance(source, np.ndarray) else read_first_frame(source)
    what = "the frame" if isinstance(source, np.ndarray) else f"the first frame of {source}"
    own = extractor is None
    fn = first_frame_extractor() if own else extractor
    try:
        if isinstance(fn, FrameExtractor):
            with _quiet_native(fn):
                points = fn(frame)
        else:
            points = np.asarray(fn(frame), dtype=np.float32)
    finally:
        if own:
            fn.close()
    if points.shape != (L.NUM_POINTS, 3):
        raise InputError(f"the pose model gave {points.shape} keypoints for {what}, not (133, 3)")
    if int((points[list(_TORSO), 2] >= _MIN_SCORE).sum()) < 2:
        model = fn.description if isinstance(fn, FrameExtractor) else "the pose model"
        raise InputError(
            f"no signer found in {what}: {model} sees fewer than two of its torso points "
            f"(nose, eyes, ears, shoulders, hips)" + (f"; {fix}" if fix else "")
        )
    return points, (int(frame.shape[1]), int(frame.shape[0]))
