"""Motion module on the FPDM UNet: zero-init = per-frame model, AnimateDiff's placement,
windows stay separate, UNet and MCLD untouched, save/load, gradient checkpointing."""

from __future__ import annotations

import functools

import pytest
import torch
from diffusers import UNet2DConditionModel, UNetMotionModel
from model_helpers import randomize

from signgen.errors import FormatError, MissingWeightsError
from signgen.models.config import load_model_config
from signgen.models.factory import build_components, build_denoiser
from signgen.models.fpdm import FPDMDenoiser
from signgen.models.mcld import FocalAttnProcessor
from signgen.models.motion import (
    MOTION_FOLDER,
    MotionHooks,
    MotionModuleConfig,
    TemporalDenoiser,
    build_motion_module,
    load_motion_module,
    motion_sites,
    save_motion_module,
)
from signgen.sampling.guidance import GuidancePlan, fpdm_chain

MOTION = MotionModuleConfig(num_attention_heads=4, norm_num_groups=8, max_frames=8)
RESIDUAL = ["unet.config.in_channels=8", "unet.source_residual=true",
            "scheduler.prediction_type=sample"]  # fmt: skip


def _denoiser(name: str = "tiny", overrides: list[str] | None = None) -> FPDMDenoiser:
    mcfg = load_model_config(name, overrides or [])
    c = build_components(mcfg, "cpu")
    den = build_denoiser(c["unet"], c["pose_encoder"], c["source_projector"], c["fusion_mlp"],
                         focal_adapter=c.get("focal_adapter"),
                         source_residual=mcfg.unet.source_residual)  # fmt: skip
    randomize(den, 1)  # zero-initialised layers (pose encoder, conv_out) would hide paths
    return den.eval()


def _randomize_motion(motion, seed: int = 2) -> None:
    randomize(motion, seed, std=0.2)  # a "trained" module: every layer acts


def _inputs(den: FPDMDenoiser, n: int, seed: int = 0) -> dict:
    """Raw per-frame condition inputs and noisy latents for n frames (tiny model, 32x32)."""
    g = torch.Generator().manual_seed(seed)
    c = den.unet.config.out_channels
    out = {
        "noisy": torch.randn(n, c, 4, 4, generator=g),
        "pose": torch.rand(n, 3, 32, 32, generator=g),
        "hidden": torch.randn(n, 17, den.source_projector.config.in_dim, generator=g),
        "fusion": torch.randn(n, den.fusion_mlp.config.in_dim, generator=g),
        "kw": {},
    }
    if den.source_latent_channels:
        out["kw"]["source_latents"] = torch.randn(n, c, 4, 4, generator=g)
    if den.has_focal:
        regions = len(den.focal_adapter.config.regions)
        out["kw"]["focal_hidden"] = torch.randn(n, regions, 5, out["hidden"].shape[-1], generator=g)
        out["kw"]["focal_present"] = torch.ones(n, regions, dtype=torch.bool)
    return out


@pytest.mark.parametrize(
    ("name", "overrides"), [("tiny", []), ("tiny_mcld", []), ("tiny", RESIDUAL)],
    ids=["fpdm", "mcld", "spatial-source-residual"],
)  # fmt: skip
def test_untrained_module_gives_exactly_the_per_frame_prediction(name, overrides):
    den = _denoiser(name, overrides)
    temporal = TemporalDenoiser(den, build_motion_module(den.unet, MOTION)).eval()
    b, f = 2, 4
    x = _inputs(den, 3 * b * f)  # the three guidance branches, B windows of F frames each
    # Three branches: [uncond; src; full], or MCLD's chain with its focal branch skipped
    # (equal focal and fusion weights give the focal prediction a 0 coefficient).
    plan = GuidancePlan(fpdm_chain(), (2.0, 2.0), skip_zero=False)
    if den.has_focal:
        plan = GuidancePlan(fpdm_chain(focal=True), (2.0, 3.0, 3.0))
    assert plan.num_branches == 3
    masks = plan.drop_masks(b * f)
    t = torch.tensor(400)
    with torch.no_grad():
        cond = den.encode_conditions(x["pose"], x["hidden"], x["fusion"], **masks, **x["kw"])
        plain = den.denoise(x["noisy"], t, cond)
        ours = temporal.denoise(x["noisy"], t, cond, num_frames=f)
        _randomize_motion(temporal.motion)  # the check above must be able to fail
        moved = temporal.denoise(x["noisy"], t, cond, num_frames=f)
    assert torch.equal(ours, plain)
    assert (moved - plain).abs().max() > 1e-3


def test_hooks_put_the_motion_layers_where_diffusers_unet_motion_model_has_them():
    """Same weights, same inputs: the hooked UNet2DConditionModel and diffusers'
    UNetMotionModel.from_unet2d agree (a plain UNet, which UNetMotionModel supports)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=2,
        attention_head_dim=4, cross_attention_dim=16, norm_num_groups=8,
    ).eval()  # fmt: skip
    motion = build_motion_module(unet, MOTION)
    _randomize_motion(motion)
    reference = UNetMotionModel.from_unet2d(unet, motion).eval()
    b, f = 2, 5
    x = torch.randn(b, f, 4, 8, 8)  # (B, F, C, h, w)
    tokens = torch.randn(b * f, 3, 16)
    t = torch.tensor(500)
    # The hooks alone: a plain UNet has no FPDM conditions.
    hooks = MotionHooks(motion_sites(unet, motion))
    with torch.no_grad():
        ref = reference(x.permute(0, 2, 1, 3, 4), t, tokens, return_dict=False)[0]  # (B,C,F,h,w)
        hooks.num_frames = f
        ours = unet(x.flatten(0, 1), t, tokens, return_dict=False)[0]  # (B*F, C, h, w)
        hooks.num_frames = None
        plain = unet(x.flatten(0, 1), t, tokens, return_dict=False)[0]
    ref = ref.permute(0, 2, 1, 3, 4).flatten(0, 1)
    assert (ours - ref).abs().max() < 1e-5
    assert (plain - ref).abs().max() > 1e-2  # the motion layers do act


def test_frames_interact_within_a_window_and_never_across_windows():
    den = _denoiser()
    temporal = TemporalDenoiser(den, build_motion_module(den.unet, MOTION)).eval()
    _randomize_motion(temporal.motion)
    f = 3
    x = _inputs(den, 2 * f)  # two windows of 3 frames: rows 0-2 and 3-5
    changed = x["noisy"].clone()
    changed[4] += 1.0  # the middle frame of the second window
    t = torch.tensor(300)
    with torch.no_grad():
        cond = den.encode_conditions(x["pose"], x["hidden"], x["fusion"])
        a = temporal.denoise(x["noisy"], t, cond, num_frames=f)
        b = temporal.denoise(changed, t, cond, num_frames=f)
        per_frame_a = den.denoise(x["noisy"], t, cond)
        per_frame_b = den.denoise(changed, t, cond)
    delta = (a - b).flatten(1).abs().amax(dim=1)  # per row
    assert torch.equal(delta[:3], torch.zeros(3))  # the first window is untouched
    assert bool((delta[[3, 5]] > 1e-4).all())  # its neighbours in the window move
    # ...through the motion module: the per-frame model keeps frames independent.
    per_frame = (per_frame_a - per_frame_b).flatten(1).abs().amax(dim=1)
    assert torch.equal(per_frame[[3, 5]], torch.zeros(2))


def test_the_unet_keeps_its_weights_keys_and_mcld_processors():
    den = _denoiser("tiny_mcld")
    keys = {k: v.clone() for k, v in den.unet.state_dict().items()}
    temporal = TemporalDenoiser(den, build_motion_module(den.unet, MOTION))
    after = den.unet.state_dict()
    assert list(after) == list(keys)  # no motion parameters inside the UNet
    assert all(torch.equal(after[k], v) for k, v in keys.items())
    procs = den.unet.attn_processors
    assert sum(isinstance(p, FocalAttnProcessor) for p in procs.values()) > 0
    assert not any(n.startswith("motion") for n in procs)
    # The per-frame weights load into a fresh UNet of the model config unchanged.
    fresh = build_components(load_model_config("tiny_mcld"), "cpu")["unet"]
    fresh.load_state_dict(den.unet.state_dict(), strict=True)
    assert set(temporal.state_dict()) >= {f"denoiser.unet.{k}" for k in keys}


def test_per_frame_calls_after_a_temporal_one_are_unaffected():
    den = _denoiser()
    x = _inputs(den, 4)
    t = torch.tensor(200)
    with torch.no_grad():
        cond = den.encode_conditions(x["pose"], x["hidden"], x["fusion"])
        before = den.denoise(x["noisy"], t, cond)
        temporal = TemporalDenoiser(den, build_motion_module(den.unet, MOTION))
        _randomize_motion(temporal.motion)
        moved = temporal.denoise(x["noisy"], t, cond, num_frames=4)
        after = den.denoise(x["noisy"], t, cond)  # the same UNet, outside a temporal call
        alone = temporal.denoise(x["noisy"], t, cond, num_frames=None)
    assert not torch.equal(moved, before)
    assert torch.equal(after, before) and torch.equal(alone, before)
    temporal.hooks.remove()
    with torch.no_grad():
        temporal.hooks.num_frames = 4  # removed hooks run nothing
        assert torch.equal(den.denoise(x["noisy"], t, cond), before)


def test_save_and_load_round_trip_in_its_own_folder(tmp_path):
    den = _denoiser()
    motion = build_motion_module(den.unet, MOTION)
    _randomize_motion(motion)
    path = save_motion_module(motion, tmp_path / "model")
    assert path == tmp_path / "model" / MOTION_FOLDER
    names = sorted(p.name for p in path.iterdir())
    assert names == ["config.json", "diffusion_pytorch_model.safetensors"]
    again = load_motion_module(tmp_path / "model", den.unet)
    x = _inputs(den, 4)
    t = torch.tensor(100)
    outs = []
    with torch.no_grad():
        cond = den.encode_conditions(x["pose"], x["hidden"], x["fusion"])
        for m in (motion, again):
            temporal = TemporalDenoiser(den, m)
            outs.append(temporal.denoise(x["noisy"], t, cond, num_frames=2))
            temporal.hooks.remove()
    assert torch.equal(outs[0], outs[1])
    save_motion_module(again, tmp_path / "model")  # replacing an existing folder works
    assert sorted(p.name for p in path.iterdir()) == names
    assert not any(p.name.startswith(".") for p in (tmp_path / "model").iterdir())


def test_loading_errors_are_user_errors(tmp_path):
    den = _denoiser()
    with pytest.raises(MissingWeightsError, match="no motion module"):
        load_motion_module(tmp_path / "nothing")
    wider = _denoiser("tiny", ["unet.config.block_out_channels=[32,32]"])
    save_motion_module(build_motion_module(wider.unet, MOTION), tmp_path / "m")
    with pytest.raises(FormatError, match="does not fit"):
        load_motion_module(tmp_path / "m", den.unet)


def test_bad_window_lengths_and_shapes_are_refused():
    den = _denoiser()
    temporal = TemporalDenoiser(den, build_motion_module(den.unet, MOTION))
    x = _inputs(den, 9)
    with torch.no_grad():
        cond = den.encode_conditions(x["pose"], x["hidden"], x["fusion"])
        with pytest.raises(ValueError, match="1 to 8 frames"):
            temporal.denoise(x["noisy"], torch.tensor(1), cond, num_frames=9)
        with pytest.raises(ValueError, match="whole windows"):
            temporal.denoise(x["noisy"], torch.tensor(1), cond, num_frames=2)
    with pytest.raises(ValueError, match="divisible"):
        build_motion_module(den.unet, MotionModuleConfig(num_attention_heads=5))


def test_gradients_are_the_same_with_unet_gradient_checkpointing():
    """Checkpointed resnets re-run their forward (and the motion hooks on them) during
    backward: the frame count must still be set then."""
    grads = []
    for checkpointing in (False, True):
        den = _denoiser()
        den.requires_grad_(False)
        if checkpointing:
            den.unet.enable_gradient_checkpointing()
        motion = build_motion_module(den.unet, MOTION)
        _randomize_motion(motion)
        temporal = TemporalDenoiser(den, motion)
        x = _inputs(den, 6)
        cond = den.encode_conditions(x["pose"], x["hidden"], x["fusion"])
        out = temporal.denoise(x["noisy"], torch.tensor(700), cond, num_frames=3)
        out.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in motion.parameters()]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)


def test_windowed_sampling_with_an_untrained_module_follows_the_per_frame_model():
    """The render-loop pattern of signgen.sampling.windows: clip latents on the CPU, windows
    predicted in turn with the guidance branches in one call, blended, stepped per run of
    finished frames. With the zero-initialised module every window agrees with the
    per-frame model, so the clip's latents are the per-frame ones (to float rounding)."""
    from signgen.models.schedulers import make_scheduler
    from signgen.sampling.windows import iter_blended, window_plan, window_weights

    den = _denoiser()
    temporal = TemporalDenoiser(den, build_motion_module(den.unet, MOTION)).eval()
    t_frames, w, o, nb = 7, 4, 2, 3
    plan3 = GuidancePlan(fpdm_chain(), (2.0, 2.0), skip_zero=False)  # all three branches
    x = _inputs(den, t_frames)
    cond = den.encode_conditions(
        x["pose"].repeat(nb, 1, 1, 1), x["hidden"].repeat(nb, 1, 1), x["fusion"].repeat(nb, 1),
        **plan3.drop_masks(t_frames),
    )  # fmt: skip

    def rows(frames: torch.Tensor) -> torch.Tensor:  # frame indices -> rows of all branches
        return torch.cat([frames + i * t_frames for i in range(nb)])

    def select(c, idx):
        return type(c)(*(None if v is None else v[idx] for v in vars(c).values()))

    def predict(spans, lat, t):  # (n, W, c, h, w) guided predictions of windows `spans`
        idx = torch.cat([torch.arange(s, e) for s, e in spans])  # window-major frames
        out = temporal.denoise(lat[idx].repeat(nb, 1, 1, 1), t, select(cond, rows(idx)), w)
        return plan3.combine(out).view(len(spans), w, *lat.shape[1:])

    plan = window_plan(t_frames, w, o)
    weights = window_weights(plan, "linear")
    results = []
    for windowed in (False, True):
        sched = make_scheduler("ddim", load_model_config("tiny").scheduler.config)
        sched.set_timesteps(3)
        lat = x["noisy"].clone()  # (T, c, h, w), the whole clip
        with torch.no_grad():
            for t in sched.timesteps:
                if not windowed:
                    out = den.denoise(lat.repeat(nb, 1, 1, 1), t, cond)
                    lat = sched.step(plan3.combine(out), t, lat).prev_sample
                    continue
                # In place: a finished run is never read again by a later window of this step.
                step = functools.partial(predict, lat=lat, t=t)
                for (s, e), pred in iter_blended(step, plan, weights):
                    lat[s:e] = sched.step(pred, t, lat[s:e]).prev_sample
        results.append(lat)
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-5)
