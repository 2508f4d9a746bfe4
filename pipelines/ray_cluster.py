"""Starting or joining Ray: one helper for every job (render-many, augment, evaluate, train).

Without ``--address`` a job starts its own local Ray, whatever is left on the machine. Ray's
default (``ray.init()`` with no address) would instead join the cluster named by
``RAY_ADDRESS`` or by Ray's current-cluster file, which a ``ray start --head`` that died
without ``ray stop`` leaves behind: the job then fails on a dead cluster, or quietly runs
on someone else's. Ray's documented ``address="local"`` always starts a new local instance
and ignores both, so that is what a job without ``--address`` uses.

With ``--address`` the user asked for a cluster, and a cluster that cannot be joined is one
clear error line (:class:`~signgen.errors.InputError`) naming the fix:

* ``auto``: the cluster of ``RAY_ADDRESS``, or the one ``ray start`` started on this node
  (Ray's own lookup); ``HOST:PORT``: the head's GCS port; ``ray://HOST:PORT``: Ray Client.
* The head is probed with a TCP connection first (5 s), because ``ray.init`` retries an
  unreachable head for many minutes while its C++ core prints a warning every few seconds.
* A head with token authentication (``RAY_AUTH_MODE=token`` on the cluster) refuses a
  driver without the token; Ray retries about 20 s and raises a bare ``ConnectionError``,
  with the reason only in its native log lines, which are captured
  (:func:`signgen.runtime.capture_native_stderr`) and turned into the error line.

An already initialised Ray (a test session, a notebook, a Ray job's driver) is used as it
is and left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from signgen.errors import InputError

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0
AUTH_DOCS = "https://docs.ray.io/en/latest/ray-security/token-auth.html"
_AUTH_MARKERS = ("Unauthenticated", "InvalidAuthToken", "token is missing or incorrect")


def start_ray(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    object_store_memory: int | None = None,
    runtime_env: dict[str, Any] | None = None,
) -> bool:
    """Start a local Ray (``address`` None) or join the cluster at ``address``.

    Returns True when this call initialised Ray (the caller shuts it down), False when Ray
    was already initialised in this process. ``num_cpus`` and ``object_store_memory`` size
    a local Ray only.
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "configure_logging": True}  # fmt: skip
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    if address is None:
        with _without_auth_notice():
            ray.init(address="local", num_cpus=num_cpus,
                     object_store_memory=object_store_memory, **kwargs)  # fmt: skip
        return True
    if num_cpus is not None or object_store_memory is not None:
        raise InputError(
            "--num-cpus and object-store size apply to a local Ray only; a cluster given by "
            "--address has its own: drop them or drop --address"
        )
    _join(address, kwargs)
    return True


@contextlib.contextmanager
def ray_session(address: str | None = None, **kwargs: Any) -> Iterator[bool]:
    """:func:`start_ray` for the block; Ray is shut down (or left) at the end if this call
    started (or joined) it. Yields whether it did."""
    started = start_ray(address, **kwargs)
    try:
        yield started
    finally:
        if started:
            import ray

            ray.shutdown()


def quiet_ray_data() -> None:
    """Ray Data's own progress bars and per-operator logs would fight the job's one bar."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    for name in ("ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # ... which then warns, on every job, that its progress bars are disabled.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


# ---- joining -----------------------------------------------------------------------------------
def _join(address: str, kwargs: dict[str, Any]) -> None:
    import ray

    from signgen.runtime import capture_native_stderr

    head, origin = _head_address(address)
    if head is not None:
        _probe(address, head, origin)
    with capture_native_stderr() as native:
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # ConnectionError, AuthenticationError, ValueError, ...
            error = exc
        else:
            return
    raise InputError(_join_error(address, error, native.text)) from None


def _head_address(address: str) -> tuple[tuple[str, int] | None, str]:
    """(host, port) that ``ray.init(address=...)`` will connect to, and where it came from.

    None when it cannot be told beforehand (then ``ray.init`` reports any failure itself).
    """
    given = address.strip()
    origin = "--address"
    if given == "auto":
        env = os.environ.get("RAY_ADDRESS", "").strip()
        if env:
            given, origin = env, "RAY_ADDRESS"
        else:
            try:  # Ray's own lookup of the address `ray start` wrote on this node
                from ray._private.services import canonicalize_bootstrap_address
            except ImportError:  # moved in another Ray version: skip the early check
                return None, origin
            # Ray logs which of the machine's clusters it picked: the job says it if needed.
            ray_log = logging.getLogger("ray._private.services")
            level = ray_log.level
            ray_log.setLevel(logging.ERROR)
            try:
                found = canonicalize_bootstrap_address("auto")
            except ConnectionError:
                raise InputError(
                    "--address auto found no Ray cluster on this node: start one with "
                    "`ray start --head`, give its HOST:PORT, or leave --address out to run "
                    "on a local Ray"
                ) from None
            finally:
                ray_log.setLevel(level)
            if not found:
                return None, origin
            given, origin = found, "Ray's current-cluster file (written by `ray start`)"
    return _host_port(given, address), origin


def _host_port(text: str, address: str) -> tuple[str, int]:
    rest = text.split("://", 1)[1] if "://" in text else text
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address must be auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def _probe(address: str, head: tuple[str, int], origin: str) -> None:
    host, port = head
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        via = "" if origin == "--address" else f" (from {origin})"
        raise InputError(
            f"cannot reach the Ray cluster at {host}:{port}{via}: {reason}. Start it with "
            f"`ray start --head --port {port}` on that machine, check the host and port, or "
            "leave --address out to run on a local Ray"
        ) from None


def _join_error(address: str, exc: BaseException, native: str) -> str:
    text = f"{exc}\n{native}"
    if any(m in text for m in _AUTH_MARKERS) or type(exc).__name__ == "AuthenticationError":
        return (
            f"the Ray cluster at {address} needs its authentication token: set "
            "RAY_AUTH_MODE=token and give the cluster's token (RAY_AUTH_TOKEN, "
            f"RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token copied from the head node); {AUTH_DOCS}"
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"cannot join the Ray cluster at {address}: {first}. Check that it runs the same "
        "Ray version, or leave --address out to run on a local Ray"
    )


# ---- local start ---------------------------------------------------------------------------
class _DropAuthNotice(logging.Filter):
    """Ray announces on every local start that it enabled token authentication (its
    default since 2.60): not something the user of a job needs to read."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled" not in record.getMessage()


@contextlib.contextmanager
def _without_auth_notice() -> Iterator[None]:
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    notice = _DropAuthNotice()
    log.addFilter(notice)
    try:
        yield
    finally:
        log.removeFilter(notice)
