"""signgen augment on a synthetic split: a Phoenix-layout tree `signgen prepare phoenix` accepts.

A 2-signer synthetic world at Phoenix size (210x260: MSKA keypoints are in those pixels),
4 frames per video, the tiny model, 2 steps, one local Ray session (2 CPUs).
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipelines.augment import AugmentConfig, Video, load_augment_config, plan

FRAMES = 4
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "augment_synthetic.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from signgen.data.synthetic import SyntheticConfig, write_dataset

    root = tmp_path_factory.mktemp("world")
    write_dataset(SyntheticConfig(out=str(root), signers=2, videos=7, frames=FRAMES, seed=1),
                  progress=False)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from signgen.models.config import load_model_config
    from signgen.sampling.pipeline import FPDMPipeline

    path = tmp_path_factory.mktemp("model") / "tiny"
    FPDMPipeline.from_config(load_model_config("tiny")).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def augmented(world, model_dir, tmp_path_factory):
    ray = pytest.importorskip("ray")
    from pipelines.app import main

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024**2,
             logging_level="WARNING")  # fmt: skip
    out = tmp_path_factory.mktemp("aug")
    argv = ["augment", "--config", str(CONFIG), f"root={world / 'PHOENIX-2014-T'}",
            f"keypoints={world / 'keypoints'}", f"out={out}", "split=train", "appearances=1",
            f"render.model={model_dir}", "render.steps=2", "cluster.workers=2",
            "cluster.batch_size=3", "-q"]  # fmt: skip
    try:
        code = main(argv)
        again = main(argv)  # resumable: nothing left to render
    finally:
        ray.shutdown()
    return SimpleNamespace(out=out, code=code, again=again, argv=argv)


def _corpus(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="|"))


def test_augment_tree_passes_prepare_phoenix(augmented, world, tmp_path):
    from pipelines.app import main
    from signgen.data.phoenix import read_manifest

    assert augmented.code == 0 and augmented.again == 0
    root = augmented.out / "PHOENIX-2014-T"
    source = _corpus(world / "PHOENIX-2014-T/annotations/manual/PHOENIX-2014-T.train.corpus.csv")
    rows = _corpus(root / "annotations/manual/PHOENIX-2014-T.train.corpus.csv")
    assert len(rows) == len(source)  # one appearance per video
    src_by_name = {r["name"]: r for r in source}
    for r in rows:
        original, signer = r["name"].split("__as__")
        src = src_by_name[original]
        assert r["speaker"] == f"{signer}_as_{src['speaker']}" and signer != src["speaker"]
        assert (r["orth"], r["translation"]) == (src["orth"], src["translation"])
        frames = sorted((root / "features/fullFrame-210x260px/train" / r["name"]).iterdir())
        assert [p.name for p in frames] == [f"images{i:04d}.png" for i in range(1, FRAMES + 1)]

    prepared = tmp_path / "prepared"
    argv = ["prepare", "phoenix", "--root", str(root), "--keypoints",
            str(augmented.out / "keypoints"), "-o", str(prepared), "--splits", "train",
            "--strict", "-q"]  # fmt: skip
    assert main(argv) == 0
    manifest = read_manifest(prepared / "manifest.csv")
    assert sorted(m["video"] for m in manifest) == sorted(r["name"] for r in rows)
    assert all(m["frames"] == FRAMES and (m["width"], m["height"]) == (210, 260) for m in manifest)


def test_augment_keypoints_are_copied_and_appearance_changes(augmented, world):
    from signgen.keypoints import load_keypoints
    from signgen.video import read_first_frame

    kp_new = augmented.out / "keypoints" / "Phoenix-2014T.train"
    kp_old = world / "keypoints" / "Phoenix-2014T.train"
    with open(augmented.out / "augment_manifest.train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and len({r["seed"] for r in rows}) == len(rows)
    frames = augmented.out / "PHOENIX-2014-T/features/fullFrame-210x260px/train"
    for r in rows:
        assert r["appearance_signer"] != r["source_signer"]
        new = load_keypoints(kp_new, sample=r["name"])
        old = load_keypoints(kp_old, sample=r["source_video"])
        np.testing.assert_array_equal(new.points, old.points)
        assert read_first_frame(frames / r["name"]).shape == (260, 210, 3)
    ledger = (augmented.out / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == len(rows), "the second run rendered nothing again"


def _videos(names_signers) -> list[Video]:
    return [Video(n, s, "G", "t", Path(n), n) for n, s in names_signers]


def test_plan_is_deterministic_and_picks_other_signers():
    vids = _videos([(f"v{i}", f"Signer0{i % 4 + 1}") for i in range(12)])
    a = plan(vids, 2, seed=5)
    assert len(a) == 24 and len({j.name for j in a}) == 24
    shuffled = {j.name: j for j in plan(list(reversed(vids)), 2, seed=5)}
    for j in a:  # the choice for a video does not depend on the order of the videos
        assert shuffled[j.name].appearance == j.appearance and shuffled[j.name].seed == j.seed
        assert j.appearance.speaker != j.source.speaker
    other = plan(vids, 2, seed=6)
    assert [(j.name, j.appearance.name) for j in a] != [(j.name, j.appearance.name) for j in other]


def test_plan_needs_two_signers_and_config_errors(tmp_path):
    from signgen.errors import InputError

    with pytest.raises(InputError, match="at least two"):
        plan(_videos([("a", "S1"), ("b", "S1")]), 1, seed=0)
    with pytest.raises(InputError, match="unknown config key"):
        load_augment_config(CONFIG, ["cluster.wrkers=2"])
    with pytest.raises(InputError, match="split must be"):
        load_augment_config(CONFIG, ["split=val"])
    cfg = load_augment_config(CONFIG, ["cluster.workers=3", "render.steps=7"])
    assert isinstance(cfg, AugmentConfig) and cfg.cluster.workers == 3 and cfg.render.steps == 7
