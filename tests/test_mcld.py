"""Multi-focal conditioning (MCLD): boxes, crops, focal tokens, decoupled attention,
dropout, 4-branch guidance, save/load and rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from model_helpers import randomize, spy_on_steps
from torch import nn

from signgen.errors import InputError
from signgen.keypoints.sequence import KeypointSequence
from signgen.models.config import load_model_config
from signgen.models.factory import build_components
from signgen.models.fpdm import FPDMDenoiser
from signgen.models.mcld import (
    REGIONS,
    FocalAdapter,
    FocalAttnProcessor,
    crop_regions,
    region_boxes,
    region_weight_map,
    weighted_mse,
)
from signgen.sampling.guidance import GuidancePlan, cumulative_guidance, fpdm_chain
from signgen.sampling.options import RenderOptions
from signgen.sampling.pipeline import FPDMPipeline

STEPS = 2


@pytest.fixture(scope="module")
def comps() -> dict:
    c = build_components(load_model_config("tiny_mcld"), "cpu")
    randomize(c["pose_encoder"], 1)  # zero-init conv_out would hide the pose path
    return c


@pytest.fixture(scope="module")
def pipe(comps) -> FPDMPipeline:
    return FPDMPipeline.from_components(load_model_config("tiny_mcld"), comps).eval()


def _points(b: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """(b, 133, 3) keypoints scattered over an image of size (H, W), all confident."""
    h, w = size
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(b, 133, 3, generator=g)
    pts[..., 0] *= w
    pts[..., 1] *= h
    pts[..., 2] = 1.0
    return pts


def _region_points(box: tuple[float, float, float, float], region: str) -> torch.Tensor:
    """(133, 3) with one region's points spread over ``box`` (x1, y1, x2, y2), rest score 0."""
    pts = torch.zeros(133, 3)
    idx = REGIONS[region]
    n = len(idx)
    x1, y1, x2, y2 = box
    pts[idx.start : idx.stop, 0] = torch.linspace(x1, x2, n)
    pts[idx.start : idx.stop, 1] = torch.linspace(y1, y2, n).flip(0)
    pts[idx.start : idx.stop, 2] = 0.9
    return pts


# ---- boxes, crops, loss weights ---------------------------------------------------------------
def test_region_boxes_are_square_padded_and_clamped():
    size = (100, 80)  # (H, W)
    pts = _region_points((30, 40, 50, 50), "face")  # 20 x 10 box, centre (40, 45)
    pts += _region_points((0, 90, 6, 100), "left_hand") * torch.tensor([1, 1, 1.0])  # corner
    boxes, present = region_boxes(pts[None], size, padding=0.25, min_side=0.1)
    assert present[0].tolist() == [True, True, False]  # right hand has no points
    face = boxes[0, 0]
    side = 20 * 1.5
    torch.testing.assert_close(face, torch.tensor([40 - side / 2, 45 - side / 2,
                                                   40 + side / 2, 45 + side / 2]))  # fmt: skip
    hand = boxes[0, 1]  # 6 x 10 points at the bottom-left corner: moved inside the image
    assert hand[2] - hand[0] == pytest.approx(hand[3] - hand[1])  # square
    assert hand[0] >= 0 and hand[3] <= 100 and hand[2] - hand[0] == pytest.approx(15.0)
    # Boxes never exceed the image, even for a region spread over all of it.
    big = _region_points((-20, -20, 120, 140), "face")[None]
    b, _ = region_boxes(big, size)
    assert b[0, 0, 0] >= 0 and b[0, 0, 1] >= 0 and b[0, 0, 2] <= 80 and b[0, 0, 3] <= 100
    assert b[0, 0, 2] - b[0, 0, 0] == pytest.approx(80.0)


def test_low_scores_make_a_region_missing():
    pts = _region_points((10, 10, 30, 30), "face")
    pts[23:91, 2] = 0.1  # below min_score
    _, present = region_boxes(pts[None], (64, 64), min_score=0.3)
    assert not present[0, 0]
    pts[23:25, 2] = 0.9  # 2 confident points < min_points = 3
    _, present = region_boxes(pts[None], (64, 64), min_score=0.3, min_points=3)
    assert not present[0, 0]


def test_crop_regions_returns_the_box_content():
    img = torch.zeros(2, 3, 40, 40)
    img[0, 0, 10:20, 10:20] = 1.0  # a red square in image 0
    img[1, 2, 20:40, 0:20] = 1.0  # a blue square in image 1
    boxes = torch.tensor([[[10.0, 10.0, 20.0, 20.0]], [[0.0, 20.0, 20.0, 40.0]]])  # (2, 1, 4)
    crops = crop_regions(img, boxes, 8)
    assert crops.shape == (2, 1, 3, 8, 8)
    # Inside: the square exactly; the outer ring of samples blends in a little background.
    torch.testing.assert_close(crops[0, 0, 0, 1:-1, 1:-1], torch.ones(6, 6))
    torch.testing.assert_close(crops[1, 0, 2, 1:-1, 1:-1], torch.ones(6, 6))
    assert crops[0, 0, 0].min() > 0.75 and crops[1, 0, 2].min() > 0.75
    assert crops[0, 0, 1:].abs().max() == 0 and crops[1, 0, :2].abs().max() == 0


def test_region_weight_map_upweights_face_and_hands():
    size, latent = (64, 64), (8, 8)
    pts = _region_points((8, 8, 16, 16), "face") + _region_points((40, 40, 56, 56), "right_hand")
    w = region_weight_map(pts[None], size, latent, face_w=2.0, hand_w=3.0, padding=0.0)
    assert w.shape == (1, 1, 8, 8)
    assert w[0, 0, 1, 1] == 2.0  # latent pixel (1, 1) = image pixels 8-16: face
    assert w[0, 0, 5, 5] == 3.0 and w[0, 0, 6, 6] == 3.0  # right hand
    assert w[0, 0, 0, 7] == 1.0 and w[0, 0, 7, 0] == 1.0  # background
    assert set(w.unique().tolist()) == {1.0, 2.0, 3.0}  # left hand missing: no weight
    # The weighted MSE is the plain MSE for unit weights and follows the weights otherwise.
    pred, target = torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8)
    target[..., 5, 5] = 1.0  # an error only inside the hand box
    plain = torch.nn.functional.mse_loss(pred, target)
    torch.testing.assert_close(weighted_mse(pred, target, torch.ones_like(w)), plain)
    assert weighted_mse(pred, target, w) > plain


# ---- focal tokens ----------------------------------------------------------------------------------
def test_focal_token_shapes_and_missing_region_fallback(comps):
    adapter: FocalAdapter = comps["focal_adapter"]
    cfg = adapter.config
    r, k, c = len(cfg.regions), cfg.tokens_per_region, cfg.cross_attention_dim
    assert adapter.num_tokens == r * k
    enc = comps["source_encoder"]
    images = torch.rand(2, 3, 32, 32)
    pts = _points(2, (32, 32))
    pts[1, 91:112, 2] = 0.0  # sample 1: left hand not detected
    hidden, present = adapter.encode_regions(enc, images, pts, (0.5,) * 3, (0.5,) * 3)
    n = 1 + (cfg.crop_size // enc.config.patch_size) ** 2  # CLS + patches of one crop
    assert hidden.shape == (2, r, n, enc.config.hidden_size)
    assert present.tolist() == [[True, True, True], [True, False, True]]
    tokens = adapter(hidden, present)
    assert tokens.shape == (2, r * k, c)
    per_region = tokens.view(2, r, k, c)
    # The missing region gets the learned "missing" tokens, whatever its crop showed ...
    torch.testing.assert_close(per_region[1, 1], adapter.missing_tokens[1])
    other = adapter(torch.randn_like(hidden), present).view(2, r, k, c)
    torch.testing.assert_close(other[1, 1], per_region[1, 1])
    # ... while present regions depend on their crop and carry their region embedding.
    assert not torch.allclose(other[0, 1], per_region[0, 1])
    same = hidden.clone()
    same[:, 0] = hidden[:, 2]  # face crop := right-hand crop: tokens differ by the embedding
    t = adapter(same, torch.ones(2, r, dtype=torch.bool)).view(2, r, k, c)
    emb = adapter.region_embedding
    torch.testing.assert_close(t[:, 0] - t[:, 2], (emb[0] - emb[2]).expand(2, k, c))


# ---- decoupled attention ------------------------------------------------------------------------
class _Scale:  # what FocalAttnProcessor reads of its adapter
    def __init__(self, scale: float, num_tokens: int) -> None:
        self.scale, self.num_tokens = scale, num_tokens


def test_focal_attention_processor_matches_the_ip_adapter_formula():
    torch.manual_seed(0)
    attn = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4)
    to_k, to_v = nn.Linear(6, 8, bias=False), nn.Linear(6, 8, bias=False)
    x = torch.randn(2, 5, 8)  # (B, L, query_dim)
    src, focal = torch.randn(2, 7, 6), torch.randn(2, 3, 6)
    proc = FocalAttnProcessor(_Scale(0.7, 3), to_k, to_v)
    out = proc(attn, x, torch.cat([src, focal], 1))

    def sdpa(q, k, v):  # (B, L, 8) with 2 heads of 4
        split = lambda t: t.view(2, -1, 2, 4).transpose(1, 2)  # noqa: E731
        w = (split(q) @ split(k).transpose(-1, -2) / 2.0).softmax(-1)
        return (w @ split(v)).transpose(1, 2).reshape(2, -1, 8)

    q = attn.to_q(x)
    inner = sdpa(q, attn.to_k(src), attn.to_v(src)) + 0.7 * sdpa(q, to_k(focal), to_v(focal))
    torch.testing.assert_close(out, attn.to_out[0](inner), atol=1e-5, rtol=1e-5)
    # scale 0: exactly diffusers' plain attention over the source tokens alone.
    plain = AttnProcessor2_0()(attn, x, src)
    assert torch.equal(FocalAttnProcessor(_Scale(0.0, 3), to_k, to_v)(attn, x,
                       torch.cat([src, focal], 1)), plain)  # fmt: skip


def _cond_inputs(b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pose = torch.rand(b, 3, 32, 32, generator=g)
    hidden = torch.randn(b, 17, 16, generator=g)
    fusion = torch.randn(b, 16, generator=g)
    focal_hidden = torch.randn(b, 3, 5, 16, generator=g)
    present = torch.ones(b, 3, dtype=torch.bool)
    lat = torch.randn(b, 4, 4, 4, generator=g)
    t = torch.tensor([10, 500])[:b]
    return pose, hidden, fusion, focal_hidden, present, lat, t


def test_decoupled_attention_uses_its_own_keys_and_values(comps):
    cfg = load_model_config("tiny_mcld")
    parts = build_components(cfg, "cpu")
    adapter = parts["focal_adapter"]
    randomize(adapter, 3)
    mcld = FPDMDenoiser(parts["unet"], parts["pose_encoder"], parts["source_projector"],
                        parts["fusion_mlp"], focal_adapter=adapter).eval()  # fmt: skip
    plain_unet = build_components(load_model_config("tiny"), "cpu")["unet"]  # same init
    plain_unet.load_state_dict(parts["unet"].state_dict())  # UNet keys unchanged by MCLD
    plain = FPDMDenoiser(plain_unet, parts["pose_encoder"], parts["source_projector"],
                         parts["fusion_mlp"]).eval()  # fmt: skip
    pose, hidden, fusion, fh, fp, lat, t = _cond_inputs()
    with torch.no_grad():
        ref = plain(lat, t, pose, hidden, fusion)
        with_focal = mcld(lat, t, pose, hidden, fusion, focal_hidden=fh, focal_present=fp)
        null = mcld(lat, t, pose, hidden, fusion)  # null focal condition = zero tokens
        assert torch.equal(null, ref)  # zero focal tokens add exactly nothing
        assert not torch.allclose(with_focal, ref)
        adapter.set_scale(0.0)
        assert torch.equal(mcld(lat, t, pose, hidden, fusion, focal_hidden=fh,
                                focal_present=fp), ref)  # fmt: skip
        adapter.set_scale(1.0)
        # Changing the focal K/V (not the UNet's) changes the output only with focal tokens.
        for lin in (*adapter.to_k, *adapter.to_v):
            lin.weight.mul_(-1.5)
        changed = mcld(lat, t, pose, hidden, fusion, focal_hidden=fh, focal_present=fp)
        assert not torch.allclose(changed, with_focal)
        assert torch.equal(mcld(lat, t, pose, hidden, fusion), ref)
    assert not any("processor" in k for k in parts["unet"].state_dict())


def test_focal_dropout_is_per_sample(pipe):
    pose, hidden, fusion, fh, fp, _, _ = _cond_inputs(b=2)
    b = 4
    rep = lambda x: torch.cat([x, x])  # noqa: E731
    drop = torch.tensor([True, False, False, True])
    cond = pipe.denoiser.encode_conditions(
        rep(pose), rep(hidden), rep(fusion), focal_hidden=rep(fh), focal_present=rep(fp),
        drop_focal=drop,
    )  # fmt: skip
    assert cond.focal_tokens.shape == (b, pipe.focal_adapter.num_tokens, 16)
    nonzero = cond.focal_tokens.flatten(1).abs().sum(1) > 0
    assert nonzero.tolist() == [False, True, True, False]
    # Dropping focal tokens leaves the other conditions alone.
    assert (cond.tokens.flatten(1).abs().sum(1) > 0).all()
    full = pipe.denoiser.encode_conditions(
        rep(pose), rep(hidden), rep(fusion), focal_hidden=rep(fh), focal_present=rep(fp)
    )  # fmt: skip
    torch.testing.assert_close(cond.focal_tokens[1:3], full.focal_tokens[1:3])


# ---- guidance ---------------------------------------------------------------------------------------
def test_focal_guidance_formula():
    g = torch.Generator().manual_seed(0)
    u, s, f, full = (torch.randn(2, 4, 3, 3, generator=g) for _ in range(4))
    preds = [u, s, f, full]  # [uncond; src; focal; full], weights (W_SRC, W_FOCAL, W_FUSE)
    torch.testing.assert_close(cumulative_guidance(preds, (1, 1, 1)), full)
    torch.testing.assert_close(cumulative_guidance(preds, (0, 0, 0)), u)
    torch.testing.assert_close(cumulative_guidance(preds, (1, 1, 0)), f)
    # w_focal = w_fuse: FPDM's three-branch formula applied with eps_full.
    torch.testing.assert_close(cumulative_guidance(preds, (2, 3, 3)),
                               cumulative_guidance([u, s, full], (2, 3)))  # fmt: skip
    manual = u + 2 * (s - u) + 4 * (f - s) + 3 * (full - f)
    torch.testing.assert_close(cumulative_guidance(preds, (2, 4, 3)), manual)
    every = GuidancePlan(fpdm_chain(focal=True), (2.0, 4.0, 3.0))
    masks = every.drop_masks(2)
    assert masks["drop_focal"].tolist() == [True, True, True, True, False, False, False, False]
    plain = GuidancePlan(fpdm_chain(focal=False), (2.0, 3.0)).drop_masks(2)
    assert set(plain) == {"drop_pose", "drop_source", "drop_fusion"}


class _RecordingUNet(nn.Module):
    """Stands in for the UNet: records per sample which conditions arrived (the last
    ``n_focal`` cross-attention tokens are the focal tokens) and predicts
    1*[pose] + 10*[source] + 100*[F] + 1000*[focal]."""

    def __init__(self, real: nn.Module, n_focal: int) -> None:
        super().__init__()
        self.config = real.config
        self.c0 = real.config.block_out_channels[0]
        self.n_focal = n_focal
        self.conv_in = nn.Identity()
        self.calls: list[dict[str, torch.Tensor]] = []

    def forward(self, sample, timestep, encoder_hidden_states, class_labels, return_dict=False):
        b = sample.shape[0]
        pad = sample.new_zeros(b, self.c0 - sample.shape[1], *sample.shape[2:])
        h = self.conv_in(torch.cat([sample, pad], 1))  # the pose hook adds features here
        ehs = encoder_hidden_states
        seen = {
            "pose": h[:, sample.shape[1] :].flatten(1).abs().sum(1) > 0,
            "source": ehs[:, : -self.n_focal].flatten(1).abs().sum(1) > 0,
            "fusion": class_labels.abs().sum(1) > 0,
            "focal": ehs[:, -self.n_focal :].flatten(1).abs().sum(1) > 0,
        }
        self.calls.append(seen)
        value = (1.0 * seen["pose"] + 10.0 * seen["source"] + 100.0 * seen["fusion"]
                 + 1000.0 * seen["focal"])  # fmt: skip
        return (value.view(b, 1, 1, 1).expand_as(sample).to(sample.dtype),)


def test_four_guidance_branches_in_one_unet_call_per_step(pipe):
    real_unet = pipe.denoiser.unet
    stub = _RecordingUNet(real_unet, pipe.focal_adapter.num_tokens)
    pipe.denoiser.unet = stub
    w, h = 21, 26
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    pts = _points(3, (h, w)).numpy()
    try:
        w_src, w_fuse, w_focal = 2.0, 3.0, 5.0
        opts = RenderOptions(steps=4, guidance=(w_src, w_fuse), guidance_focal=w_focal)
        clip = pipe.prepare_clip(img, opts, pts[0])
        sched = pipe.make_scheduler("ddim")
        seen = spy_on_steps(sched)
        pipe.render_frames([clip] * 3, pts, [0, 1, 2], opts, scheduler=sched)
    finally:
        pipe.denoiser.unet = real_unet
    assert len(stub.calls) == 4 == len(seen)  # ONE UNet call per step, 4 branches in it
    b = 3
    expect = {  # branch: (pose, source, F, focal)
        "uncond": (False, False, False, False),
        "src": (True, True, False, False),
        "focal": (True, True, False, True),
        "full": (True, True, True, True),
    }
    for call in stub.calls:
        for i, flags in enumerate(expect.values()):
            sl = slice(i * b, (i + 1) * b)
            for key, flag in zip(("pose", "source", "fusion", "focal"), flags, strict=True):
                assert call[key].shape == (4 * b,)
                assert call[key][sl].tolist() == [flag] * b, (key, i)
    # eps_u = 0, eps_src = 11, eps_focal = 1011, eps_full = 1111
    expected = w_src * 11 + w_focal * 1000 + w_fuse * 100
    for out in seen:
        torch.testing.assert_close(out, torch.full_like(out, expected))


# ---- pipeline: plain parity, save/load, CLI --------------------------------------------------------
def _clip(frames: int = 3, size: tuple[int, int] = (21, 26), seed: int = 0):
    w, h = size
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    pts = _points(frames, (h, w), seed).numpy()
    return img, KeypointSequence(pts, w, h, fps=25.0)


def test_scale_zero_renders_exactly_plain_fpdm():
    mcld = FPDMPipeline.from_config(load_model_config("tiny_mcld"))
    plain = FPDMPipeline.from_config(load_model_config("tiny"))  # same seed, same weights
    for p in (mcld, plain):
        randomize(p.pose_encoder, 1)
    img, kp = _clip()
    mcld.focal_adapter.set_scale(0.0)
    a = mcld(img, kp, steps=STEPS, batch_size=2, guidance_focal=4.0)
    b = plain(img, kp, steps=STEPS, batch_size=2)
    np.testing.assert_array_equal(a, b)
    mcld.focal_adapter.set_scale(1.0)
    randomize(mcld.focal_adapter, 5)
    c = mcld(img, kp, steps=STEPS, batch_size=2)
    assert not np.array_equal(c, b)
    with pytest.raises(InputError, match="no focal"):
        next(plain.render(img, kp, steps=STEPS, guidance_focal=2.0))


def test_save_load_round_trip_gives_identical_frames(pipe, tmp_path):
    randomize(pipe.focal_adapter, 7)
    img, kp = _clip(frames=3)
    a = pipe(img, kp, steps=STEPS, batch_size=2, seed=1)
    pipe.save_pretrained(tmp_path / "m")
    index = (tmp_path / "m" / "model_index.json").read_text()
    assert '"FocalAdapter"' in index
    assert (tmp_path / "m" / "focal_adapter" / "config.json").is_file()
    loaded = FPDMPipeline.from_pretrained(tmp_path / "m")
    assert isinstance(loaded.focal_adapter, FocalAdapter)
    procs = loaded.unet.attn_processors
    assert sum(isinstance(p, FocalAttnProcessor) for p in procs.values()) == len(
        loaded.focal_adapter.config.attn_layers
    )
    assert not any(isinstance(p, FocalAttnProcessor) for n, p in procs.items() if "attn1" in n)
    b = loaded(img, kp, steps=STEPS, batch_size=2, seed=1)
    np.testing.assert_array_equal(a, b)
    # Another batch size: the same frames up to float rounding in the focal attention
    # (CPU GEMM blocking depends on the row count), at most 1 grey level.
    c = loaded(img, kp, steps=STEPS, batch_size=3, seed=1)
    assert np.abs(a.astype(int) - c).max() <= 1
    # Other source keypoints (the face and hands elsewhere) give other frames.
    other = (_region_points((2, 2, 8, 8), "face") + _region_points((12, 15, 18, 22), "left_hand")
             ).numpy()  # fmt: skip
    c = np.concatenate(list(loaded.render(img, kp, steps=STEPS, seed=1,
                                          batch_size=2, source_points=other)))  # fmt: skip
    assert np.abs(a.astype(int) - c).max() > 1


def test_render_cli_with_mcld_model(pipe, tmp_path, capsys):
    from signgen.cli import main

    img, kp = _clip(frames=2, size=(22, 26))
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "first.png")
    kp.save(tmp_path / "seq.json")
    pipe.save_pretrained(tmp_path / "m")
    args = ["render", "--video", str(tmp_path / "first.png"), "--keypoints",
            str(tmp_path / "seq.json"), "--model", str(tmp_path / "m"), "--steps", "1",
            "-o", str(tmp_path / "out.mp4")]  # fmt: skip
    assert main([*args, "--guidance-focal", "3.0", "--source-keypoints",
                 str(tmp_path / "seq.json")]) == 0  # fmt: skip
    assert (tmp_path / "out.mp4").is_file()
    assert main([*args, "--guidance-focal", "nan"]) == 2
    assert "focal guidance must be a finite number" in capsys.readouterr().err


def test_full_size_mcld_config_builds_on_meta():
    cfg = load_model_config("mcld_sd21_dinov2l_512")
    parts = build_components(cfg, "meta")
    adapter = parts["focal_adapter"]
    assert adapter.num_tokens == 3 * 16
    assert adapter.config.encoder_dim == 1024 and adapter.config.cross_attention_dim == 1024
    # SD 2.1: 16 cross-attention layers (down 6, mid 1, up 9) with widths 320/640/1280.
    assert len(adapter.config.attn_layers) == 16
    assert sorted(set(adapter.config.attn_dims)) == [320, 640, 1280]
    assert all(".attn2" in n for n in adapter.config.attn_layers)


def test_bad_mcld_config_is_a_user_error():
    with pytest.raises(InputError, match=r"mcld\.regions"):
        load_model_config("tiny_mcld", ["mcld.regions=[face,tail]"])
    with pytest.raises(InputError, match=r"mcld\.drop"):
        load_model_config("tiny_mcld", ["mcld.drop=1.5"])


def test_plain_models_have_no_focal_component():
    parts = build_components(load_model_config("tiny"), "cpu")
    assert "focal_adapter" not in parts
    p = FPDMPipeline.from_components(load_model_config("tiny"), parts)
    assert p.components["focal_adapter"] is None and not p.denoiser.has_focal
