"""Distributed ``signgen evaluate`` on Ray Data (``--workers N`` / ``--address ADDR``).

One Ray row per video. ``map_batches`` runs :class:`VideoEvaluator`, a callable class that
loads the metric models once per actor (``signgen.metrics.evaluate.FrameEvaluator``) and
turns each video into one row per frame (plus its Inception features when FID is on, and
its clip's I3D features, on the batch's first row, when FVD is on).
The driver receives the rows in whatever order the actors finish, and hands them to the
same gathering and writing code as the single-process path, which sorts by
``(video, frame)``: the table is identical to a single-process run.

Ray does not ship signgen to a remote cluster by itself: on a multi-node cluster, install
signgen on every node (or pass a ``runtime_env``) and give paths every node can read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from signgen.devices import resolve_device
from signgen.errors import InputError
from signgen.metrics.evaluate import (
    BatchResult,
    EvalConfig,
    EvalPlan,
    FrameEvaluator,
)

log = logging.getLogger(__name__)

_FEATURE_COLUMNS = ("_pred_feats", "_gt_feats")
_SKIPPED = "_hands_skipped"
# FVD: one feature per clip, carried on the first row of the batch that completed the
# clip's first frames (_fvd_has marks it); every chunk has the columns when FVD is on,
# so that the chunks of a video concatenate.
_FVD_COLUMNS = ("_fvd_has", "_fvd_pred", "_fvd_gt", "_fvd_skipped")


class VideoEvaluator:
    """Ray Data callable class: ``{"index": (B,)}`` -> per-frame metric columns."""

    def __init__(self, config: EvalConfig, pairs: list, need_gt: bool, hand_detector=None):
        self.pairs = pairs
        self.evaluator = FrameEvaluator(config, hand_detector, need_gt_features=need_gt)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunks: list[dict[str, np.ndarray]] = []
        for index in batch["index"].tolist():
            for res in self.evaluator.evaluate_video(self.pairs[int(index)]):
                cols = dict(res.rows)
                n = len(cols["frame"])
                skipped = np.zeros(n, dtype=np.int64)
                skipped[0] = res.hands_skipped  # a per-batch count, carried on its first row
                cols[_SKIPPED] = skipped
                if res.pred_feats is not None:
                    cols["_pred_feats"] = res.pred_feats.astype(np.float32)  # (N, 2048)
                if res.gt_feats is not None:
                    cols["_gt_feats"] = res.gt_feats.astype(np.float32)
                if self.evaluator.fvd is not None:  # I3D logits: (n, 400) columns
                    dim = self.evaluator.fvd.network.logits.conv3d.out_channels
                    cols.update(_fvd_columns(res, n, dim))
                chunks.append(cols)
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]} if chunks else {}


def _fvd_columns(res: BatchResult, n: int, dim: int) -> dict[str, np.ndarray]:
    """The per-clip FVD features (``dim`` wide) of ``res`` as columns of its ``n`` rows
    (float64, as the single-process path keeps them)."""
    has = np.zeros(n, dtype=bool)
    skipped = np.zeros(n, dtype=np.int64)
    skipped[0] = res.fvd_skipped
    pred = np.zeros((n, dim))
    gt = np.zeros((n, dim))
    if res.fvd_pred_feats is not None:
        assert len(res.fvd_pred_feats) == 1 <= n  # one clip per video
        has[0], pred[0], gt[0] = True, res.fvd_pred_feats[0], res.fvd_gt_feats[0]
    return {"_fvd_has": has, "_fvd_pred": pred, "_fvd_gt": gt, "_fvd_skipped": skipped}


def ray_results(
    config: EvalConfig,
    plan: EvalPlan,
    need_gt: bool,
    *,
    workers: int,
    address: str | None = None,
    hand_detector=None,
    num_cpus: float | None = None,
) -> Iterator[BatchResult]:
    """Evaluate ``plan`` on ``workers`` Ray actors; yield results as they arrive.

    Each actor reserves ``num_cpus`` (default: the machine's CPUs shared between the
    workers, capped below one so that two workers fit on a 2-core machine next to the
    driver) and, when the device is CUDA, an equal share of the GPUs.
    """
    import ray

    from pipelines.ray_cluster import quiet_ray_data, ray_session

    if workers < 1:
        raise InputError(f"--workers must be >= 1 for a Ray run, got {workers}")
    with ray_session(address):
        quiet_ray_data()  # the driver shows one tqdm bar for the whole run
        total_cpus = float(ray.cluster_resources().get("CPU", 1.0))
        if num_cpus is None:
            num_cpus = min(0.5, total_cpus / (workers + 1))
        num_gpus = 0.0
        if resolve_device(config.device).type == "cuda":
            num_gpus = min(1.0, float(ray.cluster_resources().get("GPU", 0.0)) / workers)
        items = [{"index": i} for i in range(len(plan.pairs))]
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        ds = ds.map_batches(
            VideoEvaluator,
            fn_constructor_kwargs={
                "config": config,
                "pairs": plan.pairs,
                "need_gt": need_gt,
                "hand_detector": hand_detector,
            },
            batch_size=1,  # one video per call: its frames are streamed in batches inside
            batch_format="numpy",
            concurrency=workers,
            num_cpus=num_cpus,
            num_gpus=num_gpus or None,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            if not batch:
                continue
            rows = {k: v for k, v in batch.items() if not k.startswith("_")}
            res = BatchResult(
                rows=rows,
                pred_feats=batch.get("_pred_feats"),
                gt_feats=batch.get("_gt_feats"),
                hands_skipped=int(batch[_SKIPPED].sum()),
            )
            if "_fvd_has" in batch:
                has = batch["_fvd_has"].astype(bool)
                res.fvd_skipped = int(batch["_fvd_skipped"].sum())
                if has.any():
                    res.fvd_pred_feats = np.stack(list(batch["_fvd_pred"][has]))  # (K, D)
                    res.fvd_gt_feats = np.stack(list(batch["_fvd_gt"][has]))
            yield res
