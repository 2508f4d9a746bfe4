"""The image processor of an FPDM model: every image in and out of the networks goes through it.

Like diffusers' ``VaeImageProcessor`` it is a ``ConfigMixin`` with no weights, and, like
it, it is what turns user images into network inputs and network outputs back into user
images. It owns the geometry between a clip's first frame (any W x H) and the model
(``resolution``), written once in :mod:`signgen.models.preprocess` and chosen here by
``resize_mode``:

* network inputs: the first frame for the VAE (``preprocess``, [-1, 1] at the model
  resolution), for the source encoder (``source_pixels``, its own size and normalisation)
  and for the IPF's CLIP (``preprocess(images, size, mean, std)``);
* pose images: keypoints measured on the first frame drawn at the model resolution (or the
  IPF's input size) in the same geometry (``draw_poses``), and keypoints mapped to model
  pixels (``points_to_model``; MCLD locates face and hands with them);
* outputs: generated frames mapped back to the first frame's exact size by the inverse
  geometry (``postprocess``).

``resize_mode`` is ``letterbox`` (the default and what every signgen recipe trains with)
or ``squash`` (the FPDM authors' plain bicubic resize). A model folder stores the
processor's config in its ``model_index.json`` (``image_processor``), see
``docs/render_path.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin

from signgen.models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_MODES,
    VAE_MEAN,
    VAE_STD,
    Letterbox,
    Squash,
    fit_geometry,
    to_model_input,
)


class FPDMImageProcessor(ConfigMixin):
    """Resize policy, normalisation and pose drawing of one FPDM model (module docstring).

    Sizes are (H, W) as in the model config: ``resolution`` the model runs at,
    ``source_size`` the source encoder's input. ``source_mean``/``source_std`` normalise
    [0, 1] pixels for the source encoder (DINOv2: ImageNet's constants).
    """

    config_name = "image_processor_config.json"

    def __init__(
        self,
        resolution: Sequence[int] = (512, 512),
        resize_mode: str = "letterbox",
        source_size: Sequence[int] = (512, 512),
        source_mean: Sequence[float] = IMAGENET_MEAN,
        source_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.resize_mode = resize_mode
        self.source_size = (int(source_size[0]), int(source_size[1]))
        self.source_mean = tuple(float(v) for v in source_mean)
        self.source_std = tuple(float(v) for v in source_std)
        # Registered normalised (lists, as JSON gives them back), so a saved and reloaded
        # processor has an equal config; hence not @register_to_config.
        self.register_to_config(
            resolution=list(self.resolution),
            resize_mode=resize_mode,
            source_size=list(self.source_size),
            source_mean=list(self.source_mean),
            source_std=list(self.source_std),
        )

    # ---- geometry -------------------------------------------------------------------------
    def geometry(
        self, frame_size: tuple[int, int], size: Sequence[int] | None = None
    ) -> Letterbox | Squash:
        """Geometry from a frame of ``frame_size`` = (W, H) to ``size`` = (H, W) (default:
        the model resolution)."""
        h, w = self.resolution if size is None else size
        return fit_geometry(self.resize_mode, frame_size, (int(w), int(h)))

    def points_to_model(self, points: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
        """Keypoints (..., 3) in pixels of a frame of ``frame_size`` = (W, H) -> model pixels."""
        return self.geometry(frame_size).points_to_model(points)

    # ---- inputs ----------------------------------------------------------------------------
    def preprocess(
        self,
        images: np.ndarray | torch.Tensor,
        size: Sequence[int] | None = None,
        mean: Sequence[float] = VAE_MEAN,
        std: Sequence[float] = VAE_STD,
    ) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float32 (B, 3, h, w) at ``size`` (default: the model
        resolution) normalised by ``mean``/``std`` (default: the VAE's [-1, 1])."""
        size = self.resolution if size is None else (int(size[0]), int(size[1]))
        return to_model_input(images, size, mean, std, self.resize_mode)

    def source_pixels(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> the source encoder's pixel values (B, 3, sh, sw)."""
        return self.preprocess(images, self.source_size, self.source_mean, self.source_std)

    def draw_poses(
        self,
        points: np.ndarray,
        frame_sizes: Sequence[tuple[int, int]],
        size: Sequence[int] | None = None,
    ) -> np.ndarray:
        """(b, 133, 3) keypoints, each in pixels of its frame (``frame_sizes[i]`` = (W, H))
        -> (b, h, w, 3) uint8 pose images at ``size`` = (H, W) (default: the model
        resolution), drawn in the geometry the frames are resized with."""
        from signgen.pose.draw import draw_pose

        h, w = self.resolution if size is None else (int(size[0]), int(size[1]))
        out = np.zeros((len(frame_sizes), h, w, 3), dtype=np.uint8)
        for i, frame_size in enumerate(frame_sizes):
            pts, canvas = self.geometry(frame_size, (h, w)).canvas(points[i])
            out[i] = draw_pose(pts, canvas, (w, h))
        return out

    # ---- outputs ---------------------------------------------------------------------------
    def postprocess(
        self, images: torch.Tensor, frame_sizes: Sequence[tuple[int, int]]
    ) -> list[torch.Tensor]:
        """(b, 3, H, W) images at the model resolution -> b (1, 3, H_i, W_i) images at each
        frame's size (``frame_sizes[i]`` = (W_i, H_i)) by the inverse geometry; values are
        kept as they are (clamp when converting to uint8)."""
        assert len(frame_sizes) == images.shape[0], (len(frame_sizes), images.shape)
        return [self.geometry(size).invert(images[i : i + 1]) for i, size in enumerate(frame_sizes)]
