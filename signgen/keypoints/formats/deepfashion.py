"""DeepFashion pose annotations: the PATN/GFLA CSV and the PCDMs/FPDM ``.txt`` files.

CSV (``fasion-resize-annotation-{train,test}.csv``, Zhu et al. 2019): ``:``-separated with
header ``name:keypoints_y:keypoints_x``; each row holds two JSON lists of 18 integers, y
first, in the pixels of a 176 x 256 (width x height) image, -1 = missing. Joints are in
the 18-point OpenPose order (``layout.OPENPOSE18_NAMES``).

PCDMs/FPDM ``.txt``: 18 rows ``x y`` (x first) in the 256 x 256 frame obtained by padding
the 176-wide image with 40 px on each side, -1 = missing.

Both give single images; :func:`read_deepfashion` returns the rows as a T = N sequence.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from signgen.errors import FormatError, InputError
from signgen.keypoints.formats.common import empty_frame, finalize_missing
from signgen.keypoints.formats.mska import choose_sample
from signgen.keypoints.layout import OPENPOSE18_TO_COCO17
from signgen.keypoints.sequence import KeypointSequence

FORMAT = "deepfashion"
HEADER = "name:keypoints_y:keypoints_x"
WIDTH, HEIGHT = 176, 256  # DeepFashion (In-shop, PATN resize) image size
PCDMS_X_OFFSET = 40.0  # PCDMs pads 176 -> 256 wide: 40 px on the left
NUM_JOINTS = 18
DEFAULT_FPS = 25.0  # images have no frame rate; used when a sequence needs one


def _to_xys(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(18,) y and x with -1 = missing -> (18, 3) x, y, score (missing: 0, 0, 0)."""
    missing = (ys == -1) | (xs == -1)
    out = np.stack([xs, ys, np.ones_like(xs)], axis=1).astype(np.float32)
    out[missing] = 0.0
    return out


def load_deepfashion_annotations(path: str | Path) -> dict[str, np.ndarray]:
    """``{image name: (18, 3) float32 x, y, score}`` from a DeepFashion annotation CSV.

    Points are in 176 x 256 pixels in the 18-point OpenPose order; score is 1 for an
    annotated joint and 0 for a missing one (-1 in the file). Row order is kept.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FormatError(
            f"{path}: looks like a DeepFashion annotation CSV but is not text"
        ) from None
    lines = text.splitlines()
    if not lines or lines[0].strip().replace(" ", "") != HEADER:
        raise FormatError(f"{path}: not a DeepFashion annotation CSV (header must be {HEADER!r})")
    out: dict[str, np.ndarray] = {}
    try:
        rows = list(csv.reader(lines[1:], delimiter=":"))
    except csv.Error as exc:  # e.g. a field over csv's 128 kB limit
        raise FormatError(
            f"{path}: looks like a DeepFashion annotation CSV but cannot be parsed as one ({exc})"
        ) from None
    for lineno, row in enumerate(rows, start=2):
        if not row or not "".join(row).strip():
            continue
        where = f"{path} line {lineno}"
        if len(row) != 3:
            raise FormatError(
                f"{where}: looks like a DeepFashion annotation CSV but has {len(row)} "
                "':'-separated fields, expected 3 (name:keypoints_y:keypoints_x)"
            )
        name = row[0].strip()
        try:
            ys = np.asarray(json.loads(row[1]), dtype=np.float32)
            xs = np.asarray(json.loads(row[2]), dtype=np.float32)
        except (json.JSONDecodeError, TypeError, ValueError):
            raise FormatError(
                f"{where}: looks like a DeepFashion annotation CSV but the keypoint lists "
                "are not JSON lists of numbers"
            ) from None
        if ys.shape != (NUM_JOINTS,) or xs.shape != (NUM_JOINTS,):
            raise InputError(
                f"{where}: looks like a DeepFashion annotation CSV but {name!r} has "
                f"{ys.size} y and {xs.size} x values, expected {NUM_JOINTS} each"
            )
        if not (np.isfinite(ys).all() and np.isfinite(xs).all()):
            raise InputError(f"{where}: keypoints of {name!r} contain NaN/inf")
        out[name] = _to_xys(ys, xs)
    if not out:
        raise InputError(f"{path}: DeepFashion annotation CSV has 0 rows")
    return out


def load_pcdms_pose_txt(path: str | Path, x_offset: float = PCDMS_X_OFFSET) -> np.ndarray:
    """(18, 3) float32 x, y, score in 176 x 256 pixels from a PCDMs/FPDM pose ``.txt``.

    The file has one ``x y`` row per OpenPose-18 joint with x measured in the 256-wide
    padded frame; ``x_offset`` (40 px) is subtracted. -1 marks a missing joint (score 0).
    """
    path = Path(path)
    try:
        arr = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise FormatError(f"{path}: not a PCDMs pose .txt (rows of 'x y'): {exc}") from None
    if arr.shape != (NUM_JOINTS, 2):
        raise InputError(
            f"{path}: a PCDMs pose .txt must have {NUM_JOINTS} rows of 'x y', got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: pose contains NaN/inf")
    xs, ys = arr[:, 0], arr[:, 1]
    missing = (xs == -1) | (ys == -1)
    xs = np.where(missing, -1, xs - x_offset)
    return _to_xys(ys.astype(np.float32), xs.astype(np.float32))


def openpose18_to_wholebody(joints: np.ndarray) -> np.ndarray:
    """(18, 3) OpenPose-18 points -> (133, 3) COCO-WholeBody (neck dropped, rest missing)."""
    assert joints.shape == (NUM_JOINTS, 3), joints.shape
    out = empty_frame()
    for src, dst in enumerate(OPENPOSE18_TO_COCO17):
        if dst is not None:
            out[dst] = joints[src]
    return out


def read_deepfashion(
    path: Path, *, sample: str | None = None, fps: float | None = None
) -> KeypointSequence:
    """All rows of an annotation CSV (or the one named ``sample``) as a T = N sequence."""
    table = load_deepfashion_annotations(path)
    names = list(table)
    if sample is not None:
        names = [choose_sample(names, sample, path)]
    points = np.stack([openpose18_to_wholebody(table[n]) for n in names])  # (T, 133, 3)
    meta = {"source_format": FORMAT, "names": names}
    return KeypointSequence(finalize_missing(points), WIDTH, HEIGHT, fps or DEFAULT_FPS, meta=meta)


def read_pcdms_txt(path: Path, *, fps: float | None = None) -> KeypointSequence:
    """A PCDMs pose ``.txt`` as a one-frame sequence in 176 x 256 pixels."""
    points = openpose18_to_wholebody(load_pcdms_pose_txt(path))[None]  # (1, 133, 3)
    meta = {"source_format": "pcdms", "names": [path.name]}
    return KeypointSequence(points, WIDTH, HEIGHT, fps or DEFAULT_FPS, meta=meta)
