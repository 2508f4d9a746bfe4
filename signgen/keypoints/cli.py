"""``signgen keypoints``: convert keypoint files to signgen JSON and describe them.

The mmpose commands (``extract``, ``models``) are registered by
:mod:`signgen.keypoints.extract_cli` (mmpose itself is imported only when they run).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from signgen.errors import InputError
from signgen.keypoints.filters import OneEuroConfig

_ONE_EURO = OneEuroConfig()  # defaults shown in --help

FORMAT_HELP = (
    "input format (default: auto = detect from the path and content). "
    "signgen: signgen JSON; mska: MSKA Phoenix-2014T pickle; openpose: folder of OpenPose "
    "*_keypoints.json; mmpose: mmpose inferencer prediction JSON (file or folder); "
    "deepfashion: DeepFashion name:keypoints_y:keypoints_x CSV; pcdms: PCDMs pose .txt; "
    "pose: pose-format .pose file (MediaPipe Holistic, OpenPose-135, OpenPose, COCO-WholeBody)"
)

CONVERT_EPILOG = """\
formats read (auto-detected):
  signgen JSON        {"layout", "width", "height", "fps", "frames": T x 133 x [x, y, score]}
  MSKA pickle         Phoenix-2014T.train/.dev/.test; 210x260, 25 fps; needs --sample NAME
                      when it holds several samples (read with a restricted unpickler)
  OpenPose folder     *_keypoints.json per frame (BODY_25 or COCO-18, hands, face); needs
                      --size and --fps
  mmpose JSON         MMPoseInferencer(pred_out_dir=...) output; needs --size and --fps
  DeepFashion CSV     name:keypoints_y:keypoints_x on 176x256; every row becomes a frame
                      unless --sample NAME picks one
  PCDMs .txt          18 rows "x y" (+40 px x-offset) on 176x256
  pose-format .pose   MediaPipe Holistic (with or without world landmarks), OpenPose-135,
                      OpenPose or COCO-WholeBody 133 headers; size and fps from the file

Output: signgen JSON, or a pose-format .pose file (COCO-WholeBody 133 header) when OUT
ends in .pose.

Missing points get score 0. When several people are detected (OpenPose, mmpose) the main
signer is kept: the largest bounding box area x mean keypoint confidence.

examples:
  signgen keypoints convert Phoenix-2014T.test --sample NAME -o seq.json
  signgen keypoints convert openpose_json/ --size 1280x720 --fps 30 -o seq.json
  signgen keypoints convert preds.json --size 210x260 --fps 25 --threshold 0.3 \\
      --interpolate-gaps 3 --smooth -o seq.json
  signgen keypoints convert holistic.pose -o seq.json     # a MediaPipe Holistic .pose file
  signgen keypoints convert seq.json -o seq.pose          # signgen -> pose-format
"""

INFO_EPILOG = """\
A hand is missing in a frame when all its 21 scores are 0 (or below --threshold).

examples:
  signgen keypoints info seq.json
  signgen keypoints info Phoenix-2014T.dev --sample NAME --json
"""


def _add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help="keypoint file or folder (see formats below)")
    p.add_argument(
        "--sample",
        metavar="NAME",
        help="sample to read from a multi-sample file (MSKA pickle, DeepFashion CSV)",
    )
    p.add_argument(
        "--size",
        metavar="WxH",
        help="frame size in pixels, e.g. 210x260. Required for OpenPose and mmpose input "
        "(which do not store it); for other formats the points are rescaled to it",
    )
    p.add_argument(
        "--fps",
        type=float,
        metavar="F",
        help="frame rate. Required for OpenPose and mmpose input; overrides the stored or "
        "default one otherwise (MSKA and DeepFashion default to 25)",
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=("auto", "signgen", "mska", "openpose", "mmpose", "deepfashion", "pcdms", "pose"),
        help=FORMAT_HELP,
    )


# Over 80 lines: argparse declarations only (one call per option of each subcommand).
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``signgen keypoints {convert,info,...}`` to the top-level subparsers."""
    # Long: argparse declarations, one option per statement, each with its --help text.
    kp = subparsers.add_parser(
        "keypoints",
        help="convert and inspect keypoint files (signgen JSON, MSKA, OpenPose, mmpose, ...)",
        description="Read keypoint files in any supported format, clean them up, and\n"
        "write signgen's sequence JSON (COCO-WholeBody 133 points).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kp_sub = kp.add_subparsers(
        dest="keypoints_command", metavar="ACTION", required=True, parser_class=type(kp)
    )

    conv = kp_sub.add_parser(
        "convert",
        help="convert a keypoint file to signgen JSON (optionally threshold/interpolate/smooth)",
        description="Convert a keypoint file or folder to signgen sequence JSON (COCO-WholeBody\n"
        "133 points). Clean-up options are off by default; they run in the order\n"
        "threshold -> gap interpolation -> smoothing. The output is written atomically.",
        epilog=CONVERT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_input_options(conv)
    conv.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output file: signgen JSON, or pose-format when it ends in .pose",
    )
    conv.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="set points with confidence below T to missing (score 0); default: keep all",
    )
    conv.add_argument(
        "--interpolate-gaps",
        type=int,
        default=0,
        metavar="N",
        help="fill runs of up to N missing frames per point by linear interpolation "
        "between the observed frames around them (default 0: off)",
    )
    conv.add_argument(
        "--smooth",
        action="store_true",
        help="confidence-aware One-Euro smoothing (Casiez et al., CHI 2012): points less "
        "confident than usual for them move the filter less",
    )
    conv.add_argument(
        "--min-cutoff",
        type=float,
        default=_ONE_EURO.min_cutoff,
        metavar="HZ",
        help="One-Euro minimum cutoff in Hz: lower = smoother still points, more lag "
        f"(default {_ONE_EURO.min_cutoff:g}; needs --smooth)",
    )
    conv.add_argument(
        "--beta",
        type=float,
        default=_ONE_EURO.beta,
        metavar="B",
        help="One-Euro speed coefficient, in 1 / (frame heights per second): higher = less "
        f"lag on fast motion (default {_ONE_EURO.beta:g}; needs --smooth)",
    )
    conv.add_argument(
        "--d-cutoff",
        type=float,
        default=_ONE_EURO.d_cutoff,
        metavar="HZ",
        help="One-Euro cutoff for the speed estimate in Hz "
        f"(default {_ONE_EURO.d_cutoff:g}; needs --smooth)",
    )
    conv.set_defaults(func=convert_command)

    info = kp_sub.add_parser(
        "info",
        help="describe a keypoint file: frames, fps, size, confidences, hand dropouts",
        description="Print the format, number of frames, fps, size, duration, mean confidence\n"
        "per body part and the frames in which a hand is missing.",
        epilog=INFO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_input_options(info)
    info.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="count a hand as missing when all its scores are below T (default: all 0)",
    )
    info.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    info.set_defaults(func=info_command)

    from signgen.keypoints import extract_cli

    extract_cli.register(kp_sub)

    _register_retarget(kp_sub)


def _load(args: argparse.Namespace):
    from signgen.keypoints.io import load_keypoints_and_format, parse_size

    size = parse_size(args.size) if args.size is not None else None
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise InputError(f"--fps must be a positive number, got {args.fps}")
    if args.threshold is not None and not (math.isfinite(args.threshold) and args.threshold >= 0):
        raise InputError(f"--threshold must be a number >= 0, got {args.threshold}")
    return load_keypoints_and_format(
        Path(args.input), sample=args.sample, size=size, fps=args.fps, fmt=args.format
    )


def convert_command(args: argparse.Namespace) -> int:
    from signgen.fileio import refuse_overwriting_inputs
    from signgen.keypoints.filters import process
    from signgen.keypoints.io import save_keypoints

    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"output {out} is a folder; give a file name such as {out / 'seq.json'}")
    refuse_overwriting_inputs(out, {"INPUT": args.input})
    if args.interpolate_gaps < 0:
        raise InputError(f"--interpolate-gaps must be >= 0, got {args.interpolate_gaps}")
    smooth = None
    if args.smooth:
        smooth = OneEuroConfig(min_cutoff=args.min_cutoff, beta=args.beta, d_cutoff=args.d_cutoff)
    seq, kind = _load(args)
    seq = process(seq, threshold=args.threshold, smooth=smooth, max_gap=args.interpolate_gaps)
    written = save_keypoints(seq, out)
    print(
        f"wrote {out}: {len(seq)} frames, {seq.width}x{seq.height}, {seq.fps:g} fps "
        f"(read as {kind}, written as {written})"
    )
    return 0


def _format_ranges(frames: list[int]) -> str:
    from signgen.keypoints.stats import frame_ranges

    runs = frame_ranges(frames)
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:12])
    return text + (f", ... ({len(runs) - 12} more runs)" if len(runs) > 12 else "")


def info_command(args: argparse.Namespace) -> int:
    from signgen.keypoints.stats import summarize

    seq, kind = _load(args)
    summary: dict[str, Any] = {"input": str(args.input), "format": kind}
    if args.sample is not None:
        summary["sample"] = args.sample
    summary.update(summarize(seq, threshold=args.threshold))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    n = summary["frames"]
    lines = [
        f"input:      {summary['input']}",
        f"format:     {kind}",
    ]
    if "sample" in summary:
        lines.append(f"sample:     {summary['sample']}")
    lines += [
        f"frames:     {n}",
        f"fps:        {seq.fps:g}",
        f"size:       {seq.width}x{seq.height}",
        f"duration:   {summary['duration_s']:.2f} s",
        "mean confidence:",
    ]
    lines += [f"  {part:<11} {v:.3f}" for part, v in summary["mean_confidence"].items()]
    for hand in ("left_hand", "right_hand"):
        missing = summary[f"missing_{hand}_frames"]
        label = hand.replace("_", " ")
        text = f"missing {label + ':':<12} {len(missing)} / {n} frames ({100 * len(missing) / n:.1f} %)"
        if missing:
            text += f": {_format_ranges(missing)}"
        lines.append(text)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


# ---- signgen keypoints retarget ----------------------------------------------------------

RETARGET_EPILOG = """\
How (docs/retargeting.md): a global fit maps the first driving frame onto REF (scale and
translation from the torso points confident in both: nose, eyes, ears, shoulders, hips),
then every bone of the driving skeleton is scaled by REF's length over the driver's on that
frame (body, each finger bone, the head as one rigid patch) and the bones are chained from
the neck outwards. Every bone keeps the driver's direction in every frame (its angles and
timing), and hands hang off the retargeted wrists. Missing points stay missing (score 0).
A bone REF lacks keeps the driver's length, scaled by the global fit; a warning names it.

REF is a keypoint file in any format signgen reads (its first frame is used) or an image,
video or frame folder: then its first frame's keypoints are extracted with the `auto`
backend of `signgen keypoints extract` (the HRNet whole-body model when its checkpoint is
found in $SIGNGEN_WEIGHTS_DIR, see `signgen keypoints models`; else MediaPipe Holistic,
offline, in static-image mode). The output is signgen JSON in pixels of REF's frame, at
DRIVE's fps. `signgen render --retarget` does the same before rendering.

examples:
  signgen keypoints retarget other_signer.json --reference first_frame_keypoints.json -o seq.json
  signgen keypoints retarget Phoenix-2014T.test --sample NAME --reference signer.png -o seq.json
  signgen render --video signer.png --keypoints seq.json -o out.mp4
"""


def _register_retarget(kp_sub: argparse._SubParsersAction) -> None:
    from signgen.keypoints.first_frame import BACKENDS
    from signgen.keypoints.retarget import DEFAULT_MIN_SCORE

    p = kp_sub.add_parser(
        "retarget",
        help="put a keypoint sequence on another person's body (bone lengths, size, place)",
        description="Retarget the keypoint sequence DRIVE onto the skeleton of REF: the result "
        "has REF's bone lengths, size and position in the frame, and DRIVE's joint angles "
        "and timing. Render it with REF's appearance: `signgen render`.",
        epilog=RETARGET_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("drive", metavar="DRIVE", help="driving keypoint sequence (any format)")
    p.add_argument("--reference", required=True, metavar="REF",
                   help="keypoint file (its first frame), or an image / video / frame folder "
                   "(its first frame's keypoints are extracted)")  # fmt: skip
    p.add_argument("-o", "--output", required=True, metavar="OUT.json", help="output file")
    p.add_argument("--sample", metavar="NAME", help="sample of DRIVE in a multi-sample file")
    p.add_argument("--size", metavar="WxH",
                   help="frame size of DRIVE (required for OpenPose / mmpose input)")  # fmt: skip
    p.add_argument("--fps", type=float, metavar="F",
                   help="frame rate of DRIVE (required for OpenPose / mmpose input)")  # fmt: skip
    p.add_argument("--reference-sample", metavar="NAME",
                   help="sample of REF in a multi-sample keypoint file")  # fmt: skip
    p.add_argument("--reference-size", metavar="WxH",
                   help="frame size of REF when its keypoint format does not store it")  # fmt: skip
    p.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE, metavar="S",
                   help="points below this confidence neither measure lengths nor anchor bones "
                   f"(default {DEFAULT_MIN_SCORE:g}, the pose drawing threshold)")  # fmt: skip
    p.add_argument("--pose-backend", choices=BACKENDS, default="auto",
                   help="pose model for an image/video REF: mediapipe, hrnet, or auto (hrnet "
                   "when its checkpoint is found, else mediapipe; default)")  # fmt: skip
    p.add_argument("--pose-model", metavar="NAME",
                   help="hrnet: named whole-body model (default: that of `signgen keypoints "
                   "extract`)")  # fmt: skip
    p.add_argument("--pose-checkpoint", metavar="P",
                   help="hrnet: its checkpoint .pth (default: $SIGNGEN_WEIGHTS_DIR/<its "
                   "file>)")  # fmt: skip
    p.add_argument("--device", default="auto",
                   help="hrnet: device of the pose model (default: auto)")  # fmt: skip
    p.set_defaults(func=retarget_command)


def retarget_command(args: argparse.Namespace) -> int:
    from signgen.fileio import refuse_overwriting_inputs
    from signgen.keypoints.first_frame import first_frame_extractor
    from signgen.keypoints.io import load_keypoints, parse_size
    from signgen.keypoints.retarget import (
        caught_retarget_warnings,
        is_media,
        load_reference,
        retarget_sequence,
    )

    # 1. Options that need no file.
    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"output {out} is a folder; give a file name such as {out / 'seq.json'}")
    refuse_overwriting_inputs(out, {"DRIVE": args.drive, "--reference": args.reference})
    if not (math.isfinite(args.min_score) and 0 <= args.min_score <= 1):
        raise InputError(f"--min-score must be in [0, 1], got {args.min_score}")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise InputError(f"--fps must be a positive number, got {args.fps}")
    size = parse_size(args.size) if args.size is not None else None
    ref_size = parse_size(args.reference_size) if args.reference_size is not None else None

    # 2. Inputs: the driving sequence, then the reference (maybe extracted from a frame with
    # the pose model of `signgen keypoints extract --backend auto`).
    drive = load_keypoints(args.drive, sample=args.sample, size=size, fps=args.fps)
    extractor = None
    if Path(args.reference).exists() and is_media(args.reference):
        try:
            extractor = first_frame_extractor(
                args.pose_backend,
                model=args.pose_model,
                checkpoint=args.pose_checkpoint,
                device=args.device,
            )
        except InputError as exc:
            raise type(exc)(
                f"--reference {args.reference} is an image/video, so its first frame's "
                f"keypoints must be extracted, but the pose model cannot run: {exc}; or "
                f"extract them where one can (`signgen keypoints extract --video "
                f"{args.reference} -o ref.json`) and pass --reference ref.json"
            ) from None
    try:
        ref_points, ref_wh = load_reference(
            args.reference, sample=args.reference_sample, size=ref_size, extractor=extractor
        )
    finally:
        if extractor is not None:
            extractor.close()

    # 3. Retarget; the library's warning becomes one line on stderr.
    with caught_retarget_warnings() as warned:
        seq = retarget_sequence(drive, ref_points, ref_wh, min_score=args.min_score)
    for message in warned:
        sys.stderr.write(f"signgen: warning: {message}\n")
    seq.save(out)
    fit = seq.meta["retarget"]
    print(
        f"wrote {out}: {len(seq)} frames, {seq.width}x{seq.height}, {seq.fps:g} fps "
        f"(global scale x{fit['scale']:.3f}, fitted on driving frame {fit['anchor_frame']})"
        + (f"; reference keypoints extracted with {extractor.description}" if extractor else "")
    )
    return 0
