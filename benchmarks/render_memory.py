"""Peak memory of `signgen render`: 100 vs 2,000 frames (target ratio <= 1.3), per-frame
and temporal (``--temporal``).

Each (mode, length) runs in its own subprocess through the real CLI (keypoint file ->
frames -> H.264 video on disk) with the tiny random-init model, and reports its peak
resident set size (``ru_maxrss``). Per-frame renders stream frames batch by batch from the
pipeline into the encoder. Temporal renders (docs/temporal.md) run the same tiny model with
a motion module (the module's default windows: 16 frames overlapping by 4) and keep the
clip's latents on the CPU (one (T, c, h, w) tensor: the initial noise, denoised in place),
drawing poses per window: their peak should grow with length by the latents only.

``--model demo`` runs the bundled demo model instead (80x64, 48 x 20 x 16 latents per
frame: the clip's latents are 61 KiB a frame, 2,000 frames 120 MiB each copy) with a
zero-initialised motion module shaped as configs/train/demo_motion.yaml's (8 heads, 16
groups, windows of 8 overlapping by 4, linear taper).

    .venv/bin/python benchmarks/render_memory.py     # writes benchmarks/results/render_memory.md
    .venv/bin/python benchmarks/render_memory.py --model demo \
        -o benchmarks/results/render_memory_demo.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_result  # benchmarks/ is on sys.path when a script runs

RESULTS = Path(__file__).resolve().parent / "results" / "render_memory.md"
MODES = ("per-frame", "temporal")


def child(args: argparse.Namespace) -> int:
    """Render ``args.frames`` frames through the CLI and print peak RSS as JSON."""
    import numpy as np
    import torch

    from signgen.cli import main as cli_main
    from signgen.keypoints.sequence import KeypointSequence

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    w, h = args.size
    rng = np.random.default_rng(0)
    pts = np.zeros((args.frames, 133, 3), np.float32)
    pts[..., 0] = rng.uniform(0, w, (args.frames, 133))
    pts[..., 1] = rng.uniform(0, h, (args.frames, 133))
    pts[..., 2] = 1.0
    seq = work / f"seq_{args.frames}.json"
    KeypointSequence(pts, w, h, 25.0).save(seq)
    del pts
    t0 = time.perf_counter()
    temporal = args.mode == "temporal"
    rc = cli_main([
        "render", "--video", str(work / "first.png"), "--keypoints", str(seq),
        "--model", str(work / ("model_motion" if temporal else "model")),
        "-o", str(work / f"out_{args.mode}_{args.frames}.mp4"),
        "--steps", str(args.steps), "--batch-size", str(args.batch_size),
        *(["--temporal"] if temporal else []),
    ])  # fmt: skip
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"mode": args.mode, "frames": args.frames, "rc": rc,
                      "peak_rss_mib": peak_kib / 1024, "seconds": seconds}))  # fmt: skip
    return rc


# Over 80 lines: one straight script (options, the child runs of each case, the results
# table and its file); splitting it would only move the table's inputs around.
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--lengths", type=int, nargs=2, default=(100, 2000), metavar=("SHORT", "LONG"))
    ap.add_argument(
        "--steps",
        type=int,
        default=2,
        help="denoising steps (default 2; memory does not depend on it)",
    )
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=(210, 260), metavar=("W", "H"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                    help="per-frame and/or temporal renders (default: both)")  # fmt: skip
    ap.add_argument("--model", choices=("tiny", "demo"), default="tiny",
                    help="tiny random-init model (default) or the bundled demo model")  # fmt: skip
    ap.add_argument("--mode", choices=MODES, default="per-frame", help=argparse.SUPPRESS)
    ap.add_argument("-o", "--output", type=Path, default=RESULTS)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        args.frames = args.child
        return child(args)

    import numpy as np
    from PIL import Image

    from signgen.models.config import load_model_config
    from signgen.models.motion import (
        MotionModuleConfig,
        build_motion_module,
        render_defaults,
        save_motion_module,
        set_render_defaults,
    )
    from signgen.sampling.loading import default_model_path
    from signgen.sampling.pipeline import FPDMPipeline

    with tempfile.TemporaryDirectory(prefix="signgen_render_memory_") as tmp:
        work = Path(tmp)
        w, h = args.size
        img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(work / "first.png")
        if args.model == "demo":
            pipe = FPDMPipeline.from_pretrained(default_model_path())
            motion_cfg = MotionModuleConfig(num_attention_heads=8, norm_num_groups=16,
                                            max_frames=32)  # fmt: skip
        else:
            pipe = FPDMPipeline.from_config(load_model_config("tiny"))
            motion_cfg = MotionModuleConfig(num_attention_heads=4, norm_num_groups=8,
                                            max_frames=16)  # fmt: skip
        pipe.save_pretrained(work / "model")
        # The same per-frame weights plus a motion module (zero-initialised: its values do
        # not change the memory), in a folder of its own.
        pipe.save_pretrained(work / "model_motion")
        motion = build_motion_module(pipe.unet, motion_cfg)
        if args.model == "demo":
            set_render_defaults(motion, 8, 4, "linear")  # configs/train/demo_motion.yaml's
        save_motion_module(motion, work / "model_motion")
        window, overlap, _ = render_defaults(motion)
        layers = ""  # the folder's own refiner temporal layers, which --temporal runs too
        if pipe.temporal_refiner is not None:
            rm = pipe.refiner_motion.config
            alone = not pipe.config.get("temporal_motion_module", True)
            layers = (f"; the model's refiner temporal layers on windows of {rm.window} frames "
                      f"overlapping by {rm.overlap}" + (", every frame denoised alone (the "
                      "folder's --temporal default: the motion module unused)" if alone else ""))  # fmt: skip
        runs = []
        for mode in args.modes:
            for n in args.lengths:
                cmd = [sys.executable, __file__, "--child", str(n), "--workdir", str(work),
                       "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                       "--size", str(w), str(h), "--threads", str(args.threads),
                       "--mode", mode]  # fmt: skip
                res = subprocess.run(cmd, capture_output=True, text=True, check=False)
                last = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
                if res.returncode != 0 or not last:
                    sys.stderr.write(res.stderr[-3000:])
                    raise SystemExit(f"child for {mode} {n} frames failed (rc {res.returncode})")
                runs.append(json.loads(last[-1]))
                print(runs[-1], flush=True)
    model_text = (
        "the bundled demo model (signgen/assets/demo_model, 80x64)"
        if args.model == "demo"
        else "tiny random-init model (configs/model/tiny.yaml)"
    )
    ratios = {}
    for mode in args.modes:
        short, long = (r for r in runs if r["mode"] == mode)
        ratios[mode] = (
            long["frames"],
            short["frames"],
            long["peak_rss_mib"] / short["peak_rss_mib"],
        )
    cmd = "python benchmarks/render_memory.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    lines = [
        "# Render memory: peak RSS vs sequence length",
        "",
        f"- command: `{cmd.strip()}`",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} torch thread(s), device cpu, fp32",
        f"- setup: `signgen render` in a fresh subprocess per mode and length, {model_text}, "
        f"first frame {w}x{h}, {args.steps} steps, batch size {args.batch_size}, output H.264 "
        "mp4; temporal: `--temporal` on the same model with a zero-initialised motion module "
        f"({motion_cfg.num_attention_heads} heads, {motion_cfg.norm_num_groups} groups, max "
        f"{motion_cfg.max_frames} frames), its default windows of {window} frames overlapping "
        f"by {overlap}, {max(1, args.batch_size // window)} window(s) per model call{layers}",
        "",
        "| mode | frames | peak RSS (MiB) | seconds | frames/s |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r['mode']} | {r['frames']} | {r['peak_rss_mib']:.1f} | {r['seconds']:.1f} | "
            f"{r['frames'] / r['seconds']:.1f} |"
            for r in runs
        ),
        "",
        *(
            f"**{mode}: ratio {nl}/{ns} frames: {ratio:.3f}** "
            f"(target <= 1.3: {'met' if ratio <= 1.3 else 'NOT met'})."
            for mode, (nl, ns, ratio) in ratios.items()
        ),
        "",
        "Peak RSS includes the Python interpreter, torch/diffusers/transformers and the parsed "
        "keypoint file (T x 133 x 3 floats); temporal renders also hold the clip's latents ("
        + ("48 x 20 x 16" if args.model == "demo" else "4 x 4 x 4")
        + " floats per frame for this model: its initial noise, denoised in place) and its "
        "fusion embeddings.",
    ]
    write_result(args.output, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
