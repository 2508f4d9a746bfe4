"""Comparison sheets a person can judge: clips side by side, and a strip of chosen frames.

``make demo`` writes, beside the rendered clip, the same clip as one wide video
(first frame | pose | render [| ground truth]) and a PNG strip of a few of its frames in
the same layout, so that whether the render follows the pose can be seen at a glance.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from signgen.errors import InputError

LABEL_HEIGHT = 16  # pixels of the caption bar above each column
GAP = 4  # pixels between columns and between strip rows
_BAR = (24, 24, 24)
_TEXT = (235, 235, 235)


def caption(width: int, text: str) -> np.ndarray:
    """A (LABEL_HEIGHT, width, 3) uint8 bar with ``text`` written on it (clipped to fit)."""
    bar = np.empty((LABEL_HEIGHT, width, 3), np.uint8)
    bar[:] = _BAR
    cv2.putText(bar, text, (3, LABEL_HEIGHT - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, _TEXT, 1,
                cv2.LINE_AA)  # fmt: skip
    return bar


def side_by_side(
    columns: Sequence[np.ndarray], labels: Sequence[str], frame_labels: bool = False
) -> np.ndarray:
    """Clips of one length and height -> one clip with the columns side by side.

    ``columns``: uint8 (T, H, W_i, 3) clips, or (H, W_i, 3) images shown in every frame
    (the first frame). ``labels``: one caption per column; with ``frame_labels`` each
    caption also names the frame ("render, frame 5"). Returns (T, LABEL_HEIGHT + H,
    sum(W_i) + GAP * (n - 1), 3) uint8.
    """
    if len(columns) != len(labels) or not columns:
        raise InputError(f"side_by_side needs one label per column, got {len(columns)} "
                         f"columns and {len(labels)} labels")  # fmt: skip
    lengths = {len(c) for c in columns if c.ndim == 4}
    heights = {c.shape[-3] for c in columns}
    if len(lengths) > 1 or len(heights) > 1:
        raise InputError(f"columns differ in length {sorted(lengths)} or height {sorted(heights)}")
    n = lengths.pop() if lengths else 1
    h = heights.pop()
    widths = [c.shape[-2] for c in columns]
    out = np.zeros((n, LABEL_HEIGHT + h, sum(widths) + GAP * (len(widths) - 1), 3), np.uint8)
    x = 0
    for col, label, w in zip(columns, labels, widths, strict=True):
        for t in range(n):
            text = f"{label}, frame {t}" if frame_labels and col.ndim == 4 else label
            out[t, :LABEL_HEIGHT, x : x + w] = caption(w, text)
        out[:, LABEL_HEIGHT:, x : x + w] = col  # a (H, W, 3) image broadcasts over T
        x += w + GAP
    return out


def strip_indices(n: int, rows: int = 4) -> list[int]:
    """``rows`` frame indices spread evenly over frames 1..n-1 (frame 0 is the source)."""
    if n < 2:
        return [0]
    return sorted({round(float(i)) for i in np.linspace(n / rows, n - 1, min(rows, n - 1))})


def strip(sheet: np.ndarray, indices: Sequence[int]) -> np.ndarray:
    """Rows ``indices`` of a (T, H, W, 3) sheet stacked vertically, GAP pixels apart."""
    rows = [sheet[i] for i in indices]
    gap = np.zeros((GAP, sheet.shape[2], 3), np.uint8)
    parts: list[np.ndarray] = []
    for i, row in enumerate(rows):
        parts += [gap, row] if i else [row]
    return np.concatenate(parts, axis=0)
