"""Video I/O: round trips through both decoders, atomic writes, frame folders, bad input."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from signgen.errors import InputError
from signgen.video import (
    VideoWriter,
    fps_fraction,
    iter_batches,
    iter_frames,
    list_frame_files,
    probe,
    read_first_frame,
    read_frames,
    write_png_frames,
    write_video,
)
from signgen.video import decode as decode_mod

BACKENDS = ["decord", "pyav"]
REPO = Path(__file__).resolve().parents[1]


def smooth_frames(n: int, width: int, height: int) -> np.ndarray:
    """(n, H, W, 3) smooth moving colour gradients, easy for H.264 at crf 18."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((n, height, width, 3), np.uint8)
    for t in range(n):
        out[t, ..., 0] = 128 + 90 * np.sin(x / 19 + t / 4)
        out[t, ..., 1] = 128 + 90 * np.cos(y / 23 + t / 6)
        out[t, ..., 2] = 128 + 60 * np.sin((x + y) / 31 + t / 3)
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Encoded once per module: {(w, h): (path, frames)}."""
    d = tmp_path_factory.mktemp("clips")
    out = {}
    for w, h, fps in [(210, 260, 25), (211, 161, 29.97)]:
        frames = smooth_frames(12, w, h)
        path = d / f"clip_{w}x{h}.mp4"
        write_video(path, frames, fps=fps, preset="ultrafast")
        out[(w, h)] = (path, frames, fps)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [(210, 260), (211, 161)])
def test_round_trip(clips, size, backend):
    path, frames, fps = clips[size]
    info = probe(path, backend=backend)
    assert (info.width, info.height) == size
    assert info.num_frames == len(frames) and info.num_frames_exact
    assert info.fps == pytest.approx(float(fps_fraction(fps)), rel=1e-6)
    assert info.codec == "h264" and info.backend == backend
    got = read_frames(path, backend=backend)
    assert got.shape == frames.shape and got.dtype == np.uint8
    err = np.abs(got.astype(np.int16) - frames.astype(np.int16)).mean()
    assert err < 3.0, err


def test_odd_size_is_stored_as_444_and_both_decoders_agree(clips):
    path, _, _ = clips[(211, 161)]
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv444p"
    with av.open(str(clips[(210, 260)][0])) as c:
        cc = c.streams.video[0].codec_context
        assert cc.pix_fmt == "yuv420p"
        assert cc.colorspace == 6 and cc.color_range == 1  # tagged BT.601, limited range
    a = read_frames(path, backend="decord")
    b = read_frames(path, backend="pyav")
    assert np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_streaming_slices_and_batches(clips, backend):
    path, _, _ = clips[(210, 260)]
    full = read_frames(path, backend=backend)
    np.testing.assert_array_equal(read_frames(path, 3, 7, backend=backend), full[3:7])
    streamed = list(iter_frames(path, 2, None, backend=backend))
    assert len(streamed) == 10 and streamed[0].shape == (260, 210, 3)
    np.testing.assert_array_equal(np.stack(streamed), full[2:])
    sizes = [b.shape[0] for b in iter_batches(path, 5, backend=backend)]
    assert sizes == [5, 5, 2]
    assert read_frames(path, 50, backend=backend).shape == (0, 260, 210, 3)
    np.testing.assert_array_equal(read_first_frame(path, backend=backend), full[0])


@pytest.mark.parametrize("fps", [25, 29.97])
def test_slices_after_seeking_are_frame_exact(tmp_path, fps, monkeypatch):
    frames = smooth_frames(40, 48, 32)
    path = tmp_path / "gop.mp4"
    write_video(path, frames, fps=fps, gop=6, preset="ultrafast")  # keyframes 0, 6, 12, ...
    full = {b: read_frames(path, backend=b) for b in BACKENDS}
    seeks = []
    real_seek = decode_mod._PyAV._seek

    def spy(self, stream, start):
        out = real_seek(self, stream, start)
        seeks.append(out is not None)
        return out

    monkeypatch.setattr(decode_mod._PyAV, "_seek", spy)
    for start in (1, 5, 6, 7, 13, 30, 38):
        for b in BACKENDS:
            got = read_frames(path, start, start + 2, backend=b)
            np.testing.assert_array_equal(got, full[b][start : start + 2])
    assert seeks and all(seeks)  # PyAV really seeked instead of decoding from 0


def test_fractional_fps_is_exact(clips):
    path, _, _ = clips[(211, 161)]
    with av.open(str(path)) as c:
        assert c.streams.video[0].average_rate == Fraction(30000, 1001)
    assert fps_fraction(29.97) == Fraction(30000, 1001)
    assert fps_fraction(23.976) == Fraction(24000, 1001)
    assert fps_fraction(25) == 25 and fps_fraction(12.5) == Fraction(25, 2)
    with pytest.raises(InputError):
        fps_fraction(0)


def test_exception_mid_write_leaves_nothing(tmp_path):
    out = tmp_path / "out.mp4"
    frames = smooth_frames(3, 64, 48)
    with pytest.raises(RuntimeError, match="boom"), VideoWriter(out, fps=25) as w:
        w.write(frames[0])
        w.write(frames[1])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    # closing without frames is an error and leaves nothing either
    with pytest.raises(ValueError, match="no frames"), VideoWriter(out, fps=25):
        pass
    assert list(tmp_path.iterdir()) == []
    # a wrong frame mid-stream aborts too, and an existing file is kept intact
    write_video(out, frames, fps=25)
    before = out.read_bytes()
    with pytest.raises(ValueError, match="64x48"), VideoWriter(out, fps=25) as w:
        w.write(frames[0])
        w.write(np.zeros((10, 10, 3), np.uint8))
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_writer_argument_errors(tmp_path):
    with pytest.raises(InputError, match=r"\.mp4"):
        VideoWriter(tmp_path / "out.gif", fps=25)
    with pytest.raises(InputError, match="crf"):
        VideoWriter(tmp_path / "out.mp4", fps=25, crf=99)
    with pytest.raises(InputError, match="gop"):
        VideoWriter(tmp_path / "out.mp4", fps=25, gop=0)
    with pytest.raises(ValueError, match="uint8"):
        VideoWriter(tmp_path / "out.mp4", fps=25).write(np.zeros((8, 8, 3), np.float32))


def _zero_frame_mp4(path):
    """What a writer that crashed before its first frame leaves: a header, no frames."""
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    c.start_encoding()
    c.close()


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@pytest.mark.parametrize("kind", ["missing", "empty", "random", "text", "zero_frames"])
def test_bad_videos_raise_one_line_input_errors(tmp_path, kind, backend):
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        path.write_text("this is not a video\n" * 20)
    elif kind == "zero_frames":
        _zero_frame_mp4(path)
    for fn in (probe, read_first_frame, read_frames):
        with pytest.raises(InputError) as exc_info:
            fn(path, backend=backend)
        msg = str(exc_info.value)
        assert str(path) in msg and "\n" not in msg


def test_image_files_as_first_frame_and_one_frame_video(tmp_path):
    img = smooth_frames(1, 40, 30)[0]
    Image.fromarray(img).save(tmp_path / "first.png")
    Image.fromarray(img).save(tmp_path / "first.jpg", quality=95)
    Image.fromarray(img).convert("RGBA").save(tmp_path / "first.webp", lossless=True)
    np.testing.assert_array_equal(read_first_frame(tmp_path / "first.png"), img)
    np.testing.assert_array_equal(read_first_frame(tmp_path / "first.webp"), img)
    jpg = read_first_frame(tmp_path / "first.jpg")
    assert jpg.shape == (30, 40, 3) and np.abs(jpg.astype(int) - img).mean() < 3
    info = probe(tmp_path / "first.png")
    assert (info.width, info.height, info.num_frames) == (40, 30, 1)
    assert read_frames(tmp_path / "first.png").shape == (1, 30, 40, 3)
    (tmp_path / "bad.png").write_text("not a png")
    with pytest.raises(InputError, match=r"bad\.png"):
        read_first_frame(tmp_path / "bad.png")


def test_frame_folder_is_a_video(tmp_path):
    frames = smooth_frames(11, 21, 13)
    written = write_png_frames(tmp_path / "clip", frames)
    assert [p.name for p in written][:2] == ["images0001.png", "images0002.png"]
    info = probe(tmp_path / "clip")
    assert (info.width, info.height, info.num_frames, info.fps) == (21, 13, 11, 25.0)
    np.testing.assert_array_equal(read_frames(tmp_path / "clip"), frames)  # PNG is lossless
    np.testing.assert_array_equal(read_frames(tmp_path / "clip", 4, 6), frames[4:6])
    # unpadded numbers sort numerically, not as text (images10 after images9)
    write_png_frames(tmp_path / "loose", frames, pattern="images{}.png")
    names = [p.name for p in list_frame_files(tmp_path / "loose")]
    assert names[8:10] == ["images9.png", "images10.png"]
    np.testing.assert_array_equal(read_frames(tmp_path / "loose"), frames)
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match="no image files"):
        probe(tmp_path / "none")


def test_png_frames_are_written_atomically(tmp_path):
    def frames():
        yield np.zeros((8, 8, 3), np.uint8)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_png_frames(tmp_path, frames())
    assert [p.name for p in tmp_path.iterdir()] == ["images0001.png"]
    with pytest.raises(ValueError, match="uint8"):
        write_png_frames(tmp_path / "x", [np.zeros((8, 8, 3), np.float32)])
    assert list((tmp_path / "x").iterdir()) == []


def test_auto_is_pyav(clips):
    path, frames, _ = clips[(210, 260)]
    info = probe(path)
    assert info.backend == "pyav" and info.num_frames == len(frames)


def _damaged(tmp_path, clips) -> dict[str, Path]:
    """A clip cut in half (its index, at the end of the mp4, is gone) and one whose first
    coded frame is overwritten with zeros."""
    path, _, _ = clips[(210, 260)]
    data = path.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.mp4"
    mid = bytearray(data)
    mid[100:4000] = bytes(3900)
    corrupt.write_bytes(bytes(mid))
    return {"truncated": truncated, "corrupt": corrupt}


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_damaged_video_is_an_error_and_no_decoder_noise(tmp_path, clips, capfd, backend):
    """Whatever the backend, native decoder messages never reach file descriptor 2."""
    for kind, path in _damaged(tmp_path, clips).items():
        with pytest.raises(InputError) as exc_info:
            read_frames(path, backend=backend)
        assert str(path) in str(exc_info.value) and "\n" not in str(exc_info.value), kind
        out, err = capfd.readouterr()
        assert err == "" and out == "", (kind, err)


@pytest.mark.parametrize("kind", ["truncated", "corrupt"])
def test_cli_bad_video_is_exactly_one_line(tmp_path, clips, kind):
    """Through the console script in its own process: exit 2, one line on stderr."""
    path = _damaged(tmp_path, clips)[kind]
    cmd = [sys.executable, "-m", "pipelines.app", "render", "--video", str(path), "--keypoints",
           str(REPO / "examples" / "sequence.json"), "-o", str(tmp_path / "out.mp4")]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("signgen: error: ") and str(path) in lines[0]
    assert not (tmp_path / "out.mp4").exists()
