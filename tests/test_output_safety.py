"""Outputs that cannot be written: one clear line, nothing half-written, inputs untouched.

Cases: a full disk, a read-only output folder, an output path that is an input, and two
jobs writing one output folder at once. The disk and the read-only folder are real file
systems: a small tmpfs mounted for the test (mounting needs root; without it the full disk
is a file-size limit, `RLIMIT_FSIZE`, in a subprocess: writes then fail with EFBIG as
they would with ENOSPC, and the read-only folder is a folder without write permission).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from signgen.errors import InputError

IS_ROOT = os.geteuid() == 0


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _run(argv: list[str]) -> tuple[int, list[str]]:
    """``signgen ARGV`` in this process: (exit code, non-empty stderr lines)."""
    from pipelines.app import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    lines = err.getvalue().replace("\r", "\n").splitlines()
    return code, [ln for ln in lines if ln.strip() and "%|" not in ln]  # not progress bars


@contextlib.contextmanager
def _tmpfs(path: Path, size: str, read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                         capture_output=True, text=True)  # fmt: skip
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def inputs(tmp_path) -> Path:
    """A signgen keypoint JSON (2 frames, 64x80) and a first frame of that size."""
    from fuzz_inputs import signgen_doc

    from signgen.video.images import encode_png

    d = tmp_path / "in"
    d.mkdir()
    (d / "seq.json").write_text(json.dumps(signgen_doc(2, 0)))
    frame = np.random.default_rng(0).integers(0, 255, (80, 64, 3), dtype=np.uint8)
    (d / "first.png").write_bytes(encode_png(frame))
    return d


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from signgen.models.config import load_model_config
    from signgen.sampling.pipeline import FPDMPipeline

    path = tmp_path_factory.mktemp("model") / "tiny"
    FPDMPipeline.from_config(load_model_config("tiny")).save_pretrained(path)
    return path


def _render(inputs: Path, model_dir: Path, out: Path) -> list[str]:
    return ["render", "--video", str(inputs / "first.png"), "--keypoints",
            str(inputs / "seq.json"), "--model", str(model_dir), "--steps", "1",
            "--device", "cpu", "-o", str(out)]  # fmt: skip


# ---- a full disk -------------------------------------------------------------------------------
@pytest.mark.skipif(not IS_ROOT, reason="mounting a tmpfs needs root (see the rlimit test)")
def test_full_disk_render_and_convert(tmp_path, inputs, model_dir):
    before = _files(inputs)
    with _tmpfs(tmp_path / "disk", "64k") as disk:
        # Fill the disk but for a few bytes: every output write fails with ENOSPC.
        with open(disk / "filler", "wb") as fh, contextlib.suppress(OSError):
            fh.write(b"\0" * 128 * 1024)
        for argv in (_render(inputs, model_dir, disk / "out" / "clip.mp4"),
                     ["keypoints", "convert", str(inputs / "seq.json"), "-o",
                      str(disk / "out" / "seq.json")]):  # fmt: skip
            code, lines = _run(argv)
            assert code == 2 and len(lines) == 1, lines
            assert "disk is full" in lines[0] and lines[0].startswith("signgen: error: ")
            assert sorted(p.name for p in disk.rglob("*") if p.is_file()) == ["filler"]
    assert _files(inputs) == before


def test_file_size_limit_convert_in_a_subprocess(tmp_path, inputs):
    """Without root: the same failure through a file-size limit (EFBIG) on the output."""
    before = _files(inputs)
    out = tmp_path / "out" / "seq.json"
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
        "from pipelines.app import main; sys.exit(main(sys.argv[1:]))"
    )
    res = subprocess.run([sys.executable, "-c", code, "keypoints", "convert",
                          str(inputs / "seq.json"), "-o", str(out)], capture_output=True,
                         text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "larger than this system allows" in lines[0]
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no temporary file left
    assert _files(inputs) == before


# ---- a read-only output folder ---------------------------------------------------------------
@pytest.fixture
def read_only_dir(tmp_path):
    if IS_ROOT:  # root writes through permission bits: a read-only file system
        with _tmpfs(tmp_path / "ro", "1m", read_only=True) as d:
            yield d
    else:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        try:
            yield d
        finally:
            d.chmod(0o755)


def test_read_only_output_folder(read_only_dir, inputs, model_dir, tmp_path):
    before = _files(inputs)
    manifest = inputs / "clips.csv"
    manifest.write_text("clip_id,video,keypoints\nc0,first.png,seq.json\n")
    before = _files(inputs)
    for argv in (_render(inputs, model_dir, read_only_dir / "clip.mp4"),
                 ["keypoints", "convert", str(inputs / "seq.json"), "-o",
                  str(read_only_dir / "seq.json")],
                 ["render-many", "--manifest", str(manifest), "--out", str(read_only_dir),
                  "--model", str(model_dir), "--steps", "1", "--device", "cpu", "-q"]):  # fmt: skip
        code, lines = _run(argv)
        assert code == 2 and len(lines) == 1, (argv[0], lines)
        assert ("read-only" in lines[0]) if IS_ROOT else ("permission denied" in lines[0])
        assert not list(read_only_dir.iterdir())
    assert _files(inputs) == before


# ---- an output that is an input --------------------------------------------------------------
def test_output_path_equal_to_an_input(inputs, model_dir, tmp_path):
    from fuzz_inputs import openpose_doc

    from signgen.video.images import encode_png

    # A video input named like the clip's output, in render-many's output folder.
    (inputs / "c0.png").write_bytes(encode_png(np.zeros((80, 64, 3), np.uint8)))
    (inputs / "clips.csv").write_text("clip_id,video,keypoints\nc0,c0.mp4,seq.json\n")
    from signgen.video import VideoWriter

    with VideoWriter(inputs / "c0.mp4", fps=25) as w:
        w.write(np.zeros((80, 64, 3), np.uint8))
    (inputs / "op").mkdir()  # an OpenPose folder, drawn as PNG frames into itself
    (inputs / "op" / "c_000000000000_keypoints.json").write_text(json.dumps(openpose_doc(0)))
    before = _files(inputs)
    cases = [
        (_render(inputs, model_dir, inputs / "first.png"), "--video"),
        (_render(inputs, model_dir, inputs / ".." / "in" / "seq.json"), "--keypoints"),
        (["keypoints", "convert", str(inputs / "seq.json"), "-o", str(inputs / "seq.json")],
         "INPUT"),
        (["pose", "draw", str(inputs / "op"), "-o", f"{inputs / 'op'}/"], "SEQ"),
        (["render-many", "--manifest", str(inputs / "clips.csv"), "--out", str(inputs),
          "--model", str(model_dir), "--steps", "1", "--device", "cpu", "-q"], "c0's video"),
    ]  # fmt: skip
    for argv, option in cases:
        code, lines = _run(argv)
        assert code == 2 and len(lines) == 1, (argv[:2], lines)
        assert "would be overwritten" in lines[0] and option in lines[0], lines[0]
    assert _files(inputs) == before  # untouched, and no ledger or job file written


def test_augment_into_its_own_input_tree(tmp_path):
    from pipelines.augment import AugmentConfig, run_augment_job

    world = tmp_path / "world"
    (world / "PHOENIX-2014-T").mkdir(parents=True)
    (world / "keypoints").mkdir()
    cfg = AugmentConfig(root=str(world / "PHOENIX-2014-T"), keypoints=str(world / "keypoints"),
                        out=str(world))  # fmt: skip
    with pytest.raises(InputError, match="would write into the input root"):
        run_augment_job(cfg, progress=False)
    assert sorted(p.name for p in world.iterdir()) == ["PHOENIX-2014-T", "keypoints"]


# ---- two jobs, one output folder ---------------------------------------------------------------
def test_second_job_on_the_same_output_folder_is_refused(inputs, model_dir, tmp_path):
    """The first job holds the folder's lock (pipelines/ledger.py) for its whole run; a
    second render-many or augment on that folder stops at once and writes nothing."""
    from pipelines.augment import AugmentConfig, run_augment_job
    from pipelines.ledger import Ledger

    out = tmp_path / "out"
    (inputs / "clips.csv").write_text("clip_id,video,keypoints\nc0,first.png,seq.json\n")
    with Ledger(out) as ledger:  # the running job
        ledger.done("x", output="x.mp4", frames=1, seed=0)
        files = _files(out)
        code, lines = _run(["render-many", "--manifest", str(inputs / "clips.csv"), "--out",
                            str(out), "--model", str(model_dir), "--steps", "1", "--device",
                            "cpu", "-q"])  # fmt: skip
        assert code == 2 and len(lines) == 1 and "another job is writing" in lines[0], lines
        cfg = AugmentConfig(root=str(tmp_path / "w" / "PHOENIX-2014-T"),
                            keypoints=str(tmp_path / "w" / "keypoints"), out=str(out))  # fmt: skip
        with pytest.raises(InputError, match="another job is writing"):
            run_augment_job(cfg, progress=False)
        assert _files(out) == files


def test_output_equal_to_an_input_in_the_other_writers(tmp_path):
    """prepare, keypoints extract, evaluate, train and convert: an output that is
    one of the command's inputs (or an input inside a folder the command replaces) is one
    line, exit 2, and nothing is written or changed."""
    d = tmp_path / "in"
    for sub in ("phoenix", "kp", "deepfashion", "pred", "gt", "prepared", "run/export", "conv"):
        (d / sub).mkdir(parents=True)
    (d / "clip.mp4").write_bytes(b"not read: the output check comes first")
    from signgen.video import VideoWriter

    for sub in ("pred", "gt"):  # without the check, evaluate would run and write its table
        with VideoWriter(d / sub / "c0.mp4", fps=25) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
    (d / "corpus.csv").write_text("name|video|start|end|speaker|orth|translation\nc0|||-1|s1||\n")
    (d / "kp.summary.json").write_text("{}")
    (d / "conv" / "last.ckpt").write_bytes(b"a checkpoint the conversion reads")
    cfg = Path(__file__).resolve().parents[1] / "configs" / "train" / "tiny_fpdm.yaml"
    before = _files(d)
    ev = ["evaluate", "--pred", str(d / "pred"), "--gt", str(d / "gt"), "--no-progress"]
    cases = [
        (["prepare", "phoenix", "--root", str(d / "phoenix"), "--keypoints", str(d / "kp"),
          "-o", str(d / "kp"), "-q"], "--keypoints"),
        (["prepare", "deepfashion", "--root", str(d / "deepfashion"), "-o",
          str(d / "deepfashion"), "--resolution", "256x176", "-q"], "--root"),
        (["keypoints", "extract", "--video", str(d / "clip.mp4"), "-o", str(d / "clip.mp4"),
          "--backend", "mediapipe", "--quiet"], "--video"),
        ([*ev, "--corpus", str(d / "corpus.csv"), "-o", str(d / "corpus.csv")], "--corpus"),
        # The summary written beside the table (kp.csv -> kp.summary.json) is an input.
        ([*ev, "--keypoints", str(d / "kp.summary.json"), "-o", str(d / "kp.csv")],
         "--keypoints"),
        (["train", "fpdm", "--config", str(cfg), f"data.prepared={d / 'prepared'}",
          f"output_dir={d / 'prepared'}", "-q"], "data.prepared"),
        # Stage 2 into stage 1's run folder: its export (the frozen IPF) would be replaced.
        (["train", "fpdm", "--config", str(cfg), f"data.prepared={d / 'prepared'}",
          f"output_dir={d / 'run'}", f"fpdm.ipf={d / 'run' / 'export'}", "--resume", "-q"],
         "fpdm.ipf"),
        (["convert", "fpdm-lightning", str(d / "conv" / "last.ckpt"), "-o", str(d / "conv"),
          "--overwrite"], "CKPT"),
    ]  # fmt: skip
    for argv, option in cases:
        code, lines = _run(argv)
        assert code == 2 and len(lines) == 1, (argv[:2], lines)
        assert option in lines[0] and (
            "would be overwritten" in lines[0] or "would be deleted" in lines[0]
        ), lines[0]
    assert _files(d) == before  # nothing changed, nothing written
    assert sorted(p.relative_to(d).as_posix() for p in d.rglob("*")) == sorted(
        [
            *before,
            "phoenix",
            "kp",
            "deepfashion",
            "pred",
            "gt",
            "prepared",
            "run",
            "run/export",
            "conv",
        ]
    )  # no new file or folder anywhere
