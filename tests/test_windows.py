"""Sliding windows: the plan covers every frame, weights sum to 1, one window is exact,
agreeing predictions blend to themselves, and blending streams."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from signgen.sampling.windows import blend_windows, iter_blended, window_plan, window_weights

CASES = [(1, 4, 1), (4, 4, 2), (5, 4, 2), (17, 8, 4), (16, 8, 4), (30, 16, 15), (100, 16, 4)]


def _coverage(plan, num_frames):
    count = torch.zeros(num_frames, dtype=torch.long)
    for s, e in plan:
        count[s:e] += 1
    return count


@pytest.mark.parametrize(("t", "w", "o"), CASES)
def test_plan_covers_every_frame_with_equal_windows_the_last_at_the_end(t, w, o):
    plan = window_plan(t, w, o)
    assert bool((_coverage(plan, t) >= 1).all())
    assert plan[0][0] == 0 and plan[-1][1] == t
    assert len({e - s for s, e in plan}) == 1  # one window length per clip
    assert plan[0][1] - plan[0][0] == min(t, w)
    starts = [s for s, _ in plan]
    assert all(b - a == w - o for a, b in pairwise(starts[:-1]))  # stride W - O
    if len(plan) > 1:  # the last window, aligned to the end, is at most a stride further
        assert 0 < starts[-1] - starts[-2] <= w - o
    assert len(set(plan)) == len(plan)


def test_plan_examples_and_bad_arguments():
    assert window_plan(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert window_plan(11, 4, 1) == [(0, 4), (3, 7), (6, 10), (7, 11)]  # last aligned to end
    assert window_plan(3, 16, 4) == [(0, 3)]
    for args in [(0, 4, 1), (5, 0, 0), (5, 4, 4), (5, 4, -1)]:
        with pytest.raises(ValueError):
            window_plan(*args)


@pytest.mark.parametrize("taper", ["uniform", "linear"])
@pytest.mark.parametrize(("t", "w", "o"), CASES)
def test_weights_are_positive_and_sum_to_one_per_frame(t, w, o, taper):
    plan = window_plan(t, w, o)
    weights = window_weights(plan, taper)
    total = torch.zeros(t, dtype=torch.float64)
    for (s, e), wt in zip(plan, weights):
        assert wt.shape == (e - s,) and bool((wt > 0).all())
        total[s:e] += wt
    torch.testing.assert_close(total, torch.ones(t, dtype=torch.float64), rtol=0, atol=1e-12)


def test_uniform_averages_and_linear_ramps_across_an_overlap():
    plan = window_plan(7, 4, 1)  # [(0, 4), (3, 7)]: one shared frame
    u = window_weights(plan, "uniform")
    assert u[0].tolist() == [1, 1, 1, 0.5] and u[1].tolist() == [0.5, 1, 1, 1]
    plan = [(0, 6), (3, 9)]  # three shared frames
    lin = window_weights(plan, "linear")
    # the first window ramps down 3/4, 2/4, 1/4 over the overlap, the second up 1/4 ... 3/4
    torch.testing.assert_close(
        lin[0], torch.tensor([1, 1, 1, 0.75, 0.5, 0.25], dtype=torch.float64)
    )
    torch.testing.assert_close(
        lin[1], torch.tensor([0.25, 0.5, 0.75, 1, 1, 1], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="taper"):
        window_weights(plan, "cosine")


def _predictor(fn, calls=None):
    """predict(spans) -> (n, L, 2, 3, 3) from fn(frame indices (L,)) -> (L, 2, 3, 3)."""

    def predict(spans):
        if calls is not None:
            calls.append(("predict", tuple(spans)))
        return torch.stack([fn(torch.arange(s, e)) for s, e in spans])

    return predict


@pytest.mark.parametrize("taper", ["uniform", "linear"])
def test_a_clip_that_fits_one_window_is_exactly_that_window(taper):
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(6, 2, 3, 3, generator=g)
    for t, w, o in [(6, 6, 2), (6, 16, 4)]:
        plan = window_plan(t, w, o)
        out = blend_windows(_predictor(lambda idx: pred[idx]), plan, window_weights(plan, taper))
        assert torch.equal(out, pred)


@pytest.mark.parametrize("taper", ["uniform", "linear"])
@pytest.mark.parametrize("per_call", [1, 3])
def test_agreeing_predictions_blend_to_themselves(taper, per_call):
    """Windows that predict the same value for a frame (a constant, or any function of the
    frame alone) blend to that value; predictions that disagree are mixed."""
    t, w, o = 37, 8, 3
    plan = window_plan(t, w, o)
    weights = window_weights(plan, taper)
    const = blend_windows(_predictor(lambda idx: torch.full((len(idx), 2, 3, 3), 0.7)), plan,
                          weights, windows_per_call=per_call)  # fmt: skip
    torch.testing.assert_close(const, torch.full((t, 2, 3, 3), 0.7), rtol=0, atol=1e-6)
    field = torch.randn(t, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    same = blend_windows(_predictor(lambda idx: field[idx]), plan, weights,
                         windows_per_call=per_call)  # fmt: skip
    torch.testing.assert_close(same, field, rtol=0, atol=1e-6)


def test_disagreeing_windows_are_mixed_by_their_weights():
    plan = [(0, 4), (2, 6)]
    weights = window_weights(plan, "uniform")

    def predict(spans):  # window k predicts the constant k
        return torch.stack([torch.full((e - s, 1), float(plan.index((s, e)))) for s, e in spans])

    out = blend_windows(predict, plan, weights).flatten()
    assert out.tolist() == [0, 0, 0.5, 0.5, 1, 1]


def test_blending_streams_finished_frames_before_later_windows_are_predicted():
    t, w, o = 40, 8, 2
    plan = window_plan(t, w, o)
    calls: list = []
    runs = []
    for span, chunk in iter_blended(_predictor(lambda idx: idx.float()[:, None], calls), plan,
                                    window_weights(plan, "linear")):  # fmt: skip
        calls.append(("yield", span))
        runs.append(span)
        assert chunk.shape == (span[1] - span[0], 1)
        assert chunk.shape[0] <= w  # never more than a window's worth of open frames
    # The runs tile the clip in order.
    assert runs[0][0] == 0 and runs[-1][1] == t
    assert all(a[1] == b[0] for a, b in pairwise(runs))
    # Each window's finished frames leave before the next window is predicted.
    assert [k for k, _ in calls] == ["predict", "yield"] * len(plan)
    for k, (_, span) in enumerate(calls[1::2]):
        assert calls[2 * k][1] == (plan[k],)
        assert span[1] == (plan[k + 1][0] if k + 1 < len(plan) else t)


def test_windows_per_call_batches_spans_of_equal_length():
    plan = window_plan(20, 6, 2)
    seen = []

    def predict(spans):
        seen.append(spans)
        assert len({e - s for s, e in spans}) == 1
        return torch.stack([torch.arange(s, e).float() for s, e in spans])

    out = blend_windows(predict, plan, window_weights(plan), windows_per_call=2)
    assert [len(s) for s in seen] == [2] * (len(plan) // 2) + [1] * (len(plan) % 2)
    torch.testing.assert_close(out, torch.arange(20).float(), rtol=0, atol=1e-5)
