"""Stage 1 of FPDM: Image-Pose Fusion (IPF) = one CLIP vision tower + the Combiner.

The same CLIP ViT (with its visual projection) embeds the source image, the pose image
and (in training) the target image; the Combiner fuses source and pose into the fusion
embedding F that stage 2 adds to the UNet's time embedding (DESIGN.md section 5).

Folder layout written by :meth:`IPFModel.save_pretrained`::

    ipf/
      ipf_config.json      image_size (H, W), mean, std, mode, normalize_embeddings
      vision_model/        transformers CLIPVisionModelWithProjection (safetensors)
      combiner/            signgen Combiner (diffusers ModelMixin, safetensors)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModelWithProjection

from signgen.errors import MissingWeightsError
from signgen.fileio import atomic_write_text
from signgen.models.modules import Combiner
from signgen.models.preprocess import CLIP_MEAN, CLIP_STD, to_model_input

IPF_MODES = ("fusion", "source")  # "source" = ablation B4: CLIP source embedding, no Combiner


class IPFModel(nn.Module):
    """CLIP vision tower with projection + Combiner.

    ``embed(pixel_values) -> (B, D)`` CLIP image embeddings;
    ``fuse(src_emb, pose_emb) -> (B, D)`` L2-normalised fusion embedding F.
    ``mode="source"`` makes ``fuse`` return the source embedding (ablation B4).

    ``normalize_embeddings``: ``embed`` L2-normalises the CLIP embeddings before the
    Combiner (signgen's earlier choice, the default of folders saved without the option).
    The published FPDM code feeds CLIP's ``image_embeds`` to the Combiner as they are
    (norm about 28 for CLIP ViT-L/14); paper models set it False. The Combiner's output
    is L2-normalised either way, and the contrastive losses normalise their inputs.
    """

    def __init__(
        self,
        vision_model: CLIPVisionModelWithProjection,
        combiner: Combiner,
        *,
        image_size: tuple[int, int] = (224, 224),
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        mode: str = "fusion",
        normalize_embeddings: bool = True,
    ) -> None:
        super().__init__()
        if mode not in IPF_MODES:
            raise ValueError(f"IPF mode must be one of {IPF_MODES}, got {mode!r}")
        self.vision_model = vision_model
        self.combiner = combiner
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.mode = mode
        self.normalize_embeddings = bool(normalize_embeddings)

    @property
    def embed_dim(self) -> int:
        return int(self.vision_model.config.projection_dim)

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> CLIP pixel values (B, 3, h, w), letterboxed."""
        return to_model_input(images, self.image_size, self.mean, self.std)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) CLIP-normalised pixels -> (B, D) image embeddings (L2-normalised
        when ``normalize_embeddings``)."""
        out = self.vision_model(pixel_values=pixel_values)
        if self.normalize_embeddings:
            return F.normalize(out.image_embeds, dim=-1)
        return out.image_embeds

    def fuse(self, src_emb: torch.Tensor, pose_emb: torch.Tensor) -> torch.Tensor:
        """(B, D), (B, D) -> (B, D) L2-normalised fusion embedding F."""
        if self.mode == "source":
            return F.normalize(src_emb, dim=-1)
        return self.combiner(src_emb, pose_emb)

    def forward(self, source: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Pixel values of source and pose (B, 3, h, w) -> fusion embedding (B, D)."""
        return self.fuse(self.embed(source), self.embed(pose))

    # ---- persistence ----------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.vision_model.save_pretrained(d / "vision_model", safe_serialization=True)
        self.combiner.save_pretrained(d / "combiner", safe_serialization=True)
        meta = {
            "image_size": list(self.image_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "mode": self.mode,
            "normalize_embeddings": self.normalize_embeddings,
        }
        atomic_write_text(d / "ipf_config.json", json.dumps(meta, indent=2))

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, *, torch_dtype: torch.dtype | None = None
    ) -> IPFModel:
        d = Path(directory)
        for need in ("ipf_config.json", "vision_model/config.json", "combiner/config.json"):
            if not (d / need).is_file():
                raise MissingWeightsError(f"IPF folder {d} is missing {need}")
        meta = json.loads((d / "ipf_config.json").read_text())
        vision = CLIPVisionModelWithProjection.from_pretrained(
            d / "vision_model", local_files_only=True, dtype=torch_dtype
        )
        combiner = Combiner.from_pretrained(d / "combiner", torch_dtype=torch_dtype)
        return cls(
            vision,
            combiner,
            image_size=tuple(meta["image_size"]),
            mean=meta["mean"],
            std=meta["std"],
            mode=meta.get("mode", "fusion"),
            normalize_embeddings=meta.get("normalize_embeddings", True),
        )
