"""MCLD vs plain FPDM on held-out synthetic clips, side by side in one run.

Both models are the demo recipe (same data, steps, optimiser, seed; the MCLD one adds the
focal tokens of the source's face and hands, focal dropout and face/hand loss weights:
configs/train/demo_mcld.yaml). Clips, resolution and the SSIM / Hand SSIM definitions are
those of benchmarks/synthetic_quality.py (imported from it), plus

* Face SSIM: SSIM (same definition) of a 60x60 patch centred on the mean of the
  ground-truth face keypoints (23-90, score > 0, at least 3 points), clamped inside the
  frame, as Hand SSIM does for the hands; frames without a face are skipped.

    .venv/bin/python benchmarks/mcld_quality.py --world runs/demo/world \
        --model runs/demo/fpdm_b6/export --mcld runs/demo/fpdm_mcld/export

The last line printed is one JSON object with the keys model_ssim, model_hand_ssim,
model_face_ssim, mcld_ssim, mcld_hand_ssim, mcld_face_ssim (and copy_* for reference).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_quality import load_clips, score  # noqa: E402  (the shared definitions)

FACE_PATCH = 60
MIN_FACE_POINTS = 3


def face_ssim(pred: np.ndarray, gt: np.ndarray, points: np.ndarray) -> tuple[float, int]:
    """Mean face-patch SSIM of uint8 (T, H, W, 3) clips and the number of frames scored."""
    from signgen.keypoints.layout import FACE
    from signgen.metrics.hand import crop_origin
    from signgen.metrics.ssim import ssim_uint8

    h, w = gt.shape[1:3]
    crops_p, crops_g = [], []
    for t in range(len(gt)):
        face = points[t, FACE.start : FACE.stop]
        ok = face[:, 2] > 0
        if ok.sum() < MIN_FACE_POINTS:
            continue
        cx, cy = face[ok, 0].mean(), face[ok, 1].mean()
        x1, y1 = crop_origin(cx, w, FACE_PATCH), crop_origin(cy, h, FACE_PATCH)
        crops_p.append(pred[t, y1 : y1 + FACE_PATCH, x1 : x1 + FACE_PATCH])
        crops_g.append(gt[t, y1 : y1 + FACE_PATCH, x1 : x1 + FACE_PATCH])
    if not crops_p:
        return float("nan"), 0
    p = torch.from_numpy(np.stack(crops_p)).permute(0, 3, 1, 2).contiguous()
    g = torch.from_numpy(np.stack(crops_g)).permute(0, 3, 1, 2).contiguous()
    return float(ssim_uint8(p, g, "ssim").mean()), len(crops_p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=Path, required=True, help="`signgen prepare synthetic` output")
    ap.add_argument("--model", type=Path, required=True, help="plain FPDM export folder")
    ap.add_argument("--mcld", type=Path, required=True, help="MCLD export folder (same budget)")
    ap.add_argument("--clips", type=int, default=None, help="at most this many test clips")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps (default: 20)")
    ap.add_argument("--guidance", type=float, nargs=2, default=(2.0, 2.0))
    ap.add_argument("--guidance-focal", type=float, default=None,
                    help="MCLD focal guidance (default: the model's)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mcld_quality")
    args = ap.parse_args(argv)

    from signgen.sampling.pipeline import FPDMPipeline

    t0 = time.perf_counter()
    clips = load_clips(args.world, args.clips)
    systems = {"model": FPDMPipeline.from_pretrained(args.model),
               "mcld": FPDMPipeline.from_pretrained(args.mcld)}  # fmt: skip
    assert systems["mcld"].focal_adapter is not None, f"{args.mcld} is not an MCLD model"
    kw = {"num_inference_steps": args.steps, "guidance": tuple(args.guidance), "seed": 0,
          "batch_size": 16}  # fmt: skip
    per: dict[str, list[tuple[float, float, int, float, int]]] = {k: [] for k in ("copy", *systems)}
    for clip in clips:
        gt, kp = clip["frames"], clip["keypoints"]
        outs = {"copy": np.repeat(gt[:1], len(gt), axis=0)}
        outs["model"] = systems["model"](gt[0], kp, **kw)
        # The source frame is frame 0 of the clip: its keypoints locate the face and hands.
        outs["mcld"] = systems["mcld"](gt[0], kp, **kw, guidance_focal=args.guidance_focal,
                                       source_points=kp.points[0])  # fmt: skip
        for name, pred in outs.items():
            s, hs = score(pred, gt, kp.points)
            fs, nf = face_ssim(pred, gt, kp.points)
            per[name].append((s, hs, len(gt), fs, nf))
        print(f"{clip['video']}: " + ", ".join(
            f"{k} {per[k][-1][0]:.3f}/{per[k][-1][1]:.3f}/{per[k][-1][3]:.3f}" for k in per
        ), flush=True)  # fmt: skip

    def mean(name: str, i: int, n_i: int) -> float:
        v = np.array([r[i] for r in per[name]])
        n = np.array([r[n_i] for r in per[name]], dtype=float)
        ok = np.isfinite(v) & (n > 0)
        return float((v[ok] * n[ok]).sum() / n[ok].sum())

    result: dict = {}
    for k in per:
        result[f"{k}_ssim"] = mean(k, 0, 2)
        result[f"{k}_hand_ssim"] = mean(k, 1, 2)
        result[f"{k}_face_ssim"] = mean(k, 3, 4)
    result["clips"] = len(clips)
    result["frames"] = int(sum(len(c["frames"]) for c in clips))
    result["size"] = "x".join(str(v) for v in clips[0]["frames"].shape[1:3])
    result["test_signers"] = sorted({c["signer"] for c in clips})
    result["seconds"] = round(time.perf_counter() - t0, 1)
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps({**meta, **result}, indent=2))
    rows = [("FPDM demo model (B6)", "model"), ("MCLD, same budget", "mcld"),
            ("copy first frame", "copy")]  # fmt: skip
    lines = [
        "# MCLD vs FPDM on the synthetic world (held-out signers)",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']}",
        f"- clips: {result['clips']} test clips, {result['frames']} frames, signers "
        f"{', '.join(result['test_signers'])}; evaluated at {result['size']} (H x W)",
        "- SSIM: Gaussian 11/1.5, data range 255 (signgen.metrics); Hand SSIM: 60x60 at the "
        "ground-truth middle knuckles; Face SSIM: 60x60 at the mean ground-truth face point",
        f"- sampling: DDIM {args.steps} steps, guidance {tuple(args.guidance)}, focal "
        f"guidance {args.guidance_focal if args.guidance_focal is not None else 'model default'}",
        "",
        "| system | SSIM | Hand SSIM | Face SSIM |",
        "|---|---|---|---|",
        *[f"| {label} | {result[f'{k}_ssim']:.4f} | {result[f'{k}_hand_ssim']:.4f} | "
          f"{result[f'{k}_face_ssim']:.4f} |" for label, k in rows],
    ]  # fmt: skip
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
