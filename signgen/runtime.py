"""Process-wide settings for running signgen: library log levels and native stderr.

What the user sees on the terminal is signgen's own output: progress bars, result lines
and one line per error (docs/architecture.md, "Errors and noise"). Two kinds of noise
would break that, and both are handled here, once, for every command and Ray job:

* Python libraries' own chatter (per-shard loading bars and info logs of transformers and
  diffusers): :func:`quiet_libraries` sets their documented log levels.
* Native libraries that write straight to file descriptor 2 (FFmpeg inside decord, Ray's
  C++ core while it retries a connection): Python's ``sys.stderr`` never sees those
  bytes, so :func:`capture_native_stderr` points fd 2 at a temporary file around the
  native call and hands the text back, to be logged at debug level or turned into one
  clear error line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

# fd 2 is one per process: nested or concurrent captures must not restore each other's
# descriptor out of order.
_CAPTURE_LOCK = threading.RLock()


def quiet_libraries() -> None:
    """Silence per-shard progress bars and info chatter of transformers/diffusers loading."""
    with contextlib.suppress(Exception):
        import diffusers
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        diffusers.utils.logging.set_verbosity_error()


class CapturedStderr:
    """What native code wrote to fd 2 inside a :func:`capture_native_stderr` block."""

    def __init__(self) -> None:
        self.text = ""

    @property
    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]


@contextlib.contextmanager
def capture_native_stderr() -> Iterator[CapturedStderr]:
    """Redirect file descriptor 2 to a temporary file for the block; yield what was written.

    Hand-written because no library does this at the descriptor level (``contextlib.
    redirect_stderr`` only swaps ``sys.stderr``, which native code never uses). Keep the
    block around the native call only: anything else the process writes to stderr in the
    block (a progress bar, a warning) is captured too. The captured text is logged at
    debug level, so ``-v`` still shows it.
    """
    captured = CapturedStderr()
    with _CAPTURE_LOCK, tempfile.TemporaryFile(mode="w+b") as sink:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            try:
                yield captured
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(saved, 2)
        finally:
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace")
    if captured.text.strip():
        logger.debug("native stderr: %s", captured.text.strip())
