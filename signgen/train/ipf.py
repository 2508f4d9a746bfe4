"""``signgen train ipf``: stage 1 of FPDM, the Image-Pose Fusion model (docs/model.md).

One CLIP vision tower embeds source, pose image and target; the Combiner fuses source and
pose into F. Loss: InfoNCE between targets and F (``ipf.loss: baseline``, FPDM Eq. 3) or
the source-enhanced 2B x 2B variant (``source_enhanced``, Eq. 4-6, the paper's best).
Evaluation: retrieval of each dev target among all dev targets by its fusion embedding,
R@1/3/5 and average rank (paper Table 2). Export: ``export/ipf`` (IPFModel folder), which
``signgen train fpdm`` loads frozen with ``fpdm.ipf=.../export/ipf``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from signgen.train.common import datasets, eval_batches, model_config, pose_to_uint8
from signgen.train.config import TrainConfig
from signgen.train.losses import info_nce_baseline, info_nce_source_enhanced, retrieval_metrics


def build_ipf(mcfg, seed: int):
    """IPFModel from the model config: a pretrained CLIP tower (offline) or a tiny random one."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from signgen.errors import MissingWeightsError
    from signgen.models.ipf import IPFModel
    from signgen.models.modules import Combiner

    icfg = mcfg.ipf
    if icfg.pretrained:
        ipf = IPFModel.from_pretrained(icfg.pretrained)
        ipf.check_resize_mode(mcfg.resize_mode, icfg.pretrained)
        return ipf
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if icfg.clip.pretrained:
            try:
                vision = CLIPVisionModelWithProjection.from_pretrained(
                    icfg.clip.pretrained, local_files_only=True,
                    **({"subfolder": icfg.clip.subfolder} if icfg.clip.subfolder else {}),
                )  # fmt: skip
            except OSError as exc:
                raise MissingWeightsError(
                    f"cannot load CLIP from {icfg.clip.pretrained!r} offline: "
                    f"{str(exc).splitlines()[0]}"
                ) from None
        else:
            vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**icfg.clip.config))
        comb = Combiner(
            embed_dim=int(vision.config.projection_dim),
            projection_dim=icfg.combiner.projection_dim,
            hidden_dim=icfg.combiner.hidden_dim,
            dropout=icfg.combiner.dropout,
        )
    return IPFModel(
        vision,
        comb,
        image_size=tuple(icfg.image_size),
        mode=icfg.mode,
        normalize_embeddings=icfg.normalize_embeddings,
        resize_mode=mcfg.resize_mode,  # stage 1 sees frames in the model's geometry
    )


def source_fusion_l1(source: torch.Tensor, fusion: torch.Tensor, loss: str) -> torch.Tensor:
    """mean |S - F|, the extra stage-1 term of the published FPDM code (weight 1e-4 there;
    not in the paper). With the source-enhanced loss their code takes it over the doubled
    batch ([S; S] vs [F; S]), i.e. half of mean |S - F|; reproduced as such."""
    l1 = (source - fusion).abs().mean()
    return l1 / 2 if loss == "source_enhanced" else l1


class IPFModule(nn.Module):
    def __init__(
        self, ipf: nn.Module, loss: str, temperature: float, l1_weight: float = 0.0
    ) -> None:
        super().__init__()
        self.ipf = ipf
        self.loss_name = loss
        self.temperature = temperature
        self.l1_weight = l1_weight

    def embeddings(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """(S, P, T, F), each (B, D); F is L2-normalised, S, P, T too unless the IPF feeds
        CLIP's embeddings unnormalised (``normalize_embeddings=False``)."""
        device = next(self.parameters()).device
        b = batch["source"].shape[0]
        pose = pose_to_uint8(batch["target_pose"]).cpu()  # (B, H, W, 3)
        pix = torch.cat(
            [self.ipf.preprocess(batch["source"]), self.ipf.preprocess(pose),
             self.ipf.preprocess(batch["target"])]
        ).to(device)  # (3B, 3, h, w): one CLIP call for the three images  # fmt: skip
        emb = self.ipf.embed(pix)  # (3B, D)
        s, p, t = emb[:b], emb[b : 2 * b], emb[2 * b :]
        return s, p, t, self.ipf.fuse(s, p)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        s, _p, t, f = self.embeddings(batch)
        if self.loss_name == "baseline":
            loss = info_nce_baseline(t, f, self.temperature)
        else:
            loss = info_nce_source_enhanced(t, f, s, self.temperature)
        if self.l1_weight:
            loss = loss + self.l1_weight * source_fusion_l1(s, f, self.loss_name)
        return loss, {}


class IPFTask:
    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        mcfg = model_config(cfg)
        ipf = build_ipf(mcfg, cfg.seed)
        if cfg.ipf.freeze_vision:
            ipf.vision_model.requires_grad_(False)
        if cfg.train.gradient_checkpointing and hasattr(
            ipf.vision_model, "gradient_checkpointing_enable"
        ):
            ipf.vision_model.gradient_checkpointing_enable()
        self.module = IPFModule(ipf, cfg.ipf.loss, cfg.ipf.temperature, cfg.ipf.l1_weight)
        # Pose images drawn in the model's geometry, then brought to the IPF's input size
        # in the same geometry (IPFModel.preprocess): as stage 2 and rendering see them.
        self.train_set, self.eval_set = datasets(cfg, tuple(cfg.data.resolution), mcfg.resize_mode)

    def train_dataset(self):
        return self.train_set

    def evaluate(self, module: nn.Module, step: int) -> dict[str, float]:
        fs, ts, losses = [], [], []
        for batch in eval_batches(self.eval_set, self.cfg.train.batch_size):
            s, _p, t, f = module.embeddings(batch)
            fs.append(f)
            ts.append(t)
            if t.shape[0] > 1:
                fn = info_nce_baseline if module.loss_name == "baseline" else None
                losses.append(float(fn(t, f) if fn else info_nce_source_enhanced(t, f, s)))
        metrics = retrieval_metrics(torch.cat(fs), torch.cat(ts))
        out = {k.replace("@", "_at_"): v for k, v in metrics.items()}
        if losses:
            out["dev_loss"] = sum(losses) / len(losses)
        return out

    def samples(self, module: nn.Module, step: int, out_dir: Path) -> None:
        return None  # stage 1 has no images to show

    def export(self, module: nn.Module, out_dir: Path) -> None:
        module.ipf.save_pretrained(out_dir / "ipf")
