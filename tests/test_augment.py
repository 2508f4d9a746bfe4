"""signgen augment on a synthetic split: a Phoenix-layout tree `signgen prepare phoenix` accepts.

A 2-signer synthetic world at Phoenix size (210x260: MSKA keypoints are in those pixels),
4 frames per video, the tiny model, 2 steps, one local Ray session (2 CPUs). The default
run retargets (the config's ``retarget: true``); a second, smaller run with
``retarget=false`` keeps the copied keypoints of before.
"""

from __future__ import annotations

import csv
import json
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
    raw_out = tmp_path_factory.mktemp("aug_raw")
    raw_argv = [*(a if not a.startswith("out=") else f"out={raw_out}" for a in argv),
                "retarget=false", "max_videos=2"]  # fmt: skip
    try:
        code = main(argv)
        again = main(argv)  # resumable: nothing left to render
        raw_code = main(raw_argv)
    finally:
        ray.shutdown()
    return SimpleNamespace(out=out, code=code, again=again, argv=argv, raw_out=raw_out,
                           raw_code=raw_code, raw_argv=raw_argv)  # fmt: skip


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


def _manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "augment_manifest.train.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_augment_keypoints_are_retargeted_onto_the_appearance_signer(augmented, world):
    """The new tree carries the keypoints each video was rendered from: the source video's
    retargeted onto the first pose of the appearance video (both from the dataset's own
    MSKA pickle), which differ from the source's own (the world's signers differ in body)."""
    from signgen.keypoints import load_keypoints
    from signgen.keypoints.retarget import retarget_sequence
    from signgen.video import read_first_frame

    kp_new = augmented.out / "keypoints" / "Phoenix-2014T.train"
    kp_old = world / "keypoints" / "Phoenix-2014T.train"
    rows = _manifest(augmented.out)
    assert rows and len({r["seed"] for r in rows}) == len(rows)
    frames = augmented.out / "PHOENIX-2014-T/features/fullFrame-210x260px/train"
    moved = []
    for r in rows:
        assert r["appearance_signer"] != r["source_signer"] and r["retarget"] == "1"
        new = load_keypoints(kp_new, sample=r["name"])
        old = load_keypoints(kp_old, sample=r["source_video"])
        ref = load_keypoints(kp_old, sample=r["appearance_video"]).points[0]
        want = retarget_sequence(old, ref, (210, 260))
        np.testing.assert_allclose(new.points, want.points, atol=1e-3)
        moved.append(np.abs(new.points[..., :2] - old.points[..., :2]).max())
        assert read_first_frame(frames / r["name"]).shape == (260, 210, 3)
    assert min(moved) > 1.0, moved  # pixels: retargeting moved every video's keypoints
    ledger = (augmented.out / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == len(rows), "the second run rendered nothing again"
    assert all('"retarget"' in line for line in ledger)  # each video's fit is recorded
    job = json.loads((augmented.out / "job.json").read_text())
    assert job["retarget"] == {"min_score": 0.3}  # references from the pickle: no extractor


def test_augment_frames_are_rendered_from_the_retargeted_keypoints(augmented, world, model_dir):
    """One video's frames against single-process renders of the retargeted and of the raw
    keypoints: they are the former (within the batch-shape rounding of test_render_many:
    a rare pixel 1 grey level off)."""
    import torch

    from signgen.keypoints import load_keypoints
    from signgen.sampling.pipeline import FPDMPipeline
    from signgen.video import read_first_frame, read_frames

    r = _manifest(augmented.out)[0]
    root = world / "PHOENIX-2014-T/features/fullFrame-210x260px/train"
    first = read_first_frame(root / r["appearance_video"])
    got = read_frames(augmented.out / "PHOENIX-2014-T/features/fullFrame-210x260px/train"
                      / r["name"]).astype(np.int16)  # fmt: skip
    pipe = FPDMPipeline.from_pretrained(model_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CPU actors of the job
    try:
        kp = {
            "retargeted": load_keypoints(augmented.out / "keypoints/Phoenix-2014T.train",
                                         sample=r["name"]),
            "raw": load_keypoints(world / "keypoints/Phoenix-2014T.train",
                                  sample=r["source_video"]),
        }  # fmt: skip
        diff = {k: np.abs(got - pipe(first, seq, steps=2, guidance=(2.0, 2.0),
                                      seed=int(r["seed"]))) for k, seq in kp.items()}  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    # The tiny random model responds weakly to the pose (raw vs retargeted: a few hundredths
    # of a grey level on average), so the check is relative: 10x closer to the retargeted
    # render, and within 1 grey level of it everywhere.
    mean = {k: float(d.mean()) for k, d in diff.items()}
    assert diff["retargeted"].max() <= 1 and 10 * mean["retargeted"] < mean["raw"], mean


def test_augment_without_retargeting_copies_keypoints_and_resumes_only_that_way(augmented,
                                                                                world, capsys):  # fmt: skip
    from pipelines.app import main
    from signgen.keypoints import load_keypoints

    assert augmented.raw_code == 0
    rows = _manifest(augmented.raw_out)
    assert len(rows) == 2 and all(r["retarget"] == "0" for r in rows)
    for r in rows:
        new = load_keypoints(augmented.raw_out / "keypoints/Phoenix-2014T.train", sample=r["name"])
        old = load_keypoints(world / "keypoints/Phoenix-2014T.train", sample=r["source_video"])
        np.testing.assert_array_equal(new.points, old.points)
    assert "retarget" not in json.loads((augmented.raw_out / "job.json").read_text())
    # The folder holds raw renders: resuming it with retargeting on would mix the two.
    capsys.readouterr()
    argv = [a for a in augmented.raw_argv if a != "retarget=false"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "retarget: false" in err[0] and "retarget=false" in err[0], err


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
