"""``signgen report``: one self-contained HTML file from ``signgen evaluate`` outputs.

Everything is inline (CSS in a <style> block, plots and frame strips as base64 PNG), so
the file can be mailed or attached to a pull request and opens in any browser offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from signgen.errors import FormatError, InputError
from signgen.fileio import atomic_write_text
from signgen.metrics import PAPER_TABLE4

log = logging.getLogger(__name__)

TABLE4 = (  # (column, header, higher is better, format)
    ("ssim", "SSIM ↑", True, "{:.4f}"),
    ("hand_ssim", "Hand SSIM ↑", True, "{:.4f}"),
    ("hand_pe", "Hand PE ↓", False, "{:.2f}"),
    ("fid", "FID ↓", False, "{:.3f}"),
)
OTHER = (
    ("psnr", "PSNR ↑", "{:.3f}"),
    ("lpips", "LPIPS ↓", "{:.4f}"),
    ("hand_pe_mediapipe", "Hand PE, MediaPipe Hands (not HRNetv2) ↓", "{:.2f}"),
    ("ssim_df", "SSIM (DeepFashion, win 51) ↑", "{:.4f}"),
    ("ssim_256", "SSIM_256 (CFLD) ↑", "{:.4f}"),
    ("flicker", "flicker (generated)", "{:.3f}"),
    ("flicker_gt", "flicker (ground truth)", "{:.3f}"),
    ("flicker_ratio", "flicker ratio (1 = as steady as GT)", "{:.3f}"),
    ("flicker_error", "flicker error |generated - GT| ↓", "{:.3f}"),
    ("temporal_consistency", "temporal consistency (generated)", "{:.3f}"),
    ("temporal_consistency_gt", "temporal consistency (ground truth)", "{:.3f}"),
    ("temporal_consistency_diff", "temporal consistency, generated - GT", "{:.3f}"),
    ("fvd", "FVD (I3D, StyleGAN-V convention) ↓", "{:.3f}"),
)

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 24px 40px; color: #1d2330; background: #ffffff; }
h1 { font-size: 26px; margin-bottom: 4px; }
h2 { font-size: 19px; margin-top: 32px; border-bottom: 2px solid #3867d6; padding-bottom: 4px; }
.meta { color: #5a6275; font-size: 13px; }
table { border-collapse: collapse; margin: 10px 0; font-size: 14px; }
th, td { padding: 6px 12px; border: 1px solid #d5d9e2; text-align: right; }
th { background: #3867d6; color: #ffffff; font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
tr.ref td { background: #fff6da; font-style: italic; }
tr.run td { background: #e8f0ff; font-weight: 600; }
tr:nth-child(even) td { background-color: #f5f7fb; }
.plots img { max-width: 48%; margin: 6px 1% 6px 0; border: 1px solid #d5d9e2; }
.clip { margin: 14px 0 22px 0; }
.clip h3 { font-size: 15px; margin: 4px 0; }
.clip img { border: 1px solid #d5d9e2; image-rendering: auto; }
code, .impl td { font-family: "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12px; }
.impl td { text-align: left; }
.warn { color: #b3261e; }
"""


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, str):
        return html.escape(value)
    return fmt.format(value)


def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def load_metrics(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The per-frame table and its summary (``<stem>.summary.json``, optional)."""
    from signgen.metrics.evaluate import summary_path

    p = Path(path)
    if not p.is_file():
        raise InputError(f"metrics file not found: {p}")
    try:
        df = pd.read_parquet(p) if p.suffix.lower() == ".parquet" else pd.read_csv(p)
    except Exception as exc:
        raise FormatError(f"cannot read metrics table {p}: {exc}".splitlines()[0]) from None
    missing = {"video", "signer", "frame"} - set(df.columns)
    if missing:
        raise FormatError(
            f"{p} is not a `signgen evaluate` table (missing columns {sorted(missing)})"
        )
    s = summary_path(p)
    summary: dict[str, Any] = {}
    if s.is_file():
        try:
            summary = json.loads(s.read_text())
        except ValueError as exc:
            raise FormatError(f"{s} is not valid JSON: {exc}") from None
    else:
        log.warning("no summary %s: FID, flicker and implementations are left out", s)
    return df, summary


def _overall(df: pd.DataFrame, summary: dict[str, Any]) -> dict[str, Any]:
    from signgen.metrics.evaluate import aggregate, per_clip

    values: dict[str, Any] = aggregate(df)
    mean = summary.get("mean") or {}
    for k in ("fid", "fvd", "flicker", "flicker_gt", "flicker_ratio", "flicker_error",
              "temporal_consistency", "temporal_consistency_gt",
              "temporal_consistency_diff"):  # fmt: skip
        if k in mean:
            values[k] = mean[k]
    if "flicker" in df and "flicker_ratio" not in values:
        clips = per_clip(df)
        values["flicker_ratio"] = float(np.nanmean([c["flicker_ratio"] for c in clips]))
    return values


def _table4_html(values: dict[str, Any], summary: dict[str, Any]) -> str:
    head = "".join(f"<th>{h}</th>" for _, h, _, _ in TABLE4)
    ref = "".join(f"<td>{_fmt(PAPER_TABLE4[k], f)}</td>" for k, _, _, f in TABLE4)
    run = "".join(f"<td>{_fmt(values.get(k), f)}</td>" for k, _, _, f in TABLE4)
    variant = summary.get("fid_variant")
    note = f"FID variant: <code>{html.escape(str(variant))}</code>. " if variant else ""
    return (
        f"<table id='table4'><tr><th>method</th>{head}</tr>"
        f"<tr class='ref'><td>FPDM B6 (paper, Table 4)</td>{ref}</tr>"
        f"<tr class='run'><td>this run</td>{run}</tr></table>"
        f"<p class='meta'>{note}Hand SSIM and Hand PE average over the hands whose "
        "ground-truth knuckle is present; – means the metric was not computed.</p>"
    )


def _other_html(values: dict[str, Any]) -> str:
    rows = [(h, _fmt(values.get(k), f)) for k, h, f in OTHER if values.get(k) is not None]
    if not rows:
        return ""
    body = "".join(f"<tr><td>{h}</td><td>{v}</td></tr>" for h, v in rows)
    return f"<table><tr><th>metric</th><th>value</th></tr>{body}</table>"


def _per_signer(df: pd.DataFrame) -> pd.DataFrame:
    from signgen.metrics.evaluate import aggregate, clip_means, per_clip

    clips = per_clip(df)
    rows = []
    for signer, g in df.groupby("signer", sort=True):
        row: dict[str, Any] = {"signer": signer, "videos": g["video"].nunique(), "frames": len(g)}
        row.update(aggregate(g))
        row.pop("psnr_infinite_frames", None)
        row.update(clip_means([c for c in clips if c["signer"] == signer]))  # per-clip means
        rows.append(row)
    return pd.DataFrame(rows)


def _per_signer_html(table: pd.DataFrame) -> str:
    wanted = ("ssim", "hand_ssim", "hand_pe", "psnr", "lpips", "flicker_ratio",
              "flicker_error", "temporal_consistency_diff")  # fmt: skip
    cols = [c for c in wanted if c in table]
    fmts = {"hand_pe": "{:.2f}", "psnr": "{:.3f}", "flicker_ratio": "{:.3f}",
            "flicker_error": "{:.3f}", "temporal_consistency_diff": "{:.3f}"}  # fmt: skip
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("signer", "videos", "frames", *cols))
    body = []
    for _, r in table.iterrows():
        cells = [html.escape(str(r["signer"])), str(r["videos"]), str(r["frames"])]
        cells += [_fmt(r[c], fmts.get(c, "{:.4f}")) for c in cols]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table id='per-signer'><tr>{head}</tr>{''.join(body)}</table>"


def _plots(df: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """Per-signer plots as base64 PNGs (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from signgen.metrics.evaluate import per_clip

    out = []
    metrics = [c for c in ("ssim", "hand_ssim", "hand_pe", "psnr", "lpips") if c in table]
    if metrics:
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), dpi=100)
        axes = np.atleast_1d(axes)
        colors = plt.cm.tab10(np.arange(len(table)) % 10)
        for ax, m in zip(axes, metrics):
            ax.bar(table["signer"].astype(str), table[m].astype(float), color=colors)
            ax.set_title(f"mean {m} per signer", fontsize=10)
            ax.tick_params(axis="x", labelrotation=60, labelsize=8)
            if m in PAPER_TABLE4:
                ax.axhline(PAPER_TABLE4[m], color="#b3261e", ls="--", lw=1, label="paper")
                ax.legend(fontsize=7)
        fig.tight_layout()
        out.append(_fig_b64(fig))
        plt.close(fig)
    if "ssim" in df:
        clips = pd.DataFrame(per_clip(df))
        signers = sorted(clips["signer"].astype(str).unique())
        data = [clips.loc[clips["signer"].astype(str) == s, "ssim"].dropna() for s in signers]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(signers) + 2), 3.2), dpi=100)
        ax.boxplot(data, tick_labels=signers)
        ax.set_title("per-clip SSIM by signer", fontsize=10)
        ax.tick_params(axis="x", labelrotation=60, labelsize=8)
        fig.tight_layout()
        out.append(_fig_b64(fig))
        plt.close(fig)
    return out


def _fig_b64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _strip(pred_src, gt_src, indices: list[int], height: int = 130) -> Image.Image:
    """Ground truth (top row) over generated (bottom row) at ``indices``."""
    from signgen.metrics.io import iter_video_frames

    wanted = set(indices)
    rows: dict[str, dict[int, np.ndarray]] = {"gt": {}, "pred": {}}
    for name, src in (("gt", gt_src), ("pred", pred_src)):
        for i, frame in enumerate(iter_video_frames(src)):
            if i in wanted:
                rows[name][i] = frame
            if i >= max(indices):
                break
    tiles = []
    for i in indices:
        pair = []
        for name in ("gt", "pred"):
            f = rows[name].get(i)
            im = Image.fromarray(f) if f is not None else Image.new("RGB", (64, 80), "gray")
            w = max(1, round(im.width * height / im.height))
            pair.append(im.resize((w, height), Image.Resampling.BILINEAR))
        tiles.append(pair)
    label_w, gap = 34, 2
    width = label_w + sum(t[0].width + gap for t in tiles)
    canvas = Image.new("RGB", (width, 2 * height + gap), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((3, height // 2 - 6), "GT", fill=(20, 20, 20))
    draw.text((3, height + height // 2 - 6), "gen", fill=(20, 20, 20))
    x = label_w
    for gt_im, pred_im in tiles:
        canvas.paste(gt_im, (x, 0))
        canvas.paste(pred_im.resize(gt_im.size), (x, height + gap))
        x += gt_im.width + gap
    return canvas


def _gallery_html(df, summary, pred, gt, worst: int, strip_frames: int) -> str:
    from signgen.metrics.evaluate import per_clip
    from signgen.metrics.io import scan_videos

    if "ssim" not in df or worst <= 0:
        return "<p class='meta'>No gallery: SSIM was not computed.</p>"
    pred = pred or summary.get("pred")
    gt = gt or summary.get("gt")
    if not pred or not gt or not Path(pred).is_dir() or not Path(gt).is_dir():
        return (
            "<p class='meta warn'>No gallery: the videos were not found "
            f"(pred={html.escape(str(pred))}, gt={html.escape(str(gt))}); pass --pred/--gt.</p>"
        )
    pv, gv = scan_videos(pred, "--pred"), scan_videos(gt, "--gt")
    clips = sorted(
        (c for c in per_clip(df) if c.get("ssim") is not None and math.isfinite(c["ssim"])),
        key=lambda c: c["ssim"],
    )
    parts = []
    for c in clips[:worst]:
        key = c["video"]
        if key not in pv or key not in gv:
            continue
        frames = sorted(df.loc[df["video"] == key, "frame"].astype(int))
        pick = sorted({frames[round(j)] for j in np.linspace(0, len(frames) - 1, strip_frames)})
        img = _strip(pv[key], gv[key], pick)
        parts.append(
            f"<div class='clip'><h3>{html.escape(key)} — signer {html.escape(str(c['signer']))}"
            f", SSIM {c['ssim']:.4f}, frames {', '.join(map(str, pick))}</h3>"
            f"<img alt='ground truth over generated, {html.escape(key)}' "
            f"src='data:image/png;base64,{_png_b64(img)}'></div>"
        )
    return "".join(parts) or "<p class='meta'>No clips to show.</p>"


def _impl_html(summary: dict[str, Any]) -> str:
    impl = summary.get("implementations") or {}
    if not impl:
        return "<p class='meta'>Implementations unknown (no summary file).</p>"
    body = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in impl.items()
    )
    return (
        f"<table class='impl'><tr><th>what</th><th>implementation / version</th></tr>{body}</table>"
    )


def render_report(
    df: pd.DataFrame,
    summary: dict[str, Any],
    *,
    pred: str | None = None,
    gt: str | None = None,
    worst: int = 6,
    strip_frames: int = 6,
    title: str = "signgen evaluation",
) -> str:
    """The report as one HTML string."""
    values = _overall(df, summary)
    signers = _per_signer(df)
    plots = "".join(
        f"<img alt='per-signer plot' src='data:image/png;base64,{b}'>" for b in _plots(df, signers)
    )
    mism = summary.get("frame_count_mismatches") or []
    meta = [
        f"{len(df)} frames, {df['video'].nunique()} videos, {df['signer'].nunique()} signers",
        f"evaluated {html.escape(str(summary.get('date', '')))}",
        f"size {html.escape(str(summary.get('size') or 'ground-truth size'))}",
    ]
    if summary.get("hands_skipped") is not None:
        meta.append(f"{summary['hands_skipped']} hands skipped (GT knuckle missing)")
    warn = (
        f"<p class='warn'>{len(mism)} videos had a frame-count mismatch: "
        f"{html.escape('; '.join(mism[:5]))}</p>"
        if mism
        else ""
    )
    command = summary.get("command")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">{" · ".join(meta)}</p>
{f"<p class='meta'>command: <code>{html.escape(command)}</code></p>" if command else ""}
{warn}
<h2>Overall (paper Table 4 layout)</h2>
{_table4_html(values, summary)}
{_other_html(values)}
<h2>Per signer</h2>
{_per_signer_html(signers)}
<div class="plots">{plots}</div>
<h2>Worst clips by SSIM (ground truth over generated)</h2>
{_gallery_html(df, summary, pred, gt, worst, strip_frames)}
<h2>Metric implementations</h2>
{_impl_html(summary)}
</body></html>
"""


def write_report(
    metrics: str | Path,
    output: str | Path,
    *,
    pred: str | None = None,
    gt: str | None = None,
    worst: int = 6,
    strip_frames: int = 6,
    title: str = "signgen evaluation",
) -> Path:
    """Read ``metrics`` (+ summary) and write the HTML report atomically."""
    if Path(output).suffix.lower() not in (".html", ".htm"):
        raise InputError(f"-o must end in .html, got {output}")
    if strip_frames < 1:
        raise InputError(f"--strip-frames must be >= 1, got {strip_frames}")
    df, summary = load_metrics(metrics)
    if df.empty:
        raise InputError(f"{metrics} has no rows")
    text = render_report(
        df, summary, pred=pred, gt=gt, worst=worst, strip_frames=strip_frames, title=title
    )
    atomic_write_text(output, text)
    return Path(output)
