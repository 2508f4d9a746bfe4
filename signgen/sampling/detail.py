"""Source detail transfer: render at the model's resolution, keep the first frame where still.

A model that runs below the first frame's resolution (the CPU-trained demo model renders
80x64 for a 260x210 Phoenix frame) loses every detail finer than its pixels when its
output is resized back, even where nothing moved. Signing frames are mostly the first
frame (background, clothes, the still body), so where the generated frame agrees with the
first frame *at the model's resolution*, the first frame's own full-resolution pixels are
put back:

    low    = the first frame through the model's geometry to its resolution and back
    change = max over RGB of |generated - low|            (native size, [0, 1] units)
    keep   = clamp(1 - change / threshold, 0, 1)
    output = generated + keep * (first frame - generated)

Unchanged regions (change 0) get the first frame exactly; regions that moved by more than
``threshold`` keep the generated pixels alone, so no edge of a limb that moved away is
pasted back. In between the two are blended, and a small disagreement ``d`` keeps only
``d / threshold`` of the model's error there: the model's low-amplitude noise on still
regions goes with it, which putting back the detail band alone (``generated + keep *
(first frame - low)``, a gated Laplacian-pyramid blend) leaves in place; measured in
benchmarks/results/synthetic_quality.md. This is alpha compositing (Porter and Duff 1984)
with the model's own agreement map as alpha; no library computes that map for the model's
resize geometry, so it is written here: a few tensor operations on the output.

It runs as a post-processor of the render (:class:`DetailTransfer`): bound to a clip's
first frame once (:meth:`DetailTransfer.bind` computes its two layers), then applied to
every generated frame after the inverse geometry, at the first frame's size. Its threshold
is a render option (``--detail-transfer``); a model folder stores its default
(``detail_transfer`` in model_index.json, 0 = off, the default of every paper recipe,
which render at full resolution).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from signgen.models.preprocess import uint8_to_tensor


def detail_layers(source: np.ndarray, processor: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (H, W, 3) first frame -> (full, low), float32 (1, 3, H, W) in [0, 1]: the frame
    and the frame through the model's geometry (``processor``, an
    :class:`~signgen.models.processor.FPDMImageProcessor`) to its resolution and back."""
    full = uint8_to_tensor(source)  # (1, 3, H, W)
    geometry = processor.geometry((full.shape[-1], full.shape[-2]))
    return full, geometry.invert(geometry.apply(full))


def transfer_detail(
    generated: torch.Tensor, full: torch.Tensor, low: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Generated frames (B, 3, H, W) in [0, 1] at native size + the first frame's layers
    (:func:`detail_layers`) -> the frames with the first frame's pixels where unchanged
    (module docstring). ``threshold`` > 0, in [0, 1] intensity units."""
    if threshold <= 0:
        raise ValueError(f"detail-transfer threshold must be positive, got {threshold}")
    full, low = full.to(generated), low.to(generated)
    change = (generated - low).abs().amax(dim=1, keepdim=True)  # (B, 1, H, W)
    keep = (1 - change / threshold).clamp(0, 1)
    return generated + keep * (full - generated)


class DetailTransfer:
    """The detail transfer as a render post-processor, ``threshold`` > 0 (module docstring)."""

    def __init__(self, threshold: float) -> None:
        if not threshold > 0:
            raise ValueError(f"detail-transfer threshold must be positive, got {threshold}")
        self.threshold = float(threshold)

    def bind(self, first_frame: np.ndarray, processor: Any) -> _BoundDetailTransfer:
        """The post-processor of one clip: its first frame's layers computed once."""
        return _BoundDetailTransfer(self.threshold, *detail_layers(first_frame, processor))


class _BoundDetailTransfer:
    """frames (B, 3, H, W) at the first frame's size -> the same with its detail put back."""

    def __init__(self, threshold: float, full: torch.Tensor, low: torch.Tensor) -> None:
        self.threshold = threshold
        self.layers = (full, low)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.layers[0].device != frames.device:  # moved once per clip, not per frame
            self.layers = tuple(t.to(frames.device) for t in self.layers)
        return transfer_detail(frames, *self.layers, self.threshold)
