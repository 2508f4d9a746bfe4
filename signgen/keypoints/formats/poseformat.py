"""``.pose`` files of the pose-format library (Moryossef et al., sign-language-processing).

A ``.pose`` file is a binary header (frame size, and named *components*, each a list of named
points) followed by frames x people x points x dims float32 data and a confidence per point.
Reading and writing go through pose-format's own :class:`pose_format.Pose`; this module only
maps the point layouts to COCO-WholeBody 133, by component and point *names*:

====================  ==========================================================  ===========
layout                components                                                   mapping
====================  ==========================================================  ===========
MediaPipe Holistic    POSE_LANDMARKS, FACE_LANDMARKS, LEFT_HAND_LANDMARKS,         holistic_map
                      RIGHT_HAND_LANDMARKS (+ POSE_WORLD_LANDMARKS, ignored)
OpenPose-135          BODY_135: 25 body (COCO-17 + upper neck, head top, 6 feet),  by name
                      20 + 20 hand points (the wrists are the body's), 70 face
OpenPose (BODY_25)    pose_keypoints_2d, face_keypoints_2d, hand_left_keypoints_2d, formats.openpose
                      hand_right_keypoints_2d
COCO-WholeBody 133    BODY (17 + 6 feet), FACE (68), LEFT_HAND, RIGHT_HAND         identity
====================  ==========================================================  ===========

signgen writes the COCO-WholeBody 133 layout (pose-format's ``cocowholebody_components``,
point format XYC: x, y in pixels and the score as the confidence), so its files read back
exactly and other pose-format tools recognise them. A Holistic face stored as a subset of the
mesh (pose-format names face points by mesh index) maps the points it has; the others are
missing. A point with confidence 0 is missing (score 0). With several people in a file the
main signer is kept (largest box area x mean confidence over the clip).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np

from signgen.errors import FormatError, InputError
from signgen.fileio import atomic_write_bytes
from signgen.keypoints.formats.common import bbox_area, main_signer_index
from signgen.keypoints.holistic_map import (
    BLAZEPOSE_NAMES,
    FACEMESH_POINTS,
    HAND_NAMES,
    holistic_to_wholebody,
)
from signgen.keypoints.layout import NUM_POINTS
from signgen.keypoints.sequence import KeypointSequence

FORMAT = "pose"
SUFFIX = ".pose"
# pose-format writes its header version as the first 4 bytes (float32, little-endian).
_VERSIONS = tuple(struct.pack("<f", v) for v in (0.1, 0.2))

HOLISTIC = ("POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS")
HOLISTIC_WORLD = "POSE_WORLD_LANDMARKS"
OPENPOSE_135 = ("BODY_135",)
OPENPOSE = ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d")  # fmt: skip
WHOLEBODY = ("BODY", "FACE", "LEFT_HAND", "RIGHT_HAND")
KNOWN_LAYOUTS = (
    "MediaPipe Holistic (POSE_LANDMARKS, FACE_LANDMARKS, LEFT_HAND_LANDMARKS, "
    "RIGHT_HAND_LANDMARKS[, POSE_WORLD_LANDMARKS])",
    "OpenPose-135 (BODY_135)",
    "OpenPose (pose_keypoints_2d, face_keypoints_2d, hand_left_keypoints_2d, "
    "hand_right_keypoints_2d)",
    "COCO-WholeBody 133 (BODY, FACE, LEFT_HAND, RIGHT_HAND)",
)

# COCO-WholeBody 133 point names of pose-format's header: 23 body/feet, 68 face, 21 per hand.
_WB_BODY = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_big_toe", "left_small_toe",
    "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)  # fmt: skip
_OP135_BODY = (
    "Nose",
    "LEye",
    "REye",
    "LEar",
    "REar",
    "LShoulder",
    "RShoulder",
    "LElbow",
    "RElbow",
    "LWrist",
    "RWrist",
    "LHip",
    "RHip",
    "LKnee",
    "RKnee",
    "LAnkle",
    "RAnkle",
    None,
    None,
    "LBigToe",
    "LSmallToe",
    "LHeel",
    "RBigToe",
    "RSmallToe",
    "RHeel",
)  # fmt: skip  (None: UpperNeck and HeadTop have no COCO-WholeBody counterpart)
_OP135_FINGERS = (
    "Thumb1CMC", "Thumb2Knuckles", "Thumb3IP", "Thumb4FingerTip", "Index1Knuckles",
    "Index2PIP", "Index3DIP", "Index4FingerTip", "Middle1Knuckles", "Middle2PIP", "Middle3DIP",
    "Middle4FingerTip", "Ring1Knuckles", "Ring2PIP", "Ring3DIP", "Ring4FingerTip",
    "Pinky1Knuckles", "Pinky2PIP", "Pinky3DIP", "Pinky4FingerTip",
)  # fmt: skip
_OP135_FACE_START = 65  # BODY_135 points 65-132 are the 68 iBUG face landmarks (133, 134 pupils)


def looks_like_pose(path: Path, head: bytes) -> bool:
    """True for a ``.pose`` name or pose-format's version float at the start of the file."""
    return path.suffix.lower() == SUFFIX or head[:4] in _VERSIONS


def _read_pose(path: Path) -> Any:
    from pose_format import Pose

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        raise InputError(f"keypoint file is empty (0 bytes): {path}")
    try:
        return Pose.read(data)
    except Exception as exc:  # pose-format raises struct/Value/Index/Unicode errors on bad bytes
        raise FormatError(
            f"{path}: not a readable .pose file ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'truncated or corrupt'})"
        ) from None


def _index(component: Any) -> dict[str, int]:
    return {str(name): i for i, name in enumerate(component.points)}


def _layout(names: list[str]) -> str:
    have = set(names)
    if set(HOLISTIC) <= have:
        return "holistic"
    if set(OPENPOSE_135) <= have:
        return "openpose_135"
    if set(WHOLEBODY) <= have:
        return "coco_wholebody_133"
    if OPENPOSE[0] in have:
        return "openpose"
    return ""


def _holistic_frames(
    comps: dict[str, tuple[int, Any]], xy: np.ndarray, conf: np.ndarray
) -> np.ndarray:
    """(T, N, 2) xy and (T, N) confidence of one person in a Holistic layout -> (T, 133, 3)."""
    t = xy.shape[0]
    (b0, body), (f0, face) = comps["POSE_LANDMARKS"], comps["FACE_LANDMARKS"]
    body_idx, face_idx = _index(body), _index(face)
    body_cols = [b0 + body_idx[n] if n in body_idx else -1 for n in BLAZEPOSE_NAMES]
    # Face points are named by their mesh index; a subset header has only some of them.
    mesh_cols = np.full(FACEMESH_POINTS, -1)
    for name, i in face_idx.items():
        if name.isdigit() and int(name) < FACEMESH_POINTS:
            mesh_cols[int(name)] = f0 + i
    hands = []
    for key in ("LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS"):
        h0, hand = comps[key]
        idx = _index(hand)
        hands.append([h0 + idx[n] if n in idx else -1 for n in HAND_NAMES])
    out = np.zeros((t, NUM_POINTS, 3), dtype=np.float32)
    for k in range(t):
        body_pts = _take(xy[k], conf[k], body_cols, with_conf=True)
        if body_pts is not None:
            body_pts[np.isnan(body_pts[:, 2]), 2] = 0.0
        out[k] = holistic_to_wholebody(
            body_pts,
            _take(xy[k], conf[k], mesh_cols),
            _take(xy[k], conf[k], hands[0]),
            _take(xy[k], conf[k], hands[1]),
        )
    return out


def _take(
    xy: np.ndarray, conf: np.ndarray, cols: list[int] | np.ndarray, with_conf: bool = False
) -> np.ndarray | None:
    """Rows ``cols`` of one frame's (N, 2) ``xy`` as (len(cols), 2 or 3); NaN where a column is
    absent (-1) or its confidence is 0; None when every one is (the part is missing)."""
    cols = np.asarray(cols)
    ok = (cols >= 0) & (conf[np.maximum(cols, 0)] > 0)
    if not ok.any():
        return None
    arr = np.full((len(cols), 3 if with_conf else 2), np.nan, dtype=np.float32)
    arr[ok, :2] = xy[cols[ok]]
    if with_conf:
        arr[ok, 2] = conf[cols[ok]]
    return arr


def _by_names(xy: np.ndarray, conf: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """(T, 133, 3) from (destination 133 index, source column) pairs."""
    out = np.zeros((xy.shape[0], NUM_POINTS, 3), dtype=np.float32)
    if pairs:
        dst, src = (np.asarray(v) for v in zip(*pairs))
        out[:, dst, :2] = xy[:, src]
        out[:, dst, 2] = conf[:, src]
    return out


def _wholebody_pairs(comps: dict[str, tuple[int, Any]]) -> list[tuple[int, int]]:
    pairs = []
    b0, body = comps["BODY"]
    idx = _index(body)
    pairs += [(i, b0 + idx[n]) for i, n in enumerate(_WB_BODY) if n in idx]
    f0, face = comps["FACE"]
    pairs += [(23 + i, f0 + i) for i in range(min(68, len(face.points)))]
    for start, key in ((91, "LEFT_HAND"), (112, "RIGHT_HAND")):
        h0, hand = comps[key]
        pairs += [(start + i, h0 + i) for i in range(min(21, len(hand.points)))]
    return pairs


def _openpose135_pairs(comps: dict[str, tuple[int, Any]]) -> list[tuple[int, int]]:
    c0, comp = comps["BODY_135"]
    idx = _index(comp)
    pairs = [
        (i if i < 17 else i - 2, c0 + idx[n]) for i, n in enumerate(_OP135_BODY) if n and n in idx
    ]
    for start, side in ((91, "L"), (112, "R")):
        wrist = f"{side}Wrist"
        if wrist in idx:
            pairs.append((start, c0 + idx[wrist]))  # hand point 0 is the body's wrist
        pairs += [
            (start + 1 + j, c0 + idx[side + f])
            for j, f in enumerate(_OP135_FINGERS)
            if side + f in idx
        ]
    if len(comp.points) >= _OP135_FACE_START + 68:
        pairs += [(23 + j, c0 + _OP135_FACE_START + j) for j in range(68)]
    return pairs


def _openpose_frames(
    comps: dict[str, tuple[int, Any]], xy: np.ndarray, conf: np.ndarray
) -> np.ndarray:
    from signgen.keypoints.formats.openpose import person_to_wholebody

    out = []
    for k in range(xy.shape[0]):
        person = {}
        for key in OPENPOSE:
            if key in comps:
                c0, comp = comps[key]
                n = len(comp.points)
                rows = np.concatenate([xy[k, c0 : c0 + n], conf[k, c0 : c0 + n, None]], axis=1)
                person[key] = rows.reshape(-1).tolist()
        out.append(person_to_wholebody(person, f"frame {k}"))
    return np.stack(out).astype(np.float32)  # (T, 133, 3)


def read_pose(
    path: str | Path, *, size: tuple[int, int] | None = None, fps: float | None = None
) -> KeypointSequence:
    """Read a ``.pose`` file as a 133-point sequence at the header's frame size and fps."""
    path = Path(path)
    pose = _read_pose(path)
    header = pose.header
    names = [str(c.name) for c in header.components]
    layout = _layout(names)
    if not layout:
        raise FormatError(
            f"{path}: .pose components {', '.join(names) or '(none)'} are not a layout signgen "
            f"maps to 133 points; it reads {'; '.join(KNOWN_LAYOUTS)}"
        )
    comps: dict[str, tuple[int, Any]] = {}
    start = 0
    for c in header.components:
        comps[str(c.name)] = (start, c)
        start += len(c.points)
    data = np.ma.getdata(pose.body.data).astype(np.float32)  # (T, P, N, D)
    conf = np.asarray(np.ma.getdata(pose.body.confidence), dtype=np.float32)  # (T, P, N)
    if data.ndim != 4 or data.shape[0] == 0 or data.shape[1] == 0:
        raise InputError(f"{path}: .pose file has no frames (data shape {data.shape})")
    if data.shape[2] != start or data.shape[3] < 2:
        raise FormatError(
            f"{path}: .pose data has {data.shape[2]} points x {data.shape[3]} dims per person, "
            f"the header names {start} points"
        )
    conf = np.where(np.isfinite(conf), conf, 0.0)
    data = np.where(np.isfinite(data), data, 0.0)
    person = _main_person(data[..., :2], conf)
    xy, c = data[:, person, :, :2], conf[:, person]  # (T, N, 2), (T, N)
    if layout == "holistic":
        points = _holistic_frames(comps, xy, c)
    elif layout == "openpose":
        points = _openpose_frames(comps, xy, c)
    else:
        pairs = (
            _wholebody_pairs(comps) if layout == "coco_wholebody_133" else _openpose135_pairs(comps)
        )
        points = _by_names(xy, c, pairs)
    points[..., 2] = np.clip(points[..., 2], 0.0, 1.0)
    points[points[..., 2] <= 0] = 0.0
    width, height = int(header.dimensions.width), int(header.dimensions.height)
    if width <= 0 or height <= 0:
        if size is None:
            raise InputError(
                f"{path}: .pose header has no frame size ({width}x{height}); pass --size WxH"
            )
        width, height = size
    file_fps = float(pose.body.fps)
    if fps is None and not (file_fps > 0 and np.isfinite(file_fps)):
        raise InputError(f"{path}: .pose file has no frame rate (fps {file_fps:g}); pass --fps")
    seq = KeypointSequence(points, width, height, fps if fps is not None else file_fps)
    seq.meta["pose_components"] = names
    return seq


def _main_person(xy: np.ndarray, conf: np.ndarray) -> int:
    """Index of the main signer among the people of a (T, P, N, 2) / (T, P, N) body."""
    people = xy.shape[1]
    if people == 1:
        return 0
    areas = [
        float(np.mean([bbox_area(xy[t, p], conf[t, p]) for t in range(len(xy))]))
        for p in range(people)
    ]
    confidences = [float(conf[:, p].mean()) for p in range(people)]
    return main_signer_index(areas, confidences)


def pose_bytes(seq: KeypointSequence) -> bytes:
    """``seq`` as the bytes of a pose-format ``.pose`` file (COCO-WholeBody 133 header)."""
    from pose_format import Pose
    from pose_format.numpy import NumPyPoseBody
    from pose_format.pose_header import PoseHeader, PoseHeaderDimensions
    from pose_format.utils.cocowholebody133_header import cocowholebody_components

    if seq.width > 65535 or seq.height > 65535:
        raise InputError(f".pose stores frame sizes up to 65535 px, got {seq.width}x{seq.height}")
    header = PoseHeader(
        version=0.2,
        dimensions=PoseHeaderDimensions(width=seq.width, height=seq.height, depth=0),
        components=cocowholebody_components(),
    )
    pts = seq.points.astype(np.float32)
    body = NumPyPoseBody(
        fps=float(seq.fps),
        data=pts[:, None, :, :2],  # (T, 1 person, 133, XY)
        confidence=pts[:, None, :, 2],  # (T, 1, 133)
    )
    buf = io.BytesIO()
    Pose(header, body).write(buf)
    return buf.getvalue()


def write_pose(seq: KeypointSequence, path: str | Path) -> None:
    """Write ``seq`` as a ``.pose`` file atomically."""
    atomic_write_bytes(path, pose_bytes(seq))
