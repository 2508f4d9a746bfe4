"""`signgen render-pairs` on a miniature prepared DeepFashion tree with the tiny model."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from model_helpers import randomize
from PIL import Image

from signgen.cli import main
from signgen.models.config import load_model_config
from signgen.sampling.options import RenderOptions
from signgen.sampling.pipeline import FPDMPipeline


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    from test_prepare_deepfashion import build_tree

    base = tmp_path_factory.mktemp("pairs")
    root = build_tree(base / "fashion")
    prepared = base / "prepared"
    assert main(["prepare", "deepfashion", "--root", str(root), "-o", str(prepared), "-q"]) == 0
    pipe = FPDMPipeline.from_config(load_model_config("tiny"))
    randomize(pipe.pose_encoder, 1)  # zero-init conv_out would hide the pose path
    pipe.save_pretrained(base / "model")
    return prepared, base / "model"


def _run(prepared: Path, model: Path, out: Path, *extra: str) -> int:
    return main(["render-pairs", "--prepared", str(prepared), "--model", str(model),
                 "-o", str(out), "--steps", "2", "-q", *extra])  # fmt: skip


def test_pairs_are_generated_resumably_and_evaluate(setup, tmp_path):
    prepared, model = setup
    out = tmp_path / "out"
    assert _run(prepared, model, out, "--limit", "3", "--batch-size", "2") == 0
    rows = list(csv.DictReader((out / "pairs.csv").open()))
    assert len(rows) == 3 and len({r["key"] for r in rows}) == 3
    with open(prepared / "test_pairs.csv", newline="") as f:
        expected = [(r["source"], r["target"]) for r in csv.DictReader(f)][:3]
    assert [(r["source"], r["target"]) for r in rows] == expected
    for r in rows:
        pred = np.asarray(Image.open(out / "pred" / r["key"] / "images0001.png"))
        gt = np.asarray(Image.open(out / "gt" / r["key"] / "images0001.png"))
        assert pred.shape == gt.shape and pred.dtype == np.uint8  # the prepared image size
    assert not list(out.rglob("*.part*"))

    # A re-run skips finished pairs; a missing one is generated again, the same up to float
    # reduction order (its noise does not depend on the batch it lands in).
    first = out / "pred" / rows[1]["key"] / "images0001.png"
    before = np.asarray(Image.open(first)).astype(int)
    first.unlink()
    mtime = (out / "pred" / rows[0]["key"] / "images0001.png").stat().st_mtime_ns
    assert _run(prepared, model, out, "--limit", "3", "--batch-size", "1") == 0
    assert np.abs(np.asarray(Image.open(first)) - before).max() <= 1
    assert (out / "pred" / rows[0]["key"] / "images0001.png").stat().st_mtime_ns == mtime

    # The layout is what `signgen evaluate` reads: one row per pair.
    metrics = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(out / "pred"), "--gt", str(out / "gt"),
                 "--metrics", "ssim,psnr", "-o", str(metrics)]) == 0  # fmt: skip
    assert len(list(csv.DictReader(metrics.open()))) == 3


def test_the_target_pose_drives_the_output(setup, tmp_path):
    from signgen.data.deepfashion import DeepFashionPairs

    prepared, model = setup
    pipe = FPDMPipeline.from_pretrained(model)
    ds = DeepFashionPairs(prepared, "test", pipe.resolution, max_pairs=2)
    a, b = ds[0], ds[1]
    src = pipe.encode_source(a["source"].numpy())
    import torch

    pose = torch.stack([a["target_pose"], b["target_pose"]])
    assert not torch.equal(pose[0], pose[1])
    out = pipe.generate([src, src], pose, [0, 0], RenderOptions(steps=2))
    assert out.shape == (2, 3, *pipe.resolution)
    assert not torch.allclose(out[0], out[1])  # same source and noise, other pose


def test_bad_inputs_are_one_line_errors(setup, tmp_path, capsys):
    prepared, model = setup
    assert _run(tmp_path / "nothing", model, tmp_path / "o") == 2
    assert _run(prepared, model, tmp_path / "o", "--split", "dev") == 2
    assert _run(prepared, model, tmp_path / "o", "--batch-size", "0") == 2
    err = capsys.readouterr().err
    assert err.count("signgen: error:") == 3 and "Traceback" not in err
