"""RWTH-PHOENIX-Weather 2014T: validate the raw tree and write signgen's prepared files.

Raw layout (docs/datasets.md; the dataset as distributed, plus the MSKA keypoints)::

    PHOENIX-2014-T/
      features/fullFrame-210x260px/{train,dev,test}/<name>/images0001.png ...
      annotations/manual/PHOENIX-2014-T.{train,dev,test}.corpus.csv
          '|'-separated, header ``name|video|start|end|speaker|orth|translation``
    KEYPOINTS/Phoenix-2014T.{train,dev,test}
          MSKA pickles: {sample name: {"name", "gloss", "text", "num_frames",
          "keypoint": (T, 133, 3) x, y, score in 210 x 260 pixels}}

Prepared files written by :func:`prepare_phoenix` into ``OUT`` (the contract read by the
training datasets in :mod:`signgen.data.pairs`):

``OUT/manifest.csv``
    one row per usable video: ``video, split, signer, frames, fps, width, height,
    frames_dir, frame_pattern, keypoints_file, sample, gloss, text, mska_file``. Paths
    are **relative to OUT** (portable: move OUT and the raw data together and nothing
    breaks); resolve them with :func:`resolve_path`, which also accepts absolute paths.
    Frame ``i`` (0-based) is ``frames_dir / frame_pattern.format(i + 1)`` (Phoenix numbers
    its PNGs from 1). ``keypoints_file`` is the video's signgen JSON (written by prepare
    under ``OUT/keypoints/{split}/<video>.json``, in pixels of the frames, so a training
    worker never loads a whole MSKA pickle); ``sample`` is the video's key in the MSKA
    pickle ``mska_file`` it came from.
``OUT/{split}_pairs.csv``
    ``video, signer, split, source_frame, target_frame`` with 0-based frame indices.
    train: ``--train-pairs`` random within-video pairs (:func:`sample_train_pairs`);
    dev and test: frame 0 -> every frame of the video, in order
    (:func:`first_frame_pairs`), so the test pair count equals the total test frames.
``OUT/prepare_report.json``
    the problems found, per category, with the affected videos.

Videos with a problem (a missing or incomplete frame folder, an unreadable PNG, no
keypoint sample, keypoint T != frame count, ...) are skipped with a warning per category;
``strict=True`` turns any problem into an :class:`~signgen.errors.InputError`. Frames are
never decoded into memory together: each PNG is checked on its own, by default from its
header and trailer only (:func:`png_header_ok`), fully decoded with ``check_images``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from signgen.errors import InputError
from signgen.fileio import atomic_path, atomic_write_text

SPLITS = ("train", "dev", "test")
FRAMES_SUBDIR = Path("features") / "fullFrame-210x260px"
CORPUS_TEMPLATE = "annotations/manual/PHOENIX-2014-T.{split}.corpus.csv"
KEYPOINTS_TEMPLATE = "Phoenix-2014T.{split}"
CORPUS_COLUMNS = ("name", "video", "start", "end", "speaker", "orth", "translation")
FRAME_PATTERN = "images{:04d}.png"  # 1-based, as distributed
FPS = 25.0
DEFAULT_TRAIN_PAIRS = 100_000

MANIFEST_COLUMNS = (
    "video", "split", "signer", "frames", "fps", "width", "height",
    "frames_dir", "frame_pattern", "keypoints_file", "sample", "gloss", "text", "mska_file",
)  # fmt: skip
PAIR_COLUMNS = ("video", "signer", "split", "source_frame", "target_frame")

_FRAME_RE = re.compile(r"^images(\d+)\.png$")

# Problem categories: key -> (label for users, whether the video is skipped).
PROBLEMS: dict[str, tuple[str, bool]] = {
    "missing_frames_dir": ("frame folder missing", True),
    "empty_frames_dir": ("frame folder holds no images*.png", True),
    "frame_gap": ("frame numbering not contiguous from images0001.png", True),
    "unreadable_png": ("unreadable or truncated PNG", True),
    "frame_size": ("frame size differs within the video", True),
    "missing_keypoints": ("no keypoint sample for the video", True),
    "bad_keypoints": ("keypoint array is not a finite (T, 133, 3) array", True),
    "keypoint_length": ("keypoint T != frame count", True),
    "duplicate_corpus_row": ("duplicate corpus row (later rows ignored)", False),
    "not_in_corpus": ("video absent from the corpus CSV (ignored)", False),
}


# ---------------------------------------------------------------------------------
# Small pure pieces
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusEntry:
    """One row of ``PHOENIX-2014-T.<split>.corpus.csv``."""

    name: str
    speaker: str
    orth: str  # gloss sequence
    translation: str  # German text


def read_corpus(path: str | os.PathLike) -> list[CorpusEntry]:
    """Read a Phoenix-2014T corpus CSV ('|'-separated, header ``name|video|...``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Phoenix corpus CSV not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CORPUS_COLUMNS:
            raise InputError(
                f"{path}: expected the header {'|'.join(CORPUS_COLUMNS)!r}, got "
                f"{'|'.join(header or [])!r}; is this a PHOENIX-2014-T corpus file?"
            )
        rows = []
        for lineno, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) != len(CORPUS_COLUMNS):
                raise InputError(
                    f"{path}:{lineno}: expected {len(CORPUS_COLUMNS)} '|'-separated fields, "
                    f"got {len(row)}"
                )
            rec = dict(zip(CORPUS_COLUMNS, row))
            rows.append(
                CorpusEntry(rec["name"].strip(), rec["speaker"].strip(), rec["orth"].strip(),
                            rec["translation"].strip())
            )  # fmt: skip
    return rows


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def png_header_ok(path: str | os.PathLike) -> tuple[int, int] | None:
    """Return (width, height) if ``path`` looks like a complete PNG, else None.

    Reads 24 bytes at the start and 12 at the end: the signature and the IHDR chunk
    (W3C PNG 2nd ed. sections 5.2 and 11.2.2: IHDR must come first and holds the size)
    and the IEND trailer (section 11.2.5), which catches empty and truncated files. It is
    hand-written because PIL's ``Image.open`` costs several times more per file and does
    not look at the end of the file; a full decode (``--check-images``) uses PIL.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
                return None
            f.seek(-12, os.SEEK_END)
            if f.read(12) != _PNG_IEND:
                return None
    except OSError:
        return None
    width, height = struct.unpack(">II", head[16:24])
    return (width, height) if width > 0 and height > 0 else None


def png_decode_ok(path: str | os.PathLike) -> tuple[int, int] | None:
    """Return (width, height) if PIL fully decodes ``path`` (CRC and zlib checked), else None."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except Exception:  # any decoder failure means "unreadable"
        return None


def sample_train_pairs(frame_counts: Sequence[int], n: int, seed: int) -> np.ndarray:
    """Draw ``n`` random within-video (video, source, target) index triples.

    A video is drawn with probability proportional to its frame count, then source and
    target frames independently and uniformly within it; every frame of the split is thus
    equally likely to be a target (long videos are not under-sampled). Source may equal
    target (probability 1/T), which is a valid identity pair. Returns (n, 3) int64, rows
    sorted by (video, source, target) for locality when reading frames.
    """
    counts = np.asarray(frame_counts, dtype=np.int64)
    assert counts.ndim == 1 and (counts > 0).all(), "frame counts must be positive"
    rng = np.random.default_rng(seed)
    video = rng.choice(len(counts), size=n, p=counts / counts.sum())  # (n,)
    src = (rng.random(n) * counts[video]).astype(np.int64)  # uniform in [0, T)
    tgt = (rng.random(n) * counts[video]).astype(np.int64)
    out = np.stack([video, src, tgt], axis=1)  # (n, 3)
    return out[np.lexsort((out[:, 2], out[:, 1], out[:, 0]))]


def first_frame_pairs(frame_counts: Sequence[int]) -> np.ndarray:
    """The evaluation protocol: source = frame 0, target = every frame, in order. (sum T, 3)."""
    rows = [
        np.stack([np.full(t, v), np.zeros(t, np.int64), np.arange(t)], axis=1)
        for v, t in enumerate(frame_counts)
    ]
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 3), np.int64)


def resolve_path(out_dir: str | os.PathLike, value: str) -> Path:
    """Resolve a path stored in a prepared manifest (relative to ``out_dir``, or absolute)."""
    return (Path(out_dir) / value).resolve()


def frame_path(out_dir: str | os.PathLike, row: dict[str, Any], index: int) -> Path:
    """Path of 0-based frame ``index`` of a manifest row."""
    return resolve_path(out_dir, row["frames_dir"]) / row["frame_pattern"].format(index + 1)


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read ``manifest.csv`` (frames/width/height as int, fps as float)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prepared manifest not found: {path} (run `signgen prepare phoenix`)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("frames", "width", "height"):
            row[key] = int(row[key])
        row["fps"] = float(row["fps"])
    return rows


# ---------------------------------------------------------------------------------
# Validation report
# ---------------------------------------------------------------------------------
@dataclass
class PrepareReport:
    """Problems found while preparing a dataset, per category, with the affected items."""

    problems: dict[str, tuple[str, bool]] = field(default_factory=lambda: dict(PROBLEMS))
    items: dict[str, list[str]] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)  # split -> items kept
    pairs: dict[str, int] = field(default_factory=dict)  # split -> pairs written
    # phase -> (wall, CPU) seconds of this run (not written to prepare_report.json, which
    # describes the data, not the machine): "check" (inputs, every frame), "keypoints"
    # (the per-video keypoint JSON), "pairs" (pair lists and manifest).
    seconds: dict[str, tuple[float, float]] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Record the wall and CPU seconds of the block as ``seconds[phase]``."""
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[phase] = (time.perf_counter() - w0, time.process_time() - c0)

    def add(self, category: str, item: str, detail: str = "") -> None:
        assert category in self.problems, category
        self.items.setdefault(category, []).append(f"{item}: {detail}" if detail else item)

    def count(self, category: str) -> int:
        return len(self.items.get(category, []))

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.items.values())

    def warning_lines(self, examples: int = 3) -> list[str]:
        """One line per category: label, count, whether skipped, a few examples."""
        lines = []
        for key, found in self.items.items():
            label, skips = self.problems[key]
            what = "skipped" if skips else "found"
            shown = "; ".join(found[:examples]) + ("; ..." if len(found) > examples else "")
            lines.append(f"{label}: {len(found)} {what} ({shown})")
        return lines

    def summary(self) -> str:
        """One line naming every category with its count (for --strict errors)."""
        parts = [f"{self.problems[k][0]}: {len(v)}" for k, v in self.items.items()]
        return "; ".join(parts)

    def to_json(self) -> str:
        return json.dumps(
            {
                "kept": self.kept,
                "pairs": self.pairs,
                "problems": {
                    k: {"label": self.problems[k][0], "count": len(v), "items": v}
                    for k, v in self.items.items()
                },
            },
            indent=2,
        )


def raise_if_strict(report: PrepareReport, strict: bool, dataset: str) -> None:
    if strict and report.total:
        raise InputError(
            f"{dataset}: {report.total} problem(s) with --strict: {report.summary()} "
            "(rerun without --strict to skip the bad items)"
        )


# ---------------------------------------------------------------------------------
# Preparation
# ---------------------------------------------------------------------------------
@dataclass
class _Video:
    split: str
    entry: CorpusEntry
    frames: int
    width: int
    height: int
    frames_dir: Path
    sample: str
    points: np.ndarray | None  # (T, 133, 3) float32 until written out


def _load_keypoint_split(path: Path) -> dict[str, Any]:
    """Load one MSKA pickle through the restricted reader of :mod:`signgen.keypoints`."""
    from signgen.keypoints.formats.mska import load_mska_samples  # restricted unpickler

    return load_mska_samples(path)


def _keypoint_shape(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value.get("keypoint"), "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else None


def _scan_frames(
    folder: Path, check_images: bool, report: PrepareReport, video: str
) -> tuple[int, int, int] | None:
    """Validate one frame folder; return (frames, width, height) or None (problem reported)."""
    if not folder.is_dir():
        report.add("missing_frames_dir", video, str(folder))
        return None
    numbers = sorted(
        int(m.group(1)) for e in os.scandir(folder) if (m := _FRAME_RE.match(e.name)) is not None
    )
    if not numbers:
        report.add("empty_frames_dir", video)
        return None
    if numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
        report.add("frame_gap", video, f"missing images{missing[0]:04d}.png" if missing else "")
        return None
    check = png_decode_ok if check_images else png_header_ok
    size = None
    for n in numbers:
        got = check(folder / FRAME_PATTERN.format(n))
        if got is None:
            report.add("unreadable_png", video, FRAME_PATTERN.format(n))
            return None
        if size is None:
            size = got
        elif got != size:
            report.add("frame_size", video, f"{FRAME_PATTERN.format(n)} is {got}, first {size}")
            return None
    assert size is not None
    return len(numbers), size[0], size[1]


def _validate_split(
    root: Path,
    keypoints_file: Path,
    split: str,
    check_images: bool,
    report: PrepareReport,
    progress: bool,
) -> list[_Video]:
    from tqdm.auto import tqdm

    from signgen.keypoints.formats.mska import keypoint_array

    corpus = read_corpus(root / CORPUS_TEMPLATE.format(split=split))
    entries: dict[str, CorpusEntry] = {}
    for entry in corpus:
        if entry.name in entries:
            report.add("duplicate_corpus_row", f"{split}/{entry.name}")
        else:
            entries[entry.name] = entry
    frames_root = root / FRAMES_SUBDIR / split
    folders = (
        {e.name for e in os.scandir(frames_root) if e.is_dir()} if frames_root.is_dir() else set()
    )
    samples = _load_keypoint_split(keypoints_file)
    # MSKA keys may carry the split ("test/NAME"); match on the last path component.
    by_name = {str(k).rsplit("/", 1)[-1]: k for k in samples}
    for extra in sorted((folders | set(by_name)) - set(entries)):
        has = [w for w, ok in (("frames", extra in folders), ("keypoints", extra in by_name)) if ok]
        report.add("not_in_corpus", f"{split}/{extra}", " and ".join(has))

    videos: list[_Video] = []
    bar = tqdm(entries.values(), desc=f"check {split}", unit="video", disable=not progress)
    for entry in bar:
        vid = f"{split}/{entry.name}"
        scanned = _scan_frames(frames_root / entry.name, check_images, report, vid)
        if scanned is None:
            continue
        n_frames, width, height = scanned
        key = by_name.get(entry.name)
        if key is None:
            report.add("missing_keypoints", vid, f"not in {keypoints_file.name}")
            continue
        shape = _keypoint_shape(samples[key])
        if shape is None or len(shape) != 3 or shape[1:] != (133, 3):
            report.add("bad_keypoints", vid, f"shape {shape}")
            continue
        if shape[0] != n_frames:
            report.add("keypoint_length", vid, f"{shape[0]} keypoint frames vs {n_frames} PNGs")
            continue
        points = keypoint_array(samples[key]["keypoint"], vid)  # (T, 133, 3) float32
        if not np.isfinite(points).all():
            report.add("bad_keypoints", vid, "NaN or inf values")
            continue
        videos.append(
            _Video(
                split, entry, n_frames, width, height, frames_root / entry.name, str(key), points
            )
        )
    del samples  # the train split's keypoints are large; free them before the next split
    return videos


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


def _write_pairs(path: Path, videos: Sequence[_Video], triples: np.ndarray) -> None:
    names = [v.entry.name for v in videos]
    signers = [v.entry.speaker for v in videos]
    split = videos[0].split if videos else ""
    _write_csv(
        path,
        PAIR_COLUMNS,
        ((names[v], signers[v], split, s, t) for v, s, t in triples.tolist()),
    )


# Over 80 lines: one linear recipe (check the tree, match videos to keypoints, draw the
# pairs, write the files) whose steps all feed one report; split up, they would only hand
# that state around.
def prepare_phoenix(
    root: str | os.PathLike,
    keypoints_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    splits: Sequence[str] = SPLITS,
    train_pairs: int = DEFAULT_TRAIN_PAIRS,
    seed: int = 0,
    strict: bool = False,
    check_images: bool = False,
    progress: bool = True,
    on_warning: Callable[[str], None] | None = None,
) -> PrepareReport:
    """Validate a PHOENIX-2014-T tree and write the prepared files into ``out``.

    Returns the :class:`PrepareReport`; every problem category is passed as one line to
    ``on_warning``. With ``strict`` any problem raises InputError and nothing is written.
    """
    root, keypoints_dir, out = Path(root), Path(keypoints_dir), Path(out)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise InputError(f"--splits: unknown split {bad[0] if bad else ''!r}; choose from {SPLITS}")
    if train_pairs < 1:
        raise InputError(f"--train-pairs must be >= 1, got {train_pairs}")
    if not (root / FRAMES_SUBDIR).is_dir():
        raise InputError(
            f"--root {root}: no {FRAMES_SUBDIR} folder; point --root at the PHOENIX-2014-T "
            "folder (the one holding features/ and annotations/)"
        )
    for split in splits:
        corpus = root / CORPUS_TEMPLATE.format(split=split)
        if not corpus.is_file():
            raise InputError(f"--root {root}: corpus CSV for split {split!r} not found: {corpus}")
        kp = keypoints_dir / KEYPOINTS_TEMPLATE.format(split=split)
        if not kp.is_file():
            raise InputError(
                f"--keypoints {keypoints_dir}: MSKA keypoint file for split {split!r} not found: "
                f"{kp}"
            )

    report = PrepareReport()
    per_split: dict[str, list[_Video]] = {}
    with report.timed("check"):
        for split in splits:
            kp_file = keypoints_dir / KEYPOINTS_TEMPLATE.format(split=split)
            per_split[split] = _validate_split(root, kp_file, split, check_images, report,
                                               progress)  # fmt: skip
            report.kept[split] = len(per_split[split])
    if on_warning:
        for line in report.warning_lines():
            on_warning(line)
    raise_if_strict(report, strict, "phoenix")
    if not any(per_split.values()):
        raise InputError(f"--root {root}: no usable video in splits {', '.join(splits)}")

    out.mkdir(parents=True, exist_ok=True)
    with report.timed("keypoints"):
        _write_keypoint_json(out, per_split, progress)
    with report.timed("pairs"):
        _write_pairs_and_manifest(out, keypoints_dir, per_split, report, train_pairs, seed)
    atomic_write_text(out / "prepare_report.json", report.to_json() + "\n")
    return report


def _write_pairs_and_manifest(
    out: Path,
    keypoints_dir: Path,
    per_split: dict[str, list[_Video]],
    report: PrepareReport,
    train_pairs: int,
    seed: int,
) -> None:
    """``{split}_pairs.csv`` for every split and ``manifest.csv`` (paths relative to OUT)."""
    for split, videos in per_split.items():
        counts = [v.frames for v in videos]
        if split == "train":
            triples = (
                sample_train_pairs(counts, train_pairs, seed)
                if videos
                else np.zeros((0, 3), np.int64)
            )
        else:
            triples = first_frame_pairs(counts)
        _write_pairs(out / f"{split}_pairs.csv", videos, triples)
        report.pairs[split] = len(triples)

    out_abs = out.resolve()

    def rel(p: Path) -> str:
        return os.path.relpath(p.resolve(), out_abs)

    def manifest_row(v: _Video) -> tuple[Any, ...]:
        kp_json = rel(out / keypoint_json_path(v.split, v.entry.name))
        mska = rel(keypoints_dir / KEYPOINTS_TEMPLATE.format(split=v.split))
        e = v.entry
        return (e.name, v.split, e.speaker, v.frames, FPS, v.width, v.height, rel(v.frames_dir),
                FRAME_PATTERN, kp_json, v.sample, e.orth, e.translation, mska)  # fmt: skip

    manifest_rows = (manifest_row(v) for videos in per_split.values() for v in videos)
    _write_csv(out / "manifest.csv", MANIFEST_COLUMNS, manifest_rows)


def keypoint_json_path(split: str, video: str) -> Path:
    """Where prepare writes the signgen JSON keypoints of a video, relative to OUT."""
    return Path("keypoints") / split / f"{video}.json"


def _write_keypoint_json(out: Path, per_split: dict[str, list[_Video]], progress: bool) -> None:
    """One signgen JSON per video (what the training datasets read), then free the arrays."""
    from tqdm.auto import tqdm

    from signgen.keypoints.sequence import KeypointSequence

    total = sum(len(v) for v in per_split.values())
    with tqdm(total=total, desc="write keypoints", unit="video", disable=not progress) as bar:
        for split, videos in per_split.items():
            (out / "keypoints" / split).mkdir(parents=True, exist_ok=True)
            for v in videos:
                assert v.points is not None
                meta = {"signer": v.entry.speaker, "gloss": v.entry.orth,
                        "text": v.entry.translation, "sample": v.sample}  # fmt: skip
                seq = KeypointSequence(v.points, v.width, v.height, FPS, meta=meta)  # validates
                atomic_write_text(out / keypoint_json_path(split, v.entry.name), sequence_json(seq))
                v.points = None
                bar.update(1)


_POINT_FMT = "[%.3f,%.3f,%.3f]"


def sequence_json(seq: Any) -> str:
    """signgen keypoint JSON (schema v1) of a KeypointSequence, coordinates to 0.001 px.

    The same document as ``KeypointSequence.save`` writes, with 3 instead of 4 decimals.
    Hand-written because ``json.dumps`` of the nested frame lists was ~90% of the run time
    of ``prepare phoenix`` (200 videos x 100 frames: 13 of 15 CPU-seconds); one ``%``
    template per frame is 2.3x faster (benchmarks/prepare_speed.py).
    """
    frame_tpl = "[" + ",".join([_POINT_FMT] * seq.points.shape[1]) + "]"
    pts = seq.points.astype(np.float64)  # (T, K, 3)
    frames = ",".join(frame_tpl % tuple(f.ravel().tolist()) for f in pts)
    from signgen.keypoints.sequence import SCHEMA_VERSION

    header = {"schema_version": SCHEMA_VERSION, "layout": seq.layout, "width": seq.width,
              "height": seq.height, "fps": seq.fps}  # fmt: skip
    text = json.dumps(header, separators=(",", ":"))[:-1]
    meta = f',"meta":{json.dumps(seq.meta, separators=(",", ":"))}' if seq.meta else ""
    return f'{text},"frames":[{frames}]{meta}}}'
