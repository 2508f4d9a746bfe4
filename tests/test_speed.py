"""signgen.speed: each GPU speed option changes the modules, not the numbers.

Tolerances: a speed option reorders floating-point work (another attention kernel, another
memory layout, per-frame instead of batched decoding), so fp32 results may differ in the
last bits: 1e-5 absolute on outputs of order 1. Half-precision frozen encoders round every
weight and activation to bf16 (8 bits of mantissa, relative error up to 2^-8 per value):
the loss of the tiny model, of order 1, stays within 5 % of fp32 (measured: under 1 %),
while a dtype mismatch would raise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import random_clip, randomize

from signgen.errors import InputError
from signgen.models.config import load_model_config
from signgen.sampling.options import RenderOptions, add_render_arguments, options_from_args
from signgen.sampling.pipeline import FPDMPipeline
from signgen.speed import (
    SpeedOptions,
    apply_render_options,
    apply_training_options,
    compile_repeated_blocks,
    run_in_dtype,
    saved_as_fp32,
    set_attention,
    set_channels_last,
    set_vae_slicing,
)

ATOL = 1e-5


def _pipe(name: str = "tiny") -> FPDMPipeline:
    p = FPDMPipeline.from_config(load_model_config(name))
    randomize(p.pose_encoder, 1)  # zero-init conv_out would hide the pose path
    return p


def _denoise(pipe: FPDMPipeline, batch: int = 2) -> torch.Tensor:
    """One guided-branch denoiser call of ``pipe`` on fixed random inputs."""
    g = torch.Generator().manual_seed(0)
    den = pipe.denoiser
    h, w = pipe.resolution
    lat = pipe.unet.config.sample_size
    n_tok = 17  # tiny DINOv2: 4 x 4 patches + CLS
    d = pipe.source_encoder.config.hidden_size
    fusion = torch.randn(batch, pipe.ipf.embed_dim, generator=g)
    with torch.no_grad():
        cond = den.encode_conditions(
            torch.rand(batch, 3, h, w, generator=g).to(pipe.dtype),
            torch.randn(batch, n_tok, d, generator=g).to(pipe.dtype),
            fusion.to(pipe.dtype),
        )
        x = torch.randn(batch, 4, lat, lat, generator=g).to(pipe.dtype)
        return den.denoise(x, torch.tensor([500] * batch), cond).float()


# ---- options -------------------------------------------------------------------------------------
def test_options_are_checked():
    for bad in ({"dtype": "int8"}, {"attention": "flash"}, {"frozen_dtype": "fp32"},
                {"compile": True, "compile_backend": ""}):  # fmt: skip
        with pytest.raises(InputError):
            SpeedOptions(**bad)
    with pytest.raises(InputError, match="attention"):
        RenderOptions(attention="flash")


def test_render_command_line_flags():
    p = argparse.ArgumentParser()
    add_render_arguments(p)
    opts = options_from_args(p.parse_args(["--dtype", "bf16", "--attention", "eager",
                                           "--channels-last", "--compile",
                                           "--vae-slicing"]))  # fmt: skip
    assert (opts.dtype, opts.attention, opts.channels_last, opts.compile, opts.vae_slicing) == (
        "bf16", "eager", True, True, True)  # fmt: skip
    default = options_from_args(p.parse_args([]))
    assert (default.attention, default.channels_last, default.compile, default.vae_slicing) == (
        "sdpa", False, False, False)  # fmt: skip
    with pytest.raises(SystemExit):
        p.parse_args(["--attention", "flash"])


def test_attention_kernels_switch_and_agree():
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    pipe = _pipe()
    set_attention(pipe.unet, "sdpa")
    sdpa = _denoise(pipe)
    set_attention(pipe.unet, "eager")
    assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor}
    eager = _denoise(pipe)
    set_attention(pipe.unet, "sdpa")
    assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor2_0}
    torch.testing.assert_close(eager, sdpa, atol=ATOL, rtol=0)


def test_attention_keeps_focal_processors():
    from signgen.models.mcld import FocalAttnProcessor

    pipe = _pipe("tiny_mcld")
    before = {n for n, p in pipe.unet.attn_processors.items() if type(p) is FocalAttnProcessor}
    assert before  # MCLD installs its decoupled cross-attention
    set_attention(pipe.unet, "eager")
    after = {n for n, p in pipe.unet.attn_processors.items() if type(p) is FocalAttnProcessor}
    assert after == before


def test_channels_last_layout_same_output():
    pipe = _pipe()
    ref = _denoise(pipe)
    set_channels_last(pipe.unet, pipe.vae, pipe.pose_encoder)
    w = pipe.unet.conv_in.weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    assert pipe.pose_encoder.embedding.conv_in.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    torch.testing.assert_close(_denoise(pipe), ref, atol=ATOL, rtol=0)


def test_vae_slicing_decodes_frame_by_frame():
    pipe = _pipe()
    z = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = pipe.vae.decode(z).sample
    seen = []
    inner = pipe.vae._decode

    def spy(z, *a, **k):
        seen.append(z.shape[0])
        return inner(z, *a, **k)

    pipe.vae._decode = spy
    set_vae_slicing(pipe.vae)
    with torch.no_grad():
        out = pipe.vae.decode(z).sample
    assert seen == [1, 1, 1]
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    set_vae_slicing(pipe.vae, False)
    seen.clear()
    with torch.no_grad():
        pipe.vae.decode(z)
    assert seen == [3]


def test_vae_slicing_of_the_patch_autoencoder_is_a_no_op():
    from signgen.models.modules import PatchAutoencoder

    set_vae_slicing(PatchAutoencoder(patch_size=4))  # nothing to slice: no error


def test_compile_repeated_blocks_same_output():
    pipe = _pipe()
    ref = _denoise(pipe)
    n = compile_repeated_blocks(pipe.unet, backend="eager")  # dynamo traces, no codegen
    blocks = [m for m in pipe.unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert n == len(blocks) > 0
    assert all(b._compiled_call_impl is not None for b in blocks)
    torch.testing.assert_close(_denoise(pipe), ref, atol=ATOL, rtol=0)


def test_render_options_render_the_same_frames():
    img, kp = random_clip(frames=3)
    pipe = _pipe()
    ref = pipe(img, kp, steps=2, guidance=(2.0, 3.0))
    opts = RenderOptions(steps=2, guidance=(2.0, 3.0), attention="eager", channels_last=True,
                         vae_slicing=True)  # fmt: skip
    apply_render_options(pipe, opts)
    assert pipe.vae.use_slicing
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor"}
    out = pipe(img, kp, opts)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1  # uint8 rounding


def test_render_options_bf16_weights():
    pipe = apply_render_options(_pipe(), RenderOptions(dtype="bf16"))
    assert pipe.dtype == torch.bfloat16 and pipe.unet.conv_in.weight.dtype == torch.bfloat16
    img, kp = random_clip(frames=2)
    out = pipe(img, kp, steps=1)
    assert out.shape == (2, 26, 21, 3) and out.dtype == np.uint8


def test_render_command_applies_the_flags(tmp_path, monkeypatch):
    """`signgen render` hands its speed flags to the loaded pipeline."""
    import signgen.speed
    from signgen.cli import main
    from signgen.keypoints.sequence import KeypointSequence
    from signgen.video import VideoWriter

    w, h = 22, 26
    rng = np.random.default_rng(0)
    with VideoWriter(tmp_path / "first.mp4", fps=25, width=w, height=h) as vw:
        vw.write(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    pts = np.concatenate([rng.uniform(0, w, (2, 133, 1)), rng.uniform(0, h, (2, 133, 1)),
                          np.ones((2, 133, 1))], axis=2).astype(np.float32)  # fmt: skip
    KeypointSequence(pts, w, h, 12.5).save(tmp_path / "seq.json")
    _pipe().save_pretrained(tmp_path / "model")
    seen = []
    real = signgen.speed.apply_render_options

    def spy(pipe, opts):
        seen.append(opts)
        return real(pipe, opts)

    monkeypatch.setattr(signgen.speed, "apply_render_options", spy)
    rc = main(["render", "--video", str(tmp_path / "first.mp4"), "--keypoints",
               str(tmp_path / "seq.json"), "--model", str(tmp_path / "model"), "-o",
               str(tmp_path / "out.mp4"), "--steps", "1", "--attention", "eager",
               "--channels-last", "--vae-slicing"])  # fmt: skip
    assert rc == 0 and (tmp_path / "out.mp4").is_file()
    assert [(o.attention, o.channels_last, o.vae_slicing) for o in seen] == [
        ("eager", True, True)]  # fmt: skip


# ---- frozen encoders in half precision ----------------------------------------------------------
def _fpdm_module():
    from signgen.models.factory import build_components
    from signgen.train.config import TrainConfig
    from signgen.train.fpdm import FPDMModule

    mcfg = load_model_config("tiny")
    return FPDMModule(build_components(mcfg), mcfg, TrainConfig()).eval()


def _batch(b: int = 2) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (b, 40, 32, 3), dtype=np.uint8))
    pose = torch.from_numpy(rng.random((b, 3, 32, 32), dtype=np.float32))
    return {"source": frames, "target": frames.flip(1).contiguous(), "target_pose": pose}


def _loss(module) -> float:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return float(module(_batch(), generator=g)[0])


def test_frozen_encoders_in_bf16_keep_fp32_callers():
    ref = _loss(_fpdm_module())
    module = apply_training_options(_fpdm_module(), SpeedOptions(frozen_dtype="bf16"))
    for frozen in (module.vae, module.source_encoder, module.ipf):
        assert {p.dtype for p in frozen.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in module.denoiser.parameters()} == {torch.float32}
    c = module.conditions(_batch(), torch.Generator().manual_seed(0))
    assert {c["z0"].dtype, c["hidden"].dtype, c["fusion"].dtype} == {torch.float32}
    assert _loss(module) == pytest.approx(ref, rel=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the loop runs it on a GPU
        assert np.isfinite(_loss(module))


def test_frozen_encoders_cast_without_hooks_fail():
    """The boundary casts are what makes it work: weights cast alone break the fp32 caller."""
    module = _fpdm_module()
    module.source_encoder.to(torch.bfloat16)
    with pytest.raises(RuntimeError):
        _loss(module)


def test_training_config_keys_train_and_export_fp32(tmp_path):
    """train.attention / channels_last / frozen_dtype reach the stage-2 module; one step
    trains, and the exported folder is fp32 and contiguous whatever they were."""
    from model_helpers import tiny_world

    from signgen.cli import main
    from signgen.train.config import load_train_config
    from signgen.train.stages import task_factory

    configs = Path(__file__).resolve().parents[1] / "configs" / "train"
    prepared = tiny_world(tmp_path / "world", 3, 3, 4, 4)
    keys = ["train.attention=eager", "train.channels_last=true", "train.frozen_dtype=bf16"]
    cfg = load_train_config(configs / "tiny_fpdm.yaml",
                            [f"data.prepared={prepared}", f"output_dir={tmp_path / 'run'}",
                             *keys])  # fmt: skip
    module = task_factory("fpdm")(cfg, torch.device("cpu")).module
    unet = module.denoiser.unet
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"AttnProcessor"}
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert {p.dtype for p in module.source_encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in module.vae.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in module.denoiser.parameters()} == {torch.float32}

    out = tmp_path / "run"
    assert main(["train", "fpdm", "--config", str(configs / "tiny_fpdm.yaml"), "-q",
                 f"data.prepared={prepared}", f"output_dir={out}", "train.max_steps=1",
                 *keys]) == 0  # fmt: skip
    pipe = FPDMPipeline.from_pretrained(out / "export")
    assert {p.dtype for p in pipe.vae.parameters()} == {torch.float32}
    assert {p.dtype for p in pipe.source_encoder.parameters()} == {torch.float32}
    for name in ("train.attention=flash", "train.frozen_dtype=fp32"):
        with pytest.raises(InputError):
            load_train_config(configs / "tiny_fpdm.yaml", [f"data.prepared={prepared}", name])


def test_saved_as_fp32_restores_the_tensors():
    conv = torch.nn.Conv2d(3, 4, 3).to(torch.bfloat16).to(memory_format=torch.channels_last)
    ptr = conv.weight.data_ptr()
    with saved_as_fp32(conv):
        assert conv.weight.dtype == torch.float32 and conv.weight.is_contiguous()
    assert conv.weight.dtype == torch.bfloat16 and conv.weight.data_ptr() == ptr
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_run_in_dtype_nested_calls_restore_each_callers_dtype():
    lin = torch.nn.Linear(4, 4)
    run_in_dtype(lin, torch.bfloat16)
    assert lin(torch.ones(2, 4)).dtype == torch.float32
    assert lin(torch.ones(2, 4, dtype=torch.float16)).dtype == torch.float16


# ---- on a GPU ------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_every_render_option_on_cuda():
    img, kp = random_clip(frames=4)
    ref = _pipe()(img, kp, num_inference_steps=2)
    pipe = _pipe().to("cuda")
    apply_render_options(pipe, SpeedOptions(dtype="bf16", channels_last=True, vae_slicing=True,
                                            compile=True))  # fmt: skip
    out = pipe(img, kp, num_inference_steps=2)
    assert out.shape == ref.shape
    # bf16 end to end: frames within a few grey levels of the fp32 CPU render on average.
    assert np.abs(out.astype(float) - ref.astype(float)).mean() < 8


@pytest.mark.gpu
def test_frozen_encoders_in_bf16_on_cuda():
    module = apply_training_options(_fpdm_module().to("cuda"), SpeedOptions(frozen_dtype="bf16"))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert np.isfinite(_loss(module))
