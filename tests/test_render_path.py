"""The render path's pieces (docs/render_path.md): image processor, chain guidance, render
options, the diffusers save/load with its allow-list and the earlier folder layout, and the
one denoising loop shared by renders and training sample grids."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import random_clip, randomize

from signgen.cli import main
from signgen.errors import InputError, MissingWeightsError
from signgen.models.config import load_model_config
from signgen.models.factory import build_components
from signgen.models.preprocess import tensor_to_uint8, uint8_to_tensor
from signgen.models.processor import FPDMImageProcessor
from signgen.sampling.guidance import (
    GuidancePlan,
    chain_coefficients,
    cumulative_guidance,
    fpdm_chain,
)
from signgen.sampling.loading import COMPONENT_CLASSES, default_model_path
from signgen.sampling.options import RenderOptions
from signgen.sampling.pipeline import FPDMPipeline

STEPS = 2


@pytest.fixture(scope="module")
def pipe() -> FPDMPipeline:
    p = FPDMPipeline.from_config(load_model_config("tiny"))
    randomize(p.pose_encoder, 1)  # zero-init conv_out would hide the pose path
    return p


# ---- image processor -------------------------------------------------------------------------------
def test_letterbox_points_map_to_hand_computed_model_pixels():
    # A 210x260 Phoenix frame into a 64x80 (W x H) model: the frame is wider than 0.8, so
    # its height is padded to round(210 * 80 / 64) = 262 (1 row on top, 1 below).
    proc = FPDMImageProcessor(resolution=(80, 64))
    pts = np.array([[105.0, 130.0, 1.0], [0.0, 0.0, 0.7], [210.0, 260.0, 1.0]], np.float32)
    got = proc.points_to_model(pts, (210, 260))
    want = [[105 * 64 / 210, 131 * 80 / 262, 1.0], [0.0, 1 * 80 / 262, 0.7],
            [64.0, 261 * 80 / 262, 1.0]]  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-6)
    squash = FPDMImageProcessor(resolution=(80, 64), resize_mode="squash")
    np.testing.assert_allclose(squash.points_to_model(pts, (210, 260)),
                               pts * [64 / 210, 80 / 260, 1.0], rtol=1e-6)  # fmt: skip


@pytest.mark.parametrize("mode", ["letterbox", "squash"])
def test_processor_round_trip(mode):
    proc = FPDMImageProcessor(resolution=(32, 24), resize_mode=mode)
    # A frame at the model size passes through unchanged, both ways.
    img, _ = random_clip(frames=1, size=(24, 32))
    x = proc.preprocess(img[None], mean=(0, 0, 0), std=(1, 1, 1))  # (1, 3, 32, 24) in [0, 1]
    assert torch.equal(x, uint8_to_tensor(img))
    np.testing.assert_array_equal(tensor_to_uint8(proc.postprocess(x, [(24, 32)])[0])[0], img)
    # Another size: back at the frame's exact size; a smooth frame comes back close.
    h, w = 50, 30
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1)
    smooth = smooth.astype(np.uint8)
    back = proc.postprocess(proc.preprocess(smooth[None], mean=(0, 0, 0), std=(1, 1, 1)), [(w, h)])
    assert back[0].shape == (1, 3, h, w)
    assert np.abs(tensor_to_uint8(back[0])[0].astype(int) - smooth).mean() < 6
    # The pose is drawn where the frame's pixels land: the model size, same geometry.
    poses = proc.draw_poses(np.zeros((2, 133, 3), np.float32), [(w, h), (24, 32)])
    assert poses.shape == (2, 32, 24, 3) and poses.dtype == np.uint8


def test_squash_resamples_like_pil_bicubic():
    from PIL import Image

    proc = FPDMImageProcessor(resolution=(80, 64), resize_mode="squash", source_size=(48, 48))
    rng = np.random.default_rng(0)
    # Network inputs: exactly PIL's Image.resize(size, BICUBIC), the published FPDM code's,
    # for the VAE and for the source encoder (then normalised), numpy or torch frames.
    for size in ((260, 210), (40, 30)):  # shrink and enlarge
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        pil = np.asarray(Image.fromarray(img).resize((64, 80), Image.Resampling.BICUBIC))
        x = proc.preprocess(img[None], mean=(0, 0, 0), std=(1, 1, 1))
        assert torch.equal(x, uint8_to_tensor(pil))
        pil = np.asarray(Image.fromarray(img).resize((48, 48), Image.Resampling.BICUBIC))
        mean = torch.tensor(proc.source_mean).view(1, 3, 1, 1)
        std = torch.tensor(proc.source_std).view(1, 3, 1, 1)
        want = (uint8_to_tensor(pil) - mean) / std
        assert torch.equal(proc.source_pixels(torch.from_numpy(img)[None]), want)
    # Outputs (float images back to the frame's size): the same filter without PIL's uint8
    # rounding between its two passes; on a smooth frame that is within a level.
    yy, xx = np.mgrid[0:80, 0:64]
    smooth = np.stack([xx * 3, yy * 3, xx + yy], -1).astype(np.uint8)
    pil = np.asarray(Image.fromarray(smooth).resize((210, 260), Image.Resampling.BICUBIC))
    x = uint8_to_tensor(smooth)
    ours = tensor_to_uint8(proc.postprocess(x, [(210, 260)])[0])[0]
    assert np.abs(ours.astype(int) - pil).max() <= 1
    letterbox = FPDMImageProcessor(resolution=(80, 64))
    assert np.abs(tensor_to_uint8(letterbox.postprocess(x, [(210, 260)])[0])[0].astype(int)
                  - pil).max() > 1  # the check can fail: letterbox is another geometry  # fmt: skip
    with pytest.raises(ValueError, match="resize_mode"):
        FPDMImageProcessor(resize_mode="crop")


def test_resize_mode_is_saved_with_the_model_and_used_by_the_render(tmp_path):
    letterbox = FPDMPipeline.from_config(load_model_config("tiny"))
    squash = FPDMPipeline.from_config(load_model_config("tiny", ["resize_mode=squash"]))
    for pipe in (letterbox, squash):  # same seed: same weights, only the geometry differs
        randomize(pipe.pose_encoder, 1)
    assert squash.ipf is not None and squash.ipf.resize_mode == "squash"
    squash.save_pretrained(tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["image_processor"]["resize_mode"] == "squash"
    assert json.loads((tmp_path / "m" / "ipf" / "config.json").read_text())["resize_mode"] == (
        "squash"
    )
    loaded = FPDMPipeline.from_pretrained(tmp_path / "m")
    assert dict(loaded.image_processor.config) == dict(squash.image_processor.config)
    assert loaded.ipf.resize_mode == "squash"
    img, kp = random_clip(frames=2, size=(40, 17))  # far from the model's square
    a, b = loaded(img, kp, steps=STEPS), letterbox(img, kp, steps=STEPS)
    assert a.shape == b.shape == (2, 17, 40, 3)
    assert np.abs(a.astype(int) - b).mean() > 1
    np.testing.assert_array_equal(a, squash(img, kp, steps=STEPS))


def test_ipf_of_another_geometry_is_refused():
    """Stage 1 and stage 2 see frames in one geometry: a letterbox IPF in a squash model
    (or the reverse) is a clear error, not a silent mismatch."""
    pipe = FPDMPipeline.from_config(load_model_config("tiny"))
    processor = FPDMImageProcessor(**{**pipe.image_processor.config, "resize_mode": "squash"})
    with pytest.raises(InputError, match=r"resize_mode 'letterbox'.*'squash'"):
        FPDMPipeline(**pipe.components, image_processor=processor)


# ---- cumulative guidance: the chain formula -------------------------------------------------------
@pytest.mark.parametrize("weights", [(0.5,), (2.0, 3.0), (2.0, 4.0, 3.0), (1.0, 1.0, 1.0)])
def test_chain_formula_against_its_hand_expansion(weights):
    g = torch.Generator().manual_seed(len(weights))
    e = [torch.randn(2, 4, 3, 3, generator=g) for _ in range(len(weights) + 1)]
    hand = {  # eps_0 + sum_k w_k (eps_k - eps_{k-1}), written out per chain length
        1: lambda w: e[0] + w[0] * (e[1] - e[0]),
        2: lambda w: e[0] + w[0] * (e[1] - e[0]) + w[1] * (e[2] - e[1]),
        3: lambda w: e[0] + w[0] * (e[1] - e[0]) + w[1] * (e[2] - e[1]) + w[2] * (e[3] - e[2]),
    }[len(weights)](weights)
    torch.testing.assert_close(cumulative_guidance(e, weights), hand)
    assert sum(chain_coefficients(weights)) == pytest.approx(1.0)


def test_zero_weight_branches_are_skipped_by_a_real_switch():
    g = torch.Generator().manual_seed(0)
    e = [torch.randn(2, 4, 3, 3, generator=g) for _ in range(4)]
    for focal, weights, run in [(False, (2.0, 2.0), (0, 2)), (False, (1.0, 1.0), (2,)),
                                (True, (1.0, 1.0, 1.0), (3,)), (True, (2.0, 3.0, 3.0), (0, 1, 3))]:  # fmt: skip
        chain = fpdm_chain(focal)
        preds = e[: len(chain)]
        plan = GuidancePlan(chain, weights)
        assert plan.run == run
        torch.testing.assert_close(plan.combine(torch.cat([preds[k] for k in run])),
                                   cumulative_guidance(preds, weights))  # fmt: skip
        every = GuidancePlan(chain, weights, skip_zero=False)
        assert every.run == tuple(range(len(chain)))
        torch.testing.assert_close(every.combine(torch.cat(preds)), plan.combine(
            torch.cat([preds[k] for k in run])))  # fmt: skip
    with pytest.raises(ValueError, match="non-zero guidance weight"):
        cumulative_guidance([e[0], None, e[2]], (2.0, 3.0))  # eps_src has weight -1


# ---- render options ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "match"),
    [({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"batch_size": -1}, "batch size"),
     ({"guidance": (1.0,)}, "guidance"), ({"guidance": (1.0, float("nan"))}, "guidance"),
     ({"guidance_focal": float("inf")}, "focal"), ({"detail_transfer": -0.5}, "detail-transfer"),
     ({"scheduler": "heun"}, "scheduler"), ({"dtype": "fp8"}, "dtype"), ({"seed": -1}, "seed")],
)  # fmt: skip
def test_options_are_validated_when_made(changes, match):
    with pytest.raises(InputError, match=match) as info:
        RenderOptions(**changes)
    assert "\n" not in str(info.value)
    opts = RenderOptions(guidance=[2, 2], scheduler="DPMPP", detail_transfer=1)
    assert opts.guidance == (2.0, 2.0) and opts.scheduler == "dpm++"
    assert opts.detail_transfer == 1.0


def _render_cli(tmp_path: Path, model: Path, *extra: str) -> int:
    img, seq = random_clip(frames=2, size=(24, 24))
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "first.png")
    seq.save(tmp_path / "seq.json")
    return main(["render", "--video", str(tmp_path / "first.png"), "--keypoints",
                 str(tmp_path / "seq.json"), "--model", str(model), "-o",
                 str(tmp_path / "out.mp4"), *extra])  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [["--steps", "0"], ["--batch-size", "0"], ["--guidance", "1", "nan"],
     ["--detail-transfer", "-1"], ["--scheduler", "heun"], ["--guidance-focal", "2"]],
)  # fmt: skip
def test_bad_render_options_are_one_line_and_no_output(pipe, tmp_path, capsys, bad):
    model = pipe.save_pretrained(tmp_path / "model")
    capsys.readouterr()
    assert _render_cli(tmp_path, model, *bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("signgen: error:"), err
    assert not (tmp_path / "out.mp4").exists()


def test_signgen_render_validates_its_options_once(pipe, tmp_path, monkeypatch):
    checks = []
    validate = RenderOptions.__post_init__

    def counting(self):
        checks.append(self)
        validate(self)

    monkeypatch.setattr(RenderOptions, "__post_init__", counting)
    model = pipe.save_pretrained(tmp_path / "model")
    assert _render_cli(tmp_path, model, "--steps", "1", "--guidance", "2", "3") == 0
    assert len(checks) == 1 and checks[0].guidance == (2.0, 3.0)


def test_render_and_render_many_declare_the_same_render_options():
    from pipelines.app import build_parser
    from pipelines.render_many import RenderSettings
    from signgen.sampling.options import options_from_args

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    flags = {name: {s for a in sub.choices[name]._actions for s in a.option_strings}
             for name in ("render", "render-many")}  # fmt: skip
    shared = {"--steps", "--guidance", "--guidance-focal", "--detail-transfer", "--scheduler",
              "--dtype", "--independent-noise"}  # fmt: skip
    assert shared <= flags["render"] and shared <= flags["render-many"]
    args = parser.parse_args(["render-many", "--manifest", "m.csv", "--out", "o",
                              "--detail-transfer", "0.3", "--steps", "5"])  # fmt: skip
    render = options_from_args(args, clip=False, cls=RenderSettings, model=None)
    assert isinstance(render, RenderOptions)
    assert (render.detail_transfer, render.steps) == (0.3, 5)


def test_render_pairs_declares_the_render_options_of_render():
    """render-pairs takes the sampler options of render from the same declaration (the
    clip-only options left out: it renders one image per pair)."""
    from pipelines.app import build_parser
    from signgen.sampling.options import options_from_args

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    flags = {s for a in sub.choices["render-pairs"]._actions for s in a.option_strings}
    assert {"--steps", "--guidance", "--scheduler", "--dtype", "--seed", "--batch-size"} <= flags
    assert not {"--guidance-focal", "--detail-transfer", "--independent-noise"} & flags
    args = parser.parse_args(["render-pairs", "--prepared", "p", "--model", "m", "-o", "o",
                              "--scheduler", "euler", "--steps", "7"])  # fmt: skip
    opts = options_from_args(args)
    assert (opts.scheduler, opts.steps, opts.guidance) == ("euler", 7, None)


# ---- the model's default steps and sampler ---------------------------------------------------------
@pytest.fixture
def steps_seen(monkeypatch) -> list[int]:
    """The step count of every denoising loop the pipeline runs."""
    import signgen.sampling.pipeline as pipeline_module

    seen: list[int] = []
    denoise = pipeline_module.denoise

    def spy(denoiser, sched, cond, noise, plan, steps, **kwargs):
        seen.append(steps)
        return denoise(denoiser, sched, cond, noise, plan, steps, **kwargs)

    monkeypatch.setattr(pipeline_module, "denoise", spy)
    return seen


def test_default_steps_are_the_models_and_saved_with_it(tmp_path, steps_seen):
    p = FPDMPipeline.from_config(load_model_config("tiny", ["steps=3"]))
    folder = p.save_pretrained(tmp_path / "m")
    assert json.loads((folder / "model_index.json").read_text())["steps"] == 3
    loaded = FPDMPipeline.from_pretrained(folder)
    img, kp = random_clip(frames=1, size=(24, 24))
    loaded(img, kp)
    loaded(img, kp, steps=2)
    assert steps_seen == [3, 2]
    assert _render_cli(tmp_path, folder) == 0  # the CLI without --steps: the model's
    assert steps_seen[2:] == [3]
    index = json.loads((folder / "model_index.json").read_text())
    del index["steps"]  # a folder written before models carried their step count
    (folder / "model_index.json").write_text(json.dumps(index))
    assert FPDMPipeline.from_pretrained(folder).default_steps == 20  # the paper's


# ---- save / load -----------------------------------------------------------------------------------
def _state(p: FPDMPipeline) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name, m in p.components.items()
            if isinstance(m, torch.nn.Module) for k, v in m.state_dict().items()}  # fmt: skip


def test_save_load_round_trip_is_diffusers_own(tmp_path):
    cfg = load_model_config("tiny_mcld", ["detail_transfer=0.3", "guidance=[1.5, 2.5]"])
    p = FPDMPipeline.from_config(cfg)
    randomize(p.focal_adapter, 2, 0.05)
    folder = p.save_pretrained(tmp_path / "m")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "FPDMPipeline" and "_diffusers_version" in index
    assert index["ipf"] == ["signgen.models.ipf", "IPFModel"]
    assert index["focal_adapter"] == ["signgen.models.mcld", "FocalAdapter"]
    assert (folder / "ipf" / "diffusion_pytorch_model.safetensors").is_file()  # one ModelMixin
    assert index["guidance"] == [1.5, 2.5] and index["detail_transfer"] == 0.3
    assert index["image_processor"]["resolution"] == [32, 32]
    loaded = FPDMPipeline.from_pretrained(folder)
    assert type(loaded) is FPDMPipeline
    mine, theirs = _state(p), _state(loaded)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert dict(loaded.image_processor.config) == dict(p.image_processor.config)
    assert (loaded.default_guidance, loaded.detail_transfer) == ((1.5, 2.5), 0.3)


def _write_earlier_layout(new: Path, old: Path) -> None:
    """The folder layout written before the pipeline was a DiffusionPipeline: short
    ``signgen`` library names, resolution + source_preprocess, and the IPF as
    ipf_config.json + vision_model/ (transformers) + combiner/ (diffusers)."""
    from signgen.models.ipf import IPFModel

    shutil.copytree(new, old)
    index = json.loads((new / "model_index.json").read_text())
    proc = index.pop("image_processor")
    out = {"_class_name": "FPDMPipeline", "_signgen_version": "0.1.0"}
    for name in COMPONENT_CLASSES:
        lib, cls = index[name]
        out[name] = ["signgen" if lib and lib.startswith("signgen.") else lib, cls]
    out["resolution"] = proc["resolution"]
    out["source_preprocess"] = {"image_size": proc["source_size"], "mean": proc["source_mean"],
                                "std": proc["source_std"]}  # fmt: skip
    out["guidance"] = index["guidance"]
    (old / "model_index.json").write_text(json.dumps(out))
    ipf = IPFModel.from_pretrained(new / "ipf")
    shutil.rmtree(old / "ipf")
    ipf.vision_model.save_pretrained(old / "ipf" / "vision_model")
    ipf.combiner.save_pretrained(old / "ipf" / "combiner")
    meta = {"image_size": list(ipf.image_size), "mean": list(ipf.mean), "std": list(ipf.std),
            "mode": ipf.mode}  # fmt: skip
    (old / "ipf" / "ipf_config.json").write_text(json.dumps(meta))


def test_folders_of_the_earlier_layout_load_unchanged(pipe, tmp_path):
    new = pipe.save_pretrained(tmp_path / "new")
    _write_earlier_layout(new, tmp_path / "old")
    old = FPDMPipeline.from_pretrained(tmp_path / "old")
    mine, theirs = _state(pipe), _state(old)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert dict(old.image_processor.config) == dict(pipe.image_processor.config)
    img, kp = random_clip(frames=2)
    np.testing.assert_array_equal(old(img, kp, steps=STEPS), pipe(img, kp, steps=STEPS))


def test_the_bundled_demo_model_loads_with_the_weights_on_disk():
    from safetensors.torch import load_file
    from transformers import PreTrainedModel

    folder = default_model_path()
    if not (folder / "model_index.json").is_file():
        pytest.skip("no bundled demo model")
    p = FPDMPipeline.from_pretrained(folder)
    for name, module in p.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        if isinstance(module, PreTrainedModel):  # transformers renames keys when it loads
            on_disk = type(module).from_pretrained(folder / name).state_dict()
        else:
            on_disk = {}
            for f in sorted((folder / name).rglob("*.safetensors")):
                # The IPF of the earlier layout keeps two files, under their modules' names.
                prefix = "" if f.parent == folder / name else f"{f.parent.name}."
                on_disk.update({prefix + k: v for k, v in load_file(str(f)).items()})
        state = {k: v for k, v in module.state_dict().items() if "position_ids" not in k}
        on_disk = {k: v for k, v in on_disk.items() if "position_ids" not in k}
        assert state.keys() == on_disk.keys(), name
        assert all(torch.equal(state[k], on_disk[k]) for k in state), name
    assert p.image_processor.resolution == (80, 64)
    # the source refiner replaced the detail transfer (README, "The demo model")
    assert p.denoiser.source_residual and p.detail_transfer == 0 and p.refiner is not None


def test_a_model_folder_names_only_allowed_classes_and_runs_no_code(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "m")
    marker = tmp_path / "imported"
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Thing: pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        index = json.loads((folder / "model_index.json").read_text())
        index["unet"] = ["evilmod", "Thing"]
        (folder / "model_index.json").write_text(json.dumps(index))
        with pytest.raises(MissingWeightsError, match=r"unsupported class evilmod\.Thing"):
            FPDMPipeline.from_pretrained(folder)
        assert not marker.exists() and "evilmod" not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))
    folder = pipe.save_pretrained(tmp_path / "m2")
    (folder / "None.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(MissingWeightsError, match="Python files"):
        FPDMPipeline.from_pretrained(folder)
    assert not marker.exists()


def test_the_allow_list_names_every_sampler():
    from signgen.models.schedulers import SCHEDULERS

    assert {("diffusers", cls.__name__) for cls, _ in SCHEDULERS.values()} == set(
        COMPONENT_CLASSES["scheduler"]
    )


# ---- one denoising loop: training sample grids ------------------------------------------------------
@pytest.mark.parametrize("model", ["tiny", "tiny_mcld"])
def test_training_sample_grid_is_the_render_for_the_same_seed(model):
    """FPDMModule.sample (the training grids) runs the pipeline's loop: for a first frame at
    the model size (no resampling) it gives exactly the frame `signgen render` gives."""
    from signgen.train.config import TrainConfig
    from signgen.train.fpdm import FPDMModule

    cfg = load_model_config(model, ["scheduler.name=ddpm"])  # ancestral: noise every step
    comps = build_components(cfg)
    randomize(comps["pose_encoder"], 1)
    module = FPDMModule(comps, cfg, TrainConfig())
    pipe = FPDMPipeline.from_components(cfg, comps)
    img, kp = random_clip(frames=2, size=(32, 32), seed=4)
    sizes = [(32, 32)] * 2
    batch = {
        "source": torch.from_numpy(np.stack([img, img])),
        "target_pose": uint8_to_tensor(pipe.image_processor.draw_poses(kp.points, sizes)),
        "source_keypoints": torch.from_numpy(np.stack([kp.points[0]] * 2)),
    }
    grid = module.sample(batch, STEPS, 2.0, 3.0, seed=5)
    opts = RenderOptions(steps=STEPS, guidance=(2.0, 3.0), seed=5)
    clip = pipe.prepare_clip(img, opts, kp.points[0])
    frames = pipe.render_frames([clip, clip], kp.points, [0, 0], opts)
    np.testing.assert_array_equal(tensor_to_uint8(grid), np.stack(frames))
    other = module.sample(batch, STEPS, 2.0, 3.0, seed=6)
    assert not torch.equal(other, grid)


def test_every_allow_listed_library_is_imported_before_diffusers_loads():
    """diffusers resolves a component's class in modules already imported: every library the
    allow-list names must be imported by the loader (a new one added to COMPONENT_CLASSES
    without an import would make its folders unloadable)."""
    import sys

    from signgen.sampling.loading import COMPONENT_CLASSES
    from signgen.sampling.pipeline import _import_component_libraries

    _import_component_libraries()
    libraries = {lib for pairs in COMPONENT_CLASSES.values() for lib, _ in pairs}
    assert libraries and all(lib in sys.modules for lib in libraries), libraries
