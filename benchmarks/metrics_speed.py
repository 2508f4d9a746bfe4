"""SSIM speed: signgen's batched SSIM vs skimage on the same 260x210 image pairs.

Both run in the same process on the same pairs (Phoenix-sized uint8 RGB); the script
reports images/s for each, the ratio, and the largest difference between the two scores,
and writes benchmarks/results/metrics_speed.md (command, date, machine included).

    .venv/bin/python benchmarks/metrics_speed.py --pairs 200
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

from signgen.metrics.ssim import ssim_uint8

HEADER = """# SSIM speed: signgen vs skimage

Same process, same 260x210 uint8 RGB pairs; images/s (best of N), ratio to skimage
`structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=255, channel_axis=-1)`, and the largest score difference. The build machine
is shared (2 cores; the load average is recorded with each run), so ratios vary by run.

"""


def make_pairs(n: int, h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W, 3) uint8 ground truth (smooth + texture) and a noisy, shifted prediction."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    gt = np.empty((n, h, w, 3), np.uint8)
    pred = np.empty_like(gt)
    for i in range(n):
        base = np.stack([xx * 255 / w, yy * 255 / h, 128 + 100 * np.sin((xx + i) / 6.0)], -1)
        g = np.clip(base + rng.normal(0, 12, base.shape), 0, 255)
        p = np.clip(np.roll(g, 1 + i % 3, axis=1) + rng.normal(0, 20, base.shape), 0, 255)
        gt[i], pred[i] = g.astype(np.uint8), p.astype(np.uint8)
    return gt, pred


def time_skimage(gt: np.ndarray, pred: np.ndarray) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    scores = [
        structural_similarity(
            g,
            p,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=-1,
        )
        for g, p in zip(gt, pred)
    ]
    return time.perf_counter() - t0, np.asarray(scores)


def time_ours(gt, pred, batch: int, backend: str, device: str) -> tuple[float, np.ndarray]:
    g_all = torch.from_numpy(gt).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
    p_all = torch.from_numpy(pred).permute(0, 3, 1, 2)
    ssim_uint8(p_all[:2].to(device), g_all[:2].to(device), backend=backend)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = []
    for i in range(0, len(gt), batch):
        p = p_all[i : i + batch].to(device)
        g = g_all[i : i + batch].to(device)
        out.append(ssim_uint8(p, g, backend=backend).cpu())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, torch.cat(out).numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200, help="image pairs (default: 200)")
    ap.add_argument("--size", default="260x210", help="HxW (default: 260x210, Phoenix)")
    ap.add_argument("--batch", type=int, default=25, help="our batch size (default: 25)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N timings (default: 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "-o", "--output", default=str(Path(__file__).parent / "results" / "metrics_speed.md")
    )
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    gt, pred = make_pairs(args.pairs, h, w, args.seed)

    runs = [("skimage structural_similarity (float64, 1 thread)", "skimage", None)]
    runs.append(("signgen ssim_uint8, backend=opencv (CPU default)", "opencv", "cpu"))
    runs.append(("signgen ssim_uint8, backend=torch (conv2d) on CPU", "torch", "cpu"))
    if torch.cuda.is_available():
        runs.append(("signgen ssim_uint8, backend=torch on CUDA", "torch", "cuda"))

    results = []
    ref_scores = None
    for label, backend, device in runs:
        best = float("inf")
        for _ in range(args.repeats):
            if backend == "skimage":
                dt_s, scores = time_skimage(gt, pred)
            else:
                dt_s, scores = time_ours(gt, pred, args.batch, backend, device)
            best = min(best, dt_s)
        if ref_scores is None:
            ref_scores = scores
        diff = float(np.abs(scores - ref_scores).max())
        results.append((label, args.pairs / best, diff))
        print(f"{label:<52} {args.pairs / best:9.1f} images/s  max|diff| {diff:.2e}")

    sk_rate = results[0][1]
    cmd = "python " + shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    load = os.getloadavg()
    lines = [
        f"## run {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        "",
        f"- command: `{cmd}`",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
        f"- data: {args.pairs} pairs of {h}x{w} uint8 RGB (seed {args.seed}), "
        f"batch {args.batch}, best of {args.repeats}",
        "",
        "| implementation | images/s | vs skimage | max abs diff vs skimage |",
        "|---|---:|---:|---:|",
    ]
    for label, rate, diff in results:
        lines.append(f"| {label} | {rate:.1f} | {rate / sk_rate:.1f}x | {diff:.1e} |")
    lines.append("")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Runs are appended (newest last) so that noisy measurements stay visible side by side.
    header = "" if out.exists() else HEADER
    with open(out, "a", encoding="utf-8") as fh:
        fh.write(header + "\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
