"""Decode throughput of decord vs PyAV on the same H.264 clips, through signgen.video.

Generates one clip per size (default 300 frames at 210x260 and 512x512, x264 crf 18,
preset medium, yuv420p), then decodes each clip in full with both backends, several
times, interleaved, and reports the median frames/s and the decord / PyAV ratio.
Writes benchmarks/results/decode_speed.md.

    .venv/bin/python benchmarks/decode_speed.py [--frames 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine  # benchmarks/ is on sys.path when a script runs

from signgen.pose import draw_pose
from signgen.pose.synthetic import random_pose
from signgen.video import iter_batches, probe, write_video

RESULTS = Path(__file__).resolve().parent / "results" / "decode_speed.md"


def versions() -> dict[str, str]:
    import av
    import cv2
    import decord

    return {"decord": decord.__version__, "av (PyAV)": av.__version__,
            "FFmpeg (PyAV)": ".".join(map(str, av.library_versions["libavcodec"])) + " (libavcodec)",
            "numpy": np.__version__, "opencv": cv2.__version__}  # fmt: skip


def make_clip(path: Path, n: int, width: int, height: int) -> None:
    """A signer-like clip: grey background, a moving textured blob, a pose overlay."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = rng.integers(0, 24, (height, width, 1), dtype=np.uint8)

    def frames():
        for t in range(n):
            base = (
                110
                + 40 * np.sin(x / 37 + t / 9)[..., None]
                + 30 * np.cos(y / 29 - t / 7)[..., None]
            )
            img = np.clip(base, 0, 255).astype(np.uint8) + texture
            pose = draw_pose(random_pose(width, height, t // 5), (width, height))
            yield np.maximum(img, pose)

    write_video(path, frames(), fps=25, crf=18)


def decode_fps(path: Path, backend: str, n: int) -> float:
    t0 = time.perf_counter()
    count = sum(len(b) for b in iter_batches(path, 32, backend=backend))
    dt_s = time.perf_counter() - t0
    assert count == n, (count, n)
    return count / dt_s


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--frames", type=int, default=300, help="frames per clip (default 300)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per backend (default 5)")
    ap.add_argument("--sizes", default="210x260,512x512", help="comma-separated WxH list")
    ap.add_argument("--out", type=Path, default=RESULTS, help="markdown results file")
    args = ap.parse_args()

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for w, h in sizes:
            path = Path(d) / f"clip_{w}x{h}.mp4"
            make_clip(path, args.frames, w, h)
            info = probe(path, backend="pyav")
            runs: dict[str, list[float]] = {"decord": [], "pyav": []}
            for b in runs:  # warm-up (page cache, lazy imports)
                decode_fps(path, b, args.frames)
            for _ in range(args.repeats):
                for b in runs:  # interleaved so that machine noise hits both alike
                    runs[b].append(decode_fps(path, b, args.frames))
            med = {b: statistics.median(v) for b, v in runs.items()}
            rows.append((f"{w}x{h}", info.num_frames, path.stat().st_size / 1e6, med["decord"],
                         min(runs["decord"]), max(runs["decord"]), med["pyav"], min(runs["pyav"]),
                         max(runs["pyav"]), med["decord"] / med["pyav"]))  # fmt: skip

    header = ("| size | frames | MB | decord fps (median) | decord min-max | PyAV fps (median) "
              "| PyAV min-max | decord / PyAV |")  # fmt: skip
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.0f} | {r[4]:.0f}-{r[5]:.0f} | {r[6]:.0f} "
            f"| {r[7]:.0f}-{r[8]:.0f} | {r[9]:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)

    exe = os.path.relpath(sys.executable) if not sys.executable.startswith("/usr") else "python"
    cmd = " ".join(shlex.quote(a) for a in [exe, *sys.argv])
    info_lines = [f"- {k}: {v}" for k, v in {**machine(), **versions()}.items()]
    doc = f"""# Decode speed: decord vs PyAV

Full sequential decode of one H.264 clip per size (x264 crf 18, preset medium, yuv420p,
25 fps; grey moving background + texture + pose overlay) through
`signgen.video.iter_batches(path, 32, backend=...)`, RGB uint8 out. Warm-up run first,
then {args.repeats} timed runs per backend, interleaved; median and range of frames/s.

- command: `{cmd}`
- date: {dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
{chr(10).join(info_lines)}

{table}

The machine is shared (see the load average): absolute numbers are noisy, the ratio
measured in the same interleaved run is the figure to compare. signgen decodes with PyAV
by default (`backend="auto"`, signgen/video/decode.py) unless this ratio shows decord
clearly ahead at both sizes.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(doc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
