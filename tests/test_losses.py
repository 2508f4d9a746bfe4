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
