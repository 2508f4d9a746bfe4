"""DeepFashion In-shop (PGPIS split): preparation, training and evaluation datasets.

Raw layout (the split of PATN, used by PIDM, NTED, CFLD, PCDMs; docs/datasets.md)::

    ROOT/fasion-resize-pairs-{train,test}.csv        "from,to" image names
    ROOT/fasion-resize-annotation-{train,test}.csv   "name:keypoints_y:keypoints_x",
        JSON lists in (y, x) order on the 256 x 176 images, -1 = missing,
        18-point OpenPose order (signgen.keypoints.layout.OPENPOSE18_NAMES)
    ROOT/{train,test}_highres/<name>                 images (CFLD / PCDMs layout), or
    ROOT/{train,test}/<name>                         (PATN / PIDM layout, used if the
                                                     *_highres folder is absent)

Images may have any size (the 256x176 release, CFLD's high-res 512x352 or the
original 750x1101): the datasets resize them to the prepared resolution.

Prepared files written by :func:`prepare_deepfashion` into ``OUT``:

``OUT/deepfashion_manifest.csv``
    one row per usable image: ``image, split, path, width, height, keypoints,
    keypoints_width, keypoints_height``. ``path`` is relative to OUT (absolute also
    accepted; see :func:`signgen.data.phoenix.resolve_path`); ``width``/``height`` are
    the file's own size; ``keypoints`` is a JSON list of 18 ``[x, y, score]`` in pixels
    of ``keypoints_width`` x ``keypoints_height`` (176 x 256, the annotation space),
    score 0 for missing points.
``OUT/{train,test}_pairs.csv``
    ``source, target, split`` image names (rows of the manifest), in the CSV's order.
``OUT/deepfashion_info.json``
    ``{"dataset": "deepfashion", "resolution": [H, W], ...}`` (the resolution prepared for).
``OUT/prepare_report.json``
    the problems found, per category.

Datasets: :class:`DeepFashionPairs` gives (source, target, target pose) items in the
same format as :class:`signgen.data.pairs.PairDataset`, so stage 1 (IPF), stage 2
(FPDM) and evaluation share one item format and the image preprocessing of
:mod:`signgen.models.preprocess` (letterbox + normalisation in the training step);
:class:`DeepFashionImages` gives single images (the FID real set is the training images).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from signgen.data.phoenix import PrepareReport, raise_if_strict, resolve_path
from signgen.errors import FormatError, InputError
from signgen.fileio import atomic_path, atomic_write_text

SPLITS = ("train", "test")
RESOLUTIONS = ((256, 176), (512, 352))  # (H, W) of the PGPIS benchmarks
ANNOTATION_SIZE = (176, 256)  # (W, H) the annotation coordinates refer to
PAIRS_TEMPLATE = "fasion-resize-pairs-{split}.csv"
ANNOTATION_TEMPLATE = "fasion-resize-annotation-{split}.csv"
IMAGE_DIR_CANDIDATES = ("{split}_highres", "{split}")
MANIFEST_NAME = "deepfashion_manifest.csv"
INFO_NAME = "deepfashion_info.json"
MANIFEST_COLUMNS = (
    "image", "split", "path", "width", "height", "keypoints", "keypoints_width",
    "keypoints_height",
)  # fmt: skip
PAIR_COLUMNS = ("source", "target", "split")

# OpenPose-18 left/right partners (r/l shoulder, elbow, wrist, hip, knee, ankle, eye, ear).
FLIP_PAIRS = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17))
FLIP_PERMUTATION = tuple(
    next((b if i == a else a for a, b in FLIP_PAIRS if i in (a, b)), i) for i in range(18)
)

PROBLEMS: dict[str, tuple[str, bool]] = {
    "missing_annotation": ("no annotation row for the image", True),
    "missing_image": ("image file missing", True),
    "unreadable_image": ("unreadable image", True),
    "image_too_small": ("image smaller than --resolution (will be upsampled)", False),
    "no_keypoints": ("annotation has no visible keypoint (pose image will be empty)", False),
}


# ---------------------------------------------------------------------------------
# Raw files
# ---------------------------------------------------------------------------------
def read_pairs_csv(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read a ``fasion-resize-pairs-*.csv`` file: (from, to) image names in file order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"DeepFashion pair list not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if "from" not in cols or "to" not in cols:
            raise InputError(f"{path}: expected the columns 'from,to', got {','.join(cols)!r}")
        return [(r["from"].strip(), r["to"].strip()) for r in reader if r["from"] and r["to"]]


def load_annotations(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """name -> (18, 3) x, y, score on 176 x 256, through :mod:`signgen.keypoints`' reader."""
    from signgen.keypoints.formats.deepfashion import load_deepfashion_annotations

    path = Path(path)
    if not path.is_file():
        raise InputError(f"DeepFashion annotation CSV not found: {path}")
    return {k: np.asarray(v, np.float32) for k, v in load_deepfashion_annotations(path).items()}


def find_image_dir(root: Path, split: str) -> Path:
    """The image folder of ``split``: ``{split}_highres`` (CFLD) or ``{split}`` (PATN)."""
    for pattern in IMAGE_DIR_CANDIDATES:
        cand = root / pattern.format(split=split)
        if cand.is_dir():
            return cand
    tried = " or ".join(str(root / p.format(split=split)) for p in IMAGE_DIR_CANDIDATES)
    raise InputError(f"--root {root}: no image folder for split {split!r} (looked for {tried})")


def image_size(path: Path, full: bool) -> tuple[int, int] | None:
    """(W, H) of an image from its header (PIL reads it lazily), or after a full decode."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if full:
                im.load()
            return im.size
    except Exception:  # any decoder failure means "unreadable"
        return None


# ---------------------------------------------------------------------------------
# Preparation
# ---------------------------------------------------------------------------------
# Over 80 lines: one linear recipe (check the tree, read the annotations, check and resize
# every image, write the files) whose steps all feed one report; split up, they would only
# hand that state around.
def prepare_deepfashion(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    resolution: tuple[int, int] = (256, 176),
    strict: bool = False,
    check_images: bool = False,
    progress: bool = True,
    on_warning: Callable[[str], None] | None = None,
) -> PrepareReport:
    """Validate the PGPIS split under ``root`` and write the prepared files into ``out``.

    ``resolution`` is (H, W), one of :data:`RESOLUTIONS`. A pair is kept only if both of
    its images exist, are readable and have an annotation row. With ``strict`` any
    problem raises InputError and nothing is written.
    """
    # Over 80 lines: a straight sequence of checks, then writes in the order of the prepared
    # files, as prepare_phoenix; each step is a few lines and reads top to bottom.
    from tqdm.auto import tqdm

    root, out = Path(root), Path(out)
    if tuple(resolution) not in RESOLUTIONS:
        raise InputError(f"resolution must be one of {RESOLUTIONS} (H, W), got {resolution}")
    if not root.is_dir():
        raise InputError(f"--root {root}: not a folder")
    report = PrepareReport(problems=dict(PROBLEMS))
    rows: dict[str, list[Any]] = {}
    kept_pairs: dict[str, list[tuple[str, str]]] = {}
    image_dirs = {}
    for split in SPLITS:  # fail fast, before any scanning, on a missing file or folder
        for template in (PAIRS_TEMPLATE, ANNOTATION_TEMPLATE):
            if not (root / template.format(split=split)).is_file():
                raise InputError(f"--root {root}: {template.format(split=split)} not found")
        image_dirs[split] = find_image_dir(root, split)
    for split in SPLITS:
        pairs = read_pairs_csv(root / PAIRS_TEMPLATE.format(split=split))
        ann = load_annotations(root / ANNOTATION_TEMPLATE.format(split=split))
        image_dir = image_dirs[split]
        names = list(dict.fromkeys(n for pair in pairs for n in pair))  # unique, in order
        ok: set[str] = set()
        for name in tqdm(names, desc=f"check {split}", unit="image", disable=not progress):
            item = f"{split}/{name}"
            if name not in ann:
                report.add("missing_annotation", item)
                continue
            path = image_dir / name
            if not path.is_file():
                report.add("missing_image", item)
                continue
            size = image_size(path, check_images)
            if size is None:
                report.add("unreadable_image", item)
                continue
            if size[0] < resolution[1] or size[1] < resolution[0]:
                report.add("image_too_small", item, f"{size[0]}x{size[1]}")
            kp = ann[name]
            if not (kp[:, 2] > 0).any():
                report.add("no_keypoints", item)
            ok.add(name)
            rows[f"{split}/{name}"] = [
                name, split, path, size[0], size[1],
                json.dumps(np.round(kp, 2).tolist(), separators=(",", ":")),
                ANNOTATION_SIZE[0], ANNOTATION_SIZE[1],
            ]  # fmt: skip
        kept_pairs[split] = [(a, b) for a, b in pairs if a in ok and b in ok]
        report.kept[split] = len(ok)
        report.pairs[split] = len(kept_pairs[split])
        if len(kept_pairs[split]) < len(pairs) and on_warning:
            on_warning(
                f"{split}: {len(pairs) - len(kept_pairs[split])} of {len(pairs)} pairs dropped"
            )
    if on_warning:
        for line in report.warning_lines():
            on_warning(line)
    raise_if_strict(report, strict, "deepfashion")
    if not any(kept_pairs.values()):
        raise InputError(f"--root {root}: no usable pair in {', '.join(SPLITS)}")

    out.mkdir(parents=True, exist_ok=True)
    out_abs = out.resolve()
    for split, pairs in kept_pairs.items():
        _write_csv(out / f"{split}_pairs.csv", PAIR_COLUMNS, [(a, b, split) for a, b in pairs])
    for row in rows.values():
        row[2] = os.path.relpath(Path(row[2]).resolve(), out_abs)
    _write_csv(out / MANIFEST_NAME, MANIFEST_COLUMNS, rows.values())
    info = {
        "dataset": "deepfashion",
        "resolution": list(resolution),
        "keypoints_size": list(ANNOTATION_SIZE),
        "images": report.kept,
        "pairs": report.pairs,
    }
    atomic_write_text(out / INFO_NAME, json.dumps(info, indent=2) + "\n")
    atomic_write_text(out / "prepare_report.json", report.to_json() + "\n")
    return report


def _write_csv(path: Path, columns: Sequence[str], rows: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


# ---------------------------------------------------------------------------------
# Augmentation (pure functions; see DeepFashionAugment)
# ---------------------------------------------------------------------------------
@dataclass
class DeepFashionAugment:
    """Training augmentations, all off at evaluation (``DeepFashionAugment.none()``).

    The paper does not list its values; these defaults are signgen's choice within the
    authors' setup (CFLD/PCDMs code: horizontal flips, pose jitter, identity pairs).
    """

    flip_prob: float = 0.5  # mirror source and target together (keypoints: x and L/R swap)
    keypoint_jitter: float = 1.0  # std of Gaussian noise on target keypoints, pixels at 176x256
    same_source_prob: float = 0.05  # replace the source by the target (identity pair)

    def __post_init__(self) -> None:
        for name in ("flip_prob", "same_source_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise InputError(f"augment.{name} must be a probability in [0, 1], got {p}")
        if self.keypoint_jitter < 0:
            raise InputError(f"augment.keypoint_jitter must be >= 0, got {self.keypoint_jitter}")

    @classmethod
    def none(cls) -> DeepFashionAugment:
        return cls(flip_prob=0.0, keypoint_jitter=0.0, same_source_prob=0.0)


def flip_keypoints(points: np.ndarray, width: int) -> np.ndarray:
    """Mirror (18, 3) OpenPose keypoints in a ``width``-pixel image: x -> W - 1 - x, L <-> R."""
    out = np.array(points, np.float32, copy=True)[list(FLIP_PERMUTATION)]
    vis = out[:, 2] > 0
    out[vis, 0] = width - 1 - out[vis, 0]
    return out


def jitter_keypoints(points: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Add N(0, std^2) pixel noise to the visible points' x, y (missing points untouched)."""
    out = np.array(points, np.float32, copy=True)
    vis = out[:, 2] > 0
    out[vis, :2] += rng.normal(0.0, std, size=(int(vis.sum()), 2)).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageEntry:
    image: str
    split: str
    path: Path
    keypoints: np.ndarray  # (18, 3) in pixels of keypoints_size
    keypoints_size: tuple[int, int]  # (W, H)


def read_prepared(prepared_dir: str | os.PathLike) -> tuple[dict[str, ImageEntry], dict]:
    """The manifest (keyed by ``split/image``) and info of a prepared DeepFashion folder."""
    root = Path(prepared_dir)
    manifest, info_path = root / MANIFEST_NAME, root / INFO_NAME
    if not manifest.is_file() or not info_path.is_file():
        raise InputError(
            f"{root} is not a prepared DeepFashion folder (no {MANIFEST_NAME} / {INFO_NAME}); "
            "run `signgen prepare deepfashion` first"
        )
    info = json.loads(info_path.read_text())
    entries: dict[str, ImageEntry] = {}
    with open(manifest, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            try:
                kp = np.asarray(json.loads(r["keypoints"]), np.float32)
                size = (int(r["keypoints_width"]), int(r["keypoints_height"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise FormatError(f"{manifest}: bad row for {r.get('image')!r}: {exc}") from None
            if kp.shape != (18, 3):
                raise FormatError(f"{manifest}: keypoints of {r['image']!r} are not (18, 3)")
            entries[f"{r['split']}/{r['image']}"] = ImageEntry(
                r["image"], r["split"], resolve_path(root, r["path"]), kp, size
            )
    return entries, info


def load_image(path: Path, size_wh: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB resized (bicubic, as CFLD) to ``size_wh`` if it differs."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != tuple(size_wh):
                im = im.resize(tuple(size_wh), Image.Resampling.BICUBIC)
            return np.array(im)  # writable copy
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None


class DeepFashionPairs(Dataset):
    """(source, target, target pose) items of a prepared DeepFashion split.

    The same item format as :class:`signgen.data.pairs.PairDataset` (stage 1, stage 2
    and evaluation all read it): ``source``, ``target``: uint8 (H0, W0, 3) images at the
    prepared resolution; ``target_pose``: float32 (3, H, W) in [0, 1] drawn at the model
    ``resolution`` (letterboxed like the images); ``keypoints`` / ``source_keypoints``:
    float32 (18, 3) in model pixels; ``index``; plus ``source_name`` / ``target_name``.

    Args:
        prepared_dir: output of ``signgen prepare deepfashion``.
        split: "train" or "test".
        resolution: (H, W) of the model.
        augment: training augmentations; None = none (evaluation).
        max_pairs: keep the first ``max_pairs`` pairs.
        seed: augmentation seed; item ``i`` of epoch ``e`` draws from (seed, e, i), so
            runs are reproducible whatever the DataLoader workers. Call
            :meth:`set_epoch` to get new augmentations each epoch.
    """

    def __init__(
        self,
        prepared_dir: str | os.PathLike,
        split: str,
        resolution: tuple[int, int],
        augment: DeepFashionAugment | None = None,
        max_pairs: int | None = None,
        seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise InputError(f"DeepFashion split must be one of {SPLITS}, got {split!r}")
        self.root = Path(prepared_dir)
        self.split = split
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.augment = augment or DeepFashionAugment.none()
        self.seed = int(seed)
        self.epoch = 0
        self.entries, info = read_prepared(self.root)
        h, w = info.get("resolution", RESOLUTIONS[0])
        self.image_size = (int(w), int(h))  # (W, H) the images are loaded at
        pairs_path = self.root / f"{split}_pairs.csv"
        if not pairs_path.is_file():
            raise InputError(f"{pairs_path} not found; run `signgen prepare deepfashion`")
        with open(pairs_path, newline="", encoding="utf-8") as f:
            pairs = [(r["source"], r["target"]) for r in csv.DictReader(f)]
        if max_pairs is not None:
            pairs = pairs[:max_pairs]
        if not pairs:
            raise InputError(f"{pairs_path} has no pairs")
        for a, b in pairs:
            for name in (a, b):
                if f"{split}/{name}" not in self.entries:
                    raise FormatError(f"{pairs_path} names {name!r}, absent from {MANIFEST_NAME}")
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _load(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Image (H0, W0, 3) uint8 and its (18, 3) keypoints in the image's pixels."""
        e = self.entries[f"{self.split}/{name}"]
        img = load_image(e.path, self.image_size)
        kp = e.keypoints.copy()
        sx, sy = self.image_size[0] / e.keypoints_size[0], self.image_size[1] / e.keypoints_size[1]
        kp[:, 0] = (kp[:, 0] + 0.5) * sx - 0.5  # pixel-centre convention, per axis
        kp[:, 1] = (kp[:, 1] + 0.5) * sy - 0.5
        return img, kp

    def __getitem__(self, i: int) -> dict[str, Any]:
        from signgen.models.preprocess import Letterbox
        from signgen.pose.draw import OPENPOSE18, draw_pose

        src_name, tgt_name = self.pairs[i]
        aug = self.augment
        rng = np.random.default_rng([self.seed, self.epoch, i])
        src_img, src_kp = self._load(src_name)
        tgt_img, tgt_kp = self._load(tgt_name)
        if aug.same_source_prob and rng.random() < aug.same_source_prob:
            src_img, src_kp = tgt_img.copy(), tgt_kp.copy()
        if aug.flip_prob and rng.random() < aug.flip_prob:
            w0 = self.image_size[0]
            src_img, tgt_img = src_img[:, ::-1], tgt_img[:, ::-1]  # (H0, W0, 3) mirrored
            src_kp, tgt_kp = flip_keypoints(src_kp, w0), flip_keypoints(tgt_kp, w0)
        if aug.keypoint_jitter:
            scale = self.image_size[0] / ANNOTATION_SIZE[0]  # jitter is given at 176x256
            tgt_kp = jitter_keypoints(tgt_kp, aug.keypoint_jitter * scale, rng)

        h, w = self.resolution
        box = Letterbox.fit(self.image_size, (w, h))  # the render's geometry
        pose = draw_pose(*box.canvas(tgt_kp), (w, h), layout=OPENPOSE18)  # (H, W, 3) uint8
        pose_t = torch.from_numpy(np.ascontiguousarray(pose)).permute(2, 0, 1).float() / 255.0
        return {
            "source": torch.from_numpy(np.ascontiguousarray(src_img)),
            "target": torch.from_numpy(np.ascontiguousarray(tgt_img)),
            "target_pose": pose_t,  # (3, H, W) in [0, 1]
            "keypoints": torch.from_numpy(box.points_to_model(tgt_kp)),  # (18, 3) model pixels
            "source_keypoints": torch.from_numpy(box.points_to_model(src_kp)),
            "index": i,
            "source_name": src_name,
            "target_name": tgt_name,
        }


class DeepFashionImages(Dataset):
    """Single images of a prepared split (e.g. the FID real set: the training images).

    Items: ``image`` uint8 (H, W, 3) at ``resolution`` = (H, W) (bicubic resize, as the
    PGPIS evaluation code does) and ``name``.
    """

    def __init__(
        self, prepared_dir: str | os.PathLike, split: str, resolution: tuple[int, int]
    ) -> None:
        entries, _ = read_prepared(prepared_dir)
        self.items = [e for e in entries.values() if e.split == split]
        if not self.items:
            raise InputError(f"{prepared_dir}: no {split!r} images in {MANIFEST_NAME}")
        self.size_wh = (int(resolution[1]), int(resolution[0]))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        e = self.items[i]
        return {"image": torch.from_numpy(load_image(e.path, self.size_wh)), "name": e.image}
