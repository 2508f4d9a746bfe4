"""Pose-following metrics: quality where the signer moved, and ghosts of the first frame.

Whole-frame SSIM rewards a render that keeps the first frame: most of a signing frame
(background, torso, face) does not move, so copying the first frame already scores high
while every moved limb is wrong. These metrics look only where the pose changed, using
per-pixel part labels of the first frame and of the target (the synthetic world writes
them: :func:`signgen.data.synthetic.render_part_labels`):

* **moved region**: the pixels whose part label in the target differs from the first
  frame's (a limb arrived or left). :func:`moved_ssim` is the mean of the SSIM map
  (Wang et al. 2004, the same Gaussian 11 / sigma 1.5 / data range 255 definition as
  :mod:`signgen.metrics.ssim`) over those pixels; :func:`moved_psnr` the PSNR of their
  mean squared error.
* **ghost region**: the pixels where the first frame shows a limb (arm or hand) and the
  target shows none. A render that keeps the first frame's limb there (a "ghost") has a
  large :func:`ghost_mae`, the mean absolute error against the target over those pixels
  and the three channels, in grey levels (0-255).

Every function pools the pixels of all frames of a clip (a frame in which nothing moved
adds no pixels), and returns the pixel count with the score so that clips can be
averaged by pixels.
"""

from __future__ import annotations

import math

import numpy as np

from signgen.data.synthetic import LIMBS


def moved_mask(first_labels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(H, W) labels of the first frame, (T, H, W) of the targets -> (T, H, W) bool:
    the pixels whose part label changed."""
    assert first_labels.shape == labels.shape[-2:], (first_labels.shape, labels.shape)
    return labels != first_labels[None]


def ghost_mask(first_labels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(H, W), (T, H, W) -> (T, H, W) bool: a limb in the first frame, none in the target."""
    assert first_labels.shape == labels.shape[-2:], (first_labels.shape, labels.shape)
    return np.isin(first_labels, LIMBS)[None] & ~np.isin(labels, LIMBS)


def ssim_maps(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) stacks -> (T, H, W) float64 SSIM maps, the mean over channels.

    scikit-image's ``structural_similarity(full=True)`` with the settings of signgen's
    "ssim" variant (Gaussian 11, sigma 1.5, population covariance, data range 255); the
    mean of a map's interior is that image's SSIM.
    """
    from skimage.metrics import structural_similarity

    assert pred.shape == gt.shape and pred.ndim == 4, (pred.shape, gt.shape)
    out = np.empty(pred.shape[:3], np.float64)
    for t in range(len(pred)):
        _, smap = structural_similarity(
            gt[t], pred[t], channel_axis=-1, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=255, full=True,
        )  # fmt: skip
        out[t] = smap.mean(axis=-1)
    return out


def moved_ssim(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, maps: np.ndarray | None = None
) -> tuple[float, int]:
    """Mean SSIM map over the masked pixels of uint8 (T, H, W, 3) clips, and their count.

    ``mask`` (T, H, W) bool, e.g. :func:`moved_mask`; ``maps``: precomputed
    :func:`ssim_maps` of the same pair. NaN when the mask is empty.
    """
    n = int(mask.sum())
    if n == 0:
        return float("nan"), 0
    maps = ssim_maps(pred, gt) if maps is None else maps
    return float(maps[mask].mean()), n


def moved_psnr(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    """PSNR (data range 255) of the masked pixels' mean squared error over the three
    channels, and the pixel count. NaN when the mask is empty, inf when they are equal."""
    n = int(mask.sum())
    if n == 0:
        return float("nan"), 0
    d = pred[mask].astype(np.float64) - gt[mask].astype(np.float64)  # (n, 3)
    mse = float((d * d).mean())
    return (math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)), n


def ghost_mae(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    """Mean absolute error (grey levels) over the masked pixels and channels, and the count.

    With :func:`ghost_mask`: how much of the first frame's limbs is left where the target
    has none. NaN when the mask is empty.
    """
    n = int(mask.sum())
    if n == 0:
        return float("nan"), 0
    d = np.abs(pred[mask].astype(np.float64) - gt[mask].astype(np.float64))
    return float(d.mean()), n


def region_scores(
    pred: np.ndarray, gt: np.ndarray, labels: np.ndarray, first_labels: np.ndarray | None = None
) -> dict[str, float]:
    """Moved-region SSIM and PSNR and ghost error of a uint8 (T, H, W, 3) clip against its
    ground truth, from the targets' part labels (T, H, W); the first frame's labels default
    to ``labels[0]`` (the clip's first frame is the source). Keys ``moved_ssim``,
    ``moved_psnr``, ``ghost_mae`` with their pixel counts ``n_moved``, ``n_ghost``."""
    first = labels[0] if first_labels is None else first_labels
    moved = moved_mask(first, labels)
    ghost = ghost_mask(first, labels)
    ms, n_moved = moved_ssim(pred, gt, moved)
    mp, _ = moved_psnr(pred, gt, moved)
    ge, n_ghost = ghost_mae(pred, gt, ghost)
    return {"moved_ssim": ms, "moved_psnr": mp, "n_moved": n_moved,
            "ghost_mae": ge, "n_ghost": n_ghost}  # fmt: skip
