"""The source refiner's temporal layers (signgen.models.refiner_motion): the layers, their
place in temporal renders (windows, blending, flat memory), their folder, and
`signgen train refiner-motion`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import random_clip, randomize, saved_tiny_model, tiny_world
from safetensors.torch import load_file

from signgen.cli import main
from signgen.errors import InputError
from signgen.models.config import load_model_config
from signgen.models.motion import MotionModuleConfig, build_motion_module
from signgen.models.refiner import SourceRefiner
from signgen.models.refiner_motion import REFINER_MOTION_FOLDER, RefinerMotion, TemporalRefiner
from signgen.sampling.options import add_render_arguments, options_from_args
from signgen.sampling.pipeline import FPDMPipeline
from signgen.train.config import RefinerMotionTrainConfig
from signgen.train.refiner_motion import temporal_loss

TINY = {"patch_size": 2, "block_out_channels": (8, 16), "norm_num_groups": 4}
# diffusers' TemporalResnetBlock normalises in 32 groups: widths of 32 and 64.
WIDE = {"patch_size": 2, "block_out_channels": (32, 64), "norm_num_groups": 8}
SITES = ["mid", "up0", "up1"]  # every site of a two-level refiner
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


def _frames(f: int = 6, h: int = 18, w: int = 14, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(f, 3, h, w, generator=g) for _ in range(3)]


def _temporal_refiner(trained: bool = True, **motion) -> TemporalRefiner:
    refiner = SourceRefiner(**WIDE)
    randomize(refiner, 1, std=0.05)
    layers = RefinerMotion(block_out_channels=WIDE["block_out_channels"], sites=SITES, **motion)
    if trained:
        randomize(layers, 2, std=0.2)
    return TemporalRefiner(refiner.eval(), layers.eval())


# ---- the layers -------------------------------------------------------------------------------
def test_untrained_layers_leave_the_refiners_frames_unchanged():
    tr = _temporal_refiner(trained=False)
    x = _frames()
    with torch.no_grad():
        assert torch.equal(tr(*x, num_frames=6), tr.refiner(*x))
        assert torch.equal(tr(*x, num_frames=3), tr.refiner(*x))


def test_trained_layers_mix_the_frames_of_a_window_and_only_those():
    tr = _temporal_refiner()
    render, source, pose = _frames()
    with torch.no_grad():
        base = tr(render, source, pose, num_frames=3)  # two windows: frames 0-2 and 3-5
        changed = render.clone()
        changed[1] += 0.3  # frame 1 only
        diff = (tr(changed, source, pose, num_frames=3) - base).abs().amax(dim=(1, 2, 3))
        alone = (tr.refiner(changed, source, pose) - tr.refiner(render, source, pose)).abs()
    assert diff[0] > 1e-4 and diff[2] > 1e-4  # its neighbours in the window change...
    assert torch.all(diff[3:] == 0)  # ...the other window does not
    assert alone.amax(dim=(1, 2, 3))[[0, 2]].max() == 0  # the refiner alone: frame by frame
    with torch.no_grad():  # num_frames=None: the refiner alone, hooks idle
        assert torch.equal(
            tr(render, source, pose, num_frames=None), tr.refiner(render, source, pose)
        )


def test_layers_of_other_widths_or_sites_are_refused():
    with pytest.raises(ValueError, match="unknown refiner site"):
        RefinerMotion(block_out_channels=(32, 64), sites=["down0"])
    with pytest.raises(ValueError, match="block widths"):
        RefinerMotion(block_out_channels=(64, 128), sites=SITES).sites(SourceRefiner(**WIDE))
    with pytest.raises(ValueError, match="whole windows"):
        _temporal_refiner()(*_frames(f=5), num_frames=2)


def test_temporal_loss_compares_frame_differences():
    target = torch.rand(2, 4, 3, 5, 5)
    assert temporal_loss(target + 0.25, target) < 1e-6  # a constant offset: the same changes
    still = target[:, :1].expand_as(target)  # a frozen first frame
    expected = target.diff(dim=1).abs().mean()
    torch.testing.assert_close(temporal_loss(still, target), expected)


# ---- in the temporal render -------------------------------------------------------------------
def _pipe(trained: bool = True, window: int = 4, overlap: int = 2) -> FPDMPipeline:
    pipe = FPDMPipeline.from_config(load_model_config("tiny"))
    randomize(pipe.denoiser, 1)
    tr = _temporal_refiner(trained, window=window, overlap=overlap)
    motion = build_motion_module(pipe.unet, MotionModuleConfig(num_attention_heads=4,
                                                               norm_num_groups=8, max_frames=8))  # fmt: skip
    pipe.register_modules(motion_module=motion, refiner=tr.refiner, refiner_motion=tr.motion)
    return pipe


OPTS = {"steps": 2, "temporal": True, "window": 4, "overlap": 2}


def test_untrained_layers_render_the_per_frame_refiners_frames():
    pipe = _pipe(trained=False)
    img, kp = random_clip(frames=7, size=(26, 30))
    with_layers = pipe(img, kp, **OPTS)
    without = pipe(img, kp, **OPTS, temporal_refine=False)
    assert np.abs(with_layers.astype(int) - without).max() <= 1  # blending rounds


def test_trained_layers_act_in_temporal_renders_only():
    pipe = _pipe()
    img, kp = random_clip(frames=7, size=(26, 30))
    with_layers = pipe(img, kp, **OPTS)
    assert np.abs(with_layers.astype(int) - pipe(img, kp, **OPTS, temporal_refine=False)).max() > 2
    per_frame = pipe(img, kp, steps=2)
    pipe.register_modules(refiner_motion=None)
    assert np.array_equal(pipe(img, kp, steps=2), per_frame)  # per-frame renders: unchanged


def test_no_motion_module_denoises_each_frame_alone():
    """--temporal --no-motion-module: the per-frame render's denoising (same frames without
    the refiner's layers), the refiner's layers on windows; a model without those layers
    refuses it."""
    pipe = _pipe()
    randomize(pipe.motion_module, 2, std=0.2)  # a motion module that would change the frames
    img, kp = random_clip(frames=6, size=(26, 30))
    per_frame = pipe(img, kp, steps=2)
    alone = pipe(img, kp, **OPTS, motion_module=False, temporal_refine=False)
    assert np.abs(alone.astype(int) - per_frame).max() <= 1
    assert np.abs(pipe(img, kp, **OPTS, temporal_refine=False).astype(int) - per_frame).max() > 2
    layers = pipe(img, kp, **OPTS, motion_module=False)
    assert np.abs(layers.astype(int) - per_frame).max() > 2
    pipe.register_modules(refiner_motion=None)
    with pytest.raises(InputError, match="no-motion-module"):
        pipe(img, kp, **OPTS, motion_module=False)


def test_a_clip_within_one_window_is_refined_as_one_window():
    """Windows of 4 overlapping by 2: a 3-frame clip is one window, refined in one call
    with its first frame and poses; over 7 frames (windows 0-3, 2-5, 3-6), frames 0-1 are
    the first window's alone."""
    from signgen.models.preprocess import tensor_to_uint8, uint8_to_tensor
    from signgen.pose.draw import draw_pose

    pipe = _pipe()
    tr = pipe.temporal_refiner
    forward = tr.forward
    for frames, calls, keep in ((3, [3], 3), (7, [4, 4, 4], 2)):
        img, kp = random_clip(frames=frames, size=(26, 30))
        seen: list = []
        tr.forward = lambda *a, seen=seen, **k: seen.append((a, k)) or forward(*a, **k)
        got = pipe(img, kp, **OPTS)
        tr.forward = forward
        assert [a[0].shape[0] for a, _ in seen] == calls
        (render, source, pose), kwargs = seen[0]
        n = kwargs["num_frames"]
        assert torch.equal(source, uint8_to_tensor(img).expand(n, -1, -1, -1))
        for t in range(n):
            assert torch.equal(pose[t : t + 1], uint8_to_tensor(draw_pose(kp.points[t], (26, 30))))
        with torch.no_grad():
            expected = tensor_to_uint8(forward(render, source, pose, num_frames=n))
        assert np.array_equal(got[:keep], expected[:keep]), frames


def test_windows_are_refined_and_yielded_as_the_clip_goes():
    """Memory flat in clip length: frames leave as soon as no later window holds them."""
    pipe = _pipe()
    img, kp = random_clip(frames=10, size=(26, 30))
    calls = []
    forward = pipe.temporal_refiner.forward
    pipe.temporal_refiner.forward = lambda *a, **k: calls.append(a[0].shape[0]) or forward(*a, **k)
    seen = []
    for batch in pipe.render(img, kp, **OPTS):
        seen.append((len(batch), len(calls)))
    assert calls == [4, 4, 4, 4]  # windows 0-3, 2-5, 4-7, 6-9
    assert seen == [(2, 1), (2, 2), (2, 3), (4, 4)]


def test_the_layers_are_saved_and_loaded_with_the_model_folder(tmp_path):
    pipe = _pipe()
    folder = pipe.save_pretrained(tmp_path / "m")
    index = json.loads((folder / "model_index.json").read_text())
    assert index[REFINER_MOTION_FOLDER] == ["signgen.models.refiner_motion", "RefinerMotion"]
    loaded = FPDMPipeline.from_pretrained(folder)
    assert isinstance(loaded.refiner_motion, RefinerMotion)
    assert (loaded.refiner_motion.config.window, loaded.refiner_motion.config.overlap) == (4, 2)
    img, kp = random_clip(frames=5, size=(26, 30))
    assert np.array_equal(loaded(img, kp, **OPTS), pipe(img, kp, **OPTS))


def test_no_temporal_refine_and_motion_module_are_render_options():
    import argparse

    p = argparse.ArgumentParser()
    add_render_arguments(p)
    assert options_from_args(p.parse_args([])).temporal_refine is True
    assert options_from_args(p.parse_args(["--no-temporal-refine"])).temporal_refine is False
    assert options_from_args(p.parse_args([])).motion_module is None  # the model's default
    assert options_from_args(p.parse_args(["--motion-module"])).motion_module is True
    assert options_from_args(p.parse_args(["--no-motion-module"])).motion_module is False


def test_the_model_folder_says_whether_temporal_renders_use_the_motion_module(tmp_path):
    pipe = _pipe()
    randomize(pipe.motion_module, 2, std=0.2)
    img, kp = random_clip(frames=5, size=(26, 30))
    through, alone = (pipe(img, kp, **OPTS, motion_module=m) for m in (True, False))
    assert np.array_equal(pipe(img, kp, **OPTS), through)  # default: through it
    pipe.register_to_config(temporal_motion_module=False)
    folder = pipe.save_pretrained(tmp_path / "m")
    loaded = FPDMPipeline.from_pretrained(folder)
    assert np.abs(through.astype(int) - alone).max() > 2  # the motion module acts
    # (loaded weights may round the last bit differently)
    assert np.abs(loaded(img, kp, **OPTS).astype(int) - alone).max() <= 1
    assert np.abs(loaded(img, kp, **OPTS, motion_module=True).astype(int) - through).max() <= 1


# ---- signgen train refiner-motion ---------------------------------------------------------------
@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """A saved tiny model with a (random) refiner and motion module: the frozen base."""
    folder = saved_tiny_model(tmp_path_factory.mktemp("base") / "model")
    pipe = FPDMPipeline.from_pretrained(folder)
    refiner = SourceRefiner(**WIDE)
    randomize(refiner, 1, std=0.05)
    motion = build_motion_module(pipe.unet, MotionModuleConfig(num_attention_heads=4,
                                                               norm_num_groups=8, max_frames=8))  # fmt: skip
    pipe.register_modules(refiner=refiner, motion_module=motion)
    return pipe.save_pretrained(folder)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("world"), signers=3, videos=4, frames=6, pairs=2)


def _train(prepared: Path, base: Path, out: Path, *extra: str) -> int:
    return main(["train", "refiner-motion", "--config", str(CONFIGS / "tiny_refiner_motion.yaml"),
                 "-q", f"data.prepared={prepared}", f"refiner_motion.base_model={base}",
                 f"output_dir={out}", *extra])  # fmt: skip


def test_train_refiner_motion_renders_temporally_trains_the_layers_and_exports(
    prepared, base_model, tmp_path
):
    from signgen.data.pairs import _load_keypoints, load_frame, read_manifest
    from signgen.keypoints.sequence import KeypointSequence

    out = tmp_path / "run"
    assert _train(prepared, base_model, out, "train.max_steps=2") == 0
    # 1. the renders: every frame of the train clips, as `signgen render --temporal` without
    #    the refiner makes them
    videos = {v: e for v, e in read_manifest(prepared).items() if e.split == "train"}
    video, entry = sorted(videos.items())[0]
    base = FPDMPipeline.from_pretrained(base_model)
    kp = KeypointSequence(_load_keypoints(str(entry.keypoints_file)), entry.width, entry.height,
                          25.0)  # fmt: skip
    expected = base(load_frame(entry, 0), kp, steps=2, detail_transfer=0, temporal=True,
                    refine=False)  # fmt: skip
    from PIL import Image

    for t in range(entry.frames):
        got = np.asarray(Image.open(out / "renders" / "train" / video / f"{t:04d}.png"))
        assert np.array_equal(got, expected[t]), t
    # 2. the checkpoint holds the temporal layers alone (the refiner is frozen), and they learnt
    saved = load_file(str(out / "checkpoints" / "step-0000002" / "model.safetensors"))
    assert saved and all(".motion." in k for k in saved), sorted(saved)[:3]
    assert any(k.endswith("conv2.weight") and v.abs().max() > 0 for k, v in saved.items())
    # 3. the export: the base folder plus refiner_motion/, used by temporal renders
    model = FPDMPipeline.from_pretrained(out / "export")
    assert isinstance(model.refiner_motion, RefinerMotion)
    assert model.config.temporal_motion_module is True  # tiny_refiner_motion.yaml's default
    for k, v in base.refiner.state_dict().items():
        assert torch.equal(model.refiner.state_dict()[k], v), k
    img = load_frame(entry, 0)
    opts = {"steps": 2, "temporal": True}
    assert not np.array_equal(model(img, kp, **opts), base(img, kp, **opts))
    assert list((out / "samples").glob("refiner-motion-step*.png"))


def test_train_refiner_motion_needs_a_refiner_and_a_motion_module(prepared, tmp_path, capsys):
    plain = saved_tiny_model(tmp_path / "plain")
    assert _train(prepared, plain, tmp_path / "r") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refiner/" in err[0] and "motion_module/" in err[0]


def test_refiner_motion_config_errors_are_one_line():
    with pytest.raises(InputError, match=r"refiner_motion\.base_model is not set"):
        RefinerMotionTrainConfig().check()
    with pytest.raises(InputError, match="stride"):
        RefinerMotionTrainConfig(base_model="m", window=4, stride=5).check()
    with pytest.raises(InputError, match="render_overlap"):
        RefinerMotionTrainConfig(base_model="m", window=4, render_overlap=4).check()
    RefinerMotionTrainConfig(base_model="m").check()
