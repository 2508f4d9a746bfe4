"""`signgen prepare phoenix` on miniature PHOENIX-2014-T trees built with the real layout."""

from __future__ import annotations

import csv
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from signgen.cli import main
from signgen.data import phoenix as ph
from signgen.keypoints.sequence import from_json_dict

W, H = 210, 260
# split -> [(name, signer, frames)]
VIDEOS = {
    "train": [
        ("01April_2010_Thursday_heute-6694", "Signer01", 5),
        ("01April_2010_Thursday_heute-6695", "Signer02", 3),
        ("02April_2010_Friday_tagesschau-201", "Signer01", 4),
        ("02April_2010_Friday_tagesschau-202", "Signer03", 6),
    ],
    "dev": [("03April_2010_Saturday_tagesschau-1", "Signer02", 4)],
    "test": [
        ("04April_2010_Sunday_tagesschau-7", "Signer01", 3),
        ("04April_2010_Sunday_tagesschau-8", "Signer04", 5),
    ],
}


def _keypoints(rng: np.random.Generator, frames: int) -> torch.Tensor:
    pts = np.zeros((frames, 133, 3), np.float32)
    pts[..., 0] = rng.uniform(0, W - 1, (frames, 133))
    pts[..., 1] = rng.uniform(0, H - 1, (frames, 133))
    pts[..., 2] = rng.uniform(0.2, 1.0, (frames, 133))
    return torch.from_numpy(pts)


def build_tree(base: Path) -> tuple[Path, Path]:
    """Write PHOENIX-2014-T/ (frames + corpus CSVs) and mska/Phoenix-2014T.{split}."""
    rng = np.random.default_rng(0)
    root, kp_dir = base / "PHOENIX-2014-T", base / "mska"
    kp_dir.mkdir(parents=True)
    for split, videos in VIDEOS.items():
        rows, samples = [], {}
        for name, signer, frames in videos:
            folder = root / "features" / "fullFrame-210x260px" / split / name
            folder.mkdir(parents=True)
            for t in range(frames):
                img = np.full((H, W, 3), 40 * t % 255, np.uint8)
                Image.fromarray(img).save(folder / f"images{t + 1:04d}.png", compress_level=1)
            rows.append([name, f"{name}/1/*.png", "-1", "-1", signer, "REGEN WIND", "regen ."])
            samples[f"{split}/{name}"] = {
                "name": f"{split}/{name}",
                "gloss": "REGEN WIND",
                "text": "regen .",
                "num_frames": frames,
                "keypoint": _keypoints(rng, frames),
            }
        corpus = root / "annotations" / "manual" / f"PHOENIX-2014-T.{split}.corpus.csv"
        corpus.parent.mkdir(parents=True, exist_ok=True)
        with open(corpus, "w", newline="") as f:
            w = csv.writer(f, delimiter="|")
            w.writerow(ph.CORPUS_COLUMNS)
            w.writerows(rows)
        with open(kp_dir / f"Phoenix-2014T.{split}", "wb") as f:
            pickle.dump(samples, f)
    return root, kp_dir


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, Path]:
    return build_tree(tmp_path_factory.mktemp("phoenix"))


@pytest.fixture
def fresh_tree(tmp_path) -> tuple[Path, Path]:
    return build_tree(tmp_path / "raw")


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _run(root: Path, kp: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "phoenix", "--root", str(root), "--keypoints", str(kp),
                 "-o", str(out), "-q", *extra])  # fmt: skip


def test_clean_tree_pairs_and_manifest(tree, tmp_path, capsys):
    root, kp = tree
    out = tmp_path / "out"
    assert _run(root, kp, out, "--train-pairs", "500", "--seed", "3") == 0
    assert "warning" not in capsys.readouterr().err

    cols, manifest = _read(out / "manifest.csv")
    assert cols == list(ph.MANIFEST_COLUMNS)
    assert len(manifest) == sum(len(v) for v in VIDEOS.values())
    frames = {r["video"]: int(r["frames"]) for r in manifest}
    assert frames == {n: t for v in VIDEOS.values() for n, _, t in v}
    for r in manifest:
        assert (int(r["width"]), int(r["height"]), float(r["fps"])) == (W, H, 25.0)
        assert not Path(r["frames_dir"]).is_absolute()  # portable: relative to OUT
        first = ph.frame_path(out, r, 0)
        assert first.name == "images0001.png" and first.is_file()
        assert not ph.frame_path(out, r, int(r["frames"])).exists()
        seq = json.loads((out / r["keypoints_file"]).read_text())
        assert len(seq["frames"]) == int(r["frames"])
        assert r["sample"] == f"{r['split']}/{r['video']}"

    # Keypoints are carried over unchanged from the MSKA pickle.
    with open(kp / "Phoenix-2014T.test", "rb") as f:
        samples = pickle.load(f)
    name = VIDEOS["test"][1][0]
    row = next(r for r in manifest if r["video"] == name)
    seq = from_json_dict(json.loads((out / row["keypoints_file"]).read_text()))
    np.testing.assert_allclose(seq.points, samples[f"test/{name}"]["keypoint"].numpy(), atol=6e-4)
    assert (seq.width, seq.height, seq.fps) == (W, H, 25.0)
    assert seq.meta["signer"] == row["signer"] and seq.meta["gloss"] == "REGEN WIND"

    for split in ("dev", "test"):
        cols, pairs = _read(out / f"{split}_pairs.csv")
        assert cols == list(ph.PAIR_COLUMNS)
        assert len(pairs) == sum(t for _, _, t in VIDEOS[split])  # one pair per frame
        expected = [(n, s, "0", str(t)) for n, s, T in VIDEOS[split] for t in range(T)]
        got_rows = [(p["video"], p["signer"], p["source_frame"], p["target_frame"]) for p in pairs]
        assert got_rows == expected

    cols, train = _read(out / "train_pairs.csv")
    assert cols == list(ph.PAIR_COLUMNS)
    assert len(train) == 500
    signer_of = {n: s for n, s, _ in VIDEOS["train"]}
    for p in train:
        assert p["video"] in signer_of and p["signer"] == signer_of[p["video"]]
        assert 0 <= int(p["source_frame"]) < frames[p["video"]]
        assert 0 <= int(p["target_frame"]) < frames[p["video"]]
    assert {p["video"] for p in train} == set(signer_of)
    assert any(p["source_frame"] != p["target_frame"] for p in train)


def test_train_pairs_are_seeded(tree, tmp_path):
    root, kp = tree
    outs = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert _run(root, kp, tmp_path / name, "--train-pairs", "200", "--seed", seed,
                    "--splits", "train") == 0  # fmt: skip
        outs[name] = (tmp_path / name / "train_pairs.csv").read_text()
    assert outs["a"] == outs["b"]
    assert outs["a"] != outs["c"]
    assert not (tmp_path / "a" / "test_pairs.csv").exists()


def test_sample_train_pairs_weights_videos_by_frames():
    triples = ph.sample_train_pairs([10, 30], 20_000, seed=0)
    share = (triples[:, 0] == 1).mean()
    assert abs(share - 0.75) < 0.02  # 30 / (10 + 30) frames
    assert triples[triples[:, 0] == 0, 1:].max() <= 9
    assert triples[:, 1:].min() == 0 and triples[triples[:, 0] == 1, 1:].max() == 29


def test_first_frame_pairs_protocol():
    got = ph.first_frame_pairs([2, 3])
    assert got.tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1], [1, 0, 2]]


def _frames_dir(root: Path, split: str, i: int) -> Path:
    return root / "features" / "fullFrame-210x260px" / split / VIDEOS[split][i][0]


def _drop_corpus_row(root: Path, split: str, name: str) -> None:
    path = root / "annotations" / "manual" / f"PHOENIX-2014-T.{split}.corpus.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if not line.startswith(name + "|")))


def _drop_sample(kp: Path, split: str, name: str) -> None:
    path = kp / f"Phoenix-2014T.{split}"
    with open(path, "rb") as f:
        samples = pickle.load(f)
    del samples[f"{split}/{name}"]
    with open(path, "wb") as f:
        pickle.dump(samples, f)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:50])


BREAKAGES = {
    # label printed in the warning, whether the video disappears from the manifest
    "missing_frames_dir": (
        lambda root, kp: shutil.rmtree(_frames_dir(root, "train", 0)),
        "frame folder missing",
    ),
    "keypoint_length": (
        lambda root, kp: (_frames_dir(root, "train", 0) / "images0005.png").unlink(),
        "keypoint T != frame count",
    ),
    "unreadable_png": (
        lambda root, kp: _truncate(_frames_dir(root, "train", 0) / "images0002.png"),
        "unreadable or truncated PNG",
    ),
    "not_in_corpus": (
        lambda root, kp: _drop_corpus_row(root, "train", VIDEOS["train"][0][0]),
        "video absent from the corpus CSV",
    ),
    "missing_keypoints": (
        lambda root, kp: _drop_sample(kp, "train", VIDEOS["train"][0][0]),
        "no keypoint sample for the video",
    ),
}


@pytest.mark.parametrize("kind", sorted(BREAKAGES))
def test_broken_tree_warns_and_skips(kind, fresh_tree, tmp_path, capsys):
    root, kp = fresh_tree
    breaker, label = BREAKAGES[kind]
    breaker(root, kp)
    out = tmp_path / "out"
    assert _run(root, kp, out, "--train-pairs", "50") == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith("signgen: warning: phoenix:")]
    assert len(warnings) == 1, err
    assert label in warnings[0] and ": 1 " in warnings[0]
    assert VIDEOS["train"][0][0] in warnings[0]  # names the video
    _, manifest = _read(out / "manifest.csv")
    videos = {r["video"] for r in manifest}
    assert VIDEOS["train"][0][0] not in videos
    assert len(videos) == sum(len(v) for v in VIDEOS.values()) - 1
    _, train = _read(out / "train_pairs.csv")
    assert VIDEOS["train"][0][0] not in {p["video"] for p in train}
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["problems"][kind]["count"] == 1


@pytest.mark.parametrize("kind", ["keypoint_length", "unreadable_png", "not_in_corpus"])
def test_broken_tree_strict_exits_2(kind, fresh_tree, tmp_path, capsys):
    root, kp = fresh_tree
    breaker, label = BREAKAGES[kind]
    breaker(root, kp)
    out = tmp_path / "out"
    assert _run(root, kp, out, "--strict") == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("signgen: error:")]
    assert len(errors) == 1 and label in errors[0] and "--strict" in errors[0]
    assert "Traceback" not in err
    assert not (out / "manifest.csv").exists() and not (out / "train_pairs.csv").exists()


def test_check_images_decodes_fully(fresh_tree, tmp_path, capsys):
    """A PNG with intact header and trailer but corrupt data passes the cheap check only."""
    root, kp = fresh_tree
    png = _frames_dir(root, "test", 1) / "images0003.png"
    data = bytearray(png.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
    png.write_bytes(bytes(data))
    assert ph.png_header_ok(png) == (W, H)
    assert ph.png_decode_ok(png) is None

    assert _run(root, kp, tmp_path / "fast") == 0
    assert "unreadable" not in capsys.readouterr().err
    assert _run(root, kp, tmp_path / "full", "--check-images") == 0
    err = capsys.readouterr().err
    assert "unreadable or truncated PNG: 1 skipped" in err
    _, pairs = _read(tmp_path / "full" / "test_pairs.csv")
    assert len(pairs) == VIDEOS["test"][0][2]  # only the intact test video remains


def test_png_header_check(tmp_path):
    good = tmp_path / "a.png"
    Image.new("RGB", (7, 5)).save(good)
    assert ph.png_header_ok(good) == (7, 5)
    (tmp_path / "empty.png").write_bytes(b"")
    assert ph.png_header_ok(tmp_path / "empty.png") is None
    (tmp_path / "jpg.png").write_bytes(b"\xff\xd8\xff" + b"0" * 100)
    assert ph.png_header_ok(tmp_path / "jpg.png") is None
    assert ph.png_header_ok(tmp_path / "missing.png") is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--splits", "train,validation"], "--splits"),
        (["--train-pairs", "0"], "--train-pairs"),
    ],
)
def test_bad_options_exit_2(tree, tmp_path, capsys, args, message):
    root, kp = tree
    assert _run(root, kp, tmp_path / "out", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("signgen: error:") and message in err[0]


def test_wrong_root_and_missing_keypoints_exit_2(tree, tmp_path, capsys):
    root, kp = tree
    assert _run(root.parent, kp, tmp_path / "o1") == 2
    assert "point --root at the PHOENIX-2014-T folder" in capsys.readouterr().err
    assert _run(root, tmp_path, tmp_path / "o2") == 2
    assert "Phoenix-2014T.train" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_report_times_each_phase_but_keeps_timings_out_of_the_json(tree, tmp_path):
    """PrepareReport.seconds: what benchmarks/prepare_speed.py reads instead of wrapping a
    private function; prepare_report.json describes the data only."""
    from signgen.data.phoenix import prepare_phoenix

    root, kp = tree
    report = prepare_phoenix(root, kp, tmp_path / "out", progress=False)
    assert set(report.seconds) == {"check", "keypoints", "pairs"}
    for wall, cpu in report.seconds.values():
        assert wall >= 0 and cpu >= 0
    assert report.seconds["keypoints"][1] > 0  # the keypoint JSON takes CPU time
    assert "seconds" not in json.loads((tmp_path / "out" / "prepare_report.json").read_text())
