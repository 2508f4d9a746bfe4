"""``signgen train fpdm``: stage 2 of FPDM, the conditioned latent diffusion model.

Frozen: VAE, source encoder (DINOv2/CLIP), stage-1 IPF. Trained: UNet, pose encoder,
source projector, fusion MLP (docs/model.md, docs/training.md). Per step:

1. latents z0 = VAE(target) * scaling_factor; source tokens = source_encoder(source)
   (full last hidden state); F = IPF.fuse(IPF.embed(source), IPF.embed(pose image));
2. noise with offset noise (Guttenberg 2023: eps + 0.1 * per-channel constant), t ~ U;
3. condition dropout drawn per SAMPLE, one Bernoulli per condition (pose, source tokens,
   F), through the denoiser's ``drop_*`` masks — the same nulls as the guidance branches
   at sampling time; never at evaluation;
4. MSE against the scheduler's prediction type: epsilon, v (``get_velocity``, SD 2.1) or
   the sample.

Sample grids (source | pose | generated | target) use the cumulative guidance of
:mod:`signgen.sampling.guidance`. The export is one folder loadable by
``FPDMPipeline.from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from signgen.errors import InputError, MissingWeightsError
from signgen.models.preprocess import tensor_to_uint8, to_model_input
from signgen.train.common import datasets, eval_batches, freeze, model_config, pose_to_uint8
from signgen.train.config import TrainConfig


def sample_timesteps(
    batch: int,
    num_train_timesteps: int,
    high_fraction: float = 0.0,
    high_from: float = 0.5,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training timesteps (batch,), int64: uniform over [0, T), except that ``ceil(batch *
    high_fraction)`` of them, spread evenly over the batch (sample i when ceil(i f) <
    ceil((i + 1) f)), come from [high_from * T, T). ``high_fraction`` 0 draws exactly what
    a plain ``torch.randint(0, T, (batch,))`` draws, so the default stream is the paper's."""
    kw = {"generator": generator} if generator is not None else {}
    t = torch.randint(0, num_train_timesteps, (batch,), device=device, **kw)
    if high_fraction <= 0:
        return t
    lo = min(int(high_from * num_train_timesteps), num_train_timesteps - 1)
    hi = torch.randint(lo, num_train_timesteps, (batch,), device=device, **kw)
    i = torch.arange(batch, device=device, dtype=torch.float64)
    high = torch.ceil(i * high_fraction) < torch.ceil((i + 1) * high_fraction)
    return torch.where(high, hi, t)


class FPDMModule(nn.Module):
    """Trainable denoiser + frozen encoders; ``forward(batch) -> (loss, logs)``."""

    def __init__(self, components: dict[str, Any], mcfg, cfg: TrainConfig) -> None:
        from signgen.models.fpdm import FPDMDenoiser

        super().__init__()
        self.denoiser = FPDMDenoiser(
            components["unet"], components["pose_encoder"], components["source_projector"],
            components["fusion_mlp"],
            focal_adapter=components.get("focal_adapter"),  # MCLD (signgen.models.mcld)
            source_residual=mcfg.unet.source_residual,
        )  # fmt: skip
        self.vae = components["vae"]
        self.source_encoder = components["source_encoder"]
        self.ipf = components["ipf"]
        for m in (self.vae, self.source_encoder, self.ipf):
            freeze(m)
        self.scheduler = components["scheduler"]
        self.resolution = tuple(mcfg.resolution)
        self.source_size = tuple(mcfg.source_encoder.image_size)
        self.source_mean, self.source_std = mcfg.source_mean_std()
        self.fc = cfg.fpdm
        self.mcld = mcfg.mcld  # focal dropout / region loss weights (MCLD models only)

    def train(self, mode: bool = True) -> FPDMModule:
        super().train(mode)
        for m in (self.vae, self.source_encoder, self.ipf):
            if m is not None:
                m.eval()  # frozen parts never train (no dropout)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @torch.no_grad()
    def conditions(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor | None]:
        """Frozen encodings: target latents, pose image, source tokens, fusion embedding."""
        dev = self.device
        x = to_model_input(batch["target"], self.resolution).to(dev)  # (B, 3, H, W)
        dist = self.vae.encode(x).latent_dist
        z0 = dist.sample(generator=generator) * self.vae.config.scaling_factor
        src = to_model_input(batch["source"], self.source_size, self.source_mean, self.source_std)
        hidden = self.source_encoder(pixel_values=src.to(dev)).last_hidden_state  # (B, N, Ds)
        pose = batch["target_pose"].to(dev)  # (B, 3, H, W) in [0, 1]
        fusion = None
        if self.ipf is not None:
            pix = torch.cat(
                [self.ipf.preprocess(batch["source"]), self.ipf.preprocess(pose_to_uint8(pose).cpu())]
            ).to(dev)  # fmt: skip
            emb = self.ipf.embed(pix)  # (2B, D)
            b = pose.shape[0]
            fusion = self.ipf.fuse(emb[:b], emb[b:])  # (B, D)
        out = {"z0": z0, "pose": pose, "hidden": hidden, "fusion": fusion}
        if self.denoiser.source_latent_channels:  # pixel-aligned source (signgen.models.fpdm)
            xs = to_model_input(batch["source"], self.resolution).to(dev)
            # The distribution's mode, as the render pipeline encodes the first frame.
            out["source_latents"] = (
                self.vae.encode(xs).latent_dist.mode() * self.vae.config.scaling_factor
            )
        if self.denoiser.has_focal:  # MCLD: face/hand crop tokens of the source
            from signgen.models.mcld import batch_focal_inputs

            out.update(batch_focal_inputs(
                self.denoiser.focal_adapter, self.source_encoder, batch, self.resolution,
                self.source_mean, self.source_std, dev,
            ))  # fmt: skip
        return out

    def target_for(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.scheduler.get_velocity(z0, noise, t)
        if kind == "sample":
            return z0
        raise ValueError(f"unsupported prediction_type {kind!r}")

    def forward(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.conditions(batch, generator)
        z0 = c["z0"]
        b = z0.shape[0]
        dev = z0.device
        kw = {"generator": generator} if generator is not None else {}
        noise = torch.randn(z0.shape, device=dev, **kw)
        if self.fc.offset_noise > 0:  # offset noise: a per-sample, per-channel constant
            noise = noise + self.fc.offset_noise * torch.randn(
                b, z0.shape[1], 1, 1, device=dev, **kw
            )
        n_t = self.scheduler.config.num_train_timesteps
        t = sample_timesteps(
            b, n_t, self.fc.high_t_fraction if self.training else 0.0, self.fc.high_t_from,
            dev, generator,
        )  # fmt: skip
        noisy = self.scheduler.add_noise(z0, noise, t)
        drops: dict[str, torch.Tensor | None] = {"drop_pose": None, "drop_source": None,
                                                 "drop_fusion": None}  # fmt: skip
        if self.training:  # per-sample condition dropout, never at evaluation
            for name, p in (("drop_pose", self.fc.drop_pose), ("drop_source", self.fc.drop_source),
                            ("drop_fusion", self.fc.drop_fusion)):  # fmt: skip
                drops[name] = torch.rand(b, device=dev, **kw) < p
        # ---- MCLD (signgen.models.mcld): focal tokens, their dropout, region loss weights
        focal: dict[str, torch.Tensor | None] = {}
        weights = None
        if self.denoiser.has_focal:
            from signgen.models.mcld import batch_loss_weights

            focal = {k: c[k] for k in ("focal_hidden", "focal_present")}
            if self.training:
                focal["drop_focal"] = torch.rand(b, device=dev, **kw) < self.mcld.drop
            weights = batch_loss_weights(
                self.denoiser.focal_adapter, batch, self.resolution, tuple(z0.shape[-2:]),
                self.mcld.face_loss_weight, self.mcld.hand_loss_weight,
            )  # fmt: skip
        # ----
        pred = self.denoiser(noisy, t, c["pose"], c["hidden"], c["fusion"], **drops, **focal,
                             source_latents=c.get("source_latents"))  # fmt: skip
        target = self.target_for(z0, noise, t).float()
        if weights is None:
            loss = F.mse_loss(pred.float(), target)
        else:
            from signgen.models.mcld import weighted_mse

            loss = weighted_mse(pred.float(), target, weights.to(dev))
        return loss, {}

    @torch.no_grad()
    def sample(
        self,
        batch: dict[str, Any],
        steps: int,
        w_src: float,
        w_fuse: float,
        seed: int = 0,
        zero_pose: bool = False,
    ) -> torch.Tensor:
        """Generated images (B, 3, H, W) in [0, 1] with FPDM's cumulative guidance."""
        from signgen.sampling.guidance import branch_drop_masks, combine_branches, needed_branches
        from signgen.sampling.schedulers import make_scheduler

        g = torch.Generator(device=self.device).manual_seed(seed)
        c = self.conditions(batch, g)
        b = c["z0"].shape[0]
        dev = self.device
        sch = make_scheduler("ddim", self.scheduler)
        sch.set_timesteps(steps, device=dev)
        lat = torch.randn(c["z0"].shape, generator=g, device=dev) * sch.init_noise_sigma
        pose = torch.zeros_like(c["pose"]) if zero_pose else c["pose"]
        focal = self.denoiser.has_focal  # MCLD: 4 branches [uncond; src; focal; full]
        w_focal = float(self.denoiser.focal_adapter.config.guidance) if focal else None
        branches = needed_branches(w_src, w_fuse, w_focal)  # those with a non-zero weight
        nb = len(branches)
        masks = branch_drop_masks(b, dev, focal=focal, branches=branches)
        if focal:
            masks.update(focal_hidden=c["focal_hidden"].repeat(nb, 1, 1, 1),
                         focal_present=c["focal_present"].repeat(nb, 1))  # fmt: skip
        if c.get("source_latents") is not None:
            masks["source_latents"] = c["source_latents"].repeat(nb, 1, 1, 1)
        cond = self.denoiser.encode_conditions(
            pose.repeat(nb, 1, 1, 1), c["hidden"].repeat(nb, 1, 1),
            None if c["fusion"] is None else c["fusion"].repeat(nb, 1), **masks,
        )  # fmt: skip
        for t in sch.timesteps:
            inp = sch.scale_model_input(lat.repeat(nb, 1, 1, 1), t)
            out = self.denoiser.denoise(inp, t.expand(nb * b).to(dev), cond)
            pred = combine_branches(out, w_src, w_fuse, w_focal, branches)
            lat = sch.step(pred, t, lat).prev_sample
        img = self.vae.decode(lat / self.vae.config.scaling_factor).sample
        return ((img + 1) / 2).clamp(0, 1)


TRAINED = ("unet", "pose_encoder", "source_projector", "fusion_mlp", "focal_adapter")


def init_trained_components(denoiser: nn.Module, folder: str) -> None:
    """Copy the trained components' weights of an exported model folder into ``denoiser``
    (strict: same architecture). Frozen parts (VAE, encoders, IPF) keep their own sources."""
    from signgen.sampling.pipeline import FPDMPipeline

    src = FPDMPipeline.from_pretrained(folder).denoiser
    for name in TRAINED:
        mine, theirs = getattr(denoiser, name, None), getattr(src, name, None)
        if mine is None and theirs is None:
            continue
        if (mine is None) != (theirs is None):
            raise InputError(
                f"fpdm.init_from {folder}: {name} is {'absent' if theirs is None else 'present'} "
                "there but not in this model config"
            )
        try:
            mine.load_state_dict(theirs.state_dict(), strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise InputError(f"fpdm.init_from {folder}: {name} does not match: {first}") from None


class FPDMTask:
    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        from signgen.models.config import build_components

        self.cfg = cfg
        self.device = device
        mcfg = model_config(cfg)
        self.mcfg = mcfg
        comps = build_components(mcfg, "cpu")
        if cfg.fpdm.vae:
            from signgen.models.modules import load_vae

            p = Path(cfg.fpdm.vae)
            if not (p / "config.json").is_file():
                raise MissingWeightsError(f"fpdm.vae: no AutoencoderKL folder at {p}")
            comps["vae"] = load_vae(p)
        if cfg.fpdm.ipf and comps["ipf"] is not None:
            from signgen.models.ipf import IPFModel

            comps["ipf"] = IPFModel.from_pretrained(cfg.fpdm.ipf)
            if comps["ipf"].embed_dim != comps["fusion_mlp"].config.in_dim:
                raise MissingWeightsError(
                    f"fpdm.ipf {cfg.fpdm.ipf} embeds in {comps['ipf'].embed_dim} dims but the "
                    f"model config's fusion MLP expects {comps['fusion_mlp'].config.in_dim}"
                )
        self.components = comps
        if cfg.train.gradient_checkpointing:
            comps["unet"].enable_gradient_checkpointing()
        self.module = FPDMModule(comps, mcfg, cfg)
        if cfg.fpdm.init_from:
            init_trained_components(self.module.denoiser, cfg.fpdm.init_from)
        self.train_set, self.eval_set = datasets(cfg, tuple(mcfg.resolution))

    def train_dataset(self):
        return self.train_set

    def evaluate(self, module: nn.Module, step: int) -> dict[str, float]:
        """Dev loss at fixed noise and timesteps (comparable across steps), no dropout."""
        g = torch.Generator(device=module.device).manual_seed(1234)
        total, n = 0.0, 0
        for batch in eval_batches(self.eval_set, self.cfg.train.batch_size):
            loss, _ = module(batch, generator=g)
            b = batch["target"].shape[0]
            total += float(loss) * b
            n += b
        return {"dev_loss": total / max(n, 1)}

    def samples(self, module: nn.Module, step: int, out_dir: Path) -> None:
        from PIL import Image

        fc = self.cfg.fpdm
        idx = np.linspace(0, len(self.eval_set) - 1, min(fc.num_samples, len(self.eval_set)))
        items = [self.eval_set[int(i)] for i in idx]
        batch = torch.utils.data.default_collate(items)
        w_src, w_fuse = self.mcfg.guidance
        w_src = w_src if fc.guidance_source is None else fc.guidance_source
        w_fuse = w_fuse if fc.guidance_fusion is None else fc.guidance_fusion
        gen = module.sample(batch, fc.sample_steps, w_src, w_fuse)
        res = module.resolution
        rows = []
        for i in range(len(items)):
            cols = [
                tensor_to_uint8((to_model_input(batch["source"][i : i + 1], res) + 1) / 2)[0],
                pose_to_uint8(batch["target_pose"][i : i + 1])[0].numpy(),
                tensor_to_uint8(gen[i : i + 1])[0],
                tensor_to_uint8((to_model_input(batch["target"][i : i + 1], res) + 1) / 2)[0],
            ]
            rows.append(np.concatenate(cols, axis=1))
        out_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows, axis=0)).save(out_dir / f"grid-step{step:07d}.png")

    def export(self, module: nn.Module, out_dir: Path) -> None:
        export_model(self.components, module, self.mcfg, out_dir)


def export_model(components: dict[str, Any], module: FPDMModule, mcfg, out_dir: Path) -> None:
    """Write the inference folder (``FPDMPipeline.save_pretrained``)."""
    from signgen.sampling.pipeline import FPDMPipeline

    d = module.denoiser
    parts = dict(components)
    parts.update(unet=d.unet, pose_encoder=d.pose_encoder, source_projector=d.source_projector,
                 fusion_mlp=d.fusion_mlp, vae=module.vae, ipf=module.ipf,
                 source_encoder=module.source_encoder, scheduler=module.scheduler)  # fmt: skip
    flags = [(p, p.requires_grad) for p in module.parameters()]
    # Saving puts the modules in eval mode and freezes them: undo after saving.
    pipe = FPDMPipeline.from_components(mcfg, parts)
    try:
        pipe.save_pretrained(out_dir)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
