"""``signgen pose draw``: render a keypoint sequence as a pose video or PNG frames."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

from signgen.errors import InputError

logger = logging.getLogger(__name__)

DRAW_EPILOG = """\
examples:
  signgen pose draw seq.json -o poses.mp4
  signgen pose draw Phoenix-2014T.test --sample NAME --size 512x512 -o poses.mp4
  signgen pose draw seq.json -o frames/                 # images0001.png, images0002.png ...
  signgen pose draw openpose_json/ --src-size 1280x720 --fps 30 -o poses.mp4
  signgen pose draw fashion.csv --sample NAME --layout openpose-18 -o pose.mp4
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    pose = subparsers.add_parser(
        "pose",
        help="draw pose images from keypoints",
        description="Pose images: the RGB pictures of keypoints that condition the model.",
    )
    pose_sub = pose.add_subparsers(dest="pose_command", metavar="COMMAND")
    pose.set_defaults(func=lambda args: _no_subcommand(pose))

    p = pose_sub.add_parser(
        "draw",
        help="draw every frame of a keypoint sequence into a video or PNG frames",
        description=(
            "Draw every frame of a keypoint sequence (any format `signgen keypoints` reads)\n"
            "as a pose image: coloured body limbs, per-finger coloured hands, white face\n"
            "dots, on black. Line widths scale with the output size, so a pose drawn at one\n"
            "size matches the same pose drawn at another size and resized. Shows a progress\n"
            "bar on stderr. A video appears under its name only once complete; PNG frames\n"
            "are written one by one, each atomically."
        ),
        epilog=DRAW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("seq", metavar="SEQ", help="keypoint file or folder (signgen JSON, MSKA "
                   "pickle, OpenPose/mmpose JSON, DeepFashion CSV, PCDMs .txt)")  # fmt: skip
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT",
        help="output video (.mp4, .mkv, .mov; H.264) or, when OUT is a folder or ends "
        "with '/', a folder of PNG frames named images0001.png, ... (Phoenix layout)",
    )  # fmt: skip
    p.add_argument(
        "--size", metavar="WxH",
        help="size of the drawn images, e.g. 512x512 (default: the sequence's frame size)",
    )  # fmt: skip
    p.add_argument(
        "--src-size", metavar="WxH",
        help="frame size the keypoints are measured in, for formats that store none "
        "(OpenPose, mmpose)",
    )  # fmt: skip
    p.add_argument(
        "--threshold", type=float, default=0.3, metavar="T",
        help="skip points with a score below T, and bones touching them (default: 0.3)",
    )  # fmt: skip
    p.add_argument(
        "--sample", metavar="NAME",
        help="sample name inside a multi-sample file (MSKA pickle, DeepFashion CSV)",
    )  # fmt: skip
    p.add_argument(
        "--fps", type=float, metavar="F",
        help="frame rate of the output video (default: the sequence's; required for "
        "OpenPose/mmpose input, which stores none)",
    )  # fmt: skip
    p.add_argument(
        "--brightness", action="store_true",
        help="scale colours by keypoint confidence (uncertain parts look dimmer)",
    )  # fmt: skip
    p.add_argument(
        "--layout", choices=("coco-wholebody-133", "openpose-18"),
        default="coco-wholebody-133",
        help="what to draw: the whole body with hands and face (default), or the "
        "18-point OpenPose body used for DeepFashion",
    )  # fmt: skip
    p.add_argument(
        "--crf", type=int, default=18,
        help="H.264 quality, 0 (lossless) .. 51; 18 is visually lossless (default: 18)",
    )  # fmt: skip
    p.set_defaults(func=_draw)


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _output_kind(out: str) -> str:
    """ "frames" for a folder of PNGs, "video" for a video file; InputError otherwise."""
    from signgen.video import VIDEO_SUFFIXES

    if out.endswith(("/", os.sep)) or Path(out).is_dir():
        return "frames"
    if Path(out).suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    raise InputError(
        f"-o {out}: use a video name ending in {', '.join(VIDEO_SUFFIXES)}, "
        "or a folder (ending in '/') for PNG frames"
    )


def _draw(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from signgen.fileio import refuse_overwriting_inputs
    from signgen.keypoints.io import load_keypoints, parse_size
    from signgen.pose.draw import coco133_to_openpose18, draw_pose
    from signgen.video import VideoWriter, write_png_frames

    kind = _output_kind(args.output)
    refuse_overwriting_inputs(args.output, {"SEQ": args.seq})
    out_size = parse_size(args.size) if args.size else None
    src_size = parse_size(args.src_size) if args.src_size else None
    if not math.isfinite(args.threshold) or args.threshold < 0:
        raise InputError(f"--threshold must be a number >= 0, got {args.threshold}")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise InputError(f"--fps must be a positive number, got {args.fps}")
    if not 0 <= args.crf <= 51:
        raise InputError(f"--crf must be in 0..51, got {args.crf}")

    seq = load_keypoints(args.seq, sample=args.sample, size=src_size, fps=args.fps)
    size = out_size or seq.size
    points = seq.points  # (T, 133, 3)
    if args.layout == "openpose-18":
        points = coco133_to_openpose18(points)  # (T, 18, 3)
    fps = args.fps or seq.fps

    def frames():
        for t in range(len(seq)):
            yield draw_pose(
                points[t], seq.size, size, threshold=args.threshold, layout=args.layout,
                confidence_brightness=args.brightness,
            )  # fmt: skip
            bar.update(1)

    with tqdm(total=len(seq), desc="pose draw", unit="frame", file=sys.stderr) as bar:
        if kind == "frames":
            write_png_frames(args.output, frames())
        else:
            with VideoWriter(args.output, fps, *size, crf=args.crf) as writer:
                writer.write_batch(frames())
    logger.info(
        "wrote %d pose frames (%dx%d, %g fps) to %s", len(seq), size[0], size[1], fps, args.output
    )
    return 0
