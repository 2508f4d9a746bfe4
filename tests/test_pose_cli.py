"""`signgen pose draw` end to end through the real console entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest

from signgen.cli import main
from signgen.keypoints.sequence import KeypointSequence, from_json_dict
from signgen.pose import draw_pose
from signgen.pose.synthetic import random_poses
from signgen.video import probe, read_frames

T = 6


@pytest.fixture
def seq_path(tmp_path):
    seq = KeypointSequence(random_poses(T, 210, 260, rng=0), 210, 260, fps=25.0)
    path = tmp_path / "seq.json"
    seq.save(path)
    return path


def test_draw_to_video(seq_path, tmp_path):
    out = tmp_path / "poses.mp4"
    assert main(["pose", "draw", str(seq_path), "-o", str(out)]) == 0
    info = probe(out)
    assert (info.num_frames, info.width, info.height, info.fps) == (T, 210, 260, 25.0)
    seq = from_json_dict(json.loads(seq_path.read_text()))  # as saved: 4 decimals
    want = draw_pose(seq.points[2], (210, 260))
    got = read_frames(out, 2, 3)[0]
    # H.264 at crf 18 on thin coloured lines: close, not exact
    assert np.abs(got.astype(int) - want).mean() < 4


def test_draw_to_png_folder_with_size_and_options(seq_path, tmp_path):
    out = tmp_path / "frames"
    argv = ["pose", "draw", str(seq_path), "-o", f"{out}/", "--size", "105x130",
            "--threshold", "0.5", "--brightness"]  # fmt: skip
    assert main(argv) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"images{i:04d}.png" for i in range(1, T + 1)]
    seq = from_json_dict(json.loads(seq_path.read_text()))
    want = draw_pose(seq.points[0], (210, 260), (105, 130), threshold=0.5,
                     confidence_brightness=True)  # fmt: skip
    np.testing.assert_array_equal(read_frames(out, 0, 1)[0], want)


def test_draw_openpose18_layout_and_fps(seq_path, tmp_path):
    out = tmp_path / "body.mkv"
    argv = ["pose", "draw", str(seq_path), "-o", str(out), "--layout", "openpose-18",
            "--fps", "12.5"]  # fmt: skip
    assert main(argv) == 0
    info = probe(out)
    assert info.num_frames == T and info.fps == pytest.approx(12.5)


@pytest.mark.parametrize(
    "argv_tail, needle",
    [
        (["-o", "{tmp}/x.gif"], ".mp4"),
        (["-o", "{tmp}/x.mp4", "--size", "12by5"], "invalid size"),
        (["-o", "{tmp}/x.mp4", "--threshold", "-1"], "--threshold"),
        (["-o", "{tmp}/x.mp4", "--fps", "0"], "--fps"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(seq_path, tmp_path, capsys, argv_tail, needle):
    argv = ["pose", "draw", str(seq_path), *[a.format(tmp=tmp_path) for a in argv_tail]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("signgen: error:") and needle in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq.json"]


def test_missing_or_broken_keypoints_leave_no_output(tmp_path, capsys):
    out = tmp_path / "poses.mp4"
    assert main(["pose", "draw", str(tmp_path / "nope.json"), "-o", str(out)]) == 2
    (tmp_path / "broken.json").write_text('{"frames": []')
    assert main(["pose", "draw", str(tmp_path / "broken.json"), "-o", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("signgen: error:") for line in lines) and len(lines) == 2
    assert not out.exists()
