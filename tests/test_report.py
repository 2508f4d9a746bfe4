"""`signgen report`: one self-contained HTML file, checked in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from signgen.cli import main
from signgen.metrics.evaluate import EvalConfig, run_evaluation

H, W = 72, 64


def _make_eval(root: Path) -> Path:
    """Two signers, three short clips, SSIM/PSNR/flicker computed by `signgen evaluate`."""
    rng = np.random.default_rng(0)
    noise = {"clipA": 10, "clipB": 60, "clipC": 30}
    for video, amp in noise.items():
        for side in ("gt", "pred"):
            (root / side / video).mkdir(parents=True)
        for i in range(3):
            yy, xx = np.mgrid[0:H, 0:W]
            gt = np.stack([xx * 4, yy * 3, np.full_like(xx, 40 * i + 60)], -1) % 256
            pred = np.clip(gt + rng.integers(-amp, amp, gt.shape), 0, 255)
            Image.fromarray(gt.astype(np.uint8)).save(
                root / "gt" / video / f"images{i + 1:04d}.png"
            )
            Image.fromarray(pred.astype(np.uint8)).save(
                root / "pred" / video / f"images{i + 1:04d}.png"
            )
    corpus = root / "corpus.csv"
    corpus.write_text(
        "name|video|start|end|speaker|orth|translation\n"
        "clipA|clipA/1/*.png|-1|-1|Signer01|A|a\nclipB|clipB/1/*.png|-1|-1|Signer05|B|b\n"
        "clipC|clipC/1/*.png|-1|-1|Signer05|C|c\n"
    )
    out = root / "metrics.csv"
    run_evaluation(
        EvalConfig(
            str(root / "pred"), str(root / "gt"), str(out), metrics=("ssim", "psnr", "flicker"),
            corpus=str(corpus),
        ),
        progress=False,
    )  # fmt: skip
    return out


def test_report_html_is_self_contained(tmp_path):
    metrics = _make_eval(tmp_path)
    out = tmp_path / "report.html"
    assert main(["report", str(metrics), "-o", str(out), "--worst", "2"]) == 0
    text = out.read_text()
    assert "<style>" in text and "FPDM B6 (paper, Table 4)" in text
    for number in ("0.8860", "0.6816", "21.43", "5.129"):  # the paper's reference row
        assert number in text
    assert "Signer01" in text and "Signer05" in text
    # no external resources: every src is inline data
    assert re.findall(r"""src=['"](?!data:)""", text) == []
    assert "<link" not in text and "<script" not in text
    assert text.count("data:image/png;base64,") >= 4  # 2 plots + 2 gallery strips
    # the worst clip (most noise) comes first in the gallery
    gallery = text.split("Worst clips")[1]
    assert gallery.index("clipB") < gallery.index("clipC")
    assert "structural_similarity" in text  # implementations are listed


def test_report_shows_fvd_and_temporal_consistency_per_signer(tmp_path):
    """Signer05's row has the mean over its two clips of each clip's temporal consistency
    difference and flicker error (the summary's per-clip values, from the frames); the
    summary's FVD is in the overall table."""
    import json

    import pandas as pd

    from signgen.metrics.report import render_report

    metrics = _make_eval(tmp_path)
    summary_file = tmp_path / "metrics.summary.json"
    summary = json.loads(summary_file.read_text())
    clips = [c for c in summary["per_clip"] if c["signer"] == "Signer05"]
    assert len(clips) == 2
    tc = np.mean([c["temporal_consistency_diff"] for c in clips])
    fe = np.mean([c["flicker_error"] for c in clips])
    assert summary["per_signer"]["Signer05"]["temporal_consistency_diff"] == pytest.approx(tc)
    assert summary["per_signer"]["Signer05"]["flicker_error"] == pytest.approx(fe)
    summary["mean"]["fvd"] = 123.4567
    text = render_report(pd.read_csv(metrics), summary, worst=0)
    table = text.split("id='per-signer'")[1].split("</table>")[0]
    assert "temporal_consistency_diff" in table and "flicker_error" in table
    row = table.split("Signer05")[1].split("</tr>")[0]
    assert f"{tc:.3f}" in row and f"{fe:.3f}" in row
    assert "FVD (I3D, StyleGAN-V convention)" in text and "123.457" in text


def test_report_rejects_a_non_metrics_file(tmp_path, capsys):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["report", str(bad), "-o", str(tmp_path / "r.html")]) == 2
    assert "not a `signgen evaluate` table" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def _chromium() -> str:
    """Path of Debian's chromium, installing it when possible (root, package registry)."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and apt-get is unavailable (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            check=True, capture_output=True, env=env, timeout=1200,
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"could not install chromium: {exc}")
    path = shutil.which("chromium")
    if not path:
        pytest.skip("chromium installed but not on PATH")
    return path


def _chromium_args(tmp_path: Path) -> list[str]:
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
    ]  # fmt: skip


@pytest.mark.browser
def test_report_renders_in_headless_chromium(tmp_path):
    chromium = _chromium()
    metrics = _make_eval(tmp_path)
    html_path = tmp_path / "report.html"
    assert main(["report", str(metrics), "-o", str(html_path)]) == 0
    url = html_path.resolve().as_uri()
    shot = tmp_path / "shot.png"
    args = [chromium, *_chromium_args(tmp_path)]
    subprocess.run(
        [*args, f"--screenshot={shot}", "--window-size=1280,2000", url],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2000, 1280)
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 500  # text, tables, plots and frames, not a blank page
    not_white = (img < 245).any(axis=-1).mean()
    assert 0.05 < not_white < 0.95
    dom = subprocess.run(
        [*args, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=180
    ).stdout
    assert "FPDM B6 (paper, Table 4)" in dom and "Signer05" in dom
    assert 'id="table4"' in dom and 'id="per-signer"' in dom
