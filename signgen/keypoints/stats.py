"""Summaries of a keypoint sequence: per-part confidence and hand dropouts."""

from __future__ import annotations

from typing import Any

import numpy as np

from signgen.keypoints.layout import LEFT_HAND, PARTS, RIGHT_HAND
from signgen.keypoints.sequence import KeypointSequence


def part_missing(points: np.ndarray, part: range, threshold: float | None = None) -> np.ndarray:
    """(T,) bool: frames where every point of ``part`` is missing.

    A point is missing when its score is 0, or below ``threshold`` when one is given.
    """
    scores = points[:, part.start : part.stop, 2]  # (T, P)
    if threshold is None:
        return ~(scores > 0).any(axis=1)
    return ~(scores >= threshold).any(axis=1)


def frame_ranges(frames: np.ndarray) -> list[tuple[int, int]]:
    """Sorted frame indices -> inclusive runs, e.g. [3, 4, 5, 9] -> [(3, 5), (9, 9)]."""
    runs: list[tuple[int, int]] = []
    for f in map(int, frames):
        if runs and f == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], f)
        else:
            runs.append((f, f))
    return runs


def summarize(seq: KeypointSequence, threshold: float | None = None) -> dict[str, Any]:
    """Frames, fps, size, duration, mean score per body part and frames missing a hand."""
    pts = seq.points
    out: dict[str, Any] = {
        "frames": len(seq),
        "fps": seq.fps,
        "width": seq.width,
        "height": seq.height,
        "duration_s": len(seq) / seq.fps,
        "mean_confidence": {
            name: float(pts[:, r.start : r.stop, 2].mean()) for name, r in PARTS.items()
        },
    }
    for name, part in (("left_hand", LEFT_HAND), ("right_hand", RIGHT_HAND)):
        missing = np.flatnonzero(part_missing(pts, part, threshold))
        out[f"missing_{name}_frames"] = [int(i) for i in missing]
    return out
