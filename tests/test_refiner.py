"""The source refiner (signgen.models.refiner): the network, its place in the render, its
folder, and `signgen train refiner` (renders of the frozen model, training, export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import random_clip, randomize, saved_tiny_model, tiny_world
from PIL import Image
from safetensors.torch import load_file

from signgen.cli import main
from signgen.errors import InputError, MissingWeightsError
from signgen.models.config import load_model_config
from signgen.models.preprocess import uint8_to_tensor
from signgen.models.refiner import REFINER_FOLDER, SourceRefiner
from signgen.pose.draw import draw_pose
from signgen.sampling.options import RenderOptions, add_render_arguments, options_from_args
from signgen.sampling.pipeline import FPDMPipeline
from signgen.train.config import RefinerTrainConfig

TINY = {"patch_size": 2, "block_out_channels": (8, 16), "norm_num_groups": 4}
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


def _images(h: int = 30, w: int = 26, b: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 3, h, w, generator=g) for _ in range(3)]


# ---- the network --------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(30, 26), (32, 32), (17, 11)])
def test_an_untrained_refiner_returns_the_render_at_any_size(size):
    render, source, pose = _images(*size)
    out = SourceRefiner(**TINY)(render, source, pose)
    assert out.shape == render.shape
    assert torch.equal(out, render)  # zero-initialised last layer: the identity


def test_the_refiner_reads_each_of_its_inputs_at_every_pixel_scale():
    refiner = SourceRefiner(**TINY)
    randomize(refiner, 1, std=0.1)
    render, source, pose = _images()
    with torch.no_grad():
        base = refiner(render, source, pose)
        for i in range(3):
            inputs = [render, source, pose]
            changed = inputs[i].clone()
            changed[:, :, 10, 10] += 0.5  # one pixel of one input
            inputs[i] = changed
            diff = (refiner(*inputs) - base).abs()
            assert diff.amax() > 1e-4, f"input {i} is not read"
            assert diff[:, :, 10, 10].amax() > 0  # the pixel itself, not only its block


# ---- in the render --------------------------------------------------------------------------
def _pipe_with_refiner(seed: int = 3) -> FPDMPipeline:
    pipe = FPDMPipeline.from_config(load_model_config("tiny"))
    randomize(pipe.denoiser, 1)
    refiner = SourceRefiner(**TINY)
    randomize(refiner, seed, std=0.05)
    pipe.register_modules(refiner=refiner.eval().requires_grad_(False))
    return pipe


def test_render_runs_the_refiner_on_each_frame_with_the_first_frame_and_its_pose():
    pipe = _pipe_with_refiner()
    img, kp = random_clip(frames=3, size=(26, 30))
    seen = []
    forward = pipe.refiner.forward

    def spy(render, source, pose):
        seen.append((render.clone(), source.clone(), pose.clone()))
        return forward(render, source, pose)

    pipe.refiner.forward = spy
    refined = pipe(img, kp, steps=2)
    plain = pipe(img, kp, steps=2, refine=False)
    assert len(seen) == 3  # one call per frame, none with refine=False
    for t, (render, source, pose) in enumerate(seen):
        assert render.shape == source.shape == pose.shape == (1, 3, 30, 26)
        assert torch.equal(source, uint8_to_tensor(img))
        assert torch.equal(pose, uint8_to_tensor(draw_pose(kp.points[t], (26, 30))))
        # the refiner's input is the plain render (before rounding to uint8)
        assert np.abs(np.clip(render[0].permute(1, 2, 0).numpy() * 255, 0, 255)
                      - plain[t]).max() <= 1  # fmt: skip
    assert np.abs(refined.astype(int) - plain).max() > 0
    # a model without a refiner renders the plain frames
    pipe.register_modules(refiner=None)
    assert np.array_equal(pipe(img, kp, steps=2), plain)


def test_temporal_renders_refine_each_frame_too():
    from signgen.models.motion import MotionModuleConfig, build_motion_module

    pipe = _pipe_with_refiner()
    motion = build_motion_module(pipe.unet, MotionModuleConfig(num_attention_heads=4,
                                                               norm_num_groups=8, max_frames=8))  # fmt: skip
    pipe.register_modules(motion_module=motion)
    img, kp = random_clip(frames=5, size=(26, 30))
    opts = {"steps": 2, "temporal": True, "window": 4, "overlap": 2, "independent_noise": True}
    calls = []
    forward = pipe.refiner.forward
    pipe.refiner.forward = lambda r, s, p: calls.append(p.clone()) or forward(r, s, p)
    refined = pipe(img, kp, **opts)
    plain = pipe(img, kp, **opts, refine=False)
    assert len(calls) == 5 and np.abs(refined.astype(int) - plain).max() > 0
    for t, pose in enumerate(calls):
        assert torch.equal(pose, uint8_to_tensor(draw_pose(kp.points[t], (26, 30))))


def test_the_refiner_is_saved_and_loaded_with_the_model_folder(tmp_path):
    pipe = _pipe_with_refiner()
    folder = pipe.save_pretrained(tmp_path / "m")
    index = json.loads((folder / "model_index.json").read_text())
    assert index[REFINER_FOLDER] == ["signgen.models.refiner", "SourceRefiner"]
    loaded = FPDMPipeline.from_pretrained(folder)
    assert isinstance(loaded.refiner, SourceRefiner)
    for k, v in pipe.refiner.state_dict().items():
        assert torch.equal(loaded.refiner.state_dict()[k], v), k
    img, kp = random_clip(frames=2, size=(26, 30))
    assert np.array_equal(loaded(img, kp, steps=2), pipe(img, kp, steps=2))


def test_a_refiner_of_another_class_is_refused(tmp_path):
    folder = _pipe_with_refiner().save_pretrained(tmp_path / "m")
    index = json.loads((folder / "model_index.json").read_text())
    index[REFINER_FOLDER] = ["diffusers", "UNet2DModel"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(MissingWeightsError, match=r"unsupported class diffusers\.UNet2DModel"):
        FPDMPipeline.from_pretrained(folder)


def test_no_refine_is_a_render_option():
    import argparse

    p = argparse.ArgumentParser()
    add_render_arguments(p)
    assert options_from_args(p.parse_args([])).refine is True
    assert options_from_args(p.parse_args(["--no-refine"])).refine is False
    assert RenderOptions(refine=0).refine is False


# ---- signgen train refiner -------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("world"), signers=3, videos=4, frames=5, pairs=2)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """A saved tiny model (random weights): the frozen base whose renders are corrected."""
    return saved_tiny_model(tmp_path_factory.mktemp("base") / "model")


def _args(prepared: Path, base: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.prepared={prepared}", f"refiner.base_model={base}", f"output_dir={out}",
            *extra]  # fmt: skip


def _train(*args: str) -> None:
    assert main(["train", "refiner", "--config", str(CONFIGS / "tiny_refiner.yaml"), "-q",
                 *args]) == 0  # fmt: skip


def test_train_refiner_renders_with_the_frozen_model_trains_and_exports(
    prepared, base_model, tmp_path
):
    from signgen.data.pairs import _load_keypoints, load_frame, read_manifest

    out = tmp_path / "run"
    _train(*_args(prepared, base_model, out, "train.max_steps=2"))
    # 1. the renders: frames 0, 2, 4 of every train clip, as `signgen render` makes them
    videos = {v: e for v, e in read_manifest(prepared).items() if e.split == "train"}
    pngs = sorted((out / "renders" / "train").rglob("*.png"))
    assert len(pngs) == 3 * len(videos)
    video, entry = sorted(videos.items())[0]
    base = FPDMPipeline.from_pretrained(base_model)
    points = _load_keypoints(str(entry.keypoints_file))
    from signgen.keypoints.sequence import KeypointSequence

    kp = KeypointSequence(points[[0, 2, 4]], entry.width, entry.height, 25.0)
    expected = base(load_frame(entry, 0), kp, steps=2, detail_transfer=0)
    for i, t in enumerate((0, 2, 4)):
        got = np.asarray(Image.open(out / "renders" / "train" / video / f"{t:04d}.png"))
        assert np.array_equal(got, expected[i]), t
    # 2. the checkpoint holds the refiner alone, and its last layer learnt
    saved = load_file(str(out / "checkpoints" / "step-0000002" / "model.safetensors"))
    assert saved and all(k.startswith("refiner.") for k in saved), sorted(saved)[:3]
    assert saved["refiner.unet.conv_out.weight"].abs().max() > 0
    # 3. the export: the base folder plus the refiner, which renders use
    model = FPDMPipeline.from_pretrained(out / "export")
    assert isinstance(model.refiner, SourceRefiner) and base.refiner is None
    for k, v in model.refiner.state_dict().items():
        assert torch.equal(v, saved[f"refiner.{k}"]), k
    for k, v in base.unet.state_dict().items():
        assert torch.equal(model.unet.state_dict()[k], v), k
    assert model.detail_transfer == 0
    assert list((out / "samples").glob("refiner-step*.png"))


def test_train_refiner_keeps_its_renders_until_the_base_model_changes(
    prepared, base_model, tmp_path
):
    cache = tmp_path / "renders"
    _train(*_args(prepared, base_model, tmp_path / "a", f"refiner.cache_dir={cache}"))
    first = {p: p.stat().st_mtime_ns for p in cache.rglob("*.png")}
    _train(*_args(prepared, base_model, tmp_path / "b", f"refiner.cache_dir={cache}"))
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.png")} == first  # reused
    # other render steps: another key, rendered again
    _train(*_args(prepared, base_model, tmp_path / "c", f"refiner.cache_dir={cache}",
                  "refiner.render_steps=1"))  # fmt: skip
    again = {p: p.stat().st_mtime_ns for p in cache.rglob("*.png")}
    assert set(again) == set(first) and all(again[p] != first[p] for p in first)
    assert not any(p.name.endswith(".tmp") for p in cache.rglob("*"))


def test_train_refiner_resumes_to_the_same_weights(prepared, base_model, tmp_path):
    from signgen.train.config import load_train_config
    from signgen.train.loop import run_training
    from signgen.train.stages import task_factory

    cache = tmp_path / "renders"

    def cfg(out: Path):
        return load_train_config(CONFIGS / "tiny_refiner.yaml", _args(
            prepared, base_model, out, "train.max_steps=2", "train.checkpoint_every=1",
            f"refiner.cache_dir={cache}"))  # fmt: skip

    task = task_factory("refiner")
    run_training(cfg(tmp_path / "full"), task, progress=False)
    part = tmp_path / "part"
    assert run_training(cfg(part), task, stop_after=1, progress=False)["step"] == 1
    assert run_training(cfg(part), task, resume=True, progress=False)["step"] == 2
    a, b = (load_file(str(d / "checkpoints" / "step-0000002" / "model.safetensors"))
            for d in (tmp_path / "full", part))  # fmt: skip
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_refiner_config_errors_are_one_line():
    with pytest.raises(InputError, match=r"refiner\.base_model is not set"):
        RefinerTrainConfig().check()
    with pytest.raises(InputError, match="unknown key"):
        RefinerTrainConfig(base_model="m", module={"channels": 3}).check()
    with pytest.raises(InputError, match="render_steps"):
        RefinerTrainConfig(base_model="m", render_steps=0).check()
    RefinerTrainConfig(base_model="m").check()


def test_train_refiner_without_a_base_model_is_one_line(prepared, tmp_path, capsys):
    rc = main(["train", "refiner", "--config", str(CONFIGS / "tiny_refiner.yaml"), "-q",
               f"data.prepared={prepared}", f"output_dir={tmp_path / 'r'}"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refiner.base_model" in err[0]
