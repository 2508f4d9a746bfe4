"""From a miniature raw tree to one training step of each stage, all through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from signgen.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"
# Keep the runs tiny: one optimizer step, a handful of evaluation pairs, one 1-step sample.
SMALL = ["train.max_steps=1", "data.max_eval_pairs=4", "fpdm.num_samples=1", "fpdm.sample_steps=1"]


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
    summary = _train(stage, phoenix_prepared, tmp_path / stage)
    assert summary["step"] == 1
    assert (tmp_path / stage / "export").is_dir()


@pytest.mark.parametrize("stage", ["ipf", "fpdm"])
def test_deepfashion_one_training_step(stage, tmp_path):
    from test_prepare_deepfashion import build_tree

    root = build_tree(tmp_path / "fashion")
    prepared = tmp_path / "prepared"
    assert main(["prepare", "deepfashion", "--root", str(root), "-o", str(prepared), "-q"]) == 0
    summary = _train(stage, prepared, tmp_path / stage, "data.eval_split=test")
    assert summary["step"] == 1


def test_training_datasets_follow_the_prepared_folder(phoenix_prepared, tmp_path):
    from test_prepare_deepfashion import build_tree

    from signgen.data.deepfashion import DeepFashionPairs
    from signgen.data.pairs import PairDataset
    from signgen.errors import InputError
    from signgen.train.common import datasets
    from signgen.train.config import load_train_config

    root = build_tree(tmp_path / "fashion")
    prepared = tmp_path / "prepared"
    assert main(["prepare", "deepfashion", "--root", str(root), "-o", str(prepared), "-q"]) == 0
    cfg = load_train_config(CONFIGS / "tiny_fpdm.yaml", [
        f"data.prepared={prepared}", "data.eval_split=test", "data.augment={flip_prob: 1.0}"])  # fmt: skip
    train, evals = datasets(cfg, (64, 64))
    assert isinstance(train, DeepFashionPairs) and isinstance(evals, DeepFashionPairs)
    assert train.augment.flip_prob == 1.0 and evals.augment.flip_prob == 0.0
    cfg = load_train_config(CONFIGS / "tiny_fpdm.yaml", [f"data.prepared={phoenix_prepared}"])
    assert all(isinstance(d, PairDataset) for d in datasets(cfg, (64, 64)))
    bad = load_train_config(CONFIGS / "tiny_fpdm.yaml", [
        f"data.prepared={phoenix_prepared}", "data.augment={flip_prob: 0.5}"])  # fmt: skip
    with pytest.raises(InputError, match="DeepFashion folders only"):
        datasets(bad, (64, 64))
