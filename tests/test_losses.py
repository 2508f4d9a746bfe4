"""Stage-1 losses and retrieval metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from signgen.train.losses import info_nce_baseline, info_nce_source_enhanced, retrieval_metrics

TAU = 0.07


def _row_ce(sims: list[float], pos: int, tau: float = TAU) -> float:
    """-log softmax(sims / tau)[pos], written out."""
    return -sims[pos] / tau + math.log(sum(math.exp(s / tau) for s in sims))


def test_info_nce_baseline_hand_computed():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fusion = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # cos(T1, F) = (1, 0.6); cos(T2, F) = (0, 0.8); positives on the diagonal.
    expected = (_row_ce([1.0, 0.6], 0) + _row_ce([0.0, 0.8], 1)) / 2
    got = info_nce_baseline(target, fusion, temperature=TAU)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_info_nce_baseline_is_not_symmetric_in_roles():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fusion = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    a = info_nce_baseline(target, fusion).item()
    b = info_nce_baseline(fusion, target).item()
    # rows are targets: swapping roles changes the softmax normalisation
    assert a != pytest.approx(b)


def test_info_nce_source_enhanced_hand_computed():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fusion = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    source = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    # rows [T1, T2, S1, S2] x columns [F1, F2, S1, S2], cosine similarities by hand:
    sims = [
        [0.8, 0.0, 0.6, 1.0],
        [0.6, 1.0, 0.8, 0.0],
        [0.96, 0.8, 1.0, 0.6],
        [0.8, 0.0, 0.6, 1.0],
    ]
    expected = sum(_row_ce(row, i) for i, row in enumerate(sims)) / 4
    got = info_nce_source_enhanced(target, fusion, source, temperature=TAU)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_source_enhanced_penalises_fusion_close_to_source():
    torch.manual_seed(0)
    t = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    s = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    good = info_nce_source_enhanced(t, t.clone(), s)
    bad = info_nce_source_enhanced(t, s.clone(), s)  # fusion collapsed onto the source
    assert good < bad


def test_losses_have_gradients():
    t = torch.randn(3, 5, requires_grad=True)
    f = torch.randn(3, 5, requires_grad=True)
    s = torch.randn(3, 5, requires_grad=True)
    info_nce_source_enhanced(t, f, s).backward()
    assert t.grad is not None and f.grad is not None and s.grad is not None
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


def test_retrieval_metrics_constructed_case():
    candidates = torch.eye(4)
    query = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0],  # true candidate 0 best -> rank 1
            [0.0, 0.5, 1.0, 0.0],  # candidate 2 beats the true 1 -> rank 2
            [1.0, 0.0, 0.2, 0.5],  # candidates 0 and 3 beat the true 2 -> rank 3
            [0.0, 0.0, 0.0, 1.0],  # rank 1
        ]
    )
    m = retrieval_metrics(query, candidates)
    assert m["R@1"] == pytest.approx(0.5)
    assert m["R@3"] == pytest.approx(1.0)
    assert m["R@5"] == pytest.approx(1.0)
    assert m["avg_rank"] == pytest.approx((1 + 2 + 3 + 1) / 4)


# ---- VAE colour augmentation ------------------------------------------------------------------
def test_hue_rotation_is_a_rotation_about_the_grey_axis():
    from signgen.train.vae import hue_rotation

    r = hue_rotation(torch.tensor([0.0, 2 * math.pi / 3, 1.234], dtype=torch.float64))
    torch.testing.assert_close(r[0], torch.eye(3, dtype=torch.float64))
    # 120 degrees about (1, 1, 1) cycles the primaries: red -> green -> blue -> red.
    torch.testing.assert_close(r[1] @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                               torch.tensor([0.0, 1, 0], dtype=torch.float64))  # fmt: skip
    torch.testing.assert_close(r[2] @ r[2].T, torch.eye(3, dtype=torch.float64))
    grey = torch.tensor([0.3, 0.3, 0.3], dtype=torch.float64)
    torch.testing.assert_close(r[2] @ grey, grey)


def test_hue_augment_keeps_grey_levels_and_respects_p():
    from signgen.train.vae import hue_augment

    x = torch.rand(4, 3, 5, 6) * 0.5 - 0.25  # inside [-1, 1] after any rotation
    assert torch.equal(hue_augment(x, 0.0), x)
    y = hue_augment(x, 1.0)
    assert not torch.allclose(y, x)
    torch.testing.assert_close(y.mean(1), x.mean(1))  # the grey level of each pixel
    assert y.min() >= -1 and y.max() <= 1


def test_source_fusion_l1_as_the_published_code_computes_it():
    """Their stage-1 term: mean |[S; S] - [F; S]| over the doubled batch of the
    source-enhanced loss (half of mean |S - F|), mean |S - F| with the baseline loss."""
    from signgen.train.ipf import source_fusion_l1

    s = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    f = torch.tensor([[0.0, 0.0], [0.5, 1.0]])
    assert float(source_fusion_l1(s, f, "baseline")) == pytest.approx((1 + 2 + 0 + 1) / 4)
    doubled = (torch.cat([s, s]) - torch.cat([f, s])).abs().mean()
    assert float(source_fusion_l1(s, f, "source_enhanced")) == pytest.approx(float(doubled))
