"""Stage 1 of render-many (pipelines/render_many.py): read one clip into frame rows.

Its own module, importing no torch or diffusers at the top: every Ray worker that runs a
read task imports the module the task's function lives in, and a read worker needs
neither (a torch import costs seconds of CPU per worker; a job starts several).
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import numpy as np

from signgen.errors import InputError
from signgen.sampling.inputs import check_clip

__all__ = ["load_clip", "read_clip"]


def load_clip(
    spec: dict[str, Any], pose_backend: str = "auto"
) -> tuple[np.ndarray, Any, np.ndarray, dict[str, Any] | None]:
    """A clip's inputs as ``signgen render`` reads them: (first frame (H, W, 3), keypoint
    sequence in its pixels, the first frame's keypoints (133, 3) for MCLD models, the
    retargeting record or None). With ``spec["retarget"]`` the keypoints are retargeted
    onto the first frame's signer (:func:`signgen.sampling.inputs.retarget_clip`); its
    reference is ``spec["source_keypoints"]`` or extracted with ``pose_backend``. The record
    is the fit (``meta["retarget"]``) and the warnings, kept for the ledger."""
    from signgen.keypoints import load_keypoints
    from signgen.keypoints.retarget import caught_retarget_warnings
    from signgen.sampling.inputs import retarget_clip
    from signgen.video import read_first_frame

    first = read_first_frame(spec["video"])
    drive = load_keypoints(spec["keypoints"], sample=spec["sample"] or None)
    source_file = spec.get("source_keypoints")
    source = load_keypoints(source_file) if source_file else None
    if spec.get("retarget"):
        extractor = None if source is not None else _frame_extractor(pose_backend)
        with caught_retarget_warnings() as warned:
            kp, reference = retarget_clip(first, drive, source, extractor=extractor)
        return first, kp, reference, {**kp.meta["retarget"], "warnings": warned}
    kp = check_clip(first, drive)  # as `signgen render` checks it, before any GPU time
    points = check_clip(first, source).points[0] if source is not None else kp.points[0]
    return first, kp, points, None


@functools.lru_cache(maxsize=2)
def _frame_extractor(backend: str):
    """The pose model of reference frames, loaded once per read worker process."""
    from signgen.keypoints.first_frame import first_frame_extractor

    return first_frame_extractor(backend, device="cpu")  # read tasks reserve no GPU


def read_clip(
    spec: dict[str, Any], pose_backend: str = "auto", temporal: bool = False
) -> list[dict[str, Any]]:
    """Stage 1 (flat_map): one clip -> one row per frame, or one error row. ``temporal``:
    one row for the whole clip instead (its frames' keypoints (T, 133, 3) as float32 bytes in
    ``clip_points``; ``points`` is the first pose), as a temporal render needs them all."""
    from signgen.video.images import encode_png

    t0 = time.perf_counter()
    try:
        first, kp, source_points, retarget = load_clip(spec, pose_backend)
        png = encode_png(first, compression=1)
    except Exception as exc:  # any bad input fails this clip, not the job
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not isinstance(exc, InputError):
            reason = f"{type(exc).__name__}: {reason}"
        zeros = np.zeros((133, 3), np.float32)
        row = _row(spec, -1, 0, 0.0, zeros, zeros, b"", reason, 0.0)
        return [{**row, "clip_points": b""} if temporal else row]
    seconds = time.perf_counter() - t0
    n = len(kp)
    note = json.dumps(retarget) if retarget is not None else ""
    if temporal:
        row = _row(spec, 0, n, kp.fps, kp.points[0], source_points, png, "", seconds, note)
        return [{**row, "clip_points": np.ascontiguousarray(kp.points, np.float32).tobytes()}]
    return [
        _row(spec, i, n, kp.fps, kp.points[i], source_points, png, "",
             seconds if i == 0 else 0.0, note)
        for i in range(n)
    ]  # fmt: skip


def _row(
    spec, index, n, fps, points, source_points, png, error, read_s, retarget=""
) -> dict[str, Any]:
    return {
        "clip_id": spec["clip_id"],
        "frame_index": int(index),
        "num_frames": int(n),
        "fps": float(fps),
        "seed": int(spec["seed"]),
        "points": np.ascontiguousarray(points, dtype=np.float32),  # (133, 3)
        # The first frame's keypoints (the clip's first pose, its source_keypoints, or the
        # reference of retargeting): MCLD models locate its face and hands with them, as
        # `signgen render` does.
        "source_points": np.ascontiguousarray(source_points, dtype=np.float32),  # (133, 3)
        "source_png": png,
        "error": error,
        "read_s": float(read_s),
        "retarget": retarget,  # JSON of the fit (for the ledger), "" when not retargeted
    }
