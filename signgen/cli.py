"""The library's commands and the runner of the ``signgen`` console script.

Each area of the library owns its subcommands in a ``cli`` module exposing
``register(subparsers)``; this file wires them together and turns user errors
(:class:`signgen.errors.InputError`) into one line on stderr and exit code 2.

The console script itself is assembled by the app layer (``pipelines/app.py``): it adds
the Ray jobs' commands (render-many, augment) and plugs the distributed runners
(:class:`Runners`) into the library's commands that can run on Ray (evaluate with
``--workers``, train with ``--workers``/``--address``). The library never imports the jobs
layer (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from signgen import __version__
from signgen.errors import InputError

# ``register(subparsers)`` of a command module.
Registrar = Callable[[argparse._SubParsersAction], None]


@dataclass(frozen=True)
class Runners:
    """Distributed runners the app layer hands to the library's commands (``args.runners``).

    ``evaluate``: ``(config, plan, need_gt, *, workers, address, hand_detector)`` -> an
    iterator of :class:`signgen.metrics.evaluate.BatchResult` (``pipelines.evaluate.
    ray_results``). ``train``: ``(cfg, *, workers, gpus_per_worker, cpus_per_worker,
    address, resume, progress, max_failures)`` -> a summary dict
    (``pipelines.train.launch``). A command asked to run distributed without its runner says
    so in one line.
    """

    evaluate: Callable[..., Any] | None = None
    train: Callable[..., dict[str, Any]] | None = None


def library_commands() -> list[Registrar]:
    """The library's command modules, in the order they appear in --help."""
    from signgen.data import cli as prepare_cli  # prepare synthetic|phoenix|deepfashion
    from signgen.keypoints import cli as keypoints_cli  # keypoints convert|info|extract|models
    from signgen.metrics import cli as metrics_cli  # evaluate, report
    from signgen.models import convert_cli  # convert fpdm-lightning
    from signgen.pose import cli as pose_cli  # pose draw
    from signgen.sampling import cli as render_cli  # render
    from signgen.sampling import pairs as render_pairs_cli  # render-pairs (DeepFashion)
    from signgen.train import cli as train_cli  # train vae|ipf|fpdm

    modules = (render_cli, render_pairs_cli, keypoints_cli, pose_cli, train_cli, prepare_cli,
               metrics_cli, convert_cli)  # fmt: skip
    return [m.register for m in modules]


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


def build_parser(extra_commands: Sequence[Registrar] = ()) -> argparse.ArgumentParser:
    """The ``signgen`` parser: the library's commands, then ``extra_commands`` (the app's)."""
    parser = _Parser(
        prog="signgen",
        description="Sign-language video generation by pose-guided latent diffusion (FPDM).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"signgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for register in [*library_commands(), *extra_commands]:
        register(sub)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    extra_commands: Sequence[Registrar] = (),
    runners: Runners | None = None,
) -> int:
    """Parse ``argv`` and run the command: 0 on success, 2 on bad input (one line on
    stderr), 1 on an unexpected error. Called with no extras it offers the library's
    commands only; ``pipelines.app.main`` (the console script) adds the jobs and runners."""
    parser = build_parser(extra_commands)
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
    args.runners = runners or Runners()
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
        from signgen.fileio import write_error_line

        line = write_error_line(exc)
        if line is not None:  # disk full, read-only output folder: the user's to fix
            sys.stderr.write(f"signgen: error: {line}\n")
            return 2
        if args.verbose or os.environ.get("SIGNGEN_DEBUG"):
            raise
        sys.stderr.write(
            f"signgen: internal error: {type(exc).__name__}: {exc} (rerun with -v for a traceback)\n"
        )
        return 1
