"""Temporal FPDM vs per-frame FPDM on held-out synthetic clips, in one run.

Clips: the synthetic world's test split (signers never seen in training; exact ground
truth), source = frame 0, every frame rendered, scored at the native 260 x 210 (H x W).
Both systems are the SAME model folder (the per-frame weights are shared; the temporal
system adds the folder's motion module) with the same steps, seeds and scheduler; each is
rendered with shared noise (every frame of a clip starts from the same noise) and with
independent noise (per frame, from (seed, frame)):

* ``frame-shared``     per-frame FPDM, shared noise (``signgen render``'s default)
* ``frame-indep``      per-frame FPDM, independent noise (``--independent-noise``)
* ``temporal-shared``  ``--temporal``, shared noise
* ``temporal-indep``   ``--temporal --independent-noise``
* ``temporal-shared-nolayers``  ``--temporal --no-temporal-refine``: the source refiner
  without its temporal layers (signgen.models.refiner_motion), frame by frame
* ``temporal-shared-nomotion``  ``--temporal --no-motion-module``: every frame denoised
  alone, the refiner's temporal layers on windows of frames

Per clip (signgen.metrics.video.video_metrics and synthetic_quality.score): SSIM, Hand
SSIM, flicker (mean |x_t - x_{t-1}|, uint8 units), flicker error |flicker - flicker of the
ground truth|, temporal consistency (mean |x_t - (x_{t-1} + x_{t+1}) / 2|) and its
difference to the ground truth's, and the part of the flicker made of per-pixel changes
below 4 grey levels (shimmer: small changes where the ground truth hardly moves). Paired
differences over clips with 95 % bootstrap intervals (signgen.metrics.stats.paired_margin)
for every temporal row against the per-frame row of the same noise and against
``frame-shared`` (and ``temporal-shared`` against ``temporal-shared-nolayers``).

Target (docs/temporal.md): a temporal row's mean flicker error at least 30 % below the
per-frame model's (``frame-shared``, the default render), with the SSIM and Hand SSIM
differences' intervals including or above 0.

    .venv/bin/python benchmarks/temporal_quality.py --world runs/demo/world \\
        --model signgen/assets/demo_model

Writes ``OUT.md`` and ``OUT.json`` (default ``benchmarks/results/temporal_quality``) and a
sample strip ``OUT_samples.png``; the last line printed is the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine, shown
from synthetic_quality import load_clips, score

from signgen.metrics.stats import paired_margin, weighted_mean

ROOT = Path(__file__).resolve().parents[1]
# key -> (label, temporal, independent noise, refiner's temporal layers, motion module)
SYSTEMS = {
    "frame-shared": ("per-frame, shared noise (default render)", False, False, False, False),
    "frame-indep": ("per-frame, independent noise", False, True, False, False),
    "temporal-shared": ("temporal, shared noise", True, False, True, True),
    "temporal-indep": ("temporal, independent noise", True, True, True, True),
    "temporal-shared-nolayers": (
        "temporal, shared noise, refiner frame by frame",
        True,
        False,
        False,
        True,
    ),
    "temporal-shared-nomotion": (
        "temporal, shared noise, frames denoised alone (refiner's temporal layers only)",
        True,
        False,
        True,
        False,
    ),
}
BASELINE = "frame-shared"
TARGET = 0.30  # flicker error at least 30 % below the per-frame model's
METRICS = (  # key, frame-count key, label, higher is better
    ("ssim", "n", "SSIM", True),
    ("hand_ssim", "n_hand", "Hand SSIM", True),
    ("flicker_error", "n", "flicker error", False),
    ("flicker", "n", "flicker", None),
    ("temporal_consistency_diff", "n", "temporal consistency - GT's", None),
    ("small_flicker", "n", "flicker below 4 levels", None),
)
SMALL = 4  # grey levels: frame-to-frame changes below this are shimmer, not motion


def small_flicker(frames: np.ndarray) -> float:
    """The part of the flicker (mean |x_t - x_{t-1}|, channel-averaged per pixel) made of
    per-pixel changes below ``SMALL`` grey levels, uint8 (T, H, W, 3) frames."""
    d = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(-1)
    return float((d * (d < SMALL)).mean())


def clip_scores(pred: np.ndarray, gt: np.ndarray, points: np.ndarray) -> dict[str, float]:
    """The benchmark's per-clip numbers of uint8 (T, H, W, 3) clips."""
    from signgen.metrics.video import video_metrics

    return {**score(pred, gt, points), **video_metrics(pred, gt),
            "small_flicker": small_flicker(pred), "small_flicker_gt": small_flicker(gt)}  # fmt: skip


# Over 80 lines: a benchmark script; its options, the side-by-side renders and the result
# file read best top to bottom.
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--world", type=Path, required=True, help="`signgen prepare synthetic` output")
    ap.add_argument("--model", type=Path, default=ROOT / "signgen" / "assets" / "demo_model",
                    help="model folder with a motion_module/ (default: the demo model)")  # fmt: skip
    ap.add_argument("--split", default="test", help="clips of this split (default: test)")
    ap.add_argument("--clips", type=int, default=None, help="at most this many clips")
    ap.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=int, default=None, help="default: the motion module's")
    ap.add_argument("--overlap", type=int, default=None, help="default: the motion module's")
    ap.add_argument("--taper", default=None, help="default: the motion module's")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "temporal_quality"
    )
    args = ap.parse_args(argv)
    if BASELINE not in args.systems:
        ap.error(f"--systems must include {BASELINE} (the baseline)")

    from signgen.sampling.options import RenderOptions
    from signgen.sampling.pipeline import FPDMPipeline

    t0 = time.perf_counter()
    pipe = FPDMPipeline.from_pretrained(args.model)
    if pipe.motion_module is None:
        ap.error(f"{args.model} has no motion_module/ (train one with `signgen train motion`)")
    clips = load_clips(args.world, args.clips, args.split)
    base = RenderOptions(steps=args.steps, seed=args.seed, batch_size=16)
    temporal = base.replace(temporal=True, window=args.window, overlap=args.overlap,
                            taper=args.taper)  # fmt: skip
    window, overlap, taper = pipe.temporal_settings(temporal)
    per: dict[str, list[dict[str, float]]] = {k: [] for k in args.systems}
    seconds = dict.fromkeys(args.systems, 0.0)
    samples = []
    for clip in clips:
        gt, kp = clip["frames"], clip["keypoints"]
        outs = {}
        for key in args.systems:
            _, is_temporal, indep, layers, motion = SYSTEMS[key]
            opts = (temporal if is_temporal else base).replace(
                independent_noise=indep, temporal_refine=layers, motion_module=motion
            )
            t = time.perf_counter()
            outs[key] = pipe(gt[0], kp, opts)
            seconds[key] += time.perf_counter() - t
            per[key].append(clip_scores(outs[key], gt, kp.points))
        frames = slice(8, 16, 2)
        samples.append(np.concatenate(
            [np.concatenate(list(x[frames]), axis=1) for x in (gt, *outs.values())], axis=0
        ))  # fmt: skip
        print(f"{clip['video']}: " + ", ".join(
            f"{k} fe {per[k][-1]['flicker_error']:.2f} ssim {per[k][-1]['ssim']:.3f}"
            for k in per), flush=True)  # fmt: skip

    result: dict = {"clips": len(clips), "frames": int(sum(len(c["frames"]) for c in clips)),
                    "window": window, "overlap": overlap, "taper": taper, "steps": args.steps,
                    "flicker_gt": weighted_mean(per[BASELINE], "flicker_gt", "n"),
                    "small_flicker_gt": weighted_mean(per[BASELINE], "small_flicker_gt", "n"),
                    "seconds": {k: round(v, 1) for k, v in seconds.items()}}  # fmt: skip
    for k in per:
        for m, n, _, _ in METRICS:
            result[f"{k}/{m}"] = weighted_mean(per[k], m, n)
    margins: dict[str, dict] = {}
    for k in per:
        if not k.startswith("temporal"):
            continue
        same_noise = "frame-" + k.split("-")[1]
        refs = [BASELINE, same_noise, k + "-nolayers"]
        refs += ["temporal-shared"] if k == "temporal-shared-nomotion" else []
        for ref in dict.fromkeys(refs):
            if ref not in per:
                continue
            for m, n, _, _ in METRICS[:3]:
                margins[f"{k} vs {ref}/{m}"] = paired_margin(per[k], per[ref], m, n)
    result["margins"] = margins
    verdicts = {}
    for k in per:
        if not k.startswith("temporal"):
            continue
        fe, fe0 = result[f"{k}/flicker_error"], result[f"{BASELINE}/flicker_error"]
        reduction = 1 - fe / fe0
        quality_ok = all(
            margins[f"{k} vs {BASELINE}/{m}"]["hi"] >= 0 for m in ("ssim", "hand_ssim")
        )
        verdicts[k] = {"flicker_error_reduction": reduction, "quality_not_worse": quality_ok,
                       "met": bool(reduction >= TARGET and quality_ok)}  # fmt: skip
    result["verdicts"] = verdicts
    result["seconds_total"] = round(time.perf_counter() - t0, 1)

    from PIL import Image

    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(samples[:2], axis=0)).save(f"{args.out}_samples.png")
    command = " ".join(
        ["python", shown(Path(sys.argv[0])), *(argv if argv is not None else sys.argv[1:])]
    )
    mach = machine()
    meta = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{mach['cpu']}, {mach['nproc']} cores, load {mach['load average (1/5/15 min)']}, "
        f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}",
        "model": shown(args.model),
    }
    Path(f"{args.out}.json").write_text(json.dumps({**meta, **result}, indent=2) + "\n")

    def fmt(v: float) -> str:
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"

    lines = [
        "# Temporal FPDM vs per-frame FPDM (held-out synthetic clips)",
        "",
        f"- command: `{command}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']}",
        f"- model: `{meta['model']}` (per-frame weights shared by every row; temporal rows add its "
        f"motion module and, unless said, the refiner's temporal layers), {args.steps} steps of its scheduler, seed {args.seed}",
        f"- clips: {result['clips']} {args.split} clips, {result['frames']} frames at "
        f"{'x'.join(map(str, clips[0]['frames'].shape[1:3]))} (H x W); ground-truth flicker "
        f"{result['flicker_gt']:.3f}, of which below {SMALL} grey levels per pixel "
        f"{result['small_flicker_gt']:.3f}",
        f"- temporal: windows of {window} frames, overlap {overlap}, taper {taper}",
        "",
        "| system | " + " | ".join(lbl for _, _, lbl, _ in METRICS) + " | seconds |",
        "|---|" + "---|" * (len(METRICS) + 1),
        *[f"| {SYSTEMS[k][0]} | " + " | ".join(fmt(result[f"{k}/{m}"]) for m, _, _, _ in METRICS)
          + f" | {seconds[k]:.0f} |" for k in per],
        "",
        "Paired differences over clips (row minus reference on the same clip; 95 % interval: "
        "bootstrap over clips, BCa); lower flicker error is better:",
        "",
        "| row | reference | metric | difference | 95 % interval | clips where row is better |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for key, v in margins.items():
        pair, m = key.split("/")
        row, ref = pair.split(" vs ")
        better = v["won"] if m != "flicker_error" else v["clips"] - v["won"]
        lines.append(
            f"| {row} | {ref} | {m} | {v['margin']:+.4f} | [{v['lo']:+.4f}, {v['hi']:+.4f}] "
            f"| {better} of {v['clips']} |"
        )
    lines += ["", f"Target: flicker error at least {TARGET:.0%} below `{BASELINE}`, SSIM and "
              "Hand SSIM intervals including or above 0:", ""]  # fmt: skip
    for k, v in verdicts.items():
        lines.append(
            f"- {k}: flicker error {v['flicker_error_reduction']:+.1%} "
            f"{'lower' if v['flicker_error_reduction'] >= 0 else 'HIGHER'}, SSIM / Hand SSIM "
            f"{'not worse' if v['quality_not_worse'] else 'WORSE'}: "
            f"**{'met' if v['met'] else 'NOT met'}**"
        )
    lines += ["", f"Samples (frames 8, 10, 12, 14; rows: ground truth, {', '.join(per)}): "
              f"`{args.out.name}_samples.png`."]  # fmt: skip
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
