"""Pose drawing throughput (frames/s, one thread) at 210x260 and 512x512.

Draws random plausible whole-body poses (signgen.pose.synthetic) with the shipped
renderer, side by side in the same run with two alternatives: the 18-point body only,
and 2x supersampling (draw at twice the size, area-downscale), which is the obvious
other way to get resolution-independent drawings. Reports the median of several
interleaved runs. Writes benchmarks/results/pose_draw_speed.md.

    .venv/bin/python benchmarks/pose_draw_speed.py [--poses 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from _common import machine  # benchmarks/ is on sys.path when a script runs

from signgen.pose import draw_pose, pose_to_tensor
from signgen.pose.draw import coco133_to_openpose18
from signgen.pose.synthetic import random_poses

RESULTS = Path(__file__).resolve().parent / "results" / "pose_draw_speed.md"


def versions() -> dict[str, str]:
    import torch

    return {"opencv": cv2.__version__, "numpy": np.__version__, "torch": torch.__version__}


def fps_of(fn: Callable[[np.ndarray], object], poses: np.ndarray) -> float:
    t0 = time.perf_counter()
    for p in poses:
        fn(p)
    return len(poses) / (time.perf_counter() - t0)


# Over 80 lines: a benchmark script; the measurement and its report read top to bottom.
def main() -> None:
    # Long: a benchmark script's options, its side-by-side runs and its result table, read
    # top to bottom.
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--poses", type=int, default=200, help="distinct poses per run (default 200)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per variant (default 5)")
    ap.add_argument("--sizes", default="210x260,512x512", help="comma-separated WxH list")
    ap.add_argument("--out", type=Path, default=RESULTS, help="markdown results file")
    args = ap.parse_args()
    cv2.setNumThreads(1)  # drawing is single-threaded; keep resize single-threaded too
    torch_threads = None
    try:
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
    except ImportError:
        pass

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    for w, h in sizes:
        poses = random_poses(args.poses, w, h, rng=0)  # (N, 133, 3)
        body18 = coco133_to_openpose18(poses)  # (N, 18, 3)
        ss = (2 * w, 2 * h)
        variants: dict[str, Callable] = {
            "whole body 133 (shipped)": lambda p, w=w, h=h: draw_pose(p, (w, h)),
            "whole body + pose_to_tensor": lambda p, w=w, h=h: pose_to_tensor(draw_pose(p, (w, h))),
            "2x supersampled + INTER_AREA": lambda p, w=w, h=h, ss=ss: cv2.resize(
                draw_pose(p, (w, h), ss), (w, h), interpolation=cv2.INTER_AREA
            ),
        }
        inputs = {k: poses for k in variants}
        variants["openpose-18 body only"] = lambda p, w=w, h=h: draw_pose(
            p, (w, h), layout="openpose-18"
        )
        inputs["openpose-18 body only"] = body18
        runs: dict[str, list[float]] = {k: [] for k in variants}
        for k, fn in variants.items():  # warm-up
            fps_of(fn, inputs[k][:20])
        for _ in range(args.repeats):
            for k, fn in variants.items():  # interleaved
                runs[k].append(fps_of(fn, inputs[k]))
        base = statistics.median(runs["whole body 133 (shipped)"])
        for k, v in runs.items():
            med = statistics.median(v)
            rows.append((f"{w}x{h}", k, med, min(v), max(v), 1000 / med, med / base))

    lines = ["| size | variant | frames/s (median) | min-max | ms/frame | vs shipped |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.0f}-{r[4]:.0f} | {r[5]:.2f} | {r[6]:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)

    exe = os.path.relpath(sys.executable) if not sys.executable.startswith("/usr") else "python"
    cmd = " ".join(shlex.quote(a) for a in [exe, *sys.argv])
    info_lines = [f"- {k}: {v}" for k, v in {**machine(), **versions()}.items()]
    doc = f"""# Pose drawing speed

`signgen.pose.draw_pose` on {args.poses} random plausible whole-body poses
(`signgen.pose.synthetic.random_poses`, seed 0) per size, one thread (cv2 and torch
set to 1 thread; torch default was {torch_threads}). Warm-up first, then {args.repeats}
timed runs per variant, interleaved; median and range of frames/s.

Variants: the shipped renderer (calibrated antialiased polygons); the same plus
`pose_to_tensor` (what the model consumes); the 2x supersampling alternative (draw at
2x, `cv2.resize` INTER_AREA); the DeepFashion 18-point body only.

- command: `{cmd}`
- date: {dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
{chr(10).join(info_lines)}

{table}

The machine is shared (see the load average): absolute numbers are noisy; ratios from
the same interleaved run are the figures to compare.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(doc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
