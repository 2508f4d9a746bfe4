"""Image geometry and normalisation shared by stage 1 (IPF), stage 2 (FPDM) and rendering.

ONE resize policy is used everywhere an image enters a network (VAE, DINOv2/CLIP source
encoder, CLIP of the IPF) and where a generated image leaves it; a model folder names it
(``resize_mode`` of its image processor, :mod:`signgen.models.processor`). The default and
the policy of every model signgen trains is **letterbox**:

1. Pad the frame symmetrically to the target's aspect ratio, replicating the border
   pixels (signer videos have plain backgrounds, so replicated borders look like more
   background rather than black bars the model would have to learn to draw).
2. Resize the padded frame to the target size with antialiased bilinear interpolation.
3. On output, invert exactly: resize the model image to the padded size and crop the
   padding away, which gives the source frame's exact width and height.

Nothing is cropped and nothing is squashed, so a 210x260 Phoenix frame run at 512x512
keeps its proportions (the FPDM reference code centre-crops in one stage and squashes in
the other). Keypoints follow the same geometry (:meth:`Letterbox.canvas`,
:meth:`Letterbox.points_to_model`), so pose images line up with the letterboxed frames.

The other policy, **squash** (:class:`Squash`), is the FPDM authors': a plain resize to the
model size with PIL-bicubic-equivalent resampling (antialiased bicubic, a = -0.5), inverted
by the resize back. Both geometries offer the same five operations, and
:func:`fit_geometry` is the one place that picks one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

# Normalisation constants of the encoders we use (from their image-processor configs).
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DINOv2 (BitImageProcessor)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIPImageProcessor
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VAE_MEAN = (0.5, 0.5, 0.5)  # maps [0, 1] to [-1, 1]
VAE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Letterbox:
    """Geometry of padding a ``src_w`` x ``src_h`` frame to the aspect of ``dst_w`` x ``dst_h``.

    ``pad_left``/``pad_top`` are the pixels added before the frame (the rest goes after),
    ``padded_w`` x ``padded_h`` is the padded frame, which is then resized to the target.
    """

    src_w: int
    src_h: int
    dst_w: int
    dst_h: int
    padded_w: int
    padded_h: int
    pad_left: int
    pad_top: int

    @classmethod
    def fit(cls, src_size: tuple[int, int], dst_size: tuple[int, int]) -> Letterbox:
        """Letterbox for ``src_size`` = (W, H) into ``dst_size`` = (W, H)."""
        src_w, src_h = (int(v) for v in src_size)
        dst_w, dst_h = (int(v) for v in dst_size)
        assert min(src_w, src_h, dst_w, dst_h) > 0, (src_size, dst_size)
        if src_w * dst_h < dst_w * src_h:  # source is narrower than the target: pad width
            padded_w, padded_h = max(src_w, round(src_h * dst_w / dst_h)), src_h
        else:  # source is wider (or equal): pad height
            padded_w, padded_h = src_w, max(src_h, round(src_w * dst_h / dst_w))
        return cls(
            src_w,
            src_h,
            dst_w,
            dst_h,
            padded_w,
            padded_h,
            (padded_w - src_w) // 2,
            (padded_h - src_h) // 2,
        )

    @property
    def padded_size(self) -> tuple[int, int]:
        """(W, H) of the padded frame, the coordinate frame of :meth:`points_to_padded`."""
        return self.padded_w, self.padded_h

    def points_to_padded(self, points: np.ndarray) -> np.ndarray:
        """Keypoints (..., 3) in source pixels -> pixels of the padded frame (scores kept)."""
        out = np.array(points, dtype=np.float32, copy=True)
        out[..., 0] += self.pad_left
        out[..., 1] += self.pad_top
        return out

    def canvas(self, points: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """(keypoints, (W, H)) of the frame that is resized to the target: the padded
        frame. Pose images are drawn from these (``draw_pose(points, size, target)``)."""
        return self.points_to_padded(points), self.padded_size

    def points_to_model(self, points: np.ndarray) -> np.ndarray:
        """Keypoints (..., 3) in source pixels -> target pixels (scores kept)."""
        scale = np.array([self.dst_w / self.padded_w, self.dst_h / self.padded_h, 1.0], np.float32)
        return self.points_to_padded(points) * scale

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, src_h, src_w) float -> (B, C, dst_h, dst_w): pad (replicate) then resize."""
        assert images.shape[-2:] == (self.src_h, self.src_w), (images.shape, self)
        right = self.padded_w - self.src_w - self.pad_left
        bottom = self.padded_h - self.src_h - self.pad_top
        if right or bottom or self.pad_left or self.pad_top:
            images = F.pad(images, (self.pad_left, right, self.pad_top, bottom), mode="replicate")
        return _resize(images, (self.dst_h, self.dst_w))

    def invert(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, dst_h, dst_w) -> (B, C, src_h, src_w): resize to the padded size, crop."""
        assert images.shape[-2:] == (self.dst_h, self.dst_w), (images.shape, self)
        images = _resize(images, (self.padded_h, self.padded_w))
        top, left = self.pad_top, self.pad_left
        return images[..., top : top + self.src_h, left : left + self.src_w]


@dataclass(frozen=True)
class Squash:
    """Geometry of a plain resize of a ``src_w`` x ``src_h`` frame to ``dst_w`` x ``dst_h``
    (the aspect ratio changes), with PIL's bicubic filter; the inverse resizes back."""

    src_w: int
    src_h: int
    dst_w: int
    dst_h: int

    @classmethod
    def fit(cls, src_size: tuple[int, int], dst_size: tuple[int, int]) -> Squash:
        """Squash of ``src_size`` = (W, H) to ``dst_size`` = (W, H)."""
        (src_w, src_h), (dst_w, dst_h) = ((int(v) for v in s) for s in (src_size, dst_size))
        assert min(src_w, src_h, dst_w, dst_h) > 0, (src_size, dst_size)
        return cls(src_w, src_h, dst_w, dst_h)

    def canvas(self, points: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """(keypoints, (W, H)) of the frame that is resized: the source frame itself."""
        return np.array(points, dtype=np.float32, copy=True), (self.src_w, self.src_h)

    def points_to_model(self, points: np.ndarray) -> np.ndarray:
        """Keypoints (..., 3) in source pixels -> target pixels (scores kept)."""
        scale = np.array([self.dst_w / self.src_w, self.dst_h / self.src_h, 1.0], np.float32)
        return np.asarray(points, dtype=np.float32) * scale

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, src_h, src_w) float -> (B, C, dst_h, dst_w)."""
        assert images.shape[-2:] == (self.src_h, self.src_w), (images.shape, self)
        return _resize(images, (self.dst_h, self.dst_w), "bicubic")

    def invert(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, dst_h, dst_w) -> (B, C, src_h, src_w)."""
        assert images.shape[-2:] == (self.dst_h, self.dst_w), (images.shape, self)
        return _resize(images, (self.src_h, self.src_w), "bicubic")


Geometry = Union[Letterbox, Squash]  # noqa: UP007 - a runtime alias, kept readable
GEOMETRIES: dict[str, type] = {"letterbox": Letterbox, "squash": Squash}
RESIZE_MODES = tuple(GEOMETRIES)


def fit_geometry(
    mode: str, src_size: tuple[int, int], dst_size: tuple[int, int]
) -> Letterbox | Squash:
    """The geometry of resize policy ``mode`` (letterbox | squash) from ``src_size`` to
    ``dst_size``, both (W, H)."""
    if mode not in GEOMETRIES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    return GEOMETRIES[mode].fit(src_size, dst_size)


def _resize(images: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Antialiased resize of (B, C, H, W) to ``size`` = (H, W) (no-op if equal); ``mode``
    bilinear or bicubic (torch's antialiased bicubic is PIL's filter, a = -0.5)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    dtype = images.dtype
    # interpolate's antialias path needs float32 on CPU; compute there and cast back.
    out = F.interpolate(images.float(), size=size, mode=mode, align_corners=False, antialias=True)
    return out.to(dtype)


def uint8_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) (or one (H, W, 3) image) -> float32 (B, 3, H, W) in [0, 1]."""
    if isinstance(images, torch.Tensor):
        t = images
    else:
        a = np.asarray(images)
        # Read-only arrays (e.g. decoded video frames) are copied: torch cannot wrap them.
        t = torch.from_numpy(a if a.flags.writeable else a.copy())
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (B, H, W, 3), got {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [0, 1] -> uint8 (B, H, W, 3) (clamped, rounded)."""
    x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def to_model_input(
    images: np.ndarray | torch.Tensor,
    size: tuple[int, int],
    mean: Sequence[float] = VAE_MEAN,
    std: Sequence[float] = VAE_STD,
    resize_mode: str = "letterbox",
) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, size[0], size[1]) resized and normalised.

    ``size`` is (H, W). ``mean``/``std`` apply to [0, 1] pixels: the defaults give the VAE's
    [-1, 1]; pass IMAGENET_* for DINOv2 and CLIP_* for CLIP. ``resize_mode``: the policy of
    the module docstring (letterbox, the default, or squash).
    """
    x = uint8_to_tensor(images)  # (B, 3, H, W) in [0, 1]
    geometry = fit_geometry(resize_mode, (x.shape[-1], x.shape[-2]), (size[1], size[0]))
    x = geometry.apply(x)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s
