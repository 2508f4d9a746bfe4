"""``signgen train vae|ipf|fpdm|motion|refiner|refiner-motion``: the training commands.

Each reads a preset (``--config``), applies ``key=value`` overrides, and runs the shared
loop of :mod:`signgen.train.loop` in-process or, with ``--workers N`` or ``--address``,
as Ray Train DDP workers through the launcher the app layer provides (``args.runners.train``,
``pipelines/train.py``; docs/architecture.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from signgen.train.stages import STAGES

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  signgen train vae  --config configs/train/demo_vae.yaml data.prepared=data/synth/prepared
  signgen train ipf  --config configs/train/demo_ipf.yaml train.epochs=2 ipf.loss=baseline
  signgen train fpdm --config configs/train/demo_fpdm.yaml fpdm.ipf=runs/ipf/export/ipf
  signgen train motion --config configs/train/demo_motion.yaml motion.base_model=runs/fpdm/export
  signgen train refiner --config configs/train/demo_refiner.yaml refiner.base_model=runs/fpdm/export
  signgen train refiner-motion --config configs/train/demo_refiner_motion.yaml
  signgen train fpdm --config C --resume                 # continue from the last checkpoint
  signgen train fpdm --config C --workers 4 --gpus-per-worker 1 --address auto

Outputs under output_dir: checkpoints/step-XXXXXXX/, logs/train.csv, logs/eval.csv
(+ TensorBoard), samples/*.png, export/ (the inference folder), summary.json.
"""

DESCRIPTIONS = {
    "vae": "Train a small AutoencoderKL (reconstruction + KL); used by the demo model, "
    "since Stable Diffusion's VAE cannot be downloaded here.",
    "ipf": "Stage 1: train the Image-Pose Fusion model (CLIP + Combiner) with the baseline "
    "or source-enhanced InfoNCE loss; evaluates retrieval R@1/3/5 on the dev split.",
    "fpdm": "Stage 2: train the pose-conditioned latent diffusion model (UNet, pose "
    "encoder, source projector, fusion MLP) with frozen VAE, source encoder and IPF.",
    "motion": "Temporal FPDM: train the motion module on clips (windows of consecutive "
    "frames, source = the clip's first frame) with the per-frame FPDM of motion.base_model "
    "frozen; exports the base model folder plus motion_module/ (signgen render --temporal).",
    "refiner": "Source refiner: train a small full-size network that corrects the renders "
    "of the frozen model of refiner.base_model from the first frame and the pose. It first "
    "renders every refiner.every-th frame of the training clips with that model (kept under "
    "output_dir/renders); exports the base model folder plus refiner/ (used by every render).",
    "refiner-motion": "Temporal layers of the source refiner: train them on windows of "
    "consecutive frames with the refiner and the rest of refiner_motion.base_model frozen "
    "(loss: the refiner's plus frame-to-frame differences against the true frames'). It "
    "first renders the training clips with that model's --temporal, without the refiner "
    "(kept under output_dir/renders); exports the base model folder plus refiner_motion/ "
    "(used by signgen render --temporal).",
}


RUN_PARTS = ("checkpoints", "logs", "samples", "export", "summary.json")


def prepare_output_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """A fresh run never mixes with an earlier one in the same folder: without --resume, an
    output_dir that holds a run is an error, or with --overwrite is cleared first."""
    from signgen.errors import InputError

    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other: choose one")
    found = [p for p in RUN_PARTS if (out / p).exists()]
    if resume or not found:
        return
    if not overwrite:
        raise InputError(
            f"output_dir {out} already holds a run ({', '.join(found)}): pass --resume to "
            "continue it, --overwrite to start again there, or choose another output_dir=..."
        )
    for p in found:
        path = out / p
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _input_paths(cfg: Any, config: str) -> dict[str, str | None]:
    """What a run reads from disk (option -> path): output_dir must not be any of them,
    nor hold one inside the parts a run writes (its export, checkpoints, ...)."""
    return {
        "--config": config,
        "data.prepared": cfg.data.prepared,
        "model": cfg.model if isinstance(cfg.model, str) else None,
        "fpdm.ipf": cfg.fpdm.ipf,
        "fpdm.vae": cfg.fpdm.vae,
        "fpdm.init_from": cfg.fpdm.init_from,
        "motion.base_model": cfg.motion.base_model or None,
        "motion.init_from": cfg.motion.init_from,
        "refiner.base_model": cfg.refiner.base_model or None,
        "refiner_motion.base_model": cfg.refiner_motion.base_model or None,
    }


def _handler(stage: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from signgen.errors import InputError
        from signgen.fileio import refuse_replacing_inputs
        from signgen.train.config import load_train_config

        cfg = load_train_config(args.config, args.overrides, stage=stage)
        if args.workers < 1:
            raise InputError(f"--workers must be >= 1, got {args.workers}")
        if args.gpus_per_worker < 0:
            raise InputError(f"--gpus-per-worker must be >= 0, got {args.gpus_per_worker}")
        distributed = args.workers > 1 or args.address is not None
        launcher = getattr(getattr(args, "runners", None), "train", None)
        if distributed and launcher is None:
            raise InputError(
                "--workers > 1 and --address run on Ray Train, which the `signgen` command "
                "provides (pipelines.app); this entry point trains in-process only"
            )
        refuse_replacing_inputs(cfg.output_dir, _input_paths(cfg, args.config), replaced=RUN_PARTS)
        prepare_output_dir(Path(cfg.output_dir), resume=args.resume, overwrite=args.overwrite)
        if distributed:
            result = launcher(
                cfg,
                workers=args.workers,
                gpus_per_worker=args.gpus_per_worker,
                cpus_per_worker=args.cpus_per_worker,
                address=args.address,
                resume=args.resume,
                progress=not args.quiet,
                max_failures=args.max_failures,
            )
        else:
            from signgen.train.loop import run_training
            from signgen.train.stages import task_factory

            result = run_training(
                cfg, task_factory(stage), resume=args.resume, progress=not args.quiet
            )
        brief = {k: v for k, v in result.items() if k in ("step", "weight_hash", "eval", "loss")}
        log.info("finished %s: %s", stage, json.dumps(brief, default=str))
        return 0

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train the VAE, stage 1 (IPF), stage 2 (FPDM), the motion module or the refiner",
        description="Train signgen's models. See `signgen train STAGE --help`.",
    )
    sub = train.add_subparsers(dest="train_stage", metavar="STAGE")
    for stage in STAGES:
        p = sub.add_parser(
            stage,
            help=DESCRIPTIONS[stage].split(";")[0].split(" with ")[0],
            description=DESCRIPTIONS[stage],
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--config", required=True, help="training preset (configs/train/*.yaml)")
        p.add_argument(
            "overrides",
            nargs="*",
            metavar="KEY=VALUE",
            help="config overrides, e.g. train.epochs=3 optim.lr=1e-5 output_dir=runs/x",
        )
        p.add_argument(
            "--resume",
            action="store_true",
            help="continue from the last checkpoint in output_dir (weights, optimizer, LR "
            "schedule, EMA, RNG states, data position)",
        )
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="start from scratch even if output_dir holds an earlier run (its "
            "checkpoints, logs, samples and export are deleted first)",
        )
        p.add_argument(
            "--workers", type=int, default=1,
            help="DDP workers through Ray Train (default: 1 = in-process, no Ray)",
        )  # fmt: skip
        p.add_argument(
            "--gpus-per-worker", type=float, default=0.0,
            help="GPUs per worker (default: 0 = CPU workers with the gloo backend)",
        )  # fmt: skip
        p.add_argument(
            "--cpus-per-worker", type=float, default=None,
            help="CPUs per Ray worker (default: 0.5 on CPU-only runs, 1 with GPUs)",
        )  # fmt: skip
        p.add_argument(
            "--max-failures", type=int, default=3, metavar="N",
            help="Ray Train only: restart the workers up to N times after one died (a lost "
            "node, an OOM kill); they continue from the last checkpoint, so set "
            "train.checkpoint_every; -1: no limit (default 3)",
        )  # fmt: skip
        p.add_argument(
            "--address", default=None,
            help="address of an existing Ray cluster (e.g. 'auto'); default: a local Ray",
        )  # fmt: skip
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=_handler(stage))
