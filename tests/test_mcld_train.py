"""`signgen train fpdm` with an MCLD model: focal inputs from the batch, per-sample focal
dropout, region-weighted loss, export and rendering of the trained folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import tiny_world
from safetensors.torch import load_file

from signgen.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return tiny_world(tmp_path_factory.mktemp("world"), 2, 3, 4, 4)


def _task(prepared: Path, out: Path):
    from signgen.train.config import load_train_config
    from signgen.train.fpdm import FPDMTask

    cfg = load_train_config(CONFIGS / "tiny_mcld.yaml",
                            [f"data.prepared={prepared}", f"output_dir={out}"])  # fmt: skip
    return FPDMTask(cfg, torch.device("cpu"))


def test_training_step_uses_focal_inputs_dropout_and_region_weights(prepared, tmp_path):
    task = _task(prepared, tmp_path)
    module = task.module
    assert module.denoiser.has_focal
    batch = torch.utils.data.default_collate([task.train_set[i] for i in range(4)])
    seen: list[dict] = []
    real = module.denoiser.forward

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    module.denoiser.forward = spy
    module.train()
    g = torch.Generator().manual_seed(0)
    drops = []
    for _ in range(6):
        loss, _ = module(batch, generator=g)
        assert torch.isfinite(loss)
        drops.append(seen[-1]["drop_focal"])
    kw = seen[-1]
    r = len(module.denoiser.focal_adapter.config.regions)
    assert kw["focal_hidden"].shape[:2] == (4, r) and kw["focal_present"].shape == (4, r)
    # Per-sample focal dropout (p = 0.2 in tiny_mcld.yaml): masks of shape (B,) that vary.
    assert all(d.shape == (4,) and d.dtype == torch.bool for d in drops)
    flat = torch.stack(drops)
    assert flat.any() and not flat.all()
    # Evaluation: no dropout at all.
    module.eval()
    module(batch, generator=g)
    assert "drop_focal" not in seen[-1] and seen[-1]["drop_pose"] is None
    # The loss is the region-weighted one: it differs from the plain MSE of the same draw.
    module.mcld.face_loss_weight = module.mcld.hand_loss_weight = 1.0
    plain, _ = module(batch, generator=torch.Generator().manual_seed(1))
    module.mcld.face_loss_weight, module.mcld.hand_loss_weight = 2.0, 3.0
    weighted, _ = module(batch, generator=torch.Generator().manual_seed(1))
    assert not torch.isclose(plain, weighted)


def test_train_mcld_exports_a_renderable_model(prepared, tmp_path):
    out = tmp_path / "mcld"
    rc = main(["train", "fpdm", "--config", str(CONFIGS / "tiny_mcld.yaml"), "-q",
               f"data.prepared={prepared}", f"output_dir={out}", "train.max_steps=1",
               "train.gradient_checkpointing=true"])  # fmt: skip
    assert rc == 0
    assert list((out / "samples").glob("grid-step*.png"))
    ckpt = load_file(str(out / "checkpoints" / "step-0000001" / "model.safetensors"))
    focal_keys = [k for k in ckpt if k.startswith("denoiser.focal_adapter.")]
    assert focal_keys, "focal adapter weights are not trained/checkpointed"
    from signgen.sampling.pipeline import FPDMPipeline

    pipe = FPDMPipeline.from_pretrained(out / "export")
    sd = pipe.focal_adapter.state_dict()
    for k in focal_keys:
        assert torch.equal(sd[k.removeprefix("denoiser.focal_adapter.")], ckpt[k])
    # Trained: the focal adapter moved away from its initialisation.
    init = _task(prepared, tmp_path / "init").module.denoiser.focal_adapter.state_dict()
    assert any(not torch.equal(init[k], sd[k]) for k in sd)
    from signgen.keypoints.sequence import KeypointSequence

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (80, 64, 3), dtype=np.uint8)
    pts = np.zeros((2, 133, 3), np.float32)
    pts[..., 0], pts[..., 1], pts[..., 2] = 32, 40, 1.0
    frames = pipe(img, KeypointSequence(pts, 64, 80, 25.0), steps=1)
    assert frames.shape == (2, 80, 64, 3)
