"""Video metrics: flicker, temporal consistency, the I3D network and its loading, the FVD
preprocessing, the Frechet distance against scipy (also for near-singular covariances)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from signgen.errors import FormatError, InputError, MissingWeightsError
from signgen.metrics.fid import frechet_distance
from signgen.metrics.video import (
    FVDStats,
    InceptionI3d,
    _same_padding,
    flicker,
    i3d_preprocess,
    load_i3d,
    temporal_consistency,
    video_metrics,
)

# --------------------------------------------------------------------------- per clip


def _ramp_clip(t: int, speed: float, start: float = 10.0) -> np.ndarray:
    """Every pixel brightens by ``speed`` per frame: motion at constant speed."""
    values = start + speed * np.arange(t)
    return np.broadcast_to(values[:, None, None, None], (t, 4, 5, 3)).astype(np.uint8).copy()


def test_constant_speed_is_consistent_and_a_jumping_frame_is_not():
    clip = _ramp_clip(8, 5)
    assert flicker(clip) == 5.0
    assert temporal_consistency(clip) == 0.0  # second difference of a linear change
    jumpy = clip.copy()
    jumpy[4] += 20  # one frame jumps away from both neighbours
    # |x_4 - mean(x_3, x_5)| = 20 and the neighbours' own terms are 10 each: 40 / 6 frames
    assert temporal_consistency(jumpy) == pytest.approx(40 / 6)
    assert math.isnan(temporal_consistency(clip[:2])) and math.isnan(flicker(clip[:1]))


def test_video_metrics_compare_with_the_ground_truth():
    gt = _ramp_clip(6, 4)
    pred = gt.copy()
    pred[1::2] += 6  # every other frame brighter: flicker
    m = video_metrics(pred, gt)
    assert m["flicker_gt"] == 4.0 and m["temporal_consistency_gt"] == 0.0
    assert m["flicker"] == pytest.approx(np.abs(np.diff(pred.astype(float), axis=0)).mean())
    assert m["flicker_error"] == pytest.approx(abs(m["flicker"] - 4.0))
    assert m["temporal_consistency"] == 6.0  # each interior frame is 6 off its neighbours' mean
    assert m["temporal_consistency_diff"] == 6.0
    assert video_metrics(gt, gt)["flicker_error"] == 0.0


def test_bad_clips_are_user_errors():
    gt = _ramp_clip(6, 4)
    with pytest.raises(InputError, match="differ"):
        video_metrics(gt[:5], gt)
    with pytest.raises(InputError, match="uint8"):
        video_metrics(gt.astype(np.float32), gt)


# --------------------------------------------------------------------------- Frechet


def _scipy_fd(mu1, s1, mu2, s2) -> float:
    """The formula as StyleGAN-V computes FVD: scipy ``sqrtm`` of the product, real part."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular products warn
        covmean, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize(("n", "dim"), [(500, 64), (40, 64), (20, 400)])
def test_frechet_distance_matches_scipy_including_rank_deficient_covariances(n, dim):
    """n < dim leaves both covariances singular (rank n - 1), as FVD's 400-d features
    over fewer than 401 clips do."""
    rng = np.random.default_rng(n + dim)
    f1 = rng.normal(size=(n, dim))
    f2 = rng.normal(loc=0.2, size=(n, dim)) @ rng.normal(size=(dim, dim)) * 0.3
    mu1, s1 = f1.mean(0), np.cov(f1, rowvar=False)
    mu2, s2 = f2.mean(0), np.cov(f2, rowvar=False)
    assert np.linalg.matrix_rank(s1) == min(n - 1, dim)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert abs(ours - _scipy_fd(mu1, s1, mu2, s2)) <= 1e-6 * abs(ours)


def test_frechet_distance_of_singular_covariances_with_known_answers():
    rng = np.random.default_rng(7)
    f = rng.normal(size=(30, 100))  # rank 29 of 100
    mu, s = f.mean(0), np.cov(f, rowvar=False)
    scale = np.trace(s)
    # Same covariance: only the means differ, FD = |mu1 - mu2|^2 = 100.
    assert abs(frechet_distance(mu, s, mu + 1.0, s) - 100.0) <= 1e-6 * scale
    # Commuting (diagonal) covariances, half their variances 0: the square root is known.
    a = np.where(rng.random(50) < 0.5, 0.0, rng.random(50))
    b = np.where(rng.random(50) < 0.5, 0.0, rng.random(50))
    exact = a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()
    ours = frechet_distance(np.zeros(50), np.diag(a), np.zeros(50), np.diag(b))
    assert abs(ours - exact) <= 1e-9
    assert abs(_scipy_fd(np.zeros(50), np.diag(a), np.zeros(50), np.diag(b)) - exact) <= 1e-9


# --------------------------------------------------------------------------- preprocessing


def test_same_padding_is_tensorflows():
    # TF "SAME": output ceil(n / s), total padding (out - 1) s + k - n, the extra one after.
    for n, k, s in [(224, 7, 2), (112, 3, 2), (16, 3, 1), (9, 2, 2), (7, 1, 1), (8, 3, 2)]:
        out = math.ceil(n / s)
        total = max((out - 1) * s + k - n, 0)
        assert _same_padding(n, k, s) == (total // 2, total - total // 2)
    assert _same_padding(224, 7, 2) == (2, 3)


def test_preprocess_resizes_the_short_side_and_centre_crops():
    h, w = 200, 112  # portrait: width -> 224 (x2), height -> 400, crop rows 88..311
    rows = np.arange(h, dtype=np.uint8)[None, :, None, None]
    clip = np.broadcast_to(rows, (3, h, w, 3)).copy()  # pixel value = its row
    x = i3d_preprocess(clip)
    assert x.shape == (3, 3, 224, 224)  # (C, T, 224, 224)

    def source_row(r: int) -> float:  # bilinear, align_corners=False: centres map to centres
        return (r + 0.5) / 2 - 0.5

    expected = np.array([source_row(88 + r) for r in range(224)]) / 255 * 2 - 1
    np.testing.assert_allclose(x[0, 0, :, 0].numpy(), expected, atol=1e-5)
    torch.testing.assert_close(x[..., 0], x[..., 100], rtol=0, atol=1e-6)  # columns alike
    flat = np.full((2, 90, 160, 3), 51, np.uint8)  # landscape, uniform: stays 51/255
    y = i3d_preprocess(flat)
    assert y.shape == (3, 2, 224, 224)
    torch.testing.assert_close(y, torch.full_like(y, 51 / 255 * 2 - 1), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- I3D + FVD


def test_i3d_has_the_pytorch_port_parameter_names_and_shapes():
    with torch.device("meta"):
        net = InceptionI3d()
    sd = net.state_dict()
    assert tuple(sd["Conv3d_1a_7x7.conv3d.weight"].shape) == (64, 3, 7, 7, 7)
    assert tuple(sd["Conv3d_2c_3x3.conv3d.weight"].shape) == (192, 64, 3, 3, 3)
    assert tuple(sd["Mixed_4b.b1b.conv3d.weight"].shape) == (208, 96, 3, 3, 3)
    assert tuple(sd["Mixed_5c.b3b.bn.running_var"].shape) == (128,)
    assert tuple(sd["logits.conv3d.weight"].shape) == (400, 1024, 1, 1, 1)
    assert "logits.bn.weight" not in sd and "logits.conv3d.bias" in sd
    assert net.feature_dim == 1024


def _tiny_i3d() -> InceptionI3d:
    torch.manual_seed(3)
    net = InceptionI3d(width_divisor=16).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def test_i3d_weights_load_from_a_state_dict_and_run(tmp_path):
    net = _tiny_i3d()
    path = tmp_path / "i3d.pt"
    torch.save(net.state_dict(), path)
    loaded = load_i3d(path, width_divisor=16)
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(tmp_path / "i3d.safetensors"))
    also = load_i3d(tmp_path / "i3d.safetensors", width_divisor=16)
    inferred = load_i3d(path)  # the width read from the file (as `signgen evaluate` loads)
    assert inferred.feature_dim == net.feature_dim < 1024
    clip = torch.rand(1, 3, 9, 224, 224) * 2 - 1  # the shortest clip I3D takes
    with torch.no_grad():
        ref, out, out2, out3 = net(clip), loaded(clip), also(clip), inferred(clip)
    assert ref.shape == (1, 400)
    assert torch.equal(out, ref) and torch.equal(out2, ref) and torch.equal(out3, ref)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # building the archive
def test_i3d_files_that_are_not_plain_weights_are_refused(tmp_path):
    with pytest.raises(MissingWeightsError, match="I3D weights"):
        load_i3d(tmp_path / "absent.pt")
    scripted = tmp_path / "scripted.pt"  # a TorchScript archive: a program, not data
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(scripted))
    with pytest.raises(FormatError, match="TorchScript archive"):
        load_i3d(scripted)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(FormatError, match="without running code"):
        load_i3d(garbage)
    wrong = tmp_path / "wrong.pt"
    torch.save({"weight": torch.zeros(2)}, wrong)
    with pytest.raises(FormatError, match="does not match the I3D"):
        load_i3d(wrong)


class _TinyVideoNet(nn.Module):
    """A random 3D conv feature extractor standing in for I3D: (B, 3, T, S, S) -> (B, 6)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(3, 6, (3, 8, 8), stride=(2, 8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)).mean(dim=(2, 3, 4))


def _clips(n: int, t: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (t, 40, 32, 3), dtype=np.uint8) for _ in range(n)]


def test_fvd_of_a_set_against_itself_is_zero_and_against_another_is_not():
    stats = FVDStats(_TinyVideoNet(), clip_frames=4, size=32)
    same = FVDStats(_TinyVideoNet(), clip_frames=4, size=32)
    real = _clips(12, 5, 0)
    dark = [(c // 3).astype(np.uint8) for c in _clips(12, 5, 1)]
    for p, g in zip(dark, real):
        video_metrics(p, g, fvd=stats)
        same.add(g, g)
    assert stats.pred.n == stats.gt.n == 12
    assert stats.fvd() > 1e-3
    _, cov = same.gt.mean_cov()
    assert abs(same.fvd()) <= 1e-9 * max(np.trace(cov), 1.0)
    # The distance is the Frechet distance of the two feature sets' Gaussians.
    feats_p = np.stack([stats.features(c) for c in dark])
    feats_g = np.stack([stats.features(c) for c in real])
    ref = _scipy_fd(feats_p.mean(0), np.cov(feats_p, rowvar=False), feats_g.mean(0),
                    np.cov(feats_g, rowvar=False))  # fmt: skip
    assert stats.fvd() == pytest.approx(ref, rel=1e-6)


def test_fvd_uses_the_first_frames_and_leaves_short_clips_out():
    stats = FVDStats(_TinyVideoNet(), clip_frames=4, size=32)
    clip = _clips(1, 7, 2)[0]
    assert np.array_equal(stats.features(clip), stats.features(clip[:4]))
    assert not stats.add(clip[:3], clip[:3])
    assert stats.skipped == 1 and stats.pred.n == 0
    stats.add(clip, clip)
    with pytest.raises(InputError, match="at least 2 clips"):
        stats.fvd()
    assert "1 shorter clips left out" in stats.describe()


def test_load_fvd_names_its_weights_by_their_hash(tmp_path):
    import hashlib

    from signgen.metrics.video import load_fvd

    path = tmp_path / "i3d.pt"
    torch.save(InceptionI3d().state_dict(), path)
    stats = load_fvd(path)
    assert stats.weights == hashlib.sha256(path.read_bytes()).hexdigest()
    assert stats.weights[:16] in stats.describe()
    assert isinstance(stats.network, InceptionI3d) and not stats.network.training
