"""Readers for every keypoint format, on files written in that format's real layout."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from keypoint_writers import (
    COCO18_NAMES,
    FACE0,
    LHAND0,
    WB_NAMES,
    mmpose_instance,
    random_points,
    write_deepfashion_csv,
    write_mska,
    write_openpose,
)

from signgen.errors import FormatError, InputError, UnsafePickleError
from signgen.keypoints import KeypointSequence, detect_format, load_keypoints
from signgen.keypoints.formats.deepfashion import (
    load_deepfashion_annotations,
    load_pcdms_pose_txt,
)
from signgen.keypoints.io import parse_size
from signgen.keypoints.safe_pickle import safe_load_pickle

TOL = 1e-4
HANDS_AND_FACE = list(range(FACE0, FACE0 + 68)) + list(range(LHAND0, LHAND0 + 42))


def test_signgen_json_round_trip(tmp_path):
    pts = random_points(5, 210, 260)
    seq = KeypointSequence(pts, 210, 260, 25.0, meta={"gloss": "REGEN"})
    seq.save(tmp_path / "seq.json")
    assert detect_format(tmp_path / "seq.json") == "signgen"
    back = load_keypoints(tmp_path / "seq.json")
    np.testing.assert_allclose(back.points, pts, atol=TOL)
    assert (back.width, back.height, back.fps) == (210, 260, 25.0)
    assert back.meta["gloss"] == "REGEN"


def test_signgen_json_extra_keys_allowed_and_rescaled(tmp_path):
    pts = random_points(2, 100, 200)
    doc = KeypointSequence(pts, 100, 200, 30.0).to_json_dict() | {"comment": "extra"}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    seq = load_keypoints(tmp_path / "a.json", size=(200, 100), fps=10)
    np.testing.assert_allclose(seq.points[..., 0], pts[..., 0] * 2, atol=TOL)
    np.testing.assert_allclose(seq.points[..., 1], pts[..., 1] / 2, atol=TOL)
    assert seq.fps == 10.0


def test_mska_pickle_reads_torch_tensors(tmp_path):
    a, b = random_points(6, 210, 260, seed=1), random_points(3, 210, 260, seed=2)
    path = tmp_path / "Phoenix-2014T.dev"
    write_mska(path, {"dev/01April_2010_Thursday_heute-6697": a, "dev/other": b})
    assert detect_format(path) == "mska"
    seq = load_keypoints(path, sample="dev/other")
    np.testing.assert_allclose(seq.points, b, atol=TOL)
    assert (seq.width, seq.height, seq.fps) == (210, 260, 25.0)
    assert seq.meta["gloss"] == "REGEN MORGEN" and seq.meta["name"] == "dev/other"
    with pytest.raises(InputError, match=r"2 samples.*--sample"):
        load_keypoints(path)
    with pytest.raises(InputError, match="did you mean"):
        load_keypoints(path, sample="dev/othr")


def test_mska_single_sample_needs_no_name_and_numpy_values(tmp_path):
    pts = random_points(4, 210, 260)
    path = tmp_path / "Phoenix-2014T.test"
    with open(path, "wb") as fh:  # numpy arrays instead of tensors, pickle protocol 2
        pickle.dump({"only": {"name": "only", "keypoint": pts}}, fh, protocol=2)
    np.testing.assert_allclose(load_keypoints(path).points, pts, atol=TOL)


def test_restricted_unpickler_admits_exactly_tensor_globals(tmp_path):
    """A pickled tensor needs only the allow-listed globals; other callables are refused."""
    path = tmp_path / "t.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"x": torch.arange(6.0).reshape(2, 3), "o": {1, 2}}, fh)
    out = safe_load_pickle(path)
    assert torch.equal(out["x"], torch.arange(6.0).reshape(2, 3)) and out["o"] == {1, 2}

    class Evil:
        def __reduce__(self):
            return (getattr, (object, "__subclasses__"))

    with open(path, "wb") as fh:
        pickle.dump({"k": Evil()}, fh)
    with pytest.raises(UnsafePickleError, match=r"builtins\.getattr"):
        safe_load_pickle(path)


def test_truncated_pickle_is_a_format_error(tmp_path):
    path = tmp_path / "Phoenix-2014T.train"
    write_mska(path, {"a": random_points(3, 210, 260)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="truncated or corrupt"):
        load_keypoints(path, sample="a")


@pytest.mark.parametrize("body", ["BODY_25", "COCO-18"])
def test_openpose_folder(tmp_path, body):
    pts = random_points(4, 640, 480, seed=3)
    write_openpose(tmp_path / "op", pts, body=body)
    assert detect_format(tmp_path / "op") == "openpose"
    seq = load_keypoints(tmp_path / "op", size=(640, 480), fps=30)
    assert seq.points.shape == (4, 133, 3) and seq.size == (640, 480) and seq.fps == 30.0
    carried = [WB_NAMES.index(n) for n in (COCO18_NAMES if body == "COCO-18" else WB_NAMES)
               if n in WB_NAMES] + HANDS_AND_FACE  # fmt: skip
    np.testing.assert_allclose(seq.points[:, carried], pts[:, carried], atol=TOL)
    if body == "COCO-18":  # no feet in COCO-18: missing
        assert (seq.points[:, 17:23, 2] == 0).all()


def test_openpose_picks_main_signer_and_needs_size(tmp_path):
    pts = random_points(3, 640, 480, seed=4)
    bystander = pts.copy()
    bystander[..., :2] = bystander[..., :2] * 0.2 + 10  # small, far away
    bystander[..., 2] *= 0.5
    write_openpose(tmp_path / "op", pts, extra_people=[bystander])
    seq = load_keypoints(tmp_path / "op", size=(640, 480), fps=25)
    np.testing.assert_allclose(seq.points[:, LHAND0:], pts[:, LHAND0:], atol=TOL)
    with pytest.raises(InputError, match=r"--size WxH and --fps F"):
        load_keypoints(tmp_path / "op")


def test_openpose_frames_sorted_numerically(tmp_path):
    pts = random_points(11, 100, 100, seed=5)
    write_openpose(tmp_path / "op", pts)
    for i, f in enumerate(sorted((tmp_path / "op").iterdir())):
        f.rename(f.with_name(f"v_{i}_keypoints.json"))  # v_10 sorts before v_2 as text
    seq = load_keypoints(tmp_path / "op", size=(100, 100), fps=25)
    np.testing.assert_allclose(seq.points[:, LHAND0:], pts[:, LHAND0:], atol=TOL)


def test_mmpose_video_json_with_bystander(tmp_path):
    pts = random_points(5, 210, 260, seed=6)
    bystander = pts[::-1].copy()
    bystander[..., 2] *= 0.5
    frames = [
        {
            "frame_id": i,
            "instances": [
                mmpose_instance(bystander[i], [0, 0, 40, 60]),
                mmpose_instance(pts[i], [10, 10, 200, 250]),
            ],
        }
        for i in range(5)
    ]
    (tmp_path / "pred.json").write_text(json.dumps(frames))
    assert detect_format(tmp_path / "pred.json") == "mmpose"
    seq = load_keypoints(tmp_path / "pred.json", size=(210, 260), fps=25)
    np.testing.assert_allclose(seq.points, pts, atol=TOL)


def test_mmpose_per_image_folder(tmp_path):
    pts = random_points(3, 210, 260, seed=7)
    (tmp_path / "preds").mkdir()
    for i in range(3):  # what MMPoseInferencer(pred_out_dir=...) writes for images
        doc = [mmpose_instance(pts[i])]
        (tmp_path / "preds" / f"img_{i:04d}.json").write_text(json.dumps(doc))
    assert detect_format(tmp_path / "preds") == "mmpose"
    seq = load_keypoints(tmp_path / "preds", size=(210, 260), fps=12.5)
    np.testing.assert_allclose(seq.points, pts, atol=TOL)
    single = load_keypoints(tmp_path / "preds" / "img_0001.json", size=(210, 260), fps=25)
    np.testing.assert_allclose(single.points[0], pts[1], atol=TOL)


def test_mmpose_wrong_keypoint_count_names_format_and_frame(tmp_path):
    pts = random_points(4, 210, 260)
    frames = [{"frame_id": i, "instances": [mmpose_instance(pts[i])]} for i in range(4)]
    frames[3]["instances"][0]["keypoints"] = pts[3, :17, :2].tolist()
    (tmp_path / "p.json").write_text(json.dumps(frames))
    with pytest.raises(
        InputError, match=r"mmpose prediction JSON but frame 3.* 17 keypoints, expected 133"
    ):
        load_keypoints(tmp_path / "p.json", size=(210, 260), fps=25)


def _random_op18(rng: np.random.Generator) -> np.ndarray:
    j = np.stack([rng.integers(0, 176, 18), rng.integers(0, 256, 18), np.ones(18)], 1)
    j[rng.choice(18, 3, replace=False)] = 0  # a few missing joints
    return j.astype(np.float32)


def test_deepfashion_csv(tmp_path):
    rng = np.random.default_rng(8)
    rows = {f"fashionWOMENid{i:04d}_1front.jpg": _random_op18(rng) for i in range(3)}
    path = tmp_path / "fasion-resize-annotation-test.csv"
    write_deepfashion_csv(path, rows)
    assert detect_format(path) == "deepfashion"
    table = load_deepfashion_annotations(path)
    assert list(table) == list(rows)
    for name, j in rows.items():
        np.testing.assert_allclose(table[name], j, atol=TOL)
    seq = load_keypoints(path)
    assert len(seq) == 3 and seq.size == (176, 256)
    name = list(rows)[1]
    one = load_keypoints(path, sample=name)
    assert len(one) == 1
    for op_idx, op_name in enumerate(COCO18_NAMES):
        if op_name in WB_NAMES:  # neck has no COCO-WholeBody point
            np.testing.assert_allclose(one.points[0, WB_NAMES.index(op_name)], rows[name][op_idx])
    assert (one.points[0, 17:, 2] == 0).all()  # feet, face, hands missing


def test_pcdms_txt(tmp_path):
    rng = np.random.default_rng(9)
    j = _random_op18(rng)
    xs = np.where(j[:, 2] > 0, j[:, 0] + 40, -1)  # x first, +40 px padding offset
    ys = np.where(j[:, 2] > 0, j[:, 1], -1)
    path = tmp_path / "pose.txt"
    np.savetxt(path, np.stack([xs, ys], 1), fmt="%d")
    np.testing.assert_allclose(load_pcdms_pose_txt(path), j, atol=TOL)
    assert detect_format(path) == "pcdms"
    assert load_keypoints(path).points.shape == (1, 133, 3)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b'{"frames": [[[1, 2', "not valid JSON"),
        (b"hello, world\n", "unknown keypoint format"),
        (b'{"foo": 1}', "not a known keypoint format"),
        (b"", "empty"),
    ],
)
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match):
        load_keypoints(path)


@pytest.mark.parametrize("count", [17, 134])
def test_wrong_point_count_in_signgen_json(tmp_path, count):
    doc = {"layout": "coco-wholebody-133", "width": 10, "height": 10, "fps": 25,
           "frames": np.zeros((2, count, 3)).tolist()}  # fmt: skip
    (tmp_path / "s.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=f"got {count}"):
        load_keypoints(tmp_path / "s.json")


def test_parse_size():
    assert parse_size("210x260") == (210, 260)
    for bad in ("210", "0x5", "axb", "210x260x3"):
        with pytest.raises(InputError, match="WIDTHxHEIGHT"):
            parse_size(bad)
