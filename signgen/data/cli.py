"""``signgen prepare ...``: build datasets on disk.

This module creates the ``prepare`` command and its ``synthetic`` subcommand; the real
datasets (``prepare phoenix``, ``prepare deepfashion``) are registered by
:mod:`signgen.data.prepare_cli`.
"""

from __future__ import annotations

import argparse
import logging
import time

from signgen.errors import InputError

log = logging.getLogger(__name__)

SYNTHETIC_EPILOG = """\
examples:
  signgen prepare synthetic -o data/synth                      # 8 signers, 40 videos, 210x260
  signgen prepare synthetic -o /tmp/tiny --signers 4 --videos 6 --frames 8 --size 64x80
  signgen prepare synthetic -o data/synth --retarget-pairs 1  # + B performing A's motion

The output follows the Phoenix-2014T layout (frames, corpus CSVs, MSKA keypoint pickles)
plus signgen JSON keypoints and the prepared training files under DIR/prepared/ that
`signgen train ipf|fpdm` read. Dev and test signers are not seen in training when
--signers >= 3.
"""


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(
            f"--size must look like WIDTHxHEIGHT (e.g. 210x260), got {text!r}"
        ) from None
    if w < 16 or h < 16:
        raise InputError(f"--size must be at least 16x16, got {text!r}")
    return w, h


def parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0 or parts[0] <= 0:
        raise InputError(
            f"--splits must be three fractions TRAIN,DEV,TEST (e.g. 0.8,0.1,0.1), got {text!r}"
        )
    return parts  # type: ignore[return-value]


def _synthetic(args: argparse.Namespace) -> int:
    from signgen.data.synthetic import SyntheticConfig, write_dataset

    w, h = parse_size(args.size)
    for name in ("signers", "videos", "frames", "pairs_per_video"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.retarget_pairs < 0:
        raise InputError(f"--retarget-pairs must be >= 0, got {args.retarget_pairs}")
    if not 0.0 <= args.hand_dropout < 1.0:
        raise InputError(f"--hand-dropout must be in [0, 1), got {args.hand_dropout}")
    cfg = SyntheticConfig(
        out=args.out,
        signers=args.signers,
        videos=args.videos,
        frames=args.frames,
        width=w,
        height=h,
        seed=args.seed,
        split_fractions=parse_fractions(args.splits),
        train_pairs_per_video=args.pairs_per_video,
        hand_dropout=args.hand_dropout,
        retarget_pairs=args.retarget_pairs,
    )
    t0 = time.perf_counter()
    counts = write_dataset(cfg, progress=not args.quiet)
    dt = time.perf_counter() - t0
    n = (args.videos + counts.get("retarget", 0)) * args.frames
    extra = f", {counts['retarget']} retargeting clips" if "retarget" in counts else ""
    log.info(
        "wrote %s (train %d, dev %d, test %d videos%s; %d frames in %.1fs, %.0f frames/s)",
        args.out, counts["train"], counts["dev"], counts["test"], extra, n, dt,
        n / max(dt, 1e-9),
    )  # fmt: skip
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    prepare = subparsers.add_parser(
        "prepare",
        help="build a dataset on disk (synthetic world, Phoenix-2014T, DeepFashion)",
        description="Build a dataset on disk in the layout signgen's training commands read.",
    )
    sub = prepare.add_subparsers(dest="prepare_command", metavar="DATASET")
    p = sub.add_parser(
        "synthetic",
        help="generate the synthetic signer world (Phoenix layout, exact keypoints)",
        description=(
            "Generate cartoon signers whose frames are exact renders of their keypoints: "
            "each signer has its own skin tone, clothing colour and pattern, hair and "
            "background, and performs smooth signing-like motion."
        ),
        epilog=SYNTHETIC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--signers", type=int, default=8, help="number of signers (default: 8)")
    p.add_argument("--videos", type=int, default=40, help="videos in all splits (default: 40)")
    p.add_argument("--frames", type=int, default=48, help="frames per video (default: 48)")
    p.add_argument("--size", default="210x260", help="frame WIDTHxHEIGHT (default: 210x260)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--splits",
        default="0.8,0.1,0.1",
        metavar="TRAIN,DEV,TEST",
        help="fractions of the videos per split (default: 0.8,0.1,0.1; at least 1 video each)",
    )
    p.add_argument(
        "--pairs-per-video",
        type=int,
        default=100,
        help="random (source, target) training pairs per train video (default: 100); "
        "dev/test pairs are frame 0 -> every frame",
    )
    p.add_argument(
        "--hand-dropout",
        type=float,
        default=0.0,
        help="fraction of hand keypoints given a low score, for realism (default: 0)",
    )
    p.add_argument(
        "--retarget-pairs",
        type=int,
        default=0,
        metavar="N",
        help="also write, for every dev and test video, N clips in which another signer of "
        "that split performs the video's motion with their own body (the motion's joint "
        "angles and timing, their own bone lengths, size and place): exact ground truth for "
        "keypoint retargeting, under DIR/retarget/ and DIR/prepared/retarget_pairs.csv "
        "(default: 0)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_synthetic)
    from signgen.data import prepare_cli

    prepare_cli.register(sub)
