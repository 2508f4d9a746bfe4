"""From a miniature raw tree to one training step of each stage, all through the CLI."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import pytest

from signgen.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"
# Keep the runs tiny: one optimizer step, a handful of evaluation pairs, one 1-step sample.
SMALL = ["train.max_steps=1", "data.max_eval_pairs=4", "fpdm.num_samples=1", "fpdm.sample_steps=1"]


def _needs_train_cli() -> None:
    try:
        importlib.import_module("signgen.train.cli")
    except ModuleNotFoundError:
        pytest.skip("`signgen train` (signgen.train.cli) is not present in this build")


def _train(stage: str, prepared: Path, out: Path, *extra: str) -> dict:
    args = ["train", stage, "--config", str(CONFIGS / f"tiny_{stage}.yaml"), "-q",
            f"data.prepared={prepared}", f"output_dir={out}", *SMALL, *extra]  # fmt: skip
    assert main(args) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def phoenix_prepared(tmp_path_factory) -> Path:
    from test_prepare_phoenix import build_tree

    base = tmp_path_factory.mktemp("phoenix_train")
    root, kp = build_tree(base / "raw")
    out = base / "prepared"
    assert main(["prepare", "phoenix", "--root", str(root), "--keypoints", str(kp),
                 "-o", str(out), "--train-pairs", "64", "-q"]) == 0  # fmt: skip
    return out


@pytest.mark.parametrize("stage", ["ipf", "fpdm"])
def test_phoenix_one_training_step(stage, phoenix_prepared, tmp_path):
    _needs_train_cli()
    summary = _train(stage, phoenix_prepared, tmp_path / stage)
    assert summary["step"] == 1
    assert (tmp_path / stage / "export").is_dir()


def _deepfashion_routed() -> bool:
    """Whether the training datasets read prepared DeepFashion folders."""
    try:
        common = importlib.import_module("signgen.train.common")
    except ModuleNotFoundError:
        return False
    return "deepfashion" in inspect.getsource(common).lower()


@pytest.mark.parametrize("stage", ["ipf", "fpdm"])
def test_deepfashion_one_training_step(stage, tmp_path):
    _needs_train_cli()
    if not _deepfashion_routed():
        pytest.skip(
            "signgen.train.common.datasets does not open prepared DeepFashion folders yet "
            "(signgen.data.deepfashion.DeepFashionPairs)"
        )
    from test_prepare_deepfashion import build_tree

    root = build_tree(tmp_path / "fashion")
    prepared = tmp_path / "prepared"
    assert main(["prepare", "deepfashion", "--root", str(root), "-o", str(prepared), "-q"]) == 0
    summary = _train(stage, prepared, tmp_path / stage, "data.eval_split=test")
    assert summary["step"] == 1
