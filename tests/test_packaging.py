"""signgen as a wheel: the presets travel inside the package and are found from it.

The wheel is built from a copy of the sources (so the checkout gets no build/ or
egg-info), installed into a temporary target folder, and imported from there by a fresh
interpreter whose working directory is outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_carries_the_configs_and_loads_the_tiny_model_config(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("signgen", "pipelines", "configs"):
        shutil.copytree(REPO / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(src)], check=True, capture_output=True,
                   timeout=600)  # fmt: skip
    (wheel,) = wheels.glob("signgen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "signgen/configs/model/tiny.yaml" in names
    assert "signgen/configs/train/tiny_base.yaml" in names
    assert "pipelines/app.py" in names

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                    "--target", str(target), str(wheel)], check=True, capture_output=True,
                   timeout=600)  # fmt: skip
    code = (
        "import signgen, sys\n"
        "from signgen.models.config import CONFIG_DIR, load_model_config\n"
        "cfg = load_model_config('tiny')\n"
        "print(signgen.__file__); print(CONFIG_DIR); print(cfg.resolution)\n"
    )
    run = tmp_path / "elsewhere"
    run.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=run, env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    module, config_dir, resolution = out.stdout.splitlines()
    assert Path(module).is_relative_to(target), module  # the installed copy, not the checkout
    assert Path(config_dir).is_relative_to(target) and Path(config_dir).is_dir()
    assert resolution.replace(" ", "") in ("[32,32]", "(32,32)")  # configs/model/tiny.yaml
