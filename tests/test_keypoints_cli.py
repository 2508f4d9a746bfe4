"""``signgen keypoints convert|info`` through the real CLI, including every bad-input path."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from keypoint_writers import LHAND0, RHAND0, mmpose_instance, random_points, write_mska

from signgen.cli import main
from signgen.keypoints import KeypointSequence, load_keypoints

SIGNGEN = Path(sys.executable).with_name("signgen")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("signgen: error:"), err
    assert "Traceback" not in err
    for frag in fragments:
        assert frag in lines[0], err


def test_convert_mska_sample_and_info(tmp_path, capsys):
    pts = random_points(10, 210, 260)
    pts[2:5, LHAND0 : LHAND0 + 21, 2] = 0  # left hand lost in frames 2-4
    src = tmp_path / "Phoenix-2014T.dev"
    write_mska(src, {"a": pts, "b": random_points(3, 210, 260)})
    out = tmp_path / "seq.json"
    rc, stdout, err = run_cli(capsys, "keypoints", "convert", src, "--sample", "a", "-o", out)
    assert rc == 0, err
    assert "10 frames" in stdout
    back = load_keypoints(out).points
    seen = pts[..., 2] > 0
    np.testing.assert_allclose(back[seen], pts[seen], atol=1e-4)
    assert (back[~seen] == 0).all()  # missing points: score 0 (and x, y zeroed)

    rc, stdout, err = run_cli(capsys, "keypoints", "info", out, "--json")
    assert rc == 0, err
    info = json.loads(stdout)
    assert info["format"] == "signgen" and info["frames"] == 10
    assert info["fps"] == 25.0 and (info["width"], info["height"]) == (210, 260)
    assert info["duration_s"] == pytest.approx(0.4)
    assert info["missing_left_hand_frames"] == [2, 3, 4]
    assert info["missing_right_hand_frames"] == []
    expected = pts[:, RHAND0:, 2].mean()
    assert info["mean_confidence"]["right_hand"] == pytest.approx(expected, abs=1e-4)

    rc, stdout, err = run_cli(capsys, "keypoints", "info", src, "--sample", "a", "--threshold", "2")
    assert rc == 0, err
    assert "format:     mska" in stdout
    assert re.search(r"missing left hand:\s+10 / 10 frames", stdout)  # every score < 2


def test_convert_with_cleanup_options(tmp_path, capsys):
    pts = random_points(30, 210, 260)
    frames = [{"frame_id": i, "instances": [mmpose_instance(pts[i])]} for i in range(30)]
    (tmp_path / "p.json").write_text(json.dumps(frames))
    out = tmp_path / "o.json"
    rc, _, err = run_cli(
        capsys, "keypoints", "convert", tmp_path / "p.json", "--size", "210x260", "--fps", "25",
        "--threshold", "0.3", "--interpolate-gaps", "2", "--smooth", "--beta", "5", "-o", out,
    )  # fmt: skip
    assert rc == 0, err
    seq = load_keypoints(out)
    assert len(seq) == 30 and seq.meta["source_format"] == "mmpose"
    assert not np.allclose(seq.points[..., :2], pts[..., :2], atol=1e-3)  # smoothing happened


class _RunsCode:
    """Pickles to a call that would create ``marker`` if the file were unpickled naively."""

    def __init__(self, how: str, marker: Path):
        self.how, self.marker = how, str(marker)

    def __reduce__(self):
        if self.how == "os.system":
            return (os.system, (f"touch {self.marker}",))
        if self.how == "builtins.open":
            return (builtins.open, (self.marker, "w"))
        return (subprocess.call, (["touch", self.marker],))


@pytest.mark.parametrize("how", ["os.system", "builtins.open", "subprocess.call"])
def test_malicious_pickle_is_refused(tmp_path, capsys, how):
    marker = tmp_path / "pwned"
    src = tmp_path / "Phoenix-2014T.train"
    with open(src, "wb") as fh:
        pickle.dump({"s": {"name": "s", "keypoint": _RunsCode(how, marker)}}, fh)
    out = tmp_path / "o.json"
    rc, _, err = run_cli(capsys, "keypoints", "convert", src, "-o", out)
    assert_one_line_error(rc, err, "refused to unpickle")
    assert not marker.exists()
    assert not out.exists()


def _signgen_doc(points) -> dict:
    return {"layout": "coco-wholebody-133", "width": 210, "height": 260, "fps": 25,
            "frames": np.asarray(points).tolist()}  # fmt: skip


def _nan_doc() -> dict:
    pts = random_points(3, 210, 260)
    pts[1, 5, 0] = np.nan
    return _signgen_doc(pts)


def _inf_doc() -> dict:
    pts = random_points(3, 210, 260)
    pts[2, 7, 1] = np.inf
    return _signgen_doc(pts)


BAD_INPUTS = {
    "zero_frames": (json.dumps(_signgen_doc(np.zeros((0, 133, 3)))), "0 frames"),
    "134_points": (json.dumps(_signgen_doc(np.ones((2, 134, 3)))), "got 134"),
    "17_points": (json.dumps(_signgen_doc(np.ones((2, 17, 3)))), "got 17"),
    "nan": (json.dumps(_nan_doc()), "NaN/inf"),
    "inf": (json.dumps(_inf_doc()), "NaN/inf"),
    "truncated_json": ('{"layout": "coco-wholebody-133", "frames": [[[1.0, 2', "not valid JSON"),
    "not_json": ("just some text\n", "unknown keypoint format"),
    "unknown_json": ('{"hello": "world"}', "not a known keypoint format"),
    "empty_file": ("", "empty"),
    "mmpose_17": (
        json.dumps([{"frame_id": 0, "instances": [mmpose_instance(np.ones((17, 3)))]}]),
        "17 keypoints, expected 133",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_line_exit_2_no_output(tmp_path, capsys, case):
    content, fragment = BAD_INPUTS[case]
    src = tmp_path / "in.json"
    src.write_text(content)
    out = tmp_path / "out.json"
    extra = ["--size", "210x260", "--fps", "25"] if case == "mmpose_17" else []
    rc, _, err = run_cli(capsys, "keypoints", "convert", src, *extra, "-o", out)
    assert_one_line_error(rc, err, fragment)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in.json"]  # no temp files left behind
    rc, _, err = run_cli(capsys, "keypoints", "info", src, *extra)
    assert_one_line_error(rc, err, fragment)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["convert", "{d}/missing.json", "-o", "{d}/o.json"], "not found"),
        (["convert", "{d}/seq.json", "--size", "210by260", "-o", "{d}/o.json"], "WIDTHxHEIGHT"),
        (["convert", "{d}/seq.json", "--fps", "-3", "-o", "{d}/o.json"], "--fps"),
        (["convert", "{d}/seq.json", "--sample", "x", "-o", "{d}/o.json"], "--sample only"),
        (["convert", "{d}/Phoenix-2014T.dev", "-o", "{d}/o.json"], "pass --sample NAME"),
        (["info", "{d}/op"], "--size WxH and --fps F"),
    ],
)
def test_bad_options(tmp_path, capsys, argv, fragment):
    KeypointSequence(random_points(2, 210, 260), 210, 260, 25).save(tmp_path / "seq.json")
    write_mska(
        tmp_path / "Phoenix-2014T.dev",
        {"a": random_points(2, 210, 260), "b": random_points(2, 210, 260)},
    )
    (tmp_path / "op").mkdir()
    (tmp_path / "op" / "f_0_keypoints.json").write_text('{"people": []}')
    rc, _, err = run_cli(capsys, "keypoints", *[a.format(d=tmp_path) for a in argv])
    assert_one_line_error(rc, err, fragment)
    assert not (tmp_path / "o.json").exists()


def test_console_script_subprocess(tmp_path):
    """The installed ``signgen`` script: a good conversion and a refused malicious pickle."""
    assert SIGNGEN.exists(), SIGNGEN
    KeypointSequence(random_points(4, 210, 260), 210, 260, 25).save(tmp_path / "seq.json")
    good = subprocess.run(
        [SIGNGEN, "keypoints", "convert", tmp_path / "seq.json", "--size", "420x520",
         "-o", tmp_path / "big.json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert load_keypoints(tmp_path / "big.json").size == (420, 520)

    marker = tmp_path / "pwned"
    src = tmp_path / "Phoenix-2014T.test"
    with open(src, "wb") as fh:
        pickle.dump({"s": {"keypoint": _RunsCode("os.system", marker)}}, fh)
    bad = subprocess.run(
        [SIGNGEN, "keypoints", "info", src], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2
    assert_one_line_error(bad.returncode, bad.stderr, "refused to unpickle", "system")
    assert not marker.exists()
