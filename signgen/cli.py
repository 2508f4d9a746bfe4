"""The ``signgen`` console script.

Each area of the library owns its subcommands in a ``cli`` module exposing
``register(subparsers)``; this file only wires them together and turns user errors
(:class:`signgen.errors.InputError`) into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from signgen import __version__
from signgen.errors import InputError

# Modules that contribute subcommands, in the order they appear in --help.
_COMMAND_MODULES = (
    "signgen.sampling.cli",  # render
    "signgen.sampling.pairs",  # render-pairs (DeepFashion test pairs)
    "signgen.keypoints.cli",  # keypoints convert|info|extract|models
    "signgen.pose.cli",  # pose draw
    "signgen.train.cli",  # train ipf|fpdm
    "signgen.data.cli",  # prepare synthetic|phoenix|deepfashion
    "signgen.metrics.cli",  # evaluate, report
    "signgen.models.convert_cli",  # convert fpdm-lightning
    "pipelines.cli",  # render-many, augment (Ray jobs)
)

EPILOG = """\
examples:
  signgen render --video first.mp4 --keypoints seq.json        # one clip, bundled demo model
  signgen keypoints info seq.json                              # what is in a keypoint file
  signgen keypoints convert Phoenix-2014T.test --sample NAME -o seq.json
  signgen pose draw seq.json -o poses.mp4
  signgen evaluate --pred out/ --gt gt/ -o metrics.csv

Run `signgen COMMAND --help` for the options of each command.
"""


class _Parser(argparse.ArgumentParser):
    """argparse prints usage + error and exits 2 already; keep it to one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="signgen",
        description="Sign-language video generation by pose-guided latent diffusion (FPDM).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"signgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # area not present in this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Commands with ``key=value`` overrides (train) take them anywhere on the line, also
    # after options (`signgen train fpdm --config C -q a=1 b=2`): argparse stops filling a
    # positional list at the first option, so the rest is collected here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if isinstance(getattr(args, "overrides", None), list) and all(
            "=" in a and not a.startswith("-") for a in extra
        ):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        sys.stderr.write(f"signgen: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("signgen: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `signgen keypoints models | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # silence the flush at exit
        return 0
    except Exception as exc:  # last resort: one line unless debugging
        if args.verbose or os.environ.get("SIGNGEN_DEBUG"):
            raise
        sys.stderr.write(
            f"signgen: internal error: {type(exc).__name__}: {exc} (rerun with -v for a traceback)\n"
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
