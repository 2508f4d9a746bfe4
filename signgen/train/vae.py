"""``signgen train vae``: a small AutoencoderKL trained by reconstruction + a small KL term.

Stable Diffusion's VAE cannot be downloaded here, so the demo model trains its own tiny
VAE on the synthetic world. Loss (Kingma & Welling 2014; Rombach et al. 2022 without the
perceptual/GAN terms): MSE(x, decode(z)) + kl_weight * KL(q(z|x) || N(0, I)), z sampled.
The export (``export/vae``) is a diffusers AutoencoderKL folder whose ``scaling_factor``
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


class VAEModule(nn.Module):
    def __init__(self, vae: nn.Module, resolution: tuple[int, int], kl_weight: float) -> None:
        super().__init__()
        self.vae = vae
        self.resolution = resolution
        self.kl_weight = kl_weight

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        device = next(self.parameters()).device
        x = to_model_input(batch["target"], self.resolution).to(device)  # (B, 3, H, W) [-1, 1]
        post = self.vae.encode(x).latent_dist
        z = post.sample() if self.training else post.mode()
        rec = self.vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        kl = post.kl().mean() / x[0].numel()  # per pixel, comparable to the MSE
        return mse + self.kl_weight * kl, {"mse": float(mse.detach()), "kl": float(kl.detach())}


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
        self.module = VAEModule(vae, self.resolution, cfg.vae.kl_weight)
        self.train_set, self.eval_set = datasets(cfg, self.resolution)

    def train_dataset(self):
        return self.train_set

    def evaluate(self, module: nn.Module, step: int) -> dict[str, float]:
        mse, n = 0.0, 0
        for batch in eval_batches(self.eval_set, self.cfg.train.batch_size):
            x = to_model_input(batch["target"], self.resolution).to(self.device)
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
        x = to_model_input(batch["target"], self.resolution).to(self.device)
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
            x = to_model_input(batch["target"], self.resolution).to(self.device)
            zs.append(vae.encode(x).latent_dist.mode().flatten())
            if i >= 7:
                break
        std = float(torch.cat(zs).std())
        vae.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
        vae.save_pretrained(out_dir / "vae", safe_serialization=True)
