"""Read any supported keypoint file into a :class:`KeypointSequence` (docs/keypoints.md).

Formats (``fmt``), detected from the path and its content when ``fmt="auto"``:

=============  ===========================================================  ============
name           what                                                         size / fps
=============  ===========================================================  ============
signgen        signgen sequence JSON v1 (``{"frames": ...}``)                stored
mska           MSKA Phoenix-2014T pickle (``Phoenix-2014T.train``)           210x260, 25
openpose       folder of OpenPose ``*_keypoints.json`` (or one such file)    from args
mmpose         mmpose inferencer prediction JSON (file or folder)            from args
deepfashion    DeepFashion ``name:keypoints_y:keypoints_x`` CSV              176x256
pcdms          PCDMs/FPDM pose ``.txt`` (18 rows ``x y``)                    176x256
pose           pose-format ``.pose`` (MediaPipe Holistic, OpenPose-135,      stored
               OpenPose, COCO-WholeBody 133 headers)
=============  ===========================================================  ============

:func:`save_keypoints` writes signgen JSON, or a ``.pose`` file when the name ends in ``.pose``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from signgen.errors import FormatError, InputError
from signgen.keypoints.formats import deepfashion, mmpose, mska, openpose, poseformat
from signgen.keypoints.formats.common import read_json
from signgen.keypoints.sequence import KeypointSequence, from_json_dict

FORMATS = ("signgen", "mska", "openpose", "mmpose", "deepfashion", "pcdms", "pose")
_PICKLE_PROTOCOLS = range(2, 6)
_MSKA_NAME = re.compile(r"^Phoenix-2014T?\.(train|dev|test)$", re.IGNORECASE)
_SNIFF_BYTES = 4096


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` (e.g. ``"210x260"``) -> ``(W, H)``; anything else raises InputError."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise InputError(
            f"invalid size {text!r}: expected WIDTHxHEIGHT in pixels with positive integers, "
            "e.g. 210x260"
        )
    return int(m.group(1)), int(m.group(2))


def _is_xy_rows(text: bytes) -> bool:
    """True when every non-empty line is two numbers (a PCDMs pose .txt)."""
    row = re.compile(rb"-?\d+(\.\d*)?([eE][-+]?\d+)?\s+-?\d+(\.\d*)?([eE][-+]?\d+)?")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return bool(lines) and all(row.fullmatch(ln) for ln in lines)


def _json_kind(data: Any) -> str | None:
    if isinstance(data, dict) and "frames" in data:
        return "signgen"
    if isinstance(data, dict) and "people" in data:
        return "openpose"
    if mmpose.looks_like_mmpose(data):
        return "mmpose"
    return None


def _sniff(path: Path) -> tuple[str, Any]:
    """(format name, parsed JSON document or None) for ``path``."""
    if not path.exists():
        raise InputError(f"keypoint file not found: {path}")
    if path.is_dir():
        if openpose.list_frames(path):
            return "openpose", None
        if any(path.glob("*.json")):
            return "mmpose", None
        raise FormatError(
            f"{path}: folder holds neither OpenPose *_keypoints.json files nor mmpose "
            ".json predictions"
        )
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if not head:
        raise InputError(f"keypoint file is empty (0 bytes): {path}")
    if head[0] == 0x80 and len(head) > 1 and head[1] in _PICKLE_PROTOCOLS:
        return "mska", None
    if poseformat.looks_like_pose(path, head):
        return "pose", None
    if head.startswith(b"PK\x03\x04"):
        raise FormatError(
            f"{path}: is a zip archive (a torch.save checkpoint?), not a keypoint file"
        )
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:1] in (b"{", b"["):
        data = read_json(path, "a JSON keypoint file")
        kind = _json_kind(data)
        if kind is None:
            keys = (
                f" (keys: {', '.join(map(str, list(data)[:6]))})" if isinstance(data, dict) else ""
            )
            raise FormatError(
                f"{path}: JSON but not a known keypoint format{keys}: expected signgen JSON "
                "('frames'), an mmpose prediction ('instances'/'keypoints') or OpenPose "
                "('people')"
            )
        return kind, data
    if text.replace(b" ", b"").startswith(deepfashion.HEADER.encode()):
        return "deepfashion", None
    if _MSKA_NAME.match(path.name):
        return "mska", None
    if path.suffix.lower() == ".txt" and _is_xy_rows(text):
        return "pcdms", None
    raise FormatError(
        f"{path}: unknown keypoint format; expected one of {', '.join(FORMATS)} "
        "(see `signgen keypoints convert --help`)"
    )


def detect_format(path: str | Path) -> str:
    """Name of the keypoint format of ``path`` (one of :data:`FORMATS`)."""
    return _sniff(Path(path))[0]


def load_keypoints(
    path: str | Path,
    *,
    sample: str | None = None,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    fmt: str = "auto",
) -> KeypointSequence:
    """Read a keypoint file in any supported format as a 133-point sequence.

    Args:
        path: file or folder (OpenPose / mmpose per-image predictions).
        sample: sample name inside an MSKA pickle or a DeepFashion CSV. Required for an
            MSKA pickle holding several samples; a DeepFashion CSV without it gives all
            rows as frames.
        size: ``(width, height)`` of the frames. Required by formats that do not store it
            (OpenPose, mmpose); for the others the points are rescaled to this size.
        fps: frame rate; required by OpenPose/mmpose, overrides the stored/default one
            elsewhere (MSKA 25, DeepFashion 25).
        fmt: ``"auto"`` or one of :data:`FORMATS`.

    Missing points have score 0 in every format. Errors raise :class:`InputError` (or
    :class:`FormatError`) naming the file, the format it was read as and what is wrong.
    """
    return load_keypoints_and_format(path, sample=sample, size=size, fps=fps, fmt=fmt)[0]


def load_keypoints_and_format(
    path: str | Path,
    *,
    sample: str | None = None,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    fmt: str = "auto",
) -> tuple[KeypointSequence, str]:
    """:func:`load_keypoints` that also returns the format name it read."""
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise InputError(
            f"unknown keypoint format {fmt!r}; choose auto or one of {', '.join(FORMATS)}"
        )
    if fps is not None and not (float(fps) > 0 and float(fps) < float("inf")):
        raise InputError(f"fps must be a positive number, got {fps!r}")
    if fmt == "auto":
        kind, data = _sniff(path)
    else:
        if not path.exists():
            raise InputError(f"keypoint file not found: {path}")
        kind, data = fmt, None
    if sample is not None and kind not in ("mska", "deepfashion"):
        raise InputError(
            f"{path}: --sample only applies to MSKA pickles and DeepFashion CSVs, this is {kind}"
        )
    if kind in ("signgen", "mska", "deepfashion", "pcdms", "pose") and path.is_dir():
        raise InputError(f"{path} is a folder; the {kind} format is a single file")

    if kind == "signgen":
        if data is None:
            data = read_json(path, "signgen keypoint JSON")
        if not (isinstance(data, dict) and "frames" in data):
            raise FormatError(f"{path}: not a signgen keypoint JSON (no 'frames' key)")
        seq = from_json_dict(data, str(path))
        if fps is not None:
            seq.fps = float(fps)
    elif kind == "mska":
        seq = mska.read_mska(path, sample=sample, fps=fps)
    elif kind == "openpose":
        seq = openpose.read_openpose(path, size=size, fps=fps)
    elif kind == "mmpose":
        seq = mmpose.read_mmpose(path, size=size, fps=fps)
    elif kind == "deepfashion":
        seq = deepfashion.read_deepfashion(path, sample=sample, fps=fps)
    elif kind == "pose":
        seq = poseformat.read_pose(path, size=size, fps=fps)
    else:
        assert kind == "pcdms", kind
        seq = deepfashion.read_pcdms_txt(path, fps=fps)
    if size is not None and tuple(size) != seq.size:
        seq = seq.rescaled(*size)
    seq.meta.setdefault("source_format", kind)
    return seq, kind


def save_keypoints(seq: KeypointSequence, path: str | Path) -> str:
    """Write ``seq`` atomically: a pose-format ``.pose`` file for a ``.pose`` name, else
    signgen JSON. Returns the format written (``"pose"`` or ``"signgen"``)."""
    if Path(path).suffix.lower() == poseformat.SUFFIX:
        poseformat.write_pose(seq, path)
        return "pose"
    seq.save(path)
    return "signgen"
