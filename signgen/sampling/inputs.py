"""Checks of a clip's inputs (first frame + keypoints), before any model is loaded or run.

Used by ``signgen render`` and by the read stage of render-many (CPU tasks, so a bad clip
is found before any GPU time is spent); needs no model. Retargeting a clip's keypoints onto
the signer of its first frame (``--retarget``, a render-many manifest column, ``augment``'s
default) happens here too: it decides which keypoints are rendered, not how, so it is an
input of the clip and not a render option (the pipeline never sees it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from signgen.errors import InputError
from signgen.keypoints.sequence import KeypointSequence

logger = logging.getLogger(__name__)

# Keypoint frame size vs first-frame size: rescale (with a warning) when the aspect ratios
# agree within this relative tolerance; otherwise the keypoints belong to another video.
ASPECT_TOLERANCE = 0.01


def check_clip(first_frame: np.ndarray, keypoints: KeypointSequence) -> KeypointSequence:
    """Validate a clip; returns its keypoints in the first frame's pixels.

    The first frame must be uint8 (H, W, 3) RGB, at least 2 x 2; the sequence must have
    frames. Keypoints measured on a frame of another size are rescaled (with a warning)
    when the aspect ratios agree within 1 %; otherwise they belong to another video and
    this is an error.
    """
    img = np.asarray(first_frame)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"first frame must be uint8 (H, W, 3) RGB, got {img.dtype} {img.shape}")
    if min(img.shape[:2]) < 2:
        raise InputError(f"first frame is too small: {img.shape[1]}x{img.shape[0]}")
    if len(keypoints) == 0:
        raise InputError("keypoint sequence has 0 frames: nothing to render")
    h, w = img.shape[:2]
    if (keypoints.width, keypoints.height) == (w, h):
        return keypoints
    if abs((keypoints.width / keypoints.height) / (w / h) - 1) > ASPECT_TOLERANCE:
        raise InputError(
            f"keypoints are for {keypoints.width}x{keypoints.height} frames but the first "
            f"frame is {w}x{h} (different aspect ratio): they do not belong to this "
            "video; convert them to the frame's size first"
        )
    logger.warning(
        "keypoints are for %dx%d frames, the first frame is %dx%d: rescaling keypoints",
        keypoints.width, keypoints.height, w, h,
    )  # fmt: skip
    return keypoints.rescaled(w, h)


def retarget_clip(
    first_frame: np.ndarray,
    keypoints: KeypointSequence,
    source_keypoints: KeypointSequence | None = None,
    *,
    extractor: Callable[[np.ndarray], np.ndarray] | None = None,
    min_score: float | None = None,
) -> tuple[KeypointSequence, np.ndarray]:
    """Put ``keypoints`` on the body of the signer in ``first_frame`` (pose retargeting,
    ``docs/retargeting.md``): the result is in the first frame's pixels, checked as
    :func:`check_clip` checks a clip, and the reference points (133, 3) it was fitted to.

    The reference is the first pose of ``source_keypoints`` (the first frame's own
    keypoints, brought to its size as :func:`check_clip` does), or else the first frame's
    keypoints from ``extractor`` (default: the ``auto`` pose model of
    :func:`signgen.keypoints.first_frame.first_frame_keypoints`). ``keypoints`` may be
    measured on a frame of any size: the fit maps them onto the reference. MCLD models
    locate the first frame's face and hands with the same reference points. The fit and
    where the reference came from are in ``meta["retarget"]``; a reference lacking limbs
    warns (:class:`~signgen.keypoints.retarget.RetargetWarning`).
    """
    from signgen.keypoints.first_frame import (
        FrameExtractor,
        first_frame_extractor,
        first_frame_keypoints,
    )
    from signgen.keypoints.retarget import DEFAULT_MIN_SCORE, retarget_sequence

    if len(keypoints) == 0:
        raise InputError("keypoint sequence has 0 frames: nothing to render")
    if source_keypoints is not None:
        reference = check_clip(first_frame, source_keypoints).points[0]
        origin = "source keypoints"
    else:
        fix = "give the first frame's keypoints instead (--source-keypoints FILE)"
        model = first_frame_extractor() if extractor is None else extractor
        try:
            reference, _ = first_frame_keypoints(first_frame, model, fix=fix)
        finally:
            if extractor is None:
                model.close()
        how = model.description if isinstance(model, FrameExtractor) else "the given model"
        origin = f"extracted with {how}"
    h, w = np.asarray(first_frame).shape[:2]
    score = DEFAULT_MIN_SCORE if min_score is None else min_score
    seq = retarget_sequence(keypoints, reference, (w, h), min_score=score)
    seq.meta["retarget"]["reference"] = origin
    return check_clip(first_frame, seq), np.asarray(reference, dtype=np.float32)
