"""Evaluation metrics with pinned implementations (docs/metrics.md).

Light on import (the CLI reads the names below); the metric code lives in submodules:
``ssim`` (SSIM variants, PSNR), ``perceptual`` (LPIPS), ``fid`` (Inception features,
Frechet distance), ``hand`` (Hand SSIM, Hand PE, the hand detector interface),
``video`` (flicker, temporal consistency, I3D and FVD), ``evaluate`` (``signgen evaluate``),
``report`` (``signgen report``).
"""

from __future__ import annotations

# Metrics ``signgen evaluate --metrics`` accepts, and the default selection.
ALL_METRICS = ("ssim", "psnr", "lpips", "fid", "hand_ssim", "hand_pe", "flicker", "fvd")
KNOWN_METRICS = (*ALL_METRICS, "ssim_df", "ssim_256")
DEFAULT_METRICS = ("ssim", "psnr", "flicker")

# FPDM (B6) on Phoenix-2014T, paper Table 4: the reference row of reports.
PAPER_TABLE4 = {"ssim": 0.886, "hand_ssim": 0.6816, "hand_pe": 21.43, "fid": 5.129}
