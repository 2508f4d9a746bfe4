"""Parity and behaviour tests of signgen.metrics against the pinned reference libraries."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import scipy.linalg
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from signgen.errors import InputError, MissingWeightsError
from signgen.metrics.evaluate import _frame_diffs, clip_flicker
from signgen.metrics.fid import FeatureStats, frechet_distance
from signgen.metrics.hand import HAND_PATCH, hand_crop_boxes, hand_pose_error, hand_ssim
from signgen.metrics.ssim import psnr, ssim_uint8

SIZES = [(260, 210), (60, 60), (64, 97), (23, 31)]


def _structured(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Gradients, a checkerboard, flat regions and a little noise: not white noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack(
        [
            255 * xx / max(w - 1, 1),
            127 + 100 * np.sin(yy / 5.0) * np.cos(xx / 7.0),
            255.0 * (((yy // 8) + (xx // 8)) % 2),
        ],
        axis=-1,
    )
    img[h // 3 : h // 2, w // 4 : w // 2] = 40.0  # a flat patch
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _pairs(h: int, w: int, rng: np.random.Generator):
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-60, 60, a.shape), 0, 255).astype(np.uint8)
    s = _structured(h, w, rng)
    t = np.clip(np.roll(s, 2, axis=1).astype(int) + rng.integers(-10, 10, s.shape), 0, 255)
    return [("random", a, b), ("structured", s, t.astype(np.uint8)), ("unrelated", a, s)]


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]  # (1, 3, H, W)


def _sk_ssim(a, b, variant):
    if variant == "ssim":
        return structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=255, channel_axis=-1,
        )  # fmt: skip
    if variant == "ssim_df":  # GFLA/PIDM Reconstruction_Metrics 'ssim' on images / 255
        a01, b01 = a.astype(np.float32) / 255.0, b.astype(np.float32) / 255.0
        return structural_similarity(a01, b01, data_range=1, win_size=51, channel_axis=-1)
    # CFLD 'SSIM_256': images / 255 * 255, data range of the prediction (second image)
    a2 = a.astype(np.float32) / 255.0 * 255.0
    b2 = b.astype(np.float32) / 255.0 * 255.0
    return structural_similarity(
        a2, b2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        channel_axis=-1, data_range=b2.max() - b2.min(),
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["opencv", "torch"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", ["ssim", "ssim_df", "ssim_256"])
def test_ssim_matches_skimage(variant, size, backend):
    h, w = size
    if variant == "ssim_df" and min(h, w) < 51:
        pytest.skip("the 51-pixel window needs images of at least 51x51")
    rng = np.random.default_rng(hash((variant, size)) % 2**32)
    for name, gt, pred in _pairs(h, w, rng):
        ours = ssim_uint8(_t(pred), _t(gt), variant, backend=backend).item()
        ref = _sk_ssim(gt, pred, variant)
        assert abs(ours - ref) < 1e-4, (name, ours, ref)


def test_ssim_batch_equals_single_images_and_identity_is_one():
    rng = np.random.default_rng(1)
    imgs = [_pairs(60, 64, rng)[i] for i in range(3)]
    pred = torch.cat([_t(p) for _, _, p in imgs])
    gt = torch.cat([_t(g) for _, g, _ in imgs])
    batched = ssim_uint8(pred, gt)
    singles = torch.cat([ssim_uint8(pred[i : i + 1], gt[i : i + 1]) for i in range(3)])
    assert torch.allclose(batched, singles, atol=1e-9)
    assert torch.allclose(ssim_uint8(gt, gt), torch.ones(3, dtype=torch.float64), atol=1e-6)


def test_ssim_rejects_images_smaller_than_the_window():
    x = torch.zeros(1, 3, 10, 40, dtype=torch.uint8)
    with pytest.raises(InputError, match="at least 11x11"):
        ssim_uint8(x, x)


def test_psnr_matches_skimage_and_identical_is_inf():
    rng = np.random.default_rng(2)
    for h, w in [(260, 210), (60, 60)]:
        for _, gt, pred in _pairs(h, w, rng):
            ref = peak_signal_noise_ratio(gt, pred, data_range=255)
            ours = psnr(_t(pred), _t(gt)).item()
            assert math.isclose(ours, ref, rel_tol=1e-9, abs_tol=1e-9)
    same = _t(gt)
    assert math.isinf(psnr(same, same).item())


# --------------------------------------------------------------------------- FID math


def _scipy_reference(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dim,n", [(8, 200), (64, 500), (128, 1000)])
def test_frechet_distance_matches_float64_scipy(dim, n):
    rng = np.random.default_rng(dim)
    f1 = rng.normal(size=(n, dim))
    f2 = rng.normal(loc=0.3, size=(n, dim)) @ rng.normal(size=(dim, dim)) * 0.5
    mu1, s1 = f1.mean(0), np.cov(f1, rowvar=False)
    mu2, s2 = f2.mean(0), np.cov(f2, rowvar=False)
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = _scipy_reference(mu1, s1, mu2, s2)
    assert abs(ours - ref) <= 1e-6 * abs(ref), (ours, ref)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-6 * np.trace(s1)


def test_feature_stats_stream_equals_numpy_cov():
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(37, 16)).astype(np.float32)
    stats = FeatureStats(16)
    for chunk in np.array_split(feats, [5, 6, 20]):  # uneven chunks, one of size 1
        stats.update(chunk)
    mu, cov = stats.mean_cov()
    np.testing.assert_allclose(mu, feats.astype(np.float64).mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(feats.astype(np.float64), rowvar=False), atol=1e-10)
    with pytest.raises(InputError):
        FeatureStats(4).mean_cov()


# --------------------------------------------------------------------------- LPIPS


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    import torchvision

    torch.manual_seed(11)
    model = torchvision.models.alexnet(weights=None)
    path = tmp_path_factory.mktemp("w") / "alexnet-owt-7be5be79.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_lpips_equals_the_lpips_package_forward(alexnet_file):
    import lpips

    from signgen.metrics.perceptual import LPIPSMetric

    path, alexnet = alexnet_file
    # Reference: the package's own model, backbone modules swapped in by hand.
    ref = lpips.LPIPS(pretrained=True, net="alex", pnet_rand=True, verbose=False).eval()
    for slice_ in (ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5):
        for name in list(slice_._modules):
            slice_._modules[name] = alexnet.features[int(name)]
    rng = np.random.default_rng(4)
    pred = torch.from_numpy(rng.integers(0, 256, (7, 3, 64, 48), dtype=np.uint8))
    gt = torch.from_numpy(rng.integers(0, 256, (7, 3, 64, 48), dtype=np.uint8))
    metric = LPIPSMetric(path, "cpu")
    ours = torch.cat([metric(pred[i : i + 3], gt[i : i + 3]) for i in range(0, 7, 3)])
    assert ours.shape == (7,)  # the last partial batch (1 image) is scored too
    with torch.no_grad():
        expected = ref(pred.float() / 127.5 - 1, gt.float() / 127.5 - 1).reshape(-1).double()
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert (ours > 0).all()


def test_lpips_without_weights_names_the_file(tmp_path):
    from signgen.metrics.perceptual import LPIPSMetric

    with pytest.raises(MissingWeightsError, match=r"alexnet-owt-7be5be79\.pth"):
        LPIPSMetric(None, "cpu")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        LPIPSMetric(tmp_path / "nope.pth", "cpu")


# --------------------------------------------------------------------------- FID features


def _random_state_dict(variant: str, seed: int) -> dict[str, torch.Tensor]:
    import pytorch_fid.inception as pfi
    import torchvision

    torch.manual_seed(seed)
    if variant == "pgpis":
        return torchvision.models.inception_v3(
            weights=None, aux_logits=True, init_weights=False
        ).state_dict()
    # pytorch-fid's FID Inception architecture, random weights (its loader is stubbed out).
    with (
        mock.patch.object(pfi, "load_state_dict_from_url", return_value=None),
        mock.patch.object(torchvision.models.Inception3, "load_state_dict"),
    ):
        return pfi.fid_inception_v3().state_dict()


def _pytorch_fid_reference(variant: str, sd: dict[str, torch.Tensor]):
    """pytorch-fid's own InceptionV3([3]) wrapper with ``sd``: the reference the extractor
    must equal. pytorch-fid only builds it by downloading the weights, so the download is
    stubbed out here, in the test, with the same state dict."""
    import pytorch_fid.inception as pfi
    import torchvision

    def tv_inception(*args, **kwargs):
        kwargs.pop("weights", None)
        net = torchvision.models.inception_v3(weights=None, init_weights=False, **kwargs)
        net.load_state_dict(sd)
        return net

    if variant == "standard":
        patch = mock.patch.object(pfi, "load_state_dict_from_url", return_value=sd)
    else:
        patch = mock.patch.object(pfi, "_inception_v3", tv_inception)
    with patch:
        net = pfi.InceptionV3([3], use_fid_inception=(variant == "standard"))
    return net.eval()


@pytest.mark.parametrize("variant", ["standard", "pgpis"])
def test_fid_extractor_loads_a_saved_state_dict(variant, tmp_path):
    """A random state dict saved with torch.save is loaded through the normal torch path
    (no patching) and gives, bit for bit, the features of pytorch-fid's own wrapper."""
    from signgen.metrics.fid import FID_VARIANTS, InceptionFeatures

    sd = _random_state_dict(variant, seed=5)
    path = tmp_path / FID_VARIANTS[variant].weights_file
    torch.save(sd, path)
    extractor = InceptionFeatures(variant, path, "cpu")
    net = extractor.net
    assert torch.equal(net.Conv2d_1a_3x3.conv.weight, sd["Conv2d_1a_3x3.conv.weight"])
    assert torch.equal(net.Mixed_7c.branch_pool.conv.weight, sd["Mixed_7c.branch_pool.conv.weight"])
    assert torch.equal(net.Mixed_7c.branch_pool.bn.running_var,
                       sd["Mixed_7c.branch_pool.bn.running_var"])  # fmt: skip
    images = torch.from_numpy(np.random.default_rng(6).integers(0, 256, (2, 3, 40, 36), np.uint8))
    feats = extractor(images)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert (feats[0] - feats[1]).abs().max() > 1e-3 * feats.abs().max()  # depends on input
    with torch.no_grad():
        want = _pytorch_fid_reference(variant, sd)(images.float() / 255.0)[0].flatten(1)
    assert torch.equal(feats, want)


def test_fid_extractor_refuses_the_other_variants_weights(tmp_path):
    from signgen.errors import FormatError
    from signgen.metrics.fid import InceptionFeatures

    path = tmp_path / "w.pth"
    torch.save(_random_state_dict("pgpis", seed=1), path)
    with pytest.raises(FormatError, match="does not match the 'standard' Inception"):
        InceptionFeatures("standard", path, "cpu")


def test_fid_extractor_without_weights_says_where_to_get_them(tmp_path):
    from signgen.metrics.fid import InceptionFeatures

    with pytest.raises(MissingWeightsError, match=r"pt_inception-2015-12-05-6726825d\.pth.*http"):
        InceptionFeatures("standard", None, "cpu")
    with pytest.raises(MissingWeightsError, match=r"inception_v3_google-0cc3c7bd\.pth"):
        InceptionFeatures("pgpis", tmp_path / "missing.pth", "cpu")


# --------------------------------------------------------------------------- hands


def _frame_points(left=None, right=None):
    pts = np.zeros((133, 3), np.float32)
    if left is not None:
        pts[100] = (*left, 0.9)
    if right is not None:
        pts[121] = (*right, 0.9)
    return pts


def test_hand_crop_is_centred_on_the_knuckle():
    boxes = hand_crop_boxes(_frame_points(left=(100.0, 120.0), right=(60.4, 80.6)), 260, 210)
    assert boxes[0].tolist() == [70, 90, 130, 150]  # centre (100, 120)
    assert boxes[1].tolist() == [30, 51, 90, 111]  # rounded centre (60, 81)
    assert (boxes[:, 2] - boxes[:, 0] == HAND_PATCH).all()
    assert (boxes[:, 3] - boxes[:, 1] == HAND_PATCH).all()


def test_hand_crop_is_clamped_inside_the_frame():
    boxes = hand_crop_boxes(_frame_points(left=(3.0, 258.0), right=(209.0, -5.0)), 260, 210)
    assert boxes[0].tolist() == [0, 200, 60, 260]  # bottom-left corner
    assert boxes[1].tolist() == [150, 0, 210, 60]  # top-right corner, knuckle off-frame
    with pytest.raises(InputError):
        hand_crop_boxes(_frame_points(left=(10.0, 10.0)), 50, 210)


def test_missing_knuckle_skips_the_hand():
    pts = _frame_points(left=(100.0, 120.0))  # right hand score 0
    pts[100, 2] = 0.9
    boxes = hand_crop_boxes(pts, 260, 210)
    assert boxes[1].tolist() == [-1, -1, -1, -1]
    pts[100, 0] = np.nan
    assert (hand_crop_boxes(pts, 260, 210) == -1).all()
    assert (hand_crop_boxes(_frame_points(left=(50, 50)), 260, 210, min_score=0.95) == -1).all()


def test_hand_ssim_only_sees_the_crops_and_counts_hands():
    rng = np.random.default_rng(7)
    gt = rng.integers(0, 256, (2, 3, 120, 100), dtype=np.uint8)
    pred = gt.copy()
    pred[:, :, 70:, :] = 0  # damage outside the hand crop (rows 0-59)
    pred[1, :, 10:20, 10:20] = 255  # frame 1: damage inside it
    boxes = np.stack(
        [hand_crop_boxes(_frame_points(left=(30.0, 30.0)), 120, 100) for _ in range(2)]
    )
    score, present = hand_ssim(torch.from_numpy(pred), torch.from_numpy(gt), boxes)
    assert present.tolist() == [1, 1]
    assert score[0].item() == pytest.approx(1.0, abs=1e-6)
    crop = (slice(None), slice(0, 60), slice(0, 60))
    expected = structural_similarity(
        gt[1][crop].transpose(1, 2, 0),
        pred[1][crop].transpose(1, 2, 0),
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=255, channel_axis=-1,
    )  # fmt: skip
    assert score[1].item() == pytest.approx(expected, abs=1e-4)
    none = np.full((2, 2, 4), -1)
    s, n = hand_ssim(torch.from_numpy(pred), torch.from_numpy(gt), none)
    assert n.tolist() == [0, 0] and s.tolist() == [0.0, 0.0]


class _BrightnessDetector:
    """Fake detector: 21 points at the box centre, shifted right by the crop's mean value."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, boxes):
        self.calls.append([b.copy() for b in boxes])
        out = []
        for img, bx in zip(images, boxes):
            kps = np.zeros((len(bx), 21, 3), np.float32)
            for k, (x1, y1, x2, y2) in enumerate(bx.astype(int)):
                shift = img[y1:y2, x1:x2].mean() / 10.0
                kps[k, :, 0] = (x1 + x2) / 2 + shift
                kps[k, :, 1] = (y1 + y2) / 2
                kps[k, :, 2] = 1.0
            out.append(kps)
        return out


def test_hand_pose_error_uses_the_gt_crops_and_l1():
    gt = np.full((2, 100, 100, 3), 100, np.uint8)
    pred = gt.copy()
    pred[0, :60, :60] = 150  # left crop of frame 0 is 50 brighter -> shift 5 px
    boxes = np.array([[[0, 0, 60, 60], [40, 40, 100, 100]], [[0, 0, 60, 60], [-1, -1, -1, -1]]])
    det = _BrightnessDetector()
    err, present = hand_pose_error(det, pred, gt, boxes)
    assert present.tolist() == [2, 1]
    # frame 0: left hand 5 px off (pixels where both crops overlap also differ: the right
    # crop [40:100] overlaps the brightened region on [40:60]^2: 400 of 3600 px, +50)
    right_shift = 400 * 50 / 3600 / 10.0
    assert err[0] == pytest.approx((5.0 + right_shift) / 2)
    assert err[1] == pytest.approx(0.0)
    assert det.calls[0][1].shape == (1, 4)  # the skipped hand is not sent to the detector


def test_flicker_of_static_and_alternating_clips():
    static = np.full((4, 8, 8, 3), 7, np.uint8)
    d = _frame_diffs(static, None)
    assert math.isnan(d[0]) and (d[1:] == 0).all()
    alt = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (0, 10, 0, 10)])
    d2 = _frame_diffs(alt[2:], alt[1])  # continuing a clip across a batch boundary
    assert d2.tolist() == [10.0, 10.0]
    fp, fg, ratio = clip_flicker(_frame_diffs(alt, None), _frame_diffs(alt // 2, None))
    assert (fp, fg, ratio) == (10.0, 5.0, 2.0)
    assert math.isnan(clip_flicker(d, d)[2])  # a static ground truth has no ratio


@pytest.mark.gpu
def test_cuda_ssim_psnr_match_skimage():
    rng = np.random.default_rng(8)
    for _, gt, pred in _pairs(260, 210, rng):
        for variant in ("ssim", "ssim_df", "ssim_256"):
            ours = ssim_uint8(_t(pred).cuda(), _t(gt).cuda(), variant).item()
            assert abs(ours - _sk_ssim(gt, pred, variant)) < 1e-4, variant
        ref = peak_signal_noise_ratio(gt, pred, data_range=255)
        assert psnr(_t(pred).cuda(), _t(gt).cuda()).item() == pytest.approx(ref, rel=1e-9)
