"""Small trainable FPDM modules, each a diffusers ``ModelMixin`` + ``ConfigMixin``.

Every constructor argument is recorded by ``@register_to_config``, so ``save_pretrained``
writes ``config.json`` + ``diffusion_pytorch_model.safetensors`` and ``from_pretrained``
rebuilds the module from that folder alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

try:  # diffusers >= 0.30 keeps ControlNet code under models/controlnets/
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
except ImportError:  # pragma: no cover - older layout
    from diffusers.models.controlnet import ControlNetConditioningEmbedding


class PoseEncoder(ModelMixin, ConfigMixin):
    """ControlNet-style conditioning embedding of the RGB pose image (FPDM, Sec. 3).

    conv 3->16, then per stage a conv and a stride-2 conv (SiLU), and a zero-initialised
    conv to the UNet's first block width, so a fresh encoder leaves the UNet unchanged.
    ``zero_init=False`` gives that last conv PyTorch's default init instead, for a UNet
    trained from scratch together with the encoder (nothing pretrained to protect).
    With four ``block_out_channels`` the output is at 1/8 of the input = latent resolution.
    This is diffusers' ``ControlNetConditioningEmbedding`` (Zhang et al. 2023), reused.
    """

    @register_to_config
    def __init__(
        self,
        conditioning_embedding_channels: int = 320,
        conditioning_channels: int = 3,
        block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.embedding = ControlNetConditioningEmbedding(
            conditioning_embedding_channels=conditioning_embedding_channels,
            conditioning_channels=conditioning_channels,
            block_out_channels=tuple(block_out_channels),
        )
        if not zero_init:
            self.embedding.conv_out.reset_parameters()

    @property
    def downscale_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        """pose (B, 3, H, W) in [0, 1] -> features (B, C0, H/8, W/8)."""
        return self.embedding(pose)


class SourceProjector(ModelMixin, ConfigMixin):
    """Linear-GELU-Dropout-LayerNorm-Linear from source-encoder tokens to cross-attention dim.

    Applied token-wise to the frozen source encoder's full last hidden state (DINOv2:
    CLS + patch tokens), giving the UNet's cross-attention keys/values.
    """

    @register_to_config
    def __init__(
        self,
        in_dim: int = 1024,
        out_dim: int = 1024,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = hidden_dim or out_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.LayerNorm(hidden),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, in_dim) -> (B, N, out_dim)."""
        return self.net(tokens)


class FusionMLP(ModelMixin, ConfigMixin):
    """MLP from the IPF fusion embedding F (D) to the UNet time-embedding dim (768->768->1280).

    Its output enters the UNet through the class-embedding path (``class_embed_type=
    "identity"``), which adds it to the timestep embedding seen by every ResNet block.
    """

    @register_to_config
    def __init__(self, in_dim: int = 768, hidden_dim: int = 768, out_dim: int = 1280) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, fusion: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim)."""
        return self.net(fusion)


class Combiner(ModelMixin, ConfigMixin):
    """Combiner of Baldrati et al. 2023 ("Composed image retrieval using contrastive
    learning and task-oriented CLIP-based features", Sec. 3.2), with the pose embedding in
    the role of the text embedding, as in FPDM stage 1.

    s, p (B, D) -> F = normalize(Linear(hidden) + lambda * p + (1 - lambda) * s), with
    hidden = Dropout(ReLU(Linear([proj(s); proj(p)]))) and the per-sample gate
    lambda = sigmoid(MLP([proj(s); proj(p)])) in (0, 1).
    """

    @register_to_config
    def __init__(
        self,
        embed_dim: int = 768,
        projection_dim: int = 3072,
        hidden_dim: int = 6144,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.source_projection = nn.Linear(embed_dim, projection_dim)
        self.pose_projection = nn.Linear(embed_dim, projection_dim)
        self.combiner_layer = nn.Linear(2 * projection_dim, hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, embed_dim)
        self.gate = nn.Sequential(
            nn.Linear(2 * projection_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, 1),
            nn.Sigmoid(),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, source: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """source, pose (B, D) image embeddings -> (B, D) L2-normalised fusion embedding."""
        s = self.drop(F.relu(self.source_projection(source)))  # (B, P)
        p = self.drop(F.relu(self.pose_projection(pose)))  # (B, P)
        joint = torch.cat([p, s], dim=-1)  # (B, 2P)
        hidden = self.drop(F.relu(self.combiner_layer(joint)))  # (B, Hd)
        lam = self.gate(joint)  # (B, 1)
        out = self.output_layer(hidden) + lam * pose + (1 - lam) * source
        return F.normalize(out, dim=-1)


class PatchAutoencoder(ModelMixin, ConfigMixin):
    """A fixed, lossless stand-in for the VAE: p x p pixel patches as latent channels.

    ``encode`` is space-to-depth (``pixel_unshuffle``): (B, C, H, W) in [-1, 1] ->
    (B, C p^2, H/p, W/p); ``decode`` is its exact inverse (``pixel_shuffle``). Diffusion on
    these "latents" is pixel-space diffusion on patches, as in Simple Diffusion
    (Hoogeboom et al. 2023) and DiT's patch embedding: nothing to train and no
    reconstruction loss. It exists for miniature models trained in minutes on CPU, where a
    learned autoencoder cannot reach the detail the metrics score (the demo model's tiny
    AutoencoderKL capped SSIM at about 0.70 on held-out synthetic clips); real models use
    Stable Diffusion's VAE. It mimics the parts of diffusers' ``AutoencoderKL`` interface
    that signgen uses (``encode(x).latent_dist.mode()/.sample()``, ``decode(z).sample``,
    ``config.scaling_factor``), so the pipeline and the trainer take either.
    """

    @register_to_config
    def __init__(
        self, patch_size: int = 4, in_channels: int = 3, scaling_factor: float = 1.0
    ) -> None:
        super().__init__()
        if patch_size < 1 or patch_size & (patch_size - 1):
            raise ValueError(f"patch_size must be a power of 2, got {patch_size}")
        # A buffer, not a parameter: diffusers' dtype/device/save/load need one tensor.
        self.register_buffer("patch", torch.tensor(float(patch_size)), persistent=True)

    @property
    def downscale_factor(self) -> int:
        return int(self.config.patch_size)

    @property
    def latent_channels(self) -> int:
        return int(self.config.in_channels) * int(self.config.patch_size) ** 2

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
        from diffusers.models.modeling_outputs import AutoencoderKLOutput

        z = F.pixel_unshuffle(x, self.config.patch_size)
        # Zero variance: sample() == mode() == the patches themselves.
        dist = DiagonalGaussianDistribution(torch.cat([z, torch.zeros_like(z)], 1), True)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        from diffusers.models.autoencoders.vae import DecoderOutput

        x = F.pixel_shuffle(z, self.config.patch_size)
        return DecoderOutput(sample=x) if return_dict else (x,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).latent_dist.mode()).sample


def vae_downscale_factor(vae: nn.Module) -> int:
    """How much a VAE (AutoencoderKL or PatchAutoencoder) shrinks each image side."""
    factor = getattr(vae, "downscale_factor", None)
    if factor is not None:
        return int(factor)
    return 2 ** (len(vae.config.block_out_channels) - 1)


def load_vae(folder: str | Path, **kwargs):
    """An AutoencoderKL or PatchAutoencoder folder, by the class its config.json names."""
    import json

    from diffusers import AutoencoderKL

    folder = Path(folder)
    name = json.loads((folder / "config.json").read_text()).get("_class_name")
    cls = PatchAutoencoder if name == "PatchAutoencoder" else AutoencoderKL
    return cls.from_pretrained(folder, local_files_only=True, **kwargs)
