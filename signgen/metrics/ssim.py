"""SSIM in torch, batched, pinned to scikit-image's ``structural_similarity``.

Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 2004, eq. (13); the reference implementation pinned here
is ``skimage.metrics.structural_similarity`` (scikit-image >= 0.19):

* local statistics by a separable filter: Gaussian (sigma 1.5, ``truncate=3.5`` so the
  window is ``2 * int(3.5 * 1.5 + 0.5) + 1 = 11`` taps) or uniform (``win_size`` taps);
* ``use_sample_covariance`` scales (co)variances by ``NP / (NP - 1)``, ``NP = win_size**2``;
* the SSIM map is averaged over the interior only: skimage filters with ``mode='reflect'``
  and then crops ``pad = (win_size - 1) // 2`` pixels on every side, so the retained
  values never see the padding. A "valid" convolution gives exactly that interior;
* colour images: SSIM per channel, then the mean over channels (``channel_axis=-1``).

Three named variants cover the tables signgen reproduces (``SSIM_VARIANTS``):

``ssim``         Phoenix / FPDM Table 4: Gaussian 11, sigma 1.5, population covariance,
                 ``data_range=255`` on uint8 RGB.
``ssim_df``      the DeepFashion tables' "SSIM" (GFLA/PISE/PIDM ``Reconstruction_Metrics``,
                 also used by CFLD): ``compare_ssim(gt, pred, data_range=1, win_size=51,
                 multichannel=True)`` on images scaled to [0, 1]: uniform window 51,
                 skimage's default sample covariance.
``ssim_256``     CFLD's "SSIM_256" (same file): the images multiplied back to [0, 255] and
                 ``compare_ssim(..., gaussian_weights=True, sigma=1.5,
                 use_sample_covariance=False, data_range=pred.max() - pred.min())``: the
                 Gaussian variant with a per-image data range taken from the prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from signgen.errors import InputError


@dataclass(frozen=True)
class SSIMVariant:
    """One pinned SSIM definition (see the module docstring for the sources)."""

    name: str
    gaussian: bool = True
    win_size: int = 11
    sigma: float = 1.5
    use_sample_covariance: bool = False
    scale: float = 1.0  # uint8 pixels are multiplied by this before SSIM (1/255 -> [0, 1])
    data_range: float | None = 255.0  # None: per image, max(pred) - min(pred)
    description: str = ""


SSIM_VARIANTS: dict[str, SSIMVariant] = {
    "ssim": SSIMVariant(
        "ssim",
        description="skimage structural_similarity(gaussian_weights=True, sigma=1.5, "
        "use_sample_covariance=False, data_range=255, channel_axis=-1) on uint8 RGB",
    ),
    "ssim_df": SSIMVariant(
        "ssim_df",
        gaussian=False,
        win_size=51,
        use_sample_covariance=True,
        scale=1.0 / 255.0,
        data_range=1.0,
        description="DeepFashion 'SSIM': skimage structural_similarity(win_size=51, "
        "data_range=1, channel_axis=-1) on RGB/255 (uniform window, sample covariance)",
    ),
    "ssim_256": SSIMVariant(
        "ssim_256",
        data_range=None,
        description="CFLD 'SSIM_256': skimage structural_similarity(gaussian_weights=True, "
        "sigma=1.5, use_sample_covariance=False, data_range=pred.max()-pred.min())",
    ),
}


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """1-D Gaussian taps as scipy.ndimage.gaussian_filter builds them (radius int(t*s+0.5))."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()  # (2r+1,)


def uniform_window(win_size: int) -> torch.Tensor:
    """1-D box filter taps (scipy.ndimage.uniform_filter)."""
    return torch.full((win_size,), 1.0 / win_size, dtype=torch.float64)


def _filter_valid_torch(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Depthwise 'valid' filtering of (B, C, H, W) with the outer product of ``taps``."""
    c = x.shape[1]
    k = taps.to(dtype=x.dtype, device=x.device)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # along W
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along H


def _ssim_maps_torch(x, y, taps, data_range, k1, k2, cov_norm) -> torch.Tensor:
    """Mean SSIM per image, all on the tensors' device (the CUDA path)."""
    b, c = x.shape[:2]
    x = x.float()
    y = y.float()
    # Shift both images by the same constant (the mean of x per image and channel) so that
    # E[x^2] - E[x]^2 is computed on small numbers: float32 then matches skimage's float64
    # to ~1e-7. Variances and covariances are shift-invariant; the means are shifted back.
    shift = x.mean(dim=(2, 3), keepdim=True)
    xs, ys = x - shift, y - shift
    # Only vx + vy enters the formula, so E[x^2] + E[y^2] is filtered as one map.
    stats = torch.cat([xs, ys, xs * xs + ys * ys, xs * ys], dim=1)  # (B, 4C, H, W)
    filt = _filter_valid_torch(stats, taps)  # (B, 4C, H-win+1, W-win+1)
    ux, uy, uxx_yy, uxy = filt.split(c, dim=1)
    vx_vy = cov_norm * (uxx_yy - ux * ux - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    ux = ux + shift
    uy = uy + shift
    r = torch.as_tensor(data_range, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
    c1 = (k1 * r) ** 2
    c2 = (k2 * r) ** 2
    a1, a2 = 2 * ux * uy + c1, 2 * vxy + c2
    b1, b2 = ux * ux + uy * uy + c1, vx_vy + c2
    smap = (a1 * a2) / (b1 * b2)  # (B, C, h, w)
    return smap.mean(dim=(2, 3), dtype=torch.float64).mean(dim=1).reshape(b)


def _ssim_plane_opencv(x, y, k, c1, c2, cov_norm) -> float:
    """Mean SSIM of one (H, W) channel pair with OpenCV filtering and in-place numpy math.

    Same formula and shift trick as :func:`_ssim_maps_torch`. Hand-written for the CPU
    because PyTorch's CPU depthwise convolution is several times slower than OpenCV's SIMD
    separable filter, and one cache-sized plane at a time avoids the memory traffic of
    ~40 full-batch temporaries (measured: benchmarks/results/metrics_speed.md).
    """
    import cv2

    h, w = x.shape
    r = k.size // 2
    st = np.empty((4, h, w), np.float32)
    s = np.float32(x.mean(dtype=np.float64))
    np.subtract(x, s, out=st[0], dtype=np.float32)
    np.subtract(y, s, out=st[1], dtype=np.float32)
    np.multiply(st[0], st[0], out=st[2])
    np.multiply(st[1], st[1], out=st[3])
    st[2] += st[3]
    np.multiply(st[0], st[1], out=st[3])
    # The four maps stacked into one tall image: a retained ("valid") output row reads
    # only rows of its own map, so filtering across map boundaries lands in the crop.
    f = cv2.sepFilter2D(st.reshape(4 * h, w), cv2.CV_32F, k, k, borderType=cv2.BORDER_REFLECT_101)
    ux, uy, uxx_yy, uxy = f.reshape(4, h, w)[:, r : h - r, r : w - r]
    p = ux * uy  # shifted means: (ux+s)(uy+s) = p + s(ux+uy) + s^2
    q = ux * ux
    q += uy * uy  # (ux+s)^2 + (uy+s)^2 = q + 2s(ux+uy) + 2s^2
    t = ux + uy
    t *= 2 * s
    t += 2 * s * s
    a1 = p * 2
    a1 += t
    a1 += c1
    b1 = q + t
    b1 += c1
    a2 = uxy - p
    a2 *= 2 * cov_norm
    a2 += c2
    b2 = uxx_yy - q
    b2 *= cov_norm
    b2 += c2
    a1 *= a2
    b1 *= b2
    a1 /= b1
    return float(a1.mean(dtype=np.float64))


def _ssim_opencv(x, y, taps, data_range, k1, k2, cov_norm) -> torch.Tensor:
    b, c = x.shape[:2]
    xn = x.numpy() if x.dtype in (torch.uint8, torch.float32) else x.float().numpy()
    yn = y.numpy() if y.dtype in (torch.uint8, torch.float32) else y.float().numpy()
    k = taps.to(torch.float32).numpy()
    r = torch.as_tensor(data_range, dtype=torch.float64).reshape(-1).expand(b).tolist()

    def plane(ij: tuple[int, int]) -> float:
        i, j = ij
        c1, c2 = np.float32((k1 * r[i]) ** 2), np.float32((k2 * r[i]) ** 2)
        return _ssim_plane_opencv(xn[i, j], yn[i, j], k, c1, c2, cov_norm)

    jobs = [(i, j) for i in range(b) for j in range(c)]
    # numpy and OpenCV release the GIL: planes run in parallel on the CPU's cores.
    vals = list(_pool().map(plane, jobs)) if len(jobs) > 1 else [plane(jobs[0])]
    return torch.tensor(vals, dtype=torch.float64).view(b, c).mean(dim=1)  # (B,)


_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1))
    return _POOL


def _has_cv2() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float | torch.Tensor = 255.0,
    gaussian: bool = True,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    use_sample_covariance: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Mean SSIM per image of two (B, C, H, W) batches -> (B,) float64 (Wang et al. 2004).

    ``x``/``y`` hold values in the scale of ``data_range`` (a number or a (B,) tensor, one
    per image). With ``gaussian=True`` the window follows ``sigma`` (11 taps for sigma 1.5)
    and ``win_size`` is ignored, exactly as skimage does. Images smaller than the window
    raise :class:`InputError`. ``backend``: "torch" (conv2d on the tensors' device),
    "opencv" (CPU tensors only) or "auto" (OpenCV for CPU tensors when cv2 is installed).
    """
    assert x.shape == y.shape and x.ndim == 4, (x.shape, y.shape)
    taps = gaussian_window(sigma) if gaussian else uniform_window(win_size)
    win = taps.numel()
    if x.shape[-1] < win or x.shape[-2] < win:
        raise InputError(
            f"SSIM needs images of at least {win}x{win} pixels, got {x.shape[-2]}x{x.shape[-1]}"
        )
    np_ = win * win
    cov_norm = np_ / (np_ - 1) if use_sample_covariance else 1.0
    if backend == "auto":
        backend = "opencv" if x.device.type == "cpu" and _has_cv2() else "torch"
    if backend == "opencv":
        if isinstance(data_range, torch.Tensor):
            data_range = data_range.cpu()
        return _ssim_opencv(x.cpu(), y.cpu(), taps, data_range, k1, k2, cov_norm)
    if backend != "torch":
        raise ValueError(f"unknown SSIM backend {backend!r}")
    return _ssim_maps_torch(x, y, taps, data_range, k1, k2, cov_norm)


def ssim_uint8(
    pred: torch.Tensor,
    gt: torch.Tensor,
    variant: str | SSIMVariant = "ssim",
    backend: str = "auto",
) -> torch.Tensor:
    """SSIM of uint8 (B, 3, H, W) batches under a named variant -> (B,) float64."""
    v = SSIM_VARIANTS[variant] if isinstance(variant, str) else variant
    if v.scale == 1.0:
        p, g = pred, gt
    else:  # e.g. RGB / 255 in float32, as the DeepFashion evaluation scripts feed skimage
        p, g = pred.float() * v.scale, gt.float() * v.scale
    if v.data_range is None:
        data_range = (p.amax(dim=(1, 2, 3)) - p.amin(dim=(1, 2, 3))).float()  # (B,)
    else:
        data_range = v.data_range
    # skimage's argument order is (gt, pred); SSIM is symmetric in the two images.
    return ssim(
        g,
        p,
        data_range=data_range,
        gaussian=v.gaussian,
        win_size=v.win_size,
        sigma=v.sigma,
        use_sample_covariance=v.use_sample_covariance,
        backend=backend,
    )


def psnr(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """PSNR per image of (B, ...) batches -> (B,) float64, as skimage peak_signal_noise_ratio.

    ``10 * log10(data_range**2 / MSE)`` with the MSE over all pixels and channels, in float64.
    Identical images give ``inf`` (skimage does the same).
    """
    diff = pred.double() - gt.double()
    mse = diff.flatten(1).pow(2).mean(dim=1)  # (B,)
    with torch.no_grad():
        out = 10.0 * torch.log10(data_range**2 / mse)
    return torch.where(mse == 0, torch.full_like(out, math.inf), out)
