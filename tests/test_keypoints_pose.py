"""pose-format ``.pose`` files: Holistic / OpenPose-135 / OpenPose / COCO-WholeBody headers -> 133.

Files are written with pose-format's own API (headers from ``pose_format.utils``), and the
expected 133-point positions are spelled out by joint *name* here, independently of the
reader's tables, so a wrong correspondence in signgen fails a test.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from keypoint_writers import WB_NAMES, random_points
from pose_format import Pose
from pose_format.numpy import NumPyPoseBody
from pose_format.pose_header import PoseHeader, PoseHeaderComponent, PoseHeaderDimensions
from pose_format.utils.generic import detect_known_pose_format

from signgen.cli import main
from signgen.errors import FormatError
from signgen.keypoints.io import detect_format, load_keypoints, save_keypoints
from signgen.keypoints.sequence import KeypointSequence

W, H, FPS, T = 210, 260, 25.0, 4

# COCO-WholeBody body/feet name -> the BlazePose landmark it comes from (None: no counterpart).
WB_FROM_BLAZEPOSE = {
    "nose": "NOSE", "left_eye": "LEFT_EYE", "right_eye": "RIGHT_EYE", "left_ear": "LEFT_EAR",
    "right_ear": "RIGHT_EAR", "left_shoulder": "LEFT_SHOULDER",
    "right_shoulder": "RIGHT_SHOULDER", "left_elbow": "LEFT_ELBOW", "right_elbow": "RIGHT_ELBOW",
    "left_wrist": "LEFT_WRIST", "right_wrist": "RIGHT_WRIST", "left_hip": "LEFT_HIP",
    "right_hip": "RIGHT_HIP", "left_knee": "LEFT_KNEE", "right_knee": "RIGHT_KNEE",
    "left_ankle": "LEFT_ANKLE", "right_ankle": "RIGHT_ANKLE",
    "left_big_toe": "LEFT_FOOT_INDEX", "left_small_toe": None, "left_heel": "LEFT_HEEL",
    "right_big_toe": "RIGHT_FOOT_INDEX", "right_small_toe": None, "right_heel": "RIGHT_HEEL",
}  # fmt: skip


def face68_from_pose_format() -> list[int]:
    """The iBUG-68 -> FaceMesh correspondence as pose-format publishes it (one-to-one entries)."""
    from pose_format.utils.openpose import FACE_POINTS
    from pose_format.utils.pose_converter import FACE_MAP

    direct = {}
    for entry in FACE_MAP:
        if isinstance(entry, tuple):  # the sets are interpolations between two iBUG points
            (_, op_name), (_, mesh) = entry
            direct[op_name] = int(mesh)
    return [direct[name] for name in FACE_POINTS[:68]]


def pose_bytes(pose: Pose) -> bytes:
    buf = io.BytesIO()
    pose.write(buf)
    return buf.getvalue()


def holistic_pose(rng: np.random.Generator, world: bool = True) -> tuple[Pose, dict]:
    """A Holistic .pose (pose-format's header) with random landmarks; left hand missing in frame 1."""
    from pose_format.utils.holistic import holistic_components

    comps = holistic_components()  # POSE, FACE (468), LEFT_HAND, RIGHT_HAND, POSE_WORLD
    n = sum(len(c.points) for c in comps)
    data = np.zeros((T, 1, n, 3), np.float32)
    data[..., 0] = rng.uniform(0, W, (T, 1, n))
    data[..., 1] = rng.uniform(0, H, (T, 1, n))
    conf = np.ones((T, 1, n), np.float32)
    starts = {}
    start = 0
    for c in comps:
        starts[c.name] = (start, list(c.points))
        start += len(c.points)
    b0, _ = starts["POSE_LANDMARKS"]
    conf[:, 0, b0 : b0 + 33] = rng.uniform(0.1, 1.0, (T, 33))  # visibility
    l0, _ = starts["LEFT_HAND_LANDMARKS"]
    conf[1, 0, l0 : l0 + 21] = 0.0  # no left hand in frame 1
    data[1, 0, l0 : l0 + 21] = 0.0
    header = PoseHeader(0.2, PoseHeaderDimensions(W, H, 0), comps)
    pose = Pose(header, NumPyPoseBody(FPS, data, conf))
    if not world:
        pose = pose.get_components(
            ["POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS"]
        )
    return pose, starts


def expected_from_holistic(pose: Pose, starts: dict) -> np.ndarray:
    data = np.ma.getdata(pose.body.data)[:, 0]  # (T, N, 3)
    conf = np.ma.getdata(pose.body.confidence)[:, 0]
    out = np.zeros((T, 133, 3), np.float32)
    b0, body_names = starts["POSE_LANDMARKS"]
    for i, name in enumerate(WB_NAMES):
        src = WB_FROM_BLAZEPOSE[name]
        if src is not None:
            k = b0 + body_names.index(src)
            out[:, i, :2] = data[:, k, :2]
            out[:, i, 2] = conf[:, k]
    f0, _ = starts["FACE_LANDMARKS"]
    for j, mesh in enumerate(face68_from_pose_format()):
        out[:, 23 + j, :2] = data[:, f0 + mesh, :2]
        out[:, 23 + j, 2] = 1.0
    for dst, key in ((91, "LEFT_HAND_LANDMARKS"), (112, "RIGHT_HAND_LANDMARKS")):
        h0, _ = starts[key]
        out[:, dst : dst + 21, :2] = data[:, h0 : h0 + 21, :2]
        out[:, dst : dst + 21, 2] = (conf[:, h0 : h0 + 21] > 0).astype(np.float32)
    out[out[..., 2] <= 0] = 0.0
    return out


@pytest.mark.parametrize("world", [True, False], ids=["with-world", "without-world"])
def test_holistic_pose_reads_into_133(tmp_path, world):
    pose, starts = holistic_pose(np.random.default_rng(1), world=world)
    path = tmp_path / "holistic.pose"
    path.write_bytes(pose_bytes(pose))
    assert detect_format(path) == "pose"
    seq = load_keypoints(path)
    assert seq.points.shape == (T, 133, 3) and seq.size == (W, H) and seq.fps == FPS
    np.testing.assert_allclose(seq.points, expected_from_holistic(pose, starts), atol=1e-4)
    assert (seq.points[1, 91:112, 2] == 0).all() and (seq.points[0, 91:112, 2] == 1).all()
    assert (seq.points[:, [18, 21], 2] == 0).all()  # BlazePose has no small toe


def test_holistic_face_subset_keeps_the_points_it_has(tmp_path):
    from pose_format.utils.holistic import FACEMESH_CONTOURS_POINTS

    pose, starts = holistic_pose(np.random.default_rng(2), world=False)
    reduced = pose.get_components(
        ["POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS"],
        {"FACE_LANDMARKS": FACEMESH_CONTOURS_POINTS},
    )
    path = tmp_path / "reduced.pose"
    path.write_bytes(pose_bytes(reduced))
    seq = load_keypoints(path)
    full = expected_from_holistic(pose, starts)
    kept = {int(p) for p in FACEMESH_CONTOURS_POINTS}
    mesh = face68_from_pose_format()
    have = [j for j in range(68) if mesh[j] in kept]
    lost = [j for j in range(68) if mesh[j] not in kept]
    assert have and lost  # the contour subset keeps the jaw, eyes and lips, not the nose
    np.testing.assert_allclose(
        seq.points[:, [23 + j for j in have]], full[:, [23 + j for j in have]], atol=1e-4
    )
    assert (seq.points[:, [23 + j for j in lost], 2] == 0).all()
    np.testing.assert_allclose(seq.points[:, :23], full[:, :23], atol=1e-4)


def test_openpose_135_pose_reads_into_133(tmp_path):
    from pose_format.utils.openpose_135 import BODY_135_POINTS, OpenPose_Components

    rng = np.random.default_rng(3)
    n = len(BODY_135_POINTS)
    data = np.stack([rng.uniform(0, W, (T, 1, n)), rng.uniform(0, H, (T, 1, n))], -1)
    conf = rng.uniform(0.1, 1.0, (T, 1, n))
    header = PoseHeader(0.2, PoseHeaderDimensions(W, H, 0), OpenPose_Components)
    path = tmp_path / "op135.pose"
    path.write_bytes(
        pose_bytes(
            Pose(header, NumPyPoseBody(FPS, data.astype(np.float32), conf.astype(np.float32)))
        )
    )
    seq = load_keypoints(path)

    def at(name: str) -> np.ndarray:
        k = BODY_135_POINTS.index(name)
        return np.concatenate([data[:, 0, k], conf[:, 0, k, None]], axis=-1)

    op_body = {"nose": "Nose", "left_eye": "LEye", "right_eye": "REye", "left_ear": "LEar",
               "right_ear": "REar", "left_shoulder": "LShoulder", "right_shoulder": "RShoulder",
               "left_elbow": "LElbow", "right_elbow": "RElbow", "left_wrist": "LWrist",
               "right_wrist": "RWrist", "left_hip": "LHip", "right_hip": "RHip",
               "left_knee": "LKnee", "right_knee": "RKnee", "left_ankle": "LAnkle",
               "right_ankle": "RAnkle", "left_big_toe": "LBigToe", "left_small_toe": "LSmallToe",
               "left_heel": "LHeel", "right_big_toe": "RBigToe", "right_small_toe": "RSmallToe",
               "right_heel": "RHeel"}  # fmt: skip
    for i, name in enumerate(WB_NAMES):
        np.testing.assert_allclose(seq.points[:, i], at(op_body[name]), atol=1e-4, err_msg=name)
    np.testing.assert_allclose(seq.points[:, 91], at("LWrist"), atol=1e-4)  # hand root = wrist
    np.testing.assert_allclose(seq.points[:, 112 + 8], at("RIndex4FingerTip"), atol=1e-4)
    np.testing.assert_allclose(seq.points[:, 91 + 17], at("LPinky1Knuckles"), atol=1e-4)
    np.testing.assert_allclose(seq.points[:, 23 + 30], at("NoseUpper3"), atol=1e-4)
    np.testing.assert_allclose(seq.points[:, 23 + 67], at("IMouth7"), atol=1e-4)


def test_openpose_pose_reads_like_openpose_json(tmp_path):
    from keypoint_writers import BODY25_NAMES, body_row
    from pose_format.utils.openpose import OpenPose_Components

    pts = random_points(T, W, H, seed=4)
    comps = OpenPose_Components
    rows = []
    for frame in pts:
        body = np.asarray(body_row(frame, BODY25_NAMES)).reshape(25, 3)
        face = np.concatenate([frame[23:91], np.zeros((2, 3))])
        rows.append(np.concatenate([body, face, frame[91:112], frame[112:133]]))
    arr = np.stack(rows)[:, None]  # (T, 1, 137, 3)
    header = PoseHeader(0.2, PoseHeaderDimensions(W, H, 0), comps)
    path = tmp_path / "op.pose"
    body = NumPyPoseBody(FPS, arr[..., :2].astype(np.float32), arr[..., 2].astype(np.float32))
    path.write_bytes(pose_bytes(Pose(header, body)))
    seq = load_keypoints(path)
    np.testing.assert_allclose(seq.points, pts, atol=1e-3)


def test_signgen_pose_output_opens_in_pose_format_and_reads_back(tmp_path):
    pts = random_points(T, W, H, seed=5)
    pts[2, 91:112, 2] = 0.0  # a missing hand
    pts[2, 91:112, :2] = 0.0
    seq = KeypointSequence(pts, W, H, FPS)
    path = tmp_path / "seq.pose"
    assert save_keypoints(seq, path) == "pose"
    pose = Pose.read(path.read_bytes())  # pose-format's own reader
    assert detect_known_pose_format(pose) == "coco_wholebody_133"
    assert (pose.header.dimensions.width, pose.header.dimensions.height) == (W, H)
    assert pose.body.fps == FPS and pose.body.data.shape == (T, 1, 133, 2)
    assert pose.header.get_point_index("BODY", "left_wrist") == 9
    assert pose.header.get_point_index("RIGHT_HAND", "hand_0") == 112
    np.testing.assert_allclose(np.ma.getdata(pose.body.data)[:, 0], pts[..., :2], atol=1e-4)
    back = load_keypoints(path)
    np.testing.assert_allclose(back.points, pts, atol=1e-4)
    assert (back.size, back.fps) == (seq.size, seq.fps)


def test_unknown_layout_names_its_components(tmp_path, capsys):
    comp = PoseHeaderComponent("SMPLX_BODY", ["a", "b"], [(0, 1)], [(255, 0, 0)], "XYC")
    header = PoseHeader(0.2, PoseHeaderDimensions(W, H, 0), [comp])
    body = NumPyPoseBody(FPS, np.zeros((2, 1, 2, 2), np.float32), np.ones((2, 1, 2), np.float32))
    path = tmp_path / "odd.pose"
    path.write_bytes(pose_bytes(Pose(header, body)))
    with pytest.raises(FormatError, match="SMPLX_BODY"):
        load_keypoints(path)
    assert main(["keypoints", "info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SMPLX_BODY" in err[0] and "MediaPipe Holistic" in err[0], err


def test_corrupt_pose_is_one_line(tmp_path, capsys):
    good = tmp_path / "good.pose"
    save_keypoints(KeypointSequence(random_points(T, W, H), W, H, FPS), good)
    bad = tmp_path / "bad.pose"
    bad.write_bytes(good.read_bytes()[:50])  # truncated inside the header
    assert main(["keypoints", "convert", str(bad), "-o", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pose" in err[0], err
    assert not (tmp_path / "o.json").exists()


def test_cli_info_and_convert_auto_detect_pose(tmp_path, capsys):
    pts = random_points(T, W, H, seed=6)
    KeypointSequence(pts, W, H, FPS).save(tmp_path / "seq.json")
    assert (
        main(["keypoints", "convert", str(tmp_path / "seq.json"), "-o", str(tmp_path / "seq.pose")])
        == 0
    )
    assert "written as pose" in capsys.readouterr().out
    assert main(["keypoints", "info", str(tmp_path / "seq.pose"), "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "pose" and info["frames"] == T
    assert (
        main(["keypoints", "convert", str(tmp_path / "seq.pose"), "-o", str(tmp_path / "b.json")])
        == 0
    )
    np.testing.assert_allclose(load_keypoints(tmp_path / "b.json").points, pts, atol=1e-3)


def test_render_reads_pose_keypoints(tmp_path):
    """``signgen render --keypoints x.pose`` renders what the same sequence as JSON renders."""
    import torch

    from signgen.models.config import load_model_config
    from signgen.sampling.pipeline import FPDMPipeline
    from signgen.video import VideoWriter, read_frames

    w, h = 22, 26
    rng = np.random.default_rng(0)
    with VideoWriter(tmp_path / "first.mp4", fps=25, width=w, height=h) as wr:
        wr.write(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    seq = KeypointSequence(random_points(3, w, h, seed=7), w, h, 12.5)
    seq.save(tmp_path / "seq.json")
    save_keypoints(seq, tmp_path / "seq.pose")
    torch.manual_seed(0)
    FPDMPipeline.from_config(load_model_config("tiny")).save_pretrained(tmp_path / "model")
    frames = {}
    for name in ("seq.json", "seq.pose"):
        out = tmp_path / name.replace(".", "_")
        argv = ["render", "--video", str(tmp_path / "first.mp4"), "--keypoints", str(tmp_path / name),
                "--model", str(tmp_path / "model"), "-o", str(out / "o.mp4"), "--steps", "2",
                "--frames-dir", str(out / "frames")]  # fmt: skip
        assert main(argv) == 0
        frames[name] = read_frames(out / "frames").astype(int)
    assert frames["seq.json"].shape[0] == 3
    assert np.abs(frames["seq.json"] - frames["seq.pose"]).max() <= 1
