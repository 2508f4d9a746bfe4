"""``signgen evaluate``: per-frame metrics of generated vs ground-truth videos.

Steps (the single-process path; with ``workers``/``address`` step 3 runs on Ray workers
through the ``distributed`` runner the app layer passes in, ``pipelines.evaluate.
ray_results``, and its results go through the same steps 4-5):

1. check the inputs: match videos, count frames, read signers (no model loaded yet);
2. load the metric models once (:class:`FrameEvaluator`);
3. per video, stream frames in batches of ``batch_size``: SSIM, PSNR, LPIPS, hand metrics
   and the frame-to-frame differences per frame; Inception features for FID; for FVD the
   clip's first 16 frames are kept (never more) and turn into one I3D feature per clip;
4. gather: per-frame rows, FID and FVD feature statistics (float64 sums), per-clip flicker
   and temporal consistency;
5. write the table atomically (csv or parquet by extension) and ``OUT.summary.json``.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import logging
import math
import os
import platform
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from signgen.devices import resolve_device
from signgen.errors import InputError
from signgen.fileio import atomic_path, atomic_write_text
from signgen.metrics import ALL_METRICS, DEFAULT_METRICS, KNOWN_METRICS
from signgen.metrics import fid as fidlib
from signgen.metrics.hand import (
    HAND_PE_COLUMNS,
    HAND_PE_DETECTORS,
    HandKeypointDetector,
    hand_crop_boxes,
    hand_pose_error,
    hand_ssim,
    load_hand_detector,
)
from signgen.metrics.io import (
    KeypointStore,
    VideoPair,
    iter_video_frames,
    match_videos,
    read_corpus,
    resize_frame,
    signer_of,
)
from signgen.metrics.ssim import SSIM_VARIANTS, psnr, ssim_uint8
from signgen.metrics.video import FVD_FRAMES, FVDStats, file_sha256, load_fvd, load_i3d

log = logging.getLogger(__name__)

SUMMARY_SUFFIX = ".summary.json"


@dataclass
class EvalConfig:
    """Everything ``signgen evaluate`` needs; the CLI fills it from its options."""

    pred: str
    gt: str
    output: str
    metrics: tuple[str, ...] = DEFAULT_METRICS
    corpus: str | None = None
    keypoints: str | None = None
    sample_key: str = "{video}"
    size: tuple[int, int] | None = None  # (H, W); None: the ground-truth frame size
    batch_size: int = 16
    device: str = "auto"
    lpips_weights: str | None = None
    fid_weights: str | None = None
    fid_variant: str = "standard"
    fid_cache: str | None = None  # folder for cached real-set statistics; None: no cache
    fvd_weights: str | None = None  # I3D state dict (signgen.metrics.video.load_i3d)
    hand_config: str | None = None
    hand_checkpoint: str | None = None
    hand_detector: str = "hrnetv2"  # Hand PE detector, reported as HAND_PE_DETECTORS[it]
    min_keypoint_score: float = 0.0

    def check(self) -> None:
        unknown = [m for m in self.metrics if m not in KNOWN_METRICS]
        if unknown or not self.metrics:
            raise InputError(
                f"--metrics: unknown {unknown or 'empty list'}; choose from {','.join(KNOWN_METRICS)}"
            )
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.size is not None and min(self.size) < 1:
            raise InputError(f"--size must be positive HxW, got {self.size}")
        if {"hand_ssim", "hand_pe"} & set(self.metrics) and not self.keypoints:
            raise InputError(
                "hand_ssim/hand_pe need the ground-truth keypoints: pass --keypoints "
                "(an MSKA pickle or a folder of signgen JSON named by video)"
            )
        if "fvd" in self.metrics and not self.fvd_weights:
            raise InputError(
                "fvd needs the I3D weights: pass --fvd-weights PATH, a local state dict of the "
                "PyTorch I3D port (Kinetics-400 RGB, e.g. i3d_pretrained_400.pt)"
            )
        suffix = Path(self.output).suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise InputError(f"-o must end in .csv or .parquet, got {self.output}")
        if self.hand_detector not in HAND_PE_DETECTORS:
            raise InputError(
                f"--hand-detector must be one of {', '.join(HAND_PE_DETECTORS)}, "
                f"got {self.hand_detector}"
            )
        if self.hand_detector == "mediapipe" and (self.hand_config or self.hand_checkpoint):
            raise InputError(
                "--hand-config/--hand-checkpoint are the HRNetv2 hand model's; "
                "--hand-detector mediapipe takes none"
            )
        if self.fid_variant not in fidlib.FID_VARIANTS:
            raise InputError(
                f"--fid-variant must be one of {sorted(fidlib.FID_VARIANTS)}, got {self.fid_variant}"
            )


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``'260x210'`` -> (260, 210) as (H, W)."""
    if not text:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must look like HxW (e.g. 260x210), got {text!r}") from None
    return h, w


# --------------------------------------------------------------------------- step 1


@dataclass
class EvalPlan:
    pairs: list[VideoPair]
    total_frames: int
    mismatches: list[str]


def plan_evaluation(config: EvalConfig) -> EvalPlan:
    """Match videos, read signers; everything that can fail on user input fails here."""
    config.check()
    pairs = match_videos(config.pred, config.gt)
    corpus = read_corpus(config.corpus) if config.corpus else None
    for p in pairs:
        p.signer = signer_of(p.key, corpus)
    if config.keypoints:
        KeypointStore(config.keypoints, config.sample_key)  # existence check
    empty = [p.key for p in pairs if p.num_frames == 0]
    if empty:
        raise InputError(f"videos without frames: {', '.join(empty[:10])}")
    mismatches = [p.mismatch for p in pairs if p.mismatch]
    if "fvd" in config.metrics:
        long_enough = sum(p.num_frames >= FVD_FRAMES for p in pairs)
        if long_enough < 2:
            raise InputError(
                f"fvd needs at least 2 videos of {FVD_FRAMES}+ frames (its clips are their "
                f"first {FVD_FRAMES} frames); {long_enough} of {len(pairs)} have that many"
            )
    _check_weights(config)  # last: the I3D weights are loaded to check them
    return EvalPlan(pairs, sum(p.num_frames for p in pairs), mismatches)


def _check_weights(config: EvalConfig) -> None:
    """Fail on a missing weights file before any work (the loaders re-check and load)."""
    from signgen.errors import MissingWeightsError

    if "fid" in config.metrics:
        v = fidlib.FID_VARIANTS[config.fid_variant]
        if not config.fid_weights or not Path(config.fid_weights).is_file():
            fidlib.load_inception_state_dict(config.fid_weights, v)  # raises MissingWeightsError
    if "lpips" in config.metrics:
        from signgen.metrics.perceptual import ALEXNET_FILE, ALEXNET_URL

        if not config.lpips_weights or not Path(config.lpips_weights).is_file():
            raise MissingWeightsError(
                f"lpips needs the torchvision AlexNet backbone {ALEXNET_FILE}: download it "
                f"on a machine with internet from {ALEXNET_URL} and pass --lpips-weights PATH"
            )
    if "hand_pe" in config.metrics:
        hand_files = {
            "--hand-config": config.hand_config,
            "--hand-checkpoint": config.hand_checkpoint,
        }
        for opt, path in hand_files.items():
            if path and not Path(path).is_file():
                raise MissingWeightsError(f"{opt} not found: {path}")
    if "fvd" in config.metrics:
        # Loaded here, on the driver, so that a wrong file is one line before any work
        # (Ray workers load it again); the real network's weights take about a second.
        load_i3d(config.fvd_weights)  # MissingWeightsError / FormatError


# --------------------------------------------------------------------------- step 2-3


@dataclass
class BatchResult:
    """Metrics of consecutive frames of one video."""

    rows: dict[str, np.ndarray]  # column -> (N,)
    pred_feats: np.ndarray | None = None  # (N, 2048) float32
    gt_feats: np.ndarray | None = None  # (N, 2048) float32
    hands_skipped: int = 0
    # FVD: I3D features (K, D) float64 of the K clips whose first FVD_FRAMES frames ended in
    # this batch (K is 0 or 1 per video), and the clips too short for FVD.
    fvd_pred_feats: np.ndarray | None = None
    fvd_gt_feats: np.ndarray | None = None
    fvd_skipped: int = 0


def _batched(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while batch := list(islice(it, n)):
        yield batch


class FrameEvaluator:
    """Holds the metric models; turns one video pair into :class:`BatchResult` chunks."""

    def __init__(
        self,
        config: EvalConfig,
        hand_detector: HandKeypointDetector | None = None,
        need_gt_features: bool = True,
    ) -> None:
        self.config = config
        self.metrics = tuple(config.metrics)
        self.device = str(resolve_device(config.device))  # the metric libraries take text
        self.lpips = None
        self.inception = None
        self.fvd: FVDStats | None = None
        self.need_gt_features = need_gt_features
        if "lpips" in self.metrics:
            from signgen.metrics.perceptual import LPIPSMetric

            self.lpips = LPIPSMetric(config.lpips_weights, self.device)
        if "fid" in self.metrics:
            self.inception = fidlib.InceptionFeatures(
                config.fid_variant, config.fid_weights, self.device
            )
        if "fvd" in self.metrics:
            self.fvd = load_fvd(config.fvd_weights, self.device)
        self.detector = hand_detector
        if "hand_pe" in self.metrics and self.detector is None:
            self.detector = load_hand_detector(
                config.hand_config, config.hand_checkpoint, self.device, config.hand_detector
            )
        self.keypoints = (
            KeypointStore(config.keypoints, config.sample_key) if config.keypoints else None
        )
        self._gt_size: tuple[int, int] | None = None

    def _frames(self, pair: VideoPair) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        size = self.config.size
        pairs = zip(iter_video_frames(pair.pred), iter_video_frames(pair.gt))
        for i, (p, g) in enumerate(pairs):
            if i >= pair.num_frames:
                break
            self._gt_size = (g.shape[1], g.shape[0])  # (W, H) before resizing
            target = size or g.shape[:2]
            yield resize_frame(p, target), resize_frame(g, target)

    def evaluate_video(self, pair: VideoPair) -> Iterator[BatchResult]:
        need_kp = self.keypoints is not None and {"hand_ssim", "hand_pe"} & set(self.metrics)
        seq = None
        prev_p = prev_g = None
        start = 0
        # FVD keeps the clip's first FVD_FRAMES frames (the clip it scores), nothing more.
        fvd = self.fvd is not None and pair.num_frames >= self.fvd.clip_frames
        fvd_p: list[np.ndarray] = []
        fvd_g: list[np.ndarray] = []
        for batch in _batched(self._frames(pair), self.config.batch_size):
            if need_kp and start == 0:  # GT keypoints are in the GT frames' pixel space
                seq = self.keypoints.get(pair.key, size=self._gt_size)
            pred_np = np.stack([b[0] for b in batch])  # (B, H, W, 3) uint8
            gt_np = np.stack([b[1] for b in batch])
            res = self._evaluate_batch(pair, start, pred_np, gt_np, seq, prev_p, prev_g)
            if self.fvd is not None and start == 0 and not fvd:
                res.fvd_skipped = 1  # known from the frame count: StyleGAN-V drops it too
            if fvd and len(fvd_p) < self.fvd.clip_frames:
                need = self.fvd.clip_frames - len(fvd_p)
                fvd_p.extend(pred_np[:need])
                fvd_g.extend(gt_np[:need])
                if len(fvd_p) == self.fvd.clip_frames:
                    res.fvd_pred_feats = self.fvd.features(np.stack(fvd_p))[None]  # (1, D)
                    res.fvd_gt_feats = self.fvd.features(np.stack(fvd_g))[None]
                    fvd_p, fvd_g = [], []
                    fvd = False
            # The clip's last two frames so far: flicker and temporal consistency stream.
            prev_p = _last_two(prev_p, pred_np)
            prev_g = _last_two(prev_g, gt_np)
            start += len(batch)
            yield res

    @torch.no_grad()
    def _evaluate_batch(self, pair, start, pred_np, gt_np, seq, prev_p, prev_g) -> BatchResult:
        b, h, w = pred_np.shape[:3]
        m = set(self.metrics)
        dev = self.device
        # (B, 3, H, W) uint8 on the metric device
        pred = torch.from_numpy(pred_np).to(dev).permute(0, 3, 1, 2)
        gt = torch.from_numpy(gt_np).to(dev).permute(0, 3, 1, 2)
        rows: dict[str, np.ndarray] = {
            "video": np.array([pair.key] * b, dtype=object),
            "signer": np.array([pair.signer] * b, dtype=object),
            "frame": np.arange(start, start + b, dtype=np.int64),
        }
        for name in ("ssim", "ssim_df", "ssim_256"):
            if name in m:
                rows[name] = ssim_uint8(pred, gt, SSIM_VARIANTS[name]).cpu().numpy()
        if "psnr" in m:
            rows["psnr"] = psnr(pred, gt).cpu().numpy()
        if self.lpips is not None:
            rows["lpips"] = self.lpips(pred, gt).numpy()
        out = BatchResult(rows)
        if {"hand_ssim", "hand_pe"} & m:
            boxes = np.full((b, 2, 4), -1, dtype=np.int64)
            if seq is not None:
                seq = seq.rescaled(w, h) if (seq.width, seq.height) != (w, h) else seq
                for i in range(b):
                    t = start + i
                    if t < len(seq):
                        boxes[i] = hand_crop_boxes(
                            seq.points[t], h, w, self.config.min_keypoint_score
                        )
            present = (boxes[:, :, 0] >= 0).sum(axis=1)
            out.hands_skipped = int(2 * b - present.sum())
            if "hand_ssim" in m:
                score, n = hand_ssim(pred, gt, boxes)
                rows["hand_ssim"] = np.where(n.numpy() > 0, score.numpy(), np.nan)
                rows["hands"] = n.numpy()
            if "hand_pe" in m:
                err, n = hand_pose_error(self.detector, pred_np, gt_np, boxes)
                rows[HAND_PE_DETECTORS[self.config.hand_detector]] = err
                rows["hands_pe"] = n
        if "flicker" in m:
            rows["flicker"] = _frame_diffs(pred_np, None if prev_p is None else prev_p[-1])
            rows["flicker_gt"] = _frame_diffs(gt_np, None if prev_g is None else prev_g[-1])
            rows["consistency"] = _second_diffs(pred_np, prev_p)
            rows["consistency_gt"] = _second_diffs(gt_np, prev_g)
        if self.inception is not None:
            out.pred_feats = self.inception(pred).cpu().numpy()
            if self.need_gt_features:
                out.gt_feats = self.inception(gt).cpu().numpy()
        return out


def _last_two(prev: np.ndarray | None, frames: np.ndarray) -> np.ndarray:
    """The last two frames (or one, at a clip's start) of ``prev`` followed by ``frames``."""
    return frames[-2:] if prev is None else np.concatenate([prev, frames])[-2:]


def _second_diffs(frames: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
    """Temporal consistency of the frame before each frame t: mean |f_{t-1} - (f_{t-2} +
    f_t) / 2| (uint8 units; signgen.metrics.video.temporal_consistency, streamed over
    batches); NaN for a clip's first two frames. ``prev``: the clip's last (up to) two frames
    before ``frames``."""
    f = frames.astype(np.float32)  # (B, H, W, 3)
    k = 0 if prev is None else len(prev)
    allf = f if prev is None else np.concatenate([prev.astype(np.float32), f])  # (k+B, ...)
    out = np.full(len(f), np.nan)
    for i in range(len(f)):
        j = k + i  # index of frame t in allf
        if j >= 2:
            out[i] = np.abs(allf[j - 1] - (allf[j - 2] + allf[j]) / 2).mean(dtype=np.float64)
    return out


def _frame_diffs(frames: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
    """Mean |f_t - f_{t-1}| per frame (uint8 units); NaN for a clip's first frame."""
    f = frames.astype(np.int16)  # (B, H, W, 3)
    before = np.concatenate([f[:1] if prev is None else prev[None].astype(np.int16), f[:-1]])
    d = np.abs(f - before).reshape(len(f), -1).mean(axis=1).astype(np.float64)
    if prev is None:
        d[0] = np.nan
    return d


def clip_flicker(flicker: np.ndarray, flicker_gt: np.ndarray) -> tuple[float, float, float]:
    """Temporal flicker of a clip: mean frame-to-frame |difference| of the generated and
    the ground-truth clip, and their ratio (1 = as steady as the real video)."""
    fp = float(np.nanmean(flicker)) if np.isfinite(flicker).any() else math.nan
    fg = float(np.nanmean(flicker_gt)) if np.isfinite(flicker_gt).any() else math.nan
    ratio = fp / fg if fg and math.isfinite(fg) and fg > 0 else math.nan
    return fp, fg, ratio


# --------------------------------------------------------------------------- step 4-5


def implementations(config: EvalConfig) -> dict[str, str]:
    """The exact metric implementations and library versions behind each number."""
    import signgen

    def version(mod: str) -> str:
        try:
            from importlib.metadata import version as v

            return v(mod)
        except Exception:
            return "not installed"

    impl = {
        "signgen": signgen.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    for name in ("ssim", "ssim_df", "ssim_256"):
        if name in config.metrics:
            impl[name] = "signgen torch SSIM == " + SSIM_VARIANTS[name].description
    if "psnr" in config.metrics:
        impl["psnr"] = "skimage peak_signal_noise_ratio(data_range=255), float64, per frame"
    if "lpips" in config.metrics:
        impl["lpips"] = f"lpips {version('lpips')} LPIPS(net='alex', version='0.1'), [-1, 1]"
    if "fid" in config.metrics:
        v = fidlib.FID_VARIANTS[config.fid_variant]
        impl["fid"] = (
            f"{v.name}: {v.description}; pytorch-fid {version('pytorch-fid')}; Frechet "
            "distance float64 (eigh of S1^1/2 S2 S1^1/2)"
        )
    if "hand_ssim" in config.metrics:
        impl["hand_ssim"] = "ssim on 60x60 crops centred on GT keypoints 100/121, clamped"
    if "hand_pe" in config.metrics and config.hand_detector == "mediapipe":
        impl["hand_pe_mediapipe"] = (
            "mean |dx|+|dy| of 21 hand keypoints found by MediaPipe Hands "
            f"{version('mediapipe')} (static mode, full model) in a 120x120 window around each "
            "60x60 GT-knuckle crop; hands not found in both frames are left out. Not "
            "comparable with HRNetv2 hand_pe"
        )
    elif "hand_pe" in config.metrics:
        impl["hand_pe"] = (
            "mean |dx|+|dy| of 21 hand keypoints detected on the 60x60 GT-knuckle crops "
            f"(detector: {config.hand_config or 'injected'})"
        )
    if "flicker" in config.metrics:
        impl["flicker"] = (
            "mean |frame_t - frame_t-1| (uint8 units); ratio generated / GT; flicker error "
            "|generated - GT|; temporal consistency mean |f_t - (f_t-1 + f_t+1) / 2|"
        )
    return impl


def _mean(values: pd.Series, weights: pd.Series | None = None) -> float:
    v = values.to_numpy(dtype=np.float64)
    ok = np.isfinite(v)
    if weights is not None:
        wts = weights.to_numpy(dtype=np.float64)
        ok &= wts > 0
        return float((v[ok] * wts[ok]).sum() / wts[ok].sum()) if ok.any() else math.nan
    return float(v[ok].mean()) if ok.any() else math.nan


def aggregate(df: pd.DataFrame) -> dict[str, float]:
    """Mean of each per-frame metric (hand metrics weighted by the hands present)."""
    out: dict[str, float] = {}
    for col in ("ssim", "ssim_df", "ssim_256", "psnr", "lpips"):
        if col in df:
            out[col] = _mean(df[col])
    if "psnr" in df:
        out["psnr_infinite_frames"] = int(np.isinf(df["psnr"].to_numpy(dtype=float)).sum())
    if "hand_ssim" in df:
        out["hand_ssim"] = _mean(df["hand_ssim"], df["hands"])
    for col in HAND_PE_COLUMNS:
        if col in df:
            out[col] = _mean(df[col], df["hands_pe"])
    return out


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


def per_clip(df: pd.DataFrame) -> list[dict[str, Any]]:
    clips = []
    for (video, signer), g in df.groupby(["video", "signer"], sort=True):
        row: dict[str, Any] = {"video": video, "signer": signer, "frames": len(g)}
        row.update(aggregate(g))
        row.pop("psnr_infinite_frames", None)
        if "flicker" in g:
            fp, fg, ratio = clip_flicker(g["flicker"].to_numpy(), g["flicker_gt"].to_numpy())
            row.update(flicker=fp, flicker_gt=fg, flicker_ratio=ratio, flicker_error=abs(fp - fg))
        if "consistency" in g:  # signgen.metrics.video.video_metrics' names
            tc, tc_gt = (_nanmean(g[c].to_numpy()) for c in ("consistency", "consistency_gt"))
            row.update(temporal_consistency=tc, temporal_consistency_gt=tc_gt,
                       temporal_consistency_diff=tc - tc_gt)  # fmt: skip
        clips.append(row)
    return clips


# The per-clip temporal metrics (per_clip), averaged over clips (in all and per signer).
CLIP_METRICS = ("flicker", "flicker_gt", "flicker_ratio", "flicker_error", "temporal_consistency",
                "temporal_consistency_gt", "temporal_consistency_diff")  # fmt: skip


def clip_means(clips: list[dict[str, Any]]) -> dict[str, float]:
    """Mean over ``clips`` (rows of :func:`per_clip`) of each temporal metric they have."""
    keys = [k for k in CLIP_METRICS if clips and k in clips[0]]
    return {k: _nanmean(np.array([c[k] for c in clips], dtype=np.float64)) for k in keys}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def summary_path(output: str | Path) -> Path:
    """``metrics.csv`` -> ``metrics.summary.json`` (next to the table)."""
    return Path(output).with_suffix(SUMMARY_SUFFIX)


class Gatherer:
    """Collects :class:`BatchResult` chunks (from any process) and writes the outputs."""

    def __init__(self, config: EvalConfig, plan: EvalPlan, gt_stats=None) -> None:
        self.config = config
        self.plan = plan
        self.chunks: list[pd.DataFrame] = []
        self.pred_stats = fidlib.FeatureStats()
        self.gt_stats = fidlib.FeatureStats()
        self.cached_gt = gt_stats  # (mu, sigma, n) or None
        self.hands_skipped = 0
        self.fvd_stats: FVDStats | None = None
        if "fvd" in config.metrics:  # the features come computed (FrameEvaluator)
            self.fvd_stats = FVDStats(None, weights=file_sha256(config.fvd_weights))

    def add(self, res: BatchResult) -> int:
        self.chunks.append(pd.DataFrame(res.rows))
        if res.pred_feats is not None:
            self.pred_stats.update(res.pred_feats)
        if res.gt_feats is not None:
            self.gt_stats.update(res.gt_feats)
        self.hands_skipped += res.hands_skipped
        if self.fvd_stats is not None:
            self.fvd_stats.skipped += res.fvd_skipped
            if res.fvd_pred_feats is not None and len(res.fvd_pred_feats):
                self.fvd_stats.add_features(res.fvd_pred_feats, res.fvd_gt_feats)
        return len(res.rows["frame"])

    def table(self) -> pd.DataFrame:
        df = pd.concat(self.chunks, ignore_index=True) if self.chunks else pd.DataFrame()
        return df.sort_values(["video", "frame"], kind="stable").reset_index(drop=True)

    def fid(self) -> float | None:
        if "fid" not in self.config.metrics:
            return None
        mu1, s1 = self.pred_stats.mean_cov()
        if self.cached_gt is not None:
            mu2, s2, _ = self.cached_gt
        else:
            mu2, s2 = self.gt_stats.mean_cov()
        return fidlib.frechet_distance(mu1, s1, mu2, s2)

    def finish(self, command: str = "") -> dict[str, Any]:
        df = self.table()
        cfg = self.config
        summary: dict[str, Any] = {
            "schema": "signgen-eval-summary/1",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command,
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
            "pred": str(Path(cfg.pred).resolve()),
            "gt": str(Path(cfg.gt).resolve()),
            "size": list(cfg.size) if cfg.size else None,
            "metrics_requested": list(cfg.metrics),
            "frames": len(df),
            "videos": int(df["video"].nunique()) if len(df) else 0,
            "mean": aggregate(df),
            "fid": None,
            "fid_variant": cfg.fid_variant if "fid" in cfg.metrics else None,
            "fvd": None,
            "fvd_clips": None,  # clips FVD compared, and those left out as too short
            "fvd_skipped": None,
            "hands_skipped": self.hands_skipped
            if {"hand_ssim", "hand_pe"} & set(cfg.metrics)
            else None,
            "frame_count_mismatches": self.plan.mismatches,
            "implementations": implementations(cfg),
        }
        if "fid" in cfg.metrics:
            summary["fid"] = self.fid()
            summary["mean"]["fid"] = summary["fid"]
        if self.fvd_stats is not None:
            summary["fvd"] = summary["mean"]["fvd"] = self.fvd_stats.fvd()
            summary["fvd_clips"] = self.fvd_stats.pred.n
            summary["fvd_skipped"] = self.fvd_stats.skipped
            summary["implementations"]["fvd"] = (
                self.fvd_stats.describe() + f"; weights {Path(cfg.fvd_weights).name}"
            )
        clips = per_clip(df)
        summary["per_clip"] = clips
        if "flicker" in cfg.metrics:  # the per-clip temporal metrics, averaged over clips
            means = clip_means(clips)
            summary["mean"].update({k: means.get(k, math.nan) for k in CLIP_METRICS})
        summary["per_signer"] = (
            {str(s): {**aggregate(g), **clip_means([c for c in clips if c["signer"] == s])}
             for s, g in df.groupby("signer", sort=True)} if len(df) else {}
        )  # fmt: skip
        self._write(df, summary)
        return summary

    def _write(self, df: pd.DataFrame, summary: dict[str, Any]) -> None:
        out = Path(self.config.output)
        with atomic_path(out) as tmp:
            if out.suffix.lower() == ".parquet":
                df.to_parquet(tmp, index=False)
            else:
                df.to_csv(tmp, index=False)
        atomic_write_text(summary_path(out), json.dumps(_jsonable(summary), indent=2) + "\n")
        if "fid" in self.config.metrics and self.cached_gt is None and self.config.fid_cache:
            key = self.fid_cache_key()
            if key:
                self.gt_stats.save(
                    Path(self.config.fid_cache) / f"{key}.npz",
                    {"variant": self.config.fid_variant, "gt": summary["gt"]},
                )

    def fid_cache_key(self) -> str | None:
        return fid_cache_key(self.config, self.plan)


def fid_cache_key(config: EvalConfig, plan: EvalPlan) -> str | None:
    """Key of the real set: the GT files actually compared, the variant and the size."""
    files: list[str] = []
    for p in plan.pairs:
        if p.gt.is_folder:
            files.extend(str(f.resolve()) for f in (p.gt.frames or [])[: p.num_frames])
        else:
            files.append(f"{p.gt.path.resolve()}#{p.num_frames}")
    if not files:
        return None
    return (
        fidlib.cache_key([f.split("#")[0] for f in files], config.fid_variant, config.size)
        + f"-{sum(p.num_frames for p in plan.pairs)}"
    )


def load_cached_gt_stats(config: EvalConfig, plan: EvalPlan):
    if "fid" not in config.metrics or not config.fid_cache:
        return None
    key = fid_cache_key(config, plan)
    path = Path(config.fid_cache) / f"{key}.npz"
    if key and path.is_file():
        log.info("FID: using cached real-set statistics %s", path)
        return fidlib.load_stats(path)
    return None


def format_table(summary: dict[str, Any]) -> str:
    """The aggregate table printed at the end of ``signgen evaluate``."""
    lines = [f"{'metric':<22}{'value':>12}"]
    for k, v in summary["mean"].items():
        if isinstance(v, float):
            lines.append(f"{k:<22}{v:>12.4f}")
        else:
            lines.append(f"{k:<22}{v!s:>12}")
    lines.append(f"{'frames':<22}{summary['frames']:>12}")
    lines.append(f"{'videos':<22}{summary['videos']:>12}")
    if summary.get("hands_skipped") is not None:
        lines.append(f"{'hands_skipped':<22}{summary['hands_skipped']:>12}")
    if summary["frame_count_mismatches"]:
        lines.append(f"frame-count mismatches: {len(summary['frame_count_mismatches'])}")
    return "\n".join(lines)


def run_evaluation(
    config: EvalConfig,
    *,
    hand_detector: HandKeypointDetector | None = None,
    progress: bool = True,
    workers: int = 0,
    address: str | None = None,
    command: str = "",
    results: Callable[[EvalPlan, bool], Iterator[BatchResult]] | None = None,
    distributed: Callable[..., Iterator[BatchResult]] | None = None,
) -> dict[str, Any]:
    """Evaluate ``config.pred`` against ``config.gt``; write the table and the summary.

    ``workers > 0`` (or an ``address``) runs step 3 through ``distributed``, called as
    ``distributed(config, plan, need_gt, workers=, address=, hand_detector=)``: the Ray
    runner of the jobs layer (``pipelines.evaluate.ray_results``), which the ``signgen``
    command passes in. Returns the summary dict (also written to ``OUT.summary.json``).
    """
    from tqdm import tqdm

    if (workers or address) and results is None and distributed is None:
        raise InputError(
            "--workers/--address evaluate on Ray, which the `signgen` command provides "
            "(pipelines.app); this entry point evaluates in-process only"
        )
    plan = plan_evaluation(config)
    cached = load_cached_gt_stats(config, plan)
    gatherer = Gatherer(config, plan, cached)
    if results is None:
        if workers or address:
            assert distributed is not None

            def results(p: EvalPlan, need_gt: bool) -> Iterator[BatchResult]:
                return distributed(
                    config,
                    p,
                    need_gt,
                    workers=workers,
                    address=address,
                    hand_detector=hand_detector,
                )
        else:
            # Models load (and missing weights fail) before the progress bar starts.
            evaluator = FrameEvaluator(config, hand_detector, need_gt_features=cached is None)

            def results(p: EvalPlan, need_gt: bool) -> Iterator[BatchResult]:
                for pair in p.pairs:
                    yield from evaluator.evaluate_video(pair)

    stream = results(plan, cached is None)
    # The first result is awaited before the bar appears: a Ray start-up error (a cluster
    # that cannot be joined) is then one line on a clean terminal.
    first = next(stream, None)
    with tqdm(
        total=plan.total_frames,
        unit="frame",
        desc="evaluate",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        for res in itertools.chain([first] if first is not None else [], stream):
            bar.update(gatherer.add(res))
    return gatherer.finish(command)


__all__ = [
    "ALL_METRICS",
    "BatchResult",
    "EvalConfig",
    "EvalPlan",
    "FrameEvaluator",
    "Gatherer",
    "clip_flicker",
    "format_table",
    "parse_size",
    "plan_evaluation",
    "run_evaluation",
]
