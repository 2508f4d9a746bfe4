"""``signgen prepare phoenix|deepfashion``: validate a real dataset and write prepared files.

Registered under the ``prepare`` command that :mod:`signgen.data.cli` creates. The
library code lives in :mod:`signgen.data.phoenix` and :mod:`signgen.data.deepfashion`;
this module only parses options and prints the report (one warning line per problem
category on stderr, a summary through logging).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from signgen.errors import InputError

log = logging.getLogger(__name__)

PHOENIX_EPILOG = """\
examples:
  signgen prepare phoenix --root data/PHOENIX-2014-T --keypoints data/mska -o data/phoenix
  signgen prepare phoenix --root data/PHOENIX-2014-T --keypoints data/mska -o data/phoenix \\
      --splits train,test --train-pairs 100000 --seed 1 --strict

Reads PHOENIX-2014-T/features/fullFrame-210x260px/{train,dev,test}/<name>/images0001.png ...,
PHOENIX-2014-T/annotations/manual/PHOENIX-2014-T.{split}.corpus.csv and the MSKA keypoint
pickles KEYPOINTS/Phoenix-2014T.{split}. Writes OUT/manifest.csv (one row per video),
OUT/{split}_pairs.csv (video, signer, split, source_frame, target_frame; 0-based),
OUT/keypoints/{split}/<video>.json and OUT/prepare_report.json. Videos with problems
are skipped with one warning per problem category (with counts) unless --strict.
"""

DEEPFASHION_EPILOG = """\
examples:
  signgen prepare deepfashion --root data/fashion -o data/deepfashion-256 --resolution 256x176
  signgen prepare deepfashion --root data/fashion -o data/deepfashion-512 --resolution 512x352

Reads ROOT/fasion-resize-pairs-{train,test}.csv (from,to), ROOT/fasion-resize-annotation-
{train,test}.csv (name:keypoints_y:keypoints_x, on 256x176, -1 = missing) and the images
in ROOT/{train,test}_highres/ (the CFLD/PCDMs layout) or else ROOT/{train,test}/ (PATN/
PIDM). Writes OUT/deepfashion_manifest.csv (one row per image), OUT/{train,test}_pairs.csv
(source, target), OUT/deepfashion_info.json and OUT/prepare_report.json.
"""


def _warn(dataset: str):
    def emit(line: str) -> None:
        sys.stderr.write(f"signgen: warning: {dataset}: {line}\n")

    return emit


def parse_splits(text: str) -> tuple[str, ...]:
    from signgen.data.phoenix import SPLITS

    parts = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in parts if s not in SPLITS]
    if not parts or bad:
        raise InputError(
            f"--splits must be a comma-separated subset of {','.join(SPLITS)}, got {text!r}"
        )
    return tuple(dict.fromkeys(parts))  # unique, in the given order


def parse_resolution(text: str) -> tuple[int, int]:
    """'256x176' -> (256, 176) = (H, W), the convention of the DeepFashion papers."""
    from signgen.data.deepfashion import RESOLUTIONS

    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        h = w = -1
    if (h, w) not in RESOLUTIONS:
        choices = ", ".join(f"{a}x{b}" for a, b in RESOLUTIONS)
        raise InputError(f"--resolution must be one of {choices} (HEIGHTxWIDTH), got {text!r}")
    return h, w


def _phoenix(args: argparse.Namespace) -> int:
    from signgen.data.phoenix import prepare_phoenix
    from signgen.fileio import refuse_replacing_inputs

    refuse_replacing_inputs(args.out, {"--root": args.root, "--keypoints": args.keypoints})
    t0 = time.perf_counter()
    report = prepare_phoenix(
        args.root,
        args.keypoints,
        args.out,
        splits=parse_splits(args.splits),
        train_pairs=args.train_pairs,
        seed=args.seed,
        strict=args.strict,
        check_images=args.check_images,
        progress=not args.quiet,
        on_warning=_warn("phoenix"),
    )
    kept = ", ".join(f"{s} {n}" for s, n in report.kept.items())
    pairs = ", ".join(f"{s} {n}" for s, n in report.pairs.items())
    log.info(
        "wrote %s in %.1fs: videos kept: %s; pairs: %s; %d problem(s) (see prepare_report.json)",
        args.out, time.perf_counter() - t0, kept, pairs, report.total,
    )  # fmt: skip
    log.debug("seconds (wall, CPU) per phase: %s", report.seconds)
    return 0


def _deepfashion(args: argparse.Namespace) -> int:
    from signgen.data.deepfashion import prepare_deepfashion
    from signgen.fileio import refuse_replacing_inputs

    refuse_replacing_inputs(args.out, {"--root": args.root})
    t0 = time.perf_counter()
    report = prepare_deepfashion(
        args.root,
        args.out,
        resolution=parse_resolution(args.resolution),
        strict=args.strict,
        check_images=args.check_images,
        progress=not args.quiet,
        on_warning=_warn("deepfashion"),
    )
    kept = ", ".join(f"{s} {n}" for s, n in report.kept.items())
    pairs = ", ".join(f"{s} {n}" for s, n in report.pairs.items())
    log.info(
        "wrote %s in %.1fs: images kept: %s; pairs: %s; %d problem(s) (see prepare_report.json)",
        args.out, time.perf_counter() - t0, kept, pairs, report.total,
    )  # fmt: skip
    return 0


# Over 80 lines: argparse declarations only (one call per option of two subcommands).
def register(prepare_subparsers: argparse._SubParsersAction) -> None:
    """Add ``phoenix`` and ``deepfashion`` under ``signgen prepare``."""
    # Long: argparse declarations, one option per statement, each with its --help text.
    p = prepare_subparsers.add_parser(
        "phoenix",
        help="validate RWTH-PHOENIX-Weather 2014T + MSKA keypoints and write training pairs",
        description=(
            "Check a PHOENIX-2014-T tree against its corpus CSVs and the MSKA keypoint "
            "files (videos in the corpus vs frame folders vs keypoint samples, frames per "
            "video vs keypoint T, unreadable PNGs), then write the manifest and the pair "
            "lists the training and evaluation commands read. Frames are checked one at a "
            "time, never loaded together."
        ),
        epilog=PHOENIX_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--root", required=True, metavar="DIR", help="the PHOENIX-2014-T folder (features/, ...)"
    )
    p.add_argument(
        "--keypoints",
        required=True,
        metavar="DIR",
        help="folder with the MSKA pickles Phoenix-2014T.train, .dev, .test",
    )
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder (created)")
    p.add_argument(
        "--splits",
        default="train,dev,test",
        help="comma-separated splits to prepare (default: train,dev,test)",
    )
    p.add_argument(
        "--train-pairs",
        type=int,
        default=100_000,
        metavar="N",
        help="random within-video training pairs: a video is drawn with probability "
        "proportional to its frame count, then source and target frames uniformly "
        "(default: 100000, the paper's count); dev/test pairs are frame 0 -> every frame",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the training pairs (default: 0)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 2 on any problem instead of skipping the bad videos",
    )
    p.add_argument(
        "--check-images",
        action="store_true",
        help="fully decode every PNG (slow; default: check each PNG's signature, IHDR size "
        "and IEND trailer, which catches missing, empty and truncated files)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_phoenix)

    d = prepare_subparsers.add_parser(
        "deepfashion",
        help="validate DeepFashion In-shop (PGPIS split) and write manifests and pairs",
        description=(
            "Check the DeepFashion PGPIS split (pair CSVs, keypoint annotation CSVs, "
            "images) and write the manifest and pair lists the training and evaluation "
            "commands read. Pairs whose images or annotation rows are missing or unreadable "
            "are skipped with one warning per problem category unless --strict."
        ),
        epilog=DEEPFASHION_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument(
        "--root",
        required=True,
        metavar="DIR",
        help="folder with fasion-resize-*.csv and the image folders",
    )
    d.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder (created)")
    d.add_argument(
        "--resolution",
        default="256x176",
        metavar="HxW",
        help="HEIGHTxWIDTH the prepared set is for: 256x176 or 512x352 (default: 256x176); "
        "images smaller than it are reported",
    )
    d.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 2 on any problem instead of skipping the pairs it touches",
    )
    d.add_argument(
        "--check-images",
        action="store_true",
        help="fully decode every image (slow; default: read each image's header only)",
    )
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_deepfashion)
