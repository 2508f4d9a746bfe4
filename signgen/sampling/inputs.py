"""Checks of a clip's inputs (first frame + keypoints), before any model is loaded or run.

Used by ``signgen render`` and by the read stage of render-many (CPU tasks, so a bad clip
is found before any GPU time is spent); needs no model.
"""

from __future__ import annotations

import logging

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
