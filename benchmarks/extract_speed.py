"""Keypoint extraction speed: frames/s of `signgen keypoints extract` at several batch sizes.

Runs the real mmpose model of a named config (random weights: speed does not depend on
them) through the same code as the CLI (``MMPoseWholeBody`` + ``extract_keypoints``: decode,
crop pipeline, forward, decode heatmaps) on a synthetic Phoenix-sized video, batch sizes side
by side in one run, and writes benchmarks/results/extract_speed.md.

    .venv/bin/python benchmarks/extract_speed.py                      # CPU (or GPU when visible)
    .venv/bin/python benchmarks/extract_speed.py --device cuda --frames 256 --batch-sizes 1 16 64
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from signgen.devices import resolve_device
from signgen.keypoints.extract import MMPoseWholeBody, extract_keypoints
from signgen.keypoints.models import get_model
from signgen.video import write_video

RESULTS = Path(__file__).parent / "results" / "extract_speed.md"


def make_checkpoint(config: Path, path: Path) -> None:
    """Random-init weights of ``config`` saved like a real checkpoint."""
    from mmengine.config import Config
    from mmpose.apis import init_model

    model = init_model(Config.fromfile(str(config)), None, device="cpu")
    torch.save({"state_dict": model.state_dict(), "meta": {"epoch": 0}}, path)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with_model = Path("/proc/cpuinfo")
    if with_model.exists():
        for line in with_model.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op threads), GPU: {gpu}; "
        f"1-min load average at start: {load:.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="hrnet-w32-wholebody")
    ap.add_argument("--frames", type=int, default=32, help="frames per measured run")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--size", default="210x260", help="video WIDTHxHEIGHT (Phoenix: 210x260)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-flip-test", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    device = str(resolve_device(args.device))  # text, as the extractor takes it
    width, height = (int(v) for v in args.size.lower().split("x"))
    spec = get_model(args.model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / spec.checkpoint
        make_checkpoint(spec.config_path(), ckpt)
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 255, (args.frames, height, width, 3), dtype=np.uint8)
        video = Path(tmp) / "clip.mp4"
        write_video(video, frames, fps=25)
        for bs in args.batch_sizes:
            model = MMPoseWholeBody(
                spec.config_path(), ckpt, device=device, batch_size=bs,
                flip_test=False if args.no_flip_test else None,
            )  # fmt: skip
            warm = Path(tmp) / "warm.mp4"  # one batch to warm up allocator / cuDNN
            write_video(warm, frames[: min(bs, args.frames)], fps=25)
            extract_keypoints(warm, model, bbox="full", batch_size=bs, progress=False)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            seq = extract_keypoints(video, model, bbox="auto", batch_size=bs, progress=False)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            sec = time.perf_counter() - t0
            assert len(seq) == args.frames
            rows.append((bs, args.frames, sec, args.frames / sec))
            print(f"batch {bs:3d}: {args.frames / sec:.3f} frames/s ({sec:.1f} s)", file=sys.stderr)
            del model

    base = rows[0][3]
    flip = "off" if args.no_flip_test else "config default (on)"
    lines = [
        f"## {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, {device}",
        "",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        f"- machine: {machine()}",
        f"- model: {spec.name} ({Path(spec.config).name}, random weights), device {device}, "
        f"flip test {flip}, bbox auto, {width}x{height} synthetic video",
        "",
        f"| batch size | frames | seconds | frames/s | vs batch {rows[0][0]} |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {b} | {n} | {s:.1f} | {f:.3f} | {f / base:.2f}x |" for b, n, s, f in rows]
    header = (
        "# Keypoint extraction speed\n\n"
        "Written by benchmarks/extract_speed.py (newest run first). Each run measures the batch\n"
        "sizes side by side in one process; the ratio column is the comparable number when the\n"
        "machine is shared.\n\n"
    )
    previous = args.out.read_text() if args.out.exists() else ""
    rest = previous[len(header) :] if previous.startswith(header) else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + "\n".join(lines) + "\n\n" + rest)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
