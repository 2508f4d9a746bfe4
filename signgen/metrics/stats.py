"""Statistics over per-clip scores: frame-weighted means and paired bootstrap margins.

Clips, not frames, are the unit of these statistics: the frames of one clip share a
signer and a motion, so they are not independent samples (docs/metrics.md, "Comparing
two systems"). The benchmarks report their quality margins with these functions.
"""

from __future__ import annotations

import numpy as np


def weighted_mean(rows: list[dict[str, float]], key: str, n_key: str) -> float:
    """Per-clip scores -> their mean weighted by the clips' frame counts ``n_key``; NaN
    scores (no hand / face in a clip) are left out."""
    v = np.array([r[key] for r in rows])
    n = np.array([r[n_key] for r in rows], dtype=float)
    ok = np.isfinite(v) & (n > 0)
    return float((v[ok] * n[ok]).sum() / n[ok].sum()) if ok.any() else float("nan")


def paired_margin(
    rows: list[dict[str, float]], base: list[dict[str, float]], key: str, n_key: str
) -> dict[str, float]:
    """Per-clip scores of a system and a baseline on the same clips -> the margin (the
    frame-weighted mean of the per-clip differences, :func:`weighted_mean` of each), its 95%
    confidence interval from a paired bootstrap over clips (scipy.stats.bootstrap, BCa,
    10,000 resamples, seed 0) and the number of clips the system wins. Clips, not frames,
    are the resampled unit: frames of one clip share a signer and a motion, so they are
    not independent. Clips where either score is NaN are left out."""
    from scipy.stats import bootstrap

    a = np.array([r[key] for r in rows])
    b = np.array([r[key] for r in base])
    n = np.array([r[n_key] for r in rows], dtype=float)
    ok = np.isfinite(a) & np.isfinite(b) & (n > 0)
    d, w = a[ok] - b[ok], n[ok]
    out = {"margin": float((d * w).sum() / w.sum()) if ok.any() else float("nan"),
           "lo": float("nan"), "hi": float("nan"), "won": int((d > 0).sum()),
           "clips": int(ok.sum())}  # fmt: skip
    if ok.sum() >= 3 and np.ptp(d) > 0:  # a bootstrap needs spread
        ci = bootstrap((d, w), lambda d, w: (d * w).sum() / w.sum(), paired=True,
                       vectorized=False, n_resamples=10_000, confidence_level=0.95,
                       method="BCa", rng=np.random.default_rng(0)).confidence_interval  # fmt: skip
        out["lo"], out["hi"] = float(ci.low), float(ci.high)
    elif ok.any() and np.ptp(d) == 0:
        out["lo"] = out["hi"] = out["margin"]
    return out
