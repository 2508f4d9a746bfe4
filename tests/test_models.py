"""FPDM modules: shapes, nulls, configs, offline loading, and the full-size model on meta."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from model_helpers import randomize
from transformers import CLIPVisionModelWithProjection, Dinov2Model

from signgen.config import to_dict
from signgen.errors import InputError, MissingWeightsError
from signgen.models.config import load_model_config
from signgen.models.factory import build_components
from signgen.models.fpdm import FPDMDenoiser
from signgen.models.ipf import IPFModel
from signgen.models.modules import Combiner, FusionMLP, PoseEncoder, SourceProjector
from signgen.models.preprocess import Letterbox, tensor_to_uint8, to_model_input, uint8_to_tensor


@pytest.fixture(scope="module")
def tiny():
    return build_components(load_model_config("tiny"))


# ---- preprocessing geometry -------------------------------------------------------------------
def test_letterbox_geometry_pads_the_short_side_symmetrically():
    box = Letterbox.fit((210, 260), (512, 512))  # Phoenix frame into a square model
    assert box.padded_size == (260, 260)
    assert (box.pad_left, box.pad_top) == (25, 0)
    wide = Letterbox.fit((400, 100), (64, 32))  # wider than 2:1 -> pad height to 200
    assert wide.padded_size == (400, 200) and wide.pad_top == 50 and wide.pad_left == 0


@pytest.mark.parametrize(
    ("src", "dst"), [((21, 26), (32, 32)), ((40, 16), (32, 48)), ((32, 32), (32, 32))]
)
def test_letterbox_invert_restores_exact_size_and_content(src, dst):
    w, h = src
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1).astype(np.uint8)
    box = Letterbox.fit(src, dst)
    x = uint8_to_tensor(img)  # (1, 3, h, w)
    there = box.apply(x)
    assert there.shape == (1, 3, dst[1], dst[0])
    back = tensor_to_uint8(box.invert(there))[0]
    assert back.shape == img.shape
    # A smooth image survives the round trip up to resampling error.
    assert np.abs(back.astype(int) - img).mean() < 6


def test_points_follow_the_letterbox():
    box = Letterbox.fit((21, 26), (32, 32))
    pts = np.array([[[0.0, 0.0, 1.0], [20.0, 25.0, 0.5]]], np.float32)
    out = box.points_to_padded(pts)
    np.testing.assert_allclose(out[0, :, 0], pts[0, :, 0] + box.pad_left)
    np.testing.assert_allclose(out[0, :, 1], pts[0, :, 1] + box.pad_top)
    np.testing.assert_allclose(out[..., 2], pts[..., 2])


def test_to_model_input_normalises():
    img = np.full((2, 10, 20, 3), 255, np.uint8)
    x = to_model_input(img, (16, 16))  # VAE default: [0, 1] -> [-1, 1]
    assert x.shape == (2, 3, 16, 16)
    torch.testing.assert_close(x, torch.ones_like(x))
    y = to_model_input(img, (8, 8), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    torch.testing.assert_close(y, torch.full_like(y, 2.0))


# ---- modules ------------------------------------------------------------------------------------
def test_pose_encoder_shapes_and_zero_init():
    enc = PoseEncoder(conditioning_embedding_channels=16, block_out_channels=(4, 8, 8, 16))
    out = enc(torch.rand(2, 3, 32, 48))
    assert out.shape == (2, 16, 4, 6)  # 1/8 resolution, UNet width
    assert torch.count_nonzero(out) == 0  # zero-initialised last conv: no effect at start
    assert enc.downscale_factor == 8


def test_pose_encoder_without_zero_init_acts_from_the_start():
    kw = {"conditioning_embedding_channels": 16, "block_out_channels": (4, 8, 8, 16)}
    torch.manual_seed(0)
    enc = PoseEncoder(**kw, zero_init=False)
    assert torch.count_nonzero(enc(torch.rand(2, 3, 32, 48))) > 0
    assert enc.config.zero_init is False  # saved with the model


def test_model_config_passes_zero_init_to_the_pose_encoder():
    from signgen.models.config import load_model_config
    from signgen.models.factory import build_components

    comps = build_components(load_model_config("tiny", ["pose_encoder.zero_init=false"]))
    assert comps["pose_encoder"].config.zero_init is False
    assert torch.count_nonzero(comps["pose_encoder"].embedding.conv_out.weight) > 0


def test_source_projector_fusion_mlp_shapes():
    proj = SourceProjector(in_dim=12, out_dim=16, hidden_dim=20, dropout=0.1)
    assert proj(torch.randn(2, 17, 12)).shape == (2, 17, 16)
    kinds = [type(m).__name__ for m in proj.net]
    assert kinds == ["Linear", "GELU", "Dropout", "LayerNorm", "Linear"]
    mlp = FusionMLP(in_dim=16, hidden_dim=16, out_dim=64)
    assert mlp(torch.randn(3, 16)).shape == (3, 64)


def test_combiner_is_normalised_and_gates_betweenrandom_clip():
    comb = Combiner(embed_dim=16, projection_dim=32, hidden_dim=32, dropout=0.5).eval()
    s, p = torch.randn(4, 16), torch.randn(4, 16)
    out = comb(s, p)
    assert out.shape == (4, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))
    # With the residual branch switched off, F is the gated mix lambda*p + (1-lambda)*s.
    torch.nn.init.zeros_(comb.output_layer.weight)
    torch.nn.init.zeros_(comb.output_layer.bias)
    out = comb(s, p)
    joint = torch.cat(
        [torch.relu(comb.pose_projection(p)), torch.relu(comb.source_projection(s))], -1
    )
    lam = comb.gate(joint)
    assert ((lam > 0) & (lam < 1)).all()
    expected = torch.nn.functional.normalize(lam * p + (1 - lam) * s, dim=-1)
    torch.testing.assert_close(out, expected)


def test_ipf_embed_fuse_and_roundtrip(tmp_path, tiny):
    ipf = tiny["ipf"].eval()
    px = ipf.preprocess(np.random.default_rng(0).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8))
    assert px.shape == (3, 3, *ipf.image_size)
    with torch.no_grad():
        emb = ipf.embed(px)
        fused = ipf.fuse(emb, emb.flip(0))
    assert emb.shape == fused.shape == (3, ipf.embed_dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(fused.norm(dim=-1), torch.ones(3))
    ipf.save_pretrained(tmp_path / "ipf")
    again = IPFModel.from_pretrained(tmp_path / "ipf").eval()
    with torch.no_grad():
        torch.testing.assert_close(again.fuse(again.embed(px), again.embed(px.flip(0))), fused)
    (tmp_path / "ipf" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(MissingWeightsError, match="IPF folder"):
        IPFModel.from_pretrained(tmp_path / "ipf")
    # The earlier layout (ipf_config.json + vision_model/ + combiner/) is read too.
    legacy = tmp_path / "legacy"
    ipf.vision_model.save_pretrained(legacy / "vision_model")
    ipf.combiner.save_pretrained(legacy / "combiner")
    meta = {"image_size": list(ipf.image_size), "mean": list(ipf.mean), "std": list(ipf.std)}
    (legacy / "ipf_config.json").write_text(json.dumps(meta))
    old = IPFModel.from_pretrained(legacy)
    with torch.no_grad():
        torch.testing.assert_close(old.fuse(old.embed(px), old.embed(px.flip(0))), fused)
    (legacy / "combiner" / "config.json").unlink()
    with pytest.raises(MissingWeightsError, match="combiner"):
        IPFModel.from_pretrained(legacy)


def _tiny_denoiser(tiny) -> FPDMDenoiser:
    den = FPDMDenoiser(
        tiny["unet"], tiny["pose_encoder"], tiny["source_projector"], tiny["fusion_mlp"]
    )
    randomize(den.pose_encoder)  # make the pose path visible in the output
    return den.eval()


def test_denoiser_shapes_and_per_sample_dropout(tiny):
    den = _tiny_denoiser(tiny)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 4, 4, generator=g)
    t = torch.tensor([500, 500])
    pose = torch.rand(2, 3, 32, 32, generator=g)
    src = torch.randn(1, 17, 16, generator=g)  # one clip's tokens, broadcast to the batch
    fusion = torch.nn.functional.normalize(torch.randn(2, 16, generator=g), dim=-1)
    with torch.no_grad():
        full = den(x, t, pose, src, fusion)
        assert full.shape == (2, 4, 4, 4)
        for key in ("drop_pose", "drop_source", "drop_fusion"):
            out = den(x, t, pose, src, fusion, **{key: torch.tensor([True, False])})
            torch.testing.assert_close(out[1], full[1])  # the kept sample is untouched
            assert not torch.allclose(out[0], full[0]), key  # the dropped one changes
        # The null F is "no F": dropping it for every sample equals passing none.
        none = den(x, t, pose, src, None)
        all_dropped = den(x, t, pose, src, fusion, drop_fusion=torch.tensor([True, True]))
        torch.testing.assert_close(none, all_dropped)


def test_denoiser_extends_the_unet_without_changing_it(tiny):
    den = _tiny_denoiser(tiny)
    unet = den.unet
    fresh_keys = set(UNet2DConditionModel(**unet.config).state_dict())
    assert set(unet.state_dict()) == fresh_keys  # no forked / renamed layers
    with torch.no_grad():
        den(torch.randn(1, 4, 4, 4), torch.tensor([1]), torch.rand(1, 3, 32, 32),
            torch.randn(1, 17, 16), torch.randn(1, 16))  # fmt: skip
    assert not unet.conv_in._forward_hooks  # the pose hook lives for one call only


def test_denoiser_rejects_mismatched_parts(tiny):
    with pytest.raises(ValueError, match="class_embed_type"):
        FPDMDenoiser(tiny["unet"], tiny["pose_encoder"], tiny["source_projector"], None)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        FPDMDenoiser(tiny["unet"], tiny["pose_encoder"], SourceProjector(16, 8), tiny["fusion_mlp"])


# ---- configs -------------------------------------------------------------------------------------
def test_config_unknown_key_and_overrides():
    cfg = load_model_config("tiny", ["scheduler.name=euler", "ipf.enabled=false"])
    assert cfg.scheduler.name == "euler" and not cfg.ipf.enabled
    comps = build_components(cfg)
    assert comps["ipf"] is None and comps["fusion_mlp"] is None
    assert comps["unet"].config.class_embed_type is None
    with pytest.raises(InputError, match="unknown config key"):
        load_model_config("tiny", ["unet.pretrianed=x"])
    with pytest.raises(InputError, match="kind"):
        load_model_config("tiny", ["source_encoder.kind=resnet"])


def test_random_init_is_seeded():
    a = build_components(load_model_config("tiny"))
    b = build_components(load_model_config("tiny"))
    c = build_components(load_model_config("tiny", ["seed=1"]))
    wa, wb, wc = (x["unet"].conv_in.weight for x in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_pretrained_components_load_offline_from_local_folders(tmp_path):
    """Save tiny random VAE / UNet / DINOv2 / CLIP the way the hub stores them, then load
    them through the config's `pretrained:` path (the same code as for real weights)."""
    cfg = load_model_config("tiny")
    src = build_components(cfg)
    sd = tmp_path / "sd"  # a Stable-Diffusion-style folder with subfolders
    src["vae"].save_pretrained(sd / "vae")
    src["unet"].save_pretrained(sd / "unet")  # has the identity class embedding already
    src["scheduler"].save_pretrained(sd / "scheduler")
    src["source_encoder"].save_pretrained(tmp_path / "dinov2")
    src["ipf"].vision_model.save_pretrained(tmp_path / "clip")
    data = to_dict(cfg)
    data["seed"] = 123  # anything loaded must not depend on the init seed
    for name in ("vae", "unet", "scheduler"):
        data[name].update(pretrained=str(sd), subfolder=name)
    data["source_encoder"]["pretrained"] = str(tmp_path / "dinov2")
    data["ipf"]["clip"]["pretrained"] = str(tmp_path / "clip")
    from signgen.config import from_dict
    from signgen.models.config import FPDMModelConfig

    loaded = build_components(from_dict(FPDMModelConfig, data))
    for name in ("vae", "unet", "source_encoder"):
        for (k, v), (k2, v2) in zip(
            src[name].state_dict().items(), loaded[name].state_dict().items()
        ):
            assert k == k2 and torch.equal(v, v2), (name, k)
    for k, v in src["ipf"].vision_model.state_dict().items():
        assert torch.equal(v, loaded["ipf"].vision_model.state_dict()[k]), k
    assert loaded["scheduler"].config.prediction_type == "v_prediction"

    data["vae"]["pretrained"] = str(tmp_path / "nowhere")
    with pytest.raises(MissingWeightsError, match="VAE"):
        build_components(from_dict(FPDMModelConfig, data))


def test_hub_id_not_in_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_model_config(
        "tiny", ["vae.pretrained=stabilityai/stable-diffusion-2-1", "vae.subfolder=vae"]
    )
    with pytest.raises(MissingWeightsError, match="offline"):
        build_components(cfg)


# ---- full-size model on the meta device ---------------------------------------------------------
# Published parameter counts of the pretrained checkpoints the paper uses. If the config's
# architecture drifts from the real one, from_pretrained of the real weights would fail.
PUBLISHED_PARAMS = {
    "unet": 865.9e6,  # SD 2.x UNet: "865M" (stabilityai/stable-diffusion-2-1 model card)
    "vae": 83.7e6,  # SD KL-f8 autoencoder (same VAE as SD 1.x): 83.7M
    "source_encoder": 304e6,  # DINOv2 ViT-L/14: 304M (facebookresearch/dinov2 README)
    "ipf_clip": 304e6,  # CLIP ViT-L/14 vision tower + 1024x768 projection: ~304M
}


def test_full_size_model_builds_on_meta_with_paper_shapes():
    cfg = load_model_config("fpdm_sd21_dinov2l_512")
    comps = build_components(cfg, device="meta")
    counts = {
        name: sum(p.numel() for p in comps[name].parameters())
        for name in ("unet", "vae", "source_encoder")
    }
    counts["ipf_clip"] = sum(p.numel() for p in comps["ipf"].vision_model.parameters())
    for name, expected in PUBLISHED_PARAMS.items():
        assert abs(counts[name] / expected - 1) < 0.01, (name, counts[name], expected)
    assert all(p.is_meta for p in comps["unet"].parameters())  # nothing was allocated
    # Shapes FPDM relies on (docs/model.md).
    unet = comps["unet"]
    assert unet.config.cross_attention_dim == 1024 and unet.config.class_embed_type == "identity"
    assert comps["fusion_mlp"].config.in_dim == 768 and comps["fusion_mlp"].config.out_dim == 1280
    assert comps["pose_encoder"].config.conditioning_embedding_channels == 320
    assert comps["scheduler"].config.prediction_type == "v_prediction"
    den = FPDMDenoiser(unet, comps["pose_encoder"], comps["source_projector"], comps["fusion_mlp"])
    with torch.device("meta"), torch.no_grad():
        tokens = comps["source_encoder"](pixel_values=torch.empty(1, 3, 512, 512)).last_hidden_state
        assert tokens.shape == (1, 1 + (512 // 14) ** 2, 1024)  # CLS + 36x36 patches = 1297
        emb = comps["ipf"].embed(torch.empty(2, 3, 224, 224))
        fusion = comps["ipf"].fuse(emb, emb)
        assert fusion.shape == (2, 768)
        out = den(torch.empty(2, 4, 64, 64), torch.tensor([10, 10]), torch.empty(2, 3, 512, 512),
                  tokens, fusion, drop_pose=torch.tensor([True, False]))  # fmt: skip
        assert out.shape == (2, 4, 64, 64)
        latents = comps["vae"].encode(torch.empty(1, 3, 512, 512)).latent_dist.mean
        assert latents.shape == (1, 4, 64, 64)


def _public(config) -> dict:
    """A module config without diffusers' bookkeeping keys, tuples as lists (JSON)."""
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in config.items()
        if not k.startswith("_")
    }


def test_tiny_modules_save_and_load_with_their_config(tmp_path, tiny):
    for name, cls in (("pose_encoder", PoseEncoder), ("source_projector", SourceProjector),
                      ("fusion_mlp", FusionMLP)):  # fmt: skip
        tiny[name].save_pretrained(tmp_path / name)
        assert (tmp_path / name / "diffusion_pytorch_model.safetensors").is_file()
        again = cls.from_pretrained(tmp_path / name)
        assert _public(again.config) == _public(tiny[name].config)
        for k, v in tiny[name].state_dict().items():
            assert torch.equal(v, again.state_dict()[k]), (name, k)


def test_tiny_encoders_types(tiny):
    assert isinstance(tiny["vae"], AutoencoderKL)
    assert isinstance(tiny["source_encoder"], Dinov2Model)
    assert isinstance(tiny["ipf"].vision_model, CLIPVisionModelWithProjection)
