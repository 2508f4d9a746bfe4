"""Threshold, gap interpolation and confidence-aware One-Euro smoothing."""

from __future__ import annotations

import numpy as np
import pytest
from keypoint_writers import random_points

from signgen.errors import InputError
from signgen.keypoints import KeypointSequence
from signgen.keypoints.filters import (
    OneEuroConfig,
    apply_threshold,
    interpolate_gaps,
    one_euro,
    process,
    relative_confidence,
    smoothing_factor,
)


def test_smoothing_factor_limits():
    assert smoothing_factor(1e9, 0.04) == pytest.approx(1.0, abs=1e-6)  # no smoothing
    assert smoothing_factor(1e-9, 0.04) == pytest.approx(0.0, abs=1e-6)  # frozen
    assert smoothing_factor(1.0, 0.02) < smoothing_factor(1.0, 0.04)  # higher rate: smaller step


def test_one_euro_reduces_jitter_on_constant_signal():
    rng = np.random.default_rng(0)
    x = 100.0 + rng.normal(0, 2.0, size=(500, 4))
    y = one_euro(x, fps=25, min_cutoff=1.0, beta=0.0)
    assert y[50:].var() < 0.25 * x[50:].var()
    assert abs(y[50:].mean() - 100.0) < 0.5


def test_one_euro_tracks_ramp_and_beta_reduces_lag():
    t = np.arange(200, dtype=np.float64)
    x = 3.0 * t  # 3 units per frame
    slow = one_euro(x, fps=25, min_cutoff=1.0, beta=0.0)
    fast = one_euro(x, fps=25, min_cutoff=1.0, beta=0.05)
    lag_slow, lag_fast = (x - slow)[100:], (x - fast)[100:]
    assert np.ptp(lag_slow) < 0.1 and np.ptp(lag_fast) < 0.1  # steady lag: it follows
    assert 0 < lag_fast.mean() < 0.5 * lag_slow.mean()


def test_one_euro_low_confidence_moves_filter_less():
    x = np.zeros(40)
    x[20:] = 10.0  # step
    sure = one_euro(x, np.ones(40), fps=25, min_cutoff=1.0)
    unsure = one_euro(x, np.full(40, 0.2), fps=25, min_cutoff=1.0)
    assert 0 < unsure[20] < sure[20] < 10.0


def test_one_euro_missing_points_keep_state_and_restart():
    x = np.array([0.0, 0.0, 50.0, 80.0, 80.0])
    conf = np.array([1.0, 1.0, 0.0, 1.0, 1.0])
    y = one_euro(x, conf, fps=25, min_cutoff=0.1)
    assert y[2] == 50.0  # missing: raw value passed through
    assert y[3] == 80.0  # restart after the dropout instead of dragging from 0


def test_threshold():
    pts = random_points(3, 10, 10)
    out = apply_threshold(pts, 0.5)
    assert ((out[..., 2] == 0) == (pts[..., 2] < 0.5)).all()
    assert (pts[..., 2] > 0).all()  # input untouched


def test_interpolate_fills_short_gap_linearly_and_leaves_long_gap():
    pts = np.zeros((12, 133, 3), np.float32)
    pts[:, :, 0] = np.arange(12)[:, None] * 2.0
    pts[:, :, 1] = 5.0
    pts[:, :, 2] = 1.0
    pts[3:5, 7, 2] = 0  # 2-frame gap of point 7
    pts[3:5, 7, :2] = -99
    pts[6:10, 8, 2] = 0  # 4-frame gap of point 8
    pts[0:2, 9, 2] = 0  # leading gap of point 9
    out = interpolate_gaps(pts, max_gap=2)
    np.testing.assert_allclose(out[3:5, 7, 0], [6.0, 8.0])
    np.testing.assert_allclose(out[3:5, 7, 1], [5.0, 5.0])
    assert (out[3:5, 7, 2] > 0).all()
    assert (out[6:10, 8, 2] == 0).all()
    assert (out[0:2, 9, 2] == 0).all()


def test_process_is_identity_by_default_and_orders_steps():
    pts = random_points(20, 210, 260)
    seq = KeypointSequence(pts, 210, 260, 25.0)
    same = process(seq)
    np.testing.assert_array_equal(same.points, pts)
    assert same is not seq
    pts2 = pts.copy()
    pts2[5:7, 100, 2] = 0.01  # low-confidence dropout of the left knuckle
    done = process(KeypointSequence(pts2, 210, 260, 25.0), threshold=0.02, max_gap=2, smooth=True)
    assert (done.points[5:7, 100, 2] > 0).all()  # thresholded, then filled
    assert (
        np.abs(np.diff(done.points[:, :, 0], axis=0)).mean()
        < np.abs(np.diff(pts[:, :, 0], axis=0)).mean()
    )  # smoothed: smaller frame-to-frame steps


def test_bad_parameters():
    with pytest.raises(InputError):
        OneEuroConfig(min_cutoff=0)
    with pytest.raises(InputError):
        process(KeypointSequence(random_points(2, 5, 5), 5, 5, 25.0), max_gap=-1)


def test_relative_confidence_keeps_typical_points_at_full_weight():
    scores = np.array([[0.6, 0.9], [0.6, 0.0], [0.3, 0.9], [0.6, 0.9]], np.float32)
    w = relative_confidence(scores)
    np.testing.assert_allclose(w[:, 0], [1.0, 1.0, 0.5, 1.0])
    np.testing.assert_allclose(w[:, 1], [1.0, 0.0, 1.0, 1.0])  # missing stays 0


def _signing_like(rng: np.random.Generator, with_still_phases: bool) -> np.ndarray:
    """(250, 133, 3) true points: 0.5 Hz / 1 Hz motion, optionally with still phases."""
    t = np.arange(250)[:, None] / 25.0
    phase = rng.uniform(0, 6.3, (1, 133))
    truth = np.ones((250, 133, 3), np.float32)
    x = 105 + 40 * np.sin(2 * np.pi * 0.5 * t + phase)
    if with_still_phases:
        still = np.sin(2 * np.pi * 0.3 * t + phase) > 0.2
        for i in range(1, len(x)):
            x[i] = np.where(still[i], x[i - 1], x[i])
        y = np.full_like(x, 130.0)
    else:
        y = 130 + 15 * np.sin(2 * np.pi * 1.0 * t + phase)
    truth[..., 0], truth[..., 1] = x, y
    return truth


@pytest.mark.parametrize("still", [True, False])
def test_default_smoothing_cuts_jitter_without_lagging_behind_motion(still):
    """1.5 px detector noise at 25 fps on a 260 px frame; scores uninformative (0.5-1)."""
    rng = np.random.default_rng(1)
    truth = _signing_like(rng, still)
    noisy = truth.copy()
    noisy[..., :2] += rng.normal(0, 1.5, noisy[..., :2].shape)
    noisy[..., 2] = rng.uniform(0.5, 1.0, (250, 133))
    out = process(KeypointSequence(noisy, 210, 260, 25.0), smooth=True).points

    def rmse(a):
        return np.sqrt(((a[25:, :, :2] - truth[25:, :, :2]) ** 2).mean())

    def jitter(a):
        return np.abs(np.diff(a[25:, :, :2], n=2, axis=0)).mean()

    assert jitter(out) < (0.7 if still else 0.85) * jitter(noisy)
    assert rmse(out) < (0.95 if still else 1.05) * rmse(noisy)
