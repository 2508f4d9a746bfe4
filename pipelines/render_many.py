"""Render many clips on Ray Data: ``signgen render-many`` and the engine of ``signgen augment``.

The job (docs/architecture.md, "Data flow of signgen render-many"; docs/cluster.md) is
three stages::

    clips (manifest rows)
      -> read    CPU tasks (fractional num_cpus): first frame + keypoints of one clip,
                 checked as `signgen render` checks them (and retargeted onto the first
                 frame's signer when the clip asks, as `signgen render --retarget` does);
                 one row per FRAME (clip_id, frame_index, num_frames, fps, seed,
                 points (133, 3), source_png) or one "error" row for a clip whose inputs
                 are bad
      -> model   map_batches(FrameRenderer): an actor pool (`--workers`, `--gpus-per-worker`)
                 whose __init__ loads the pipeline once; integer batch size; a batch mixes
                 frames of several clips (FPDMPipeline.render_frames accepts that)
      -> write   on the driver: frames arrive in ANY order (Ray Data does not preserve
                 order by default); each is staged on disk under (clip_id, frame_index),
                 and a clip whose frames are all there is written in frame order
                 (atomically) and recorded in the ledger (pipelines/ledger.py)

Where the source encoding lives. The encoded first frame (DINOv2 tokens: ~1300 x 1024
floats, 5 MB, at the paper's settings) is ~30x bigger than the first frame itself, so it
does not travel in rows. Rows carry the first frame as PNG bytes (lossless, a few tens of
kB, the size of one output frame or less); each actor encodes a clip's source on the
first frame of that clip it sees and keeps it in a small LRU cache keyed by clip_id. A
clip's frames are contiguous in the read stage's output, so an actor usually meets a clip
in one or two consecutive batches: the source is encoded once per clip per actor that
renders part of it (at most ``workers`` times, typically once or twice), against one
UNet pass per frame.

Temporal jobs (``--temporal``, docs/temporal.md) need a clip's frames together: the read
stage then gives one row per clip (its keypoints as one array), and the model stage
(:class:`ClipRenderer`) renders up to ``--batch-size`` clips per call with
``FPDMPipeline.render_clips``, the call ``signgen render --temporal`` makes, their windows
sharing model calls; it emits the same frame rows, so the write stage is unchanged. The
temporal options are part of job.json (a resume with other ones is refused).

Memory is bounded however many clips: the manifest becomes one small row per clip
(a few hundred bytes), Ray Data streams the rest with back-pressure on its object store,
and the driver holds no frames (they are staged to ``DIR/.spool`` as they arrive).

Identity with ``signgen render``: frames come from the same ``FPDMPipeline.render_frames``
call that ``FPDMPipeline.render`` makes, with the same options object
(:class:`RenderSettings` is a :class:`~signgen.sampling.options.RenderOptions`), the clip's
seed per frame, the same noise policy (by default every frame of a clip starts from the
clip seed's noise) and the same post-processors (the detail transfer, bound to each clip's
first frame), and the video is written with the same :class:`~signgen.video.VideoWriter`
settings. Float sums depend
on the batch shape and the torch thread count, so bit-identical frames need the same
thread count (``--threads-per-worker``); otherwise a rare pixel may round the other way.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipelines.read_stage import read_clip
from signgen.errors import InputError
from signgen.fileio import atomic_write_text
from signgen.sampling.options import RenderOptions

logger = logging.getLogger(__name__)

MANIFEST_REQUIRED = ("clip_id", "video", "keypoints")
MANIFEST_OPTIONAL = ("sample", "seed", "retarget", "source_keypoints")
JOB_FILE = "job.json"
SPOOL_DIR = ".spool"
SOURCE_CACHE_SIZE = 64  # encoded sources kept per actor (clips in flight are far fewer)
# Exit code of a job in which at least one clip failed (bad inputs); 2 is a usage error.
EXIT_CLIPS_FAILED = 3

MAX_CLIP_ID = 200  # characters: file names may have 255 bytes, with room for temporary names
_CLIP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")
_RETARGET_VALUES = {"1": True, "true": True, "0": False, "false": False, "": False}


# ---- clips ---------------------------------------------------------------------------------
def clip_seed(base_seed: int, clip_id: str) -> int:
    """Deterministic per-clip seed: the first 31 bits of sha256("base_seed:clip_id").

    Stable across runs, machines and Python versions (unlike ``hash()``), and different
    for every clip, so clips of a job do not share their initial noise.
    """
    digest = hashlib.sha256(f"{int(base_seed)}:{clip_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


@dataclass(frozen=True)
class ClipSpec:
    """One clip to render: the first frame of ``video`` performs ``keypoints``."""

    clip_id: str  # output name: safe file-name characters, unique within a job
    video: str  # video, frame folder or image; its first frame gives the appearance
    keypoints: str  # any keypoint file signgen reads
    sample: str | None  # sample name inside a multi-sample keypoint file
    seed: int
    # Pose retargeting (docs/retargeting.md): put the keypoints on the body of the first
    # frame's signer before rendering, as `signgen render --retarget` does.
    retarget: bool = False
    # Keypoints of the first frame (their first pose): the reference skeleton of retargeting
    # (default: extracted from the first frame) and where MCLD models find face and hands
    # (default: the reference when retargeting, else the first pose of ``keypoints``).
    source_keypoints: str | None = None

    def __post_init__(self) -> None:
        if not _CLIP_ID.match(self.clip_id) or len(self.clip_id) > MAX_CLIP_ID:
            raise InputError(
                f"clip_id {self.clip_id!r} is not a safe file name: use letters, digits and "
                f"._+=- (not starting with . or -), at most {MAX_CLIP_ID} characters; it names "
                "the output file"
            )


def _manifest_rows(path: Path, reader: csv.DictReader, base_seed: int) -> list[ClipSpec]:
    base = path.parent
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in MANIFEST_REQUIRED if c not in header]
    unknown = [c for c in header if c not in MANIFEST_REQUIRED + MANIFEST_OPTIONAL]
    if missing or unknown:
        raise InputError(
            f"{path}: manifest columns must be {', '.join(MANIFEST_REQUIRED)} and optionally "
            f"{', '.join(MANIFEST_OPTIONAL)}; "
            + (f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}")
        )
    specs: list[ClipSpec] = []
    seen: dict[str, int] = {}
    for raw in reader:
        lineno = reader.line_num
        if None in raw:  # csv.DictReader files cells beyond the header under the key None
            raise InputError(
                f"{path}:{lineno}: {len(raw[None])} more cell(s) than the header's "
                f"{len(header)} columns (a comma inside a path needs quotes)"
            )
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        cid = row["clip_id"]
        if cid in seen:
            raise InputError(f"{path}:{lineno}: clip_id {cid!r} already on line {seen[cid]}")
        seen[cid] = lineno
        for col in MANIFEST_REQUIRED:
            if not row.get(col):
                raise InputError(f"{path}:{lineno}: empty {col!r}")
        seed_text = row.get("seed", "")
        try:
            seed = int(seed_text) if seed_text else clip_seed(base_seed, cid)
        except ValueError:
            raise InputError(
                f"{path}:{lineno}: seed must be an integer, got {seed_text!r}"
            ) from None
        if not 0 <= seed < 2**63:
            raise InputError(f"{path}:{lineno}: seed must be in [0, 2**63), got {seed}")
        flag = row.get("retarget", "").lower()
        if flag not in _RETARGET_VALUES:
            raise InputError(
                f"{path}:{lineno}: retarget must be 1, 0 or empty, got {row['retarget']!r}"
            )
        source = row.get("source_keypoints") or None
        try:
            specs.append(
                ClipSpec(cid, str(base / row["video"]), str(base / row["keypoints"]),
                         row.get("sample") or None, seed, _RETARGET_VALUES[flag],
                         str(base / source) if source else None)
            )  # fmt: skip
        except InputError as exc:
            raise InputError(f"{path}:{lineno}: {exc}") from None
    return specs


def read_manifest(path: str | os.PathLike, base_seed: int = 0) -> list[ClipSpec]:
    """Read a render-many manifest CSV (comma-separated, with a header).

    Columns: ``clip_id, video, keypoints`` and optionally ``sample, seed, retarget,
    source_keypoints``. Relative paths are relative to the manifest's folder. An empty or
    absent ``seed`` is :func:`clip_seed` (base_seed, clip_id); ``retarget`` is 1 (retarget
    the keypoints onto the first frame's signer) or 0, empty or absent (render them as they
    are); ``source_keypoints`` (optional) is a keypoint file of the first frame.
    """
    from signgen.fileio import existing_file

    path = existing_file(path, "manifest")
    try:
        # utf-8-sig: spreadsheet programs start their CSV files with a byte-order mark.
        with open(path, newline="", encoding="utf-8-sig") as fh:
            specs = _manifest_rows(path, csv.DictReader(fh), base_seed)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: the manifest is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV"
        ) from None
    except csv.Error as exc:  # e.g. a field over csv's 128 kB limit
        raise InputError(f"{path}: not a readable CSV manifest ({exc})") from None
    if not specs:
        raise InputError(f"{path}: the manifest lists no clips")
    return specs


# ---- settings ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RenderSettings(RenderOptions):
    """What the frames depend on: the render options (validated when made) and the model.
    Recorded in ``DIR/job.json``; a re-run must match. Clips carry their own seeds, and the
    batch size is a cluster setting (it does not change the frames)."""

    model: str | None = None  # FPDM folder / hub id in the cache; None: bundled demo model

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model is not None and Path(self.model).exists():
            object.__setattr__(self, "model", str(Path(self.model).resolve()))

    def fingerprint(self) -> dict[str, Any]:
        keys = ("model", "steps", "guidance", "scheduler", "independent_noise", "dtype",
                "guidance_focal")  # fmt: skip
        d = {k: getattr(self, k) for k in keys}
        d["guidance"] = None if self.guidance is None else list(self.guidance)
        if self.detail_transfer is not None:  # absent from jobs that left it to the model
            d["detail_transfer"] = self.detail_transfer
        if self.temporal:  # absent from per-frame jobs (job files written before --temporal)
            d.update(temporal=True, window=self.window, overlap=self.overlap, taper=self.taper)
        return d


@dataclass
class ClusterSettings:
    """Where and how wide the job runs (does not change the frames)."""

    workers: int = 1  # model actors
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None  # default: 1 with GPUs, else a share of the CPUs
    threads_per_worker: int | None = None  # torch intra-op threads of a CPU actor
    batch_size: int = 8  # frames per model call
    device: str = "auto"  # auto: cuda when gpus_per_worker > 0, else cpu
    address: str | None = None  # existing cluster ("auto", "ray://host:10001", host:6379)
    num_cpus: int | None = None  # local Ray only: CPUs to offer (default: all)
    object_store_memory: int | None = None  # local Ray only, bytes
    read_cpus: float = 0.25  # per read task (fractional so reading overlaps the model)
    ship_code: bool = False  # send signgen + pipelines to the workers (runtime_env)
    # Custom Ray resources each model actor reserves, e.g. {"signgen_gpu_node": 1}: the
    # actors then run only on nodes started with `ray start --resources` naming them.
    worker_resources: dict[str, float] | None = None

    def validate(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise InputError(f"--workers must be a positive integer, got {self.workers!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"--batch-size must be a positive integer, got {self.batch_size!r}")
        if self.gpus_per_worker < 0:
            raise InputError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise InputError(f"--cpus-per-worker must be > 0, got {self.cpus_per_worker}")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise InputError(f"--threads-per-worker must be >= 1, got {self.threads_per_worker}")
        if not 0 < self.read_cpus <= 1:
            raise InputError(f"read_cpus must be in (0, 1], got {self.read_cpus}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and self.gpus_per_worker == 0:
            raise InputError(
                "--device cuda needs --gpus-per-worker > 0 (Ray hides GPUs from workers "
                "that did not reserve one)"
            )
        if self.device == "cpu" and self.gpus_per_worker > 0:
            raise InputError("--device cpu with --gpus-per-worker > 0 reserves GPUs it never uses")
        if self.worker_resources is not None:
            self.worker_resources = parse_worker_resources(self.worker_resources)

    @property
    def worker_device(self) -> str:
        """The device a model actor uses (Ray sets CUDA_VISIBLE_DEVICES to its GPUs)."""
        if self.device != "auto":
            return self.device
        return "cuda" if self.gpus_per_worker > 0 else "cpu"


def parse_worker_resources(value: Any) -> dict[str, float]:
    """``--worker-resources``: a JSON object (or a mapping from a config) of custom Ray
    resource names to positive amounts; CPU and GPU have options of their own."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"--worker-resources must be a JSON object such as '{{\"signgen_gpu_node\": 1}}'"
                f", got {value!r} ({exc.msg})"
            ) from None
    if not isinstance(value, dict) or not value:
        raise InputError(
            f"--worker-resources must be a non-empty mapping of resource names to amounts, "
            f"got {value!r}"
        )
    out: dict[str, float] = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not name or name in ("CPU", "GPU", "memory"):
            raise InputError(
                f"--worker-resources: {name!r} is not a custom resource name (CPU and GPU "
                "have --cpus-per-worker and --gpus-per-worker)"
            )
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise InputError(f"--worker-resources: {name} must be a number, got {amount!r}")
        if not (math.isfinite(amount) and amount > 0):
            raise InputError(f"--worker-resources: {name} must be > 0, got {amount!r}")
        out[name] = float(amount)
    return out


# ---- Ray set-up ----------------------------------------------------------------------------
def _runtime_env(cluster: ClusterSettings) -> dict[str, Any] | None:
    """``--ship-code``: this checkout's signgen and pipelines travel to the workers."""
    if not cluster.ship_code:
        return None
    import pipelines
    import signgen

    return {
        "py_modules": [str(Path(signgen.__file__).parent), str(Path(pipelines.__file__).parent)]
    }


def worker_resources(cluster: ClusterSettings) -> tuple[float, float, int]:
    """(num_cpus, num_gpus, torch threads) of one model actor.

    CPU actors share the cluster's CPUs minus what the read stage needs, so that reading
    is never starved by the model stage (the reason for fractional CPUs on small machines).
    """
    import ray

    if cluster.cpus_per_worker is not None:
        cpus = float(cluster.cpus_per_worker)
    elif cluster.gpus_per_worker > 0:
        cpus = 1.0
    else:
        total = float(ray.cluster_resources().get("CPU", 1.0))
        need = cluster.worker_resources or {}
        # An actor must fit on one node, and on a node that offers its custom resources.
        biggest = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]
                       and all(n["Resources"].get(k, 0.0) >= v for k, v in need.items())),
                      default=total)  # fmt: skip
        cpus = min(max(0.1, (total - cluster.read_cpus) / cluster.workers), biggest)
        cpus = math.floor(cpus * 100) / 100
    threads = cluster.threads_per_worker or max(1, round(cpus))
    return cpus, float(cluster.gpus_per_worker), threads


# ---- stage 2: model (actor pool) -----------------------------------------------------------
class FrameRenderer:
    """Model stage: loads the pipeline once per actor; maps a batch of frame rows (any mix
    of clips) to a batch of rendered frames."""

    def __init__(self, settings: RenderSettings, device: str, threads: int | None = None) -> None:
        import torch

        from signgen.runtime import quiet_libraries
        from signgen.sampling.pipeline import FPDMPipeline, load_default_pipeline

        if threads and device == "cpu":
            torch.set_num_threads(int(threads))
        quiet_libraries()
        if settings.model:
            self.pipe = FPDMPipeline.from_pretrained(settings.model, device=device,
                                                     dtype=settings.dtype)  # fmt: skip
        else:
            self.pipe, trained = load_default_pipeline(device=device, dtype=settings.dtype)
            if not trained:
                logger.warning("no bundled demo model: rendering with a tiny UNTRAINED model")
        self.options = settings
        self.pipe.guidance_plan(settings)  # options against the model, once per actor
        from signgen.speed import apply_render_options

        apply_render_options(self.pipe, settings)  # GPU speed options, once per actor
        self.sources: OrderedDict[str, Any] = OrderedDict()

    def _source(self, clip_id: str, png: bytes, points: np.ndarray) -> tuple[Any, float]:
        """The clip's prepared first frame (``ClipSource``: encoding + bound post-processors)
        from the LRU cache, or prepared now; (clip, seconds)."""
        if clip_id in self.sources:
            self.sources.move_to_end(clip_id)
            return self.sources[clip_id], 0.0
        import cv2

        t0 = time.perf_counter()
        bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        rgb = np.ascontiguousarray(bgr[..., ::-1])  # (H, W, 3)
        focal = self.pipe.focal_adapter is not None
        src = self.pipe.prepare_clip(rgb, self.options, np.asarray(points) if focal else None)
        self.sources[clip_id] = src
        while len(self.sources) > SOURCE_CACHE_SIZE:
            self.sources.popitem(last=False)
        return src, time.perf_counter() - t0

    def _sources(self, batch: dict[str, np.ndarray], rows) -> tuple[list[Any], list[float]]:
        """The prepared first frames of the batch's ``rows`` and the seconds each took."""
        found = [self._source(str(batch["clip_id"][i]), batch["source_png"][i],
                              batch["source_points"][i]) for i in rows]  # fmt: skip
        return [src for src, _ in found], [secs for _, secs in found]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["clip_id"])
        frames = np.empty(n, dtype=object)
        frames[:] = [b""] * n
        height = np.zeros(n, np.int64)
        width = np.zeros(n, np.int64)
        source_s = np.zeros(n, np.float64)
        model_s = np.zeros(n, np.float64)
        ok = np.flatnonzero(np.asarray([e == "" for e in batch["error"]]))
        if len(ok):
            sources, source_s[ok] = self._sources(batch, ok)
            t0 = time.perf_counter()
            out = self.pipe.render_frames(
                sources,
                np.stack([batch["points"][i] for i in ok]),  # (b, 133, 3)
                [int(batch["frame_index"][i]) for i in ok],
                self.options,
                seed=[int(batch["seed"][i]) for i in ok],
            )
            per_frame = (time.perf_counter() - t0) / len(ok)
            for i, frame in zip(ok, out, strict=True):
                frames[i] = np.ascontiguousarray(frame).tobytes()  # (H, W, 3) uint8
                height[i], width[i] = frame.shape[:2]
                model_s[i] = per_frame
        done_at = np.full(n, time.time())  # wall clock, for throughput without start-up
        return {
            "clip_id": batch["clip_id"],
            "frame_index": batch["frame_index"],
            "num_frames": batch["num_frames"],
            "fps": batch["fps"],
            "seed": batch["seed"],
            "error": batch["error"],
            "frame": frames,
            "height": height,
            "width": width,
            "read_s": batch["read_s"],
            "retarget": batch["retarget"],  # passed through to the ledger
            "source_s": source_s,
            "model_s": model_s,
            "done_at": done_at,
        }


class ClipRenderer(FrameRenderer):
    """Model stage of temporal jobs (``--temporal``, docs/temporal.md): maps a batch of CLIP
    rows (:func:`read_clip` with ``temporal=True``) to frame rows like
    :class:`FrameRenderer`'s, through the same ``FPDMPipeline.render_clips`` call that
    ``signgen render --temporal`` makes. The clips of a batch are denoised together (the
    windows of several clips share a model call, ``batch_size // W`` windows per call, as
    frames of several clips share one in per-frame jobs); a clip's frames do not depend on
    the clips it shares calls with (up to float rounding). A generator: frames leave in
    batches of ``batch_size`` frames of one clip as they are decoded."""

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        n = len(batch["clip_id"])
        bad = [i for i in range(n) if batch["error"][i] != ""]
        ok = [i for i in range(n) if batch["error"][i] == ""]
        if bad:  # passed through: the driver records the clip as failed
            yield self._frames_out(batch, bad, [-1] * len(bad), [b""] * len(bad), (0, 0))
        if not ok:
            return
        sources, seconds = self._sources(batch, ok)
        source_s = dict(zip(ok, seconds, strict=True))
        points = [np.frombuffer(batch["clip_points"][i], np.float32).reshape(-1, 133, 3)
                  for i in ok]  # (T_k, 133, 3) per clip  # fmt: skip
        done = [0] * len(ok)  # frames of each clip out so far
        t0 = time.perf_counter()
        clips = self.pipe.render_clips(sources, points, self.options,
                                       seeds=[int(batch["seed"][i]) for i in ok])  # fmt: skip
        for k, frames in clips:  # frames (b, H, W, 3) uint8 of clip k, in frame order
            i, b = ok[k], len(frames)
            out = self._frames_out(
                batch, [i] * b, list(range(done[k], done[k] + b)),
                [np.ascontiguousarray(f).tobytes() for f in frames], frames.shape[1:3],
            )  # fmt: skip
            out["model_s"][:] = (time.perf_counter() - t0) / b
            if done[k] == 0:  # per-clip costs, counted once
                out["source_s"][0] = source_s[i]
            else:
                out["read_s"][0] = 0.0
            out["read_s"][1:] = 0.0
            done[k] += b
            yield out
            t0 = time.perf_counter()

    @staticmethod
    def _frames_out(batch, rows, frame_index, frames, size) -> dict[str, np.ndarray]:
        """Frame rows (the columns of :meth:`FrameRenderer.__call__`): output row j is frame
        ``frame_index[j]`` (bytes ``frames[j]``, ``size`` (H, W)) of input row ``rows[j]``."""
        m = len(rows)
        col = {k: batch[k][rows] for k in ("clip_id", "num_frames", "fps", "seed", "error",
                                          "retarget")}  # fmt: skip
        data = np.empty(m, dtype=object)
        data[:] = frames
        return {
            **col,
            "frame_index": np.asarray(frame_index, np.int64),
            "frame": data,
            "height": np.full(m, size[0], np.int64),
            "width": np.full(m, size[1], np.int64),
            "read_s": np.asarray(batch["read_s"][rows], np.float64).copy(),
            "source_s": np.zeros(m, np.float64),
            "model_s": np.zeros(m, np.float64),
            "done_at": np.full(m, time.time()),
        }


def build_dataset(
    specs: Sequence[ClipSpec],
    render: RenderSettings,
    cluster: ClusterSettings,
    renderer: type[FrameRenderer] = FrameRenderer,
    pose_backend: str = "auto",
):
    """The lazy Ray Dataset of rendered frame rows (read -> model); nothing runs yet.

    ``renderer`` is the model stage's callable class: :class:`FrameRenderer`, or a subclass
    with the same constructor (the tests' crashing actor). ``pose_backend``: the pose model
    of the read stage for clips retargeted onto keypoints extracted from their first frame.

    Temporal renders (``render.temporal``) read one row per clip and render with
    :class:`ClipRenderer` (for ``renderer`` left at :class:`FrameRenderer`): an actor call
    takes up to ``cluster.batch_size`` clips, and ``cluster.batch_size`` frames go through
    each model call (``batch_size // W`` windows), as ``signgen render --batch-size``.
    """
    import ray

    temporal = render.temporal
    if temporal:
        render = dataclasses.replace(render, batch_size=cluster.batch_size)
        renderer = ClipRenderer if renderer is FrameRenderer else renderer
    cpus, gpus, threads = worker_resources(cluster)
    items = [asdict(s) for s in specs]
    # One read task per clip (a clip's frames form one block, so batches mix few clips);
    # very long manifests are grouped to keep the number of blocks reasonable.
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 20_000)))
    ds = ds.flat_map(read_clip, fn_kwargs={"pose_backend": pose_backend, "temporal": temporal},
                     num_cpus=cluster.read_cpus)  # fmt: skip
    remote_args: dict[str, Any] = {"num_gpus": gpus} if gpus > 0 else {}
    if cluster.worker_resources:
        remote_args["resources"] = dict(cluster.worker_resources)
    return ds.map_batches(
        renderer,
        fn_constructor_kwargs={
            "settings": render,
            "device": cluster.worker_device,
            "threads": threads,
        },
        batch_size=cluster.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cluster.workers),
        num_cpus=cpus,
        # A crashed actor is restarted and its batch retried: Ray Data gives actor pools
        # max_restarts=-1 and max_task_retries=-1 unless told otherwise (passing them again
        # is deprecated). Rows carry their seeds, so a retried batch gives the same frames.
        **remote_args,
    )


# ---- stage 3: write (driver) -----------------------------------------------------------------
class ClipSink(Protocol):
    """Where finished clips go: frames are staged as they arrive, committed atomically."""

    def output_path(self, clip_id: str) -> Path: ...

    def cleanup(self) -> None: ...

    def put(self, clip_id: str, index: int, frame: np.ndarray) -> None: ...

    def commit(self, clip_id: str, num_frames: int, fps: float) -> Path: ...

    def discard(self, clip_id: str) -> None: ...


class Mp4Sink:
    """``DIR/<clip_id>.mp4``: frames are spooled to ``DIR/.spool/<clip_id>/`` as .npy
    (the driver keeps no frame in memory, whatever the arrival order) and encoded in
    order by :class:`~signgen.video.VideoWriter` (atomic) once the clip is complete."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.dir = Path(out_dir)
        self.spool = self.dir / SPOOL_DIR

    def output_path(self, clip_id: str) -> Path:
        return self.dir / f"{clip_id}.mp4"

    def cleanup(self) -> None:
        """Remove what a killed run left: the spool and temporary video files."""
        shutil.rmtree(self.spool, ignore_errors=True)
        for tmp in self.dir.glob(".*.part.mp4"):
            tmp.unlink(missing_ok=True)

    def put(self, clip_id: str, index: int, frame: np.ndarray) -> None:
        d = self.spool / clip_id
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / f"{index:06d}.npy", frame, allow_pickle=False)

    def commit(self, clip_id: str, num_frames: int, fps: float) -> Path:
        from signgen.video import VideoWriter

        d = self.spool / clip_id
        out = self.output_path(clip_id)
        with VideoWriter(out, fps=fps) as writer:
            for i in range(num_frames):
                writer.write(np.load(d / f"{i:06d}.npy", allow_pickle=False))
        shutil.rmtree(d, ignore_errors=True)
        return out

    def discard(self, clip_id: str) -> None:
        shutil.rmtree(self.spool / clip_id, ignore_errors=True)


@dataclass
class JobResult:
    """What a job did (this run only; earlier runs are in the ledger)."""

    total: int = 0  # clips in the manifest
    skipped: int = 0  # already finished by an earlier run
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # clip_id -> reason
    frames: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed over frames/clips
    first_row_s: float | None = None  # start-up: until the first row reached the driver
    # Model-stage window (wall clock of the actors): first and last batch finished, and the
    # frames of that first batch; steady frames/s = (frames - first) / (last - first).
    model_window: list[float] = field(default_factory=lambda: [math.inf, -math.inf, 0])

    def note_batch_done(self, at: float) -> None:
        """Widen the model-stage window with one frame whose batch finished at ``at``."""
        first, last, n_first = self.model_window
        if at < first:
            first, n_first = at, 1
        elif at == first:
            n_first += 1
        self.model_window = [first, max(last, at), n_first]

    @property
    def steady_fps(self) -> float | None:
        first, last, n_first = self.model_window
        if not last > first:
            return None
        return (self.frames - n_first) / (last - first)

    @property
    def exit_code(self) -> int:
        return EXIT_CLIPS_FAILED if self.failed else 0


def retarget_fingerprint(specs: Sequence[ClipSpec]) -> dict[str, Any] | None:
    """What retargeted clips of ``specs`` depend on besides their own inputs, for job.json:
    the confidence threshold and, when a clip's reference is extracted from its first
    frame, the pose backend (``auto`` resolved here, on the driver, so that every read task
    of the job uses the same model). None when no clip is retargeted."""
    from signgen.keypoints.retarget import DEFAULT_MIN_SCORE

    if not any(s.retarget for s in specs):
        return None
    out: dict[str, Any] = {"min_score": DEFAULT_MIN_SCORE}
    if any(s.retarget and not s.source_keypoints for s in specs):
        from signgen.keypoints.first_frame import resolve_backend

        out["pose_backend"] = resolve_backend("auto")[0]
    return out


def check_temporal_model(render: RenderSettings) -> None:
    """``--temporal`` with a local model folder that has no motion module: one line on the
    driver, before Ray starts (the actors check the window against the module itself)."""
    if not render.temporal:
        return
    from signgen.sampling.loading import MOTION_MODULE, default_model_path

    root = Path(render.model) if render.model else default_model_path()
    if not root.is_dir():
        return  # a hub id in the cache: the actors check it
    config = root / MOTION_MODULE / "config.json"
    if not config.is_file():
        raise InputError(
            f"--temporal needs a model with a motion module ({root}/{MOTION_MODULE}/, trained "
            "by `signgen train motion`); this model has none"
        )
    try:
        most = int(json.loads(config.read_text())["motion_max_seq_length"])
    except (ValueError, KeyError, TypeError):
        return  # unreadable here: the actors' loader reports it
    if render.window is not None and render.window > most:
        raise InputError(
            f"window {render.window} is longer than this motion module's {most} frames"
        )


def check_job_file(
    out_dir: Path, render: RenderSettings, retarget: dict[str, Any] | None = None
) -> None:
    """Record the render settings in DIR/job.json; a re-run with other settings would mix
    clips rendered two ways in one folder, so it is refused.

    ``retarget`` (:func:`retarget_fingerprint`) is recorded next to them. Its entries may be
    added by a later run (a first job without retargeted clips, a later one with some) but
    never changed."""
    path = out_dir / JOB_FILE
    now = render.fingerprint()
    if path.exists():
        try:
            doc = json.loads(path.read_text())
            before = doc["render"]
        except (json.JSONDecodeError, KeyError, TypeError):
            doc = before = None
        if before is not None and before != now:
            keys = [*now, *(k for k in before if k not in now)]  # e.g. temporal, dropped
            diff = ", ".join(
                f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
                for k in keys
                if before.get(k) != now.get(k)
            )
            raise InputError(
                f"{out_dir} holds clips rendered with other settings ({diff}); use another "
                f"output folder, or delete {path} and the ledger to start over"
            )
        if retarget and doc is not None:
            had = doc.get("retarget") or {}
            diff = ", ".join(f"retarget {k}: {had[k]!r} -> {v!r}"
                             for k, v in retarget.items() if k in had and had[k] != v)  # fmt: skip
            if diff:
                raise InputError(
                    f"{out_dir} holds clips retargeted with other settings ({diff}); use "
                    f"another output folder, or delete {path} and the ledger to start over"
                )
            if any(k not in had for k in retarget):
                doc["retarget"] = {**had, **retarget}
                atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
        return
    doc = {"render": now, **({"retarget": retarget} if retarget else {})}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


# Over 80 lines: the driver's loop over arriving rows keeps the ledger, the sink, the
# progress bar and the stage timings in step for each row; the steps share that state.
def run_job(
    specs: Sequence[ClipSpec],
    sink: ClipSink,
    ledger_dir: str | os.PathLike,
    render: RenderSettings,
    cluster: ClusterSettings,
    *,
    progress: bool = True,
    renderer: type[FrameRenderer] = FrameRenderer,
) -> JobResult:
    """Render every clip of ``specs`` not yet finished in the ledger of ``ledger_dir``.

    Resumable: a finished clip is skipped, a killed run is picked up by the next one.
    A clip with bad inputs is recorded as failed (``result.failed``) and the job goes on.
    ``renderer``: the model stage's class (see :func:`build_dataset`).
    """
    # Over 80 lines on purpose: the driver's receive loop updates the ledger, the sink, the
    # progress bar and the stage timings for every row; kept in one place so the order
    # (stage the frame, commit the clip, then record it in the ledger) stays visible.
    from tqdm.auto import tqdm

    from pipelines.ledger import Ledger
    from pipelines.ray_cluster import quiet_ray_data, ray_session
    from signgen.fileio import refuse_overwriting_inputs

    cluster.validate()  # the render settings were validated when made
    check_temporal_model(render)
    ids = [s.clip_id for s in specs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"clip_id {dup!r} appears twice")
    for s in specs:  # before anything is written: an output must never replace an input
        refuse_overwriting_inputs(sink.output_path(s.clip_id), {
            f"clip {s.clip_id}'s video": s.video, f"clip {s.clip_id}'s keypoints": s.keypoints})  # fmt: skip
    result = JobResult(total=len(specs))
    t_start = time.perf_counter()
    out_dir = Path(ledger_dir)
    retarget = retarget_fingerprint(specs)
    with Ledger(out_dir) as ledger:
        check_job_file(out_dir, render, retarget)
        sink.cleanup()
        todo = [s for s in specs if not ledger.is_done(s.clip_id, sink.output_path(s.clip_id))]
        result.skipped = len(specs) - len(todo)
        if not todo:
            return result
        by_id = {s.clip_id: s for s in todo}
        received: dict[str, set[int]] = {}
        stages = {"read": 0.0, "source": 0.0, "model": 0.0, "write": 0.0}
        bar = tqdm(total=len(todo), unit="clip", desc="render-many", file=sys.stderr,
                   dynamic_ncols=True, disable=not progress)  # fmt: skip
        try:
            with ray_session(cluster.address, num_cpus=cluster.num_cpus,
                             object_store_memory=cluster.object_store_memory,
                             runtime_env=_runtime_env(cluster)):  # fmt: skip
                quiet_ray_data()
                backend = (retarget or {}).get("pose_backend", "auto")
                ds = build_dataset(todo, render, cluster, renderer, pose_backend=backend)
                for row in ds.iter_rows():
                    if result.first_row_s is None:
                        result.first_row_s = time.perf_counter() - t_start
                    cid = str(row["clip_id"])
                    if cid not in by_id:
                        continue  # already finished or failed (a retried read may repeat rows)
                    stages["read"] += float(row["read_s"])
                    if row["error"]:
                        ledger.fail(cid, str(row["error"]))
                        result.failed[cid] = str(row["error"])
                        sink.discard(cid)
                        del by_id[cid]
                        bar.update(1)
                        continue
                    result.note_batch_done(float(row["done_at"]))
                    stages["source"] += float(row["source_s"])
                    stages["model"] += float(row["model_s"])
                    h, w = int(row["height"]), int(row["width"])
                    frame = np.frombuffer(row["frame"], np.uint8).reshape(h, w, 3)  # (H, W, 3)
                    idx, n = int(row["frame_index"]), int(row["num_frames"])
                    t0 = time.perf_counter()
                    sink.put(cid, idx, frame)
                    got = received.setdefault(cid, set())
                    got.add(idx)  # a set: a frame delivered twice is written once
                    if len(got) == n:
                        out = sink.commit(cid, n, float(row["fps"]))
                        fit = {"retarget": json.loads(row["retarget"])} if row["retarget"] else {}
                        ledger.done(cid, output=os.path.relpath(out, out_dir), frames=n,
                                    seed=int(row["seed"]), **fit)  # fmt: skip
                        result.done.append(cid)
                        result.frames += n
                        del by_id[cid], received[cid]
                        bar.update(1)
                    stages["write"] += time.perf_counter() - t0
                    rendered = result.frames + sum(map(len, received.values()))
                    rate = rendered / (time.perf_counter() - t_start)
                    bar.set_postfix_str(f"{rate:.2f} frames/s", refresh=False)
        except BaseException:
            # Disk full, Ctrl-C, a lost cluster: the staged frames of unfinished clips go
            # (the next run renders those clips again); finished clips stay.
            sink.cleanup()
            raise
        finally:
            bar.close()
        for cid in list(by_id):  # cannot happen unless Ray dropped rows; never silent
            reason = f"incomplete: {len(received.get(cid, ()))} frames arrived"
            ledger.fail(cid, reason)
            result.failed[cid] = reason
        sink.cleanup()  # every clip is committed or failed now: drop the staging area
    result.seconds = time.perf_counter() - t_start
    result.stage_seconds = stages
    return result


def summarize(result: JobResult, what: str = "clips") -> list[str]:
    """Lines for the end of a run: counts, speed, and every failure with its reason."""
    lines = [
        f"{len(result.done)} {what} rendered ({result.frames} frames in {result.seconds:.1f} s"
        + (f", {result.frames / result.seconds:.2f} frames/s" if result.seconds else "")
        + f"), {result.skipped} already done, {len(result.failed)} failed"
    ]
    for cid, reason in sorted(result.failed.items()):
        lines.append(f"FAILED {cid}: {reason}")
    return lines
