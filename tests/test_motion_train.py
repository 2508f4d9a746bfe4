"""Motion-module training: windows of consecutive frames with the clip's first frame as
source, and one training step in which only the motion module learns."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from model_helpers import random_clip, randomize, saved_tiny_model, tiny_world
from safetensors.torch import load_file

from signgen.cli import main
from signgen.data.pairs import PairDataset, load_frame, read_manifest
from signgen.errors import InputError
from signgen.models.config import load_model_config
from signgen.models.motion import (
    MotionModuleConfig,
    build_motion_module,
    load_motion_module,
    render_defaults,
)
from signgen.sampling.pipeline import FPDMPipeline
from signgen.train.motion import ClipWindows, MotionTrainConfig, MotionTrainModule

WINDOW = 4
MOTION = MotionModuleConfig(num_attention_heads=4, norm_num_groups=8, max_frames=8)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("world"), signers=3, videos=4, frames=6, pairs=2)


def _module(name: str = "tiny") -> MotionTrainModule:
    pipe = FPDMPipeline.from_config(load_model_config(name))
    randomize(pipe.denoiser, 1)  # zero-initialised layers would hide paths
    for m in pipe.components.values():  # as a training run hands them over: trainable
        if isinstance(m, torch.nn.Module):
            m.requires_grad_(True).train()
    motion = build_motion_module(pipe.unet, MOTION)
    cfg = MotionTrainConfig(module=MOTION, window=WINDOW, stride=2)
    return MotionTrainModule.from_pipeline(pipe, motion, cfg)


def test_windows_are_consecutive_frames_with_the_first_frame_as_source(prepared):
    data = ClipWindows(prepared, "train", (32, 32), window=WINDOW, stride=2)
    videos = sorted(v for v, e in read_manifest(prepared).items() if e.split == "train")
    # 6-frame videos, windows of 4 every 2 frames: starts 0 and 2 per video.
    assert sorted(data.items) == sorted((v, s) for v in videos for s in (0, 2))
    i = data.items.index((videos[0], 2))
    item = data[i]
    entry = data.videos[videos[0]]
    assert torch.equal(item["source"], torch.from_numpy(load_frame(entry, 0).copy()))
    for k, t in enumerate(range(2, 6)):
        assert torch.equal(item["target"][k], torch.from_numpy(load_frame(entry, t).copy()))
    assert item["target"].shape == (WINDOW, 80, 64, 3)
    assert item["target_pose"].shape == (WINDOW, 3, 32, 32)
    assert item["keypoints"].shape == (WINDOW, 133, 3)
    # Pose images and keypoints are those of the per-frame training pairs (same geometry).
    pairs = PairDataset(prepared, "train", (32, 32))
    compared = 0
    for j, (video, _, _, target) in enumerate(pairs.pairs):
        if video == videos[0] and 2 <= target < 6:
            pair = pairs[j]
            assert torch.equal(item["target_pose"][target - 2], pair["target_pose"])
            assert torch.equal(item["keypoints"][target - 2], pair["keypoints"])
            compared += 1
    assert compared > 0
    first = data[data.items.index((videos[0], 0))]  # the window that starts at the source
    assert torch.equal(item["source_keypoints"], first["keypoints"][0])


def test_clips_shorter_than_a_window_are_a_user_error(prepared):
    with pytest.raises(InputError, match=r"lower motion\.window"):
        ClipWindows(prepared, "train", (32, 32), window=7, stride=2)
    with pytest.raises(InputError, match="no videos in split"):
        ClipWindows(prepared, "val", (32, 32), window=WINDOW, stride=2)


@pytest.mark.parametrize("name", ["tiny", "tiny_mcld"])
def test_one_step_trains_the_motion_module_only(prepared, name):
    module = _module(name).train()
    data = ClipWindows(prepared, "train", (32, 32), window=WINDOW, stride=2)
    batch = torch.utils.data.default_collate([data[0], data[3]])
    loss, _ = module(batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    motion = list(module.temporal.motion.parameters())
    assert all(p.requires_grad and p.grad is not None for p in motion)
    # Zero-initialised output projections: the gradient reaches them first.
    proj = [m.proj_out.weight for m in module.temporal.motion.modules() if hasattr(m, "proj_out")]
    assert all(p.grad.abs().max() > 0 for p in proj)
    frozen = [p for p in module.parameters() if all(p is not q for q in motion)]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    assert not module.temporal.denoiser.training  # the per-frame model stays in eval mode
    # A step of the optimiser moves the temporal prediction away from the per-frame one.
    before = {k: v.clone() for k, v in module.temporal.denoiser.state_dict().items()}
    torch.optim.SGD(motion, lr=1.0).step()
    after = module.temporal.denoiser.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert any(p.abs().max() > 0 for p in proj)


def test_timesteps_and_condition_dropout_are_drawn_per_window(prepared, monkeypatch):
    module = _module().train()
    module.cfg.drop_pose = module.cfg.drop_source = module.cfg.drop_fusion = 0.5
    seen: dict = {}
    encode, denoise = module.temporal.encode_conditions, module.temporal.denoise

    def spy_encode(*args, **kwargs):
        seen.update({k: v for k, v in kwargs.items() if k.startswith("drop_")})
        return encode(*args, **kwargs)

    def spy_denoise(noisy, t, cond, num_frames):
        seen["t"], seen["frames"] = t, num_frames
        return denoise(noisy, t, cond, num_frames)

    monkeypatch.setattr(module.temporal, "encode_conditions", spy_encode)
    monkeypatch.setattr(module.temporal, "denoise", spy_denoise)
    data = ClipWindows(prepared, "train", (32, 32), window=WINDOW, stride=2)
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    module(batch, generator=torch.Generator().manual_seed(3))
    assert seen["frames"] == WINDOW
    t = seen["t"].view(4, WINDOW)  # window-major rows
    assert bool((t == t[:, :1]).all()) and len(set(t[:, 0].tolist())) > 1
    for name in ("drop_pose", "drop_source", "drop_fusion"):
        d = seen[name].view(4, WINDOW)
        assert bool((d == d[:, :1]).all()), name
    module.eval()
    seen.clear()
    module(batch, generator=torch.Generator().manual_seed(3))
    assert not any(k.startswith("drop_") for k in seen)  # no dropout at evaluation


def test_export_writes_a_loadable_motion_module(tmp_path):
    module = _module()
    path = module.export(tmp_path / "export")
    again = load_motion_module(tmp_path / "export", module.temporal.denoiser.unet)
    assert path.name == "motion_module"
    mine = module.temporal.motion.state_dict()
    assert all(torch.equal(v, mine[k]) for k, v in again.state_dict().items())


def test_bad_motion_config_is_a_user_error():
    with pytest.raises(InputError, match="base_model"):
        MotionTrainConfig().check()
    with pytest.raises(InputError, match="max_frames"):
        MotionTrainConfig(base_model="m", window=40).check()
    with pytest.raises(InputError, match="stride"):
        MotionTrainConfig(base_model="m", window=8, stride=9).check()
    with pytest.raises(InputError, match="probability"):
        MotionTrainConfig(base_model="m", drop_pose=1.5).check()
    with pytest.raises(InputError, match="render_overlap"):
        MotionTrainConfig(base_model="m", window=8, render_overlap=8).check()
    MotionTrainConfig(base_model="m").check()


# ---- signgen train motion ---------------------------------------------------------------------
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """A saved tiny per-frame model (random weights), the frozen base of the runs."""
    return saved_tiny_model(tmp_path_factory.mktemp("base") / "model")


def _motion_args(prepared: Path, base: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.prepared={prepared}", f"motion.base_model={base}", f"output_dir={out}",
            *extra]  # fmt: skip


def test_train_motion_trains_only_the_module_and_exports_a_temporal_model(
    prepared, base_model, tmp_path
):
    """`signgen train motion` with configs/train/tiny_motion.yaml: two steps, a log, a
    checkpoint of the motion module alone, an export that is the base folder plus
    motion_module/ with the training window as render defaults, rendering --temporal."""
    out = tmp_path / "run"
    args = _motion_args(prepared, base_model, out, "train.max_steps=2")
    config = str(CONFIGS / "tiny_motion.yaml")
    assert main(["train", "motion", "--config", config, "-q", *args]) == 0
    rows = list(csv.DictReader((out / "logs" / "train.csv").open()))
    assert rows and all(math.isfinite(float(r["loss"])) for r in rows)
    saved = load_file(str(out / "checkpoints" / "step-0000002" / "model.safetensors"))
    assert saved and all(k.startswith("temporal.motion.") for k in saved), sorted(saved)[:3]
    # The zero-initialised output projections moved: the module learnt.
    proj = [k for k in saved if k.endswith("proj_out.weight")]
    assert proj and any(saved[k].abs().max() > 0 for k in proj)

    export = out / "export"
    base = FPDMPipeline.from_pretrained(base_model)
    model = FPDMPipeline.from_pretrained(export)
    assert model.motion_module is not None and base.motion_module is None
    for k, v in base.unet.state_dict().items():  # the per-frame model is frozen
        assert torch.equal(model.unet.state_dict()[k], v), k
    exported = model.motion_module.state_dict()
    for k, v in saved.items():  # its parameters (the frame positions are buffers)
        assert torch.equal(exported[k.removeprefix("temporal.motion.")], v), k
    assert render_defaults(model.motion_module) == (4, 2, "linear")  # tiny_motion.yaml
    img, kp = random_clip(frames=7, size=(26, 30))
    frames = model(img, kp, steps=1, temporal=True, independent_noise=True)
    assert frames.shape == (7, 30, 26, 3)


def test_train_motion_resumes_to_the_same_weights(prepared, base_model, tmp_path):
    """Two steps straight, or one step, a stop as if killed, and a resume: same module."""
    from signgen.train.config import load_train_config
    from signgen.train.loop import run_training
    from signgen.train.stages import task_factory

    def cfg(out: Path, seed: int = 0):
        c = load_train_config(CONFIGS / "tiny_motion.yaml", _motion_args(
            prepared, base_model, out, "train.max_steps=2", "train.checkpoint_every=1"))  # fmt: skip
        c.seed = seed
        return c

    task = task_factory("motion")
    run_training(cfg(tmp_path / "full"), task, progress=False)
    part = tmp_path / "part"
    assert run_training(cfg(part), task, stop_after=1, progress=False)["step"] == 1
    assert not (part / "export").exists()
    assert run_training(cfg(part), task, resume=True, progress=False)["step"] == 2
    a, b = (load_file(str(d / "checkpoints" / "step-0000002" / "model.safetensors"))
            for d in (tmp_path / "full", part))  # fmt: skip
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    run_training(cfg(tmp_path / "other", seed=1), task, progress=False)  # the test can fail
    o = load_file(str(tmp_path / "other" / "checkpoints" / "step-0000002" / "model.safetensors"))
    assert any(not torch.allclose(a[k], o[k]) for k in a)
