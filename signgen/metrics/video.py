"""Video metrics of a generated clip against its ground truth: flicker, temporal
consistency, and FVD.

Per clip (:func:`video_metrics`), on uint8 frames of equal size, in uint8 units:

``flicker``   mean |x_t - x_{t-1}| over pixels and frame pairs (the flicker of
              ``signgen evaluate``), of the generated and of the real clip; the flicker
              error is |flicker - flicker_gt|: a steady real video must not be scored
              better for a generator that freezes, nor a jittery one for one that shakes.
``temporal consistency``  mean |x_t - (x_{t-1} + x_{t+1}) / 2| over the interior frames:
              the second difference, which is 0 for motion at constant speed and large for
              a frame that jumps away from both its neighbours (flicker proper), so unlike
              the flicker it does not grow with how much the signer moves. Reported for
              both clips and as the difference generated - real.

Over a set of clips, FVD (Unterthiner et al., "Towards Accurate Generative Models of
Video: A New Metric & Challenges", 2018) in the StyleGAN-V convention (Skorokhodov et al.,
"StyleGAN-V", CVPR 2022, as its evaluation code is commonly run): each clip's first
``clip_frames`` (16) frames, resized so the short side is 224 (bilinear), centre-cropped to
224 x 224, scaled to [-1, 1]; the 400 Kinetics logits of the I3D network (before the
softmax, averaged over time) as features; the Frechet distance between the Gaussians of the
generated and the real features (:func:`signgen.metrics.fid.frechet_distance`). Clips
shorter than ``clip_frames`` are left out and counted, as StyleGAN-V discards short videos.

The I3D network (Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017) is
:class:`InceptionI3d`, written here because no installed library provides it: torchvision
has R3D/MC3/R(2+1)D/S3D/MViT/Swin3D video models and pytorchvideo an I3D with a ResNet-50
trunk, none the Inception-v1 I3D that every FVD is computed with. Its parameter names are
those of the widely used PyTorch port (``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b0.bn.*``,
``logits.conv3d.*``), so its state-dict files load as they are, from a LOCAL path only,
with ``torch.load(weights_only=True)`` or safetensors: nothing in the file is executed.
StyleGAN-V distributes its weights as a TorchScript archive instead; loading one
(``torch.jit.load``) compiles and later runs the TorchScript code inside the file, which is
a program, not data, so signgen does not read that format. Which weights a number comes
from changes the number: :class:`FVDStats` records the weights file's SHA-256, and reports
must name it (the TF-hub I3D used by the original FVD differs from the weights released
with the I3D paper).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from signgen.errors import FormatError, InputError, MissingWeightsError
from signgen.metrics.fid import FeatureStats, frechet_distance

I3D_SIZE = 224  # I3D input side (short side resize, then centre crop)
FVD_FRAMES = 16  # StyleGAN-V's FVD_16
I3D_MIN_FRAMES = 9  # fewer frames leave less than the final pool's 2 time steps

# --------------------------------------------------------------------------- per clip


def _frames(clip: Any, what: str) -> np.ndarray:
    x = clip.numpy() if isinstance(clip, torch.Tensor) else np.asarray(clip)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise InputError(f"{what} must be uint8 frames (T, H, W, 3), got {x.dtype} {x.shape}")
    return x


def flicker(frames: np.ndarray) -> float:
    """Mean |x_t - x_{t-1}| over pixels and consecutive frame pairs (uint8 units); NaN for
    a single frame."""
    f = frames.astype(np.float32)  # (T, H, W, 3)
    if len(f) < 2:
        return math.nan
    return float(np.abs(f[1:] - f[:-1]).mean(dtype=np.float64))


def temporal_consistency(frames: np.ndarray) -> float:
    """Mean |x_t - (x_{t-1} + x_{t+1}) / 2| over pixels and interior frames (uint8 units);
    NaN for fewer than 3 frames. 0 for any clip whose pixels change at constant speed."""
    f = frames.astype(np.float32)  # (T, H, W, 3)
    if len(f) < 3:
        return math.nan
    return float(np.abs(f[1:-1] - (f[:-2] + f[2:]) / 2).mean(dtype=np.float64))


def video_metrics(pred_clip: Any, gt_clip: Any, *, fvd: FVDStats | None = None) -> dict[str, float]:
    """Temporal metrics of one generated clip against its ground truth, both uint8
    ``(T, H, W, 3)`` of the same shape. With ``fvd``, also adds both clips' I3D features
    to it (the distance is :meth:`FVDStats.fvd` over all clips added)."""
    pred, gt = _frames(pred_clip, "pred_clip"), _frames(gt_clip, "gt_clip")
    if pred.shape != gt.shape:
        raise InputError(f"generated clip {pred.shape} and ground truth {gt.shape} differ")
    fl, fl_gt = flicker(pred), flicker(gt)
    tc, tc_gt = temporal_consistency(pred), temporal_consistency(gt)
    if fvd is not None:
        fvd.add(pred, gt)
    return {
        "flicker": fl,
        "flicker_gt": fl_gt,
        "flicker_error": abs(fl - fl_gt),
        "temporal_consistency": tc,
        "temporal_consistency_gt": tc_gt,
        "temporal_consistency_diff": tc - tc_gt,
    }


# --------------------------------------------------------------------------- I3D


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding of one axis: (before, after), the extra one after."""
    total = max(kernel - (size % stride if size % stride else stride), 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], value: float):
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):  # (W, H, T) order
        pads.extend(_same_padding(int(size), k, s))
    return F.pad(x, pads, value=value)


class Unit3D(nn.Module):
    """Conv3d (TF "SAME" padding, no bias) + BatchNorm + ReLU: I3D's unit."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), *,
                 bn_eps: float = 1e-3, bn: bool = True, relu: bool = True, bias: bool = False):  # fmt: skip
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=bn_eps, momentum=0.01) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride, 0.0))
        x = self.bn(x) if self.bn is not None else x
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max pooling with TF "SAME" padding (padding never wins the max)."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad_same(x, self.kernel, self.stride, -math.inf)
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Inception module: 1x1 | 1x1-3x3 | 1x1-3x3 | maxpool-1x1 branches, concatenated."""

    def __init__(self, cin: int, c: Sequence[int], bn_eps: float) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, c[0], bn_eps=bn_eps)
        self.b1a = Unit3D(cin, c[1], bn_eps=bn_eps)
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(cin, c[3], bn_eps=bn_eps)
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c[5], bn_eps=bn_eps)
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1, b2 = self.b1b(self.b1a(x)), self.b2b(self.b2a(x))
        return torch.cat([self.b0(x), b1, b2, self.b3b(self.b3a(x))], dim=1)


# Inception-v1 widths per mixed block (Szegedy et al. 2015, Table 1; I3D keeps them):
# (1x1, 3x3 reduce, 3x3, 3x3 reduce, 3x3 [5x5 in 2D], pool proj).
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class InceptionI3d(nn.Module):
    """The RGB Inception-v1 I3D (Carreira & Zisserman 2017), TF "SAME" padding.

    (B, 3, T, 224, 224) in [-1, 1] -> logits (B, num_classes), averaged over time, or with
    ``features="pool"`` the time-and-space average of Mixed_5c (B, 1024). ``width_divisor``
    divides every width (tests build a network of the same structure that runs in
    milliseconds); ``bn_eps`` is the TF model's 1e-3.
    """

    def __init__(self, num_classes: int = 400, *, width_divisor: int = 1, bn_eps: float = 1e-3):
        super().__init__()

        def w(c: int) -> int:
            return max(1, c // width_divisor)

        self.Conv3d_1a_7x7 = Unit3D(3, w(64), (7, 7, 7), (2, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(w(64), w(64), bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(w(64), w(192), (3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        cin = w(192)
        pools = {"Mixed_4b": ("MaxPool3d_4a_3x3", (3, 3, 3)), "Mixed_5b": ("MaxPool3d_5a_2x2", (2, 2, 2))}  # fmt: skip
        self._order = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3",
                       "MaxPool3d_3a_3x3"]  # fmt: skip
        for name, widths in _MIXED.items():
            if name in pools:
                pool_name, k = pools[name]
                setattr(self, pool_name, MaxPool3dSame(k, (2, 2, 2)))
                self._order.append(pool_name)
            block = InceptionBlock(cin, [w(c) for c in widths], bn_eps)
            setattr(self, name, block)
            self._order.append(name)
            cin = block.out_channels
        self.feature_dim = cin
        self.logits = Unit3D(cin, num_classes, bn=False, relu=False, bias=True)

    def forward(self, x: torch.Tensor, features: str = "logits") -> torch.Tensor:
        for name in self._order:
            x = getattr(self, name)(x)  # Mixed_5c: (B, 1024, T/8, 7, 7) at 224
        if features == "pool":
            return x.mean(dim=(2, 3, 4))  # (B, 1024)
        assert features == "logits", features
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # (B, 1024, T/8 - 1, 1, 1)
        x = self.logits(x)  # (B, num_classes, T', 1, 1); dropout is off at evaluation
        return x.flatten(2).mean(dim=2)  # (B, num_classes)


def load_i3d(
    path: str | Path | None, *, width_divisor: int | None = None, num_classes: int = 400,
    bn_eps: float = 1e-3,
) -> InceptionI3d:  # fmt: skip
    """:class:`InceptionI3d` with the weights of a local state-dict file (``.pt``/``.pth``
    read with ``torch.load(weights_only=True)``, or ``.safetensors``), in eval mode.
    ``width_divisor`` None: read from the first convolution's width in the file (1 for the
    real network; the strict load checks every other shape)."""
    if not path or not Path(path).is_file():
        raise MissingWeightsError(
            f"FVD needs I3D weights{f' ({path} does not exist)' if path else ''}: a state "
            "dict of the PyTorch I3D port (Kinetics-400 RGB), e.g. i3d_pretrained_400.pt, "
            "downloaded on a machine with internet and passed by its local path"
        )
    if _is_torchscript(path):
        raise FormatError(
            f"{path} is a TorchScript archive: a program, not data, and signgen does not run "
            "it; give a state dict of the same network (torch.save(model.state_dict()))"
        )
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FormatError(
            f"{path} is not a state dict readable without running code "
            f"({str(exc).splitlines()[0]}); TorchScript archives are not accepted"
        ) from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise FormatError(f"{path} holds a {type(sd).__name__}, expected a state dict")
    if width_divisor is None:
        first = sd.get("Conv3d_1a_7x7.conv3d.weight")
        width = first.shape[0] if isinstance(first, torch.Tensor) and first.ndim == 5 else 64
        width_divisor = max(1, 64 // max(1, int(width)))
    net = InceptionI3d(num_classes, width_divisor=width_divisor, bn_eps=bn_eps)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = (lines[1] if len(lines) > 1 else lines[0])[:200]
        raise FormatError(f"{path} does not match the I3D architecture: {detail}") from None
    return net.eval().requires_grad_(False)


def _is_torchscript(path: str | Path) -> bool:
    """A TorchScript archive is a zip holding compiled code (``code/``) and constants."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in n or n.endswith("/constants.pkl") for n in zf.namelist())


def i3d_preprocess(frames: np.ndarray | torch.Tensor, size: int = I3D_SIZE) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, size, size) in [-1, 1]: short side resized to
    ``size`` (bilinear, ``align_corners=False``, no antialiasing; the long side is
    ``ceil(long * size / short)`` in floating point, as the StyleGAN-V evaluation code
    computes it), then the centre crop (offset rounded down)."""
    x = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    target = (size, math.ceil(w * scale)) if h <= w else (math.ceil(h * scale), size)
    x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top : top + size, left : left + size]  # (T, 3, size, size)
    return (x * 2 - 1).permute(1, 0, 2, 3).contiguous()  # (3, T, size, size)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class FVDStats:
    """Streaming I3D feature statistics of generated and real clips, and their FVD.

    ``network`` maps (B, 3, T, size, size) in [-1, 1] to features (B, D) (an
    :class:`InceptionI3d`, or any module for tests); ``weights`` names its weights (the
    file's SHA-256) in :meth:`describe`. Without a network the statistics gather features
    computed elsewhere (:meth:`add_features`: ``signgen evaluate``'s workers compute them,
    its driver gathers them).
    """

    network: nn.Module | None
    weights: str = "unnamed"
    clip_frames: int = FVD_FRAMES
    size: int = I3D_SIZE
    device: torch.device | str = "cpu"
    skipped: int = 0  # clip pairs shorter than clip_frames

    def __post_init__(self) -> None:
        if self.clip_frames < 1:
            raise InputError(f"FVD clip_frames must be >= 1, got {self.clip_frames}")
        self.pred = FeatureStats()
        self.gt = FeatureStats()

    @torch.no_grad()
    def features(self, clip: np.ndarray) -> np.ndarray:
        """(D,) float64 features of one clip's first ``clip_frames`` frames."""
        assert self.network is not None, "statistics without a network gather features only"
        x = i3d_preprocess(clip[: self.clip_frames], self.size)[None]  # (1, 3, T, S, S)
        p = next(self.network.parameters(), None)
        x = x.to(self.device, p.dtype if p is not None else torch.float32)
        return self.network(x).double().cpu().numpy()[0]  # (D,)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> bool:
        """Add one (generated, real) clip pair; False (counted in ``skipped``) when shorter
        than ``clip_frames``."""
        if len(pred) < self.clip_frames or len(gt) < self.clip_frames:
            self.skipped += 1
            return False
        self.add_features(self.features(pred)[None], self.features(gt)[None])
        return True

    def add_features(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add the features (N, D) of N generated and N real clips (:meth:`features`)."""
        assert len(pred) == len(gt), (pred.shape, gt.shape)
        self.pred.update(np.asarray(pred, np.float64))
        self.gt.update(np.asarray(gt, np.float64))

    def fvd(self) -> float:
        """Frechet distance between the generated and the real feature Gaussians."""
        if self.pred.n < 2:
            raise InputError(
                f"FVD needs at least 2 clips of {self.clip_frames}+ frames, got {self.pred.n} "
                f"({self.skipped} shorter clips left out)"
            )
        mu1, s1 = self.pred.mean_cov()
        mu2, s2 = self.gt.mean_cov()
        return frechet_distance(mu1, s1, mu2, s2)

    def describe(self) -> str:
        return (
            f"FVD (StyleGAN-V convention): first {self.clip_frames} frames, short side "
            f"{self.size} bilinear + centre crop, [-1, 1], I3D logits averaged over time; "
            f"weights sha256 {self.weights[:16]}; {self.pred.n} clips, {self.skipped} shorter "
            "clips left out"
        )


def load_fvd(
    path: str | Path, device: torch.device | str = "cpu", *, bn_eps: float = 1e-3, **kwargs: Any
) -> FVDStats:
    """:class:`FVDStats` over the I3D weights at the local ``path`` (``bn_eps`` 1e-5 for
    weights made for VideoGPT's port of the network)."""
    net = load_i3d(path, bn_eps=bn_eps).to(device)
    return FVDStats(net, weights=file_sha256(path), device=device, **kwargs)
