"""Comparison sheets (signgen.video.sheet) and the `make demo` helper tools/demo_sheet.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from signgen.errors import InputError
from signgen.video.sheet import GAP, LABEL_HEIGHT, side_by_side, strip, strip_indices

ROOT = Path(__file__).resolve().parents[1]


def test_columns_sit_side_by_side_under_their_captions():
    first = np.full((6, 5, 3), 10, np.uint8)  # one image, shown in every frame
    clip = np.arange(3 * 6 * 4 * 3, dtype=np.uint8).reshape(3, 6, 4, 3)
    sheet = side_by_side([first, clip], ["first frame", "render"])
    assert sheet.shape == (3, LABEL_HEIGHT + 6, 5 + GAP + 4, 3)
    for t in range(3):
        assert np.array_equal(sheet[t, LABEL_HEIGHT:, :5], first)
        assert np.array_equal(sheet[t, LABEL_HEIGHT:, 5 + GAP :], clip[t])
        assert not sheet[t, LABEL_HEIGHT:, 5 : 5 + GAP].any()  # the gap stays black
    assert np.array_equal(sheet[0, :LABEL_HEIGHT], sheet[2, :LABEL_HEIGHT])


def test_frame_captions_name_the_frame():
    clip = np.zeros((2, 20, 120, 3), np.uint8)
    sheet = side_by_side([clip], ["render"], frame_labels=True)
    assert not np.array_equal(sheet[0, :LABEL_HEIGHT], sheet[1, :LABEL_HEIGHT])


def test_mismatched_columns_are_a_user_error():
    with pytest.raises(InputError):
        side_by_side([np.zeros((3, 6, 4, 3), np.uint8), np.zeros((2, 6, 4, 3), np.uint8)],
                     ["a", "b"])  # fmt: skip
    with pytest.raises(InputError):
        side_by_side([np.zeros((6, 4, 3), np.uint8)], ["a", "b"])


def test_strip_stacks_the_chosen_frames():
    assert strip_indices(32, 4) == [8, 16, 23, 31]
    assert strip_indices(3, 4) == [1, 2]
    assert strip_indices(1) == [0]
    sheet = np.arange(5 * 2 * 3 * 3, dtype=np.uint8).reshape(5, 2, 3, 3)
    out = strip(sheet, [1, 4])
    assert out.shape == (2 + GAP + 2, 3, 3)
    assert np.array_equal(out[:2], sheet[1]) and np.array_equal(out[2 + GAP :], sheet[4])


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "demo_sheet.py"), *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict[str, Path]:
    """A 4-frame clip of a tiny synthetic world: first frame, keypoints, frames."""
    from model_helpers import tiny_world

    from signgen.data.pairs import read_manifest

    root = tmp_path_factory.mktemp("sheet")
    prepared = tiny_world(root / "world", videos=3, frames=4)
    entry = next(e for e in read_manifest(prepared).values() if e.split == "test")
    return {"first": entry.frames_dir / "images0001.png", "keypoints": entry.keypoints_file,
            "frames": entry.frames_dir, "root": root}  # fmt: skip


def test_the_tool_writes_the_video_and_the_strip(clip):
    from signgen.video import read_frames, read_image

    out = clip["root"] / "out"
    r = _run("--first", str(clip["first"]), "--keypoints", str(clip["keypoints"]),
             "--render", str(clip["frames"]), "--truth", str(clip["frames"]),
             "--video", str(out / "sbs.mp4"), "--strip", str(out / "strip.png"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    frames = read_frames(clip["frames"])  # (4, H, W, 3)
    h, w = frames.shape[1:3]
    video = read_frames(out / "sbs.mp4")
    assert video.shape == (4, LABEL_HEIGHT + h, 4 * w + 3 * GAP, 3)
    png = read_image(out / "strip.png")
    rows = strip_indices(4)
    assert png.shape == (len(rows) * (LABEL_HEIGHT + h) + (len(rows) - 1) * GAP, 4 * w + 3 * GAP, 3)
    # The strip is lossless: its render column of the first row is that frame exactly.
    cell = png[LABEL_HEIGHT : LABEL_HEIGHT + h, 2 * (w + GAP) : 2 * (w + GAP) + w]
    assert np.array_equal(cell, frames[rows[0]])
    # The pose column shows a drawn pose (coloured on black), not the frame.
    pose = png[LABEL_HEIGHT : LABEL_HEIGHT + h, w + GAP : 2 * w + GAP]
    assert (pose.max(-1) == 0).mean() > 0.5 and pose.max() > 100


def test_a_render_of_the_wrong_length_is_a_user_error(clip, tmp_path):
    from PIL import Image

    from signgen.video import read_frames

    short = tmp_path / "short"
    short.mkdir()
    for i, f in enumerate(read_frames(clip["frames"])[:2]):
        Image.fromarray(f).save(short / f"images{i + 1:04d}.png")
    r = _run("--first", str(clip["first"]), "--keypoints", str(clip["keypoints"]),
             "--render", str(short), "--video", str(tmp_path / "v.mp4"),
             "--strip", str(tmp_path / "s.png"))  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "expected 4" in r.stderr
    assert not (tmp_path / "v.mp4").exists() and not (tmp_path / "s.png").exists()
