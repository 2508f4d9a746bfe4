"""DINOv2 position-embedding interpolation as in DINO / transformers 4.x (signgen.models.dinov2)."""

from __future__ import annotations

import numpy as np
import torch
from transformers import Dinov2Config, Dinov2Model

from signgen.models.dinov2 import Dinov2ModelDino, interpolate_pos_encoding_dino


def _cubic(x: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel with PyTorch's a = -0.75."""
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def _resample_1d(values: list[float], out_len: int, scale: float) -> list[float]:
    """Bicubic resampling of a sequence, align_corners=False, given scale factor: output i
    samples source coordinate (i + 0.5) / scale - 0.5, border samples replicated."""
    n = len(values)
    out = []
    for i in range(out_len):
        x = (i + 0.5) / scale - 0.5
        x0 = int(np.floor(x))
        out.append(
            sum(values[min(max(k, 0), n - 1)] * _cubic(x - k) for k in range(x0 - 1, x0 + 3))
        )
    return out


def test_sampling_grid_is_the_scale_factor_one():
    """Against an independent bicubic resampler: a table that varies along rows only,
    resampled from 37 to 36 rows with scale factor (36 + 0.1) / 37 (the DINO rule), and
    not with the size-based grid of scale 36 / 37 (transformers 5)."""
    n, h, dim = 37, 36, 2
    rows = torch.randn(n, generator=torch.Generator().manual_seed(0))
    patch = rows.view(n, 1, 1).expand(n, n, dim).reshape(1, n * n, dim)
    table = torch.cat([torch.full((1, 1, dim), -5.0), patch], dim=1)
    out = interpolate_pos_encoding_dino(table, h * 14, h * 14, 14)
    assert out.shape == (1, 1 + h * h, dim)
    assert torch.equal(out[0, 0], torch.full((dim,), -5.0))  # class token untouched
    got = out[0, 1:, 0].view(h, h)[:, 7].double().numpy()
    dino = _resample_1d(rows.tolist(), h, (h + 0.1) / n)
    by_size = _resample_1d(rows.tolist(), h, h / n)
    assert np.abs(got - dino).max() < 1e-5
    assert np.abs(got - by_size).max() > 1e-2


def test_differs_from_installed_transformers_rule_for_518_to_512():
    table = torch.randn(1, 1 + 37 * 37, 16, generator=torch.Generator().manual_seed(0))
    model = Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                                     patch_size=14, image_size=518))  # fmt: skip
    model.embeddings.position_embeddings.data.copy_(table)
    with torch.no_grad():
        theirs = model.embeddings.interpolate_pos_encoding(
            torch.zeros(1, 1 + 36 * 36, 16), 512, 512
        )
    ours = interpolate_pos_encoding_dino(table, 512, 512, 14)
    assert ours.shape == theirs.shape
    # Measured: 14 % relative L2 on a random table (0 would mean the rules agree).
    assert float((ours - theirs).norm() / theirs.norm()) > 0.05


def test_native_size_returns_the_table():
    table = torch.randn(1, 1 + 5 * 5, 4)
    assert interpolate_pos_encoding_dino(table, 20, 20, 4) is table


def test_model_uses_the_rule_and_survives_save_and_load(tmp_path):
    """Dinov2ModelDino at a non-native input equals a plain Dinov2Model whose table was
    resampled beforehand by the DINO rule (so the model really calls it), and keeps the
    rule after save_pretrained / from_pretrained."""
    cfg = Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=1, patch_size=4,
                       image_size=20)  # 5 x 5 table  # fmt: skip
    torch.manual_seed(0)
    model = Dinov2ModelDino(cfg).eval()
    px = torch.randn(1, 3, 16, 16)  # 4 x 4 patches: interpolated
    got = model(pixel_values=px).last_hidden_state

    plain = Dinov2Model(Dinov2Config(**{**cfg.to_dict(), "image_size": 16})).eval()
    sd = model.state_dict()
    sd["embeddings.position_embeddings"] = interpolate_pos_encoding_dino(
        sd["embeddings.position_embeddings"], 16, 16, 4
    )
    plain.load_state_dict(sd)
    assert torch.allclose(got, plain(pixel_values=px).last_hidden_state, atol=1e-6)
    stock = Dinov2Model(cfg).eval()
    stock.load_state_dict(model.state_dict())
    assert not torch.allclose(got, stock(pixel_values=px).last_hidden_state, atol=1e-4)

    model.save_pretrained(tmp_path / "d")
    again = Dinov2ModelDino.from_pretrained(tmp_path / "d").eval()
    assert torch.allclose(again(pixel_values=px).last_hidden_state, got, atol=1e-6)
