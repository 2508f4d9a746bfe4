"""Training commands on a tiny synthetic world: one step per stage, resume, Ray Train DDP."""

from __future__ import annotations

import csv
import math
import shutil
import socket
from pathlib import Path

import pytest
import torch
from model_helpers import tiny_world
from safetensors.torch import load_file

from signgen.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return tiny_world(tmp_path_factory.mktemp("world"), 4, 6, 6, 8)


def _train(stage: str, prepared: Path, out: Path, *extra: str) -> int:
    return main(["train", stage, "--config", str(CONFIGS / f"tiny_{stage}.yaml"), "-q",
                 f"data.prepared={prepared}", f"output_dir={out}", *extra])  # fmt: skip


def _initial_weights(stage: str, prepared: Path, out: Path) -> dict[str, torch.Tensor]:
    from signgen.train.config import load_train_config
    from signgen.train.loop import trainable_state
    from signgen.train.stages import task_factory

    cfg = load_train_config(CONFIGS / f"tiny_{stage}.yaml",
                            [f"data.prepared={prepared}", f"output_dir={out}"])  # fmt: skip
    return trainable_state(task_factory(stage)(cfg, torch.device("cpu")).module)


def _check_one_run(stage: str, prepared: Path, out: Path) -> None:
    rows = list(csv.DictReader((out / "logs" / "train.csv").open()))
    assert rows and all(math.isfinite(float(r["loss"])) for r in rows)
    ckpt = out / "checkpoints" / "step-0000001"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "state.json").is_file()
    state = torch.load(ckpt / "training_state.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng"} <= set(state)
    after = load_file(str(ckpt / "model.safetensors"))
    before = _initial_weights(stage, prepared, out)
    assert set(after) == set(before)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no trainable weight changed after one step"


def test_train_vae_one_step(prepared: Path, tmp_path: Path):
    out = tmp_path / "vae"
    assert _train("vae", prepared, out, "train.max_steps=1") == 0
    _check_one_run("vae", prepared, out)
    assert (out / "export" / "vae" / "config.json").is_file()


def test_train_ipf_one_step_with_retrieval_eval(prepared: Path, tmp_path: Path):
    out = tmp_path / "ipf"
    assert _train("ipf", prepared, out, "train.max_steps=1", "ipf.loss=baseline") == 0
    _check_one_run("ipf", prepared, out)
    ev = list(csv.DictReader((out / "logs" / "eval.csv").open()))[-1]
    assert 0.0 <= float(ev["R_at_1"]) <= float(ev["R_at_5"]) <= 1.0
    assert float(ev["avg_rank"]) >= 1.0
    from signgen.models.ipf import IPFModel

    IPFModel.from_pretrained(out / "export" / "ipf")


def test_train_fpdm_one_step_exports_pipeline(prepared: Path, tmp_path: Path):
    out = tmp_path / "fpdm"
    assert (
        _train("fpdm", prepared, out, "train.max_steps=1", "train.gradient_checkpointing=true") == 0
    )
    _check_one_run("fpdm", prepared, out)
    assert list((out / "samples").glob("grid-step*.png"))
    from signgen.sampling.pipeline import FPDMPipeline

    pipe = FPDMPipeline.from_pretrained(out / "export")
    after = load_file(str(out / "checkpoints" / "step-0000001" / "model.safetensors"))
    key = next(k for k in after if k.startswith("denoiser.pose_encoder."))
    exported = pipe.pose_encoder.state_dict()[key.removeprefix("denoiser.pose_encoder.")]
    assert torch.equal(exported, after[key])


def test_init_from_an_exported_model(prepared: Path, tmp_path: Path):
    from signgen.errors import InputError
    from signgen.sampling.pipeline import FPDMPipeline
    from signgen.train.config import load_train_config
    from signgen.train.stages import task_factory

    out = tmp_path / "first"
    assert _train("fpdm", prepared, out, "train.max_steps=1") == 0
    exported = FPDMPipeline.from_pretrained(out / "export").denoiser

    def task(*extra: str):
        cfg = load_train_config(CONFIGS / "tiny_fpdm.yaml", [
            f"data.prepared={prepared}", f"output_dir={tmp_path / 'second'}", "seed=7", *extra])  # fmt: skip
        return task_factory("fpdm")(cfg, torch.device("cpu")).module.denoiser

    fresh, started = task(), task(f"fpdm.init_from={out / 'export'}")
    for name in ("unet", "pose_encoder", "source_projector", "fusion_mlp"):
        want = getattr(exported, name).state_dict()
        got = getattr(started, name).state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want), name
    # ... and a fresh run (other seed) does differ, so the comparison above can fail.
    w = fresh.unet.state_dict()
    assert any(not torch.equal(w[k], exported.unet.state_dict()[k]) for k in w)
    with pytest.raises(InputError, match="does not match"):
        task(f"fpdm.init_from={out / 'export'}", "model.unet.config.block_out_channels=[32,32]")


def test_bad_override_is_a_user_error(prepared: Path, tmp_path: Path, capsys):
    rc = _train("ipf", prepared, tmp_path / "x", "train.batchsize=3")
    assert rc == 2
    assert "batchsize" in capsys.readouterr().err


def test_a_fresh_run_never_mixes_with_an_earlier_one(prepared: Path, tmp_path: Path, capsys):
    out = tmp_path / "ipf"
    assert _train("ipf", prepared, out, "train.max_steps=1") == 0
    (out / "keep.txt").write_text("not the run's")
    assert _train("ipf", prepared, out, "train.max_steps=1") == 2
    assert "already holds a run" in capsys.readouterr().err
    rows = list(csv.DictReader((out / "logs" / "train.csv").open()))
    assert rows
    assert _train("ipf", prepared, out, "train.max_steps=1", "--overwrite") == 0
    again = list(csv.DictReader((out / "logs" / "train.csv").open()))
    assert len(again) == len(rows)  # the log started anew instead of appending
    assert (out / "keep.txt").is_file()  # only the run's own parts are removed
    assert _train("ipf", prepared, out, "train.max_steps=1", "--resume", "--overwrite") == 2


def test_overrides_may_surround_options(prepared: Path, tmp_path: Path, capsys):
    """`a=1 -q b=2`: the overrides after the option are still overrides (here a bad one,
    so the run stops at config validation, naming it)."""
    rc = main(["train", "ipf", "--config", str(CONFIGS / "tiny_ipf.yaml"),
               f"data.prepared={prepared}", "-q", f"output_dir={tmp_path / 'x'}",
               "train.batchsize=3"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "batchsize" in err and "unrecognized arguments" not in err
    with pytest.raises(SystemExit) as exc:
        main(["train", "ipf", "--config", str(CONFIGS / "tiny_ipf.yaml"), "-q", "--nope"])
    assert exc.value.code == 2


def test_resume_reaches_the_same_weights(prepared: Path, tmp_path: Path):
    """Run 4 steps; run 2 steps, stop as if killed, resume to 4; compare (FPDM + EMA)."""
    from signgen.train.config import load_train_config
    from signgen.train.loop import run_training
    from signgen.train.stages import task_factory

    def cfg(out: Path):
        return load_train_config(
            CONFIGS / "tiny_fpdm.yaml",
            [f"data.prepared={prepared}", f"output_dir={out}", "train.max_steps=4",
             "train.checkpoint_every=2", "train.ema.enabled=true", "train.grad_accum=2",
             "optim.warmup_epochs=0.5"],
        )  # fmt: skip

    full = tmp_path / "full"
    run_training(cfg(full), task_factory("fpdm"), progress=False)
    part = tmp_path / "part"
    killed = run_training(cfg(part), task_factory("fpdm"), stop_after=2, progress=False)
    assert killed["step"] == 2 and not (part / "export").exists()
    resumed = run_training(cfg(part), task_factory("fpdm"), resume=True, progress=False)
    assert resumed["step"] == 4
    a = load_file(str(full / "checkpoints" / "step-0000004" / "model.safetensors"))
    b = load_file(str(part / "checkpoints" / "step-0000004" / "model.safetensors"))
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    ea = torch.load(full / "checkpoints" / "step-0000004" / "training_state.pt", weights_only=True)
    eb = torch.load(part / "checkpoints" / "step-0000004" / "training_state.pt", weights_only=True)
    for x, y in zip(ea["ema"]["shadow_params"], eb["ema"]["shadow_params"], strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    # and the run without a kill differs from one with a different seed (the test can fail)
    other = tmp_path / "other"
    c = cfg(other)
    c.seed = 1
    run_training(c, task_factory("fpdm"), progress=False)
    o = load_file(str(other / "checkpoints" / "step-0000004" / "model.safetensors"))
    assert any(not torch.allclose(a[k], o[k]) for k in a)


def test_ray_train_two_workers_hold_identical_weights(prepared: Path, tmp_path: Path, monkeypatch):
    """`signgen train ipf --workers 2` (the console script, in-process) on a machine with
    Ray leftovers: a dead `ray start` head's address in Ray's current-cluster file and in
    RAY_ADDRESS. The job starts its own local Ray anyway (plain ray.init() would try to
    join the dead head and refuse num_cpus), and both DDP ranks end with the same weights."""
    import tempfile

    from pipelines.app import main as app_main

    ray_tmp = Path(tempfile.mkdtemp(prefix="sgray", dir="/tmp"))  # short: Ray socket paths
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # nobody listens there any more
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(dead)
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.setenv("RAY_ADDRESS", dead)
    out = tmp_path / "ray"
    try:
        rc = app_main(["train", "ipf", "--config", str(CONFIGS / "tiny_ipf.yaml"), "-q",
                       f"data.prepared={prepared}", f"output_dir={out}", "train.max_steps=1",
                       "--workers", "2"])  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert rc == 0
    hashes = {p.name: p.read_text().strip() for p in (out / "worker_hashes").glob("rank*.txt")}
    assert set(hashes) == {"rank0.txt", "rank1.txt"}
    assert hashes["rank0.txt"] == hashes["rank1.txt"]
    init = _initial_weights("ipf", prepared, out)
    after = load_file(str(out / "checkpoints" / "step-0000001" / "model.safetensors"))
    assert any(not torch.equal(init[k], after[k]) for k in init)


def test_pair_dataset_items(prepared: Path):
    from signgen.data.pairs import PairDataset

    ds = PairDataset(prepared, "dev", (32, 32))
    item = ds[3]
    assert item["source"].dtype == torch.uint8 and tuple(item["source"].shape) == (80, 64, 3)
    assert tuple(item["target_pose"].shape) == (3, 32, 32)
    assert 0.0 <= float(item["target_pose"].min()) and float(item["target_pose"].max()) <= 1.0
    assert float(item["target_pose"].sum()) > 0  # the pose is drawn
    # dev pairs: source = frame 0, target = frame 3 of the same video
    _, _, s, t = ds.pairs[3]
    assert (s, t) == (0, 3)
    kp = item["keypoints"].numpy()
    assert kp.shape == (133, 3)
    # the target knuckle lies inside the 32x32 model frame (letterboxed coordinates)
    x, y = kp[121, :2]
    assert 0 <= x < 32 and 0 <= y < 32


@pytest.mark.parametrize("mode", ["squash", "letterbox"])
def test_training_sees_frames_in_the_models_geometry(prepared: Path, tmp_path: Path, mode):
    """The model's resize_mode holds in training as in rendering: the VAE gets the frames
    resized by the model's image processor (squash: PIL bicubic, as the published FPDM
    code), pose images and keypoints are drawn in the same geometry, and the IPF
    preprocesses the same way."""
    import numpy as np
    from PIL import Image

    from signgen.models.processor import FPDMImageProcessor
    from signgen.train.common import eval_batches
    from signgen.train.config import load_train_config
    from signgen.train.stages import task_factory

    cfg = load_train_config(CONFIGS / "tiny_fpdm.yaml", [f"data.prepared={prepared}",
                            f"output_dir={tmp_path}", f"model.resize_mode={mode}"])  # fmt: skip
    task = task_factory("fpdm")(cfg, torch.device("cpu"))
    module = task.module
    assert module.ipf.resize_mode == mode and task.train_set.resize_mode == mode
    batch = next(iter(eval_batches(task.eval_set, 2)))
    seen = []
    encode = module.vae.encode
    module.vae.encode = lambda x: (seen.append(x.clone()), encode(x))[1]
    module.conditions(batch)
    h, w = module.resolution
    frames = batch["target"].numpy()  # (2, 80, 64, 3): not the model's square
    assert frames.shape[1:3] != (h, w)
    if mode == "squash":  # exactly PIL's resize, as the published code
        pil = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BICUBIC))
                        for f in frames])  # fmt: skip
        want = torch.from_numpy(pil).permute(0, 3, 1, 2).float() / 127.5 - 1
    else:
        want = FPDMImageProcessor(resolution=(h, w)).preprocess(frames)
    torch.testing.assert_close(seen[0], want, rtol=0, atol=1e-6)
    # Keypoints (and the pose image drawn from them) in the same geometry.
    _, _, _, t = task.eval_set.pairs[0]
    video = task.eval_set.pairs[0][0]
    raw = task.eval_set.keypoints(video)[int(t)]  # (133, 3) native frame pixels
    fh, fw = frames.shape[1:3]
    box = FPDMImageProcessor(resolution=(h, w), resize_mode=mode)
    np.testing.assert_allclose(batch["keypoints"][0].numpy(), box.points_to_model(raw, (fw, fh)),
                               rtol=1e-5, atol=1e-4)  # fmt: skip
    if mode == "squash":
        np.testing.assert_allclose(batch["keypoints"][0, :, 0].numpy(), raw[:, 0] * w / fw,
                                   rtol=1e-5, atol=1e-4)  # fmt: skip


def test_stage1_sees_frames_in_the_models_geometry(prepared: Path, tmp_path: Path):
    """Stage 1 (IPF) of a squash model: CLIP gets the frames as PIL's bicubic resize makes
    them, and the exported IPF keeps that geometry for stage 2."""
    import numpy as np
    from PIL import Image

    from signgen.train.common import eval_batches
    from signgen.train.config import load_train_config
    from signgen.train.stages import task_factory

    cfg = load_train_config(CONFIGS / "tiny_ipf.yaml", [f"data.prepared={prepared}",
                            f"output_dir={tmp_path}", "model.resize_mode=squash"])  # fmt: skip
    task = task_factory("ipf")(cfg, torch.device("cpu"))
    ipf = task.module.ipf
    assert ipf.resize_mode == "squash" and task.train_set.resize_mode == "squash"
    batch = next(iter(eval_batches(task.eval_set, 2)))
    seen = []
    embed = ipf.embed
    ipf.embed = lambda x: (seen.append(x.clone()), embed(x))[1]
    task.module.embeddings(batch)
    h, w = ipf.image_size
    src = batch["source"].numpy()  # (2, 80, 64, 3)
    pil = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BICUBIC))
                    for f in src])  # fmt: skip
    mean = torch.tensor(ipf.mean).view(1, 3, 1, 1)
    std = torch.tensor(ipf.std).view(1, 3, 1, 1)
    want = (torch.from_numpy(pil).permute(0, 3, 1, 2).float() / 255 - mean) / std
    torch.testing.assert_close(seen[0][:2], want, rtol=0, atol=1e-5)


# ---- the optimisation the loop applies, against independent computations ----------------------
# A real short run of the loop (tiny VAE stage); the learning rate and the weights are read
# from the optimizer at every optimizer step (torch's global optimizer step hooks), and
# compared with the paper's schedule and diffusers' EMA formula computed here, so that a
# shifted warm-up, a dropped decay, or a missing scheduler/EMA step fails a test.
BASE_LR, WARMUP, DECAY_AFTER, STEPS, EMA_DECAY = 1e-3, 3, 5, 7, 0.3


def paper_lr(k: int) -> float:
    """LR of optimizer step k (1-based) in the FPDM paper's schedule (docs/training.md):
    linear warm-up reaching the base LR at step WARMUP, then x0.1 after DECAY_AFTER steps."""
    return BASE_LR * min(1.0, k / WARMUP) * (0.1 if k > DECAY_AFTER else 1.0)


def diffusers_ema_decay(t: int) -> float:
    """diffusers.training_utils.EMAModel.get_decay for its defaults (no EMA warm-up,
    update_after_step 0): 0 on the first update, then min(decay, (1 + s) / (10 + s)) with
    s = t - 1."""
    s = t - 1
    return 0.0 if s <= 0 else min(EMA_DECAY, (1 + s) / (10 + s))


class _OptimizerSpy:
    """Records, for every optimizer step of a run, the LR it used and the weights after it."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.initial: list[torch.Tensor] | None = None
        self.after: list[list[torch.Tensor]] = []

    @staticmethod
    def _params(opt) -> list[torch.Tensor]:
        return [p.detach().clone() for g in opt.param_groups for p in g["params"]]

    def __enter__(self):
        from torch.optim.optimizer import (
            register_optimizer_step_post_hook,
            register_optimizer_step_pre_hook,
        )

        def pre(opt, args, kwargs):
            if self.initial is None:
                self.initial = self._params(opt)
            self.lrs.append(opt.param_groups[0]["lr"])

        def post(opt, args, kwargs):
            self.after.append(self._params(opt))

        self.handles = [register_optimizer_step_pre_hook(pre),
                        register_optimizer_step_post_hook(post)]  # fmt: skip
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


def _schedule_cfg(prepared: Path, out: Path, *extra: str):
    from signgen.train.config import load_train_config

    return load_train_config(CONFIGS / "tiny_vae.yaml", [
        f"data.prepared={prepared}", f"output_dir={out}", f"optim.lr={BASE_LR}",
        f"optim.warmup_steps={WARMUP}", f"optim.decay_steps={DECAY_AFTER}",
        "optim.decay_factor=0.1", "train.epochs=100", f"train.max_steps={STEPS}",
        "train.ema.enabled=true", f"train.ema.decay={EMA_DECAY}", *extra])  # fmt: skip


def test_applied_lr_follows_the_papers_schedule(prepared: Path, tmp_path: Path):
    from signgen.train.loop import run_training
    from signgen.train.stages import task_factory

    with _OptimizerSpy() as spy:
        run_training(_schedule_cfg(prepared, tmp_path / "run"), task_factory("vae"),
                     progress=False)  # fmt: skip
    want = [paper_lr(k) for k in range(1, STEPS + 1)]
    assert spy.lrs == pytest.approx(want, rel=1e-9), (spy.lrs, want)


def test_lr_schedule_continues_across_a_resume(prepared: Path, tmp_path: Path):
    """Killed after 3 steps and resumed: the scheduler's position is restored, so the LR of
    steps 4..7 is the schedule's, not a restart of the warm-up."""
    from signgen.train.loop import run_training
    from signgen.train.stages import task_factory

    cfg = _schedule_cfg(prepared, tmp_path / "run")
    with _OptimizerSpy() as first:
        run_training(cfg, task_factory("vae"), stop_after=3, progress=False)
    with _OptimizerSpy() as second:
        run_training(cfg, task_factory("vae"), resume=True, progress=False)
    want = [paper_lr(k) for k in range(1, STEPS + 1)]
    assert first.lrs + second.lrs == pytest.approx(want, rel=1e-9)


def test_ema_weights_equal_an_independent_ema_of_the_steps(prepared: Path, tmp_path: Path):
    """The EMA the loop saves equals the EMA computed here from the weights after every
    optimizer step, starting from the initial weights, with diffusers' decay formula."""
    from signgen.train.loop import run_training
    from signgen.train.stages import task_factory

    out = tmp_path / "run"
    with _OptimizerSpy() as spy:
        run_training(_schedule_cfg(prepared, out), task_factory("vae"), progress=False)
    assert spy.initial is not None and len(spy.after) == STEPS
    ema = [p.double() for p in spy.initial]
    for t, params in enumerate(spy.after, start=1):
        d = diffusers_ema_decay(t)
        ema = [d * e + (1 - d) * p.double() for e, p in zip(ema, params, strict=True)]
    state = torch.load(out / "checkpoints" / f"step-{STEPS:07d}" / "training_state.pt",
                       weights_only=True)  # fmt: skip
    saved = state["ema"]["shadow_params"]
    assert len(saved) == len(ema)
    for got, want in zip(saved, ema, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)
    # the weights moved, and the EMA differs from the last weights (it is not a copy)
    last = [p.double() for p in spy.after[-1]]
    assert any(not torch.allclose(a, b) for a, b in zip(ema, last, strict=True))
