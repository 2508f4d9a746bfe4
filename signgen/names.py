"""The names the command line checks before any model loads: samplers, dtypes, tapers.

Kept apart from the modules that give them meaning (signgen.models.schedulers,
signgen.devices, signgen.sampling.windows), which import torch and diffusers: parsing and
checking options (signgen.sampling.options) then costs no torch import, which takes
seconds. `signgen --help` and every Ray worker that only reads inputs stay fast.
"""

from __future__ import annotations

from signgen.errors import InputError

SCHEDULER_NAMES = ("ddim", "ddpm", "dpm++", "euler")  # signgen.models.schedulers.SCHEDULERS
SCHEDULER_ALIASES = {"dpmpp": "dpm++", "dpm-solver++": "dpm++", "dpmsolver++": "dpm++"}
DTYPE_NAMES = ("fp32", "fp16", "bf16")  # signgen.devices.DTYPES
TAPERS = ("uniform", "linear")  # weights of overlapping windows (signgen.sampling.windows)


def scheduler_name(name: str) -> str:
    """Canonical name for ``name`` (case-insensitive, aliases resolved) or InputError."""
    key = SCHEDULER_ALIASES.get(name.lower(), name.lower())
    if key not in SCHEDULER_NAMES:
        raise InputError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
    return key
