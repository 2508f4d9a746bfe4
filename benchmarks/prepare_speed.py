"""How fast is `signgen prepare phoenix`? A synthetic tree of 200 videos x 100 frames.

Builds a PHOENIX-2014-T tree with the real layout (210x260 PNGs, corpus CSVs, MSKA
pickles) in a temporary folder, then times, side by side in one run:

1. ``signgen prepare phoenix`` with the default cheap PNG check (signature + IHDR + IEND),
2. the same with ``--check-images`` (every PNG fully decoded by PIL),
3. the per-file cost of the three PNG checks (header/trailer bytes, PIL ``Image.open``
   without decoding, full PIL decode).

Only ``prepare`` is timed (``prepare_phoenix``, what the command runs, called in this
process), not building the tree; the keypoint-JSON share comes from the phase timings the
prepare report records (``PrepareReport.seconds``). Results go to
benchmarks/results/prepare_speed.md.

    .venv/bin/python benchmarks/prepare_speed.py [--videos 200] [--frames 100]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import os
import pickle
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from signgen.data import phoenix as ph

W, H = 210, 260
RESULTS = Path(__file__).resolve().parent / "results" / "prepare_speed.md"


def build_tree(base: Path, videos: int, frames: int, seed: int = 0) -> tuple[Path, Path]:
    """Phoenix layout; frames cycle through 8 distinct noisy 210x260 PNGs (~real file size)."""
    rng = np.random.default_rng(seed)
    pngs = []
    for i in range(8):
        img = np.clip(rng.normal(120 + 10 * i, 25, (H, W, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    root, kp_dir = base / "PHOENIX-2014-T", base / "mska"
    kp_dir.mkdir(parents=True)
    splits = {"train": int(videos * 0.8), "dev": videos // 10}
    splits["test"] = videos - sum(splits.values())
    for split, n in splits.items():
        rows, samples = [], {}
        for v in range(n):
            name = f"{split}_video_{v:04d}"
            folder = root / "features" / "fullFrame-210x260px" / split / name
            folder.mkdir(parents=True)
            for t in range(frames):
                (folder / f"images{t + 1:04d}.png").write_bytes(pngs[(v + t) % len(pngs)])
            rows.append(
                [name, f"{name}/1/*.png", "-1", "-1", f"Signer{v % 9 + 1:02d}", "A B", "a ."]
            )
            kp = rng.uniform(0, 200, (frames, 133, 3)).astype(np.float32)
            samples[f"{split}/{name}"] = {"name": f"{split}/{name}", "gloss": "A B", "text": "a .",
                                          "num_frames": frames, "keypoint": torch.from_numpy(kp)}  # fmt: skip
        corpus = root / "annotations" / "manual" / f"PHOENIX-2014-T.{split}.corpus.csv"
        corpus.parent.mkdir(parents=True, exist_ok=True)
        with open(corpus, "w", newline="") as f:
            w = csv.writer(f, delimiter="|")
            w.writerow(ph.CORPUS_COLUMNS)
            w.writerows(rows)
        with open(kp_dir / f"Phoenix-2014T.{split}", "wb") as f:
            pickle.dump(samples, f)
    return root, kp_dir


def time_prepare(root: Path, kp: Path, out: Path, *, check_images: bool = False):
    """(wall, CPU) seconds of one `signgen prepare phoenix` run, in this process, and the
    report with its per-phase seconds."""
    shutil.rmtree(out, ignore_errors=True)
    w0, c0 = time.perf_counter(), time.process_time()
    report = ph.prepare_phoenix(root, kp, out, check_images=check_images, progress=False)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return (wall, cpu), report


def time_checks(files: list[Path]) -> dict[str, float]:
    """Seconds per file for each PNG check (files already in the page cache)."""

    def pil_open(path: Path):
        with Image.open(path) as im:
            return im.size

    out = {}
    for name, fn in (("header+trailer bytes (default)", ph.png_header_ok),
                     ("PIL Image.open (no decode)", pil_open),
                     ("PIL full decode (--check-images)", ph.png_decode_ok)):  # fmt: skip
        t0 = time.perf_counter()
        for p in files:
            assert fn(p) is not None
        out[name] = (time.perf_counter() - t0) / len(files)
    return out


def main_cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        root, kp = build_tree(base / "raw", args.videos, args.frames)
        build_s = time.perf_counter() - t0
        n_frames = args.videos * args.frames
        fast, fast_report = time_prepare(root, kp, base / "out_fast")
        json_wall, json_cpu = fast_report.seconds["keypoints"]
        full, _ = time_prepare(root, kp, base / "out_full", check_images=True)
        files = sorted((root / ph.FRAMES_SUBDIR / "train").glob("*/images*.png"))[:2000]
        checks = time_checks(files)
        with open(base / "out_fast" / "train_pairs.csv") as f:
            train_pairs = sum(1 for _ in f) - 1

    cmd = "python benchmarks/prepare_speed.py " + shlex.join(sys.argv[1:])
    lines = [
        "# `signgen prepare phoenix` speed",
        "",
        f"- command: `{cmd.strip()}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"(shared with other jobs, so timings are noisy), Python {platform.python_version()}, "
        f"torch {torch.__version__}",
        f"- tree: {args.videos} videos x {args.frames} frames = {n_frames} PNGs of 210x260 "
        f"(built in {build_s:.1f} s, not timed), MSKA pickles with torch tensors; "
        f"{train_pairs} train pairs (default 100,000)",
        "",
        "| run | wall (s) | CPU (s) | frames/s (wall) |",
        "|---|---:|---:|---:|",
        f"| prepare, default PNG check | {fast[0]:.2f} | {fast[1]:.2f} | {n_frames / fast[0]:,.0f} |",
        f"| - of which writing the per-video keypoint JSON | {json_wall:.2f} | {json_cpu:.2f} | |",
        f"| prepare `--check-images` (full decode) | {full[0]:.2f} | {full[1]:.2f} "
        f"| {n_frames / full[0]:,.0f} |",
        f"| ratio `--check-images` / default | {full[0] / fast[0]:.1f}x | {full[1] / fast[1]:.1f}x | |",
        "",
        "Per-PNG cost of each check (2,000 files, page cache warm):",
        "",
        "| check | us per file | relative |",
        "|---|---:|---:|",
    ]
    base_cost = checks["header+trailer bytes (default)"]
    for name, s in checks.items():
        lines.append(f"| {name} | {s * 1e6:.1f} | {s / base_cost:.1f}x |")
    lines += [
        "",
        f"CPU/wall of the default run: {fast[1] / fast[0]:.2f} (1.0 = one core all to itself; "
        "lower means the run waited for a core or for the disk, as on a shared machine).",
        "",
        "Times include everything `prepare` does: reading the corpus CSVs and MSKA pickles, "
        "checking every PNG, writing one keypoint JSON per video, the pair lists and the "
        "manifest. Full Phoenix-2014T has about 947,000 frames (827k train, 55.8k dev, "
        "64.6k test); scale the frames/s column to estimate.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main_cli()
