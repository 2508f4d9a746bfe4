"""OpenPose per-frame JSON (``--write_json``): a folder of ``*_keypoints.json`` files.

Each file holds ``people``, each with flat ``[x, y, c, x, y, c, ...]`` lists:
``pose_keypoints_2d`` (BODY_25: 25 points, or COCO-18: 18 points), ``face_keypoints_2d``
(70 points: the 68 iBUG landmarks then two pupils), ``hand_left_keypoints_2d`` and
``hand_right_keypoints_2d`` (21 points each, the same order as COCO-WholeBody hands).
Missing points are ``0, 0, 0``. The format stores neither frame size nor fps.

Joint orders (OpenPose ``doc/02_output.md``):
BODY_25: 0 nose, 1 neck, 2-4 right shoulder/elbow/wrist, 5-7 left, 8 mid hip, 9-11 right
hip/knee/ankle, 12-14 left, 15 right eye, 16 left eye, 17 right ear, 18 left ear,
19 left big toe, 20 left small toe, 21 left heel, 22 right big toe, 23 right small toe,
24 right heel. COCO-18 is BODY_25 without mid hip and feet (8-10 right hip/knee/ankle,
11-13 left, 14-17 eyes and ears). COCO-WholeBody feet 17-22 are left big toe, left small
toe, left heel, right big toe, right small toe, right heel. Neck and mid hip have no
COCO-WholeBody counterpart and are dropped; so are the pupils (face points 68, 69).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from signgen.errors import FormatError, InputError
from signgen.keypoints.formats.common import (
    bbox_area,
    empty_frame,
    finalize_missing,
    main_signer_index,
    natural_key,
    read_json,
)
from signgen.keypoints.layout import FACE, LEFT_HAND, OPENPOSE18_TO_COCO17, RIGHT_HAND
from signgen.keypoints.sequence import KeypointSequence

FORMAT = "openpose"
FILE_SUFFIX = "_keypoints.json"

# COCO-WholeBody index for each BODY_25 joint (None: neck 1 and mid hip 8 are dropped).
BODY25_TO_WHOLEBODY: tuple[int | None, ...] = (
    0, None, 6, 8, 10, 5, 7, 9, None, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3,
    17, 18, 19, 20, 21, 22,
)  # fmt: skip
# COCO-18 shares the 18-point OpenPose order used by DeepFashion.
COCO18_TO_WHOLEBODY: tuple[int | None, ...] = OPENPOSE18_TO_COCO17
BODY_TABLES = {25: BODY25_TO_WHOLEBODY, 18: COCO18_TO_WHOLEBODY}
NUM_FACE_LANDMARKS = 68  # OpenPose face points 0-67 = COCO-WholeBody 23-90; 68, 69 pupils


def list_frames(folder: Path) -> list[Path]:
    """The ``*_keypoints.json`` files of ``folder`` in frame order (numeric-aware name sort)."""
    return sorted(folder.glob(f"*{FILE_SUFFIX}"), key=lambda p: natural_key(p.name))


def _points(person: dict[str, Any], key: str, allowed: tuple[int, ...], where: str) -> np.ndarray:
    flat = person.get(key) or []
    try:
        arr = np.asarray(flat, dtype=np.float32)
    except (TypeError, ValueError):
        raise FormatError(f"{where}: looks like OpenPose JSON but {key} is not numeric") from None
    if arr.size == 0:
        return np.zeros((0, 3), np.float32)
    if arr.ndim != 1 or arr.size % 3 or arr.size // 3 not in allowed:
        expected = " or ".join(f"{n * 3} ({n} points)" for n in allowed)
        raise InputError(
            f"{where}: looks like OpenPose JSON but {key} has {arr.size} values, "
            f"expected {expected}"
        )
    return arr.reshape(-1, 3)


def person_to_wholebody(person: dict[str, Any], where: str) -> np.ndarray:
    """One OpenPose person as (133, 3) COCO-WholeBody points (missing = score 0)."""
    out = empty_frame()
    body = _points(person, "pose_keypoints_2d", (25, 18), where)
    if len(body):
        for src, dst in enumerate(BODY_TABLES[len(body)]):
            if dst is not None:
                out[dst] = body[src]
    face = _points(person, "face_keypoints_2d", (70, 68), where)
    if len(face):
        out[FACE.start : FACE.stop] = face[:NUM_FACE_LANDMARKS]
    for key, part in (
        ("hand_left_keypoints_2d", LEFT_HAND),
        ("hand_right_keypoints_2d", RIGHT_HAND),
    ):
        hand = _points(person, key, (21,), where)
        if len(hand):
            out[part.start : part.stop] = hand
    return out


def _main_person(people: list[np.ndarray]) -> np.ndarray:
    """Largest body bbox x mean body confidence (all points if no body point is visible)."""
    areas, confs = [], []
    for p in people:
        body = p[:23]
        if (body[:, 2] > 0).sum() < 2:
            body = p
        areas.append(bbox_area(body[:, :2], body[:, 2]))
        visible = body[:, 2] > 0
        confs.append(float(body[visible, 2].mean()) if visible.any() else 0.0)
    return people[main_signer_index(areas, confs)]


def frame_from_json(data: Any, where: str) -> np.ndarray:
    """One parsed OpenPose frame document as (133, 3) points of its main signer."""
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise FormatError(f"{where}: looks like OpenPose JSON but has no 'people' list")
    people = []
    for i, person in enumerate(data["people"]):
        if not isinstance(person, dict):
            raise FormatError(f"{where}: looks like OpenPose JSON but people[{i}] is not an object")
        people.append(person_to_wholebody(person, f"{where} people[{i}]"))
    if not people:
        return empty_frame()
    return _main_person(people)


def read_openpose(
    path: Path, *, size: tuple[int, int] | None, fps: float | None
) -> KeypointSequence:
    """A folder of OpenPose ``*_keypoints.json`` files (or one such file) as a sequence."""
    files = list_frames(path) if path.is_dir() else [path]
    if not files:
        raise InputError(f"{path}: no *{FILE_SUFFIX} files (OpenPose folder) found")
    if size is None or fps is None:
        missing = " and ".join(
            opt for opt, v in (("--size WxH", size), ("--fps F", fps)) if v is None
        )
        raise InputError(
            f"{path}: OpenPose JSON stores no frame size or fps; pass {missing} "
            "(the size of the video the keypoints were detected on)"
        )
    frames = [
        frame_from_json(read_json(f, "OpenPose JSON"), str(f))
        for f in tqdm(files, desc="reading OpenPose JSON", unit="frame", disable=len(files) < 500)
    ]
    points = finalize_missing(np.stack(frames))  # (T, 133, 3)
    meta = {"source_format": FORMAT}
    return KeypointSequence(points, size[0], size[1], fps, meta=meta)
