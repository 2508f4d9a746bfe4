"""Devices and dtypes by name: the one parser of ``--device`` and ``--dtype`` in signgen.

Every command that runs a network (render, render-pairs, render-many, extract, evaluate)
takes ``--device auto|cpu|cuda|cuda:N``; this module turns that text into a
``torch.device`` and says in one line what is wrong with a bad one (exit 2, not a
traceback from deep in torch). Callers that hand the device to a library wanting text
(mmpose, pytorch-fid) pass ``str(device)``.
"""

from __future__ import annotations

import torch

from signgen.errors import InputError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when a GPU is visible, else cpu; ``cpu``, ``cuda`` and ``cuda:N`` are
    checked against the machine. Anything else, or a GPU that is not there, is an InputError."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"--device {name}: no CUDA GPU is available (use --device cpu or auto)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    elif device.type != "cpu":
        raise InputError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    """``fp32`` / ``fp16`` / ``bf16`` (or a torch dtype, returned as it is) -> torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]
