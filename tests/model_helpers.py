"""Helpers (no tests): random weights and random clips for the model and pipeline tests."""

from __future__ import annotations

import numpy as np
import torch

from signgen.keypoints.sequence import KeypointSequence


def randomize(module: torch.nn.Module, seed: int = 1, std: float = 0.2) -> None:
    """Give every parameter random N(0, std^2) values (zero-initialised layers, e.g. the pose
    encoder's last conv, would otherwise hide their path)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def random_clip(
    frames: int = 8, size: tuple[int, int] = (21, 26), seed: int = 0
) -> tuple[np.ndarray, KeypointSequence]:
    """A random first frame (W x H) and a random keypoint sequence on it."""
    w, h = size
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    pts = np.zeros((frames, 133, 3), np.float32)
    pts[..., 0] = rng.uniform(0, w, (frames, 133))
    pts[..., 1] = rng.uniform(0, h, (frames, 133))
    pts[..., 2] = 1.0
    return img, KeypointSequence(pts, w, h, fps=25.0)


def tiny_world(out, signers: int = 3, videos: int = 4, frames: int = 4, pairs: int = 4):
    """A small 64x80 synthetic signer world under ``out``; returns its prepared folder."""
    from pathlib import Path

    from signgen.data.synthetic import SyntheticConfig, write_dataset

    write_dataset(SyntheticConfig(out=str(out), signers=signers, videos=videos, frames=frames,
                                  width=64, height=80, seed=0, train_pairs_per_video=pairs),
                  progress=False)  # fmt: skip
    return Path(out) / "prepared"


def saved_tiny_model(folder):
    """The tiny model (configs/model/tiny.yaml) with random denoiser weights, saved to
    ``folder``: the frozen base model of the motion and refiner training runs."""
    from signgen.models.config import load_model_config
    from signgen.sampling.pipeline import FPDMPipeline

    pipe = FPDMPipeline.from_config(load_model_config("tiny"))
    randomize(pipe.denoiser, 1)
    return pipe.save_pretrained(folder)


def spy_on_steps(scheduler) -> list[torch.Tensor]:
    """Record every model output the scheduler's ``step`` receives (in the returned list)."""
    seen: list[torch.Tensor] = []
    step = scheduler.step

    def spy(model_output, *args, **kwargs):
        seen.append(model_output.clone())
        return step(model_output, *args, **kwargs)

    scheduler.step = spy
    return seen


def train_tiny_fpdm(
    tmp_path, model_overrides: list[str], steps: int = 1, prepared=None, overrides=()
):
    """Train the tiny FPDM (configs/train/tiny_fpdm.yaml) for ``steps`` through the real CLI
    on ``prepared`` (default: a new tiny synthetic world), with ``model.<override>`` for each
    of ``model_overrides`` and the run's own ``overrides`` (``key=value``). Returns (output
    folder, the last checkpoint's weights)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from signgen.cli import main

    prepared = prepared or tiny_world(Path(tmp_path) / "world")
    out = Path(tmp_path) / "fpdm"
    config = Path(__file__).resolve().parents[1] / "configs" / "train" / "tiny_fpdm.yaml"
    rc = main(["train", "fpdm", "--config", str(config), "-q", f"train.max_steps={steps}",
               f"data.prepared={prepared}", f"output_dir={out}",
               *(f"model.{o}" for o in model_overrides), *overrides])  # fmt: skip
    assert rc == 0
    return out, load_file(str(out / "checkpoints" / f"step-{steps:07d}" / "model.safetensors"))


# Raw frames rendered with batches of other shapes may differ by 1 grey level on a rare
# pixel; H.264 turns such a step into other coding decisions for its block (up to 6 grey
# levels on a few pixels), so DECODED frames are compared statistically: at most 1 % of
# the values may differ by more than TOL and the mean absolute difference stays below 0.1
# (another seed, frame order or source gives a mean difference of tens of grey levels).
VIDEO_TOL = 1  # grey levels


def assert_same_video(a, b) -> None:
    """The decoded frames of two mp4s equal within the codec tolerance above."""
    from signgen.video import read_frames

    fa, fb = read_frames(a).astype(np.int16), read_frames(b).astype(np.int16)  # (T, H, W, 3)
    assert fa.shape == fb.shape, (a, b)
    diff = np.abs(fa - fb)
    per_frame = [round(float(d.mean()), 3) for d in diff]
    assert (diff > VIDEO_TOL).mean() <= 0.01 and diff.mean() <= 0.1, (a, b, per_frame)
