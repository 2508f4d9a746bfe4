"""Video decoding: PyAV (decord on request); frame folders and images too.

Every reader returns RGB uint8 frames, (H, W, 3) each or (N, H, W, 3) stacked.

A "video" may be:
- a video file (mp4, mkv, mov, avi, webm, ...), decoded by decord or PyAV;
- a folder of frames (Phoenix: ``images0001.png, images0002.png, ...``), ordered by the
  number in the file name; its fps is :data:`FRAMES_DIR_FPS` (Phoenix's 25) since the
  folder does not store one;
- a single image (.png/.jpg/.jpeg/.bmp/.webp): a one-frame video.

Backends (``backend=``): ``"pyav"`` (FFmpeg bindings, frame-threaded decoding) reads
anything FFmpeg reads; ``"decord"`` reads by frame index but is an unmaintained binary
wheel that fails on some files. ``"auto"`` is PyAV: on the 2-core build machines it
decoded 512x512 faster than decord in every run (decord / PyAV 0.45x to 0.93x) and
210x260 within 20% either way (0.80x to 1.18x) (benchmarks/results/decode_speed.md). Both seek to the last keyframe before ``start`` and
decode forward, so slices are frame-exact; PyAV numbers frames from the stream's
timestamps after a seek (constant frame rate assumed, as for every index-based reader) and
decodes from frame 0 when a container cannot seek precisely.

Decoder noise stays off the terminal: PyAV keeps FFmpeg's log off unless the application
turns it on (``av.logging``); decord's bundled FFmpeg and its C++ log write straight to
file descriptor 2, so every decord call runs inside
:func:`signgen.runtime.capture_native_stderr` (the text goes to the debug log).

Frame counts: decord and frame folders give exact counts; PyAV takes the count from
the container header, or estimates it from the duration (``VideoInfo.num_frames_exact``
is then False), or, when neither is stored, counts packets without decoding them.

Bad input (missing path, empty, truncated or corrupt file, no video stream, no frames)
raises :class:`signgen.errors.InputError` / :class:`FormatError` with one line naming the
file; the command line prints that line and nothing else.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from signgen.errors import FormatError, InputError
from signgen.runtime import capture_native_stderr
from signgen.video.images import image_size, is_image_file, list_frame_files, read_image

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")
FRAMES_DIR_FPS = 25.0  # Phoenix-2014T's frame rate; frame folders and images store none


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` knows about a video without decoding it.

    ``num_frames`` is exact when ``num_frames_exact`` is True; otherwise it is estimated
    from the stored duration and fps and may be off by a frame or two.
    """

    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    codec: str
    num_frames_exact: bool = True
    backend: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.width, self.height

    @property
    def duration(self) -> float:
        """Seconds, ``num_frames / fps``."""
        return self.num_frames / self.fps


def probe(path: str | os.PathLike, *, backend: str = "auto") -> VideoInfo:
    """Size, fps, frame count and codec of a video, frame folder or image."""
    with _open(path, backend) as src:
        return src.info


def read_first_frame(path: str | os.PathLike, *, backend: str = "auto") -> np.ndarray:
    """The first frame as (H, W, 3) uint8 RGB. Image files are loaded with PIL."""
    p = _check_path(path)
    if p.is_file() and is_image_file(p):
        return read_image(p)
    for frame in iter_frames(p, 0, 1, backend=backend):
        return frame
    raise InputError(f"video has no frames: {p}")


def read_frames(
    path: str | os.PathLike,
    start: int = 0,
    stop: int | None = None,
    *,
    backend: str = "auto",
) -> np.ndarray:
    """Frames ``start:stop`` stacked as (N, H, W, 3) uint8 RGB (N may be 0 past the end)."""
    with _open(path, backend) as src:
        info = src.info
        chunks = list(src.batches(start, stop, batch_size=64))
    if not chunks:
        return np.zeros((0, info.height, info.width, 3), dtype=np.uint8)
    return np.concatenate(chunks)  # (N, H, W, 3)


def iter_frames(
    path: str | os.PathLike,
    start: int = 0,
    stop: int | None = None,
    *,
    backend: str = "auto",
) -> Iterator[np.ndarray]:
    """Stream frames ``start:stop`` one at a time, each (H, W, 3) uint8 RGB.

    Only a few frames are held in memory at any time.
    """
    for batch in iter_batches(path, 8, start, stop, backend=backend):
        yield from batch


def iter_batches(
    path: str | os.PathLike,
    batch_size: int,
    start: int = 0,
    stop: int | None = None,
    *,
    backend: str = "auto",
) -> Iterator[np.ndarray]:
    """Stream frames ``start:stop`` in (B, H, W, 3) uint8 batches (the last may be short)."""
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    with _open(path, backend) as src:
        yield from src.batches(start, stop, int(batch_size))


# ---- sources ---------------------------------------------------------------------------


class _Source:
    """An opened video: ``info`` plus batched sequential reading; a context manager."""

    info: VideoInfo

    def batches(self, start: int, stop: int | None, batch_size: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _range(start: int, stop: int | None, n: int | None) -> tuple[int, int | None]:
    if int(start) < 0 or (stop is not None and int(stop) < 0):
        raise InputError(f"frame range must be non-negative, got start={start} stop={stop}")
    start = int(start)
    stop = None if stop is None else int(stop)
    if n is not None:
        stop = n if stop is None else min(stop, n)
    return start, stop


class _FramesDir(_Source):
    def __init__(self, path: Path) -> None:
        self.files = list_frame_files(path)
        w, h = image_size(self.files[0])
        self.info = VideoInfo(
            str(path), w, h, FRAMES_DIR_FPS, len(self.files), self.files[0].suffix.lower()[1:],
            backend="images",
        )  # fmt: skip

    def batches(self, start: int, stop: int | None, batch_size: int) -> Iterator[np.ndarray]:
        start, stop = _range(start, stop, len(self.files))
        for i in range(start, stop, batch_size):
            frames = [read_image(f) for f in self.files[i : min(i + batch_size, stop)]]
            for f, img in zip(self.files[i:], frames):
                if img.shape[:2] != (self.info.height, self.info.width):
                    raise FormatError(
                        f"{f}: frame is {img.shape[1]}x{img.shape[0]}, but the folder's "
                        f"first frame is {self.info.width}x{self.info.height}"
                    )
            yield np.stack(frames)  # (B, H, W, 3)


class _Image(_Source):
    def __init__(self, path: Path) -> None:
        self.path = path
        w, h = image_size(path)
        self.info = VideoInfo(
            str(path), w, h, FRAMES_DIR_FPS, 1, path.suffix.lower()[1:], backend="images"
        )

    def batches(self, start: int, stop: int | None, batch_size: int) -> Iterator[np.ndarray]:
        start, stop = _range(start, stop, 1)
        if start < stop:
            yield read_image(self.path)[None]  # (1, H, W, 3)


class _Decord(_Source):
    def __init__(self, path: Path) -> None:
        import decord

        self.path = path
        try:
            with capture_native_stderr():
                self.vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
                n = len(self.vr)
                h, w = self.vr[0].shape[:2] if n else (0, 0)
                fps = float(self.vr.get_avg_fps())
        except (decord.DECORDError, RuntimeError) as exc:
            raise FormatError(f"{path}: decord cannot read it ({_first_line(exc)})") from None
        if n == 0:
            raise InputError(f"video has no frames: {path}")
        if not (fps > 0):
            raise FormatError(f"{path}: decord reports fps {fps}")
        self.info = VideoInfo(str(path), w, h, fps, n, _codec_name(path), True, "decord")
        with capture_native_stderr():
            self.vr.seek(0)

    def batches(self, start: int, stop: int | None, batch_size: int) -> Iterator[np.ndarray]:
        import decord

        start, stop = _range(start, stop, self.info.num_frames)
        if start >= stop:
            return
        # Sequential next() after one accurate seek: streaming with get_batch() per batch
        # measured about 15% slower here.
        # The native calls run with fd 2 captured; the yield is outside the capture, so
        # whatever the consumer prints between batches reaches the terminal.
        i = start
        try:
            with capture_native_stderr():
                self.vr.seek_accurate(start)
            while i < stop:
                n = min(batch_size, stop - i)
                with capture_native_stderr():
                    batch = np.stack([self.vr.next().asnumpy() for _ in range(n)])
                yield batch  # (B, H, W, 3)
                i += n
        except (decord.DECORDError, RuntimeError, StopIteration) as exc:
            raise FormatError(
                f"{self.path}: decord failed at frame {i} ({_first_line(exc)}); try backend='pyav'"
            ) from None

    def close(self) -> None:
        self.vr = None


class _PyAV(_Source):
    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        try:
            self.container = av.open(str(path), mode="r")
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise FormatError(f"{path}: not a readable video ({_first_line(exc)})") from None
        try:
            if not self.container.streams.video:
                raise FormatError(f"{path}: contains no video stream (0 frames)")
            stream = self.container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            w, h = stream.codec_context.width, stream.codec_context.height
            if not (fps > 0) or w <= 0 or h <= 0:
                raise FormatError(f"{path}: video stream has no valid size/fps ({w}x{h}, {fps})")
            n, exact = self._count(stream, fps)
            if n == 0:
                raise InputError(f"video has no frames: {path}")
            self.info = VideoInfo(str(path), w, h, fps, n, stream.codec_context.name, exact, "pyav")
        except BaseException:
            self.container.close()
            raise

    def _count(self, stream, fps: float) -> tuple[int, bool]:
        if stream.frames > 0:
            return int(stream.frames), True
        if stream.duration is not None and stream.time_base is not None:
            return round(float(stream.duration * stream.time_base) * fps), False
        if self.container.duration is not None:
            return round(self.container.duration / 1_000_000 * fps), False
        # Nothing stored (raw streams, some mkv/webm): count packets, no decoding.
        import av

        try:
            n = sum(1 for pkt in self.container.demux(stream) if pkt.size)
        except av.FFmpegError as exc:
            raise FormatError(f"{self.path}: corrupt video ({_first_line(exc)})") from None
        self.container.seek(0)
        return n, True

    def batches(self, start: int, stop: int | None, batch_size: int) -> Iterator[np.ndarray]:
        import av

        start, stop = _range(start, stop, None)
        stream = self.container.streams.video[0]
        stream.thread_type = "AUTO"
        buf: list[np.ndarray] = []
        index = -1
        try:
            for index, frame in self._indexed_frames(stream, start):
                if stop is not None and index >= stop:
                    break
                if index < start:
                    continue
                buf.append(frame.to_ndarray(format="rgb24"))  # (H, W, 3)
                if len(buf) == batch_size:
                    yield np.stack(buf)  # (B, H, W, 3)
                    buf = []
        except av.FFmpegError as exc:
            where = f"after frame {index}" if index >= 0 else "at its first frame"
            raise FormatError(
                f"{self.path}: decoding failed {where} ({_first_line(exc)})"
            ) from None
        if buf:
            yield np.stack(buf)
        if index < 0 and start == 0 and stop != 0:
            raise InputError(f"video has no frames: {self.path}")

    def _indexed_frames(self, stream, start: int) -> Iterator[tuple[int, object]]:
        """(frame index, av.VideoFrame) in order, beginning at or before frame ``start``.

        For ``start > 0`` it seeks to the last keyframe at or before ``start`` and numbers
        frames from the first decoded frame's timestamp onwards; if the container cannot
        seek that precisely (no timestamps, landed after ``start``) it decodes from frame 0.
        """
        if start > 0:
            frames = self._seek(stream, start)
            if frames is not None:
                return frames
            self.container.seek(0)
        return enumerate(self.container.decode(stream))

    def _seek(self, stream, start: int):
        import av

        tb, t0 = stream.time_base, stream.start_time or 0
        if not tb:
            return None
        fps = self.info.fps
        target = t0 + int(start / fps / float(tb))  # pts of frame `start`
        try:
            self.container.seek(target, stream=stream, backward=True, any_frame=False)
            decoded = self.container.decode(stream)
            first = next(decoded, None)
        except av.FFmpegError:
            return None
        if first is None or first.pts is None:
            return None
        first_index = round(float((first.pts - t0) * tb) * fps)
        if not 0 <= first_index <= start:
            return None

        def numbered():
            yield first_index, first
            yield from enumerate(decoded, first_index + 1)

        return numbered()

    def close(self) -> None:
        self.container.close()


# ---- opening ---------------------------------------------------------------------------


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"video not found: {p}")
    if p.is_file() and p.stat().st_size == 0:
        raise InputError(f"video file is empty (0 bytes): {p}")
    return p


def _decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def _open(path: str | os.PathLike, backend: str = "auto") -> _Source:
    if backend not in BACKENDS:
        raise InputError(f"unknown video backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    p = _check_path(path)
    if p.is_dir():
        return _FramesDir(p)
    if is_image_file(p):
        return _Image(p)
    if backend == "decord":
        if not _decord_available():
            raise InputError("backend 'decord' requested but decord is not installed")
        return _Decord(p)
    return _PyAV(p)  # "auto" and "pyav"


def _codec_name(path: Path) -> str:
    """The codec name from the container header (PyAV), or "unknown"."""
    try:
        import av

        with av.open(str(path)) as c:
            return c.streams.video[0].codec_context.name
    except Exception:  # metadata only; decoding already succeeded
        return "unknown"


# decord prefixes its messages with "[12:00:00] /path/to/video_reader.cc:151: ".
_DECORD_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: (Check failed: .*?: )?")


def _first_line(exc: BaseException) -> str:
    """A one-line reason: FFmpeg's error text, or the first line without decord's prefix."""
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    lines = str(exc).strip().splitlines()
    return _DECORD_PREFIX.sub("", lines[0]) if lines else type(exc).__name__
