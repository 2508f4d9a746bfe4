"""Starting and joining Ray (pipelines.ray_cluster), as users meet it, through the CLI.

* A machine with Ray leftovers: a `ray start --head` that died without `ray stop` leaves
  its address in Ray's current-cluster file, and RAY_ADDRESS may point anywhere. Without
  --address a job must start its own local Ray regardless (the Ray Train test in
  test_train.py runs `train --workers 2` on such a machine, end to end).
* --address to a cluster that cannot be joined (nobody listening, a stale current-cluster
  file behind `--address auto`, a head with token authentication and no token): one line
  on stderr naming the fix, exit 2, within seconds.

Every Ray process these tests start lives under a private RAY_TMPDIR and is killed by id
(the processes whose command line names that folder) when the test ends; `ray stop` is
never used, since it stops every Ray of the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_tmp():
    """A short private RAY_TMPDIR (Ray's socket paths must stay under 108 bytes); every
    process started with it is killed when the test ends."""
    tmp = Path(tempfile.mkdtemp(prefix="sgray", dir="/tmp"))
    try:
        yield tmp
    finally:
        _kill_ray_processes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _kill_ray_processes(tmp: Path) -> None:
    import psutil

    mine = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(tmp) in cmdline and proc.pid != os.getpid():
            mine.append(proc)
    for proc in mine:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(mine, timeout=30)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    """The user's environment, minus Ray state inherited from this test process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"RAY_TMPDIR": str(tmp), "HOME": str(tmp / "home"),
                "RAY_USAGE_STATS_ENABLED": "0"})  # fmt: skip
    env.update(extra)
    (tmp / "home").mkdir(exist_ok=True)
    return env


def _signgen(args: list[str], env: dict[str, str], timeout: float = 120):
    cmd = [sys.executable, "-m", "pipelines.app", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)  # fmt: skip


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def _command(kind: str, tmp: Path, address: str) -> list[str]:
    """One Ray entry point of each kind, with inputs it accepts up to the Ray start."""
    if kind == "render-many":
        (tmp / "clips.csv").write_text("clip_id,video,keypoints\nc1,v.mp4,k.json\n")
        return ["render-many", "--manifest", str(tmp / "clips.csv"), "--out", str(tmp / "out"),
                "--address", address, "-q"]  # fmt: skip
    if kind == "evaluate":
        frame = np.zeros((16, 12, 3), np.uint8)
        for side in ("pred", "gt"):
            (tmp / side / "v1").mkdir(parents=True)
            Image.fromarray(frame).save(tmp / side / "v1" / "images0001.png")
        return ["evaluate", "--pred", str(tmp / "pred"), "--gt", str(tmp / "gt"), "-o",
                str(tmp / "m.csv"), "--metrics", "ssim", "--workers", "1", "--address",
                address]  # fmt: skip
    assert kind == "train"
    return ["train", "ipf", "--config", str(REPO / "configs" / "train" / "tiny_ipf.yaml"),
            f"data.prepared={tmp / 'prepared'}", f"output_dir={tmp / 'run'}", "--address",
            address, "-q"]  # fmt: skip


@pytest.mark.parametrize("kind", ["render-many", "evaluate", "train"])
def test_unreachable_address_is_one_line(kind, ray_tmp):
    port = _closed_port()
    t0 = time.monotonic()
    res = _signgen(_command(kind, ray_tmp, f"127.0.0.1:{port}"), _env(ray_tmp))
    assert res.returncode == 2, res.stderr
    line = _one_line(res.stderr)
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in line
    assert "ray start --head" in line and "leave --address out" in line
    assert time.monotonic() - t0 < 60  # Ray alone would retry for many minutes
    assert not (ray_tmp / "m.csv").exists() and not (ray_tmp / "run" / "checkpoints").exists()


def test_address_auto_with_a_dead_heads_file_is_one_line(ray_tmp):
    """`--address auto` follows Ray's current-cluster file; a dead head's address there is
    named as such."""
    # Ray's "auto" also scans the node's processes for a live GCS and prefers it to the file:
    # the case under test (only a dead head's file) needs a node without any other Ray.
    import psutil

    if any(p.info["name"] == "gcs_server" for p in psutil.process_iter(["name"])):
        pytest.skip("another Ray cluster runs on this machine; `auto` would find it")
    port = _closed_port()
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}")
    res = _signgen(_command("render-many", ray_tmp, "auto"), _env(ray_tmp))
    assert res.returncode == 2, res.stderr
    line = _one_line(res.stderr)
    assert f":{port} (from Ray's current-cluster file" in line and "cannot reach" in line


def test_local_start_ignores_a_dead_head_and_ray_address(ray_tmp):
    """Without an address the helper starts a new local Ray although the current-cluster
    file and RAY_ADDRESS both name a dead head (plain `ray.init()` would try to join it and
    refuse num_cpus), and shuts it down afterwards."""
    dead = f"127.0.0.1:{_closed_port()}"
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(dead)
    code = (
        "import ray\n"
        "from pipelines.ray_cluster import ray_session\n"
        "with ray_session(num_cpus=1) as started:\n"
        "    print(started, ray.cluster_resources().get('CPU'),\n"
        "          ray.get_runtime_context().gcs_address)\n"
        "print(ray.is_initialized())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=_env(ray_tmp, RAY_ADDRESS=dead),
                         capture_output=True, text=True, timeout=180, cwd=REPO)  # fmt: skip
    assert res.returncode == 0, res.stderr
    started, cpus, gcs, after = res.stdout.split()
    assert (started, cpus, after) == ("True", "1.0", "False")
    assert gcs != dead
    # plain ray.init() on the same machine state is what used to fail
    res = subprocess.run([sys.executable, "-c", "import ray; ray.init(num_cpus=1)"],
                         env=_env(ray_tmp, RAY_ADDRESS=dead), capture_output=True, text=True,
                         timeout=180, cwd=REPO)  # fmt: skip
    assert res.returncode != 0


def test_cluster_with_token_auth_needs_the_token(ray_tmp):
    """A head started with RAY_AUTH_MODE=token: joining without the token is one line that
    names RAY_AUTH_MODE and RAY_AUTH_TOKEN; with them, the same helper joins."""
    port = _closed_port()
    token = secrets.token_hex(32)
    head_env = _env(ray_tmp, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    start = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--port", str(port),
             "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats"]  # fmt: skip
    res = subprocess.run(start, env=head_env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    address = f"127.0.0.1:{port}"
    # Ray retries a refused connection 20 times a second apart; 3 are enough to fail here.
    client = _env(ray_tmp, RAY_NUM_REDIS_GET_RETRIES="3")
    res = _signgen(_command("render-many", ray_tmp, address), client)
    assert res.returncode == 2, res.stderr
    line = _one_line(res.stderr)
    assert f"the Ray cluster at {address} needs its authentication token" in line
    assert "RAY_AUTH_MODE=token" in line and "RAY_AUTH_TOKEN" in line
    code = (
        "import ray, sys\n"
        "from pipelines.ray_cluster import ray_session\n"
        "with ray_session(sys.argv[1]):\n"
        "    print(ray.cluster_resources().get('CPU'))\n"
    )
    joined = subprocess.run([sys.executable, "-c", code, address],
                            env={**client, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
                            capture_output=True, text=True, timeout=180, cwd=REPO)  # fmt: skip
    assert joined.returncode == 0, joined.stderr[-2000:]
    assert joined.stdout.split()[-1] == "1.0"
