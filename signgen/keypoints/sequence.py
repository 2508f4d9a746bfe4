"""The in-memory keypoint sequence and signgen's own JSON file (schema v1)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from signgen.errors import FormatError, InputError
from signgen.fileio import atomic_write_text
from signgen.keypoints.layout import LAYOUT_NAME, NUM_POINTS

SCHEMA_VERSION = 1


@dataclass
class KeypointSequence:
    """T frames of 133 COCO-WholeBody keypoints in pixels of a ``width`` x ``height`` frame.

    ``points`` is float32 of shape (T, 133, 3): x, y, score. A missing point has score 0
    (its x, y are meaningless). ``meta`` carries optional extras (gloss, text, signer...).
    """

    points: np.ndarray  # (T, 133, 3) float32
    width: int
    height: int
    fps: float
    layout: str = LAYOUT_NAME
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32)
        validate_points(self.points, self.layout)
        self.width, self.height = _pixels(self.width, "width"), _pixels(self.height, "height")
        fps = _number(self.fps)
        if fps is None or not (math.isfinite(fps) and fps > 0):
            raise InputError(f"fps must be a positive number, got {self.fps!r}")
        self.fps = fps

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.width, self.height

    def rescaled(self, width: int, height: int) -> KeypointSequence:
        """The same sequence in pixels of a ``width`` x ``height`` frame (scores unchanged)."""
        pts = self.points.copy()
        pts[..., 0] *= width / self.width
        pts[..., 1] *= height / self.height
        return KeypointSequence(pts, width, height, self.fps, self.layout, dict(self.meta))

    def slice(self, start: int, stop: int | None = None) -> KeypointSequence:
        return KeypointSequence(
            self.points[start:stop], self.width, self.height, self.fps, self.layout, dict(self.meta)
        )

    # ---- signgen JSON -------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "layout": self.layout,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "frames": np.round(self.points.astype(np.float64), 4).tolist(),
        }
        if self.meta:
            out["meta"] = _jsonable(self.meta)
        return out

    def save(self, path: str | Path) -> None:
        """Write signgen JSON atomically."""
        atomic_write_text(path, json.dumps(self.to_json_dict(), separators=(",", ":")))


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (not a bool, string or container)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return None
    try:
        return float(value)
    except (OverflowError, ValueError):
        return None


def _pixels(value: Any, what: str) -> int:
    """A frame width or height: a positive whole number of pixels (at most 2**31)."""
    v = _number(value)
    if v is None or not (math.isfinite(v) and 0 < v <= 2**31 and v == int(v)):
        raise InputError(f"frame {what} must be a positive whole number of pixels, got {value!r}")
    return int(v)


def validate_points(points: np.ndarray, layout: str = LAYOUT_NAME) -> None:
    """Raise InputError unless ``points`` is a non-empty, finite (T, 133, 3) array."""
    if layout != LAYOUT_NAME:
        raise InputError(f"unsupported keypoint layout {layout!r}; signgen uses {LAYOUT_NAME!r}")
    if points.ndim != 3 or points.shape[2] != 3:
        raise InputError(f"keypoints must have shape (T, {NUM_POINTS}, 3), got {points.shape}")
    if points.shape[1] != NUM_POINTS:
        hint = " (a 134-point DWPose-style layout with a neck?)" if points.shape[1] == 134 else ""
        raise InputError(
            f"expected {NUM_POINTS} keypoints per frame ({LAYOUT_NAME}), got {points.shape[1]}{hint}"
        )
    if points.shape[0] == 0:
        raise InputError("keypoint sequence has 0 frames")
    bad = ~np.isfinite(points)
    if bad.any():
        t, k, _ = np.argwhere(bad)[0]
        raise InputError(
            f"keypoints contain NaN/inf ({int(bad.sum())} values; first at frame {t}, point {k})"
        )


def from_json_dict(data: Any, source: str = "<json>") -> KeypointSequence:
    """Build a sequence from a parsed signgen JSON document, with errors naming ``source``."""
    if not isinstance(data, dict) or "frames" not in data:
        raise FormatError(f"{source}: not a signgen keypoint JSON (no 'frames' key)")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise FormatError(f"{source}: signgen JSON schema_version {version!r} is not supported")
    missing = [k for k in ("width", "height", "fps") if k not in data]
    if missing:
        raise FormatError(f"{source}: signgen JSON lacks {', '.join(missing)}")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN are reported below
            pts = np.asarray(data["frames"], dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as exc:
        raise FormatError(
            f"{source}: 'frames' is not a T x 133 x 3 list of numbers ({exc})"
        ) from None
    if pts.size == 0:
        raise InputError(f"{source}: keypoint sequence has 0 frames")
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise FormatError(f"{source}: signgen JSON 'meta' must be a mapping, got {meta!r:.60}")
    layout = data.get("layout", LAYOUT_NAME)
    if not isinstance(layout, str):
        raise FormatError(f"{source}: signgen JSON 'layout' must be a name, got {layout!r:.60}")
    try:
        return KeypointSequence(pts, data["width"], data["height"], data["fps"], layout, meta)
    except InputError as exc:
        raise type(exc)(f"{source}: {exc}") from None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
