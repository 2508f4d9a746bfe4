"""`signgen convert fpdm-lightning`: checkpoints in the FPDM authors' key layout.

The test checkpoints are written here from signgen's own modules with random weights, put
into the authors' layout by the inverse of the documented key mapping (AUTHORS_LAYOUT
below: their module paths, as data). No code of theirs is involved.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model

from signgen.cli import main
from signgen.models.convert import (
    COMBINER_KEYS,
    DINOV2_KEYS,
    infer_clip_vision_config,
    infer_dinov2_config,
    infer_unet_config,
)
from signgen.models.dinov2 import Dinov2ModelDino
from signgen.models.lightning_ckpt import load_lightning_checkpoint, plain_hyperparameters
from signgen.models.modules import Combiner, FusionMLP, PoseEncoder, SourceProjector
from signgen.sampling.pipeline import FPDMPipeline
from tests.model_helpers import random_clip, randomize

# signgen component -> prefix of the same module in the authors' FPDM LightningModule.
AUTHORS_LAYOUT = {
    "vae": "vae.",
    "unet": "unet.",
    "fusion_mlp": "unet.class_embedding.",
    "pose_encoder": "sd_model.pose_t_proj.",
    "source_projector": "sd_model.srcimage_proj_model.",
    "source_encoder": "src_image_encoder.",
    "clip": "fusion_model.img_encoder.",
    "combiner": "fusion_model.combiner.",
}
HPARAMS = {"model_img_size": [48, 64], "src_encoder_size": [32, 32], "guidance_scale": 2.0,
           "proj_drop_rate": 0.2, "seed_number": 7}  # fmt: skip


def _modules() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    mods = {
        "vae": AutoencoderKL(
            block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            norm_num_groups=32,
        ),
        "unet": UNet2DConditionModel(
            sample_size=8, block_out_channels=(64, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=(1, 1),
            cross_attention_dim=64, use_linear_projection=True, norm_num_groups=32,
            class_embed_type="identity",
        ),
        "fusion_mlp": FusionMLP(32, 48, 256, variant="fpdm", dropout=0.2),
        "pose_encoder": PoseEncoder(conditioning_embedding_channels=64),
        "source_projector": SourceProjector(in_dim=64, out_dim=64, hidden_dim=48),
        "source_encoder": Dinov2Model(Dinov2Config(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=1, patch_size=16,
            image_size=64, mlp_ratio=2,
        )),
        "clip": CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=1,
            image_size=32, patch_size=16, projection_dim=32,
        )),
        "combiner": Combiner(embed_dim=32, projection_dim=40, hidden_dim=24),
    }  # fmt: skip
    for i, m in enumerate(mods.values()):
        randomize(m, seed=i, std=0.05)
    return mods


def authors_state_dict(mods: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The stage-2 state dict the authors' FPDM module would hold for these weights."""
    sd: dict[str, torch.Tensor] = {}
    for name, module in mods.items():
        part = {k: v.clone() for k, v in module.state_dict().items()}
        if name == "unet":
            part = {k: v for k, v in part.items() if not k.startswith("class_embedding.")}
        if name == "pose_encoder":
            part = {k.removeprefix("embedding."): v for k, v in part.items()}
        if name == "source_encoder":  # transformers 4.x attention names
            for new_key in list(part):
                for old, new in DINOV2_KEYS.items():
                    if new in new_key:
                        part[new_key.replace(new, old)] = part.pop(new_key)
        if name == "combiner":
            inverse = {v: k for k, v in COMBINER_KEYS.items()}
            part = {next(inverse[p] + k[len(p) :] for p in inverse if k.startswith(p)): v
                    for k, v in part.items()}  # fmt: skip
        sd.update({AUTHORS_LAYOUT[name] + k: v for k, v in part.items()})
    # One module reachable by two attribute paths is stored twice.
    sd.update({"sd_model.unet." + k[5:]: v for k, v in list(sd.items()) if k.startswith("unet.")})
    sd.update({"fusion_model.pose_encoder." + k[len("fusion_model.img_encoder."):]: v
               for k, v in list(sd.items()) if k.startswith("fusion_model.img_encoder.")})  # fmt: skip
    return sd


def _omegaconf_like(values: dict) -> object:
    """An object pickled under the name omegaconf.dictconfig.DictConfig with the state
    layout of a real DictConfig; unpickling it must not run any of its code."""
    mod = types.ModuleType("omegaconf.dictconfig")
    node_mod = types.ModuleType("omegaconf.nodes")

    class AnyNode:
        def __init__(self, v):
            self._val = v

        def __setstate__(self, state):  # pragma: no cover - must never run on load
            raise AssertionError("code of the pickled class ran")

    class DictConfig:
        def __init__(self, content):
            self._content = content

        def __setstate__(self, state):  # pragma: no cover - must never run on load
            raise AssertionError("code of the pickled class ran")

    AnyNode.__module__, AnyNode.__qualname__ = "omegaconf.nodes", "AnyNode"
    DictConfig.__module__, DictConfig.__qualname__ = "omegaconf.dictconfig", "DictConfig"
    node_mod.AnyNode, mod.DictConfig = AnyNode, DictConfig
    pkg = types.ModuleType("omegaconf")
    pkg.nodes, pkg.dictconfig = node_mod, mod
    sys.modules.update({"omegaconf": pkg, "omegaconf.nodes": node_mod, "omegaconf.dictconfig": mod})
    return DictConfig({k: AnyNode(v) for k, v in values.items()})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    mods = _modules()
    saved = dict(sys.modules)
    try:
        hp = _omegaconf_like(HPARAMS)
        torch.save({"epoch": 3, "global_step": 10, "pytorch-lightning_version": "2.2.1",
                    "state_dict": authors_state_dict(mods), "hyper_parameters": hp,
                    "hparams_type": type(hp), "loops": {}, "callbacks": {},
                    "optimizer_states": [], "lr_schedulers": []}, d / "last.ckpt")  # fmt: skip
    finally:
        for name in ("omegaconf", "omegaconf.dictconfig", "omegaconf.nodes"):
            if name in sys.modules and name not in saved:
                del sys.modules[name]
    return d / "last.ckpt", mods


@pytest.fixture(scope="module")
def converted(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "model"
    assert main(["convert", "fpdm-lightning", str(ckpt[0]), "-o", str(out)]) == 0
    return out, ckpt[1]


def test_hyperparameters_read_as_plain_values_without_running_code(ckpt):
    assert "omegaconf.dictconfig" not in sys.modules or pytest.skip("omegaconf is imported")
    c = load_lightning_checkpoint(ckpt[0])
    assert plain_hyperparameters(c) == HPARAMS


def test_converted_folder_holds_the_same_weights(converted):
    out, mods = converted
    pipe = FPDMPipeline.from_pretrained(out)
    ours = {"vae": pipe.vae, "unet": pipe.unet, "fusion_mlp": pipe.fusion_mlp,
            "pose_encoder": pipe.pose_encoder, "source_projector": pipe.source_projector,
            "source_encoder": pipe.source_encoder, "clip": pipe.ipf.vision_model,
            "combiner": pipe.ipf.combiner}  # fmt: skip
    for name, module in mods.items():
        theirs = module.state_dict()
        mine = ours[name].state_dict()
        if name == "unet":  # the class embedding is the fusion MLP here
            theirs = {k: v for k, v in theirs.items() if not k.startswith("class_embedding.")}
        assert mine.keys() == theirs.keys(), name
        for k in theirs:
            assert torch.equal(mine[k], theirs[k]), (name, k)
    # Settings from the hyper-parameters (their sizes are (W, H)) and the paper's sampler.
    assert pipe.resolution == (64, 48) and pipe.image_processor.source_size == (32, 32)
    assert pipe.default_guidance == (2.0, 2.0) and pipe.default_steps == 20
    assert type(pipe.scheduler).__name__ == "DDPMScheduler"
    # Their preprocessing (PIL bicubic squash of every input), the IPF's included.
    assert pipe.image_processor.resize_mode == "squash" and pipe.ipf.resize_mode == "squash"
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert isinstance(pipe.source_encoder, Dinov2ModelDino)
    assert pipe.source_projector.config.hidden_dim == 48
    assert pipe.source_projector.config.dropout == 0.2


def test_converted_model_renders(converted):
    pipe = FPDMPipeline.from_pretrained(converted[0])
    img, kp = random_clip(frames=2, size=(24, 30))
    frames = pipe(img, kp, steps=2, batch_size=2)
    assert frames.shape == (2, 30, 24, 3) and frames.dtype == np.uint8


def test_converted_denoiser_is_the_published_formula(converted):
    """Items 1-3 of the parity note on a constructed case: class-embedding MLP
    W2 gelu(W1 f + b1) + b2, null fusion = that MLP at f = 0, and the Combiner fed CLIP's
    image_embeds unnormalised."""
    pipe = FPDMPipeline.from_pretrained(converted[0])
    w1, b1 = pipe.fusion_mlp.net[0].weight, pipe.fusion_mlp.net[0].bias
    w2, b2 = pipe.fusion_mlp.net[3].weight, pipe.fusion_mlp.net[3].bias
    f = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    den = pipe.denoiser
    cond = den.encode_conditions(
        torch.rand(2, 3, 64, 48), torch.randn(1, 5, 64), f,
        drop_fusion=torch.tensor([False, True]),
    )  # fmt: skip
    assert torch.allclose(cond.class_emb[0], F.gelu(f[0] @ w1.T + b1) @ w2.T + b2, atol=1e-6)
    assert torch.allclose(cond.class_emb[1], F.gelu(b1) @ w2.T + b2, atol=1e-6)
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    raw = pipe.ipf.vision_model(pixel_values=px).image_embeds
    assert torch.allclose(pipe.ipf.embed(px), raw)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(2))
    assert torch.allclose(pipe.ipf.fuse(raw[:1], raw[1:]), pipe.ipf.combiner(raw[:1], raw[1:]))


def test_stage1_checkpoint_supplies_the_ipf(ckpt, tmp_path):
    mods = ckpt[1]
    comb = Combiner(embed_dim=32, projection_dim=40, hidden_dim=24)
    randomize(comb, seed=42, std=0.05)
    stage1 = {f"img_encoder.{k}": v for k, v in mods["clip"].state_dict().items()}
    stage1.update({f"pose_encoder.{k}": v for k, v in mods["clip"].state_dict().items()})
    inverse = {v: k for k, v in COMBINER_KEYS.items()}
    for k, v in comb.state_dict().items():
        p = next(p for p in inverse if k.startswith(p))
        stage1[f"combiner.{inverse[p]}{k[len(p) :]}"] = v
    torch.save(
        {"state_dict": stage1, "hyper_parameters": {"lambda_l1": 1e-4}}, tmp_path / "s1.ckpt"
    )
    out = tmp_path / "model"
    rc = main(["convert", "fpdm-lightning", str(ckpt[0]), "--ipf", str(tmp_path / "s1.ckpt"),
               "-o", str(out)])  # fmt: skip
    assert rc == 0
    got = FPDMPipeline.from_pretrained(out).ipf.combiner.state_dict()
    assert all(torch.equal(got[k], v) for k, v in comb.state_dict().items())


def test_hostile_pickle_is_refused_and_nothing_is_written(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {}, "hyper_parameters": Hostile()}, tmp_path / "evil.ckpt")
    out = tmp_path / "model"
    rc = main(["convert", "fpdm-lightning", str(tmp_path / "evil.ckpt"), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert not marker.exists() and not out.exists()
    assert len(err.strip().splitlines()) == 1
    assert "refused" in err and "system" in err  # names the global: posix.system / os.system
    assert not list(tmp_path.glob(".model*"))  # no temporary folder left behind


@pytest.mark.parametrize(
    "content",
    [
        {"state_dict": {"model.fc.weight": torch.zeros(2, 2)}},  # some other Lightning model
        {"model": {"fc.weight": torch.zeros(2, 2)}},  # not a Lightning checkpoint
    ],
)
def test_not_an_fpdm_checkpoint(content, tmp_path, capsys):
    torch.save(content, tmp_path / "other.ckpt")
    rc = main(
        ["convert", "fpdm-lightning", str(tmp_path / "other.ckpt"), "-o", str(tmp_path / "m")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "not" in err and "other.ckpt" in err
    assert not (tmp_path / "m").exists()


def test_not_a_checkpoint_file(tmp_path, capsys):
    (tmp_path / "x.ckpt").write_text("hello")
    rc = main(["convert", "fpdm-lightning", str(tmp_path / "x.ckpt"), "-o", str(tmp_path / "m")])
    assert rc == 2 and "not a PyTorch checkpoint" in capsys.readouterr().err


def test_architecture_of_full_size_models_from_shapes():
    """The paper's components, built without weights, are recovered from shapes alone."""
    from signgen.models.config import load_model_config

    cfg = load_model_config("fpdm_sd21_dinov2l_512")
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg.unet.config)
        dino = Dinov2Model(Dinov2Config(**cfg.source_encoder.config))
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg.ipf.clip.config))
    got = infer_unet_config(unet.state_dict())
    for key in ("block_out_channels", "down_block_types", "up_block_types", "layers_per_block",
                "attention_head_dim", "cross_attention_dim", "use_linear_projection"):  # fmt: skip
        assert list(np.atleast_1d(got[key])) == list(np.atleast_1d(cfg.unet.config[key])), key
    got = infer_dinov2_config(dino.state_dict())
    assert (got["hidden_size"], got["num_hidden_layers"], got["num_attention_heads"]) == (
        1024,
        24,
        16,
    )
    assert (got["patch_size"], got["image_size"], got["mlp_ratio"]) == (14, 518, 4)
    got = infer_clip_vision_config(clip.state_dict())
    assert (got["hidden_size"], got["num_hidden_layers"], got["num_attention_heads"]) == (
        1024,
        24,
        16,
    )
    assert (got["projection_dim"], got["image_size"], got["intermediate_size"]) == (768, 224, 4096)


def test_paper_config_has_the_authors_architecture():
    """The paper preset, built without weights, put into the authors' key layout, converts
    back to the same component configurations: their checkpoints fit it."""
    from signgen.models.config import load_model_config
    from signgen.models.convert import convert_state_dicts
    from signgen.models.factory import build_components

    comps = build_components(load_model_config("fpdm_sd21_dinov2l_512"), device="meta")
    mods = {name: comps[name] for name in ("vae", "unet", "fusion_mlp", "pose_encoder",
                                            "source_projector", "source_encoder")}  # fmt: skip
    mods["clip"], mods["combiner"] = comps["ipf"].vision_model, comps["ipf"].combiner
    conv = convert_state_dicts(authors_state_dict(mods), hparams={"proj_drop_rate": 0.2})
    for name in ("fusion_mlp", "pose_encoder", "source_projector", "combiner"):
        got = conv.components[name][0]  # inferred from shapes (+ the dropout hparam)
        want = {k: list(v) if isinstance(v, tuple) else v for k, v in mods[name].config.items()}
        assert {k: want[k] for k in got} == got, name
    assert comps["ipf"].normalize_embeddings is False
    assert isinstance(comps["source_encoder"], Dinov2ModelDino)
    assert type(comps["scheduler"]).__name__ == "DDPMScheduler"
    cfg = load_model_config("fpdm_sd21_dinov2l_512")
    assert (cfg.resize_mode, cfg.steps, tuple(cfg.guidance)) == ("squash", 20, (2.0, 2.0))
    assert comps["ipf"].resize_mode == "squash"


def test_incomplete_checkpoint_is_one_line(ckpt, tmp_path, capsys):
    sd = authors_state_dict(ckpt[1])
    del sd["unet.conv_out.weight"], sd["sd_model.unet.conv_out.weight"]
    torch.save({"state_dict": sd}, tmp_path / "cut.ckpt")
    rc = main(["convert", "fpdm-lightning", str(tmp_path / "cut.ckpt"), "-o", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "conv_out.weight" in err and not (tmp_path / "m").exists()
