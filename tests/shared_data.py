"""Helpers (no tests): the real sample data kept next to the repository, read at run time.

The data live in ``<repo>/../shared/data`` (override with ``SIGNGEN_SHARED_DATA``) and are
never copied into the repository; tests that use them skip when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
# Each frame of the FPDM sample GIFs is four 210x260 panels side by side:
# source | the authors' pose image | ground truth | FPDM output.
PANEL_W, PANEL_H = 210, 260
GT_PANEL = slice(2 * PANEL_W, 3 * PANEL_W)  # x 420..630


def shared_data() -> Path:
    return Path(os.environ.get("SIGNGEN_SHARED_DATA") or REPO.parent / "shared" / "data")


def phoenix_gifs() -> list[Path]:
    """The Phoenix FPDM sample GIFs, or skip the calling test when they are absent."""
    gifs = sorted((shared_data() / "phoenix_fpdm_samples").glob("*.gif"))
    if not gifs:
        pytest.skip(f"real Phoenix samples not found in {shared_data()}")
    return gifs


def ground_truth_frames(gif: Path) -> np.ndarray:
    """(T, 260, 210, 3) uint8 RGB: the ground-truth panel of every frame of ``gif``."""
    from PIL import Image, ImageSequence

    with Image.open(gif) as im:
        frames = [np.asarray(f.convert("RGB"))[:, GT_PANEL] for f in ImageSequence.Iterator(im)]
    out = np.stack(frames)  # (T, H, W, 3)
    assert out.shape[1:] == (PANEL_H, PANEL_W, 3), out.shape
    return out


def write_frames(frames: np.ndarray, folder: Path) -> Path:
    """A Phoenix-style frame folder (images0001.png ...) of ``frames``, for the CLI."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"images{i + 1:04d}.png")
    return folder
