"""The ledger of a Ray job's output folder: which clips are finished, which failed and why.

One append-only JSON-lines file (``DIR/ledger.jsonl``), one line per event::

    {"clip_id": "a", "status": "done", "output": "a.mp4", "frames": 48, "seed": 12, ...}
    {"clip_id": "b", "status": "failed", "reason": "video not found: ...", ...}

Why a JSONL file and not one marker file per clip: one file is one fsync per clip, one
read at start-up whatever the number of clips, and the whole job history in a form a
person can ``grep``. A line is appended only AFTER the clip's output was renamed into
place (atomic), and written with ``write`` + ``fsync``, so after a crash at any point:

* a "done" line means the output file is complete (it existed before the line);
* an output without a "done" line is re-rendered by the next run (same seed: same bytes);
* a torn last line (a crash inside ``write``) is ignored when reading.

A clip is finished when its LAST line says "done" and its output exists; "failed" clips
are tried again by the next run (the inputs may have been fixed). One job at a time may
write a folder: :class:`Ledger` holds an exclusive ``flock`` on ``DIR/.lock``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signgen.errors import InputError

logger = logging.getLogger(__name__)

LEDGER_NAME = "ledger.jsonl"
LOCK_NAME = ".lock"


@dataclass(frozen=True)
class Entry:
    """The last ledger event of one clip."""

    clip_id: str
    status: str  # "done" | "failed"
    record: dict[str, Any]


class Ledger:
    """Append-only record of finished and failed clips in an output folder (see module doc).

    >>> with Ledger(out_dir) as ledger:
    ...     todo = [c for c in clips if not ledger.is_done(c.clip_id)]
    ...     ledger.done("clip1", output="clip1.mp4", frames=48, seed=3)
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.path = self.dir / LEDGER_NAME
        self._lock_fd: int | None = None
        self._fh = None
        self.entries: dict[str, Entry] = {}

    # ---- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> Ledger:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(
                f"another job is writing to {self.dir} (it holds {self.dir / LOCK_NAME}); "
                "wait for it to finish or choose another output folder"
            ) from None
        self._lock_fd = fd
        _drop_torn_tail(self.path)
        self.entries = read_ledger(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")  # closed in close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- queries --------------------------------------------------------------------------
    def is_done(self, clip_id: str, output: Path | None = None) -> bool:
        """True when the last event of ``clip_id`` is "done" (and ``output`` exists, if given)."""
        entry = self.entries.get(clip_id)
        if entry is None or entry.status != "done":
            return False
        if output is not None and not output.exists():
            logger.warning("%s: in the ledger as done but %s is missing; rendering it again",
                           clip_id, output)  # fmt: skip
            return False
        return True

    def failed(self) -> dict[str, str]:
        """clip_id -> reason, for clips whose last event is "failed"."""
        return {
            k: str(e.record.get("reason", ""))
            for k, e in self.entries.items()
            if e.status == "failed"
        }

    # ---- events ---------------------------------------------------------------------------
    def done(self, clip_id: str, **fields: Any) -> None:
        self._append({"clip_id": clip_id, "status": "done", **fields})

    def fail(self, clip_id: str, reason: str, **fields: Any) -> None:
        self._append({"clip_id": clip_id, "status": "failed", "reason": reason, **fields})

    def _append(self, record: dict[str, Any]) -> None:
        assert self._fh is not None, "ledger is not open"
        record["time"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self._fh.write(json.dumps(record, sort_keys=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.entries[record["clip_id"]] = Entry(record["clip_id"], record["status"], record)


def read_ledger(path: str | os.PathLike) -> dict[str, Entry]:
    """The last event per clip; a torn final line (a crash mid-write) is skipped."""
    path = Path(path)
    entries: dict[str, Entry] = {}
    if not path.exists():
        return entries
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            entries[str(rec["clip_id"])] = Entry(str(rec["clip_id"]), str(rec["status"]), rec)
        except (json.JSONDecodeError, KeyError, TypeError):
            if lineno == len(lines):
                logger.warning("%s: ignoring a torn last line (interrupted write)", path)
                continue
            raise InputError(f"{path}:{lineno}: not a ledger line: {line[:80]!r}") from None
    return entries


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a crash inside ``write``) so that the next
    append starts on a line of its own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        logger.warning("%s: dropping a torn last line (interrupted write)", path)
        with open(path, "r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())


def read_events(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every event in file order (for reports and tests); torn lines skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if line.strip():
                out.append(json.loads(line))
    return out
