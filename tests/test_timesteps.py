"""Training timestep sampling (fpdm.high_t_fraction / high_t_from)."""

from __future__ import annotations

import pytest
import torch

from signgen.errors import InputError
from signgen.train.config import TrainConfig
from signgen.train.fpdm import sample_timesteps


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_fraction_zero_is_the_plain_uniform_draw():
    # The paper's sampling, draw for draw: a run without the option is unchanged.
    want = torch.randint(0, 1000, (8,), generator=_gen())
    assert torch.equal(sample_timesteps(8, 1000, 0.0, 0.5, "cpu", _gen()), want)


@pytest.mark.parametrize(
    ("fraction", "batch", "high_rows"),
    [(0.5, 8, [0, 2, 4, 6]), (0.25, 8, [0, 4]), (1.0, 4, [0, 1, 2, 3]), (0.5, 3, [0, 2])],
)
def test_the_high_rows_are_spread_evenly_and_always_high(fraction, batch, high_rows):
    draws = torch.stack([
        sample_timesteps(batch, 1000, fraction, 0.6, "cpu", _gen(s)) for s in range(400)
    ])  # fmt: skip
    assert draws.min() >= 0 and draws.max() < 1000
    low_rows = [i for i in range(batch) if i not in high_rows]
    # High rows never fall below 600; the others stay uniform over [0, 1000).
    assert (draws[:, high_rows] >= 600).all()
    if low_rows:
        rest = draws[:, low_rows].float()
        assert (rest < 600).float().mean() == pytest.approx(0.6, abs=0.06)
    # And the high rows cover their range, not one value.
    assert draws[:, high_rows].min() < 640 and draws[:, high_rows].max() > 960


def test_the_training_step_uses_it_only_in_training(monkeypatch):
    # FPDMModule.forward with its conditions and denoiser stubbed: which fraction reaches
    # the sampler in train() and in eval() mode (the evaluation loss stays uniform).
    from diffusers import DDPMScheduler

    import signgen.train.fpdm as fpdm

    seen = []
    real = fpdm.sample_timesteps
    monkeypatch.setattr(fpdm, "sample_timesteps", lambda *a: seen.append(a[2:4]) or real(*a))

    class Denoiser(torch.nn.Module):
        has_focal = False

        def forward(self, noisy, t, *args, **kwargs):
            return torch.zeros_like(noisy)

    cfg = TrainConfig()
    cfg.fpdm.high_t_fraction, cfg.fpdm.high_t_from = 0.5, 0.7
    module = fpdm.FPDMModule.__new__(fpdm.FPDMModule)
    torch.nn.Module.__init__(module)
    module.fc, module.denoiser = cfg.fpdm, Denoiser()
    module.scheduler = DDPMScheduler(num_train_timesteps=1000)
    z0 = torch.randn(4, 4, 8, 8)
    module.conditions = lambda batch, generator=None: {"z0": z0, "pose": None, "hidden": None,
                                                       "fusion": None}  # fmt: skip
    torch.nn.Module.train(module, True)
    loss, _ = module.forward({}, torch.Generator().manual_seed(0))
    torch.nn.Module.train(module, False)
    module.forward({}, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    assert seen == [(0.5, 0.7), (0.0, 0.7)]


@pytest.mark.parametrize(("key", "value"), [("high_t_fraction", 1.5), ("high_t_fraction", -0.1),
                                            ("high_t_from", 1.0)])  # fmt: skip
def test_bad_values_are_input_errors(key, value):
    cfg = TrainConfig()
    setattr(cfg.fpdm, key, value)
    with pytest.raises(InputError, match=key):
        cfg.check()
