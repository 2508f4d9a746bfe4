"""MSKA Phoenix-2014T keypoint pickles (``Phoenix-2014T.train`` / ``.dev`` / ``.test``).

Each file is a plain pickle of a dict keyed by sample name; each value is a dict with
``name``, ``gloss``, ``text``, ``num_frames`` and ``keypoint``: a torch tensor (or numpy
array) of shape (T, 133, 3) holding x, y, score in the pixels of a 210 x 260 frame
(Phoenix-2014T's resolution). Files are read with :mod:`signgen.keypoints.safe_pickle`.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from signgen.errors import FormatError, InputError
from signgen.keypoints.formats.common import finalize_missing
from signgen.keypoints.safe_pickle import safe_load_pickle
from signgen.keypoints.sequence import KeypointSequence

logger = logging.getLogger(__name__)

FORMAT = "mska"
WIDTH, HEIGHT = 210, 260  # Phoenix-2014T frame size (pixels)
DEFAULT_FPS = 25.0  # Phoenix-2014T is recorded at 25 fps
META_KEYS = ("name", "gloss", "text", "signer")


def load_mska_samples(path: str | Path) -> dict[str, dict[str, Any]]:
    """All samples of an MSKA pickle, unpickled safely: ``{name: {"keypoint": ..., ...}}``."""
    path = Path(path)
    data = safe_load_pickle(path, what="MSKA keypoint pickle")
    if not isinstance(data, Mapping):
        raise FormatError(
            f"{path}: looks like an MSKA keypoint pickle but holds a {type(data).__name__}, "
            "expected a dict keyed by sample name"
        )
    if not data:
        raise InputError(f"{path}: MSKA keypoint pickle holds 0 samples")
    for name, value in data.items():
        if not isinstance(value, Mapping) or "keypoint" not in value:
            raise FormatError(
                f"{path}: looks like an MSKA keypoint pickle but sample {name!r} has no "
                "'keypoint' entry"
            )
    return {str(k): dict(v) for k, v in data.items()}


def keypoint_array(value: Any, where: str) -> np.ndarray:
    """A sample's ``keypoint`` (torch tensor or array-like) as float32 numpy."""
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise FormatError(f"{where}: 'keypoint' is not a numeric array") from None
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise InputError(
            f"{where}: looks like an MSKA keypoint pickle but 'keypoint' has shape "
            f"{tuple(arr.shape)}, expected (T, 133, 3)"
        )
    return arr[..., :3]


def sample_to_sequence(
    sample: Mapping[str, Any], *, fps: float | None = None, where: str = "<mska>"
) -> KeypointSequence:
    """One MSKA sample as a :class:`KeypointSequence` in 210 x 260 pixels."""
    pts = keypoint_array(sample["keypoint"], where)
    if pts.shape[0] == 0:
        raise InputError(f"{where}: keypoint sequence has 0 frames")
    if pts.shape[1] != 133:
        raise InputError(
            f"{where}: looks like an MSKA keypoint pickle but frames have {pts.shape[1]} "
            "keypoints, expected 133"
        )
    num_frames = sample.get("num_frames")
    if isinstance(num_frames, int) and num_frames != pts.shape[0]:
        logger.warning("%s: num_frames=%d but keypoint has %d frames", where, num_frames, len(pts))
    meta = {k: sample[k] for k in META_KEYS if k in sample and sample[k] is not None}
    meta["source_format"] = FORMAT
    try:
        return KeypointSequence(finalize_missing(pts), WIDTH, HEIGHT, fps or DEFAULT_FPS, meta=meta)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def choose_sample(names: list[str], sample: str | None, path: Path) -> str:
    """The sample to read: ``sample`` if given, else the only one; errors list choices."""
    if sample is not None:
        if sample in names:
            return sample
        close = difflib.get_close_matches(sample, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"{path}: no sample named {sample!r} among {len(names)} samples{hint}")
    if len(names) == 1:
        return names[0]
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise InputError(f"{path} holds {len(names)} samples ({shown}); pass --sample NAME to pick one")


def read_mska(
    path: Path, *, sample: str | None = None, fps: float | None = None
) -> KeypointSequence:
    samples = load_mska_samples(path)
    name = choose_sample(list(samples), sample, path)
    return sample_to_sequence(samples[name], fps=fps, where=f"{path} [{name}]")
