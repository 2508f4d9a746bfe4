"""``signgen augment``: re-render a Phoenix-layout split with other signers' appearance.

For every video V (signer S) of a split, K other signers T1..TK are drawn (without
replacement, from a generator seeded by (seed, V)), and for each T one of T's videos of
the same split gives the first frame: FPDM renders V's keypoints with T's appearance.
With ``retarget: true`` (the default) V's keypoints are first put on T's body (pose
retargeting, docs/retargeting.md): T's bone lengths, size and place in the frame, from the
first pose of T's video in the dataset's own keypoint file (never extracted), with V's
joint angles and timing; rendered raw, they would give T the body of S.
The renders run on the render-many engine (:func:`pipelines.render_many.run_job`: Ray
Data, batches across clips, ledger, atomic outputs), and the result is a new dataset tree
in the Phoenix-2014T layout that ``signgen prepare phoenix`` reads::

    OUT/PHOENIX-2014-T/features/<frames subdir>/<split>/<V>__as__<T>/images0001.png ...
    OUT/PHOENIX-2014-T/annotations/manual/PHOENIX-2014-T.<split>.corpus.csv
    OUT/keypoints/Phoenix-2014T.<split>       MSKA pickle: the keypoints of each new video
    OUT/augment_manifest.<split>.csv          one row per new video: where it came from
    OUT/keypoints/sources/<split>/<V>.pkl     V's keypoints alone (what the read stage loads)

The keypoints of a new video are the ones it was rendered from: V's retarget onto T (the
signer in its frames has T's body, so these are its keypoints; a model trained on the new
tree pairs each frame with the pose it shows), or V's own with ``retarget: false``.
    OUT/ledger.jsonl, OUT/job.json            resumability (see pipelines/ledger.py)

The corpus keeps Phoenix's exact seven columns (``prepare phoenix`` checks the header);
the new speaker id is ``<T>_as_<S>`` ("T's appearance signing as S"), gloss and
translation are V's. ``augment_manifest.<split>.csv`` adds ``source_signer`` (S) and
``appearance_signer`` (T) and the seed of each video. Per-video seeds are
:func:`~pipelines.render_many.clip_seed` (seed, new name): deterministic, independent
of the order and number of workers.
"""

from __future__ import annotations

import csv
import logging
import os
import pickle
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.read_stage import load_clip
from pipelines.render_many import (
    SPOOL_DIR,
    ClipSpec,
    ClusterSettings,
    JobResult,
    RenderSettings,
    clip_seed,
    run_job,
)
from signgen.errors import InputError
from signgen.fileio import atomic_path

logger = logging.getLogger(__name__)

PHOENIX_DIR = "PHOENIX-2014-T"
CORPUS_TEMPLATE = "annotations/manual/PHOENIX-2014-T.{split}.corpus.csv"
KEYPOINTS_TEMPLATE = "Phoenix-2014T.{split}"
FRAME_PATTERN = "images{:04d}.png"
MANIFEST_TEMPLATE = "augment_manifest.{split}.csv"
MANIFEST_COLUMNS = ("name", "split", "speaker", "source_video", "source_signer",
                    "appearance_video", "appearance_signer", "seed", "frames",
                    "retarget")  # fmt: skip
SPLITS = ("train", "dev", "test")
SOURCES_DIR = "keypoints/sources"  # per-source-video MSKA pickles, inputs of the read stage


@dataclass
class AugmentConfig:
    """``configs/augment_*.yaml``."""

    root: str = ""  # the PHOENIX-2014-T folder (features/, annotations/)
    keypoints: str = ""  # folder holding the MSKA pickles Phoenix-2014T.{split}
    out: str = ""  # new dataset folder
    split: str = "train"
    appearances: int = 2  # K other signers per video
    seed: int = 0
    frames_subdir: str | None = None  # default: the only features/fullFrame-*px folder
    max_videos: int | None = None  # first N videos of the split (trials)
    # Put each source video's keypoints on the appearance signer's body before rendering
    # (docs/retargeting.md); false renders them as they are.
    retarget: bool = True
    render: RenderSettings = field(default_factory=RenderSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    def validate(self) -> None:
        for key in ("root", "keypoints", "out"):
            if not getattr(self, key):
                raise InputError(f"augment config: {key!r} is required (e.g. {key}=PATH)")
        if self.split not in SPLITS:
            raise InputError(f"augment config: split must be one of {SPLITS}, got {self.split!r}")
        if not isinstance(self.appearances, int) or self.appearances < 1:
            raise InputError(f"augment config: appearances must be >= 1, got {self.appearances}")
        if self.max_videos is not None and self.max_videos < 1:
            raise InputError(f"augment config: max_videos must be >= 1, got {self.max_videos}")
        if not isinstance(self.retarget, bool):
            raise InputError(f"augment config: retarget must be true or false, got "
                             f"{self.retarget!r}")  # fmt: skip


def load_augment_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> AugmentConfig:
    from signgen.config import apply_overrides, from_dict, load_yaml

    cfg = from_dict(AugmentConfig, apply_overrides(load_yaml(path), overrides))
    cfg.validate()
    return cfg


@dataclass(frozen=True)
class Video:
    name: str
    speaker: str
    orth: str
    translation: str
    frames_dir: Path
    sample: str  # key in the MSKA pickle


@dataclass(frozen=True)
class AugmentedVideo:
    """One video of the new dataset: ``source``'s keypoints with ``appearance``'s look."""

    name: str
    source: Video
    appearance: Video
    seed: int

    @property
    def speaker(self) -> str:
        return f"{self.appearance.speaker}_as_{self.source.speaker}"


def frames_subdir(root: Path, configured: str | None) -> str:
    """The ``features/fullFrame-WxHpx`` folder name of a Phoenix tree."""
    if configured:
        if not (root / "features" / configured).is_dir():
            raise InputError(f"{root}/features/{configured} not found (frames_subdir)")
        return configured
    found = sorted(p.name for p in (root / "features").glob("fullFrame-*px") if p.is_dir())
    if len(found) != 1:
        raise InputError(
            f"{root}/features: expected one fullFrame-WxHpx folder, found "
            f"{found or 'none'}; set frames_subdir=NAME"
        )
    return found[0]


def list_videos(cfg: AugmentConfig) -> tuple[list[Video], dict[str, Any], str]:
    """Videos of the split that have frames and keypoints; (videos, MSKA samples, subdir)."""
    from signgen.data.phoenix import read_corpus
    from signgen.keypoints import load_mska_samples

    root = Path(cfg.root)
    sub = frames_subdir(root, cfg.frames_subdir)
    kp_file = Path(cfg.keypoints) / KEYPOINTS_TEMPLATE.format(split=cfg.split)
    if not kp_file.is_file():
        raise InputError(f"MSKA keypoint file for split {cfg.split!r} not found: {kp_file}")
    samples = load_mska_samples(kp_file)
    by_name = {k.rsplit("/", 1)[-1]: k for k in samples}
    videos, missing = [], []
    for e in read_corpus(root / CORPUS_TEMPLATE.format(split=cfg.split)):
        frames_dir = root / "features" / sub / cfg.split / e.name
        if e.name not in by_name or not frames_dir.is_dir():
            missing.append(e.name)
            continue
        videos.append(Video(e.name, e.speaker, e.orth, e.translation, frames_dir, by_name[e.name]))
    if missing:
        logger.warning("%d video(s) of %s have no frame folder or keypoints and are skipped "
                       "(e.g. %s)", len(missing), cfg.split, missing[0])  # fmt: skip
    if cfg.max_videos:
        videos = videos[: cfg.max_videos]
    if not videos:
        raise InputError(f"no usable video in split {cfg.split!r} of {root}")
    return videos, {"file": kp_file, "samples": samples}, sub


def plan(videos: Sequence[Video], appearances: int, seed: int) -> list[AugmentedVideo]:
    """Pick K other signers per video and one appearance video per signer (deterministic:
    the choice for a video depends only on (seed, video name) and the set of videos)."""
    by_signer: dict[str, list[Video]] = {}
    for v in sorted(videos, key=lambda v: v.name):  # pools in name order: order-independent
        by_signer.setdefault(v.speaker, []).append(v)
    signers = sorted(by_signer)
    if len(signers) < 2:
        raise InputError(f"the split has {len(signers)} signer(s); augmentation needs at least two")
    out: list[AugmentedVideo] = []
    short = 0
    for v in videos:
        others = [s for s in signers if s != v.speaker]
        k = min(appearances, len(others))
        short += k < appearances
        rng = np.random.default_rng([int(seed), clip_seed(seed, v.name)])
        for t in rng.choice(others, size=k, replace=False):
            pool = by_signer[str(t)]
            look = pool[int(rng.integers(len(pool)))]
            name = f"{v.name}__as__{t}"
            out.append(AugmentedVideo(name, v, look, clip_seed(seed, name)))
    if short:
        logger.warning("%d video(s) have fewer than %d other signers in the split; they get "
                       "one render per available signer", short, appearances)  # fmt: skip
    return out


class FramesDirSink:
    """Phoenix frame folders: frames are written as PNGs into ``OUT/.spool/<name>/`` as
    they arrive and the folder is renamed onto ``<split dir>/<name>`` when complete."""

    def __init__(self, out: Path, split_dir: Path) -> None:
        self.spool = out / SPOOL_DIR
        self.split_dir = split_dir

    def output_path(self, clip_id: str) -> Path:
        return self.split_dir / clip_id

    def cleanup(self) -> None:
        shutil.rmtree(self.spool, ignore_errors=True)

    def put(self, clip_id: str, index: int, frame: np.ndarray) -> None:
        from signgen.video.images import encode_png

        d = self.spool / clip_id
        d.mkdir(parents=True, exist_ok=True)
        (d / FRAME_PATTERN.format(index + 1)).write_bytes(encode_png(frame))

    def commit(self, clip_id: str, num_frames: int, fps: float) -> Path:
        src = self.spool / clip_id
        assert len(list(src.glob("images*.png"))) == num_frames, clip_id
        final = self.output_path(clip_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # left by a run killed between rename and ledger line
            shutil.rmtree(final)
        os.replace(src, final)
        return final

    def discard(self, clip_id: str) -> None:
        shutil.rmtree(self.spool / clip_id, ignore_errors=True)


def run_augment_job(cfg: AugmentConfig, *, progress: bool = True) -> JobResult:
    """Plan, render (resumably) and write the corpus, keypoints and manifest of the split."""
    from pipelines.ledger import Ledger, read_ledger

    cfg.validate()
    out = Path(cfg.out)
    _refuse_writing_into_inputs(cfg)
    with Ledger(out):  # another job writing OUT: refused here, before anything is written
        pass
    check_retarget_unchanged(out, cfg.retarget)
    videos, mska, sub = list_videos(cfg)
    jobs = plan(videos, cfg.appearances, cfg.seed)
    split_dir = out / PHOENIX_DIR / "features" / sub / cfg.split
    per_video = split_keypoints(out / SOURCES_DIR / cfg.split, jobs, mska["samples"],
                                appearances=cfg.retarget)  # fmt: skip
    # With retargeting the reference skeleton is the appearance video's first pose in the
    # dataset's own keypoints (source_keypoints): the read stage never extracts.
    specs = {
        j.name: ClipSpec(j.name, str(j.appearance.frames_dir), str(per_video[j.source.name]),
                         None, j.seed, cfg.retarget,
                         str(per_video[j.appearance.name]) if cfg.retarget else None)
        for j in jobs
    }  # fmt: skip
    result = run_job(list(specs.values()), FramesDirSink(out, split_dir), out, cfg.render,
                     cfg.cluster, progress=progress)  # fmt: skip
    done = read_ledger(out / "ledger.jsonl")
    finished = [j for j in jobs if (e := done.get(j.name)) and e.status == "done"]
    write_tree(out, cfg.split, finished, mska["samples"], done, specs)
    return result


def check_retarget_unchanged(out: Path, retarget: bool) -> None:
    """A resumed job must render the way its finished videos were rendered: one tree whose
    videos are partly retargeted would pair frames and keypoints two ways. The ledger says
    how each finished video was rendered (a retargeted one records its fit)."""
    from pipelines.ledger import LEDGER_NAME, read_ledger

    done = [e for e in read_ledger(out / LEDGER_NAME).values() if e.status == "done"]
    other = [e.clip_id for e in done if ("retarget" in e.record) != retarget]
    if other:
        was = "true" if not retarget else "false"
        raise InputError(
            f"{out} holds {len(other)} video(s) rendered with retarget: {was} (e.g. "
            f"{other[0]}); resume with retarget={was}, or use another out folder"
        )


def _refuse_writing_into_inputs(cfg: AugmentConfig) -> None:
    """OUT/PHOENIX-2014-T and OUT/keypoints must not be the input tree: the corpus and the
    keypoint pickle written there would replace the inputs'."""
    from signgen.fileio import same_file

    out = Path(cfg.out)
    for mine, theirs, key in ((out / PHOENIX_DIR, cfg.root, "root"),
                              (out / "keypoints", cfg.keypoints, "keypoints")):  # fmt: skip
        if same_file(mine, theirs):
            raise InputError(
                f"out={cfg.out} would write into the input {key}={theirs} (its corpus and "
                "keypoints would be replaced); choose another output folder"
            )


def split_keypoints(
    folder: Path,
    jobs: Sequence[AugmentedVideo],
    samples: dict[str, Any],
    *,
    appearances: bool = False,
) -> dict[str, Path]:
    """One small MSKA pickle per source video (its sample, unchanged), and per appearance
    video with ``appearances`` (the reference skeletons of retargeting), so that a read
    task loads one video's keypoints and not the whole split's pickle (1-2 GB for Phoenix
    train). Existing files are kept (a resumed run)."""
    paths: dict[str, Path] = {}
    needed = [v for j in jobs for v in ((j.source, j.appearance) if appearances else (j.source,))]
    for v in needed:
        if v.name in paths:
            continue
        paths[v.name] = path = folder / f"{v.name}.pkl"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                pickle.dump({v.sample: samples[v.sample]}, fh)
    return paths


def write_tree(
    out: Path,
    split: str,
    finished: Sequence[AugmentedVideo],
    samples: dict[str, Any],
    ledger: dict[str, Any],
    specs: dict[str, ClipSpec] | None = None,
) -> None:
    """Corpus CSV, MSKA pickle and augment manifest for every finished video (atomic).

    A video whose spec retargets gets the keypoints it was rendered from: those of the read
    stage (:func:`~pipelines.read_stage.load_clip`, the same call on the same files), in
    the MSKA pickle's 210 x 260 pixels; the others get their source video's keypoints."""
    import torch

    from signgen.keypoints.formats.mska import HEIGHT, WIDTH, keypoint_array

    corpus = out / PHOENIX_DIR / CORPUS_TEMPLATE.format(split=split)
    corpus.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(corpus) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="|", quoting=csv.QUOTE_NONE, escapechar="\\")
        w.writerow(("name", "video", "start", "end", "speaker", "orth", "translation"))
        for j in finished:
            s = j.source
            w.writerow((j.name, f"{j.name}/1/*.png", "-1", "-1", j.speaker, s.orth,
                        s.translation))  # fmt: skip
    new: dict[str, dict[str, Any]] = {}
    for j in finished:
        src = samples[j.source.sample]
        points = keypoint_array(src["keypoint"], j.source.sample)  # (T, 133, 3)
        spec = (specs or {}).get(j.name)
        if spec is not None and spec.retarget:
            kp = load_clip(asdict(spec))[1]
            points = kp.rescaled(WIDTH, HEIGHT).points if kp.size != (WIDTH, HEIGHT) else kp.points
        new[j.name] = {
            "name": f"{split}/{j.name}",
            "gloss": src.get("gloss", j.source.orth),
            "text": src.get("text", j.source.translation),
            "num_frames": int(points.shape[0]),
            "keypoint": torch.from_numpy(np.ascontiguousarray(points)),
        }
    kp_path = out / "keypoints" / KEYPOINTS_TEMPLATE.format(split=split)
    kp_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(kp_path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(new, fh)
    with (
        atomic_path(out / MANIFEST_TEMPLATE.format(split=split)) as tmp,
        open(tmp, "w", newline="") as fh,
    ):
        w = csv.writer(fh)
        w.writerow(MANIFEST_COLUMNS)
        for j in finished:
            w.writerow((j.name, split, j.speaker, j.source.name, j.source.speaker,
                        j.appearance.name, j.appearance.speaker, j.seed,
                        ledger[j.name].record.get("frames", ""),
                        int("retarget" in ledger[j.name].record)))  # fmt: skip
