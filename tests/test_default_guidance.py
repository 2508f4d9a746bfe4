"""A model carries its default cumulative guidance (model config ``guidance``, saved in
model_index.json); renders that give none use it, from the API and the CLI alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from model_helpers import random_clip, randomize, train_tiny_fpdm

from signgen.cli import main
from signgen.errors import InputError
from signgen.models.config import load_model_config
from signgen.sampling.pipeline import FPDMPipeline
from signgen.video import read_frames

KW = {"steps": 2, "seed": 0}


@pytest.fixture(scope="module")
def pipe() -> FPDMPipeline:
    p = FPDMPipeline.from_config(load_model_config("tiny", ["guidance=[1.0, 1.5]"]))
    randomize(p.denoiser, 3, std=0.05)  # branches that differ, so guidance matters
    return p


def test_renders_without_guidance_use_the_models(pipe):
    assert pipe.default_guidance == (1.0, 1.5)
    img, seq = random_clip(frames=2)
    default = pipe(img, seq, **KW)
    np.testing.assert_array_equal(default, pipe(img, seq, **KW, guidance=(1.0, 1.5)))
    assert not np.array_equal(default, pipe(img, seq, **KW, guidance=(2.0, 2.0)))


def test_the_default_survives_save_load_and_old_folders_get_the_papers(pipe, tmp_path: Path):
    folder = pipe.save_pretrained(tmp_path / "model")
    assert FPDMPipeline.from_pretrained(folder).default_guidance == (1.0, 1.5)
    index = json.loads((folder / "model_index.json").read_text())
    del index["guidance"]  # a folder written before models carried their guidance
    (folder / "model_index.json").write_text(json.dumps(index))
    assert FPDMPipeline.from_pretrained(folder).default_guidance == (2.0, 2.0)


def test_render_cli_without_guidance_uses_the_models(pipe, tmp_path: Path):
    folder = pipe.save_pretrained(tmp_path / "model")
    img, seq = random_clip(frames=3, size=(24, 24))
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "first.png")
    seq.save(tmp_path / "seq.json")

    def render(name: str, *extra: str) -> np.ndarray:
        rc = main(["render", "--video", str(tmp_path / "first.png"), "--keypoints",
                   str(tmp_path / "seq.json"), "--model", str(folder), "--steps", "2",
                   "-o", str(tmp_path / f"{name}.mp4"), "--frames-dir", str(tmp_path / name),
                   *extra])  # fmt: skip
        assert rc == 0
        return read_frames(tmp_path / name)

    default = render("default")
    np.testing.assert_array_equal(default, render("same", "--guidance", "1", "1.5"))
    assert not np.array_equal(default, render("paper", "--guidance", "2", "2"))


def test_guidance_must_be_two_weights():
    with pytest.raises(InputError, match="guidance"):
        load_model_config("tiny", ["guidance=[2.0]"])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [((), (1.0, 1.5)), (("fpdm.guidance_source=3", "fpdm.guidance_fusion=2.5"), (3.0, 2.5))],
)
def test_training_sample_grids_use_the_models_guidance(tmp_path, monkeypatch, overrides, expected):
    """The grids show what `signgen render` would make of the exported model, unless the
    run's config names other weights."""
    from signgen.train.fpdm import FPDMModule

    seen = []
    real = FPDMModule.sample

    def spy(self, batch, steps, w_src, w_fuse, **kw):
        seen.append((w_src, w_fuse))
        return real(self, batch, steps, w_src, w_fuse, **kw)

    monkeypatch.setattr(FPDMModule, "sample", spy)
    out, _ = train_tiny_fpdm(tmp_path, ["guidance=[1.0, 1.5]"], overrides=overrides)
    assert list((out / "samples").glob("grid-step*.png"))
    assert seen and set(seen) == {expected}
