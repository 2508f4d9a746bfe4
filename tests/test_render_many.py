"""signgen render-many on a local Ray: outputs equal `signgen render`, resume, faults.

One Ray session (2 CPUs) serves the whole module; the killed-driver test joins it from a
subprocess through its address. Clips are 32x40, 4 frames, 2 denoising steps, tiny model.

Tolerance: render-many and `signgen render` run the same render_frames call per frame
and the same encoder settings. Float reductions depend on the torch thread count (2 vs 1
threads shifted every frame of a clip by ~0.5 grey level on average with the tiny random
model), so both sides run with 1 thread here; they also depend on the batch shape (a
batch mixing clips, of another size), so a rare pixel may round the other way (measured:
1 pixel in 3840 off by 1 grey level for a mixed batch of 8 vs 4);
raw frames are compared with a tolerance of 1 grey level (TOL). H.264 turns such a step
into different coding decisions for its block (measured: up to 6 grey levels on a few
pixels), so DECODED frames of two mp4s are compared statistically
(model_helpers.assert_same_video: at most 1% of the values may differ by more than 1 grey
level and the mean absolute difference must stay below 0.1; another seed, frame order or
source gives a mean difference of tens of grey levels). Runs whose batches have the same shapes give byte-identical files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from model_helpers import assert_same_video

from pipelines.ledger import Ledger, read_events, read_ledger
from pipelines.render_many import (
    EXIT_CLIPS_FAILED,
    JOB_FILE,
    ClusterSettings,
    FrameRenderer,
    Mp4Sink,
    RenderSettings,
    check_job_file,
    clip_seed,
    read_manifest,
    run_job,
)
from signgen.errors import InputError

TOL = 1  # grey levels, raw frames, see module docstring
STEPS = 2
W, H, FRAMES = 32, 40, 4


# ---- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    """6 synthetic clips (frame folders + signgen JSON keypoints) and a manifest."""
    from signgen.data.synthetic import SyntheticConfig, write_dataset

    root = tmp_path_factory.mktemp("world")
    write_dataset(SyntheticConfig(out=str(root), signers=2, videos=8, frames=FRAMES, width=W,
                                  height=H, seed=0), progress=False)  # fmt: skip
    frames = root / "PHOENIX-2014-T" / "features" / f"fullFrame-{W}x{H}px" / "train"
    names = sorted(p.name for p in frames.iterdir())
    assert len(names) == 6
    rows = [(n, f"PHOENIX-2014-T/features/fullFrame-{W}x{H}px/train/{n}",
             f"keypoints/json/train/{n}.json", 11 * i + 5) for i, n in enumerate(names)]  # fmt: skip
    manifest = root / "clips.csv"
    _write_manifest(manifest, rows)
    bad = root / "clips_with_bad.csv"
    _write_manifest(bad, [*rows, ("broken", "missing_video.mp4", rows[0][2], 1)])
    return SimpleNamespace(root=root, names=names, rows=rows, manifest=manifest, bad=bad)


def _write_manifest(path: Path, rows) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["clip_id", "video", "keypoints", "seed"])
        w.writerows(rows)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from signgen.models.config import load_model_config
    from signgen.sampling.pipeline import FPDMPipeline

    path = tmp_path_factory.mktemp("model") / "tiny"
    FPDMPipeline.from_config(load_model_config("tiny")).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024**2,
             logging_level="WARNING")  # fmt: skip
    try:
        yield SimpleNamespace(address=ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def crash_once_renderer(flag: Path) -> type[FrameRenderer]:
    """The model stage with a fault: the actor that finds ``flag`` deletes it and exits
    abruptly on its second batch (only one actor can win the unlink), as a crashed GPU
    worker would. Defined in a function so that Ray ships the class by value to its
    workers (a class of this test module could not be imported there)."""

    class CrashOnceRenderer(FrameRenderer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.calls = 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls >= 2:
                try:
                    os.unlink(flag)  # exactly one actor wins this
                except FileNotFoundError:
                    pass
                else:
                    os._exit(1)
            return super().__call__(batch)

    return CrashOnceRenderer


@pytest.fixture(scope="module")
def reference(world, model_dir, tmp_path_factory) -> dict[str, Path]:
    """Each clip rendered by single-process `signgen render` with its manifest seed."""
    import torch

    from pipelines.app import main

    out = tmp_path_factory.mktemp("reference")
    refs = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the 2 CPU actors of first_run (see the module docstring)
    for clip_id, video, keypoints, seed in world.rows:
        refs[clip_id] = out / f"{clip_id}.mp4"
        # --batch-size 3 as first_run's: a clip's 4 frames are computed in batches of the
        # same shapes (3 + 1) on both sides, so the frames, and the files, are identical.
        argv = ["render", "--video", str(world.root / video), "--keypoints",
                str(world.root / keypoints), "--model", str(model_dir), "--steps", str(STEPS),
                "--seed", str(seed), "--device", "cpu", "--batch-size", "3",
                "-o", str(refs[clip_id])]  # fmt: skip
        assert main(argv) == 0
    torch.set_num_threads(threads)
    return refs


@pytest.fixture(scope="module")
def first_run(ray_session, world, model_dir, tmp_path_factory, reference):
    """render-many through the CLI: 6 good clips + 1 with a missing video, 2 CPU workers."""
    from pipelines.app import main

    out = tmp_path_factory.mktemp("run1")
    argv = ["render-many", "--manifest", str(world.bad), "--out", str(out), "--model",
            str(model_dir), "--workers", "2", "--batch-size", "3", "--steps", str(STEPS),
            "--device", "cpu", "-q"]  # fmt: skip
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    return SimpleNamespace(out=out, code=code, stderr=err.getvalue())


def _done_events(out: Path) -> list[dict]:
    return [e for e in read_events(out / "ledger.jsonl") if e["status"] == "done"]


def _frames(path: Path) -> np.ndarray:
    from signgen.video import read_frames

    return read_frames(path).astype(np.int16)  # (T, H, W, 3)


# ---- the job ---------------------------------------------------------------------------------
def test_six_clips_match_single_process_render(first_run, world, reference):
    from signgen.video import probe

    for clip_id in world.names:
        out = first_run.out / f"{clip_id}.mp4"
        assert out.is_file(), clip_id
        info = probe(out)
        assert (info.width, info.height, info.num_frames) == (W, H, FRAMES)
        assert_same_video(out, reference[clip_id])
    # Different seeds give different clips (the comparison above is not vacuous).
    a, b = (_frames(first_run.out / f"{n}.mp4") for n in world.names[:2])
    assert np.abs(a - b).max() > 10
    done = _done_events(first_run.out)
    assert sorted(e["clip_id"] for e in done) == sorted(world.names)
    assert {e["clip_id"]: e["seed"] for e in done} == {r[0]: r[3] for r in world.rows}
    assert not (first_run.out / ".spool").exists()
    assert not list(first_run.out.glob(".*.part*"))


def test_bad_clip_is_reported_and_others_complete(first_run, world):
    assert first_run.code == EXIT_CLIPS_FAILED
    entries = read_ledger(first_run.out / "ledger.jsonl")
    assert entries["broken"].status == "failed"
    assert "missing_video.mp4" in entries["broken"].record["reason"]
    assert not (first_run.out / "broken.mp4").exists()
    assert "FAILED broken: " in first_run.stderr and "missing_video.mp4" in first_run.stderr
    assert all(entries[n].status == "done" for n in world.names)


def test_rerun_skips_finished_clips(first_run, world, model_dir):
    mtimes = {n: (first_run.out / f"{n}.mp4").stat().st_mtime_ns for n in world.names}
    specs = read_manifest(world.manifest)
    render = RenderSettings(model=str(model_dir), steps=STEPS)
    result = run_job(specs, Mp4Sink(first_run.out), first_run.out, render,
                     ClusterSettings(workers=1, device="cpu"), progress=False)  # fmt: skip
    assert result.skipped == 6 and result.done == [] and result.failed == {}
    assert {n: (first_run.out / f"{n}.mp4").stat().st_mtime_ns for n in world.names} == mtimes


def test_killed_actor_is_retried_with_identical_outputs(ray_session, first_run, world, model_dir,
                                                        tmp_path):  # fmt: skip
    flag = tmp_path / "kill_actor"
    flag.write_text("kill one model actor on its second batch\n")
    specs = read_manifest(world.manifest)
    render = RenderSettings(model=str(model_dir), steps=STEPS)
    # 12 batches on 1 actor, 1 torch thread as in first_run (see the module docstring).
    cluster = ClusterSettings(workers=1, batch_size=2, threads_per_worker=1, device="cpu")
    out = tmp_path / "out"
    result = run_job(specs, Mp4Sink(out), out, render, cluster, progress=False,
                     renderer=crash_once_renderer(flag))  # fmt: skip
    assert not flag.exists(), "no actor reached its second batch"
    assert sorted(result.done) == sorted(world.names) and not result.failed
    for n in world.names:
        assert_same_video(out / f"{n}.mp4", first_run.out / f"{n}.mp4")


def test_killed_driver_resumes_without_rerendering(ray_session, world, model_dir, tmp_path):
    out = tmp_path / "out"
    steps = 6  # slow enough that the driver can be killed between two clips
    cmd = [sys.executable, "-m", "pipelines.app", "render-many", "--manifest", str(world.manifest),
           "--out", str(out), "--model", str(model_dir), "--workers", "1", "--batch-size", "1",
           "--steps", str(steps), "--device", "cpu", "--address", ray_session.address, "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ledger = out / "ledger.jsonl"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ledger.exists() and _done_events(out):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"driver ended early: {proc.stderr.read().decode()[-2000:]}"
        assert _done_events(out), "no clip finished before the deadline"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = {e["clip_id"] for e in _done_events(out)}
    assert 1 <= len(done_before) < 6, "the job finished before it could be killed"
    mtimes = {n: (out / f"{n}.mp4").stat().st_mtime_ns for n in done_before}

    specs = read_manifest(world.manifest)
    render = RenderSettings(model=str(model_dir), steps=steps)
    result = run_job(specs, Mp4Sink(out), out, render, ClusterSettings(workers=1, device="cpu"),
                     progress=False)  # fmt: skip
    assert result.skipped == len(done_before)
    assert set(result.done) == set(world.names) - done_before
    done = [e["clip_id"] for e in _done_events(out)]
    assert sorted(done) == sorted(world.names), "every clip exactly once in the ledger"
    assert {n: (out / f"{n}.mp4").stat().st_mtime_ns for n in done_before} == mtimes
    assert sorted(p.name for p in out.glob("*.mp4")) == sorted(f"{n}.mp4" for n in world.names)
    assert not list(out.glob(".*.part*")) and not (out / ".spool").exists()
    for n in world.names:
        assert len(_frames(out / f"{n}.mp4")) == FRAMES


def test_full_disk_mid_job_keeps_finished_clips_and_drops_the_staging(ray_session, world,
                                                                      model_dir, tmp_path):  # fmt: skip
    """The disk fills up during a job (staging a frame fails after 2 clips were committed):
    the job ends with that error, the finished clips stay (in the ledger, complete), and
    no staged frame or temporary video is left; the next run renders the rest."""
    import errno

    class FillingSink(Mp4Sink):
        def put(self, clip_id, index, frame):
            if len(list(self.dir.glob("*.mp4"))) >= 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(self.spool))
            super().put(clip_id, index, frame)

    specs = read_manifest(world.manifest)
    render = RenderSettings(model=str(model_dir), steps=STEPS)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        run_job(specs, FillingSink(out), out, render, ClusterSettings(workers=1, device="cpu"),
                progress=False)  # fmt: skip
    assert not (out / ".spool").exists() and not list(out.glob(".*.part*"))
    done = [e["clip_id"] for e in _done_events(out)]
    assert sorted(p.stem for p in out.glob("*.mp4")) == sorted(done) and len(done) == 2
    for cid in done:
        assert len(_frames(out / f"{cid}.mp4")) == FRAMES


# ---- temporal jobs ---------------------------------------------------------------------------
TEMPORAL = ["--temporal", "--window", "3", "--overlap", "1"]  # 2 windows per 4-frame clip


@pytest.fixture(scope="module")
def motion_model_dir(model_dir, tmp_path_factory) -> Path:
    """The tiny model plus a motion module whose output projections are random: a
    zero-initialised module would leave the per-frame frames (test_temporal_render), so a
    job that ignored --temporal would pass the comparisons below."""
    import shutil

    import torch

    from signgen.models.motion import MotionModuleConfig, build_motion_module, save_motion_module
    from signgen.sampling.pipeline import FPDMPipeline

    path = tmp_path_factory.mktemp("motion") / "tiny"
    shutil.copytree(model_dir, path)
    unet = FPDMPipeline.from_pretrained(path).unet
    config = MotionModuleConfig(num_attention_heads=4, norm_num_groups=8, max_frames=16)
    motion = build_motion_module(unet, config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in motion.named_parameters():
            if "proj_out" in name:  # the zero-initialised output projections
                param.copy_(torch.randn(param.shape, generator=g) * 0.2)
    save_motion_module(motion, path)
    return path


def test_temporal_model_stage_renders_clips_like_render_temporal(world, motion_model_dir):
    """ClipRenderer (no Ray): a batch of two clips and an error row gives, frame for frame,
    what FPDMPipeline.render gives per clip with the same temporal options (within TOL:
    windows of two clips share model calls), and not the per-frame frames."""
    from pipelines.render_many import ClipRenderer, read_clip
    from signgen.keypoints import load_keypoints
    from signgen.sampling.options import RenderOptions
    from signgen.sampling.pipeline import FPDMPipeline
    from signgen.video import read_first_frame

    specs = read_manifest(world.bad)
    rows = [r for s in (specs[0], specs[1], specs[-1]) for r in read_clip(vars(s), temporal=True)]
    assert len(rows) == 3 and rows[-1]["error"]  # one row per clip
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    for key in ("points", "source_points"):
        batch[key] = np.stack([r[key] for r in rows])  # (b, 133, 3)
    opts = dict(steps=STEPS, temporal=True, window=3, overlap=1, batch_size=6)
    stage = ClipRenderer(RenderSettings(model=str(motion_model_dir), **opts), "cpu")
    outs = list(stage(batch))
    out = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    pipe = FPDMPipeline.from_pretrained(motion_model_dir)
    for spec in specs[:2]:
        first, kp = read_first_frame(spec.video), load_keypoints(spec.keypoints)
        want = pipe(first, kp, RenderOptions(seed=spec.seed, **opts))
        per_frame = pipe(first, kp, RenderOptions(seed=spec.seed, steps=STEPS, batch_size=6))
        mine = np.flatnonzero(out["clip_id"] == spec.clip_id)
        assert sorted(out["frame_index"][mine]) == list(range(FRAMES))
        for j in mine:
            got = np.frombuffer(out["frame"][j], np.uint8).reshape(H, W, 3).astype(np.int16)
            t = int(out["frame_index"][j])
            assert np.abs(got - want[t]).max() <= TOL
            assert np.abs(got - per_frame[t]).max() > 10  # the motion module acted
    bad = np.flatnonzero(out["clip_id"] == "broken")
    assert len(bad) == 1 and out["frame"][bad[0]] == b"" and out["error"][bad[0]]


def test_temporal_job_matches_render_temporal_and_resumes_only_with_its_options(
    ray_session, world, motion_model_dir, reference, tmp_path, capsys
):  # fmt: skip
    """render-many --temporal on a local Ray (2 actors, clips batched 3 per call) writes
    what `signgen render --temporal` writes per clip, not the per-frame videos; job.json
    records the temporal options and a resume with other ones is refused in one line."""
    import torch

    from pipelines.app import main

    clips = world.rows[:3]
    manifest = tmp_path / "clips.csv"
    _write_manifest(manifest, [(c, str(world.root / v), str(world.root / k), seed)
                               for c, v, k, seed in clips])  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CPU actors (see the module docstring)
    try:
        for clip_id, video, keypoints, seed in clips:
            argv = ["render", "--video", str(world.root / video), "--keypoints",
                    str(world.root / keypoints), "--model", str(motion_model_dir), "--steps",
                    str(STEPS), "--seed", str(seed), "--device", "cpu", "--batch-size", "3",
                    *TEMPORAL, "-o", str(tmp_path / f"ref_{clip_id}.mp4")]  # fmt: skip
            assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "out"
    job = ["render-many", "--manifest", str(manifest), "--out", str(out), "--model",
           str(motion_model_dir), "--workers", "2", "--batch-size", "3", "--steps", str(STEPS),
           "--device", "cpu", "--address", ray_session.address, "-q"]  # fmt: skip
    assert main([*job, *TEMPORAL]) == 0
    for clip_id, *_ in clips:
        assert_same_video(out / f"{clip_id}.mp4", tmp_path / f"ref_{clip_id}.mp4")
        temporal, per_frame = _frames(out / f"{clip_id}.mp4"), _frames(reference[clip_id])
        assert np.abs(temporal - per_frame).mean() > 5  # --temporal was not ignored
    recorded = json.loads((out / JOB_FILE).read_text())["render"]
    assert (recorded["temporal"], recorded["window"], recorded["overlap"]) == (True, 3, 1)
    capsys.readouterr()
    assert main([*job, "--temporal", "--window", "4", "--overlap", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "window: 3 -> 4" in err
    assert main(job) == 2  # the same folder without --temporal
    assert "temporal: True -> None" in capsys.readouterr().err
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    assert main([*job, *TEMPORAL]) == 0  # the same options: nothing to do
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == mtimes


@pytest.mark.parametrize(("model", "extra", "needle"), [
    ("model_dir", [], "needs a model with a motion module"),
    ("motion_model_dir", ["--window", "17"], "longer than this motion module's 16 frames"),
])  # fmt: skip
def test_temporal_job_the_model_cannot_render_is_one_line(request, tmp_path, capsys, model,
                                                         extra, needle):  # fmt: skip
    """Checked on the driver, before Ray starts (the actors would fail one by one)."""
    from pipelines.app import main

    (tmp_path / "m.csv").write_text("clip_id,video,keypoints\na,v.mp4,k.json\n")
    rc = main(["render-many", "--manifest", str(tmp_path / "m.csv"), "--out",
               str(tmp_path / "o"), "--model", str(request.getfixturevalue(model)),
               "--temporal", *extra])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "o" / "ledger.jsonl").exists()


# ---- pieces without Ray ----------------------------------------------------------------------
def test_manifest_paths_seeds_and_errors(tmp_path):
    (tmp_path / "m.csv").write_text("clip_id,video,keypoints,sample,seed\na,v.mp4,k.json,,\n"
                                    "b,/abs/v.mp4,k.pkl,S1,7\n")  # fmt: skip
    a, b = read_manifest(tmp_path / "m.csv", base_seed=3)
    assert a.video == str(tmp_path / "v.mp4") and a.sample is None
    assert a.seed == clip_seed(3, "a") != clip_seed(4, "a")
    assert (b.video, b.sample, b.seed) == ("/abs/v.mp4", "S1", 7)
    bad = {
        "clip_id,video,keypoint\na,v,k\n": "missing keypoints",
        "clip_id,video,keypoints,colour\na,v,k,red\n": "unknown colour",
        "clip_id,video,keypoints\na,v,k\na,v2,k\n": "already on line 2",
        "clip_id,video,keypoints,seed\na,v,k,x\n": "seed must be an integer",
        "clip_id,video,keypoints\n../a,v,k\n": "not a safe file name",
        "clip_id,video,keypoints\n": "no clips",
    }
    for text, message in bad.items():
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(InputError, match=message):
            read_manifest(tmp_path / "bad.csv")


def test_manifest_retarget_columns(tmp_path):
    (tmp_path / "m.csv").write_text(
        "clip_id,video,keypoints,retarget,source_keypoints\n"
        "a,v.png,k.json,1,ref.json\nb,v.png,k.json,0,ref.json\nc,v.png,k.json,,\n"
        "d,v.png,k.json,True,\n"
    )
    a, b, c, d = read_manifest(tmp_path / "m.csv")
    assert (a.retarget, a.source_keypoints) == (True, str(tmp_path / "ref.json"))
    assert (b.retarget, b.source_keypoints) == (False, str(tmp_path / "ref.json"))
    assert (c.retarget, c.source_keypoints) == (False, None)
    assert d.retarget and d.source_keypoints is None
    (tmp_path / "old.csv").write_text("clip_id,video,keypoints\na,v.png,k.json\n")
    assert not read_manifest(tmp_path / "old.csv")[0].retarget  # absent column: off
    (tmp_path / "bad.csv").write_text("clip_id,video,keypoints,retarget\na,v,k,yes\n")
    with pytest.raises(InputError, match=r"bad.csv:2: retarget must be 1, 0 or empty"):
        read_manifest(tmp_path / "bad.csv")


def _clip(world, i: int, **kw) -> dict:
    from dataclasses import asdict

    from pipelines.render_many import ClipSpec

    name, video, keypoints, seed = world.rows[i]
    spec = ClipSpec(name, str(world.root / video), str(world.root / keypoints), None, seed)
    return {**asdict(spec), **kw}


def test_read_stage_retargets_as_render_does(world):
    """retarget=1 rows carry the keypoints `signgen render --retarget --source-keypoints`
    renders (the driver's on the first frame's skeleton) and that skeleton as the MCLD
    source points; the fit goes to the ledger. retarget=0 rows carry the keypoints as they
    are, with source_keypoints only as the source points."""
    from pipelines.read_stage import read_clip
    from signgen.keypoints import load_keypoints
    from signgen.keypoints.retarget import retarget_sequence

    drive_file, ref_file = (str(world.root / world.rows[i][2]) for i in (0, 5))
    drive, ref = load_keypoints(drive_file), load_keypoints(ref_file)
    spec = _clip(world, 5, keypoints=drive_file, source_keypoints=ref_file)
    want = retarget_sequence(drive, ref.points[0], ref.size).points
    assert np.abs(want[..., :2] - drive.points[..., :2]).max() > 1.0  # another signer's body
    rows = read_clip({**spec, "retarget": True})
    assert [r["error"] for r in rows] == [""] * FRAMES
    np.testing.assert_allclose(np.stack([r["points"] for r in rows]), want, atol=1e-5)
    assert all(np.array_equal(r["source_points"], ref.points[0]) for r in rows)
    fit = json.loads(rows[0]["retarget"])
    assert fit["reference"] == "source keypoints" and fit["warnings"] == [] and fit["scale"] > 0
    raw = read_clip({**spec, "retarget": False})
    np.testing.assert_array_equal(np.stack([r["points"] for r in raw]), drive.points)
    assert all(np.array_equal(r["source_points"], ref.points[0]) for r in raw)
    assert raw[0]["retarget"] == ""


def test_read_stage_reference_warning_and_error_rows(world, tmp_path, monkeypatch):
    """A reference lacking a hand: the clip renders and its ledger record keeps the warning.
    No reference given and no signer in the first frame: one error row (the clip fails,
    not the job), naming the fix."""
    from PIL import Image

    from pipelines.read_stage import read_clip
    from signgen.keypoints import KeypointSequence, load_keypoints
    from signgen.keypoints import layout as L

    ref = load_keypoints(world.root / world.rows[5][2])
    pts = ref.points.copy()
    pts[:, L.LEFT_HAND.start : L.LEFT_HAND.stop, 2] = 0
    KeypointSequence(pts, *ref.size, ref.fps).save(tmp_path / "no_hand.json")
    rows = read_clip(
        _clip(world, 5, retarget=True, source_keypoints=str(tmp_path / "no_hand.json"))
    )
    assert rows[0]["error"] == "" and len(rows) == FRAMES
    (warning,) = json.loads(rows[0]["retarget"])["warnings"]
    assert "left hand" in warning

    pytest.importorskip("mediapipe")
    monkeypatch.delenv("SIGNGEN_WEIGHTS_DIR", raising=False)  # auto = mediapipe
    Image.fromarray(np.full((H, W, 3), 127, np.uint8)).save(tmp_path / "nobody.png")
    (row,) = read_clip(_clip(world, 0, video=str(tmp_path / "nobody.png"), retarget=True))
    assert "no signer found" in row["error"] and "--source-keypoints" in row["error"]
    assert "\n" not in row["error"]


def test_job_file_records_retarget_settings(tmp_path):
    check_job_file(tmp_path, RenderSettings(steps=20))  # a first job retargets nothing
    check_job_file(tmp_path, RenderSettings(steps=20), {"min_score": 0.3})  # added later
    check_job_file(tmp_path, RenderSettings(steps=20), {"min_score": 0.3,
                                                         "pose_backend": "mediapipe"})  # fmt: skip
    job = json.loads((tmp_path / "job.json").read_text())
    assert job["retarget"] == {"min_score": 0.3, "pose_backend": "mediapipe"}
    with pytest.raises(InputError, match="retarget pose_backend: 'mediapipe' -> 'hrnet'"):
        check_job_file(tmp_path, RenderSettings(steps=20), {"pose_backend": "hrnet"})


def test_clip_seed_is_stable_and_distinct():
    seeds = {clip_seed(0, f"clip{i}") for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s < 2**31 for s in seeds)
    # sha256-based: fixed across processes and Python hash randomisation.
    out = subprocess.run([sys.executable, "-c", "from pipelines.render_many import clip_seed;"
                          "print(clip_seed(0, 'clip7'))"], capture_output=True, text=True)  # fmt: skip
    assert int(out.stdout) == clip_seed(0, "clip7")


def test_ledger_torn_line_lock_and_last_event_wins(tmp_path):
    with Ledger(tmp_path) as ledger:
        ledger.fail("a", "bad video")
        ledger.done("a", output="a.mp4")
        ledger.done("b", output="b.mp4")
        with pytest.raises(InputError, match="another job"):
            Ledger(tmp_path).open()
    with open(tmp_path / "ledger.jsonl", "a") as fh:
        fh.write('{"clip_id": "c", "stat')  # a crash inside write()
    with Ledger(tmp_path) as ledger:
        assert ledger.is_done("a") and ledger.is_done("b") and not ledger.is_done("c")
        assert not ledger.is_done("a", output=tmp_path / "a.mp4")  # output deleted: redo
        ledger.done("c", output="c.mp4")
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert [json.loads(line)["clip_id"] for line in lines] == ["a", "a", "b", "c"]


def test_job_file_refuses_other_settings(tmp_path):
    check_job_file(tmp_path, RenderSettings(steps=20))
    check_job_file(tmp_path, RenderSettings(steps=20))
    with pytest.raises(InputError, match="steps: 20 -> 10"):
        check_job_file(tmp_path, RenderSettings(steps=10))


def test_job_file_records_temporal_options(tmp_path):
    """Per-frame jobs keep their job files (no temporal keys); a temporal job records its
    options, and any change of them, or dropping --temporal, is refused."""
    check_job_file(tmp_path, RenderSettings(steps=20))
    assert "temporal" not in json.loads((tmp_path / JOB_FILE).read_text())["render"]
    with pytest.raises(InputError, match="temporal: None -> True"):
        check_job_file(tmp_path, RenderSettings(steps=20, temporal=True))
    job = tmp_path / "temporal"
    job.mkdir()
    settings = RenderSettings(steps=20, temporal=True, window=8, taper="linear")
    check_job_file(job, settings)
    check_job_file(job, settings)
    with pytest.raises(InputError, match="taper: 'linear' -> 'uniform'"):
        check_job_file(job, settings.replace(taper="uniform"))
    with pytest.raises(InputError, match="overlap: None -> 2"):
        check_job_file(job, settings.replace(overlap=2))
    with pytest.raises(InputError, match="window: 8 -> None"):
        check_job_file(job, RenderSettings(steps=20))


def test_cluster_settings_errors():
    for kwargs, message in [({"workers": 0}, "--workers"), ({"device": "cuda"}, "gpus-per-worker"),
                            ({"device": "cpu", "gpus_per_worker": 1}, "reserves GPUs"),
                            ({"batch_size": 0}, "--batch-size")]:  # fmt: skip
        with pytest.raises(InputError, match=message):
            ClusterSettings(**kwargs).validate()
    assert ClusterSettings(gpus_per_worker=1).worker_device == "cuda"
    assert ClusterSettings().worker_device == "cpu"


def test_cli_help_and_bad_manifest(tmp_path, capsys):
    from pipelines.app import main

    with pytest.raises(SystemExit):
        main(["render-many", "--help"])
    assert "ledger" in capsys.readouterr().out
    assert main(["render-many", "--manifest", str(tmp_path / "none.csv"), "--out",
                 str(tmp_path / "o")]) == 2  # fmt: skip
    assert "manifest not found" in capsys.readouterr().err


def test_model_stage_mixes_clips_in_a_batch_like_render(world, model_dir):
    """FrameRenderer (no Ray): one batch holding frames of two clips in shuffled order and an
    error row gives, frame for frame, what FPDMPipeline.render gives per clip (within TOL:
    a batch of another shape may round a rare pixel the other way)."""
    from pipelines.read_stage import read_clip
    from pipelines.render_many import FrameRenderer
    from signgen.keypoints import load_keypoints
    from signgen.sampling.pipeline import FPDMPipeline
    from signgen.video import read_first_frame

    specs = read_manifest(world.bad)
    rows = [r for s in (specs[0], specs[1], specs[-1]) for r in read_clip(vars(s))]
    assert rows[-1]["error"] and rows[-1]["frame_index"] == -1  # the missing video
    order = np.random.default_rng(0).permutation(len(rows))
    batch = {k: np.array([rows[i][k] for i in order], dtype=object) for k in rows[0]}
    for key in ("points", "source_points"):
        batch[key] = np.stack([rows[i][key] for i in order])  # (b, 133, 3)
    stage = FrameRenderer(RenderSettings(model=str(model_dir), steps=STEPS, guidance=(2.0, 2.0)),
                          "cpu")  # fmt: skip
    out = stage(batch)
    assert len(stage.sources) == 2  # one encoded source per clip
    pipe = FPDMPipeline.from_pretrained(model_dir)
    for spec in specs[:2]:
        first = read_first_frame(spec.video)
        want = pipe(first, load_keypoints(spec.keypoints), steps=STEPS, guidance=(2.0, 2.0),
                    seed=spec.seed, batch_size=FRAMES)  # fmt: skip
        for j in np.flatnonzero(out["clip_id"] == spec.clip_id):
            got = np.frombuffer(out["frame"][j], np.uint8).reshape(H, W, 3)
            diff = np.abs(got.astype(np.int16) - want[int(out["frame_index"][j])])
            assert diff.max() <= TOL  # float sums differ with batch shape: rare 1-level steps
    bad = np.flatnonzero(out["clip_id"] == "broken")
    assert len(bad) == 1 and out["frame"][bad[0]] == b"" and out["error"][bad[0]]


def test_steady_throughput_window():
    from pipelines.render_many import JobResult

    r = JobResult(frames=10)
    assert r.steady_fps is None
    for at in (5.0, 3.0, 3.0, 7.0, 4.0):  # rows arrive in any order; 2 frames in the first batch
        r.note_batch_done(at)
    assert r.model_window == [3.0, 7.0, 2]
    assert r.steady_fps == pytest.approx((10 - 2) / 4.0)
