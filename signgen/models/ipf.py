"""Stage 1 of FPDM: Image-Pose Fusion (IPF) = one CLIP vision tower + the Combiner.

The same CLIP ViT (with its visual projection) embeds the source image, the pose image
and (in training) the target image; the Combiner fuses source and pose into the fusion
embedding F that stage 2 adds to the UNet's time embedding (FPDM, Sec. 3.1).

:class:`IPFModel` is a diffusers ``ModelMixin`` + ``ConfigMixin`` like every other trained
component, so a model folder saves and loads it the same way (:mod:`signgen.sampling.pipeline`)::

    ipf/
      config.json                          image_size, mean, std, mode, the CLIP tower's
                                           transformers config and the Combiner's kwargs
      diffusion_pytorch_model.safetensors  vision_model.* and combiner.* weights

Folders written before (``ipf_config.json`` + ``vision_model/`` + ``combiner/``) still load:
:meth:`IPFModel.from_pretrained` reads that layout too (same weights, same state-dict keys).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from signgen.errors import MissingWeightsError
from signgen.models.modules import Combiner
from signgen.models.preprocess import CLIP_MEAN, CLIP_STD, to_model_input

IPF_MODES = ("fusion", "source")  # "source" = ablation B4: CLIP source embedding, no Combiner
LEGACY_CONFIG = "ipf_config.json"  # the folder layout before IPFModel was a ModelMixin


class IPFModel(ModelMixin, ConfigMixin):
    """CLIP vision tower with projection + Combiner.

    ``embed(pixel_values) -> (B, D)`` L2-normalised CLIP image embeddings;
    ``fuse(src_emb, pose_emb) -> (B, D)`` L2-normalised fusion embedding F.
    ``mode="source"`` makes ``fuse`` return the source embedding (ablation B4).

    Built either from existing modules (``IPFModel(vision_model, combiner, ...)``, training
    and the model factory) or from the configs alone (``from_pretrained``): the config
    records the tower's transformers config and the Combiner's arguments either way.
    """

    def __init__(
        self,
        vision_model: CLIPVisionModelWithProjection | None = None,
        combiner: Combiner | None = None,
        *,
        vision_config: dict[str, Any] | None = None,
        combiner_config: dict[str, Any] | None = None,
        image_size: tuple[int, int] = (224, 224),
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        mode: str = "fusion",
    ) -> None:
        super().__init__()
        if mode not in IPF_MODES:
            raise ValueError(f"IPF mode must be one of {IPF_MODES}, got {mode!r}")
        if vision_model is None:
            if vision_config is None:
                raise ValueError("IPFModel needs a vision_model or its vision_config")
            vision_model = CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(vision_config))
        if combiner is None:
            if combiner_config is None:
                raise ValueError("IPFModel needs a combiner or its combiner_config")
            combiner = Combiner(**combiner_config)
        # Registered by hand, not with @register_to_config: that decorator would pair the
        # positional modules with the config arguments. The config is what rebuilds both.
        self.register_to_config(
            vision_config=vision_model.config.to_dict(),
            combiner_config={k: v for k, v in combiner.config.items() if not k.startswith("_")},
            image_size=[int(image_size[0]), int(image_size[1])],
            mean=[float(v) for v in mean],
            std=[float(v) for v in std],
            mode=mode,
        )
        self.vision_model = vision_model
        self.combiner = combiner
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.mode = mode

    @property
    def embed_dim(self) -> int:
        return int(self.vision_model.config.projection_dim)

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> CLIP pixel values (B, 3, h, w), letterboxed."""
        return to_model_input(images, self.image_size, self.mean, self.std)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) CLIP-normalised pixels -> (B, D) L2-normalised image embeddings."""
        out = self.vision_model(pixel_values=pixel_values)
        return F.normalize(out.image_embeds, dim=-1)

    def fuse(self, src_emb: torch.Tensor, pose_emb: torch.Tensor) -> torch.Tensor:
        """(B, D), (B, D) -> (B, D) L2-normalised fusion embedding F."""
        if self.mode == "source":
            return F.normalize(src_emb, dim=-1)
        return self.combiner(src_emb, pose_emb)

    def forward(self, source: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Pixel values of source and pose (B, 3, h, w) -> fusion embedding (B, D)."""
        return self.fuse(self.embed(source), self.embed(pose))

    # ---- persistence: ModelMixin's, plus the earlier folder layout --------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """ModelMixin's loader; a folder in the earlier layout (``ipf_config.json``) is read
        by :meth:`from_legacy_folder`."""
        folder = Path(pretrained_model_name_or_path) / (kwargs.get("subfolder") or "")
        if (folder / LEGACY_CONFIG).is_file():
            dtype = kwargs.get("torch_dtype", kwargs.get("dtype"))
            return cls.from_legacy_folder(folder, torch_dtype=dtype)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except OSError as exc:  # missing config or weights: say which folder
            raise MissingWeightsError(f"IPF folder {folder}: {str(exc).splitlines()[0]}") from None

    @classmethod
    def from_legacy_folder(
        cls, directory: str | os.PathLike, *, torch_dtype: torch.dtype | None = None
    ) -> IPFModel:
        """``ipf_config.json`` + ``vision_model/`` (transformers) + ``combiner/`` (diffusers),
        as IPF folders were written before; the weights load unchanged."""
        d = Path(directory)
        for need in (LEGACY_CONFIG, "vision_model/config.json", "combiner/config.json"):
            if not (d / need).is_file():
                raise MissingWeightsError(f"IPF folder {d} is missing {need}")
        meta = json.loads((d / LEGACY_CONFIG).read_text())
        vision = CLIPVisionModelWithProjection.from_pretrained(
            d / "vision_model", local_files_only=True, dtype=torch_dtype
        )
        combiner = Combiner.from_pretrained(d / "combiner", torch_dtype=torch_dtype)
        model = cls(
            vision,
            combiner,
            image_size=tuple(meta["image_size"]),
            mean=meta["mean"],
            std=meta["std"],
            mode=meta.get("mode", "fusion"),
        )
        return model.eval()
