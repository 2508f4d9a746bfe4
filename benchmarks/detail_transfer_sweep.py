"""The source detail transfer's threshold (signgen.sampling.detail), chosen on dev clips.

A model's ``detail_transfer`` threshold is a hyperparameter: it is chosen here on clips of
the synthetic world's *dev* split (signers seen neither in training nor in the test split
that benchmarks/synthetic_quality.py reports on), never on the test clips.

Each clip is rendered once without the transfer (source = frame 0, targets = every frame);
the transfer is then applied to those frames at every threshold, for the model and for the
same model with the pose zeroed (synthetic_quality.py's baseline), and scored with the
metrics of synthetic_quality.py. Applying it to the uint8 frames instead of inside the render
changes a pixel by at most 1/255.

    .venv/bin/python benchmarks/detail_transfer_sweep.py --world runs/demo/world \\
        --model signgen/assets/demo_model --clips 4
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine, shown, write_result
from synthetic_quality import load_clips, no_pose, score

from signgen.metrics.stats import weighted_mean

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.0, 0.1, 0.25, 0.4, 0.6, 1.0)


def with_transfer(frames: np.ndarray, first: np.ndarray, processor, tau: float) -> np.ndarray:
    """uint8 (T, H, W, 3) renders without the transfer -> the same with threshold ``tau``
    (the render's post-processor, bound to the first frame in the model's geometry)."""
    from signgen.models.preprocess import tensor_to_uint8, uint8_to_tensor
    from signgen.sampling.detail import DetailTransfer

    if tau <= 0:
        return frames
    return tensor_to_uint8(DetailTransfer(tau).bind(first, processor)(uint8_to_tensor(frames)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=Path, required=True, help="`signgen prepare synthetic` output")
    ap.add_argument("--model", type=Path, default=ROOT / "signgen" / "assets" / "demo_model")
    ap.add_argument("--split", default="dev", help="clips of this split (default: dev)")
    ap.add_argument("--clips", type=int, default=4, help="at most this many clips (default: 4)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps (default: 20)")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "detail_transfer_sweep.md")  # fmt: skip
    args = ap.parse_args(argv)

    from signgen.sampling.pipeline import FPDMPipeline

    t0 = time.perf_counter()
    clips = load_clips(args.world, args.clips, args.split)
    if not clips:
        ap.error(f"no {args.split!r} clips in {args.world}")
    systems = {"model": FPDMPipeline.from_pretrained(args.model),
               "nopose": no_pose(FPDMPipeline.from_pretrained(args.model))}  # fmt: skip
    res = systems["model"].resolution
    kw = {"steps": args.steps, "seed": 0, "batch_size": 16, "detail_transfer": 0}
    scores: dict[tuple[str, float], list[dict[str, float]]] = {}
    for clip in clips:
        gt, kp = clip["frames"], clip["keypoints"]
        copy = np.repeat(gt[:1], len(gt), axis=0)
        scores.setdefault(("copy", 0.0), []).append(score(copy, gt, kp.points))
        for name, pipe in systems.items():
            raw = pipe(gt[0], kp, **kw)
            for tau in args.thresholds:
                out = with_transfer(raw, gt[0], pipe.image_processor, tau)
                scores.setdefault((name, tau), []).append(score(out, gt, kp.points))

    table = {k: (weighted_mean(v, "ssim", "n"), weighted_mean(v, "hand_ssim", "n_hand"))
             for k, v in scores.items()}  # fmt: skip
    taus = [t for t in args.thresholds if t > 0]
    best = max(taus, key=lambda t: sum(table[("model", t)])) if taus else 0.0
    cmd = "python benchmarks/detail_transfer_sweep.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    m = machine()
    lines = [
        "# Source detail transfer: threshold sweep on dev clips",
        "",
        f"- command: `{cmd.strip()}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"{m['nproc']} cores, {m['cpu']}",
        f"- model: `{shown(args.model)}` ({res[0]}x{res[1]}); clips: {len(clips)} of the "
        f"{args.split!r} split ({', '.join(sorted({c['signer'] for c in clips}))}), "
        f"{sum(len(c['frames']) for c in clips)} frames; {args.steps} DDIM steps, seed 0",
        f"- {time.perf_counter() - t0:.0f} s",
        "",
        "| threshold | model SSIM | model Hand SSIM | pose zeroed SSIM | pose zeroed Hand SSIM |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {'off' if t <= 0 else f'{t:g}'} | {table[('model', t)][0]:.4f} | "
            f"{table[('model', t)][1]:.4f} | {table[('nopose', t)][0]:.4f} | "
            f"{table[('nopose', t)][1]:.4f} |"
            for t in args.thresholds
        ),
        f"| copy first frame | {table[('copy', 0.0)][0]:.4f} | {table[('copy', 0.0)][1]:.4f} | | |",
        "",
        f"Best threshold for the model (largest SSIM + Hand SSIM): **{best:g}**.",
    ]
    write_result(args.out, lines)
    return 0


if __name__ == "__main__":
    with torch.no_grad():
        raise SystemExit(main())
