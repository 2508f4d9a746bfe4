"""`signgen prepare deepfashion` and the DeepFashion datasets on a miniature PGPIS tree."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from signgen.cli import main
from signgen.data import deepfashion as df

W, H = 176, 256  # the annotation space and the 256x176 release
TRAIN = [
    f"fashionWOMENDressesid00000{i:02d}01_{k}.jpg" for i in range(3) for k in ("1front", "2side")
]
TEST = [
    f"fashionMENTees_Tanksid00000{i:02d}02_{k}.jpg" for i in range(2) for k in ("1front", "3back")
]
PAIRS = {
    "train": [(TRAIN[0], TRAIN[1]), (TRAIN[1], TRAIN[0]), (TRAIN[2], TRAIN[3]), (TRAIN[4], TRAIN[5]),
              (TRAIN[5], TRAIN[4])],
    "test": [(TEST[0], TEST[1]), (TEST[2], TEST[3]), (TEST[3], TEST[2])],
}  # fmt: skip


def _pose(rng: np.random.Generator) -> tuple[list[int], list[int]]:
    ys = rng.integers(10, H - 10, 18).tolist()
    xs = rng.integers(10, W - 10, 18).tolist()
    ys[16], xs[16] = -1, -1  # right ear missing, as often in the real files
    return ys, xs


def build_tree(root: Path, image_dir: str = "{split}_highres") -> Path:
    rng = np.random.default_rng(0)
    for split, names in (("train", TRAIN), ("test", TEST)):
        folder = root / image_dir.format(split=split)
        folder.mkdir(parents=True)
        for i, name in enumerate(names):
            img = np.zeros((H, W, 3), np.uint8)
            img[:, : W // 2] = (200, 30 * i, 10)  # left half coloured: flips are visible
            Image.fromarray(img).save(folder / name, quality=95)
        with open(root / f"fasion-resize-pairs-{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["from", "to"])
            w.writerows(PAIRS[split])
        with open(root / f"fasion-resize-annotation-{split}.csv", "w") as f:
            f.write("name:keypoints_y:keypoints_x\n")
            for name in names:
                ys, xs = _pose(rng)
                f.write(f"{name}:{json.dumps(ys)}:{json.dumps(xs)}\n")
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("df")
    root = build_tree(base / "fashion")
    out = base / "out"
    assert main(["prepare", "deepfashion", "--root", str(root), "-o", str(out), "-q"]) == 0
    return out


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_prepare_writes_manifest_and_pairs(prepared):
    for split in ("train", "test"):
        cols, pairs = _read(prepared / f"{split}_pairs.csv")
        assert cols == list(df.PAIR_COLUMNS)
        assert [(p["source"], p["target"]) for p in pairs] == PAIRS[split]
    cols, manifest = _read(prepared / df.MANIFEST_NAME)
    assert cols == list(df.MANIFEST_COLUMNS)
    assert sorted(r["image"] for r in manifest) == sorted(TRAIN + TEST)
    ann = df.load_annotations(prepared.parent / "fashion" / "fasion-resize-annotation-train.csv")
    for r in manifest:
        assert (int(r["width"]), int(r["height"])) == (W, H)
        assert (prepared / r["path"]).resolve().is_file()
        kp = np.asarray(json.loads(r["keypoints"]), np.float32)
        assert kp.shape == (18, 3) and kp[16, 2] == 0  # missing point: score 0
        if r["split"] == "train":
            np.testing.assert_allclose(kp, ann[r["image"]])
    info = json.loads((prepared / df.INFO_NAME).read_text())
    assert info["resolution"] == [256, 176]
    assert info["pairs"] == {"train": len(PAIRS["train"]), "test": len(PAIRS["test"])}


def test_patn_layout_and_512_resolution(tmp_path, capsys):
    root = build_tree(tmp_path / "fashion", image_dir="{split}")
    out = tmp_path / "out"
    args = ["prepare", "deepfashion", "--root", str(root), "-o", str(out), "-q"]
    assert main([*args, "--resolution", "512x352"]) == 0
    err = capsys.readouterr().err
    # The 176x256 images are smaller than 512x352: reported, not skipped.
    n = len(TRAIN) + len(TEST)
    assert f"image smaller than --resolution (will be upsampled): {n} found" in err
    assert json.loads((out / df.INFO_NAME).read_text())["resolution"] == [512, 352]
    assert main([*args, "--resolution", "300x200"]) == 2
    assert "--resolution must be one of 256x176, 512x352" in capsys.readouterr().err


def _drop_annotation(root: Path, name: str) -> None:
    path = root / "fasion-resize-annotation-train.csv"
    path.write_text("".join(x for x in path.read_text().splitlines(True) if not x.startswith(name)))


BREAKAGES = {
    "missing_annotation": (lambda r: _drop_annotation(r, TRAIN[0]), "no annotation row"),
    "missing_image": (lambda r: (r / "train_highres" / TRAIN[0]).unlink(), "image file missing"),
    "unreadable_image": (
        lambda r: (r / "train_highres" / TRAIN[0]).write_bytes(b"not a jpeg"),
        "unreadable image",
    ),
}


@pytest.mark.parametrize("kind", sorted(BREAKAGES))
def test_broken_tree_warns_and_drops_pairs(kind, tmp_path, capsys):
    root = build_tree(tmp_path / "fashion")
    breaker, label = BREAKAGES[kind]
    breaker(root)
    out = tmp_path / "out"
    args = ["prepare", "deepfashion", "--root", str(root), "-o", str(out), "-q"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{label} for the image: 1 skipped" in err or f"{label}: 1 skipped" in err
    assert "train: 2 of 5 pairs dropped" in err  # TRAIN[0] is in two pairs
    _, pairs = _read(out / "train_pairs.csv")
    assert len(pairs) == len(PAIRS["train"]) - 2
    assert TRAIN[0] not in {p["source"] for p in pairs} | {p["target"] for p in pairs}
    assert json.loads((out / "prepare_report.json").read_text())["problems"][kind]["count"] == 1

    out2 = tmp_path / "strict"
    assert main(["prepare", "deepfashion", "--root", str(root), "-o", str(out2), "-q",
                 "--strict"]) == 2  # fmt: skip
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("signgen: error:")]
    assert len(errors) == 1 and label in errors[0]
    assert not out2.exists()


def test_missing_image_folder_is_one_line(tmp_path, capsys):
    root = build_tree(tmp_path / "fashion")
    (root / "test_highres").rename(root / "elsewhere")
    assert main(["prepare", "deepfashion", "--root", str(root), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no image folder for split 'test'" in err[0]


# ---- datasets ------------------------------------------------------------------------
def test_pairs_dataset_items(prepared):
    ds = df.DeepFashionPairs(prepared, "test", resolution=(64, 44))
    assert len(ds) == len(PAIRS["test"])
    item = ds[0]
    assert item["source"].shape == (H, W, 3) and item["target"].dtype == torch.uint8
    assert item["target_pose"].shape == (3, 64, 44)
    assert 0.0 <= float(item["target_pose"].min()) and float(item["target_pose"].max()) <= 1.0
    assert item["target_pose"].sum() > 0  # the skeleton is drawn
    assert item["keypoints"].shape == (18, 3)
    assert (item["source_name"], item["target_name"]) == PAIRS["test"][0]
    # Keypoints are in model pixels (scaled as signgen.data.pairs does): 176x256 -> 44x64.
    e = ds.entries[f"test/{PAIRS['test'][0][1]}"]
    vis = e.keypoints[:, 2] > 0
    np.testing.assert_allclose(
        item["keypoints"].numpy()[vis, :2], e.keypoints[vis, :2] * 0.25, atol=1e-4
    )


def test_flip_swaps_left_and_right(prepared):
    plain = df.DeepFashionPairs(prepared, "train", (256, 176))
    flip = df.DeepFashionPairs(prepared, "train", (256, 176), df.DeepFashionAugment(1.0, 0.0, 0.0))
    a, b = plain[2], flip[2]
    np.testing.assert_array_equal(b["target"].numpy(), a["target"].numpy()[:, ::-1])
    np.testing.assert_array_equal(b["source"].numpy(), a["source"].numpy()[:, ::-1])
    ka, kb = a["keypoints"].numpy(), b["keypoints"].numpy()
    # right shoulder (2) of the flipped pose is the mirrored left shoulder (5), and so on.
    for r, left in df.FLIP_PAIRS:
        for i, j in ((r, left), (left, r)):
            assert kb[i, 2] == ka[j, 2]
            if ka[j, 2] > 0:
                assert kb[i, 0] == pytest.approx(W - 1 - ka[j, 0], abs=1e-4)
                assert kb[i, 1] == pytest.approx(ka[j, 1], abs=1e-4)
    assert not np.array_equal(b["target_pose"].numpy(), a["target_pose"].numpy())
    np.testing.assert_allclose(df.flip_keypoints(df.flip_keypoints(ka, W), W), ka, atol=1e-4)


def test_same_source_and_jitter_are_seeded(prepared):
    same = df.DeepFashionPairs(prepared, "train", (64, 44), df.DeepFashionAugment(0.0, 0.0, 1.0))
    item = same[0]
    assert np.array_equal(item["source"].numpy(), item["target"].numpy())
    assert np.array_equal(item["source_keypoints"].numpy(), item["keypoints"].numpy())

    aug = df.DeepFashionAugment(flip_prob=0.0, keypoint_jitter=2.0, same_source_prob=0.0)
    ds1 = df.DeepFashionPairs(prepared, "train", (256, 176), aug, seed=5)
    ds2 = df.DeepFashionPairs(prepared, "train", (256, 176), aug, seed=5)
    plain = df.DeepFashionPairs(prepared, "train", (256, 176))
    k1, k2, k0 = ds1[1]["keypoints"], ds2[1]["keypoints"], plain[1]["keypoints"]
    assert np.array_equal(k1.numpy(), k2.numpy())  # same seed, same epoch: same item
    moved = np.abs(k1.numpy()[:, :2] - k0.numpy()[:, :2]).max()
    assert 0 < moved < 12  # a few pixels of jitter
    ds2.set_epoch(1)
    assert not np.array_equal(ds2[1]["keypoints"].numpy(), k1.numpy())
    with pytest.raises(ValueError, match="flip_prob"):
        df.DeepFashionAugment(flip_prob=1.5)


def test_images_dataset_resizes(prepared):
    ds = df.DeepFashionImages(prepared, "train", resolution=(128, 88))
    assert len(ds) == len(TRAIN)
    assert ds[0]["image"].shape == (128, 88, 3)
