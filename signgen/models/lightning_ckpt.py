"""Read a PyTorch-Lightning ``.ckpt`` without running any code from it.

A Lightning checkpoint is a ``torch.save`` zip whose pickle holds the ``state_dict`` (the
tensors we want) beside training state and the module's hyper-parameters. We read it with
``torch.load(weights_only=True)``, PyTorch's own restricted unpickler: it admits tensors,
storages and plain containers (dict, list, tuple, OrderedDict, numbers, strings) and
refuses every other global.

One addition is needed for real checkpoints: a module whose hyper-parameters were an
OmegaConf ``DictConfig`` (FPDM's training scripts load their YAML with OmegaConf) is saved
with that object and its class in ``hyper_parameters`` / ``hparams_type``. Those names are
mapped to :class:`InertConfig`, a plain record defined here: nothing of omegaconf is
imported and nothing the file names is called, the unpickler only stores the pickled state
in it. :func:`plain_hyperparameters` turns it back into a dict of plain values.
Anything else raises :class:`~signgen.errors.UnsafePickleError` naming the refused global.
"""

from __future__ import annotations

import collections
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from signgen.errors import FormatError, UnsafePickleError

# Globals of OmegaConf containers (and the ``typing.Any`` they store as their element
# type), as a DictConfig pickles itself: loaded as inert records, never imported.
INERT_GLOBALS = (
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "typing.Any",
)


class InertConfig:
    """Stand-in for a pickled configuration object: keeps its pickled state, does nothing."""

    _name = "InertConfig"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self._name}>"


def _inert_classes() -> list[tuple[type, str]]:
    return [
        (type(name.rsplit(".", 1)[1], (InertConfig,), {"_name": name}), name)
        for name in INERT_GLOBALS
    ]


def load_lightning_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of ``path`` (tensors memory-mapped), read with no code execution.

    Raises UnsafePickleError (one line, naming the global) for anything but tensors, plain
    containers and the inert configuration records above; FormatError for a file that is
    not a ``torch.save`` checkpoint.
    """
    import torch

    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise FormatError(f"{path}: not a PyTorch checkpoint (expected a torch.save zip file)")
    # Builtins a protocol-2 pickle names as globals to rebuild containers; weights_only's
    # own allow-list has the types but not these spellings.
    plain = [dict, list, int, float, str, tuple, set, collections.defaultdict]
    try:
        with torch.serialization.safe_globals([*_inert_classes(), *plain]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        # torch names the refused global as "GLOBAL module.name" (wording varies by version).
        found = re.search(r"GLOBAL ([\w.]+)", str(exc)) or re.search(
            r"(Unsupported [^\n.]*)", str(exc), re.IGNORECASE
        )
        what = found.group(1) if found else "an object that is not a tensor or plain container"
        raise UnsafePickleError(
            f"{path}: refused to load {what}: a checkpoint may only hold tensors and plain "
            "containers (the file may try to run code on load; nothing was run)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path}: unreadable checkpoint: {str(exc).splitlines()[0]}") from None
    if not isinstance(ckpt, dict):
        raise FormatError(
            f"{path}: not a Lightning checkpoint (top level is {type(ckpt).__name__})"
        )
    return ckpt


def plain_hyperparameters(ckpt: dict[str, Any]) -> dict[str, Any]:
    """``hyper_parameters`` of a checkpoint as plain Python values (OmegaConf unwrapped);
    {} when absent."""
    return _plain(ckpt.get("hyper_parameters")) or {}


def _plain(obj: Any) -> Any:
    if isinstance(obj, InertConfig):
        state = obj.state if isinstance(obj.state, dict) else {}
        if "_content" in state:  # a DictConfig / ListConfig
            return _plain(state["_content"])
        if "_val" in state:  # a value node
            return _plain(state["_val"])
        return None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return None  # tensors and other leaves carry no configuration
