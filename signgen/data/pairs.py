"""Training pairs of a prepared dataset: (source frame, target frame, target pose).

A prepared dataset (written by ``signgen prepare synthetic`` or ``signgen prepare
phoenix``) is a folder with::

    manifest.csv        video, split, signer, frames, fps, width, height, frames_dir,
                        keypoints_file, sample, gloss, text     (one row per video)
    {split}_pairs.csv   video, signer, source_frame, target_frame   (0-based frame indices)

Relative ``frames_dir`` / ``keypoints_file`` paths are resolved against the prepared
folder. Frames are ``images0001.png`` ... (1-based, Phoenix naming) and are loaded lazily
with PIL; keypoints are read once per video and cached.

Every item holds uint8 frames at their native size (the model-specific resize and
normalisation happen in the training step through :mod:`signgen.models.preprocess`, so
stage 1 and stage 2 use the same policy) and the target pose image drawn at the model
resolution by :func:`signgen.pose.draw.draw_pose`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from signgen.errors import FormatError, InputError
from signgen.fileio import existing_file

MANIFEST_COLUMNS = (
    "video", "split", "signer", "frames", "fps", "width", "height", "frames_dir",
    "keypoints_file", "sample", "gloss", "text",
)  # fmt: skip
PAIR_COLUMNS = ("video", "signer", "source_frame", "target_frame")


@dataclass(frozen=True)
class VideoEntry:
    video: str
    split: str
    signer: str
    frames: int
    fps: float
    width: int
    height: int
    frames_dir: Path
    keypoints_file: Path
    frame_pattern: str = "images{:04d}.png"  # optional column; Phoenix numbers from 1


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    existing_file(path, "prepared dataset file")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise FormatError(f"{path}: missing column(s) {', '.join(missing)}")
        return list(reader)


def read_manifest(prepared_dir: str | Path) -> dict[str, VideoEntry]:
    """Videos of a prepared dataset, keyed by video name."""
    root = Path(prepared_dir)
    rows = _read_csv(root / "manifest.csv", MANIFEST_COLUMNS)
    out: dict[str, VideoEntry] = {}
    for r in rows:
        try:
            out[r["video"]] = VideoEntry(
                video=r["video"],
                split=r["split"],
                signer=r["signer"],
                frames=int(r["frames"]),
                fps=float(r["fps"]),
                width=int(r["width"]),
                height=int(r["height"]),
                frames_dir=(root / r["frames_dir"]).resolve(),
                keypoints_file=(root / r["keypoints_file"]).resolve(),
                frame_pattern=r.get("frame_pattern") or "images{:04d}.png",
            )
        except ValueError as exc:
            raise FormatError(
                f"{root / 'manifest.csv'}: bad row for {r['video']!r}: {exc}"
            ) from None
    return out


def read_pairs(prepared_dir: str | Path, split: str) -> np.ndarray:
    """(video, signer, source_frame, target_frame) rows of ``{split}_pairs.csv``."""
    path = Path(prepared_dir) / f"{split}_pairs.csv"
    rows = _read_csv(path, PAIR_COLUMNS)
    if not rows:
        raise InputError(f"{path} has no pairs")
    return np.array(
        [(r["video"], r["signer"], int(r["source_frame"]), int(r["target_frame"])) for r in rows],
        dtype=object,
    )


def frame_path(entry: VideoEntry, index: int) -> Path:
    """0-based frame ``index`` -> ``frames_dir / frame_pattern.format(index + 1)``."""
    return entry.frames_dir / entry.frame_pattern.format(index + 1)


def load_frame(entry: VideoEntry, index: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    path = frame_path(entry, index)
    if not path.is_file():
        raise InputError(f"frame {index} of {entry.video} not found: {path}")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@lru_cache(maxsize=4096)
def _load_keypoints(path: str) -> np.ndarray:
    import json

    from signgen.keypoints.sequence import from_json_dict

    p = existing_file(path, "keypoint file")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise FormatError(f"{p}: not valid JSON ({exc})") from None
    return from_json_dict(data, str(p)).points  # (T, 133, 3)


class PairDataset(Dataset):
    """(source, target, target pose) items of one split of a prepared dataset.

    Args:
        prepared_dir: folder with ``manifest.csv`` and ``{split}_pairs.csv``.
        split: "train", "dev" or "test".
        resolution: (H, W) of the model; the pose image is drawn at this size and the
            keypoints are returned in its pixels.
        max_pairs: keep only the first ``max_pairs`` pairs (evaluation subsets).
        signers: keep only these signers (None: all).

    Items (a dict): ``source``, ``target``: uint8 (H0, W0, 3) frames at native size;
    ``target_pose``: float32 (3, H, W) in [0, 1]; ``keypoints``: float32 (133, 3) target
    keypoints in model pixels (after the letterbox of :mod:`signgen.models.preprocess`);
    ``source_keypoints`` likewise; ``index``: the pair index.
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        split: str,
        resolution: tuple[int, int],
        max_pairs: int | None = None,
        signers: list[str] | None = None,
    ) -> None:
        self.root = Path(prepared_dir)
        self.split = split
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.videos = read_manifest(self.root)
        pairs = read_pairs(self.root, split)
        if signers is not None:
            pairs = pairs[np.isin(pairs[:, 1], list(signers))]
        if max_pairs is not None:
            pairs = pairs[:max_pairs]
        unknown = sorted(set(pairs[:, 0]) - set(self.videos))
        if unknown:
            raise FormatError(f"{self.root}/{split}_pairs.csv names unknown video {unknown[0]!r}")
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def keypoints(self, video: str) -> np.ndarray:
        """(T, 133, 3) keypoints of ``video`` in pixels of its native frame."""
        return _load_keypoints(str(self.videos[video].keypoints_file))

    def __getitem__(self, i: int) -> dict[str, object]:
        from signgen.models.preprocess import Letterbox
        from signgen.pose.draw import draw_pose

        video, _signer, s, t = self.pairs[i]
        entry = self.videos[video]
        kp = self.keypoints(video)
        h, w = self.resolution
        # Same geometry as the frames (letterbox to the model aspect, then scale), the
        # render's: drawn on the padded canvas, keypoints mapped to model pixels.
        box = Letterbox.fit((entry.width, entry.height), (w, h))
        pose = draw_pose(*box.canvas(kp[int(t)]), (w, h))  # (H, W, 3) uint8
        pose_t = torch.from_numpy(np.ascontiguousarray(pose)).permute(2, 0, 1).float() / 255.0
        tgt_kp = box.points_to_model(kp[int(t)])  # (133, 3) model pixels
        src_kp = box.points_to_model(kp[int(s)])
        return {
            "source": torch.from_numpy(load_frame(entry, int(s)).copy()),
            "target": torch.from_numpy(load_frame(entry, int(t)).copy()),
            "target_pose": pose_t,  # (3, H, W) in [0, 1]
            "keypoints": torch.from_numpy(tgt_kp),
            "source_keypoints": torch.from_numpy(src_kp),
            "index": i,
        }
