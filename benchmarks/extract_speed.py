"""Keypoint extraction speed: frames/s of `signgen keypoints extract`, HRNet beside MediaPipe.

Both backends run through the same code as the CLI on the same frames, side by side in one
run, and the results go to benchmarks/results/extract_speed.md:

- HRNet: the real mmpose model of a named config with *random* weights (speed does not depend
  on them; no checkpoint is needed), ``MMPoseWholeBody`` + ``extract_keypoints`` (decode, crop
  pipeline, forward, heatmap decoding) at several batch sizes.
- MediaPipe Holistic: ``extract_keypoints_mediapipe`` (video mode, as for a clip), on CPU.

The frames are the ground-truth panels of the real Phoenix sample GIFs when the shared data
are there (``../shared/data`` or ``$SIGNGEN_SHARED_DATA``; read at run time, written only to a
temporary folder), else a synthetic Phoenix-sized clip. On the Phoenix samples the run also
records, per clip, the fraction of frames in which MediaPipe found the body, the face and each
hand (video and static mode) and the time per frame, and the time per box of the MediaPipe
Hands detector behind ``--hand-detector mediapipe``.

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
from signgen.keypoints.holistic import HAND_CONTEXT
from signgen.keypoints.layout import FACE, LEFT_HAND, RIGHT_HAND
from signgen.keypoints.models import get_model
from signgen.video import write_png_frames

RESULTS = Path(__file__).parent / "results" / "extract_speed.md"
REPO = Path(__file__).resolve().parent.parent
GT_PANEL = slice(420, 630)  # the ground-truth panel of the FPDM sample GIFs (210x260 each)


def phoenix_clips() -> dict[str, np.ndarray]:
    """name -> (T, 260, 210, 3) ground-truth frames of each Phoenix sample GIF ({} if absent)."""
    from PIL import Image, ImageSequence

    root = Path(os.environ.get("SIGNGEN_SHARED_DATA") or REPO.parent / "shared" / "data")
    clips = {}
    for gif in sorted((root / "phoenix_fpdm_samples").glob("*.gif")):
        with Image.open(gif) as im:
            frames = [np.asarray(f.convert("RGB"))[:, GT_PANEL] for f in ImageSequence.Iterator(im)]
        clips[gif.stem] = np.stack(frames)
    return clips


def found_rates(points: np.ndarray) -> dict[str, float]:
    """Fraction of frames with the body, the face and each hand found ((T, 133, 3) points)."""
    return {
        "body": float((points[:, :17, 2] > 0).any(axis=1).mean()),
        "face": float((points[:, FACE, 2] > 0).all(axis=1).mean()),
        "left hand": float((points[:, LEFT_HAND, 2] > 0).all(axis=1).mean()),
        "right hand": float((points[:, RIGHT_HAND, 2] > 0).all(axis=1).mean()),
    }


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


def time_hrnet(args, spec, ckpt, device, video: Path, n: int, tmp: Path) -> list[tuple]:
    """(label, frames, seconds) of HRNet at each batch size on ``video``."""
    rows = []
    for bs in args.batch_sizes:
        model = MMPoseWholeBody(
            spec.config_path(), ckpt, device=device, batch_size=bs,
            flip_test=False if args.no_flip_test else None,
        )  # fmt: skip
        warm = tmp / f"warm{bs}"  # one batch to warm up allocator / cuDNN
        write_png_frames(warm, read_first(video, min(bs, n)))
        extract_keypoints(warm, model, bbox="full", batch_size=bs, progress=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        seq = extract_keypoints(video, model, bbox="auto", batch_size=bs, progress=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        sec, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert len(seq) == n
        rows.append((f"HRNet ({spec.name}, random weights), batch {bs}, {device}", n, sec, cpu))
        print(f"hrnet batch {bs:3d}: {n / sec:.3f} frames/s ({sec:.1f} s)", file=sys.stderr)
        del model
    return rows


def read_first(video: Path, n: int) -> np.ndarray:
    from signgen.video import read_frames

    return read_frames(video, 0, n)


def time_mediapipe(video: Path, n: int, static: bool = False) -> tuple[tuple, np.ndarray]:
    """((label, frames, seconds), (T, 133, 3) points) of MediaPipe Holistic on ``video``."""
    from signgen.keypoints.holistic import extract_keypoints_mediapipe

    t0, c0 = time.perf_counter(), time.process_time()
    seq = extract_keypoints_mediapipe(video, static=static, progress=False)
    sec, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(seq) == n
    mode = "static" if static else "video"
    print(f"mediapipe {mode}: {n / sec:.3f} frames/s ({sec:.1f} s)", file=sys.stderr)
    return (f"MediaPipe Holistic ({mode} mode), CPU", n, sec, cpu), seq.points


def time_hand_detector(
    frames: np.ndarray, points: np.ndarray, context: float
) -> tuple[int, int, float]:
    """(boxes, hands found, seconds) of the MediaPipe Hand PE detector on the GT hand boxes,
    each seen through a window ``context`` times the 60x60 patch."""
    from signgen.keypoints.holistic import MediaPipeHandDetector
    from signgen.metrics.hand import hand_crop_boxes

    detector = MediaPipeHandDetector(context=context)
    boxes = []
    for p in points:
        b = hand_crop_boxes(p, frames.shape[1], frames.shape[2])
        boxes.append(b[b[:, 0] >= 0].astype(np.float32))
    t0 = time.perf_counter()
    out = detector(list(frames), boxes)
    sec = time.perf_counter() - t0
    n = sum(len(b) for b in boxes)
    found = sum(int((k[:, 0, 2] > 0).sum()) for k in out)
    return n, found, sec


def main() -> None:
    # Long: a benchmark script's options, its runs per backend and batch size, and its
    # result tables, read top to bottom.
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="hrnet-w32-wholebody")
    ap.add_argument("--frames", type=int, default=32, help="frames per measured speed run")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--size", default="210x260", help="synthetic video WIDTHxHEIGHT (no samples)")
    ap.add_argument("--device", default="auto", help="HRNet's device (MediaPipe runs on CPU)")
    ap.add_argument("--no-flip-test", action="store_true")
    ap.add_argument("--backends", nargs="+", choices=("hrnet", "mediapipe"),
                    default=["hrnet", "mediapipe"])  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    device = str(resolve_device(args.device))  # text, as the extractor takes it
    spec = get_model(args.model)
    clips = phoenix_clips()
    rows: list[tuple] = []
    detection: list[tuple] = []
    hands: list[tuple] = []
    graph_start = float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if clips:  # the speed runs use the first frames of the samples, one clip after another
            frames = np.concatenate(list(clips.values()))[: args.frames]
            source = f"the first {len(frames)} ground-truth frames of the Phoenix samples"
        else:
            width, height = (int(v) for v in args.size.lower().split("x"))
            rng = np.random.default_rng(0)
            frames = rng.integers(0, 255, (args.frames, height, width, 3), dtype=np.uint8)
            source = f"a synthetic {width}x{height} noise clip (no Phoenix samples found)"
        n = len(frames)
        video = tmp / "clip"  # a Phoenix-style frame folder: the same input for both backends
        write_png_frames(video, frames)
        if "hrnet" in args.backends:
            ckpt = tmp / spec.checkpoint
            make_checkpoint(spec.config_path(), ckpt)
            rows += time_hrnet(args, spec, ckpt, device, video, n, tmp)
        if "mediapipe" in args.backends:
            from signgen.keypoints.holistic import HolisticExtractor

            HolisticExtractor().close()  # imports mediapipe (once per process)
            t0 = time.perf_counter()
            HolisticExtractor().close()  # graph start, paid once per clip (included below)
            graph_start = time.perf_counter() - t0
            rows.append(time_mediapipe(video, n)[0])
            for name, clip in clips.items():
                folder = tmp / name
                write_png_frames(folder, clip)
                per_mode = {}
                for static in (False, True):
                    (_, t, sec, _), pts = time_mediapipe(folder, len(clip), static=static)
                    per_mode[static] = (sec / t, found_rates(pts), pts)
                detection.append((name, len(clip), per_mode))
            # the Hand PE detector on every clip's Holistic hand boxes: the default window
            # (2x the patch) beside the bare 60x60 patch
            hands = []
            for (name, _, per_mode), clip in zip(detection, clips.values()):
                for context in (HAND_CONTEXT, 1.0):
                    hands.append(
                        (name, context, *time_hand_detector(clip, per_mode[False][2], context))
                    )

    base = rows[0][2] / rows[0][1]
    base_cpu = rows[0][3] / rows[0][1]
    flip = "off" if args.no_flip_test else "config default (on)"
    lines = [
        f"## {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, {device}",
        "",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        f"- machine: {machine()}",
        f"- frames: {source}; HRNet flip test {flip}, bbox auto; HRNet runs with random "
        "weights (the compute does not depend on them; no checkpoint was available)",
        "",
        "| backend | frames | seconds | frames/s | ms/frame | vs the first row | CPU ms/frame "
        "| CPU time vs the first row |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {label} | {k} | {sec:.1f} | {k / sec:.3f} | {1000 * sec / k:.0f} | "
        f"{base / (sec / k):.2f}x | {1000 * cpu / k:.0f} | {base_cpu / (cpu / k):.2f}x |"
        for label, k, sec, cpu in rows
    ]
    lines += [
        "",
        "CPU time is the process's own (all its threads), less sensitive than wall time to",
        "other jobs on a shared machine.",
    ]
    if "mediapipe" in args.backends:
        lines += [
            "",
            f"MediaPipe's times include starting its graph once per clip ({1000 * graph_start:.0f} "
            "ms here, measured separately); HRNet's exclude loading the model and one warm-up batch.",
        ]
    if detection:
        lines += [
            "",
            "MediaPipe Holistic on the Phoenix samples (ground-truth panels, 210x260): fraction of",
            "frames in which each part was found, and the time per frame.",
            "",
            "| clip | frames | mode | body | face | left hand | right hand | ms/frame |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for name, t, per_mode in detection:
            for static, (spf, rates, _) in per_mode.items():
                cells = " | ".join(f"{100 * v:.0f} %" for v in rates.values())
                mode = "static" if static else "video"
                lines.append(f"| {name} | {t} | {mode} | {cells} | {1000 * spf:.0f} |")
    if hands:
        lines += [
            "",
            "MediaPipe Hands as the Hand PE detector (`--hand-detector mediapipe`), on the 60x60",
            "patches around the knuckles of the hands Holistic found (video mode): hands found",
            "and time per patch, through the default window (2x the patch) and the bare patch.",
            "",
            "| clip | window | patches | hands found | ms/patch |",
            "|---|---|---:|---:|---:|",
        ]
        for name, context, boxes, found, sec in hands:
            lines.append(
                f"| {name} | {context:g}x ({round(60 * context)} px) | {boxes} | "
                f"{100 * found / max(boxes, 1):.0f} % | {1000 * sec / max(boxes, 1):.0f} |"
            )
    header = (
        "# Keypoint extraction speed\n\n"
        "Written by benchmarks/extract_speed.py (newest run first). Each run measures its rows\n"
        "side by side in one process; the ratio column is the comparable number when the\n"
        "machine is shared.\n\n"
    )
    previous = args.out.read_text() if args.out.exists() else ""
    rest = previous[previous.index("## ") :] if "## " in previous else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + "\n".join(lines) + "\n\n" + rest)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
