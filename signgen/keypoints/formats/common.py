"""Helpers shared by the format readers: JSON reading, main-signer choice, name sorting."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from signgen.errors import FormatError
from signgen.keypoints.layout import NUM_POINTS


def read_json(path: Path, fmt: str) -> Any:
    """Parse ``path`` as JSON; a truncated or non-JSON file raises FormatError naming ``fmt``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise FormatError(f"{path}: looks like {fmt} but is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"{path}: looks like {fmt} but is not valid JSON (truncated?): {exc.msg} "
            f"at line {exc.lineno} column {exc.colno}"
        ) from None


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``frame_2`` before ``frame_10`` (and zero-padded names as usual)."""
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def empty_frame() -> np.ndarray:
    """One frame with every point missing: (133, 3) zeros."""
    return np.zeros((NUM_POINTS, 3), dtype=np.float32)


def bbox_area(xy: np.ndarray, scores: np.ndarray) -> float:
    """Area of the axis-aligned box around the points with a positive score (0 if < 2)."""
    valid = scores > 0
    if valid.sum() < 2:
        return 0.0
    pts = xy[valid]
    w, h = pts.max(axis=0) - pts.min(axis=0)
    return float(w * h)


def main_signer_index(areas: list[float], confidences: list[float]) -> int:
    """Index of the main signer among detected people: the largest ``area * confidence``.

    The signer usually faces the camera, fills the frame and is detected with the highest
    confidence; bystanders are smaller, further away or partly hidden. Ties keep the first.
    """
    assert len(areas) == len(confidences) and areas, "need at least one candidate"
    products = [a * c for a, c in zip(areas, confidences, strict=True)]
    return int(np.argmax(products))


def finalize_missing(points: np.ndarray) -> np.ndarray:
    """Normalise missing points: negative/NaN scores -> 0 and x, y of missing points -> 0."""
    pts = np.asarray(points, dtype=np.float32).copy()
    score = pts[..., 2]
    score[~np.isfinite(score) | (score < 0)] = 0.0
    missing = score <= 0
    pts[missing, 0] = 0.0
    pts[missing, 1] = 0.0
    return pts
