"""Gated source residual (unet.residual_gate): one more UNet output channel, a per-cell
change logit g, and the prediction source + sigmoid(g) * residual, so cells the pose leaves
alone can return the first frame exactly (signgen.models.spatial, docs/render_path.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from model_helpers import random_clip, randomize, train_tiny_fpdm

from signgen.models.config import load_model_config
from signgen.sampling.pipeline import FPDMPipeline
from signgen.train.fpdm import changed_cells

# tiny.yaml's UNet has 4 latent channels: 8 inputs (noisy + source), 4 + 1 gate outputs.
GATED = ["unet.config.in_channels=8", "unet.config.out_channels=5", "unet.source_residual=true",
         "unet.residual_gate=true", "scheduler.prediction_type=sample"]  # fmt: skip


def _gated_pipeline(gate_bias: float) -> FPDMPipeline:
    pipe = FPDMPipeline.from_config(load_model_config("tiny", GATED))
    randomize(pipe.denoiser.unet, 2, std=0.1)
    with torch.no_grad():
        pipe.denoiser.unet.conv_out.bias[-1] = gate_bias  # the gate's logit
    return pipe


def _predict(pipe: FPDMPipeline, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    den = pipe.denoiser
    mh, mw = pipe.resolution
    h, w = mh // pipe.vae_scale_factor, mw // pipe.vae_scale_factor
    c = den.latent_channels
    noisy, lat = torch.randn(2, c, h, w, generator=g), torch.randn(2, c, h, w, generator=g)
    cond = den.encode_conditions(
        torch.rand(2, 3, mh, mw, generator=g),
        torch.randn(2, 5, den.source_projector.config.in_dim, generator=g),
        torch.randn(2, den.fusion_mlp.config.in_dim, generator=g),
        source_latents=lat,
    )  # fmt: skip
    with torch.no_grad():
        pred, gate = den.denoise_gated(noisy, torch.tensor(300), cond)
        raw = super(type(den), den).denoise(torch.cat([noisy, lat], 1), torch.tensor(300), cond)
    return pred, gate, raw, lat


def test_a_closed_gate_returns_the_source_latents_exactly_and_an_open_one_the_residual():
    pipe = _gated_pipeline(-40.0)
    den = pipe.denoiser
    assert den.residual_gate and den.latent_channels == 4 and den.source_latent_channels == 4
    pred, gate, raw, lat = _predict(pipe)
    assert pred.shape == lat.shape and gate.shape == (2, 1, *lat.shape[-2:])
    residual = raw[:, :-1]
    assert residual.abs().mean() > 0.01  # random weights: the residual itself is not zero
    # sigmoid(-40 + x) is below 1e-15: every cell is the first frame's, to float precision.
    torch.testing.assert_close(pred, lat, rtol=0, atol=1e-6)

    pred, gate, raw, lat = _predict(_gated_pipeline(40.0))
    torch.testing.assert_close(pred, lat + raw[:, :-1])  # open: the plain source residual
    # In between, the gate scales the residual cell by cell.
    pred, gate, raw, lat = _predict(_gated_pipeline(0.0))
    torch.testing.assert_close(pred, lat + torch.sigmoid(raw[:, -1:]) * raw[:, :-1])


def test_a_gated_model_renders_and_survives_save_load(tmp_path: Path):
    pipe = _gated_pipeline(0.0)
    img, seq = random_clip(frames=2, size=(32, 32))
    kw = {"steps": 3, "seed": 0, "guidance": (2.0, 2.0)}
    before = pipe(img, seq, **kw)
    folder = pipe.save_pretrained(tmp_path / "model")
    assert '"residual_gate": true' in (folder / "model_index.json").read_text()
    again = FPDMPipeline.from_pretrained(folder)
    assert again.denoiser.residual_gate and again.denoiser.latent_channels == 4
    np.testing.assert_array_equal(again(img, seq, **kw), before)


def test_changed_cells_marks_the_cells_whose_latents_moved():
    src = torch.zeros(1, 3, 2, 2)
    tgt = src.clone()
    tgt[0, :, 0, 1] = 0.5  # mean |d| 0.5 -> 0.25 at scaling factor 2
    tgt[0, 0, 1, 0] = 0.03  # mean |d| 0.01 -> 0.005: below the 0.02 threshold
    lab = changed_cells(tgt, src, scaling_factor=2.0, threshold=0.02)
    assert lab.tolist() == [[[[0.0, 1.0], [0.0, 0.0]]]]
    assert changed_cells(tgt, src, 2.0, 0.001)[0, 0, 1, 0] == 1.0


def test_training_adds_the_gate_loss_and_trains_the_gate(tmp_path: Path):
    """One CLI step with a gate loss: it is logged, and the gate channel of the zero-init
    conv_out moves off zero."""
    out, w = train_tiny_fpdm(tmp_path, GATED, overrides=["fpdm.gate_loss_weight=0.5"])
    header, row = (out / "logs" / "train.csv").read_text().splitlines()[:2]
    gate_loss = float(row.split(",")[header.split(",").index("gate_loss")])
    assert 0 < gate_loss < 5
    assert w["denoiser.unet.conv_out.bias"][-1].abs() > 0  # the gate's logit learned
    back = FPDMPipeline.from_pretrained(out / "export")
    assert back.denoiser.residual_gate


def test_a_gate_loss_for_a_model_without_a_gate_is_refused(tmp_path: Path, capsys):
    from model_helpers import tiny_world

    from signgen.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "train" / "tiny_fpdm.yaml"
    out = tmp_path / "fpdm"
    rc = main(["train", "fpdm", "--config", str(config), "-q", "train.max_steps=1",
               f"data.prepared={tiny_world(tmp_path / 'world')}", f"output_dir={out}",
               "fpdm.gate_loss_weight=0.5"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "residual gate" in err[0], err
    assert not (out / "checkpoints").exists()
