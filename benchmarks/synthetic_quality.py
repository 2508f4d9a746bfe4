"""Quality of the demo model on held-out synthetic clips, against two baselines, in one run.

Clips: the synthetic world's test split (its signers are not seen in training when the
world has >= 3 signers). Source = frame 0, targets = every frame, evaluated at the
native 260x210 (H x W), like Phoenix.

Rows:
* model      the demo model (FPDMPipeline, cumulative guidance, DDIM)
* copy       copy the first frame to every frame
* nopose     the same model with the pose condition replaced by its null (zero pose
             features) in every guidance branch
* b3 / b6    the miniature ablation when --b3 is given: FPDM trained without IPF (B3) vs
             with the source-enhanced IPF (B6 = the model), same budget
* vae        the target frames through the model's autoencoder (encode, decode) at the model
             resolution, then the model's source detail transfer: the upper bound of any
             model built on this VAE and this render path
* nodetail   when the model has a source detail transfer (signgen.sampling.detail): the
             same renders without it, i.e. the model's frames merely resized back
* mcld       with --mcld: the same recipe plus multi-focal (face/hand) conditioning,
             same budget (configs/train/demo_mcld.yaml); its source keypoints are the
             clip's first-frame keypoints

Metrics (every row):
* SSIM: Gaussian window 11, sigma 1.5, data range 255 (signgen.metrics.ssim);
* Hand SSIM: 60x60 crops at the ground-truth middle knuckles (signgen.metrics.hand);
* Face SSIM: SSIM of a 60x60 patch centred on the mean of the ground-truth face
  keypoints (23-90, score > 0, at least 3 points), clamped inside the frame as Hand SSIM
  is; frames without a face are skipped.

    .venv/bin/python benchmarks/synthetic_quality.py --world runs/demo/world \
        --model signgen/assets/demo_model --b3 runs/demo/fpdm_b3/export \
        --mcld runs/demo/fpdm_mcld/export --runs runs/demo

The last line printed is one JSON object with the figures: ``<row>_ssim``,
``<row>_hand_ssim`` and ``<row>_face_ssim`` for every row above; ``margins``, the model's
per-clip paired margins over each baseline with a 95% bootstrap interval over clips
(:func:`signgen.metrics.stats.paired_margin`); ``beats_baselines`` (the model's mean above both baselines' on
SSIM and Hand SSIM) and ``clear_margin`` (every one of those intervals above 0).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from signgen.metrics.stats import paired_margin, weighted_mean

ROOT = Path(__file__).resolve().parents[1]


def load_clips(world: Path, max_clips: int | None, split: str = "test") -> list[dict]:
    from PIL import Image

    from signgen.data.pairs import frame_path, read_manifest

    prepared = world / "prepared"
    entries = [e for e in read_manifest(prepared).values() if e.split == split]
    entries = entries[:max_clips] if max_clips else entries
    clips = []
    for e in entries:
        frames = np.stack([np.asarray(Image.open(frame_path(e, t)).convert("RGB"))
                           for t in range(e.frames)])  # fmt: skip
        seq = json.loads(e.keypoints_file.read_text())
        from signgen.keypoints.sequence import from_json_dict

        clips.append({"video": e.video, "signer": e.signer, "frames": frames,
                      "keypoints": from_json_dict(seq, str(e.keypoints_file))})  # fmt: skip
    return clips


@torch.no_grad()
def vae_reconstruction(pipe, frames: np.ndarray, source: np.ndarray | None = None) -> np.ndarray:
    """uint8 (T, H, W, 3) -> the same frames through the model's letterbox + VAE encode/decode
    + inverse letterbox (+ the model's detail transfer from ``source``, the first frame):
    what the model would output if its latents were perfect, i.e. an upper bound for any
    model on this VAE at this resolution."""
    from signgen.models.preprocess import tensor_to_uint8
    from signgen.sampling.detail import DetailTransfer

    proc = pipe.image_processor
    x = proc.preprocess(frames).to(pipe.device, pipe.dtype)
    out = []
    for chunk in x.split(16):
        z = pipe.vae.encode(chunk).latent_dist.mode()
        out.append(pipe.vae.decode(z).sample.float())
    rec = (torch.cat(out) + 1) / 2  # [0, 1]
    rec = torch.cat(proc.postprocess(rec, [(frames.shape[2], frames.shape[1])] * len(rec)))
    if source is not None and pipe.detail_transfer:
        rec = DetailTransfer(pipe.detail_transfer).bind(source, proc)(rec)
    return tensor_to_uint8(rec)


class _NoPose:
    """A denoiser with the pose condition nulled in every guidance branch (the rest is the
    wrapped denoiser's)."""

    def __init__(self, denoiser) -> None:
        self.denoiser = denoiser

    def encode_conditions(self, *args, **kwargs):
        kwargs["drop_pose"] = torch.ones_like(kwargs["drop_pose"])
        return self.denoiser.encode_conditions(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.denoiser, name)


def no_pose(pipe):
    """The same pipeline (a pipeline of its own) with the pose condition nulled."""
    pipe.denoiser = _NoPose(pipe.denoiser)
    return pipe


FACE_PATCH = 60
MIN_FACE_POINTS = 3


def _ssim(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-image SSIM of uint8 (N, H, W, 3) stacks."""
    from signgen.metrics.ssim import ssim_uint8

    p = torch.from_numpy(np.ascontiguousarray(pred)).permute(0, 3, 1, 2).contiguous()
    g = torch.from_numpy(np.ascontiguousarray(gt)).permute(0, 3, 1, 2).contiguous()
    return ssim_uint8(p, g, "ssim").numpy()


def face_ssim(pred: np.ndarray, gt: np.ndarray, points: np.ndarray) -> tuple[float, int]:
    """Mean face-patch SSIM of uint8 (T, H, W, 3) clips and the number of frames scored."""
    from signgen.keypoints.layout import FACE
    from signgen.metrics.hand import crop_origin

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
    return float(_ssim(np.stack(crops_p), np.stack(crops_g)).mean()), len(crops_p)


def score(pred: np.ndarray, gt: np.ndarray, points: np.ndarray) -> dict[str, float]:
    """SSIM, Hand SSIM and Face SSIM of uint8 (T, H, W, 3) clips, with their frame counts."""
    from signgen.metrics.hand import hand_crop_boxes, hand_ssim

    s = _ssim(pred, gt)
    h, w = gt.shape[1:3]
    boxes = np.stack([hand_crop_boxes(points[t], h, w) for t in range(len(points))])
    p = torch.from_numpy(pred).permute(0, 3, 1, 2).contiguous()
    g = torch.from_numpy(gt).permute(0, 3, 1, 2).contiguous()
    hs, present = hand_ssim(p, g, boxes)
    keep = present > 0
    fs, nf = face_ssim(pred, gt, points)
    return {"ssim": float(s.mean()), "n": len(gt),
            "hand_ssim": float(hs[keep].mean()) if keep.any() else float("nan"), "n_hand": len(gt),
            "face_ssim": fs, "n_face": nf}  # fmt: skip


def loss_curves(runs: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [("vae", "VAE"), ("ipf", "IPF (stage 1)"), ("fpdm_b6", "FPDM B6"),
              ("fpdm_b3", "FPDM B3"), ("fpdm_mcld", "FPDM MCLD")]  # fmt: skip
    found = [(d, t) for d, t in stages if (runs / d / "logs" / "train.csv").is_file()]
    if not found:
        return
    fig, axes = plt.subplots(1, len(found), figsize=(4 * len(found), 3.2))
    for ax, (d, title) in zip(np.atleast_1d(axes), found, strict=True):
        rows = list(csv.DictReader((runs / d / "logs" / "train.csv").open()))
        ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], lw=1)
        ev = runs / d / "logs" / "eval.csv"
        if ev.is_file():
            er = list(csv.DictReader(ev.open()))
            key = next((k for k in ("dev_loss", "dev_mse") if k in er[0]), None)
            if key:
                ax.plot([int(r["step"]) for r in er], [float(r[key]) for r in er], "o",
                        label=key)  # fmt: skip
                ax.legend()
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_yscale("log")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)


ROWS = {  # key -> label in the report
    "model": "model (B6)",
    "copy": "copy first frame",
    "nopose": "model, pose zeroed",
    "b3": "ablation B3 (no IPF)",
    "nodetail": "model (B6) without detail transfer",
    "vae": "the model's autoencoder on the target (bound)",
    "mcld": "MCLD (focal face/hands), same budget",
}


# Over 80 lines: a benchmark script; every system is rendered, scored and reported in the
# order the result file lists them, which reads best top to bottom.
def main(argv: list[str] | None = None) -> int:
    # Long: a benchmark script's options, its side-by-side runs and its result table, read
    # top to bottom.
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=Path, required=True, help="`signgen prepare synthetic` output")
    ap.add_argument("--model", type=Path, default=ROOT / "signgen" / "assets" / "demo_model")
    ap.add_argument("--b3", type=Path, default=None, help="export folder of the no-IPF model")
    ap.add_argument("--mcld", type=Path, default=None, help="export folder of the MCLD model")
    ap.add_argument("--runs", type=Path, default=None, help="training runs (loss curves)")
    ap.add_argument("--clips", type=int, default=None, help="at most this many test clips")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps (default: 20)")
    ap.add_argument("--guidance", type=float, nargs=2, default=None, metavar=("W_SRC", "W_FUSE"),
                    help="cumulative guidance (default: each model's own)")  # fmt: skip
    ap.add_argument("--guidance-focal", type=float, default=None,
                    help="MCLD focal guidance (default: the MCLD model's)")  # fmt: skip
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "synthetic_quality"
    )
    args = ap.parse_args(argv)

    from signgen.sampling.pipeline import FPDMPipeline

    t0 = time.perf_counter()
    clips = load_clips(args.world, args.clips)
    systems = {"model": FPDMPipeline.from_pretrained(args.model),
               "nopose": no_pose(FPDMPipeline.from_pretrained(args.model))}  # fmt: skip
    if args.b3:
        systems["b3"] = FPDMPipeline.from_pretrained(args.b3)
    if args.mcld:
        systems["mcld"] = FPDMPipeline.from_pretrained(args.mcld)
        if systems["mcld"].focal_adapter is None:
            ap.error(f"--mcld {args.mcld} is not an MCLD model (no focal adapter)")
    per: dict[str, list[dict[str, float]]] = {k: [] for k in ["copy", "vae", *systems]}
    if systems["model"].detail_transfer:
        per["nodetail"] = []
    guidance = args.guidance  # None: each model's own
    kw = {"steps": args.steps, "guidance": guidance, "seed": 0, "batch_size": 16}
    samples = []
    for clip in clips:
        gt, kp = clip["frames"], clip["keypoints"]
        outs = {"copy": np.repeat(gt[:1], len(gt), axis=0),
                "vae": vae_reconstruction(systems["model"], gt, gt[0])}  # fmt: skip
        for name, pipe in systems.items():
            extra = {}
            if pipe.focal_adapter is not None:  # the source frame is frame 0 of the clip
                extra = {"source_points": kp.points[0], "guidance_focal": args.guidance_focal}
            outs[name] = pipe(gt[0], kp, **kw, **extra)
        if systems["model"].detail_transfer:
            outs["nodetail"] = systems["model"](gt[0], kp, **kw, detail_transfer=0)
        for name, pred in outs.items():
            per[name].append(score(pred, gt, kp.points))
        t = len(gt) // 2
        samples.append(np.concatenate([gt[0], outs["model"][t], outs["nopose"][t],
                                       gt[t]], axis=1))  # fmt: skip
        print(f"{clip['video']}: " + ", ".join(
            f"{k} {per[k][-1]['ssim']:.3f}/{per[k][-1]['hand_ssim']:.3f}" for k in per
        ), flush=True)  # fmt: skip

    result: dict = {}
    for k in per:
        result[f"{k}_ssim"] = weighted_mean(per[k], "ssim", "n")
        result[f"{k}_hand_ssim"] = weighted_mean(per[k], "hand_ssim", "n_hand")
        result[f"{k}_face_ssim"] = weighted_mean(per[k], "face_ssim", "n_face")
    if args.b3:
        for m in ("ssim", "hand_ssim", "face_ssim"):
            result[f"b6_{m}"] = result[f"model_{m}"]
    # The target of the training issue: the model beats both baselines on both metrics.
    result["beats_baselines"] = all(
        result[f"model_{m}"] > max(result[f"copy_{m}"], result[f"nopose_{m}"])
        for m in ("ssim", "hand_ssim")
    )
    # How clear the margin is: per-clip paired differences against each baseline, with a
    # bootstrap confidence interval over clips (paired_margin). "Clear" = the interval's
    # lower end above 0 against both baselines on both metrics.
    margins = {f"{m}_vs_{b}": paired_margin(per["model"], per[b], m, n)
               for m, n in (("ssim", "n"), ("hand_ssim", "n_hand")) for b in ("copy", "nopose")}  # fmt: skip
    result["margins"] = margins
    result["clear_margin"] = all(v["lo"] > 0 for v in margins.values())
    result["clips"] = len(clips)
    result["size"] = "x".join(str(v) for v in clips[0]["frames"].shape[1:3])
    result["frames"] = int(sum(len(c["frames"]) for c in clips))
    result["test_signers"] = sorted({c["signer"] for c in clips})
    result["guidance"] = list(guidance or systems["model"].default_guidance)
    result["detail_transfer"] = systems["model"].detail_transfer
    result["seconds"] = round(time.perf_counter() - t0, 1)

    from PIL import Image

    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(samples[:4], axis=0)).save(f"{args.out}_samples.png")
    if args.runs:
        loss_curves(args.runs, Path(f"{args.out}_loss.png"))
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
    }
    Path(f"{args.out}.json").write_text(json.dumps({**meta, **result}, indent=2))

    def margin(m: str) -> str:
        best = max(result[f"copy_{m}"], result[f"nopose_{m}"])
        return f"{result[f'model_{m}'] - best:+.4f}"

    lines = [
        "# Synthetic-world quality (held-out signers)",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']}",
        f"- clips: {result['clips']} test clips, {result['frames']} frames, signers "
        f"{', '.join(result['test_signers'])} (not seen in training)",
        f"- SSIM: Gaussian 11/1.5, data range 255, at {result['size']} (H x W); Hand SSIM: "
        "60x60 crops at the ground-truth middle knuckles (signgen.metrics); Face SSIM: 60x60 "
        "at the mean ground-truth face point",
        f"- source detail transfer (signgen.sampling.detail): threshold "
        f"{systems['model'].detail_transfer or 'off'} for every row of the model and its "
        "autoencoder bound",
        f"- sampling: DDIM {args.steps} steps, cumulative guidance {tuple(result['guidance'])}"
        + (" (the model's default)" if guidance is None else "")
        + (f", focal guidance {args.guidance_focal or 'model default'}" if args.mcld else ""),
        "",
        "| system | SSIM | Hand SSIM | Face SSIM |",
        "|---|---|---|---|",
        *[f"| {ROWS[k]} | {result[f'{k}_ssim']:.4f} | {result[f'{k}_hand_ssim']:.4f} | "
          f"{result[f'{k}_face_ssim']:.4f} |" for k in ROWS if f"{k}_ssim" in result],
        "",
        f"Model beats both baselines on SSIM and Hand SSIM: **{'yes' if result['beats_baselines'] else 'NO'}** "
        f"(margin over the better baseline: SSIM {margin('ssim')}, Hand SSIM {margin('hand_ssim')}).",
        "",
        "Margins per clip (model minus baseline on the same clip; 95% interval: paired "
        "bootstrap over clips, BCa):",
        "",
        "| metric | baseline | margin | 95% interval | clips won |",
        "|---|---|---|---|---|",
        *[f"| {k.split('_vs_')[0].replace('_', ' ')} | {ROWS[k.split('_vs_')[1]]} | "
          f"{v['margin']:+.4f} | [{v['lo']:+.4f}, {v['hi']:+.4f}] | {v['won']} of {v['clips']} |"
          for k, v in margins.items()],
        "",
        f"Interval above 0 against both baselines on both metrics: "
        f"**{'yes' if result['clear_margin'] else 'NO'}**.",
        "",
        f"Samples (source | model | pose zeroed | target): `{args.out.name}_samples.png`; "
        f"training loss curves: `{args.out.name}_loss.png`.",
    ]  # fmt: skip
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
