"""The margin statistics the quality benchmarks report (signgen.metrics.stats):
per-clip paired differences with a bootstrap interval over clips."""

from __future__ import annotations

import numpy as np
import pytest

from signgen.metrics.stats import paired_margin, weighted_mean


def _rows(values, n=32):
    return [{"ssim": float(v), "n": n} for v in values]


def test_a_consistent_win_has_an_interval_above_zero():
    base = np.linspace(0.70, 0.85, 8)
    gain = np.array([0.020, 0.030, 0.025, 0.035, 0.022, 0.028, 0.031, 0.026])
    m = paired_margin(_rows(base + gain), _rows(base), "ssim", "n")
    assert m["margin"] == pytest.approx(gain.mean())
    assert m["won"] == 8 and m["clips"] == 8
    assert 0 < m["lo"] < gain.mean() < m["hi"] < gain.max()


def test_a_mixed_result_has_an_interval_across_zero():
    # Same mean gain as above, but two clips lose by a lot: not a clear margin.
    base = np.linspace(0.70, 0.85, 8)
    gain = np.array([0.10, 0.09, 0.08, 0.09, 0.08, 0.10, -0.15, -0.18])
    m = paired_margin(_rows(base + gain), _rows(base), "ssim", "n")
    assert m["won"] == 6
    assert m["lo"] < 0 < m["hi"]


def test_the_margin_is_frame_weighted_and_skips_nan_clips():
    sys_rows = [{"ssim": 0.9, "n": 30}, {"ssim": 0.5, "n": 10}, {"ssim": float("nan"), "n": 5}]
    base = [{"ssim": 0.8, "n": 30}, {"ssim": 0.6, "n": 10}, {"ssim": 0.1, "n": 5}]
    m = paired_margin(sys_rows, base, "ssim", "n")
    assert m["clips"] == 2 and m["won"] == 1
    assert m["margin"] == pytest.approx((0.1 * 30 - 0.1 * 10) / 40)


def test_weighted_mean_weights_by_frames_and_skips_nan():
    rows = [{"ssim": 0.9, "n": 30}, {"ssim": 0.5, "n": 10}, {"ssim": float("nan"), "n": 5},
            {"ssim": 0.1, "n": 0}]  # fmt: skip
    assert weighted_mean(rows, "ssim", "n") == pytest.approx((0.9 * 30 + 0.5 * 10) / 40)
    assert np.isnan(weighted_mean([{"ssim": float("nan"), "n": 3}], "ssim", "n"))
