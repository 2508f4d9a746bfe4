"""A restricted unpickler for third-party keypoint pickles (MSKA Phoenix-2014T files).

``pickle.load`` runs whatever callables a file names, so an untrusted pickle can execute
code. :class:`RestrictedUnpickler` resolves globals through an explicit allow-list that
admits only what a plainly pickled dict of strings, numbers, numpy arrays and torch
tensors references (see the Python docs, "Restricting Globals", in the ``pickle``
module documentation). Anything else raises :class:`~signgen.errors.UnsafePickleError`
naming the refused ``module.attr``; nothing it names is imported or called.

A torch tensor pickled with ``pickle.dump`` references ``torch._utils._rebuild_tensor_v2``
and ``torch.storage._load_from_bytes`` (which calls ``torch.load`` on the storage bytes),
plus ``collections.OrderedDict`` for its (empty) backward hooks. ``_load_from_bytes`` is
replaced by a version that keeps ``torch.load(..., weights_only=True)``, so the inner
load is restricted as well.
"""

from __future__ import annotations

import builtins
import collections
import io
import pickle
import struct
from pathlib import Path
from typing import IO, Any

from signgen.errors import FormatError, UnsafePickleError

# Builtins that only build containers, numbers and strings. Protocol 2 pickles spell the
# module ``__builtin__``; protocol >= 3 ``builtins``.
_SAFE_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes"}
    | {"bytearray", "bool"}
)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``: protocol-2 pickles store bytes as
    ``_codecs.encode(str, "latin1")``; no other codec is admitted."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _load_torch_storage_from_bytes(data: bytes) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes`` that never runs arbitrary code."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _numpy_global(module: str, name: str) -> Any:
    """numpy globals a pickled array or scalar references (numpy 1.x and 2.x spellings)."""
    import numpy as np

    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in (
        "_reconstruct",
        "scalar",
    ):
        # Resolve through numpy._core where it exists: numpy.core is a deprecated alias in 2.x.
        try:
            from numpy._core import multiarray
        except ImportError:  # numpy < 2
            from numpy.core import multiarray  # type: ignore[no-redef]
        return getattr(multiarray, name)
    return None


def _torch_global(module: str, name: str) -> Any:
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
        import torch._utils

        return torch._utils._rebuild_tensor_v2
    if (module, name) == ("torch.storage", "_load_from_bytes"):
        return _load_torch_storage_from_bytes
    return None


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler whose ``find_class`` admits only an explicit allow-list.

    Built on the pure-Python unpickler of the standard library (``pickle._Unpickler``, the
    reference the C one mirrors), not the C ``pickle.Unpickler``: the C one keeps its memo
    in an array sized by the largest index a PUT opcode names, so a corrupt 400-byte file
    (``LONG_BINPUT 175726962``) made it allocate 1.4 GB (found by atheris, see
    benchmarks/fuzz_atheris.py); the Python one keeps a dict. Keypoint pickles are mostly
    tensor bytes, read in C either way: measured equally fast on an 80 MB MSKA pickle.
    """

    def __init__(self, file: IO[bytes], source: str = "<pickle>") -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return getattr(builtins, name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        found = _numpy_global(module, name) if module.startswith("numpy") else None
        if found is None and module.startswith("torch"):
            found = _torch_global(module, name)
        if found is not None:
            return found
        raise UnsafePickleError(
            f"{self.source}: refused to unpickle {module}.{name}: keypoint pickles may only "
            "contain containers, numbers, strings, numpy arrays and torch tensors "
            "(the file may try to execute code on load; it was not run)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self.source}: refused a pickle persistent id ({type(pid).__name__}); "
            "keypoint pickles are plain pickles, not torch.save checkpoints"
        )


def safe_load_pickle(path: str | Path, what: str = "pickle") -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; corrupt files raise FormatError."""
    path = Path(path)
    with path.open("rb") as fh:
        try:
            return RestrictedUnpickler(fh, source=str(path)).load()
        except UnsafePickleError:
            raise
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
            OverflowError,
            RuntimeError,  # torch.load on corrupt storage bytes
            MemoryError,  # a corrupt length field: a frame or string bigger than memory
            AssertionError,  # torch's tensor rebuild asserts on a corrupt storage key
            struct.error,  # the Python unpickler on a truncated length field
            SystemError,  # numpy's dtype __setstate__ on a corrupt state (returns NULL)
        ) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FormatError(f"{path}: {what} is truncated or corrupt ({msg})") from None
