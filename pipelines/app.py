"""The ``signgen`` console script: the library's commands plus the Ray jobs.

The app layer is the only place that imports both the library (``signgen``) and the jobs
(``pipelines``) and ties them together (docs/architecture.md):

* the library's commands (render, keypoints, train, evaluate, ...) from
  :func:`signgen.cli.library_commands`;
* the jobs' commands (render-many, augment) from :mod:`pipelines.cli`;
* the distributed runners of the library commands that can run on Ray: ``evaluate
  --workers`` (:func:`pipelines.evaluate.ray_results`) and ``train --workers/--address``
  (:func:`pipelines.train.launch`).

``python -m pipelines.app ARGS`` is the same as ``signgen ARGS``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from typing import Any

from pipelines import cli as jobs_cli
from signgen import cli as library_cli


def _evaluate_on_ray(*args: Any, **kwargs: Any) -> Iterator[Any]:
    from pipelines.evaluate import ray_results  # imported on use: keeps `signgen --help` fast

    return ray_results(*args, **kwargs)


def _train_on_ray(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from pipelines.train import launch  # imported on use: keeps `signgen --help` fast

    return launch(*args, **kwargs)


RUNNERS = library_cli.Runners(evaluate=_evaluate_on_ray, train=_train_on_ray)
JOB_COMMANDS = (jobs_cli.register,)


def build_parser() -> argparse.ArgumentParser:
    """The console script's parser (every command, with its --help)."""
    return library_cli.build_parser(JOB_COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``signgen`` console script."""
    return library_cli.main(argv, extra_commands=JOB_COMMANDS, runners=RUNNERS)


if __name__ == "__main__":
    raise SystemExit(main())
