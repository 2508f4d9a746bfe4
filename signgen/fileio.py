"""Small file helpers shared by every writer: atomic writes and path checks."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from signgen.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed, so a partial or corrupt output is
    never visible under its final name. The temporary name keeps the extension (or
    ``suffix``) so that writers that pick a format by extension (PyAV, PIL) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = suffix if suffix is not None else "".join(path.suffixes[-1:])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{ext}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the final file the usual permissions (0666 & ~umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# Errors of the machine, not of signgen: an output that cannot be written (or a file that
# cannot be opened), with the fix.
_NO_SPACE = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
             errno.EFBIG: "the file is larger than this system allows"}  # fmt: skip


def write_error_line(exc: BaseException) -> str | None:
    """One line for an ``OSError`` of the machine (disk full, read-only file system, no
    permission), naming the path and the fix; None for any other error.

    Writers use :func:`atomic_path`, so when a write fails no output is left half-written
    under its final name, and the inputs were only read.
    """
    if not isinstance(exc, OSError):
        return None
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno in _NO_SPACE:
        return (
            f"cannot write{where}: {_NO_SPACE[exc.errno]}; nothing was left half-written: "
            "free some space or choose another output folder, and run again"
        )
    if exc.errno == errno.EROFS:
        return f"cannot write{where}: the file system is read-only; choose another output folder"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied:{where or ' (no path given)'}; check the owner and mode"
    return None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file (links and ``..`` resolved); False
    when either does not exist."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overwriting_inputs(
    output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]
) -> None:
    """Raise InputError when ``output`` is one of ``inputs`` (option name -> path): a
    render or conversion would replace the file it reads."""
    out = Path(output)
    for option, path in inputs.items():
        if path is None:
            continue
        p = Path(path)
        if same_file(out, p) or out.resolve() == p.resolve():
            raise InputError(
                f"the output {out} is the {option} input: it would be overwritten; choose "
                "another output path"
            )


def refuse_replacing_inputs(
    output_dir: str | os.PathLike,
    inputs: dict[str, str | os.PathLike | None],
    *,
    replaced: tuple[str, ...] = (),
) -> None:
    """Raise InputError when the output folder ``output_dir`` is one of ``inputs`` (option
    name -> path), or when an input lies inside a part of it that the command replaces or
    deletes: ``replaced`` names those parts, relative to ``output_dir`` ("." for the whole
    folder), e.g. a training run's ``export`` or a converted model folder written whole."""
    refuse_overwriting_inputs(output_dir, inputs)
    out = Path(output_dir).resolve()
    for option, path in inputs.items():
        if path is None:
            continue
        p = Path(path).resolve()
        for part in replaced:
            folder = out / part if part != "." else out
            if p == folder or p.is_relative_to(folder):
                raise InputError(
                    f"the {option} input {path} lies inside {folder}, which this command "
                    "replaces: it would be deleted; choose another output folder"
                )


def existing_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``path`` as a Path or raise InputError if it is missing or not a file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if p.is_dir():
        raise InputError(f"{what} is a directory, expected a file: {p}")
    if p.stat().st_size == 0:
        raise InputError(f"{what} is empty (0 bytes): {p}")
    return p


def existing_path(path: str | os.PathLike, what: str = "path") -> Path:
    """Return ``path`` as a Path or raise InputError if it does not exist."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    return p
