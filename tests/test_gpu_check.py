"""tools/gpu_check.sh --cpu-smoke: the one-shot GPU check's own code, at miniature size on
the CPU, so that the script a GPU machine runs once cannot rot unnoticed.

The smoke run renders with the tiny model, trains one step at the recipe's batch, runs
`signgen render-many` on a local Ray with one CPU worker and toggles every speed option;
speeds and MFU of a CPU run mean nothing, so only the structure and the correctness flags
of the result are asserted. Its budget here is generous (the check's default is 470 s on a
GPU; the smoke run takes about a minute on an idle 2-core machine) so that a busy machine
does not make sections skip.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_check.sh"


def _run(*args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu_check")
    res = _run("--cpu-smoke", "--out", str(out), "--budget-s", "360")
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_every_section_ran(smoke):
    r, _ = smoke
    assert set(r["sections"]) == {"tests", "render", "train", "render_many", "speed"}
    for name, sec in r["sections"].items():
        assert "error" not in sec and "skipped" not in sec, (name, sec)
    assert r["model"]["config"] == "configs/model/tiny.yaml"
    assert r["model"]["flops_per_sample"]["unet_forward"] > 0


def test_gpu_tests_collected_and_skipped_on_cpu(smoke):
    t = smoke[0]["sections"]["tests"]
    assert t["returncode"] == 0 and t["counts"].get("skipped", 0) >= 1
    assert "failed" not in t["counts"] and "passed" not in t["counts"]


def test_full_sizes_are_the_papers():
    """What the GPU run measures: 20 steps, batches 8/16/32, the recipe's training batch."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_check

    assert gpu_check.FULL.steps == 20 and gpu_check.FULL.render_batches == (8, 16, 32)
    assert gpu_check.FULL.train_batch is None  # configs/recipes/fpdm_phoenix_b6.yaml: 8 x 4
    assert gpu_check.GUIDANCE == (2.0, 2.0)


def test_render_rows(smoke):
    r, _ = smoke
    sizes = r["setup"]["sizes"]
    rows = r["sections"]["render"]["rows"]
    assert [x["batch"] for x in rows] == sizes["render_batches"]
    for x in rows:
        # guidance 2, 2: two branches per frame in one UNet call per step
        assert x["unet_calls"] == sizes["steps"] and x["unet_batch"] == 2 * x["batch"]
        assert x["finite"] and x["frames_ok"] and x["frames_per_s"] > 0
        assert 0 < x["unet_mfu"] < 1 and x["peak_gib"] > 0


def test_training_rows(smoke):
    r, _ = smoke
    rows = r["sections"]["train"]["rows"]
    assert [(x["checkpointing"], x["frozen_encoders"]) for x in rows] == [
        ("off", "fp32"), ("on", "fp32"), ("on", "bf16")]  # fmt: skip
    for x in rows:
        assert [x["micro_batch"], x["grad_accum"]] == r["setup"]["sizes"]["train_batch"]
        assert x["seconds"] > 0 and math.isfinite(x["loss"]) and math.isfinite(x["grad_norm"])


def test_render_many_rendered_every_clip(smoke):
    rm = smoke[0]["sections"]["render_many"]
    assert rm["returncode"] == 0
    assert rm["videos"] == rm["ledger_done"] == rm["clips"] == 3
    assert rm["frames"] == 3 * rm["frames_per_clip"]


def test_speed_options_on_and_off(smoke):
    rows = smoke[0]["sections"]["speed"]["rows"]
    assert [x["option"] for x in rows] == ["fp32 weights", "eager attention", "channels-last",
                                           "torch.compile", "VAE slicing"]  # fmt: skip
    for x in rows:
        assert x["on"]["finite"] and x["off"]["finite"] and x["speedup"] > 0


def test_markdown_has_every_table(smoke):
    md = smoke[1]
    for title in ("## CUDA-marked tests", "## Render throughput", "## Training step",
                  "## render-many", "## Speed options"):  # fmt: skip
        assert title in md
    assert "| torch.compile (" in md and "3 videos of 3" in md


def test_out_of_budget_sections_are_skipped_with_a_note(tmp_path):
    res = _run("--cpu-smoke", "--out", str(tmp_path), "--budget-s", "5", timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    assert "skipped" in r["sections"]["tests"]
    assert any("no time left to build the model" in n for n in r["notes"])
    assert "**" in (tmp_path / "gpu_check.md").read_text()


def test_without_a_gpu_it_says_so(tmp_path):
    res = _run("--out", str(tmp_path), timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("gpu_check: no CUDA GPU")
    assert not (tmp_path / "gpu_check.json").exists()
