"""``signgen render --retarget`` and the reference keypoints of a frame (first_frame).

Signer B (the first frame) performs signer A's keypoints: both drawn by the synthetic
world's forward kinematics (``signgen.data.synthetic.pose_from_motion``) with their own
bodies, so A's raw keypoints do not fit B and retargeting moves them. The tiny model's
pose encoder gets random weights (its last conv is zero-initialised, which would hide the
pose), so frames depend on the keypoints they are rendered from. The extraction path runs
MediaPipe Holistic (offline) on scikit-image's astronaut photograph.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from model_helpers import randomize

from signgen.cli import main
from signgen.keypoints import KeypointSequence, load_keypoints
from signgen.keypoints import layout as L
from signgen.video import read_frames

W, H, T = 42, 52, 3  # Phoenix's aspect (210 x 260), small


def _save_png(path, frame: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(frame).save(path)


def _model(path, config: str = "tiny"):
    from signgen.models.config import load_model_config
    from signgen.sampling.pipeline import FPDMPipeline

    pipe = FPDMPipeline.from_config(load_model_config(config))
    randomize(pipe.pose_encoder, 1)
    if pipe.focal_adapter is not None:
        randomize(pipe.focal_adapter, 5)  # so that face/hand locations change the frames
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """drive.json (A's motion, A's body), ref.json (B's own pose), first.png (B drawn in it)."""
    from signgen.data.synthetic import (
        pose_from_motion,
        render_signer,
        sample_signer,
        sample_signer_motion,
    )

    d = tmp_path_factory.mktemp("retarget_render")
    rng = np.random.default_rng(4)
    a, b = sample_signer(rng, "A"), sample_signer(rng, "B")
    drive = pose_from_motion(sample_signer_motion(np.random.default_rng(1), T, a.body), a.body,
                             (W, H))  # fmt: skip
    ref = pose_from_motion(sample_signer_motion(np.random.default_rng(2), 1, b.body), b.body,
                           (W, H))  # fmt: skip
    KeypointSequence(drive, W, H, 12.5).save(d / "drive.json")
    KeypointSequence(ref, W, H, 25.0).save(d / "ref.json")
    _save_png(d / "first.png", render_signer(b.appearance, ref[0], (W, H)))
    _model(d / "model")
    return d


def _render(files, out, *extra, video=None, keypoints=None, model=None) -> int:
    return main([
        "render", "--video", str(video or files / "first.png"),
        "--keypoints", str(keypoints or files / "drive.json"),
        "--model", str(model or files / "model"), "-o", str(out / "out.mp4"),
        "--frames-dir", str(out / "frames"), "--steps", "2", *map(str, extra),
    ])  # fmt: skip


def _frames(out) -> np.ndarray:
    return read_frames(out / "frames").astype(np.int16)  # (T, H, W, 3), lossless PNGs


def _diff(a, b) -> tuple[int, float]:
    """(max, mean) absolute difference of two renders, in grey levels."""
    d = np.abs(_frames(a) - _frames(b))
    return int(d.max()), float(d.mean())


def _same_up_to_file_rounding(a, b, other) -> None:
    """Keypoint files store 4 decimals and pose images are drawn anti-aliased at sub-pixel
    positions, so frames rendered from a file and from the same points in memory may differ
    by 1 grey level on a few pixels (measured: 0.6 % of the values); ``other`` (rendered
    from other keypoints) must differ far more, so the comparison is not vacuous."""
    close, far = _diff(a, b), _diff(other, b)
    assert close[0] <= 1 and 20 * close[1] < far[1], (close, far)


def _lines(err: str) -> list[str]:
    """stderr without the progress bar's lines."""
    return [ln for ln in err.splitlines() if ln.strip() and "render:" not in ln]


def test_retarget_equals_rendering_the_retarget_commands_output(files, tmp_path, capsys):
    """render --retarget --source-keypoints REF == keypoints retarget --reference REF, then
    render (exactly: the same points in memory; up to the file's rounding: its output file);
    and both differ from rendering A's raw keypoints (the fit moved them)."""
    from signgen.keypoints.retarget import retarget_sequence
    from signgen.sampling.pipeline import FPDMPipeline
    from signgen.video import read_first_frame

    rt = tmp_path / "rt.json"
    argv = ["keypoints", "retarget", files / "drive.json", "--reference", files / "ref.json",
            "-o", rt]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    moved = np.abs(load_keypoints(rt).points - load_keypoints(files / "drive.json").points)
    assert moved[..., :2].max() > 2.0  # pixels: B's body is not A's
    outs = {k: tmp_path / k for k in ("file", "flag", "raw")}
    assert _render(files, outs["file"], keypoints=rt) == 0
    capsys.readouterr()
    assert _render(files, outs["flag"], "--retarget", "--source-keypoints", files / "ref.json") == 0
    out = capsys.readouterr()
    assert "retargeted onto FIRST's signer (reference: source keypoints" in out.out
    assert not _lines(out.err), out.err
    assert _render(files, outs["raw"]) == 0
    _same_up_to_file_rounding(outs["flag"], outs["file"], outs["raw"])
    # The same retarget in memory, rendered by the pipeline: the very frames of --retarget.
    drive, ref = load_keypoints(files / "drive.json"), load_keypoints(files / "ref.json")
    seq = retarget_sequence(drive, ref.points[0], ref.size)
    pipe = FPDMPipeline.from_pretrained(files / "model")
    want = pipe(read_first_frame(files / "first.png"), seq, steps=2)
    np.testing.assert_array_equal(_frames(outs["flag"]), want)


def test_retarget_takes_keypoints_of_a_frame_of_any_size(files, tmp_path, capsys):
    """Retargeting maps the driver onto the first frame: keypoints measured on a frame of
    another aspect ratio, an error when rendered as they are, render with --retarget."""
    seq = load_keypoints(files / "drive.json")
    other = KeypointSequence(seq.points * [2.0, 1.0, 1.0], 2 * W, H, seq.fps)
    other.save(tmp_path / "wide.json")
    assert _render(files, tmp_path / "plain", keypoints=tmp_path / "wide.json") == 2
    assert "aspect ratio" in capsys.readouterr().err
    assert _render(files, tmp_path / "rt", "--retarget", "--source-keypoints",
                   files / "ref.json", keypoints=tmp_path / "wide.json") == 0  # fmt: skip
    assert _frames(tmp_path / "rt").shape == (T, H, W, 3)


def test_reference_missing_a_limb_is_one_warning_line(files, tmp_path, capsys):
    ref = load_keypoints(files / "ref.json")
    pts = ref.points.copy()
    pts[:, L.RIGHT_HAND.start : L.RIGHT_HAND.stop, 2] = 0
    KeypointSequence(pts, W, H, ref.fps).save(tmp_path / "no_hand.json")
    rc = _render(files, tmp_path / "o", "--retarget", "--source-keypoints",
                 tmp_path / "no_hand.json")  # fmt: skip
    err = _lines(capsys.readouterr().err)
    assert rc == 0
    assert len(err) == 1 and err[0].startswith("signgen: warning:") and "right hand" in err[0]


def test_mcld_models_locate_face_and_hands_with_the_reference(files, tmp_path):
    """With --retarget the reference points are also the MCLD source points: the frames
    are the retargeted keypoints rendered with source_points = REF's first pose, not with
    the default (the sequence's own first pose: A's posture on B's body)."""
    from signgen.keypoints.retarget import retarget_sequence
    from signgen.sampling.pipeline import FPDMPipeline
    from signgen.video import read_first_frame

    model = _model(tmp_path / "mcld", "tiny_mcld")
    assert _render(files, tmp_path / "flag", "--retarget", "--source-keypoints",
                   files / "ref.json", model=model) == 0  # fmt: skip
    drive, ref = load_keypoints(files / "drive.json"), load_keypoints(files / "ref.json")
    seq = retarget_sequence(drive, ref.points[0], ref.size)
    pipe = FPDMPipeline.from_pretrained(model)
    first = read_first_frame(files / "first.png")
    want = pipe(first, seq, steps=2, source_points=ref.points[0])
    np.testing.assert_array_equal(_frames(tmp_path / "flag"), want)
    own = pipe(first, seq, steps=2)  # source points: the retargeted first pose
    assert np.abs(own.astype(np.int16) - want).max() > 0


# ---- the reference extracted from the first frame (MediaPipe, offline) ---------------------
@pytest.fixture(scope="module")
def astronaut(tmp_path_factory, files):
    """scikit-image's astronaut at 128 x 128 (MediaPipe Holistic finds her upper body),
    and its keypoints extracted by `signgen keypoints extract` (static-image mode)."""
    pytest.importorskip("mediapipe")
    import cv2
    from skimage.data import astronaut as photo

    d = tmp_path_factory.mktemp("astronaut")
    _save_png(d / "astro.png", cv2.resize(photo(), (128, 128), interpolation=cv2.INTER_AREA))
    mp = pytest.MonkeyPatch()
    mp.delenv("SIGNGEN_WEIGHTS_DIR", raising=False)  # auto = mediapipe
    try:
        assert main(["keypoints", "extract", "--video", str(d / "astro.png"), "-o",
                     str(d / "astro.json"), "--quiet"]) == 0  # fmt: skip
    finally:
        mp.undo()
    return d


def test_first_frame_keypoints_are_those_of_keypoints_extract(astronaut, monkeypatch):
    from signgen.keypoints.first_frame import first_frame_extractor, first_frame_keypoints
    from signgen.video import read_first_frame

    monkeypatch.delenv("SIGNGEN_WEIGHTS_DIR", raising=False)
    with first_frame_extractor() as ex:
        assert ex.backend == "mediapipe" and "SIGNGEN_WEIGHTS_DIR" in ex.why
        points, size = first_frame_keypoints(astronaut / "astro.png", ex)
        again, _ = first_frame_keypoints(read_first_frame(astronaut / "astro.png"), ex)
    assert size == (128, 128)
    want = load_keypoints(astronaut / "astro.json").points[0]
    np.testing.assert_allclose(points, want, atol=1e-3)
    np.testing.assert_array_equal(points, again)  # static mode: no state between frames
    assert (points[[L.LEFT_SHOULDER, L.RIGHT_SHOULDER, L.NOSE], 2] >= 0.3).all()


def test_retarget_with_extracted_reference_equals_given_reference(files, astronaut, tmp_path,
                                                                  capsys, monkeypatch):  # fmt: skip
    """No --source-keypoints: the reference is extracted from FIRST (auto backend, here
    MediaPipe), and the frames are those rendered with FIRST's extracted keypoint file."""
    monkeypatch.delenv("SIGNGEN_WEIGHTS_DIR", raising=False)
    video = astronaut / "astro.png"
    assert _render(files, tmp_path / "extracted", "--retarget", video=video) == 0
    out = capsys.readouterr().out
    assert "reference: extracted with mediapipe (auto:" in out
    assert _render(files, tmp_path / "given", "--retarget", "--source-keypoints",
                   astronaut / "astro.json", video=video) == 0  # fmt: skip
    scale = [ln.rsplit("global scale", 1)[1] for ln in (out, capsys.readouterr().out)]
    assert scale[0] == scale[1]
    # Another reference (the same points 6 px lower) gives other frames.
    ref = load_keypoints(astronaut / "astro.json")
    KeypointSequence(ref.points + np.array([0.0, 6.0, 0.0]), *ref.size, ref.fps).save(
        tmp_path / "low.json"
    )
    assert _render(files, tmp_path / "low", "--retarget", "--source-keypoints",
                   tmp_path / "low.json", video=video) == 0  # fmt: skip
    _same_up_to_file_rounding(tmp_path / "extracted", tmp_path / "given", tmp_path / "low")


def test_keypoints_retarget_reference_image_uses_the_auto_backend(files, astronaut, tmp_path,
                                                                  capsys, monkeypatch):  # fmt: skip
    monkeypatch.delenv("SIGNGEN_WEIGHTS_DIR", raising=False)
    outs = {}
    for ref in ("astro.png", "astro.json"):
        outs[ref] = tmp_path / f"{ref}.out.json"
        assert main(["keypoints", "retarget", str(files / "drive.json"), "--reference",
                     str(astronaut / ref), "-o", str(outs[ref])]) == 0  # fmt: skip
    assert "reference keypoints extracted with mediapipe" in capsys.readouterr().out
    got, want = (load_keypoints(outs[r]) for r in ("astro.png", "astro.json"))
    assert got.size == want.size == (128, 128)
    np.testing.assert_allclose(got.points, want.points, atol=1e-2)


# ---- bad inputs: one line, exit 2, no output ----------------------------------------------
def _bad(files, tmp_path, capsys, *extra, **kw) -> str:
    out = tmp_path / "bad"
    rc = _render(files, out, *extra, **kw)
    err = _lines(capsys.readouterr().err)
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("signgen: error: "), err
    assert not out.exists() or not list(out.iterdir())
    return err[0]


def test_bad_retarget_inputs(files, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SIGNGEN_WEIGHTS_DIR", raising=False)
    ref = load_keypoints(files / "ref.json")
    KeypointSequence(ref.points, 2 * W, H, 25.0).save(tmp_path / "wide_ref.json")
    no_torso = ref.points.copy()
    no_torso[:, :17, 2] = 0
    KeypointSequence(no_torso, W, H, 25.0).save(tmp_path / "no_torso.json")
    doc = KeypointSequence(ref.points, W, H, 25.0).to_json_dict()
    doc["frames"] = []
    (tmp_path / "empty.json").write_text(json.dumps(doc))
    _save_png(tmp_path / "nobody.png", np.full((H, W, 3), 127, np.uint8))

    msg = _bad(files, tmp_path, capsys, "--retarget", video=tmp_path / "nobody.png")
    assert "no signer found" in msg and "--source-keypoints" in msg
    assert "aspect ratio" in _bad(files, tmp_path, capsys, "--retarget", "--source-keypoints",
                                  tmp_path / "wide_ref.json")  # fmt: skip
    assert "torso" in _bad(files, tmp_path, capsys, "--retarget", "--source-keypoints",
                           tmp_path / "no_torso.json")  # fmt: skip
    assert "0 frames" in _bad(files, tmp_path, capsys, "--retarget", "--source-keypoints",
                              files / "ref.json", keypoints=tmp_path / "empty.json")  # fmt: skip
    msg = _bad(files, tmp_path, capsys, "--source-keypoints", files / "ref.json")
    assert "MCLD" in msg and "--retarget" in msg


def test_backend_choice_and_its_errors(monkeypatch, tmp_path):
    from signgen.errors import InputError
    from signgen.keypoints.first_frame import first_frame_extractor, resolve_backend

    monkeypatch.delenv("SIGNGEN_WEIGHTS_DIR", raising=False)
    assert resolve_backend("auto")[0] == "mediapipe"
    assert resolve_backend("auto", checkpoint="x.pth") == (
        "hrnet", "auto: an HRNet model or checkpoint was named")  # fmt: skip
    with pytest.raises(InputError, match="takes none"):
        resolve_backend("mediapipe", model="hrnet-w32-wholebody")
    with pytest.raises(InputError, match="unknown pose backend"):
        resolve_backend("openpose")
    monkeypatch.setenv("SIGNGEN_WEIGHTS_DIR", str(tmp_path))  # set, but no checkpoint in it
    with pytest.raises(InputError, match="SIGNGEN_WEIGHTS_DIR"):
        first_frame_extractor("hrnet")
