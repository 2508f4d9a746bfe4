"""Pieces shared by the stage tasks: model config, datasets, image conversion."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from signgen.config import apply_overrides, from_dict
from signgen.errors import InputError
from signgen.train.config import TrainConfig


def model_config(cfg: TrainConfig):
    """The :class:`signgen.models.config.FPDMModelConfig` named by ``cfg.model``."""
    from signgen.models.config import FPDMModelConfig, load_model_config

    if cfg.model is None:
        raise InputError("the training config has no 'model' (a model YAML path or mapping)")
    if isinstance(cfg.model, dict):
        data = apply_overrides(cfg.model, cfg.model_overrides)
        return from_dict(FPDMModelConfig, data, "model")
    return load_model_config(str(cfg.model), cfg.model_overrides)


def datasets(cfg: TrainConfig, resolution: tuple[int, int], resize_mode: str = "letterbox"):
    """(train, eval) pair datasets of the prepared folder: DeepFashion's
    (:class:`signgen.data.deepfashion.DeepFashionPairs`, training augmentations from
    ``data.augment``) when it holds a prepared DeepFashion manifest, else Phoenix-layout
    pairs (:class:`signgen.data.pairs.PairDataset`: Phoenix and the synthetic world).
    ``resize_mode``: the model's geometry, in which pose images are drawn."""
    from signgen.data.deepfashion import MANIFEST_NAME, DeepFashionAugment, DeepFashionPairs
    from signgen.data.pairs import PairDataset

    d = cfg.data
    if not Path(d.prepared).is_dir():
        raise InputError(f"data.prepared folder not found: {d.prepared}")
    if (Path(d.prepared) / MANIFEST_NAME).is_file():
        try:
            augment = DeepFashionAugment(**(d.augment or {}))
        except TypeError as exc:
            raise InputError(f"data.augment: {exc}") from None
        train = DeepFashionPairs(d.prepared, d.train_split, resolution, augment=augment,
                                 max_pairs=d.max_train_pairs, seed=cfg.seed,
                                 resize_mode=resize_mode)  # fmt: skip
        evals = DeepFashionPairs(d.prepared, d.eval_split, resolution,
                                 max_pairs=d.max_eval_pairs, resize_mode=resize_mode)  # fmt: skip
        return train, evals
    if d.augment:
        raise InputError("data.augment applies to prepared DeepFashion folders only")
    train = PairDataset(d.prepared, d.train_split, resolution, max_pairs=d.max_train_pairs,
                        resize_mode=resize_mode)  # fmt: skip
    evals = PairDataset(d.prepared, d.eval_split, resolution, max_pairs=d.max_eval_pairs,
                        resize_mode=resize_mode)  # fmt: skip
    return train, evals


def pose_to_uint8(pose: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8 (for encoders that take images)."""
    return pose.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1)


def eval_batches(dataset, batch_size: int) -> Any:
    """Deterministic, in-order batches of an evaluation set (the last partial one kept)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    yield from loader


def fixed_dev_loss(module: torch.nn.Module, dataset, batch_size: int) -> float:
    """Mean loss of ``module(batch, generator=g)`` over ``dataset`` with one fixed generator
    (seed 1234): the same noise and timesteps at every evaluation, so dev losses compare
    across steps. The module is expected in eval mode (no condition dropout)."""
    g = torch.Generator(device=module.device).manual_seed(1234)
    total, n = 0.0, 0
    for batch in eval_batches(dataset, batch_size):
        loss, _ = module(batch, generator=g)
        b = batch["target"].shape[0]
        total += float(loss) * b
        n += b
    return total / max(n, 1)


def export_base_plus(base: Path, out_dir: Path, folder: str, write: Callable[[Path], None]) -> None:
    """Export a model folder made of ``base`` (copied as it is, without its ``folder``
    subfolder) plus what ``write(model_folder)`` adds: the exports of the stages trained on a
    frozen model (motion module, source refiner). Written next to ``out_dir`` and renamed
    onto it, so an interrupted export leaves no half folder."""
    import shutil
    import tempfile

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        shutil.copytree(base, tmp / "model", ignore=shutil.ignore_patterns(folder))
        write(tmp / "model")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        (tmp / "model").rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_with_component(
    base: Path, out_dir: Path, folder: str, component: Any, entry: list[str], **settings: Any
) -> None:
    """:func:`export_base_plus` with one diffusers ``component`` saved as ``folder/``
    (safetensors), listed in ``model_index.json`` as ``entry`` (library, class), and the
    pipeline ``settings`` (model defaults such as ``detail_transfer``) set there."""
    import json

    from signgen.sampling.loading import MODEL_INDEX

    def write(model: Path) -> None:
        component.save_pretrained(model / folder, safe_serialization=True)
        index = json.loads((model / MODEL_INDEX).read_text())
        index[folder] = list(entry)
        index.update(settings)
        (model / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")

    export_base_plus(base, out_dir, folder, write)


def freeze(module: torch.nn.Module | None) -> None:
    if module is None:
        return
    module.requires_grad_(False)
    module.eval()
