"""The model's noise schedule and the samplers that share it (diffusers scheduler objects).

A model folder stores one scheduler (its training noise schedule, ``scheduler/``); a render
may swap the sampler by name (``signgen render --scheduler``). All four share the model's
training noise schedule (betas, number of training steps, prediction type), which is
copied from the stored scheduler config; only the sampler changes. DDIM runs with eta = 0
(deterministic), DPM-Solver++ is the multistep 2nd-order solver, Euler is diffusers'
EulerDiscrete (no churn). DDPM is ancestral and draws fresh noise every step (from
per-frame generators, see :mod:`signgen.sampling.loop`). Lives with the models because the
model factory builds a model's scheduler (:mod:`signgen.models.factory`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from signgen.errors import InputError
from signgen.names import SCHEDULER_ALIASES as ALIASES
from signgen.names import scheduler_name

__all__ = ["ALIASES", "PREDICTION_TYPES", "SCHEDULERS", "make_scheduler", "scheduler_name"]

SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": (EulerDiscreteScheduler, {}),
}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def make_scheduler(
    name: str,
    base: Mapping[str, Any] | SchedulerMixin | None = None,
    *,
    prediction_type: str | None = None,
) -> SchedulerMixin:
    """A fresh scheduler ``name`` carrying the noise schedule of ``base`` (config or scheduler).

    ``prediction_type`` overrides the one in ``base`` (SD 2.1: ``v_prediction``).
    """
    cls, extra = SCHEDULERS[scheduler_name(name)]
    config = dict(base.config if isinstance(base, SchedulerMixin) else (base or {}))
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    if prediction_type is not None:
        if prediction_type not in PREDICTION_TYPES:
            raise InputError(
                f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"
            )
        config["prediction_type"] = prediction_type
    return cls.from_config({**config, **extra})


def scheduler_key(scheduler: SchedulerMixin) -> str:
    """The name (a key of :data:`SCHEDULERS`) of a scheduler object, e.g. a model's own."""
    for key, (cls, extra) in SCHEDULERS.items():
        if type(scheduler) is cls and all(scheduler.config.get(k) == v for k, v in extra.items()):
            return key
    raise ValueError(f"unsupported scheduler class {type(scheduler).__name__}")
