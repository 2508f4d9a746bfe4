"""`signgen evaluate` end to end on tiny synthetic Phoenix-layout folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from signgen.cli import main
from signgen.keypoints.sequence import KeypointSequence
from signgen.metrics.evaluate import EvalConfig, run_evaluation

H, W = 72, 64  # tiny frames, still larger than the 60x60 hand patch
VIDEOS = {"01April_2010_Thursday_heute-6694": 4, "05May_2011_Thursday_tagesschau-3471": 3}
SIGNERS = {"01April_2010_Thursday_heute-6694": "Signer01"}


def make_phoenix(root: Path, videos=VIDEOS, seed: int = 0, pred_frames=None) -> tuple[Path, Path]:
    """GT and prediction folders ``<root>/{gt,pred}/<video>/imagesNNNN.png``."""
    rng = np.random.default_rng(seed)
    for video, n in videos.items():
        for side in ("gt", "pred"):
            (root / side / video).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            yy, xx = np.mgrid[0:H, 0:W]
            base = np.stack([xx * 3, yy * 3, (xx + yy + 20 * i) % 256], -1)
            gt = np.clip(base + rng.integers(-20, 20, (H, W, 3)), 0, 255).astype(np.uint8)
            pred = np.clip(gt.astype(int) + rng.integers(-30, 30, gt.shape), 0, 255)
            Image.fromarray(gt).save(root / "gt" / video / f"images{i + 1:04d}.png")
            if pred_frames is None or i < pred_frames.get(video, n):
                Image.fromarray(pred.astype(np.uint8)).save(
                    root / "pred" / video / f"images{i + 1:04d}.png"
                )
    return root / "pred", root / "gt"


def make_corpus(path: Path) -> Path:
    lines = ["name|video|start|end|speaker|orth|translation"]
    for name, signer in SIGNERS.items():
        lines.append(f"{name}|{name}/1/*.png|-1|-1|{signer}|REGEN|es regnet")
    path.write_text("\n".join(lines) + "\n")
    return path


def make_keypoints(folder: Path, videos=VIDEOS) -> Path:
    """signgen JSON per video; right hand missing on frame 1, knuckles near the corners."""
    folder.mkdir(parents=True, exist_ok=True)
    for video, n in videos.items():
        pts = np.zeros((n, 133, 3), np.float32)
        # keypoints in a 2x larger frame than the images: rescaled by evaluate
        pts[:, 100] = (20.0, 30.0, 0.9)
        pts[:, 121] = (120.0, 140.0, 0.8)
        pts[1, 121, 2] = 0.0
        KeypointSequence(pts, width=2 * W, height=2 * H, fps=25.0).save(folder / f"{video}.json")
    return folder


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_evaluate_cli_writes_per_frame_rows_matching_skimage(tmp_path, capsys):
    pred, gt = make_phoenix(tmp_path)
    corpus = make_corpus(tmp_path / "test.corpus.csv")
    out = tmp_path / "out" / "metrics.csv"
    rc = main(
        ["evaluate", "--pred", str(pred), "--gt", str(gt), "--corpus", str(corpus),
         "--metrics", "ssim,psnr,flicker", "--batch-size", "3", "--no-progress", "-o", str(out)]
    )  # fmt: skip
    assert rc == 0
    df = pd.read_csv(out)
    assert list(df.columns[:3]) == ["video", "signer", "frame"]
    assert len(df) == sum(VIDEOS.values())  # no frame lost to a partial batch
    first = "01April_2010_Thursday_heute-6694"
    assert set(df.loc[df.video == first, "signer"]) == {"Signer01"}
    assert set(df.loc[df.video != first, "signer"]) == {"unknown"}
    for _, row in df.iterrows():
        name = f"images{row.frame + 1:04d}.png"
        g, p = _read(gt / row.video / name), _read(pred / row.video / name)
        ref = structural_similarity(
            g, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=255, channel_axis=-1,
        )  # fmt: skip
        assert row.ssim == pytest.approx(ref, abs=1e-4)
        diff = g.astype(float) - p.astype(float)
        assert row.psnr == pytest.approx(10 * math.log10(255**2 / (diff**2).mean()), rel=1e-9)
    # flicker: first frame of each clip has none; others = mean |f_t - f_t-1|
    assert df.groupby("video")["flicker"].apply(lambda s: math.isnan(s.iloc[0])).all()
    f1 = _read(pred / first / "images0002.png").astype(int)
    f0 = _read(pred / first / "images0001.png").astype(int)
    assert df.loc[(df.video == first) & (df.frame == 1), "flicker"].item() == pytest.approx(
        np.abs(f1 - f0).mean()
    )
    summary = json.loads((out.parent / "metrics.summary.json").read_text())
    # Temporal consistency, streamed over batches of 3 frames, is the whole clip's.
    from signgen.metrics.video import flicker, temporal_consistency

    n = int((df.video == first).sum())
    clip_p = np.stack([_read(pred / first / f"images{t + 1:04d}.png") for t in range(n)])
    clip_g = np.stack([_read(gt / first / f"images{t + 1:04d}.png") for t in range(n)])
    assert n >= 4  # crosses a batch boundary with two frames of history
    row = next(c for c in summary["per_clip"] if c["video"] == first)
    assert row["temporal_consistency"] == pytest.approx(temporal_consistency(clip_p), rel=1e-6)
    assert row["temporal_consistency_gt"] == pytest.approx(temporal_consistency(clip_g), rel=1e-6)
    assert row["flicker_error"] == pytest.approx(abs(flicker(clip_p) - flicker(clip_g)), rel=1e-6)
    assert summary["frames"] == len(df)
    assert summary["mean"]["ssim"] == pytest.approx(df.ssim.mean())
    assert set(summary["per_signer"]) == {"Signer01", "unknown"}
    assert len(summary["per_clip"]) == 2 and "flicker_ratio" in summary["per_clip"][0]
    assert "structural_similarity" in summary["implementations"]["ssim"]
    assert summary["pred"] == str(pred.resolve())
    printed = capsys.readouterr().out
    assert "ssim" in printed and "flicker_ratio" in printed


def test_unmatched_videos_are_listed_and_nothing_is_written(tmp_path, capsys):
    pred, gt = make_phoenix(tmp_path)
    (gt / "only_in_gt").mkdir()
    Image.new("RGB", (W, H)).save(gt / "only_in_gt" / "images0001.png")
    (pred / "stray").mkdir()
    Image.new("RGB", (W, H)).save(pred / "stray" / "images0001.png")
    out = tmp_path / "m.csv"
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("signgen: error:")
    assert "only_in_gt" in err and "stray" in err
    assert not out.exists() and not list(tmp_path.glob("*.part*"))


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--metrics", "ssim,bogus"], "bogus"),
        (["--metrics", "hand_ssim"], "--keypoints"),
        (["--size", "260by210"], "HxW"),
        (["--fid-variant", "standard", "--metrics", "fid"], "pt_inception-2015-12-05"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, argv, needle):
    pred, gt = make_phoenix(tmp_path, {"v": 2})
    out = tmp_path / "m.csv"
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.count("\n") == 1
    assert not out.exists()


def test_frame_count_mismatch_is_reported_and_common_frames_compared(tmp_path):
    short = "05May_2011_Thursday_tagesschau-3471"
    pred, gt = make_phoenix(tmp_path, pred_frames={short: 2})
    out = tmp_path / "m.parquet"
    summary = run_evaluation(
        EvalConfig(str(pred), str(gt), str(out), metrics=("ssim",)), progress=False
    )
    df = pd.read_parquet(out)
    assert (df.video == short).sum() == 2
    assert len(summary["frame_count_mismatches"]) == 1
    assert short in summary["frame_count_mismatches"][0]


class _ShiftDetector:
    """Fake hand detector: 21 points at the box centre moved by the crop's mean / 10."""

    def __call__(self, images, boxes):
        out = []
        for img, bx in zip(images, boxes):
            kps = np.zeros((len(bx), 21, 3), np.float32)
            for k, (x1, y1, x2, y2) in enumerate(bx.astype(int)):
                kps[k, :, 0] = (x1 + x2) / 2 + img[y1:y2, x1:x2].mean() / 10
                kps[k, :, 1] = (y1 + y2) / 2
                kps[k, :, 2] = 1
            out.append(kps)
        return out


def test_hand_metrics_with_keypoint_folder_and_injected_detector(tmp_path):
    pred, gt = make_phoenix(tmp_path)
    kp = make_keypoints(tmp_path / "kp")
    out = tmp_path / "m.csv"
    cfg = EvalConfig(
        str(pred), str(gt), str(out), metrics=("hand_ssim", "hand_pe"), keypoints=str(kp)
    )
    summary = run_evaluation(cfg, hand_detector=_ShiftDetector(), progress=False)
    df = pd.read_csv(out)
    assert df.loc[df.frame == 1, "hands"].tolist() == [1, 1]  # right hand missing there
    assert (df.loc[df.frame != 1, "hands"] == 2).all()
    assert summary["hands_skipped"] == len(VIDEOS)  # one skipped hand per video
    video = "01April_2010_Thursday_heute-6694"
    g = _read(gt / video / "images0002.png")
    p = _read(pred / video / "images0002.png")
    # left knuckle (20, 30) in a 128x144 frame -> (10, 15) here -> crop clamped to [0:60]
    ref = structural_similarity(
        g[:60, :60], p[:60, :60], gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=255, channel_axis=-1,
    )  # fmt: skip
    row = df[(df.video == video) & (df.frame == 1)].iloc[0]
    assert row.hand_ssim == pytest.approx(ref, abs=1e-4)
    expected_pe = abs(p[:60, :60].mean() - g[:60, :60].mean()) / 10
    assert row.hand_pe == pytest.approx(expected_pe, abs=1e-4)  # float32 keypoints
    hand_rows = df.hands.to_numpy()
    weighted = (df.hand_ssim * hand_rows).sum() / hand_rows.sum()
    assert summary["mean"]["hand_ssim"] == pytest.approx(weighted)


def test_mp4_predictions_against_png_ground_truth(tmp_path):
    import av

    videos = {"clip": 4}
    pred_png, gt = make_phoenix(tmp_path, videos)
    pred = tmp_path / "pred_mp4"
    pred.mkdir()
    with av.open(str(pred / "clip.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        stream.options = {"crf": "0"}
        for f in sorted((pred_png / "clip").glob("*.png")):
            frame = av.VideoFrame.from_ndarray(_read(f), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    out = tmp_path / "m.csv"
    run_evaluation(EvalConfig(str(pred), str(gt), str(out), metrics=("ssim",)), progress=False)
    df = pd.read_csv(out)
    ref = run_evaluation(
        EvalConfig(str(pred_png), str(gt), str(tmp_path / "r.csv"), metrics=("ssim",)),
        progress=False,
    )
    assert len(df) == 4 and df.video.unique().tolist() == ["clip"]
    assert df.ssim.mean() == pytest.approx(ref["mean"]["ssim"], abs=0.02)  # near-lossless


class _TinyFeatures(torch.nn.Module):
    """Stand-in for the Inception (covered by test_metrics): a fixed random projection of
    4x4-pooled frames to 8-d, so the FID bookkeeping runs in milliseconds."""

    calls = 0

    def __init__(self, variant, weights, device):
        super().__init__()
        assert Path(weights).is_file()
        self.proj = torch.randn(3 * 4 * 4, 8, generator=torch.Generator().manual_seed(0))

    def forward(self, images):
        type(self).calls += len(images)
        x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4)  # (B, 3, 4, 4)
        return x.flatten(1) @ self.proj  # (B, 8)


def test_fid_streams_features_and_caches_the_real_statistics(tmp_path, monkeypatch):
    from signgen.metrics import fid as fidlib

    monkeypatch.setattr(fidlib, "InceptionFeatures", _TinyFeatures)
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"stand-in")
    pred, gt = make_phoenix(tmp_path, {"a": 6, "b": 6})
    cfg = EvalConfig(
        str(pred), str(gt), str(tmp_path / "m.csv"), metrics=("fid",), batch_size=4,
        fid_weights=str(weights), fid_cache=str(tmp_path / "cache"),
    )  # fmt: skip
    first = run_evaluation(cfg, progress=False)
    assert _TinyFeatures.calls == 24  # 12 generated + 12 real frames, in batches of 4
    # reference: the Frechet distance of all features at once
    feats = {}
    for side, root in (("pred", pred), ("gt", gt)):
        imgs = [_read(f) for f in sorted(root.glob("*/*.png"))]
        batch = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
        feats[side] = _TinyFeatures("standard", weights, "cpu")(batch).double().numpy()
    mu = {k: v.mean(0) for k, v in feats.items()}
    cov = {k: np.cov(v, rowvar=False) for k, v in feats.items()}
    ref = fidlib.frechet_distance(mu["pred"], cov["pred"], mu["gt"], cov["gt"])
    assert first["fid"] == pytest.approx(ref, rel=1e-6, abs=1e-8)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    _TinyFeatures.calls = 0
    cfg.output = str(tmp_path / "m2.csv")
    second = run_evaluation(cfg, progress=False)
    assert _TinyFeatures.calls == 12  # the real set came from the cache
    assert second["fid"] == pytest.approx(first["fid"], rel=1e-9)
    same = EvalConfig(**{**cfg.__dict__, "pred": str(gt), "output": str(tmp_path / "m3.csv")})
    assert abs(run_evaluation(same, progress=False)["fid"]) < 1e-6


def test_distributed_evaluation_equals_single_process(tmp_path):
    pytest.importorskip("ray")
    from pipelines.evaluate import ray_results

    pred, gt = make_phoenix(tmp_path)
    kp = make_keypoints(tmp_path / "kp")
    base = dict(metrics=("ssim", "psnr", "hand_ssim", "flicker"), keypoints=str(kp))
    single = run_evaluation(
        EvalConfig(str(pred), str(gt), str(tmp_path / "single.csv"), **base), progress=False
    )
    ray_run = run_evaluation(
        EvalConfig(str(pred), str(gt), str(tmp_path / "ray.csv"), **base),
        progress=False,
        workers=2,
        distributed=ray_results,
    )
    assert (tmp_path / "single.csv").read_text() == (tmp_path / "ray.csv").read_text()
    assert ray_run["hands_skipped"] == single["hands_skipped"] == len(VIDEOS)
    assert ray_run["mean"] == single["mean"]


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--fid-variant", "--keypoints", "examples:", "hand_pe", "--workers"):
        assert needle in text


def test_workers_without_a_distributed_runner_is_one_line(tmp_path, capsys):
    """The library's own entry point has no Ray runner: asking it for workers is a user
    error naming the command that has one (the `signgen` console script, pipelines.app)."""
    pred, gt = make_phoenix(tmp_path)
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "m.csv"),
               "--metrics", "ssim", "--workers", "2"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evaluate on Ray" in err[0] and "pipelines.app" in err[0]
    assert not (tmp_path / "m.csv").exists()


# ---- FVD ---------------------------------------------------------------------------------------
FVD_VIDEOS = {"a": 16, "b": 17, "short": 5}  # "short" is left out of FVD


@pytest.fixture(scope="module")
def fvd_world(tmp_path_factory):
    """Generated and real 16+ frame clips, and a tiny random I3D saved as a state dict, the
    way load_i3d reads the real network's weights (same structure, widths / 16). He-normal
    convolutions keep the input's signal alive through the 60 random layers (the default
    init shrinks it to ~1e-6 of the logits, leaving every FVD ~0)."""
    from torch import nn

    from signgen.metrics.video import InceptionI3d

    root = tmp_path_factory.mktemp("fvd")
    pred, gt = make_phoenix(root, FVD_VIDEOS, seed=1)
    torch.manual_seed(3)
    net = InceptionI3d(width_divisor=16).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if isinstance(m, nn.BatchNorm3d):  # non-trivial batch-norm statistics
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    weights = root / "tiny_i3d.pt"
    torch.save(net.state_dict(), weights)
    return root, pred, gt, weights


def _clip(folder: Path, video: str) -> np.ndarray:
    return np.stack([_read(f) for f in sorted((folder / video).glob("*.png"))])  # (T, H, W, 3)


def test_fvd_in_the_summary_is_fvdstats_on_the_same_clips(fvd_world, capsys):
    from signgen.metrics.video import load_fvd

    root, pred, gt, weights = fvd_world
    out = root / "m.csv"
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "ssim,fvd",
               "--fvd-weights", str(weights), "--batch-size", "6", "--no-progress",
               "-o", str(out)])  # fmt: skip
    assert rc == 0
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    # Reference: FVDStats fed the whole clips directly (it keeps their first 16 frames).
    ref = load_fvd(weights)
    for video in sorted(FVD_VIDEOS):
        ref.add(_clip(pred, video), _clip(gt, video))
    assert ref.pred.n == 2 and ref.skipped == 1
    assert summary["fvd"] == pytest.approx(ref.fvd(), rel=1e-9)
    assert summary["fvd"] > 1e-3  # noisy predictions are not the real clips
    assert summary["mean"]["fvd"] == summary["fvd"]
    assert (summary["fvd_clips"], summary["fvd_skipped"]) == (2, 1)
    assert ref.weights[:16] in summary["implementations"]["fvd"]
    assert "fvd" in capsys.readouterr().out
    # The same folder on both sides: the feature Gaussians coincide, FVD is 0.
    rc = main(["evaluate", "--pred", str(gt), "--gt", str(gt), "--metrics", "fvd",
               "--fvd-weights", str(weights), "--no-progress", "-o", str(root / "same.csv")])  # fmt: skip
    assert rc == 0
    same = json.loads((root / "same.summary.json").read_text())
    assert abs(same["fvd"]) < 1e-6 * summary["fvd"]


@pytest.mark.parametrize(
    ("weights", "needle"),
    [
        (None, "--fvd-weights"),
        ("absent.pt", "does not exist"),
        ("garbage.pt", "without running code"),
        ("wrong.pt", "does not match the I3D"),
    ],
)
def test_fvd_weights_errors_are_one_line_and_write_nothing(fvd_world, tmp_path, capsys,
                                                           weights, needle):  # fmt: skip
    _, pred, gt, _ = fvd_world
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "wrong.pt")
    out = tmp_path / "m.csv"
    argv = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "ssim,fvd",
            "--no-progress", "-o", str(out)]  # fmt: skip
    if weights:
        argv += ["--fvd-weights", str(tmp_path / weights)]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.count("\n") == 1, err
    assert not out.exists() and not out.with_suffix(".summary.json").exists()


def test_fvd_needs_two_clips_long_enough(tmp_path, capsys):
    pred, gt = make_phoenix(tmp_path, {"a": 16, "b": 4})
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"never read: the clips are checked first")
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "fvd",
               "--fvd-weights", str(weights), "-o", str(tmp_path / "m.csv")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "2 videos of 16+ frames" in err and "1 of 2" in err


def test_distributed_fvd_equals_single_process(fvd_world, tmp_path):
    pytest.importorskip("ray")
    from pipelines.evaluate import ray_results

    _, pred, gt, weights = fvd_world
    base = dict(metrics=("ssim", "flicker", "fvd"), fvd_weights=str(weights), batch_size=6)
    single = run_evaluation(EvalConfig(str(pred), str(gt), str(tmp_path / "s.csv"), **base),
                            progress=False)  # fmt: skip
    ray_run = run_evaluation(EvalConfig(str(pred), str(gt), str(tmp_path / "r.csv"), **base),
                             progress=False, workers=2, distributed=ray_results)  # fmt: skip
    assert ray_run["fvd"] == pytest.approx(single["fvd"], rel=1e-9)
    assert (ray_run["fvd_clips"], ray_run["fvd_skipped"]) == (2, 1)
    assert (tmp_path / "s.csv").read_text() == (tmp_path / "r.csv").read_text()
