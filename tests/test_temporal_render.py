"""Temporal renders (`signgen render --temporal`, FPDMPipeline.render_clips): the windowed
path of the one denoising loop, the motion module in model folders, the options."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import MotionAdapter
from model_helpers import random_clip, randomize
from PIL import Image

from signgen.cli import main
from signgen.errors import InputError, MissingWeightsError
from signgen.keypoints.sequence import KeypointSequence
from signgen.models.config import load_model_config
from signgen.models.motion import (
    MOTION_FOLDER,
    MotionModuleConfig,
    build_motion_module,
    render_defaults,
    save_motion_module,
    set_render_defaults,
)
from signgen.models.preprocess import uint8_to_tensor
from signgen.sampling.loading import MOTION_MODULE
from signgen.sampling.loop import decode, initial_noise
from signgen.sampling.options import RenderOptions
from signgen.sampling.pipeline import FPDMPipeline

MOTION = MotionModuleConfig(num_attention_heads=4, norm_num_groups=8, max_frames=16)
STEPS = 2


def _pipe(name: str = "tiny", trained_motion: bool = False, overrides=()) -> FPDMPipeline:
    p = FPDMPipeline.from_config(load_model_config(name, list(overrides)))
    randomize(p.denoiser, 1)  # zero-initialised layers (pose encoder, conv_out) hide paths
    motion = build_motion_module(p.unet, MOTION)
    if trained_motion:
        randomize(motion, 2, std=0.2)  # every motion layer acts
    p.register_modules(motion_module=motion.eval().requires_grad_(False))
    return p


def _clip(frames: int, seed: int = 0) -> tuple[np.ndarray, KeypointSequence]:
    return random_clip(frames=frames, size=(26, 30), seed=seed)


def test_motion_module_folder_name_is_the_loaders():
    assert MOTION_MODULE == MOTION_FOLDER


# ---- the acceptance properties ----------------------------------------------------------------
@pytest.mark.parametrize(("name", "overrides"), [
    ("tiny", []),
    ("tiny_mcld", []),
    ("tiny", ["unet.config.in_channels=8", "unet.source_residual=true",
              "scheduler.prediction_type=sample", "detail_transfer=0.25"]),
], ids=["fpdm", "mcld", "spatial-source-residual"])  # fmt: skip
def test_untrained_motion_module_renders_the_per_frame_frames(name, overrides):
    """Zero-initialised motion module: the temporal render (windows of 4 overlapping by 2
    over 11 frames, blended) gives the per-frame render's frames, same seed and noise."""
    pipe = _pipe(name, overrides=overrides)
    img, kp = _clip(11)
    opts = RenderOptions(steps=STEPS, independent_noise=True, seed=3)
    per_frame = pipe(img, kp, opts)
    temporal = pipe(img, kp, opts.replace(temporal=True, window=4, overlap=2))
    assert temporal.shape == per_frame.shape == (11, 30, 26, 3)
    diff = np.abs(temporal.astype(int) - per_frame)
    # Equal but for float rounding (the UNet sees other batches): a rare 1/255.
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    randomize(pipe.motion_module, 2, std=0.2)  # the comparison can fail
    moved = pipe(img, kp, opts.replace(temporal=True, window=4, overlap=2))
    assert np.abs(moved.astype(int) - per_frame).max() > 10


def _reference(pipe: FPDMPipeline, img: np.ndarray, kp: KeypointSequence, opts) -> np.ndarray:
    """The clip denoised as ONE window by a plain loop written here from public pieces:
    every frame through the temporal denoiser together, guidance, the scheduler's step."""
    plan = pipe.guidance_plan(opts)
    nb, n = plan.num_branches, len(kp)
    src = pipe.encode_source(img)
    sizes = [(img.shape[1], img.shape[0])] * n
    pose = uint8_to_tensor(pipe.image_processor.draw_poses(kp.points, sizes))
    fusion = pipe.ipf.fuse(
        src.clip_emb.expand(n, -1),
        pipe.ipf.embed(pipe.ipf.preprocess(pipe.image_processor.draw_poses(
            kp.points, sizes, pipe.ipf.image_size))),
    )  # fmt: skip
    cond = pipe.denoiser.encode_conditions(
        pose.repeat(nb, 1, 1, 1), src.hidden, fusion.repeat(nb, 1), **plan.drop_masks(n)
    )
    h, w = (v // pipe.vae_scale_factor for v in pipe.resolution)
    noise, _ = initial_noise([opts.seed] * n, range(n), (pipe.unet.config.out_channels, h, w),
                             independent=opts.independent_noise)  # fmt: skip
    sched = pipe.make_scheduler()
    sched.set_timesteps(opts.steps)
    lat = noise * sched.init_noise_sigma
    for t in sched.timesteps:
        x = sched.scale_model_input(torch.cat([lat] * nb), t)
        pred = pipe.temporal_denoiser.denoise(x, t.expand(nb * n), cond, num_frames=n)
        lat = sched.step(plan.combine(pred), t, lat).prev_sample
    images = pipe.image_processor.postprocess(decode(pipe.vae, lat), sizes)
    return np.stack([(f[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
                     for f in images])  # fmt: skip


def test_windows_with_overlap_give_one_windows_frames_when_the_clip_fits_in_one():
    """A clip of 6 frames, a trained (random) motion module: windows of 8 overlapping by 4,
    of 6 by 2 and of 16 without overlap all render the frames of one window of 6 frames,
    i.e. those of the plain joint loop over the whole clip."""
    pipe = _pipe(trained_motion=True)
    img, kp = _clip(6)
    opts = RenderOptions(steps=STEPS, independent_noise=True, temporal=True)
    renders = [
        pipe(img, kp, opts.replace(window=w, overlap=o)) for w, o in ((8, 4), (6, 2), (16, 0))
    ]
    assert all(np.array_equal(r, renders[0]) for r in renders[1:])
    with torch.no_grad():
        reference = _reference(pipe, img, kp, opts)
    assert np.abs(renders[0].astype(int) - reference).max() <= 1
    # ...and the motion module acts: the per-frame render of the clip differs.
    per_frame = pipe(img, kp, opts.replace(temporal=False, window=None, overlap=None))
    assert np.abs(per_frame.astype(int) - reference).max() > 10


def test_clips_rendered_together_or_alone_and_in_other_batches_give_the_same_frames():
    pipe = _pipe(trained_motion=True)
    (img_a, kp_a), (img_b, kp_b) = _clip(13, seed=0), _clip(3, seed=1)
    opts = RenderOptions(steps=STEPS, temporal=True, window=4, overlap=1, independent_noise=True)
    clips, points, seeds = [pipe.prepare_clip(img_a, opts), pipe.prepare_clip(img_b, opts)], \
        [kp_a.points, kp_b.points], [5, 9]  # fmt: skip

    def render(ks: list[int], batch_size: int) -> dict[int, np.ndarray]:
        out: dict[int, list[np.ndarray]] = {k: [] for k in ks}
        for j, frames in pipe.render_clips([clips[k] for k in ks], [points[k] for k in ks],
                                           opts.replace(batch_size=batch_size),
                                           seeds=[seeds[k] for k in ks]):  # fmt: skip
            out[ks[j]].append(frames)
        return {k: np.concatenate(v) for k, v in out.items()}

    together = render([0, 1], batch_size=16)  # 4 windows per call: the clips share calls
    alone = {**render([0], batch_size=4), **render([1], batch_size=8)}
    assert together[0].shape == (13, 30, 26, 3) and together[1].shape == (3, 30, 26, 3)
    for k in (0, 1):
        assert np.abs(together[k].astype(int) - alone[k]).max() <= 1, k


def test_render_clips_seeds_each_clip_on_its_own():
    pipe = _pipe(trained_motion=True)
    img, kp = _clip(5)
    opts = RenderOptions(steps=STEPS, temporal=True, window=4, overlap=2)
    clip = pipe.prepare_clip(img, opts)
    out = [
        f for _, f in pipe.render_clips([clip, clip], [kp.points, kp.points], opts, seeds=[1, 2])
    ]
    first, second = out[0], out[1]
    assert np.abs(first.astype(int) - second).max() > 0  # other seed, other frames
    alone = pipe(img, kp, opts.replace(seed=1))
    assert np.abs(first.astype(int) - alone).max() <= 1


def test_ancestral_and_multistep_schedulers_step_each_run_like_a_batch():
    """DDPM (ancestral noise from the frames' generators) and DPM-Solver++ (history per
    scheduler): an untrained module still renders the per-frame frames."""
    pipe = _pipe()
    img, kp = _clip(9)
    for scheduler in ("ddpm", "dpm++", "euler"):
        opts = RenderOptions(steps=3, independent_noise=True, scheduler=scheduler, seed=1)
        per_frame = pipe(img, kp, opts)
        temporal = pipe(img, kp, opts.replace(temporal=True, window=4, overlap=2))
        assert np.abs(temporal.astype(int) - per_frame).max() <= 1, scheduler


# ---- options and model folders ----------------------------------------------------------------
def test_temporal_options_are_checked_when_made_and_against_the_model():
    with pytest.raises(InputError, match="--temporal"):
        RenderOptions(window=8)
    with pytest.raises(InputError, match="overlap must be smaller"):
        RenderOptions(temporal=True, window=4, overlap=4)
    with pytest.raises(InputError, match="taper"):
        RenderOptions(temporal=True, taper="cosine")
    pipe = _pipe()
    with pytest.raises(InputError, match="longer than this motion module"):
        pipe.guidance_plan(RenderOptions(temporal=True, window=32))
    set_render_defaults(pipe.motion_module, 6, 3, "uniform")
    assert pipe.temporal_settings(RenderOptions(temporal=True)) == (6, 3, "uniform")
    assert pipe.temporal_settings(RenderOptions(temporal=True, overlap=0)) == (6, 0, "uniform")
    plain = FPDMPipeline.from_config(load_model_config("tiny"))
    with pytest.raises(InputError, match="motion module"):
        plain.guidance_plan(RenderOptions(temporal=True))


def test_a_model_folder_saves_and_loads_its_motion_module(tmp_path):
    pipe = _pipe(trained_motion=True)
    set_render_defaults(pipe.motion_module, 8, 2, "linear")
    folder = pipe.save_pretrained(tmp_path / "m")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["motion_module"] == ["diffusers", "MotionAdapter"]
    loaded = FPDMPipeline.from_pretrained(folder)
    for k, v in pipe.motion_module.state_dict().items():
        assert torch.equal(loaded.motion_module.state_dict()[k], v), k
    assert render_defaults(loaded.motion_module) == (8, 2, "linear")
    # A per-frame folder with a motion_module/ added (the export of `signgen train motion`,
    # the bundled demo model): loaded though model_index.json does not list it.
    plain = FPDMPipeline.from_config(load_model_config("tiny")).save_pretrained(tmp_path / "p")
    assert FPDMPipeline.from_pretrained(plain).motion_module is None
    save_motion_module(pipe.motion_module, plain)
    listed = json.loads((plain / "model_index.json").read_text()).get("motion_module")
    assert listed in (None, [None, None])
    added = FPDMPipeline.from_pretrained(plain)
    assert added.motion_module is not None
    assert added.temporal_settings(RenderOptions(temporal=True)) == (8, 2, "linear")


def test_motion_module_folders_of_other_classes_or_shapes_are_refused(tmp_path):
    pipe = _pipe()
    folder = FPDMPipeline.from_config(load_model_config("tiny")).save_pretrained(tmp_path / "m")
    save_motion_module(pipe.motion_module, folder)
    cfg = folder / MOTION_FOLDER / "config.json"
    data = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**data, "_class_name": "UNetMotionModel"}))
    with pytest.raises(MissingWeightsError, match="unsupported class"):
        FPDMPipeline.from_pretrained(folder)
    cfg.write_text(json.dumps(data))
    other = MotionAdapter(block_out_channels=(8, 8), motion_layers_per_block=1,
                          motion_num_attention_heads=2, motion_norm_num_groups=4,
                          use_motion_mid_block=False)  # fmt: skip
    save_motion_module(other, folder)  # made for a UNet of other widths
    with pytest.raises(MissingWeightsError, match="motion module does not fit this UNet"):
        FPDMPipeline.from_pretrained(folder)


def _render_cli(tmp_path: Path, model: Path, *extra: str) -> int:
    img, kp = _clip(7)
    Image.fromarray(img).save(tmp_path / "first.png")
    kp.save(tmp_path / "seq.json")
    return main(["render", "--video", str(tmp_path / "first.png"), "--keypoints",
                 str(tmp_path / "seq.json"), "--model", str(model), "-o",
                 str(tmp_path / "out.mp4"), "--steps", "1", *extra])  # fmt: skip


def test_render_temporal_without_a_motion_module_is_one_error_line(tmp_path, capsys):
    model = FPDMPipeline.from_config(load_model_config("tiny")).save_pretrained(tmp_path / "m")
    capsys.readouterr()  # saving's own progress output
    assert _render_cli(tmp_path, model, "--temporal") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "motion module" in err[0], err
    assert not (tmp_path / "out.mp4").exists()
    assert _render_cli(tmp_path, model, "--window", "4") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--temporal" in err[0], err


def test_render_temporal_through_the_cli_is_the_api_render(tmp_path):
    pipe = _pipe(trained_motion=True)
    model = pipe.save_pretrained(tmp_path / "m")
    args = ("--temporal", "--window", "4", "--overlap", "2", "--taper", "uniform",
            "--independent-noise", "--frames-dir", str(tmp_path / "frames"))  # fmt: skip
    assert _render_cli(tmp_path, model, *args) == 0
    got = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "frames").iterdir())])
    img, kp = _clip(7)
    want = FPDMPipeline.from_pretrained(model)(
        img, kp, steps=1, temporal=True, window=4, overlap=2, taper="uniform",
        independent_noise=True,
    )  # fmt: skip
    diff = np.abs(got.astype(int) - want)
    # The same frames up to float rounding (the command line's own batches): a rare 1/255.
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())


# ---- memory: flat in the clip's length --------------------------------------------------------
CHILD = """
import json, resource, sys
from signgen.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _peak_rss(tmp_path: Path, model: Path, frames: int) -> int:
    """Peak RSS (KiB) of `signgen render --temporal` of a ``frames``-frame clip, alone in a
    fresh process."""
    import os
    import subprocess

    img, kp = random_clip(frames=frames, size=(210, 260), seed=0)
    Image.fromarray(img).save(tmp_path / "first.png")
    kp.save(tmp_path / f"seq{frames}.json")
    cmd = [sys.executable, "-c", CHILD, "render", "--video", str(tmp_path / "first.png"),
           "--keypoints", str(tmp_path / f"seq{frames}.json"), "--model", str(model),
           "-o", str(tmp_path / f"out{frames}.mp4"), "--steps", "1", "--temporal",
           "--window", "16", "--overlap", "4", "--batch-size", "32"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert res.returncode == 0 and lines, res.stderr[-2000:]
    out = json.loads(lines[-1])
    assert out["rc"] == 0
    return int(out["peak_kib"])


@pytest.mark.slow
def test_a_2000_frame_clip_renders_in_the_memory_of_a_100_frame_one(tmp_path):
    """Peak RSS of a 2,000-frame temporal render within 1.3x of a 100-frame one (tiny
    model, 1 step, 260 x 210 output). Keeping the clip's output frames (164 kB each) or its
    pose images would add ~330 MB to a peak of ~1.1 GB, over the bound."""
    model = _pipe().save_pretrained(tmp_path / "m")
    short, long = _peak_rss(tmp_path, model, 100), _peak_rss(tmp_path, model, 2000)
    assert long <= 1.3 * short, (short, long)


class LiveTensorBytes:
    """Peak bytes of live CPU tensor storages while active (a dispatch-level allocation
    counter: torch's CPU allocator reports nothing, and tracemalloc sees numpy only)."""

    def __init__(self) -> None:
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0
        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for k in [k for k, (ref, _) in live.items() if ref.expired()]:
                    del live[k]
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr():
                        st = t.untyped_storage()
                        live.setdefault(st.data_ptr(), (StorageWeakRef(st), st.nbytes()))
                counter.peak = max(counter.peak, sum(n for _, n in live.values()))
                return out

        self.mode = Mode()

    def __enter__(self) -> LiveTensorBytes:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mode.__exit__(*exc)


def _loop_peak(frames: int, windows_per_call: int) -> int:
    """Peak live tensor bytes of the windowed loop (signgen.sampling.loop.sample) over a
    clip of ``frames`` latents (4 x 8 x 8 float32, 1 kB a frame: 2 MB for 2,000 frames,
    held on purpose), windows of 16 overlapping by 4, one step. The stand-in model holds
    activations of 1 MB a frame of its call, as a UNet does (far more for a real one)."""
    from signgen.models.schedulers import make_scheduler
    from signgen.sampling.loop import sample
    from signgen.sampling.windows import window_plan, window_weights

    def predict(spans, model_input, t):
        x = torch.cat([model_input(s, e) for s, e in spans])  # (n*L, 4, 8, 8)
        act = x.repeat(1, 1024, 1, 1)  # (n*L, 4096, 8, 8): 1 MB a frame
        return act.view(len(spans), -1, 1024, *x.shape[1:]).mean(2)  # (n, L, 4, 8, 8)

    plan = window_plan(frames, 16, 4)
    noise = torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with LiveTensorBytes() as counter:
        sample(predict, make_scheduler("ddim"), noise, 1, windows=plan,
               weights=window_weights(plan, "linear"), windows_per_call=windows_per_call)  # fmt: skip
    return counter.peak


def test_the_windowed_loop_holds_a_2000_frame_clip_in_the_memory_of_a_100_frame_one():
    """Only the windows of one model call are in flight: peak tensor memory of 2,000
    frames within 1.3x of 100 frames. Predicting every window of the clip in one call (no
    streaming) is far over; the counter sees it."""
    short, long = _loop_peak(100, 1), _loop_peak(2000, 1)
    assert long <= 1.3 * short, (short, long)
    assert _loop_peak(2000, 10_000) > 5 * short  # all windows at once: the test can fail


def test_a_loop_that_consumes_its_noise_holds_one_clip_copy_less_and_gives_the_same_latents():
    """render_clips lets the loop denoise the clip's noise in place (consume_noise): the
    (T, c, h, w) copy of the latents is never made, the result is the same."""
    from signgen.models.schedulers import make_scheduler
    from signgen.sampling.loop import sample
    from signgen.sampling.windows import window_plan

    def predict(spans, model_input, t):
        return torch.stack([model_input(s, e) * 0.5 for s, e in spans])  # (n, L, 4, 8, 8)

    def peak(consume: bool) -> int:
        with LiveTensorBytes() as counter:  # the noise is made inside: it counts too
            noise = torch.randn(2000, 4, 8, 8, generator=torch.Generator().manual_seed(0))
            sample(predict, make_scheduler("ddim"), noise, 1, windows=window_plan(2000, 16, 4),
                   consume_noise=consume)  # fmt: skip
        return counter.peak

    clip = 2000 * 4 * 8 * 8 * 4  # bytes of the clip's latents
    assert peak(False) - peak(True) >= 0.9 * clip

    noise = torch.randn(40, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    kept = noise.clone()
    ref = sample(predict, make_scheduler("euler"), kept, 3, windows=[(0, 16), (12, 28), (24, 40)])
    out = sample(predict, make_scheduler("euler"), noise, 3, windows=[(0, 16), (12, 28), (24, 40)],
                 consume_noise=True)  # fmt: skip
    assert out is noise and torch.equal(out, ref)
    assert not torch.equal(kept, ref)  # without it the caller's noise is left alone
