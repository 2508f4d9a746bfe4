"""MediaPipe Holistic extraction without the shared data: the mapping, the CLI, the backends.

The real photo is scikit-image's ``astronaut()`` (public domain, ships with the package): a
frontal upper body, so the face, the shoulders and their sides can be checked.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from signgen.cli import main
from signgen.errors import InputError
from signgen.keypoints.holistic import HolisticExtractor, native_stderr_to_log
from signgen.keypoints.holistic_map import (
    BLAZEPOSE_NAMES,
    FACE68_FROM_FACEMESH,
    HAND_NAMES,
    holistic_to_wholebody,
)
from signgen.keypoints.io import load_keypoints
from signgen.keypoints.layout import FACE, LEFT_HAND, RIGHT_HAND
from signgen.video import write_video

NATIVE_NOISE = ("TensorFlow Lite", "W0000", "absl::", "inference_feedback_manager")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()  # (512, 512, 3) uint8 RGB


# ---- the mapping ------------------------------------------------------------------------------


def test_names_are_mediapipes():
    from mediapipe.python.solutions import hands, pose

    assert list(BLAZEPOSE_NAMES) == pose.PoseLandmark._member_names_
    assert list(HAND_NAMES) == hands.HandLandmark._member_names_


def test_face_table_is_pose_formats_published_correspondence():
    from test_keypoints_pose import face68_from_pose_format

    assert list(FACE68_FROM_FACEMESH) == face68_from_pose_format()


def test_holistic_to_wholebody_by_name():
    rng = np.random.default_rng(0)
    body = np.concatenate([rng.uniform(0, 100, (33, 2)), rng.uniform(0, 1, (33, 1))], 1)
    face = rng.uniform(0, 100, (478, 3))  # refined mesh: the 10 iris points are not used
    right = rng.uniform(0, 100, (21, 2))
    out = holistic_to_wholebody(body, face, None, right)
    assert out.shape == (133, 3) and out.dtype == np.float32

    def bp(name):
        return body[BLAZEPOSE_NAMES.index(name)]

    np.testing.assert_allclose(out[5], bp("LEFT_SHOULDER"), rtol=1e-6)
    np.testing.assert_allclose(out[10], bp("RIGHT_WRIST"), rtol=1e-6)
    np.testing.assert_allclose(out[1], bp("LEFT_EYE"), rtol=1e-6)  # the eye centre
    np.testing.assert_allclose(out[20], bp("RIGHT_FOOT_INDEX"), rtol=1e-6)  # right big toe
    assert out[18, 2] == 0 and out[21, 2] == 0  # no small toe in BlazePose
    np.testing.assert_allclose(out[FACE.start + 8, :2], face[152, :2], rtol=1e-6)  # chin
    assert (out[FACE, 2] == 1).all()
    assert (out[LEFT_HAND] == 0).all()  # missing hand: score 0 (and no position)
    np.testing.assert_allclose(out[RIGHT_HAND, :2], right, rtol=1e-6)
    assert (out[RIGHT_HAND, 2] == 1).all()
    body[BLAZEPOSE_NAMES.index("NOSE")] = np.nan  # a NaN landmark is a missing one
    assert (holistic_to_wholebody(body, None, None, None)[0] == 0).all()


# ---- extraction on a real photo ---------------------------------------------------------------


def test_static_image_of_a_person(astronaut):
    with HolisticExtractor(static=True) as model:
        pts = model(astronaut)
    assert pts.shape == (133, 3)
    assert (pts[FACE, 2] == 1).all(), "face not found"
    face = pts[FACE, :2]
    x1, y1 = face.min(0)
    x2, y2 = face.max(0)
    nose = pts[0]
    assert nose[2] > 0.5 and x1 < nose[0] < x2 and y1 < nose[1] < y2
    # frontal: the person's left eye and shoulder are on the image's right
    assert pts[1, 0] > pts[2, 0] and pts[5, 0] > pts[6, 0]
    assert pts[5, 1] > y2 and pts[6, 1] > y2  # shoulders below the face
    # the face's jaw line runs from the person's right (image left) to the left
    assert face[0, 0] < face[8, 0] < face[16, 0]


def test_native_logging_stays_off_the_terminal(astronaut, capfd):
    with HolisticExtractor(static=True) as model:  # graph start logs natively
        model(astronaut)
    with native_stderr_to_log() as term:
        term.write("progress\n")  # what Python writes still reaches the terminal
    err = capfd.readouterr().err
    assert "progress" in err
    for noise in NATIVE_NOISE:
        assert noise not in err, err


# ---- the CLI ------------------------------------------------------------------------------------


@pytest.fixture()
def media(tmp_path, astronaut):
    """A folder with an image, a short clip and a frame folder of the same person, and junk."""
    from PIL import Image

    small = np.asarray(Image.fromarray(astronaut).resize((256, 256)))
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(small).save(d / "photo.png")
    clip = np.stack([np.roll(small, 3 * t, axis=1) for t in range(4)])  # (4, 256, 256, 3)
    write_video(d / "clip.mp4", clip, fps=10)
    (d / "frames").mkdir()
    for i, f in enumerate(clip[:2]):
        Image.fromarray(f).save(d / "frames" / f"images{i + 1:04d}.png")
    (d / "notes.txt").write_text("not media")
    (d / "empty").mkdir()
    return d


def test_cli_image_mediapipe_json(media, tmp_path, capfd):
    out = tmp_path / "photo.json"
    rc = main(["keypoints", "extract", "--video", str(media / "photo.png"), "-o", str(out),
               "--backend", "mediapipe", "--quiet"])  # fmt: skip
    stdout, err = capfd.readouterr()
    assert rc == 0, err
    assert "backend mediapipe" in stdout and "requested" in stdout
    doc = json.loads(out.read_text())
    ex = doc["meta"]["extractor"]
    assert ex["name"] == "mediapipe-holistic" and ex["version"] == "0.10.14"
    assert ex["mode"] == "image" and ex["backend"] == "mediapipe"
    assert (doc["width"], doc["height"]) == (256, 256)
    assert np.asarray(doc["frames"]).shape == (1, 133, 3)
    for noise in NATIVE_NOISE:
        assert noise not in err, err


def test_cli_batch_folder(media, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SIGNGEN_WEIGHTS_DIR", raising=False)
    out = tmp_path / "kp"
    rc = main(["keypoints", "extract", "--batch", str(media), "-o", str(out), "--quiet"])
    stdout = capsys.readouterr().out
    assert rc == 0
    assert "wrote 3 keypoint files" in stdout and "backend mediapipe" in stdout
    assert "SIGNGEN_WEIGHTS_DIR is not set" in stdout  # why auto chose MediaPipe
    assert sorted(p.name for p in out.iterdir()) == ["clip.json", "frames.json", "photo.json"]
    clip = load_keypoints(out / "clip.json")
    assert len(clip) == 4 and clip.fps == 10 and clip.meta["extractor"]["mode"] == "video"
    assert len(load_keypoints(out / "frames.json")) == 2
    assert load_keypoints(out / "photo.json").meta["extractor"]["mode"] == "image"
    # --skip-existing redoes only the missing output; tracking restarts with each clip, so
    # the clip's keypoints do not depend on what ran before it
    (out / "clip.json").unlink()
    rc = main(["keypoints", "extract", "--batch", str(media), "-o", str(out), "--quiet",
               "--skip-existing"])  # fmt: skip
    assert rc == 0 and "wrote 1 keypoint file " in capsys.readouterr().out
    np.testing.assert_allclose(load_keypoints(out / "clip.json").points, clip.points, atol=1e-3)
    rc = main(["keypoints", "extract", "--batch", str(media), "-o", str(out), "--quiet",
               "--out-format", "pose"])  # fmt: skip
    assert rc == 0
    assert sorted(p.name for p in out.glob("*.pose")) == ["clip.pose", "frames.pose", "photo.pose"]
    np.testing.assert_allclose(load_keypoints(out / "clip.pose").points, clip.points, atol=1e-3)


def test_cli_argument_errors(media, tmp_path, capsys):
    def err(*argv):
        rc = main(["keypoints", "extract", *map(str, argv)])
        lines = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, lines
        return lines[0]

    assert "--batch" in err("--batch", media / "photo.png", "-o", tmp_path / "o")
    assert "no videos" in err("--batch", media / "empty", "-o", tmp_path / "o")
    assert "--out-format" in err("--video", media / "photo.png", "-o", tmp_path / "a.json",
                                 "--out-format", "pose")  # fmt: skip
    assert "HRNet option" in err("--video", media / "photo.png", "-o", tmp_path / "a.json",
                                 "--backend", "mediapipe", "--model", "hrnet-w32-wholebody")  # fmt: skip
    (tmp_path / "file").write_text("x")
    assert "is a file" in err("--batch", media, "-o", tmp_path / "file")
    assert not (tmp_path / "a.json").exists()


def _args(**kw) -> argparse.Namespace:
    base = dict(backend="auto", model=None, pose_config=None, pose_checkpoint=None,
                det_config=None, det_checkpoint=None, bbox=None)  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_auto_backend_prefers_local_hrnet_weights(tmp_path, monkeypatch):
    from signgen.keypoints.extract_cli import choose_backend
    from signgen.keypoints.models import DEFAULT_WHOLEBODY_MODEL, get_model

    monkeypatch.delenv("SIGNGEN_WEIGHTS_DIR", raising=False)
    assert choose_backend(_args())[0] == "mediapipe"
    monkeypatch.setenv("SIGNGEN_WEIGHTS_DIR", str(tmp_path))
    backend, why = choose_backend(_args())
    assert backend == "mediapipe" and get_model(DEFAULT_WHOLEBODY_MODEL).checkpoint in why
    (tmp_path / get_model(DEFAULT_WHOLEBODY_MODEL).checkpoint).write_bytes(b"weights")
    assert choose_backend(_args())[0] == "hrnet"
    monkeypatch.delenv("SIGNGEN_WEIGHTS_DIR")
    # an HRNet option means HRNet: its errors (a missing checkpoint) are reported, not skipped
    assert choose_backend(_args(pose_checkpoint="x.pth")) == (
        "hrnet",
        "auto: --pose-checkpoint given",
    )
    assert choose_backend(_args(backend="hrnet"))[0] == "hrnet"
    with pytest.raises(InputError, match="--bbox"):
        choose_backend(_args(backend="mediapipe", bbox="full"))
