"""``signgen train vae``: a small AutoencoderKL trained by reconstruction + a small KL term.

Stable Diffusion's VAE cannot be downloaded here, so the demo model trains its own tiny
VAE on the synthetic world. Loss (Kingma & Welling 2014; Rombach et al. 2022 without the
perceptual/GAN terms): MSE(x, decode(z)) + kl_weight * KL(q(z|x) || N(0, I)), z sampled.
Colour augmentation (``vae.hue_augment``): each training image is, with that probability,
rotated in RGB about the grey axis by a uniform random angle (a hue rotation that keeps
each pixel's grey level), so a VAE trained on a handful of signers does not tie its latent
code to their palettes. The export (``export/vae``) is a diffusers AutoencoderKL folder whose ``scaling_factor``
is set to 1 / std of the training latents, as SD does, so stage 2 sees unit-variance
latents.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from signgen.models.preprocess import to_model_input
from signgen.train.common import datasets, eval_batches, model_config
from signgen.train.config import TrainConfig


def hue_rotation(angles: torch.Tensor) -> torch.Tensor:
    """(B,) angles in radians -> (B, 3, 3) rotations of RGB about the grey axis (1, 1, 1).

    Rodrigues' formula R = cos(a) I + sin(a) [k]x + (1 - cos(a)) k k^T with k = (1,1,1)/sqrt(3).
    On images in [-1, 1] mid-grey is the origin, so greys stay fixed and hues rotate."""
    k = torch.full((3,), 3**-0.5, dtype=angles.dtype, device=angles.device)
    kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]],
                      dtype=angles.dtype, device=angles.device)  # fmt: skip
    c, s = angles.cos().view(-1, 1, 1), angles.sin().view(-1, 1, 1)
    eye = torch.eye(3, dtype=angles.dtype, device=angles.device)
    return c * eye + s * kx + (1 - c) * torch.outer(k, k)


def hue_augment(x: torch.Tensor, p: float) -> torch.Tensor:
    """Rotate the hue of each image of (B, 3, H, W) in [-1, 1] with probability p (uniform
    angle), clamped back into [-1, 1]; draws from torch's global RNG (checkpointed)."""
    if p <= 0:
        return x
    b = x.shape[0]
    angles = torch.rand(b, device=x.device) * (2 * math.pi)
    angles = torch.where(torch.rand(b, device=x.device) < p, angles, torch.zeros_like(angles))
    rot = hue_rotation(angles.to(x.dtype))  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", rot, x).clamp(-1, 1)


class VAEModule(nn.Module):
    def __init__(
        self,
        vae: nn.Module,
        resolution: tuple[int, int],
        kl_weight: float,
        hue_p: float = 0.0,
        resize_mode: str = "letterbox",
    ) -> None:
        super().__init__()
        self.vae = vae
        self.resolution = resolution
        self.resize_mode = resize_mode  # the model's geometry (signgen.models.preprocess)
        self.kl_weight = kl_weight
        self.hue_p = hue_p

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        device = next(self.parameters()).device
        x = self.input(batch["target"]).to(device)  # (B, 3, H, W) [-1, 1]
        if self.training:
            x = hue_augment(x, self.hue_p)
        post = self.vae.encode(x).latent_dist
        z = post.sample() if self.training else post.mode()
        rec = self.vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        kl = post.kl().mean() / x[0].numel()  # per pixel, comparable to the MSE
        return mse + self.kl_weight * kl, {"mse": float(mse.detach()), "kl": float(kl.detach())}

    def input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H0, W0, 3) -> (B, 3, H, W) in [-1, 1], in the model's geometry."""
        return to_model_input(images, self.resolution, resize_mode=self.resize_mode)


class VAETask:
    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        from diffusers import AutoencoderKL

        self.cfg = cfg
        self.device = device
        mcfg = model_config(cfg)
        self.resolution = tuple(cfg.data.resolution)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            vae = AutoencoderKL(**mcfg.vae.config)
        if cfg.train.gradient_checkpointing:
            vae.enable_gradient_checkpointing()
        self.module = VAEModule(vae, self.resolution, cfg.vae.kl_weight, cfg.vae.hue_augment,
                                mcfg.resize_mode)  # fmt: skip
        self.train_set, self.eval_set = datasets(cfg, self.resolution, mcfg.resize_mode)

    def train_dataset(self):
        return self.train_set

    def evaluate(self, module: nn.Module, step: int) -> dict[str, float]:
        mse, n = 0.0, 0
        for batch in eval_batches(self.eval_set, self.cfg.train.batch_size):
            x = module.input(batch["target"]).to(self.device)
            rec = module.vae.decode(module.vae.encode(x).latent_dist.mode()).sample
            mse += float(F.mse_loss(rec, x, reduction="sum")) / x[0].numel()
            n += x.shape[0]
        mse /= max(n, 1)
        # [-1, 1] range: PSNR on [0, 1] pixels = 10 log10(1 / (mse / 4)).
        return {"dev_mse": mse, "dev_psnr": 10 * math.log10(4.0 / max(mse, 1e-12))}

    def samples(self, module: nn.Module, step: int, out_dir: Path) -> None:
        from PIL import Image

        from signgen.models.preprocess import tensor_to_uint8

        batch = next(iter(eval_batches(self.eval_set, 4)))
        x = module.input(batch["target"]).to(self.device)
        rec = module.vae.decode(module.vae.encode(x).latent_dist.mode()).sample
        top = tensor_to_uint8((x + 1) / 2)
        bottom = tensor_to_uint8((rec + 1) / 2)
        import numpy as np

        grid = np.concatenate([np.concatenate(list(top), 1), np.concatenate(list(bottom), 1)], 0)
        out_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(out_dir / f"vae-step{step:07d}.png")

    @torch.no_grad()
    def export(self, module: nn.Module, out_dir: Path) -> None:
        vae = module.vae
        vae.eval()
        zs = []
        for i, batch in enumerate(eval_batches(self.train_set, self.cfg.train.batch_size)):
            x = module.input(batch["target"]).to(self.device)
            zs.append(vae.encode(x).latent_dist.mode().flatten())
            if i >= 7:
                break
        std = float(torch.cat(zs).std())
        vae.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
        vae.save_pretrained(out_dir / "vae", safe_serialization=True)
