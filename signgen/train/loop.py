"""One training loop for every stage: optimisation, checkpoints, exact resume, DDP.

A stage is a :class:`Task`: it owns an ``nn.Module`` whose ``forward(batch)`` returns
``(loss, logs)`` (so DDP sees one forward call), the datasets, evaluation, sample images
and the final export. :func:`run_training` does the rest:

* AdamW, the paper's LR schedule (:func:`lr_factor`), gradient accumulation, gradient
  clipping, mixed precision on GPU (autocast bf16/fp16, GradScaler for fp16), EMA
  (``diffusers.training_utils.EMAModel``);
* a data order that is a pure function of (seed, epoch, rank), so the loader position is
  one integer and a resumed run sees the same batches;
* checkpoints ``OUT/checkpoints/step-XXXXXXX/`` written to a temporary folder and renamed:
  trainable weights (safetensors), optimizer / LR-scheduler / EMA / RNG state
  (``torch.save``, loaded back with ``weights_only=True``), ``state.json`` (step, epoch,
  position); ``--resume`` restores all of it, so a killed run continues exactly;
* scalars to ``OUT/logs/train.csv`` / ``eval.csv`` (and TensorBoard when installed),
  a tqdm bar with ETA on stderr;
* DDP when the caller runs it inside a ``torch.distributed`` process group (rank and world
  size come from ``torch.distributed`` itself): the Ray Train launcher of the jobs layer
  (``pipelines/train.py``) does, and passes each worker's device; in-process otherwise.
  This module holds no Ray code (docs/architecture.md).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from signgen.config import to_dict
from signgen.errors import InputError
from signgen.train.config import TrainConfig

log = logging.getLogger(__name__)


class Task(Protocol):
    """What a training stage provides to :func:`run_training`."""

    module: nn.Module  # forward(batch) -> (loss, logs); trainable parameters require grad

    def train_dataset(self) -> torch.utils.data.Dataset: ...

    def evaluate(self, module: nn.Module, step: int) -> dict[str, float]: ...

    def samples(self, module: nn.Module, step: int, out_dir: Path) -> None: ...

    def export(self, module: nn.Module, out_dir: Path) -> None: ...


# ---------------------------------------------------------------------------------
# Small pure pieces
# ---------------------------------------------------------------------------------
def lr_factor(
    step: int, steps_per_epoch: int, warmup_epochs: float, decay_epochs: float, decay: float
) -> float:
    """LR multiplier at optimizer step ``step``: FPDM's linear warm-up, then a step decay.

    The FPDM paper's schedule (docs/training.md): linear warm-up over 5 epochs, x0.1 after
    50. Warm-up factor ``(step + 1) / W`` reaches 1 at step ``W - 1``.
    """
    warm = warmup_epochs * steps_per_epoch
    f = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
    if step >= decay_epochs * steps_per_epoch:
        f *= decay
    return f


def epoch_batches(
    n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1
) -> list[list[int]]:
    """Batches of one epoch for one rank: a seeded permutation, sharded, full batches only.

    A pure function of its arguments, so the loader position of a resumed run is the
    index of the next batch.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    per_rank = n // world
    mine = perm[rank * per_rank : (rank + 1) * per_rank]
    nb = len(mine) // batch_size
    return [mine[i * batch_size : (i + 1) * batch_size] for i in range(nb)]


def weight_hash(module: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of all parameters, in state-dict order."""
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global RNG other code may use
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as plain containers + tensors (weights_only-safe)."""
    np_state = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def gather_rng_states(world: int) -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state`, in rank order (a collective call under DDP)."""
    mine = rng_state()
    if world == 1:
        return [mine]
    states: list[Any] = [None] * world
    torch.distributed.all_gather_object(states, mine)
    return states


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
         n["cached_gaussian"])
    )  # fmt: skip
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """State of the trainable parameters (and all buffers of modules that train)."""
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items() if k in names}


# ---------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------
def save_checkpoint(
    out_dir: Path,
    step: int,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: Any | None,
    scaler: Any | None,
    state: dict[str, Any],
    keep: int,
    rank_rngs: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``checkpoints/step-XXXXXXX`` atomically (temporary folder, then rename).

    ``rank_rngs``: the RNG states of every DDP rank (:func:`gather_rng_states`); each rank
    draws its own noise, so an exact resume restores each rank's own state.
    """
    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_state(module), str(tmp / "model.safetensors"))
    extra: dict[str, Any] = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rank_rngs[0] if rank_rngs else rng_state(),
    }
    if rank_rngs and len(rank_rngs) > 1:
        extra["rng_ranks"] = rank_rngs
    if ema is not None:
        extra["ema"] = ema.state_dict()
    if scaler is not None:
        extra["scaler"] = scaler.state_dict()
    torch.save(extra, tmp / "training_state.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    old = sorted(p for p in root.glob("step-*") if p.is_dir())
    for p in old[: max(0, len(old) - keep)]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted(p for p in (out_dir / "checkpoints").glob("step-*") if p.is_dir())
    return found[-1] if found else None


def load_checkpoint(
    ckpt: Path,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: Any | None,
    scaler: Any | None,
    rank: int = 0,
) -> dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote; returns ``state.json``.

    ``rank`` picks this DDP rank's RNG state when the checkpoint holds every rank's.
    """
    weights = load_file(str(ckpt / "model.safetensors"))
    missing = set(trainable_state(module)) - set(weights)
    if missing:
        raise InputError(f"checkpoint {ckpt} lacks {len(missing)} weights, e.g. {min(missing)}")
    module.load_state_dict(weights, strict=False)
    extra = torch.load(ckpt / "training_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    if ema is not None and "ema" in extra:
        ema.load_state_dict(extra["ema"])
    if scaler is not None and "scaler" in extra:
        scaler.load_state_dict(extra["scaler"])
    ranks = extra.get("rng_ranks") or []
    set_rng_state(ranks[rank] if rank < len(ranks) else extra["rng"])
    return json.loads((ckpt / "state.json").read_text())


# ---------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------
class ScalarLog:
    """Scalars to CSV files (always) and TensorBoard (when available and enabled)."""

    def __init__(self, out_dir: Path, tensorboard: bool, enabled: bool = True) -> None:
        self.dir = out_dir / "logs"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.dir / "tensorboard"))
            except Exception:
                self.tb = None

    def write(self, name: str, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        path = self.dir / f"{name}.csv"
        row = {"step": step, **values}
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{name}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ---------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------
def default_device() -> torch.device:
    """The device of an in-process run: the first GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _dist() -> tuple[int, int]:
    """(rank, world size) of this process, from torch.distributed (0, 1 without DDP)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return torch.utils.data.default_collate(items)


def run_training(
    cfg: TrainConfig,
    make_task: Callable[[TrainConfig, torch.device], Task],
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Train ``make_task(cfg, device)``; returns a summary (final step, last losses, hash).

    ``stop_after`` ends the run after that many optimizer steps *without* the final export,
    as a killed run would (tests use it for resume equivalence). ``device``: where this
    process trains (a DDP launcher passes each worker's); default :func:`default_device`.
    """
    # Over 80 lines on purpose: one optimisation loop whose steps share the optimizer,
    # scheduler, EMA, scaler, DDP wrapper and data position; split up, they would travel as a
    # dozen arguments, and the order of the steps (backward, clip, step, scheduler, EMA,
    # checkpoint) is what a reader of this function checks.
    from tqdm import tqdm

    rank, world = _dist()
    seed_everything(cfg.seed + rank)
    device = device if device is not None else default_device()
    out = Path(cfg.output_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    task = make_task(cfg, device)
    module = task.module.to(device)
    train_params = [p for p in module.parameters() if p.requires_grad]
    if not train_params:
        raise InputError("nothing to train: every parameter is frozen")
    wrapped: nn.Module = module
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    dataset = task.train_dataset()
    lc, oc = cfg.train, cfg.optim
    micro_per_epoch = len(epoch_batches(len(dataset), lc.batch_size, cfg.seed, 0, rank, world))
    if micro_per_epoch == 0:
        raise InputError(
            f"the training set has {len(dataset)} pairs: too few for {world} worker(s) x "
            f"batch size {lc.batch_size}"
        )
    steps_per_epoch = max(1, micro_per_epoch // lc.grad_accum)
    total_steps = math.ceil(lc.epochs * steps_per_epoch)
    if lc.max_steps is not None:
        total_steps = min(total_steps, lc.max_steps) if lc.epochs > 0 else lc.max_steps
    optimizer = torch.optim.AdamW(
        train_params, lr=oc.lr, betas=tuple(oc.betas), weight_decay=oc.weight_decay
    )
    warm = oc.warmup_steps if oc.warmup_steps is not None else oc.warmup_epochs * steps_per_epoch
    dec = oc.decay_steps if oc.decay_steps is not None else oc.decay_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, 1, warm, dec, oc.decay_factor)
    )
    use_amp = lc.mixed_precision != "no" and device.type == "cuda"
    amp_dtype = torch.bfloat16 if lc.mixed_precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
    ema = None
    if lc.ema.enabled:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(train_params, decay=lc.ema.decay)
        ema.to(device)
    step, epoch, position = 0, 0, 0
    if resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            log.warning("--resume: no checkpoint under %s; starting from scratch", out)
        else:
            state = load_checkpoint(ckpt, module, optimizer, scheduler, ema, scaler, rank)
            step, epoch, position = state["step"], state["epoch"], state["position"]
            log.info("resumed from %s (step %d, epoch %d)", ckpt, step, epoch)
    logger = ScalarLog(out, lc.tensorboard, enabled=rank == 0)
    bar = tqdm(
        total=total_steps, initial=step, desc=f"train {cfg.stage}", unit="step",
        disable=not progress or rank != 0, dynamic_ncols=True,
    )  # fmt: skip
    # A private generator: creating a DataLoader iterator draws a base seed from it, and
    # from the global torch RNG otherwise, which would shift the noise of a resumed run.
    loader_kw: dict[str, Any] = {
        "num_workers": cfg.data.num_workers,
        "collate_fn": _collate,
        "generator": torch.Generator().manual_seed(cfg.seed),
    }
    if cfg.data.num_workers > 0:
        loader_kw["persistent_workers"] = False

    def batches() -> Iterator[tuple[int, int, dict[str, Any]]]:
        nonlocal epoch, position
        while True:
            plan = epoch_batches(len(dataset), lc.batch_size, cfg.seed, epoch, rank, world)
            plan = plan[: steps_per_epoch * lc.grad_accum]
            if hasattr(dataset, "set_epoch"):  # per-epoch augmentations (DeepFashionPairs)
                dataset.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                dataset, batch_sampler=plan[position:], **loader_kw
            )
            for i, batch in enumerate(loader, start=position):
                yield epoch, i, batch
            epoch, position = epoch + 1, 0

    last: dict[str, float] = {}
    running: dict[str, list[float]] = {}
    t_start = time.perf_counter()
    stream = batches()
    module.train()
    done_steps = 0
    while step < total_steps:
        optimizer.zero_grad(set_to_none=True)
        logs_acc: dict[str, float] = {}
        for micro in range(lc.grad_accum):
            ep, idx, batch = next(stream)
            sync = micro == lc.grad_accum - 1 or world == 1
            ctx = wrapped.no_sync() if (world > 1 and not sync) else nullcontext()
            with ctx:
                amp = torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext()
                with amp:
                    loss, logs = wrapped(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
                scaled = loss / lc.grad_accum
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            for k, v in {"loss": float(loss.detach()), **logs}.items():
                logs_acc[k] = logs_acc.get(k, 0.0) + float(v) / lc.grad_accum
        if scaler is not None:
            scaler.unscale_(optimizer)
        if oc.grad_clip > 0:
            logs_acc["grad_norm"] = float(
                torch.nn.utils.clip_grad_norm_(train_params, oc.grad_clip)
            )
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.step(train_params)
        step += 1
        done_steps += 1
        position = idx + 1
        epoch = ep
        if position >= steps_per_epoch * lc.grad_accum:
            epoch, position = ep + 1, 0
            stream = batches()  # start the next epoch's plan cleanly
        logs_acc["lr"] = scheduler.get_last_lr()[0]
        for k, v in logs_acc.items():
            running.setdefault(k, []).append(v)
        last = logs_acc
        bar.update(1)
        bar.set_postfix(loss=f"{logs_acc['loss']:.4f}", epoch=epoch)
        if step % max(1, lc.log_every) == 0 or step == total_steps:
            logger.write("train", step, {k: float(np.mean(v)) for k, v in running.items()})
            running = {}
        state = {"step": step, "epoch": epoch, "position": position, "seed": cfg.seed}
        if lc.checkpoint_every and step % lc.checkpoint_every == 0 and step < total_steps:
            rngs = gather_rng_states(world)  # every rank takes part
            if rank == 0:
                save_checkpoint(out, step, module, optimizer, scheduler, ema, scaler, state,
                                lc.keep_checkpoints, rngs)  # fmt: skip
        if rank == 0 and lc.eval_every and step % lc.eval_every == 0 and step < total_steps:
            _evaluate(task, module, ema, step, logger)
        if rank == 0 and lc.sample_every and step % lc.sample_every == 0 and step < total_steps:
            _samples(task, module, ema, step, out)
        if stop_after is not None and done_steps >= stop_after:
            break
    bar.close()
    state = {"step": step, "epoch": epoch, "position": position, "seed": cfg.seed}
    summary: dict[str, Any] = {"step": step, "last": last, "rank": rank, "world": world,
                               "seconds": time.perf_counter() - t_start}  # fmt: skip
    summary["weight_hash"] = weight_hash(module)
    rngs = gather_rng_states(world)
    if rank == 0:
        save_checkpoint(out, step, module, optimizer, scheduler, ema, scaler, state,
                        lc.keep_checkpoints, rngs)  # fmt: skip
    finished = step >= total_steps
    if rank == 0 and finished:
        summary["eval"] = _evaluate(task, module, ema, step, logger)
        _samples(task, module, ema, step, out)
        with _ema_weights(module, ema):
            task.export(module, out / "export")
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    logger.close()
    module.train()
    return summary


@contextmanager
def _ema_weights(module: nn.Module, ema: Any) -> Iterator[None]:
    """The module's trainable weights replaced by their EMA (when enabled) for the block."""
    params = [p for p in module.parameters() if p.requires_grad]
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    try:
        yield
    finally:
        if ema is not None:
            ema.restore(params)


@contextmanager
def _inference(module: nn.Module, ema: Any) -> Iterator[None]:
    """EMA weights, eval mode and no gradients for the block; training state restored."""
    with _ema_weights(module, ema):
        module.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            module.train()


def _evaluate(task: Task, module: nn.Module, ema: Any, step: int, logger: ScalarLog) -> dict:
    with _inference(module, ema):
        metrics = task.evaluate(module, step)
    if metrics:
        logger.write("eval", step, metrics)
        log.info("step %d eval: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


def _samples(task: Task, module: nn.Module, ema: Any, step: int, out: Path) -> None:
    with _inference(module, ema):
        task.samples(module, step, out / "samples")
