"""Video encoding with PyAV (FFmpeg): H.264 mp4, streamed frame by frame, written atomically.

Odd frame sizes. 4:2:0 chroma (``yuv420p``, what every player expects) stores one chroma
sample per 2x2 block, and H.264 can only crop whole chroma samples, so libx264 refuses an
odd width or height. Padding to even would change the size a reader sees (neither decord
nor PyAV applies a crop stored in side metadata), so for an odd size the writer switches
to full-resolution chroma, ``yuv444p`` (H.264 High 4:4:4 profile), which keeps the exact
width and height through decord and PyAV. Browsers and QuickTime may refuse to play
4:4:4 files; use an even size when the video is meant for people rather than for the
next pipeline stage. Phoenix (210x260) and the model resolutions are even.

Frame rates are exact fractions (:func:`fps_fraction`): 25 -> 25/1, 29.97 -> 30000/1001.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from signgen.errors import InputError
from signgen.fileio import atomic_path

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")
_BT601_SMPTE170M = 6  # AVCOL_SPC / AVCOL_PRI / AVCOL_TRC_SMPTE170M
_RANGE_MPEG = 1  # AVCOL_RANGE_MPEG: limited (16-235) range
_SUBSAMPLED = ("yuv420p", "yuvj420p", "nv12", "yuv422p", "yuvj422p")


def fps_fraction(fps: float | Fraction) -> Fraction:
    """An exact frame rate: NTSC rates (29.97, 23.976, 59.94) become n*1000/1001."""
    if isinstance(fps, Fraction):
        if fps <= 0:
            raise InputError(f"fps must be a positive number, got {fps}")
        return fps
    try:
        f = float(fps)
    except (TypeError, ValueError):
        raise InputError(f"fps must be a positive number, got {fps!r}") from None
    if not (math.isfinite(f) and f > 0):
        raise InputError(f"fps must be a positive number, got {fps!r}")
    if f.is_integer():
        return Fraction(int(f))
    ntsc = round(f * 1.001)
    if abs(f * 1.001 - ntsc) < 0.002:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(f).limit_denominator(1001)


class VideoWriter:
    """Stream RGB frames into a video file; the file appears only when closed successfully.

    >>> with VideoWriter("out.mp4", fps=25) as w:      # size taken from the first frame
    ...     for frame in frames:                        # (H, W, 3) uint8 RGB
    ...         w.write(frame)

    Frames go to a temporary file next to ``path`` that is renamed onto ``path`` on
    :meth:`close`; an exception inside the ``with`` block (or :meth:`abort`) deletes it,
    so no partial video is ever left under the final name. Closing with no frames written
    is an error (a 0-frame video is not a video).

    Args:
        path: output file, ``.mp4`` (default choice), ``.mkv`` or ``.mov``.
        fps: frames per second; a float (25, 29.97) or a :class:`fractions.Fraction`.
        width, height: frame size; taken from the first frame when omitted.
        crf: x264 constant rate factor, 0 (lossless) .. 51; 18 is visually lossless.
        codec: an FFmpeg encoder name.
        pix_fmt: encoder pixel format; a chroma-subsampled format with an odd size is
            promoted to ``yuv444p`` (see the module docstring).
        preset: x264 speed/size trade-off (``ultrafast`` .. ``veryslow``).
        gop: keyframe interval in frames (default: the encoder's, 250 for x264); a
            smaller one makes seeking to a late frame faster and the file larger.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction,
        width: int | None = None,
        height: int | None = None,
        *,
        crf: int = 18,
        codec: str = "libx264",
        pix_fmt: str = "yuv420p",
        preset: str = "medium",
        gop: int | None = None,
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(
                f"video output must end in {', '.join(VIDEO_SUFFIXES)}, got {self.path}"
            )
        if self.path.is_dir():
            raise InputError(f"video output is a directory: {self.path}")
        self.fps = fps_fraction(fps)
        if not 0 <= int(crf) <= 51:
            raise InputError(f"crf must be in 0..51, got {crf}")
        self.crf, self.codec, self.preset = int(crf), codec, preset
        if gop is not None and int(gop) < 1:
            raise InputError(f"gop must be >= 1, got {gop}")
        self.gop = None if gop is None else int(gop)
        self.requested_pix_fmt = pix_fmt
        self.width = None if width is None else int(width)
        self.height = None if height is None else int(height)
        if (self.width is None) != (self.height is None):
            raise InputError("give both width and height, or neither")
        if self.width is not None and (self.width <= 0 or self.height <= 0):
            raise InputError(f"video size must be positive, got {self.width}x{self.height}")
        self.frames_written = 0
        self._stack: contextlib.ExitStack | None = None
        self._container = None
        self._stream = None
        self._closed = False

    # ---- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open(self, width: int, height: int) -> None:
        import av

        self.width, self.height = width, height
        pix_fmt = self.requested_pix_fmt
        if pix_fmt in _SUBSAMPLED and (width % 2 or height % 2):
            logger.info("%dx%d is odd: encoding %s as yuv444p", width, height, self.path)
            pix_fmt = "yuv444p"
        self.pix_fmt = pix_fmt
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        try:
            self._container = av.open(str(tmp), mode="w")
            stream = self._container.add_stream(self.codec, rate=self.fps)
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            if self.codec in ("libx264", "libx265"):
                stream.options = {"crf": str(self.crf), "preset": self.preset}
            if self.gop is not None:
                stream.codec_context.gop_size = self.gop
            # PyAV converts RGB to YUV with FFmpeg's default BT.601 matrix in limited range;
            # say so in the stream, or players assume BT.709 for HD sizes and shift colours.
            cc = stream.codec_context
            cc.colorspace = cc.color_primaries = cc.color_trc = _BT601_SMPTE170M
            cc.color_range = _RANGE_MPEG
            self._stream = stream
        except Exception as exc:
            self.abort()
            if isinstance(exc, av.FFmpegError | ValueError):
                raise InputError(f"cannot encode {self.path} with {self.codec}: {exc}") from None
            raise

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        import av

        if self._closed:
            raise RuntimeError(f"VideoWriter for {self.path} is closed")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"a frame must be uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}"
            )
        h, w = frame.shape[:2]
        if self._container is None:
            if self.width is not None and (w, h) != (self.width, self.height):
                raise ValueError(f"frame is {w}x{h}, writer expects {self.width}x{self.height}")
            self._open(w, h)
        elif (w, h) != (self.width, self.height):
            raise ValueError(f"frame is {w}x{h}, writer expects {self.width}x{self.height}")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames_written  # time base is 1/fps
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1

    def write_batch(self, frames: Iterable[np.ndarray]) -> None:
        """Append frames: a (N, H, W, 3) array or an iterable of (H, W, 3) frames."""
        for frame in frames:
            self.write(frame)

    def close(self) -> Path:
        """Flush the encoder and move the finished file to ``path``; returns ``path``."""
        if self._closed:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise ValueError(f"no frames were written to {self.path}; nothing saved")
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except BaseException as exc:
            self.abort()
            raise exc
        self._closed = True
        self._stack.close()  # renames the temporary file onto self.path
        return self.path

    def abort(self) -> None:
        """Discard everything written so far; nothing is left at ``path``."""
        self._closed = True
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
        if self._stack is not None:
            # Deliver an exception to atomic_path so that it deletes the temporary file.
            with contextlib.suppress(_Abort):
                self._stack.__exit__(_Abort, _Abort(), None)
            self._stack = None


class _Abort(Exception):
    """Internal signal that tells atomic_path to discard the temporary file."""


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    **kwargs,
) -> Path:
    """Write frames ((N, H, W, 3) array or an iterable of (H, W, 3) uint8 RGB) to ``path``.

    Keyword arguments go to :class:`VideoWriter` (crf, codec, pix_fmt, preset).
    """
    with VideoWriter(path, fps, **kwargs) as writer:
        writer.write_batch(frames)
    return writer.path
