"""Pose-following metrics (signgen.metrics.regions) on constructed cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from signgen.data.synthetic import BACKGROUND, LEFT_ARM, LEFT_HAND, RIGHT_ARM, TORSO
from signgen.metrics.regions import (
    ghost_mae,
    ghost_mask,
    moved_mask,
    moved_psnr,
    moved_ssim,
    region_scores,
    ssim_maps,
)
from signgen.metrics.ssim import ssim_uint8

C1 = (0.01 * 255) ** 2  # SSIM's luminance constant at data range 255


def test_moved_and_ghost_masks_by_hand():
    first = np.array([[BACKGROUND, LEFT_ARM, TORSO, LEFT_HAND]], np.uint8)  # (1, 4)
    labels = np.array([
        [[BACKGROUND, LEFT_ARM, TORSO, LEFT_HAND]],   # nothing moved
        [[LEFT_ARM, TORSO, TORSO, RIGHT_ARM]],         # the arm left pixel 1, the hand pixel 3
    ], np.uint8)  # fmt: skip
    assert moved_mask(first, labels).tolist() == [[[0, 0, 0, 0]], [[1, 1, 0, 1]]]
    # Pixel 1 had an arm and now shows the torso: a ghost pixel. Pixel 3 had a hand and now
    # shows another limb: not a ghost. Pixel 0 gained a limb: moved, not a ghost.
    assert ghost_mask(first, labels).tolist() == [[[0, 0, 0, 0]], [[0, 1, 0, 0]]]


def _flat(value: int, shape=(2, 40, 40, 3)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


def test_ghost_error_of_a_copy_an_exact_render_and_a_half_erased_limb():
    # The target shows background 50 where the first frame had an arm of value 200.
    gt = _flat(50)
    mask = np.zeros(gt.shape[:3], bool)
    mask[1, 10:20, 10:20] = True
    copy = gt.copy()
    copy[mask] = 200
    half = gt.copy()
    half[mask] = 125
    assert ghost_mae(copy, gt, mask) == (150.0, 100)
    assert ghost_mae(gt, gt, mask) == (0.0, 100)
    assert ghost_mae(half, gt, mask) == (75.0, 100)
    # Errors outside the mask do not count.
    noisy = half.copy()
    noisy[0] = 255
    assert ghost_mae(noisy, gt, mask) == (75.0, 100)
    v, n = ghost_mae(gt, gt, np.zeros_like(mask))
    assert math.isnan(v) and n == 0


def test_moved_psnr_by_hand():
    gt = _flat(100)
    pred = gt.copy()
    mask = np.zeros(gt.shape[:3], bool)
    mask[0, :5, :5] = True
    pred[mask] = 110  # an error of 10 on every masked pixel and channel: MSE 100
    assert moved_psnr(pred, gt, mask)[0] == pytest.approx(10 * math.log10(255**2 / 100))
    assert moved_psnr(gt, gt, mask)[0] == math.inf


def test_moved_ssim_of_flat_regions_by_hand():
    # Two flat images: zero variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) at every
    # pixel whose window stays inside the flat area.
    gt, pred = _flat(50), _flat(100)
    mask = np.zeros(gt.shape[:3], bool)
    mask[:, 15:25, 15:25] = True
    expected = (2 * 100 * 50 + C1) / (100**2 + 50**2 + C1)
    value, n = moved_ssim(pred, gt, mask)
    assert n == 200 and value == pytest.approx(expected, abs=1e-6)
    assert moved_ssim(gt, gt, mask)[0] == pytest.approx(1.0)


def test_the_map_interior_is_the_whole_frame_ssim():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (3, 30, 36, 3), dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-50, 50, gt.shape), 0, 255).astype(np.uint8)
    maps = ssim_maps(pred, gt)
    whole = ssim_uint8(torch.from_numpy(pred).permute(0, 3, 1, 2).contiguous(),
                       torch.from_numpy(gt).permute(0, 3, 1, 2).contiguous())  # fmt: skip
    np.testing.assert_allclose(maps[:, 5:-5, 5:-5].mean(axis=(1, 2)), whole.numpy(), atol=1e-5)


def test_region_scores_separate_the_copy_from_an_exact_render():
    # A grey limb (value 200) on background 60 moves from the left to the right half.
    frames = _flat(60, (3, 40, 60, 3))
    labels = np.zeros((3, 40, 60), np.uint8)
    for t, x in enumerate((5, 20, 40)):
        frames[t, 10:30, x : x + 12] = 200
        labels[t, 10:30, x : x + 12] = LEFT_ARM
    exact = region_scores(frames, frames, labels)
    copy = region_scores(np.repeat(frames[:1], 3, axis=0), frames, labels)
    assert exact["n_moved"] == copy["n_moved"] == 2 * 2 * 20 * 12  # frames 1, 2: left + arrived
    assert exact["n_ghost"] == copy["n_ghost"] == 2 * 20 * 12
    assert exact["moved_ssim"] == pytest.approx(1.0) and exact["ghost_mae"] == 0.0
    assert copy["ghost_mae"] == pytest.approx(140.0)  # the copy keeps the limb: |200 - 60|
    assert copy["moved_ssim"] < 0.5 and copy["moved_psnr"] < 20
