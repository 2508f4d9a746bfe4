"""FPDMPipeline: guidance branches, determinism, batching, save/load, input checks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from model_helpers import random_clip, randomize, spy_on_steps
from torch import nn

from signgen.devices import resolve_device, resolve_dtype
from signgen.errors import InputError, MissingWeightsError
from signgen.keypoints.sequence import KeypointSequence
from signgen.models.config import load_model_config
from signgen.sampling.inputs import check_clip
from signgen.sampling.loop import frame_seed
from signgen.sampling.options import RenderOptions
from signgen.sampling.pipeline import FPDMPipeline

STEPS = 2


@pytest.fixture(scope="module")
def pipe() -> FPDMPipeline:
    p = FPDMPipeline.from_config(load_model_config("tiny"))
    randomize(p.pose_encoder, 1)  # zero-init conv_out would hide the pose path
    return p


# ---- guidance branches ---------------------------------------------------------------------
class _RecordingUNet(nn.Module):
    """Stands in for UNet2DConditionModel: records, per call and per sample, which
    conditions arrived (pose features after conv_in, source tokens, class embedding), and
    predicts 1*[pose] + 10*[source] + 100*[F] so the guided result is known exactly."""

    def __init__(self, c0: int = 16, cross: int = 16, time_dim: int = 64) -> None:
        super().__init__()
        self.config = SimpleNamespace(
            block_out_channels=(c0,), cross_attention_dim=cross, class_embed_type="identity",
            in_channels=4, out_channels=4, time_embedding_dim=time_dim,
        )  # fmt: skip
        self.c0 = c0
        self.conv_in = nn.Identity()
        self.calls: list[dict[str, torch.Tensor]] = []

    def forward(self, sample, timestep, encoder_hidden_states, class_labels, return_dict=False):
        b = sample.shape[0]
        pad = sample.new_zeros(b, self.c0 - sample.shape[1], *sample.shape[2:])
        h = self.conv_in(torch.cat([sample, pad], 1))  # the pose hook adds features here
        has_pose = h[:, sample.shape[1] :].flatten(1).abs().sum(1) > 0
        has_src = encoder_hidden_states.flatten(1).abs().sum(1) > 0
        has_fusion = class_labels.abs().sum(1) > 0
        self.calls.append({"pose": has_pose, "source": has_src, "fusion": has_fusion})
        value = 1.0 * has_pose + 10.0 * has_src + 100.0 * has_fusion  # (B,)
        return (value.view(b, 1, 1, 1).expand_as(sample).to(sample.dtype),)


BRANCH_FLAGS = {  # branch: (pose, source, F) the UNet receives
    "uncond": (False, False, False),
    "src": (True, True, False),
    "full": (True, True, True),
}


@pytest.mark.parametrize(
    ("guidance", "branches"),
    [((2.0, 3.0), ["uncond", "src", "full"]),  # every weight non-zero
     ((2.0, 2.0), ["uncond", "full"]),  # the paper's: eps_src has weight 0
     ((1.0, 1.0), ["full"]),  # no guidance: one pass of the full conditions
     ((1.0, 0.0), ["src"])],
)  # fmt: skip
def test_guidance_branches_in_one_unet_call_per_step(pipe, guidance, branches):
    from signgen.models.fpdm import FPDMDenoiser

    stub = _RecordingUNet(
        c0=pipe.unet.config.block_out_channels[0],
        cross=pipe.unet.config.cross_attention_dim,
        time_dim=pipe.fusion_mlp.config.out_dim,
    )
    real = pipe.denoiser
    pipe.denoiser = FPDMDenoiser(stub, real.pose_encoder, real.source_projector, real.fusion_mlp)
    try:
        img, kp = random_clip(frames=3)
        opts = RenderOptions(steps=4, guidance=guidance)
        clip = pipe.prepare_clip(img, opts)
        sched = pipe.make_scheduler("ddim")
        seen = spy_on_steps(sched)
        pipe.render_frames([clip] * 3, kp.points, [0, 1, 2], opts, scheduler=sched)
    finally:
        pipe.denoiser = real
    assert len(stub.calls) == 4 == len(seen)  # ONE UNet call per step
    b = 3
    for call in stub.calls:  # only the branches with a non-zero weight, in branch order
        for key in ("pose", "source", "fusion"):
            assert call[key].shape == (len(branches) * b,)
        for i, name in enumerate(branches):
            sl = slice(i * b, (i + 1) * b)
            pose, source, fusion = BRANCH_FLAGS[name]
            assert call["pose"][sl].tolist() == [pose] * b
            assert call["source"][sl].tolist() == [source] * b
            assert call["fusion"][sl].tolist() == [fusion] * b
    # eps_u = 0, eps_src = 11, eps_full = 111: Eq. 12 gives w_src * 11 + w_fuse * 100
    w_src, w_fuse = guidance
    for out in seen:
        torch.testing.assert_close(out, torch.full_like(out, w_src * 11 + w_fuse * 100))


def test_skipped_branches_change_no_frame(pipe):
    # The real tiny model: running only the weighted branches gives the frames of running
    # all three (the same sums, up to float rounding); the switch is a render option.
    img, kp = random_clip(frames=2)
    for guidance in ((1.0, 1.0), (2.0, 2.0)):
        opts = RenderOptions(steps=STEPS, guidance=guidance)
        every = opts.replace(skip_zero_branches=False)
        assert pipe.guidance_plan(every).num_branches == 3 > pipe.guidance_plan(opts).num_branches
        pruned, all_three = pipe(img, kp, opts), pipe(img, kp, every)
        assert np.abs(pruned.astype(int) - all_three.astype(int)).max() <= 1


# ---- determinism and batching --------------------------------------------------------------------
def test_frames_have_source_size_and_are_deterministic(pipe):
    img, kp = random_clip(frames=5, size=(21, 26))
    a = pipe(img, kp, steps=STEPS, seed=3, batch_size=4)
    assert a.shape == (5, 26, 21, 3) and a.dtype == np.uint8
    b = pipe(img, kp, steps=STEPS, seed=3, batch_size=4)
    np.testing.assert_array_equal(a, b)
    c = pipe(img, kp, steps=STEPS, seed=4, batch_size=4)
    assert np.abs(a.astype(int) - c).mean() > 1


def test_batch_size_does_not_change_frames(pipe):
    img, kp = random_clip(frames=8)
    one = pipe(img, kp, steps=STEPS, batch_size=1)
    eight = pipe(img, kp, steps=STEPS, batch_size=8)
    three = pipe(img, kp, steps=STEPS, batch_size=3)
    assert np.abs(one.astype(int) - eight).max() <= 1  # float reduction order only
    assert np.abs(one.astype(int) - three).max() <= 1


@pytest.mark.parametrize("scheduler", ["ddpm", "dpm++", "euler"])
def test_every_scheduler_is_batch_invariant(pipe, scheduler):
    img, kp = random_clip(frames=3)
    kwargs = {"steps": STEPS, "scheduler": scheduler, "independent_noise": True}
    a = pipe(img, kp, batch_size=1, **kwargs)
    b = pipe(img, kp, batch_size=3, **kwargs)
    assert a.shape == (3, 26, 21, 3)
    assert np.abs(a.astype(int) - b).max() <= 1


def test_shared_noise_by_default_independent_on_request(pipe):
    img, kp = random_clip(frames=3)
    kp = KeypointSequence(np.repeat(kp.points[:1], 3, axis=0), kp.width, kp.height, kp.fps)
    shared = pipe(img, kp, steps=STEPS, batch_size=3)
    assert np.abs(shared[0].astype(int) - shared[2]).max() <= 1  # same pose + same noise
    indep = pipe(img, kp, steps=STEPS, batch_size=3, independent_noise=True)
    assert np.abs(indep[0].astype(int) - indep[2]).mean() > 1
    assert frame_seed(0, None) == 0 and frame_seed(0, 1) != frame_seed(0, 2) != frame_seed(1, 1)


def test_render_streams_batches(pipe):
    img, kp = random_clip(frames=7)
    sizes = [len(b) for b in pipe.render(img, kp, steps=1, batch_size=3)]
    assert sizes == [3, 3, 1]


def test_wide_frame_output_size(pipe):
    img, kp = random_clip(frames=2, size=(40, 17))
    out = pipe(img, kp, steps=1)
    assert out.shape == (2, 17, 40, 3)


def test_bf16_renders(pipe):
    img, kp = random_clip(frames=2)
    try:
        pipe.to(dtype=torch.bfloat16)
        out = pipe(img, kp, steps=1)
    finally:
        pipe.to(dtype=torch.float32)
    assert out.shape == (2, 26, 21, 3)


# ---- save / load ---------------------------------------------------------------------------------
def test_save_load_same_frames(pipe, tmp_path):
    img, kp = random_clip(frames=3)
    before = pipe(img, kp, steps=STEPS)
    pipe.save_pretrained(tmp_path / "model")
    for sub in ("vae", "unet", "pose_encoder", "source_encoder", "source_projector", "ipf",
                "fusion_mlp", "scheduler", "model_index.json"):  # fmt: skip
        assert (tmp_path / "model" / sub).exists(), sub
    loaded = FPDMPipeline.from_pretrained(tmp_path / "model")
    np.testing.assert_array_equal(loaded(img, kp, steps=STEPS), before)
    pipe.save_pretrained(tmp_path / "model")  # overwriting a model folder works
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_load_without_ipf(tmp_path):
    p = FPDMPipeline.from_config(load_model_config("tiny", ["ipf.enabled=false"]))
    p.save_pretrained(tmp_path / "m")
    loaded = FPDMPipeline.from_pretrained(tmp_path / "m")
    assert loaded.ipf is None and loaded.fusion_mlp is None
    img, kp = random_clip(frames=2)
    np.testing.assert_array_equal(loaded(img, kp, steps=1), p(img, kp, steps=1))


def test_missing_component_is_named(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "m")
    import shutil

    shutil.rmtree(tmp_path / "m" / "unet")
    with pytest.raises(MissingWeightsError, match="'unet'"):
        FPDMPipeline.from_pretrained(tmp_path / "m")
    with pytest.raises(MissingWeightsError, match="not found"):
        FPDMPipeline.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(MissingWeightsError, match="model_index"):
        FPDMPipeline.from_pretrained(tmp_path)


# ---- input checks --------------------------------------------------------------------------------
def test_check_inputs(pipe, caplog):
    img, kp = random_clip(frames=2, size=(20, 26))
    with pytest.raises(InputError, match="steps"):
        next(pipe.render(img, kp, steps=0))
    with pytest.raises(InputError, match="batch size"):
        next(pipe.render(img, kp, batch_size=0))
    other = KeypointSequence(kp.points, 30, 26, 25.0)  # another aspect ratio
    with pytest.raises(InputError, match="aspect ratio"):
        next(pipe.render(img, other))
    double = kp.rescaled(40, 52)  # same aspect, twice the size: rescaled with a warning
    with caplog.at_level("WARNING"):
        fixed = check_clip(img, double)
    assert "rescaling" in caplog.text
    np.testing.assert_allclose(fixed.points, kp.points, atol=1e-4)
    with pytest.raises(InputError, match="uint8"):
        check_clip(img.astype(np.float32), kp)
    with pytest.raises(InputError, match="focal"):  # a model-dependent option: before compute
        next(pipe.render(img, kp, guidance_focal=2.0))


def test_device_and_dtype_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("bf16") is torch.bfloat16
    with pytest.raises(InputError):
        resolve_dtype("fp8")
    with pytest.raises(InputError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")
        assert resolve_device("auto").type == "cpu"


def test_load_by_hub_id_from_the_local_cache_only(pipe, tmp_path, monkeypatch):
    """A hub id resolves through the Hugging Face cache layout (HF_HOME), never the network."""
    import huggingface_hub.constants as hf_constants

    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    with pytest.raises(MissingWeightsError, match="Hugging Face cache"):
        FPDMPipeline.from_pretrained("signgen-test/fpdm-tiny")
    commit = "0" * 40
    repo = hub / "models--signgen-test--fpdm-tiny"
    pipe.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    loaded = FPDMPipeline.from_pretrained("signgen-test/fpdm-tiny")
    img, kp = random_clip(frames=1)
    np.testing.assert_array_equal(loaded(img, kp, steps=1), pipe(img, kp, steps=1))
