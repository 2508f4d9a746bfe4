"""Helpers (no tests): a Ray cluster of `ray start` nodes on this machine, as users start one.

Every process a :class:`LocalCluster` starts (the `ray start` of each node, and through it
Ray's GCS, raylets, agents and workers; the drivers started with :meth:`LocalCluster.run`)
carries the environment variable ``SIGNGEN_TEST_CLUSTER=<private folder>`` and
``SIGNGEN_TEST_NODE=<node name>``, which Ray passes on to everything it spawns. Faults and
clean-up find processes by these variables (``/proc/PID/environ``) and kill them by id, so
only this cluster's processes are ever touched: `ray stop` is never used, since it stops
every Ray of the machine. The private folder is the cluster's ``RAY_TMPDIR`` and ``HOME``
(short: Ray's socket paths must stay under 108 bytes).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
MARK = "SIGNGEN_TEST_CLUSTER"
NODE = "SIGNGEN_TEST_NODE"
OBJECT_STORE = 96 * 1024**2  # bytes per node: tiny clips; keeps /dev/shm use small


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environ(proc: psutil.Process) -> dict[str, str]:
    """The environment of a live process ({} for a zombie or a process gone meanwhile)."""
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return {}
        return proc.environ()
    except psutil.Error:
        return {}


class LocalCluster:
    """A head (``ray start --head``) and worker nodes (``ray start --address``) on this machine.

    Nodes run niced (the machine is shared) with few CPUs and a small object store.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sgmn", dir="/tmp"))
        (self.root / "home").mkdir()
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[str] = []

    # ---- environment ---------------------------------------------------------------------
    def env(self, node: str = "driver", **extra: str) -> dict[str, str]:
        """A user's environment for a process of this cluster (no inherited Ray state)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update({"RAY_TMPDIR": str(self.root), "HOME": str(self.root / "home"),
                    "RAY_USAGE_STATS_ENABLED": "0", MARK: str(self.root), NODE: node,
                    "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
                    # Ray's memory monitor kills workers when the MACHINE's memory is 95%
                    # used; on a shared test machine that is other programs' memory.
                    "RAY_memory_monitor_refresh_ms": "0"})  # fmt: skip
        env.update(extra)
        return env

    # ---- nodes -----------------------------------------------------------------------------
    def _ray_start(self, node: str, args: list[str], tries: int = 3) -> None:
        """`ray start ARGS` for ``node``. Ray gives a starting node 30 s (not configurable)
        to register with the GCS; on a machine loaded by other programs that can pass, so
        a failed start is cleaned up (this node's processes only) and tried again."""
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--disable-usage-stats",
               "--object-store-memory", str(OBJECT_STORE), *args]  # fmt: skip
        for attempt in range(tries):
            res = subprocess.run(cmd, env=self.env(node), capture_output=True, text=True,
                                 timeout=240, cwd=self.root)  # fmt: skip
            if res.returncode == 0:
                self.nodes.append(node)
                return
            self.kill(node)
            assert attempt < tries - 1, f"ray start ({node}) failed:\n{res.stderr[-3000:]}"

    def start_head(self, num_cpus: float = 1) -> None:
        self._ray_start("head", ["--head", "--port", str(self.port), "--num-cpus",
                                 str(num_cpus), "--include-dashboard", "false"])  # fmt: skip

    def add_node(self, name: str, num_cpus: float = 2, resources: dict | None = None) -> None:
        args = ["--address", self.address, "--num-cpus", str(num_cpus)]
        if resources:
            args += ["--resources", json.dumps(resources)]
        self._ray_start(name, args)

    def processes(self, node: str | None = None) -> list[psutil.Process]:
        """Live processes of this cluster (of one node when ``node`` is given)."""
        found = []
        for proc in psutil.process_iter():
            env = _environ(proc)
            if env.get(MARK) == str(self.root) and (node is None or env.get(NODE) == node):
                if proc.pid != os.getpid():
                    found.append(proc)
        return found

    def raylet(self, node: str) -> psutil.Process:
        procs = [p for p in self.processes(node) if _name(p) == "raylet"]
        assert len(procs) == 1, f"{node}: {len(procs)} raylets"
        return procs[0]

    def kill(self, node: str | None = None, only: str | None = None) -> int:
        """SIGKILL the processes of ``node`` (every node when None), or only those whose
        process name is ``only`` (e.g. "raylet"); returns how many were killed."""
        procs = [p for p in self.processes(node) if only is None or _name(p) == only]
        for proc in procs:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=30)
        return len(procs)

    def wait_alive_nodes(self, count: int, timeout: float = 120) -> None:
        """Until the GCS lists ``count`` live nodes (a node killed is marked dead later)."""
        code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                "print(sum(n['Alive'] for n in ray.nodes()))")  # fmt: skip
        deadline = time.monotonic() + timeout
        alive = None
        while time.monotonic() < deadline:
            res = subprocess.run([sys.executable, "-c", code, self.address], env=self.env(),
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
            alive = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else None
            if alive == str(count):
                return
            time.sleep(2)
        raise AssertionError(f"{alive} live nodes, expected {count}")

    # ---- drivers ---------------------------------------------------------------------------
    def signgen(self, args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``signgen ARGS`` as a separate process against this cluster, to the end."""
        return subprocess.run(self.signgen_cmd(args), env=self.env(), capture_output=True,
                              text=True, timeout=timeout, cwd=self.root)  # fmt: skip

    def start_signgen(self, args: list[str]) -> subprocess.Popen:
        """``signgen ARGS`` in the background (its own process group). Its stderr goes to
        a file (:func:`driver_log` reads it), not a pipe: Ray forwards every worker's log
        lines to the driver, and a pipe nobody reads until the end fills up and blocks it."""
        log = self.root / f"driver-{time.monotonic_ns()}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(self.signgen_cmd(args), env=self.env(), cwd=self.root,
                                    stdout=subprocess.DEVNULL, stderr=fh,
                                    start_new_session=True)  # fmt: skip
        proc.log_path = log  # type: ignore[attr-defined]
        return proc

    @staticmethod
    def signgen_cmd(args: list[str]) -> list[str]:
        return ["nice", "-n", "10", sys.executable, "-m", "pipelines.app", *args]

    @staticmethod
    def kill_driver(proc: subprocess.Popen) -> None:
        """SIGKILL a driver started by :meth:`start_signgen` (its whole process group)."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)

    # ---- the end ----------------------------------------------------------------------------
    def stop(self) -> None:
        """Kill every process of this cluster until none is left (a dying raylet may still
        spawn a worker), and remove its folder."""
        leftover = self.processes()
        for _ in range(10):
            if not leftover:
                break
            self.kill()
            time.sleep(0.5)
            leftover = self.processes()
        shutil.rmtree(self.root, ignore_errors=True)
        assert not leftover, f"processes left: {[(p.pid, _name(p)) for p in leftover]}"


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def driver_log(proc: subprocess.Popen) -> str:
    """What a driver started by :meth:`LocalCluster.start_signgen` wrote to stderr."""
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``predicate`` until true; fail early if ``proc`` (a driver) ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            err = driver_log(proc)
            raise AssertionError(
                f"driver ended (rc {proc.returncode}) before {what}: {err[-3000:]}"
            )
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
