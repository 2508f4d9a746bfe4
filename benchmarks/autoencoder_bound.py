"""How good can a model on a given autoencoder and resolution be? Upper bounds vs copy.

Any FPDM model renders at its model resolution through its autoencoder, and its output
is resized back to the clip's native size before it is scored. Passing the *target*
frames through that same path (letterbox + encode + decode + inverse letterbox) gives the
best SSIM / Hand SSIM a perfect denoiser could reach. This script measures that bound, in
one run and on the same held-out synthetic clips, for

* the lossless patch autoencoder (``vae.kind: patch``) at several model resolutions:
  the cost of the resolution alone (resampling);
* each learned AutoencoderKL folder given with ``--vae`` at its resolution;
* copying the first frame, the baseline a model must beat.

    .venv/bin/python benchmarks/autoencoder_bound.py --world runs/demo/world --clips 6 \\
        --vae runs/demo/vae/export/vae

Metrics as in synthetic_quality.py (SSIM window 11 on the 260x210 frames; Hand SSIM on
60x60 crops at the middle knuckles). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result
from synthetic_quality import load_clips, score, vae_reconstruction

ROOT = Path(__file__).resolve().parents[1]


class _Path:
    """The attributes of an FPDMPipeline that vae_reconstruction reads: its VAE and its image
    processor (the letterbox geometry of signgen's models) at ``resolution``."""

    def __init__(self, vae: torch.nn.Module, resolution: tuple[int, int]) -> None:
        from signgen.models.processor import FPDMImageProcessor

        self.vae = vae.eval()
        self.image_processor = FPDMImageProcessor(resolution=resolution)
        self.detail_transfer = 0.0
        self.device = torch.device("cpu")
        self.dtype = torch.float32


def bound(path: _Path, clips: list[dict]) -> tuple[float, float]:
    s, h = [], []
    for c in clips:
        r = score(vae_reconstruction(path, c["frames"]), c["frames"], c["keypoints"].points)
        s.append(r["ssim"])
        h.append(r["hand_ssim"])
    return float(np.mean(s)), float(np.mean(h))


def main(argv: list[str] | None = None) -> int:
    from signgen.models.modules import PatchAutoencoder, load_vae

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=Path, required=True, help="`signgen prepare synthetic` output")
    ap.add_argument("--clips", type=int, default=6, help="test clips (default: 6)")
    ap.add_argument("--resolutions", nargs="+", default=["80x64", "128x104", "160x128", "256x208"],
                    help="model resolutions HxW for the patch autoencoder")  # fmt: skip
    ap.add_argument("--vae", type=Path, nargs="*", default=[], help="AutoencoderKL folders")
    ap.add_argument("--vae-resolution", default="80x64", help="their model resolution HxW")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "autoencoder_bound.md"
    )
    args = ap.parse_args(argv)

    def hw(text: str) -> tuple[int, int]:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w

    t0 = time.perf_counter()
    clips = load_clips(args.world, args.clips)
    rows: list[tuple[str, float, float]] = []
    copy = [score(np.repeat(c["frames"][:1], len(c["frames"]), 0), c["frames"],
                  c["keypoints"].points) for c in clips]  # fmt: skip
    rows.append(("copy first frame", float(np.mean([r["ssim"] for r in copy])),
                 float(np.mean([r["hand_ssim"] for r in copy]))))  # fmt: skip
    for res in args.resolutions:
        h, w = hw(res)
        rows.append(
            (
                f"patch autoencoder (lossless) at {h}x{w}",
                *bound(_Path(PatchAutoencoder(4), (h, w)), clips),
            )
        )
        print(rows[-1], flush=True)
    for folder in args.vae:
        h, w = hw(args.vae_resolution)
        rows.append(
            (f"AutoencoderKL {folder} at {h}x{w}", *bound(_Path(load_vae(folder), (h, w)), clips))
        )
        print(rows[-1], flush=True)

    signers = sorted({c["signer"] for c in clips})
    lines = ["# Autoencoder and resolution bounds (held-out synthetic signers)", "",
             "Command: `.venv/bin/python benchmarks/" + Path(__file__).name + " "
             + " ".join(sys.argv[1:] if argv is None else argv) + "`", "",
             f"Clips: {len(clips)} test clips ({', '.join(signers)}), every frame scored at 260x210. "
             "Each row passes the target frames through the model's input/output path; the "
             "result is the best any denoiser on it can score.", "",
             "| path | SSIM | Hand SSIM |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {name} | {s:.3f} | {hs:.3f} |" for name, s, hs in rows]
    lines += ["", f"Seconds: {time.perf_counter() - t0:.0f}", "", "Machine:"]
    lines += [f"- {k}: {v}" for k, v in machine().items()]
    write_result(args.out, lines)
    print(
        json.dumps({name: {"ssim": round(s, 4), "hand_ssim": round(hs, 4)} for name, s, hs in rows})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
