"""DINOv2 with the position-embedding interpolation FPDM was trained with.

DINOv2 learns a 37 x 37 table of patch position embeddings (518 px / 14). At another input
size the table is resampled bicubically. transformers 4.x (FPDM's code pins 4.40) did it as
the original DINO code does: ``interpolate(scale_factor=((h + 0.1) / 37, (w + 0.1) / 37))``
for an h x w patch grid, the 0.1 avoiding a floor rounding error in the output size (a
known rounding problem of the DINO code). transformers 5 resamples with ``size=(h, w)``
instead. Both give an h x w table, but the scale factor sets PyTorch's sampling grid
(source coordinate ``(i + 0.5) / s - 0.5``), so the values differ: for 518 -> 512 (36 x 36)
the tables differ by 14 % relative L2 on a random table, enough to change what a model
trained with the old rule sees. :func:`interpolate_pos_encoding_dino` is the old rule;
:class:`Dinov2ModelDino` is a ``Dinov2Model`` that uses it (same weights, same config, same
keys).
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from transformers import Dinov2Model, PreTrainedModel  # noqa: F401 - see below

# diffusers' pipeline loader finds a component's load method by looking the loadable base
# classes up *in the component's module* (``getattr(module, "PreTrainedModel")``), so a
# model folder naming ``signgen.models.dinov2.Dinov2ModelDino`` loads only while this
# module exposes ``PreTrainedModel``.

# Name of the Dinov2Config attribute that records the rule in saved configs.
CONFIG_FLAG = "pos_interpolation"
RULE = "dino_scale_factor"  # DINO / transformers 4.x; absent = transformers' own rule


def interpolate_pos_encoding_dino(
    position_embeddings: torch.Tensor, height: int, width: int, patch_size: int
) -> torch.Tensor:
    """(1, 1 + n*n, D) learnt table -> (1, 1 + h*w, D) for an input of height x width px.

    The class token's embedding is kept; the n x n patch grid is resized bicubically
    (``align_corners=False``, in float32) with ``scale_factor = ((h + 0.1) / n,
    (w + 0.1) / n)``, h = height // patch_size, w = width // patch_size: transformers
    4.40's ``Dinov2Embeddings.interpolate_pos_encoding`` (from DINO's
    ``vision_transformer.py``). The table is returned unchanged when n = h = w.
    """
    num_positions = position_embeddings.shape[1] - 1
    n = math.isqrt(num_positions)
    assert n * n == num_positions, f"position table of {num_positions} is not square"
    h, w = height // patch_size, width // patch_size
    if h == w == n:
        return position_embeddings
    dim = position_embeddings.shape[-1]
    cls_pos = position_embeddings[:, :1]  # (1, 1, D)
    grid = position_embeddings[:, 1:].reshape(1, n, n, dim).permute(0, 3, 1, 2)  # (1, D, n, n)
    out = F.interpolate(
        grid.float(),
        scale_factor=((h + 0.1) / n, (w + 0.1) / n),
        mode="bicubic",
        align_corners=False,
    ).to(position_embeddings.dtype)  # (1, D, h, w)
    assert out.shape[-2:] == (h, w), (out.shape, h, w)
    return torch.cat([cls_pos, out.permute(0, 2, 3, 1).reshape(1, h * w, dim)], dim=1)


def use_dino_interpolation(model: Dinov2Model) -> Dinov2Model:
    """Make ``model`` (a transformers ``Dinov2Model``) resample its position table with
    :func:`interpolate_pos_encoding_dino`, and record that in its config; returns it."""
    emb = model.embeddings
    patch = int(model.config.patch_size)

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int):
        return interpolate_pos_encoding_dino(self.position_embeddings, height, width, patch)

    emb.interpolate_pos_encoding = types.MethodType(interpolate_pos_encoding, emb)
    setattr(model.config, CONFIG_FLAG, RULE)
    return model


class Dinov2ModelDino(Dinov2Model):
    """``Dinov2Model`` whose position embeddings are resampled as in transformers 4.40 /
    DINO (:func:`interpolate_pos_encoding_dino`); a drop-in replacement with the same
    weights and state-dict keys, loadable with ``from_pretrained``."""

    def __init__(self, config) -> None:
        super().__init__(config)
        use_dino_interpolation(self)
