"""The training stages by name: ``vae``, ``ipf``, ``fpdm``, ``motion``, ``refiner``,
``refiner-motion`` -> the :class:`~signgen.train.loop.Task`
class that trains each. The command line, the Ray Train workers and the tests all look a
stage up here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from signgen.train.config import STAGES

__all__ = ["STAGES", "task_factory"]


def task_factory(stage: str) -> Callable[..., Any]:
    """The Task class of ``stage``: ``task_factory(stage)(cfg, device)`` builds the task."""
    if stage == "vae":
        from signgen.train.vae import VAETask

        return VAETask
    if stage == "ipf":
        from signgen.train.ipf import IPFTask

        return IPFTask
    if stage == "fpdm":
        from signgen.train.fpdm import FPDMTask

        return FPDMTask
    if stage == "motion":
        from signgen.train.motion import MotionTask

        return MotionTask
    if stage == "refiner":
        from signgen.train.refiner import RefinerTask

        return RefinerTask
    if stage == "refiner-motion":
        from signgen.train.refiner_motion import RefinerMotionTask

        return RefinerMotionTask
    raise ValueError(f"unknown training stage {stage!r}; choose from {', '.join(STAGES)}")
