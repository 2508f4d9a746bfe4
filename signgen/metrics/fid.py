"""FID: Inception pool features, streaming statistics and the Frechet distance.

Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS 2017: ``FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``.

Two named feature extractors, both 2048-d average-pooled Inception-v3 features of images
resized to 299x299 (bilinear, ``align_corners=False``) and scaled to [-1, 1], exactly as
pytorch-fid's ``InceptionV3([3])`` wrapper computes them (docs/metrics.md, "FID"):

``standard``  pytorch-fid's FID Inception (the TF 2015-12-05 graph ported to PyTorch):
              weights ``pt_inception-2015-12-05-6726825d.pth``, what every FID since
              Heusel et al. reports.
``pgpis``     torchvision's ImageNet Inception-v3 (``inception_v3_google-0cc3c7bd.pth``),
              pytorch-fid's ``use_fid_inception=False`` mode: the network the
              DeepFashion pose-transfer tables (PATN, GFLA, PIDM, CFLD) compute FID with.

Neither file can be downloaded here: the user passes it (``--fid-weights``). The network is
built without weights (torchvision's Inception-v3, with pytorch-fid's FID blocks for
``standard``), and the file is read with ``torch.load(weights_only=True)`` and loaded with a
strict ``load_state_dict``: nothing is fetched, nothing is patched. The features equal
pytorch-fid's own wrapper's bit for bit for the same weights (tests/test_metrics.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from signgen.errors import FormatError, InputError, MissingWeightsError
from signgen.fileio import atomic_path

log = logging.getLogger(__name__)

FEATURE_DIM = 2048


@dataclass(frozen=True)
class FIDVariant:
    name: str
    weights_file: str
    url: str
    description: str


FID_VARIANTS: dict[str, FIDVariant] = {
    "standard": FIDVariant(
        "standard",
        "pt_inception-2015-12-05-6726825d.pth",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth",
        "pytorch-fid InceptionV3([3]) pool3 2048-d, FID Inception weights",
    ),
    "pgpis": FIDVariant(
        "pgpis",
        "inception_v3_google-0cc3c7bd.pth",
        "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
        "pytorch-fid InceptionV3([3], use_fid_inception=False) pool 2048-d, torchvision "
        "ImageNet Inception-v3 weights (DeepFashion pose-transfer tables)",
    ),
}


# --------------------------------------------------------------------------- distance


def sqrtm_trace_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr((S1 S2)^(1/2))`` for symmetric PSD S1, S2, in float64.

    ``S1 S2`` is similar to the symmetric PSD ``S1^(1/2) S2 S1^(1/2)``, so its square root's
    trace is the sum of the square roots of that matrix's eigenvalues (tiny negative
    round-off clipped to 0). Two symmetric eigen-decompositions: stable where scipy's
    general ``sqrtm`` of a non-symmetric product needs pytorch-fid's offset fallback.
    """
    w1, v1 = np.linalg.eigh(np.asarray(sigma1, dtype=np.float64))
    s1_half = (v1 * np.sqrt(np.clip(w1, 0.0, None))) @ v1.T
    m = s1_half @ np.asarray(sigma2, dtype=np.float64) @ s1_half
    w = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Frechet distance between N(mu1, S1) and N(mu2, S2) in float64 (Heusel et al. 2017)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    assert mu1.shape == mu2.shape and sigma1.shape == sigma2.shape, "mismatched statistics"
    diff = mu1 - mu2
    tr_covmean = sqrtm_trace_product(sigma1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_distance_scipy(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """pytorch-fid's reference formula (scipy ``sqrtm`` with its offset fallback)."""
    diff = mu1 - mu2
    covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


class FeatureStats:
    """Streaming mean and covariance of feature vectors (float64 sums; never stores rows)."""

    def __init__(self, dim: int | None = None) -> None:
        self.n = 0
        self.sum: np.ndarray | None = None
        self.outer: np.ndarray | None = None
        if dim is not None:
            self._alloc(dim)

    def _alloc(self, dim: int) -> None:
        self.sum = np.zeros(dim, dtype=np.float64)  # (D,)
        self.outer = np.zeros((dim, dim), dtype=np.float64)  # (D, D)

    def update(self, feats: np.ndarray) -> None:
        f = np.asarray(feats, dtype=np.float64)
        f = f.reshape(f.shape[0], -1)  # (N, D)
        if self.sum is None:
            self._alloc(f.shape[1])
        assert self.sum is not None and self.outer is not None
        if f.shape[1] != self.sum.shape[0]:
            raise ValueError(f"feature size {f.shape[1]} != {self.sum.shape[0]}")
        self.n += f.shape[0]
        self.sum += f.sum(axis=0)
        self.outer += f.T @ f

    def merge(self, other: FeatureStats) -> None:
        if other.sum is None:
            return
        if self.sum is None:
            self._alloc(other.sum.shape[0])
        self.n += other.n
        self.sum += other.sum
        self.outer += other.outer

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (``np.cov(rowvar=False)``, as pytorch-fid)."""
        if self.n < 2 or self.sum is None or self.outer is None:
            raise InputError(f"FID needs at least 2 images per set, got {self.n}")
        mu = self.sum / self.n
        cov = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov

    def save(self, path: str | Path, meta: dict) -> None:
        mu, cov = self.mean_cov()
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, mu=mu, sigma=cov, n=self.n, meta=json.dumps(meta))


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Cached (mu, sigma, n) written by :meth:`FeatureStats.save` (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["mu"], f["sigma"], int(f["n"])
    except (OSError, ValueError, KeyError) as exc:
        raise FormatError(f"FID statistics cache {path} is unreadable: {exc}") from None


def cache_key(files: list[str], variant: str, size: tuple[int, int] | None) -> str:
    """Hash of the real set's file list (name, byte size, mtime) + variant + eval size."""
    h = hashlib.sha256()
    h.update(f"{variant}|{size}\n".encode())
    for f in files:
        st = Path(f).stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


# --------------------------------------------------------------------------- extractors


def load_inception_state_dict(
    path: str | Path | None, variant: FIDVariant
) -> dict[str, torch.Tensor]:
    if not path or not Path(path).is_file():
        where = f" ({path} does not exist)" if path else ""
        raise MissingWeightsError(
            f"FID variant '{variant.name}' needs {variant.weights_file}{where}: download it "
            f"on a machine with internet from {variant.url} and pass --fid-weights PATH"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FormatError(f"{path} is not a torch state dict ({exc})".splitlines()[0]) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise FormatError(f"{path} holds a {type(sd).__name__}, expected a state dict")
    return sd


def build_inception(variant: str, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """The Inception-v3 of a FID variant with ``state_dict`` loaded (strict), in eval mode.

    ``standard``: torchvision's Inception-v3 skeleton (1008 classes, no auxiliary head) with
    pytorch-fid's FID blocks in the places its ``fid_inception_v3`` puts them (TF's average
    pooling without padded zeros, max pooling in the last block). ``pgpis``: torchvision's
    ImageNet Inception-v3 with its auxiliary head, as its weights file holds. ``fc`` is
    replaced by the identity: the output is the 2048-d average pool.
    """
    import torchvision

    if variant == "standard":
        from pytorch_fid.inception import (
            FIDInceptionA,
            FIDInceptionC,
            FIDInceptionE_1,
            FIDInceptionE_2,
        )

        net = torchvision.models.inception_v3(
            weights=None, aux_logits=False, num_classes=1008, init_weights=False
        )
        net.Mixed_5b = FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = FIDInceptionE_1(1280)
        net.Mixed_7c = FIDInceptionE_2(2048)
    else:
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    net.load_state_dict(state_dict)  # strict: a key or shape mismatch raises RuntimeError
    net.fc = nn.Identity()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


class InceptionFeatures(nn.Module):
    """(B, 3, H, W) uint8 -> (B, 2048) float32 Inception pool features of a named variant."""

    def __init__(self, variant: str, weights: str | Path | None, device: str | torch.device):
        super().__init__()
        if variant not in FID_VARIANTS:
            raise InputError(f"--fid-variant must be one of {sorted(FID_VARIANTS)}, got {variant}")
        self.variant = FID_VARIANTS[variant]
        sd = load_inception_state_dict(weights, self.variant)
        try:
            self.net = build_inception(variant, sd)
        except RuntimeError as exc:  # load_state_dict key/shape mismatch
            raise FormatError(
                f"{weights} does not match the '{variant}' Inception "
                f"(expected {self.variant.weights_file}): {str(exc).splitlines()[0]}"
            ) from None
        self.net.to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).float() / 255.0  # (B, 3, H, W) in [0, 1]
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        feats = self.net(2.0 * x - 1.0)  # (B, 2048): the network expects [-1, 1]
        return feats.float()
