"""mmpose inferencer prediction JSON, as written by ``MMPoseInferencer(pred_out_dir=...)``.

Two shapes exist (mmpose ``apis/inferencers/base_mmpose_inferencer.py``):

- a video gives one file: a list of per-frame dicts
  ``{"frame_id": i, "instances": [instance, ...]}``;
- an image gives one file per image: a list of instances (a folder of such files, sorted
  by name, is read as a sequence).

An instance is ``{"keypoints": [[x, y] x 133], "keypoint_scores": [s x 133],
"bbox": [[x1, y1, x2, y2]], "bbox_score": s}`` (``bbox`` is nested one level by mmpose's
``split_instances``; a flat box is accepted too). The older demo script format
``{"meta_info": ..., "instance_info": [...]}`` is also read. Neither stores the frame
size nor the fps. When several people are detected, the main signer (largest bbox area x
mean keypoint score) is kept.
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
from signgen.keypoints.layout import NUM_POINTS
from signgen.keypoints.sequence import KeypointSequence

FORMAT = "mmpose"
WHAT = "an mmpose prediction JSON"


def is_instance(obj: Any) -> bool:
    return isinstance(obj, dict) and "keypoints" in obj


def is_frame(obj: Any) -> bool:
    return isinstance(obj, dict) and "instances" in obj


def looks_like_mmpose(data: Any) -> bool:
    """True for any of the mmpose prediction JSON shapes (used by format detection)."""
    if isinstance(data, dict):
        return "instance_info" in data or is_frame(data)
    if isinstance(data, list):
        return not data or is_frame(data[0]) or is_instance(data[0])
    return False


def instance_points(inst: dict[str, Any], where: str, loc: str) -> tuple[np.ndarray, float]:
    """(133, 3) points of one instance and its bbox area (from ``bbox`` or the points).

    ``where`` names the file, ``loc`` the instance in it (e.g. "frame 3 instance 0").
    """
    try:
        kpts = np.asarray(inst["keypoints"], dtype=np.float32)
        scores = inst.get("keypoint_scores")
        scores = None if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise FormatError(
            f"{where}: looks like {WHAT} but {loc} has non-numeric keypoints"
        ) from None
    if kpts.ndim != 2 or kpts.shape[1] not in (2, 3):
        raise InputError(
            f"{where}: looks like {WHAT} but {loc} has keypoints of shape {tuple(kpts.shape)}, "
            f"expected ({NUM_POINTS}, 2)"
        )
    if kpts.shape[0] != NUM_POINTS:
        hint = " (a 134-point DWPose-style layout?)" if kpts.shape[0] == 134 else ""
        raise InputError(
            f"{where}: looks like {WHAT} but {loc} has {kpts.shape[0]} keypoints, "
            f"expected {NUM_POINTS}{hint}"
        )
    if scores is None:
        if kpts.shape[1] != 3:
            raise FormatError(f"{where}: looks like {WHAT} but {loc} has no keypoint_scores")
        scores = kpts[:, 2]
    if scores.shape[0] != NUM_POINTS:
        raise InputError(
            f"{where}: looks like {WHAT} but {loc} has {scores.shape[0]} keypoint_scores, "
            f"expected {NUM_POINTS}"
        )
    pts = np.concatenate([kpts[:, :2], scores[:, None]], axis=1)
    area = None
    box = inst.get("bbox")
    if box is not None:
        try:
            b = np.asarray(box, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            b = np.zeros(0)
        if b.size >= 4:
            area = float(max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0))
    if area is None:
        area = bbox_area(pts[:, :2], pts[:, 2])
    return pts, area


def frame_points(instances: Any, where: str, loc: str) -> np.ndarray:
    """(133, 3) points of the main signer among one frame's instances (zeros if none)."""
    if not isinstance(instances, list):
        raise FormatError(f"{where}: looks like {WHAT} but {loc} 'instances' is not a list")
    if not instances:
        return empty_frame()
    people, areas, confs = [], [], []
    for i, inst in enumerate(instances):
        if not is_instance(inst):
            raise FormatError(f"{where}: looks like {WHAT} but {loc} instance {i} has no keypoints")
        pts, area = instance_points(inst, where, f"{loc} instance {i}")
        people.append(pts)
        areas.append(area)
        confs.append(float(np.clip(pts[:, 2], 0, None).mean()))
    return people[main_signer_index(areas, confs)]


def frames_from_json(data: Any, where: str) -> list[np.ndarray]:
    """Per-frame main-signer points from one parsed prediction JSON document."""
    if isinstance(data, dict) and "instance_info" in data:
        data = data["instance_info"]
    if is_frame(data):
        data = [data]
    if not isinstance(data, list):
        raise FormatError(f"{where}: looks like {WHAT} but is a {type(data).__name__}")
    if not data:
        return []
    if all(is_frame(f) for f in data):  # a video: [{"frame_id", "instances"}, ...]
        ids = [f.get("frame_id", i) for i, f in enumerate(data)]
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in ids):
            bad = next(x for x in ids if not isinstance(x, int) or isinstance(x, bool))
            raise FormatError(
                f"{where}: looks like {WHAT} but a frame_id is {bad!r:.40}, expected integers"
            )
        order = sorted(range(len(data)), key=lambda i: (ids[i], i))
        return [frame_points(data[i]["instances"], where, f"frame {i}") for i in order]
    if all(is_instance(x) for x in data):  # one image: [instance, ...]
        return [frame_points(data, where, "the image")]
    raise FormatError(
        f"{where}: looks like {WHAT} but mixes frame dicts and instances or has other items"
    )


def read_mmpose(path: Path, *, size: tuple[int, int] | None, fps: float | None) -> KeypointSequence:
    """An mmpose prediction JSON file, or a folder of per-image prediction files."""
    if path.is_dir():
        files = sorted(path.glob("*.json"), key=lambda p: natural_key(p.name))
        if not files:
            raise InputError(f"{path}: folder holds no .json prediction files")
    else:
        files = [path]
    if size is None or fps is None:
        missing = " and ".join(
            opt for opt, v in (("--size WxH", size), ("--fps F", fps)) if v is None
        )
        raise InputError(
            f"{path}: mmpose prediction JSON stores no frame size or fps; pass {missing} "
            "(the size of the video the keypoints were detected on)"
        )
    frames: list[np.ndarray] = []
    for f in tqdm(files, desc="reading mmpose JSON", unit="file", disable=len(files) < 500):
        frames.extend(frames_from_json(read_json(f, WHAT), str(f)))
    if not frames:
        raise InputError(f"{path}: keypoint sequence has 0 frames")
    points = finalize_missing(np.stack(frames))  # (T, 133, 3)
    return KeypointSequence(points, size[0], size[1], fps, meta={"source_format": FORMAT})
