"""Inputs of ``signgen evaluate``: matching predicted and ground-truth videos, frames,
signers and keypoints.

A *video* is either a folder of frames in the Phoenix layout (``<video>/images0001.png``,
any of .png/.jpg/.jpeg) or a video file (``<video>.mp4``, .avi, .mkv, .mov, .webm). Its key
is its path relative to the root without the video-file extension, so ``P/a/b.mp4`` and
``G/a/b/images*.png`` both have key ``a/b``. Keys are matched between the two roots.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from signgen.errors import FormatError, InputError

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")


@dataclass
class VideoSource:
    """One video: a frame folder (``frames`` lists its files) or a video file."""

    key: str
    path: Path
    frames: list[Path] | None = None  # None for a video file
    num_frames: int = 0

    @property
    def is_folder(self) -> bool:
        return self.frames is not None


@dataclass
class VideoPair:
    key: str
    pred: VideoSource
    gt: VideoSource
    signer: str = "unknown"
    num_frames: int = 0  # frames compared: min of both counts
    mismatch: str | None = None  # human-readable frame-count mismatch, if any
    meta: dict = field(default_factory=dict)


def _count_video_frames(path: Path) -> int:
    try:
        from signgen.video import probe  # type: ignore[attr-defined]

        info = probe(path)
        n = getattr(info, "num_frames", None) or getattr(info, "frames", None)
        if isinstance(info, dict):
            n = info.get("num_frames") or info.get("frames")
        if n:
            return int(n)
    except ImportError:
        pass
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for _ in container.demux(stream) if _.size)
    except (av.error.FFmpegError, IndexError) as exc:  # type: ignore[attr-defined]
        raise FormatError(f"cannot read video {path}: {exc}") from None


def scan_videos(root: str | Path, what: str) -> dict[str, VideoSource]:
    """All videos under ``root`` keyed by relative path (see the module docstring)."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{what} not found: {root}")
    if not root.is_dir():
        raise InputError(f"{what} must be a folder of videos or frame folders: {root}")
    out: dict[str, VideoSource] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        d = Path(dirpath)
        images = sorted(f for f in filenames if f.lower().endswith(IMAGE_EXTS))
        if images:
            key = d.relative_to(root).as_posix()
            if key == ".":
                raise InputError(
                    f"{what} {root} holds frames directly; pass the folder that contains one "
                    "sub-folder per video (Phoenix layout <video>/images0001.png)"
                )
            out[key] = VideoSource(key, d, [d / f for f in images], len(images))
        for f in sorted(filenames):
            if f.lower().endswith(VIDEO_EXTS):
                p = d / f
                key = p.relative_to(root).with_suffix("").as_posix()
                if key in out:
                    raise InputError(f"{what}: both a frame folder and a video file for {key}")
                out[key] = VideoSource(key, p, None, 0)
    if not out:
        raise InputError(
            f"{what} {root} contains no videos (expected <video>.mp4 files or <video>/ folders "
            f"of {'/'.join(IMAGE_EXTS)} frames)"
        )
    return out


def _listing(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def match_videos(pred_root: str | Path, gt_root: str | Path) -> list[VideoPair]:
    """Pair videos by key; any unmatched key on either side is an InputError listing them."""
    pred = scan_videos(pred_root, "--pred")
    gt = scan_videos(gt_root, "--gt")
    only_pred = sorted(set(pred) - set(gt))
    only_gt = sorted(set(gt) - set(pred))
    if only_pred or only_gt:
        parts = []
        if only_pred:
            parts.append(f"{len(only_pred)} in --pred only: {_listing(only_pred)}")
        if only_gt:
            parts.append(f"{len(only_gt)} in --gt only: {_listing(only_gt)}")
        raise InputError("unmatched videos between --pred and --gt; " + "; ".join(parts))
    pairs = []
    for key in sorted(pred):
        p, g = pred[key], gt[key]
        for src in (p, g):
            if not src.is_folder:
                src.num_frames = _count_video_frames(src.path)
        n = min(p.num_frames, g.num_frames)
        mismatch = None
        if p.num_frames != g.num_frames:
            mismatch = f"{key}: {p.num_frames} predicted vs {g.num_frames} ground-truth frames"
            log.warning("frame-count mismatch %s (comparing the first %d)", mismatch, n)
        pairs.append(VideoPair(key, p, g, num_frames=n, mismatch=mismatch))
    return pairs


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise FormatError(f"cannot read image {path}: {exc}") from None


def iter_video_frames(src: VideoSource) -> Iterator[np.ndarray]:
    """RGB frames (H, W, 3) uint8 of a video, in order, one at a time."""
    if src.is_folder:
        for f in src.frames or []:
            yield _read_image(f)
        return
    try:
        from signgen.video import iter_frames  # type: ignore[attr-defined]
    except ImportError:
        iter_frames = None
    if iter_frames is not None:
        for frame in iter_frames(src.path):
            yield np.asarray(frame, dtype=np.uint8)
        return
    import av  # fallback while signgen.video is not available

    with av.open(str(src.path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize (H, W, 3) uint8 to ``size`` = (H, W) with PIL bicubic; no-op when equal."""
    if size is None or frame.shape[:2] == tuple(size):
        return frame
    h, w = size
    return np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BICUBIC))


def read_corpus(path: str | Path) -> dict[str, str]:
    """Video name -> signer from a Phoenix '|'-separated corpus CSV."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--corpus not found: {p}")
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="|")
        fields = reader.fieldnames or []
        if "name" not in fields or "speaker" not in fields:
            raise FormatError(
                f"--corpus {p} must be a '|'-separated Phoenix corpus with a header "
                f"name|video|start|end|speaker|orth|translation, got columns {fields}"
            )
        return {row["name"]: row["speaker"] for row in reader if row.get("name")}


def signer_of(key: str, corpus: dict[str, str] | None) -> str:
    if not corpus:
        return "unknown"
    return corpus.get(key) or corpus.get(Path(key).name) or "unknown"


class KeypointStore:
    """Ground-truth keypoints per video from a folder of signgen JSON or a keypoint file.

    Folder: ``<root>/<key>.json`` (or ``<root>/<basename of key>.json``). File (an MSKA
    pickle or anything ``signgen.keypoints.load_keypoints`` reads): one sample per video,
    looked up by ``sample_key.format(video=key, name=basename)``.
    """

    def __init__(self, path: str | Path, sample_key: str = "{video}") -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"--keypoints not found: {self.path}")
        self.sample_key = sample_key

    def get(self, key: str, size: tuple[int, int] | None = None):
        """The KeypointSequence of video ``key``, or None (with a warning) if absent.

        ``size`` (W, H) of the ground-truth frames is passed to the readers of formats that
        do not store a frame size; signgen JSON carries its own.
        """
        from signgen.keypoints.sequence import from_json_dict

        name = Path(key).name
        if self.path.is_dir():
            for cand in (self.path / f"{key}.json", self.path / f"{name}.json"):
                if cand.is_file():
                    import json

                    try:
                        data = json.loads(cand.read_text())
                    except ValueError as exc:
                        raise FormatError(f"{cand} is not valid JSON: {exc}") from None
                    return from_json_dict(data, source=str(cand))
            log.warning("no keypoints for %s in %s: its hands are skipped", key, self.path)
            return None
        try:
            from signgen.keypoints import load_keypoints  # type: ignore[attr-defined]
        except ImportError:
            raise InputError(
                f"--keypoints {self.path}: reading keypoint files needs "
                "signgen.keypoints.load_keypoints; pass a folder of signgen JSON instead"
            ) from None
        sample = self.sample_key.format(video=key, name=name)
        try:
            return load_keypoints(self.path, sample=sample, size=size)
        except FormatError:
            raise
        except (InputError, KeyError) as exc:
            log.warning("no keypoints for %s (sample %r): %s", key, sample, exc)
            return None
