"""Still images and frame folders (the Phoenix ``images0001.png ...`` layout).

Images are read with PIL (every common format, EXIF orientation applied, palette/alpha
converted to RGB; alpha is dropped, not composited) and written as PNG with OpenCV,
whose PNG encoder is several times faster than PIL's at the same compression level.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from signgen.errors import FormatError, InputError
from signgen.fileio import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PHOENIX_PATTERN = "images{:04d}.png"

_DIGITS = re.compile(r"(\d+)")


def is_image_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Load an image file as (H, W, 3) uint8 RGB; FormatError if it is not a readable image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FormatError(f"{p}: not a readable image ({exc})") from None
    return np.asarray(rgb, dtype=np.uint8)  # (H, W, 3)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file as :func:`read_image` returns it, from the header."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FormatError(f"{p}: not a readable image ({exc})") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically: images2 < images10."""
    parts = _DIGITS.split(name)
    return tuple(int(s) if s.isdigit() else s.lower() for s in parts)


def list_frame_files(directory: str | os.PathLike) -> list[Path]:
    """Image files of a frame folder in numeric order; InputError if there are none."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"frame folder not found: {d}")
    files = [p for p in d.iterdir() if p.is_file() and is_image_file(p)]
    if not files:
        raise InputError(
            f"frame folder {d} has no image files ({', '.join(IMAGE_SUFFIXES)}); "
            "expected e.g. images0001.png, images0002.png, ..."
        )
    return sorted(files, key=lambda p: natural_key(p.name))


def encode_png(frame: np.ndarray, compression: int = 3) -> bytes:
    """(H, W, 3) uint8 RGB -> PNG bytes."""
    import cv2

    _check_frame(frame)
    ok, buf = cv2.imencode(
        ".png", frame[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, int(compression)]
    )
    assert ok, "cv2.imencode failed on a valid uint8 image"
    return buf.tobytes()


def write_png_frames(
    directory: str | os.PathLike,
    frames: Iterable[np.ndarray],
    start_index: int = 1,
    pattern: str = PHOENIX_PATTERN,
    *,
    compression: int = 3,
) -> list[Path]:
    """Write frames as ``directory/images0001.png ...`` (Phoenix naming), each atomically.

    ``frames`` may be a (N, H, W, 3) array or any iterable of (H, W, 3) uint8 RGB frames
    (a generator streams). Each file appears under its final name only once complete.
    Returns the written paths in order.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise InputError(f"output frame folder is a file: {d}")
    d.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for i, frame in enumerate(frames):
        path = d / pattern.format(start_index + i)
        atomic_write_bytes(path, encode_png(np.asarray(frame), compression))
        written.append(path)
    return written


def _check_frame(frame: np.ndarray) -> None:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a frame must be uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
