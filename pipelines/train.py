"""``signgen train STAGE --workers N`` / ``--address ADDR``: the training loop as Ray Train
DDP workers.

The loop itself is the library's :func:`signgen.train.loop.run_training`; this module only
launches it: a :class:`ray.train.torch.TorchTrainer` whose workers each call it inside
the process group Ray Train set up (gloo on CPU, NCCL with GPUs), on the device Ray Train
gives the worker. Every worker writes its final weight hash to
``OUT/worker_hashes/rank<R>.txt``, so a run can show that the ranks ended identical.
Ray is started or joined by :mod:`pipelines.ray_cluster`.

Failures: a worker that dies (a lost node, an OOM kill) makes Ray Train restart the whole
worker group, up to ``max_failures`` times (``FailureConfig``). The restarted workers
continue from the run's last checkpoint in ``OUT/checkpoints`` (the library's exact resume:
weights, optimizer, LR schedule, EMA, every rank's RNG state, data position), so the run
ends with the weights an undisturbed run gives (docs/training.md). ``OUT`` must be on
storage every node sees, as for checkpoints of any multi-node run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from signgen.errors import InputError
from signgen.train.config import TrainConfig


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the library's loop on this worker's device."""
    import ray.train
    import ray.train.torch

    from signgen.train.loop import latest_checkpoint, run_training
    from signgen.train.stages import task_factory

    cfg: TrainConfig = config["cfg"]
    # The first attempt starts as asked (fresh, or --resume). A worker group that Ray Train
    # restarted after a failure finds this run's checkpoints (a fresh run starts from an
    # output_dir without any: signgen.train.cli.prepare_output_dir) and continues from them.
    resume = config["resume"] or latest_checkpoint(Path(cfg.output_dir)) is not None
    summary = run_training(cfg, task_factory(cfg.stage), resume=resume,
                           progress=config["progress"], device=ray.train.torch.get_device())  # fmt: skip
    rank = summary["rank"]
    hashes = Path(cfg.output_dir) / "worker_hashes"
    hashes.mkdir(parents=True, exist_ok=True)
    (hashes / f"rank{rank}.txt").write_text(summary["weight_hash"] + "\n")
    ray.train.report({"step": summary["step"], "weight_hash": summary["weight_hash"],
                      "loss": summary["last"].get("loss", float("nan"))})  # fmt: skip


def launch(
    cfg: TrainConfig,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float | None = None,
    address: str | None = None,
    resume: bool = False,
    progress: bool = True,
    max_failures: int = 0,
) -> dict[str, Any]:
    """Train ``cfg`` on ``workers`` Ray Train DDP workers; returns the last reported metrics.

    ``address`` joins an existing Ray cluster; without it a local Ray is started (and shut
    down afterwards). CPU workers reserve 0.5 CPU each unless ``cpus_per_worker`` says
    otherwise, so that two of them fit on a 2-core machine next to the driver.
    ``max_failures``: worker-group restarts after a worker died (each continues from the
    last checkpoint; see the module doc); -1 retries without limit.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipelines.ray_cluster import ray_session

    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    if gpus_per_worker < 0:
        raise InputError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
    if cpus_per_worker is not None and cpus_per_worker <= 0:
        raise InputError(f"--cpus-per-worker must be > 0, got {cpus_per_worker}")
    if max_failures < -1:
        raise InputError(f"--max-failures must be >= -1, got {max_failures}")
    cpus = cpus_per_worker if cpus_per_worker is not None else (
        0.5 if gpus_per_worker == 0 else 1.0
    )  # fmt: skip
    resources: dict[str, float] = {"CPU": cpus}
    if gpus_per_worker > 0:
        resources["GPU"] = gpus_per_worker
    with ray_session(address):
        storage = Path(cfg.output_dir).resolve() / "ray"
        trainer = TorchTrainer(
            _worker,
            train_loop_config={"cfg": cfg, "resume": resume, "progress": progress},
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=gpus_per_worker > 0,
                resources_per_worker=resources,
            ),
            torch_config=TorchConfig(backend="nccl" if gpus_per_worker > 0 else "gloo"),
            run_config=RunConfig(storage_path=str(storage), name=f"{cfg.stage}",
                                 failure_config=FailureConfig(max_failures=max_failures)),
        )  # fmt: skip
        result = trainer.fit()
        if result.error:
            raise result.error
        return dict(result.metrics or {})
