"""Quality of the demo model on held-out synthetic clips, against two baselines, in one run.

Clips: the synthetic world's test split (its signers are not seen in training when the
world has >= 3 signers). Source = frame 0, targets = every frame, evaluated at the
native 260x210 (H x W), like Phoenix.

Rows:
* model      the demo model (FPDMPipeline, cumulative guidance, DDIM)
* copy       copy the first frame to every frame
* nopose     the same model with the pose condition replaced by its null (zero pose
             features) in every guidance branch, and a black pose image for its source
             refiner when it has one
* norefine   when the model has a source refiner (signgen.models.refiner): the same
             renders without it, i.e. the model's frames merely resized back
* b3 / b6    the miniature ablation when --b3 is given: FPDM trained without IPF (B3) vs
             with the source-enhanced IPF (B6 = the model), same budget
* vae        the target frames through the model's autoencoder (encode, decode) at the model
             resolution, then the model's source detail transfer: the upper bound of any
             denoiser built on this VAE and this render path (a source refiner, which
             works at the output size, is not bounded by it)
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
  is; frames without a face are skipped;
* moved-region SSIM and PSNR, ghost error (signgen.metrics.regions), from the part labels
  the synthetic world writes beside its frames: SSIM map and PSNR over the pixels whose
  part label differs from the first frame's; mean absolute error (grey levels) where the
  first frame shows an arm or a hand and the target does not.

Acceptance of the demo model (read on a run without detail transfer: a model that has one
is rendered with ``--detail-transfer 0``): moved-region SSIM at least 0.15 above the
copy's, ghost error at most half the copy's, SSIM and Hand SSIM above both baselines with
paired 95% intervals above 0.

    .venv/bin/python benchmarks/synthetic_quality.py --world runs/demo/world \
        --model signgen/assets/demo_model --b3 runs/demo/fpdm_b3/export \
        --mcld runs/demo/fpdm_mcld/export --runs runs/demo

Experiments choose their recipe on dev clips: ``--split dev`` (the default is test).

The last line printed is one JSON object with the figures: ``<row>_<metric>`` for every
row above and metric in ``METRICS``; ``margins``, the model's per-clip paired margins over
each baseline with a 95% bootstrap interval over clips (:func:`signgen.metrics.stats.paired_margin`);
``beats_baselines`` (the model's mean above both baselines' on SSIM and Hand SSIM),
``clear_margin`` (every one of those intervals above 0), ``ghost_ratio`` (the model's
ghost error over the copy's) and ``acceptance`` (each criterion above, and ``met``).
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


def load_clips(
    world: Path, max_clips: int | None, split: str = "test", every: int = 1
) -> list[dict]:
    """The clips of one split: frames (T, H, W, 3), keypoints, part labels (or None).
    ``every`` > 1 keeps frames 0, every, 2 * every, ... of each clip (frame 0 stays the
    source): quicker experiment readings."""
    from dataclasses import replace

    from PIL import Image

    from signgen.data.pairs import frame_path, read_manifest
    from signgen.data.synthetic import load_part_masks, part_masks_path

    prepared = world / "prepared"
    entries = [e for e in read_manifest(prepared).values() if e.split == split]
    entries = entries[:max_clips] if max_clips else entries
    clips = []
    for e in entries:
        keep = list(range(0, e.frames, every))
        frames = np.stack([np.asarray(Image.open(frame_path(e, t)).convert("RGB"))
                           for t in keep])  # fmt: skip
        seq = json.loads(e.keypoints_file.read_text())
        from signgen.keypoints.sequence import from_json_dict

        kp = from_json_dict(seq, str(e.keypoints_file))
        kp = replace(kp, points=kp.points[keep])
        labels = None
        if part_masks_path(world, split, e.video).is_file():
            labels = load_part_masks(world, split, e.video)[keep]  # (T, H, W) part labels
        clips.append({"video": e.video, "signer": e.signer, "frames": frames, "labels": labels,
                      "keypoints": kp})  # fmt: skip
    return clips


@torch.no_grad()
def vae_reconstruction(
    pipe, frames: np.ndarray, source: np.ndarray | None = None, transfer: float | None = None
) -> np.ndarray:
    """uint8 (T, H, W, 3) -> the same frames through the model's letterbox + VAE encode/decode
    + inverse letterbox (+ the detail transfer from ``source``, the first frame, at threshold
    ``transfer``; None: the model's own): what the model would output if its latents were
    perfect, i.e. an upper bound for any model on this VAE at this resolution."""
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
    transfer = pipe.detail_transfer if transfer is None else transfer
    if source is not None and transfer:
        rec = DetailTransfer(transfer).bind(source, proc)(rec)
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
    draw = pipe.refiner_pose  # the source refiner's pose image: black
    pipe.refiner_pose = lambda points, size: torch.zeros_like(draw(points, size))
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


def score(
    pred: np.ndarray, gt: np.ndarray, points: np.ndarray, labels: np.ndarray | None = None
) -> dict[str, float]:
    """SSIM, Hand SSIM and Face SSIM of uint8 (T, H, W, 3) clips, with their frame counts;
    with the targets' part labels (T, H, W) also the moved-region SSIM and PSNR and the
    ghost error (signgen.metrics.regions), with their pixel counts."""
    from signgen.metrics.hand import hand_crop_boxes, hand_ssim
    from signgen.metrics.regions import region_scores

    s = _ssim(pred, gt)
    h, w = gt.shape[1:3]
    boxes = np.stack([hand_crop_boxes(points[t], h, w) for t in range(len(points))])
    p = torch.from_numpy(pred).permute(0, 3, 1, 2).contiguous()
    g = torch.from_numpy(gt).permute(0, 3, 1, 2).contiguous()
    hs, present = hand_ssim(p, g, boxes)
    keep = present > 0
    fs, nf = face_ssim(pred, gt, points)
    out = {"ssim": float(s.mean()), "n": len(gt),
           "hand_ssim": float(hs[keep].mean()) if keep.any() else float("nan"), "n_hand": len(gt),
           "face_ssim": fs, "n_face": nf}  # fmt: skip
    if labels is not None:
        out.update(region_scores(pred, gt, labels))
    return out


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
        # A resumed run logs again from its last checkpoint: keep each step's last row.
        rows = {int(r["step"]): r for r in csv.DictReader((runs / d / "logs" / "train.csv").open())}
        steps = sorted(rows)
        ax.plot(steps, [float(rows[s]["loss"]) for s in steps], lw=1)
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
    "norefine": "model (B6) without the source refiner",
    "vae": "the model's autoencoder on the target (bound of the denoiser, before any refiner)",
    "mcld": "MCLD (focal face/hands), same budget",
}
# metric -> (weight key of paired_margin / weighted_mean, label, higher is better)
METRICS = {
    "ssim": ("n", "SSIM", True),
    "hand_ssim": ("n_hand", "Hand SSIM", True),
    "face_ssim": ("n_face", "Face SSIM", True),
    "moved_ssim": ("n_moved", "moved SSIM", True),
    "moved_psnr": ("n_moved", "moved PSNR (dB)", True),
    "ghost_mae": ("n_ghost", "ghost error", False),
}
MARGIN_METRICS = ("ssim", "hand_ssim", "moved_ssim", "moved_psnr", "ghost_mae")
MOVED_SSIM_GAIN = 0.15  # acceptance: moved-region SSIM this far above the copy's
GHOST_RATIO = 0.5  # acceptance: ghost error at most this fraction of the copy's


def acceptance(result: dict) -> dict[str, bool]:
    """The demo model's acceptance criteria (module docstring) from the figures."""
    m = result["margins"]
    out = {
        "moved_ssim_gain": m["moved_ssim_vs_copy"]["margin"] >= MOVED_SSIM_GAIN,
        "ghost_ratio": result["ghost_ratio"] <= GHOST_RATIO,
        "ssim_above_both": all(m[f"ssim_vs_{b}"]["lo"] > 0 for b in ("copy", "nopose")),
        "hand_ssim_above_both": all(m[f"hand_ssim_vs_{b}"]["lo"] > 0 for b in ("copy", "nopose")),
    }
    out["met"] = all(out.values())
    return out


def sample_row(clip: dict, outs: dict[str, np.ndarray]) -> np.ndarray:
    """first frame | target pose | model | (model without its refiner, when it has one) | pose
    zeroed | target, at the clip's frame with the most moved pixels (the middle frame when
    the clip has no part labels)."""
    from signgen.pose.draw import draw_pose

    gt, labels = clip["frames"], clip["labels"]
    t = len(gt) // 2
    if labels is not None:
        t = int((labels != labels[0][None]).sum(axis=(1, 2)).argmax())
    h, w = gt.shape[1:3]
    pose = draw_pose(clip["keypoints"].points[t], (w, h))
    extra = [outs["norefine"][t]] if "norefine" in outs else []
    return np.concatenate([gt[0], pose, outs["model"][t], *extra, outs["nopose"][t], gt[t]], axis=1)


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
    ap.add_argument("--split", default="test", choices=("test", "dev"),
                    help="clips of this split (default: test; choose recipes on dev)")  # fmt: skip
    ap.add_argument("--clips", type=int, default=None, help="at most this many clips")
    ap.add_argument("--every", type=int, default=1, metavar="N",
                    help="score frames 0, N, 2N, ... of each clip (default: 1, every frame)")  # fmt: skip
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps (default: 20)")
    ap.add_argument("--guidance", type=float, nargs=2, default=None, metavar=("W_SRC", "W_FUSE"),
                    help="cumulative guidance (default: each model's own)")  # fmt: skip
    ap.add_argument("--guidance-focal", type=float, default=None,
                    help="MCLD focal guidance (default: the MCLD model's)")  # fmt: skip
    ap.add_argument("--detail-transfer", type=float, default=None, metavar="T",
                    help="source detail transfer threshold for every model row and the bound "
                    "(default: each model's own; 0 = off, the acceptance reading)")  # fmt: skip
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "synthetic_quality"
    )
    args = ap.parse_args(argv)

    from signgen.sampling.pipeline import FPDMPipeline

    t0 = time.perf_counter()
    if args.every < 1:
        ap.error(f"--every must be >= 1, got {args.every}")
    clips = load_clips(args.world, args.clips, args.split, args.every)
    if not clips:
        ap.error(f"{args.world} has no {args.split} clips")
    if any(c["labels"] is None for c in clips):
        ap.error(f"{args.world} has no part masks (masks/): regenerate it with "
                 "`signgen prepare synthetic`")  # fmt: skip
    systems = {"model": FPDMPipeline.from_pretrained(args.model),
               "nopose": no_pose(FPDMPipeline.from_pretrained(args.model))}  # fmt: skip
    if args.b3:
        systems["b3"] = FPDMPipeline.from_pretrained(args.b3)
    if args.mcld:
        systems["mcld"] = FPDMPipeline.from_pretrained(args.mcld)
        if systems["mcld"].focal_adapter is None:
            ap.error(f"--mcld {args.mcld} is not an MCLD model (no focal adapter)")
    # The model's detail-transfer threshold in this run (--detail-transfer overrides every
    # model row's and the bound's; None: each model's own).
    transfer = (systems["model"].detail_transfer if args.detail_transfer is None
                else args.detail_transfer)  # fmt: skip
    per: dict[str, list[dict[str, float]]] = {k: [] for k in ["copy", "vae", *systems]}
    if transfer:
        per["nodetail"] = []
    refined = systems["model"].refiner is not None
    if refined:
        per["norefine"] = []
    guidance = args.guidance  # None: each model's own
    kw = {"steps": args.steps, "guidance": guidance, "seed": 0, "batch_size": 16,
          "detail_transfer": args.detail_transfer}  # fmt: skip
    samples = []
    for clip in clips:
        gt, kp, labels = clip["frames"], clip["keypoints"], clip["labels"]
        outs = {"copy": np.repeat(gt[:1], len(gt), axis=0),
                "vae": vae_reconstruction(systems["model"], gt, gt[0], transfer)}  # fmt: skip
        for name, pipe in systems.items():
            extra = {}
            if pipe.focal_adapter is not None:  # the source frame is frame 0 of the clip
                extra = {"source_points": kp.points[0], "guidance_focal": args.guidance_focal}
            outs[name] = pipe(gt[0], kp, **kw, **extra)
        if transfer:
            outs["nodetail"] = systems["model"](gt[0], kp, **{**kw, "detail_transfer": 0})
        if refined:
            outs["norefine"] = systems["model"](gt[0], kp, **kw, refine=False)
        for name, pred in outs.items():
            per[name].append(score(pred, gt, kp.points, labels))
        samples.append(sample_row(clip, outs))
        r = {k: per[k][-1] for k in per}
        print(f"{clip['video']}: " + ", ".join(
            f"{k} {v['ssim']:.3f}/{v['hand_ssim']:.3f}/{v['moved_ssim']:.3f}/{v['ghost_mae']:.1f}"
            for k, v in r.items()
        ), flush=True)  # fmt: skip

    result: dict = {}
    for k in per:
        for m, (n, _label, _up) in METRICS.items():
            result[f"{k}_{m}"] = weighted_mean(per[k], m, n)
    if args.b3:
        for m in METRICS:
            # B6 as B3 was trained: without the refiner, which B3 does not have
            result[f"b6_{m}"] = result[f"{'norefine' if refined else 'model'}_{m}"]
    # The model beats both baselines on both whole-frame metrics.
    result["beats_baselines"] = all(
        result[f"model_{m}"] > max(result[f"copy_{m}"], result[f"nopose_{m}"])
        for m in ("ssim", "hand_ssim")
    )
    # Per-clip paired differences against each baseline, with a bootstrap confidence
    # interval over clips (paired_margin). "Clear" = the interval's lower end above 0
    # against both baselines on SSIM and Hand SSIM.
    margins = {f"{m}_vs_{b}": paired_margin(per["model"], per[b], m, METRICS[m][0])
               for m in MARGIN_METRICS for b in ("copy", "nopose")}  # fmt: skip
    result["margins"] = margins
    result["clear_margin"] = all(
        margins[f"{m}_vs_{b}"]["lo"] > 0 for m in ("ssim", "hand_ssim") for b in ("copy", "nopose")
    )
    result["ghost_ratio"] = result["model_ghost_mae"] / result["copy_ghost_mae"]
    result["acceptance"] = acceptance(result)
    result["clips"] = len(clips)
    result["split"] = args.split
    result["size"] = "x".join(str(v) for v in clips[0]["frames"].shape[1:3])
    result["frames"] = int(sum(len(c["frames"]) for c in clips))
    result["signers"] = sorted({c["signer"] for c in clips})
    result["guidance"] = list(guidance or systems["model"].default_guidance)
    result["detail_transfer"] = transfer
    result["resolution"] = list(systems["model"].resolution)
    result["refiner"] = refined
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
    Path(f"{args.out}.md").write_text("\n".join(report_lines(args, meta, result)) + "\n")
    print(json.dumps(result))
    return 0


def report_lines(args: argparse.Namespace, meta: dict, result: dict) -> list[str]:
    """The Markdown report of one run (benchmarks/results/synthetic_quality.md)."""
    margins, acc = result["margins"], result["acceptance"]
    transfer = result["detail_transfer"]

    def yes(flag: bool) -> str:
        return "**yes**" if flag else "**NO**"

    def fmt(v: float, m: str) -> str:
        return f"{v:.2f}" if m in ("moved_psnr", "ghost_mae") else f"{v:.4f}"

    cols = [m for m in METRICS if any(f"{k}_{m}" in result for k in ROWS)]
    moved = margins["moved_ssim_vs_copy"]
    return [
        "# Synthetic-world quality (held-out signers)",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']}",
        f"- clips: {result['clips']} {result['split']} clips, {result['frames']} frames"
        + (f" (every {args.every}th)" if args.every > 1 else "") + ", signers "
        f"{', '.join(result['signers'])} (not seen in training)",
        f"- model resolution {tuple(result['resolution'])} (H x W), frames scored at "
        f"{result['size']} (H x W)",
        "- SSIM: Gaussian 11/1.5, data range 255; Hand SSIM: 60x60 crops at the ground-truth "
        "middle knuckles (signgen.metrics); Face SSIM: 60x60 at the mean ground-truth face "
        "point; moved SSIM / PSNR: over the pixels whose part label differs from the first "
        "frame's; ghost error: mean absolute error (0-255) where the first frame shows an arm "
        "or a hand and the target does not (signgen.metrics.regions)",
        f"- source detail transfer (signgen.sampling.detail): threshold {transfer or 'off'} for "
        "every model row and the autoencoder bound",
        "- source refiner (signgen.models.refiner): "
        + ("the model's, in the model and pose-zeroed rows (pose image black there)"
           if result.get("refiner") else "none"),
        f"- sampling: DDIM {args.steps} steps, cumulative guidance {tuple(result['guidance'])}"
        + (" (the model's default)" if args.guidance is None else "")
        + (f", focal guidance {args.guidance_focal or 'model default'}" if args.mcld else ""),
        "",
        "| system | " + " | ".join(METRICS[m][1] for m in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
        *[f"| {ROWS[k]} | " + " | ".join(fmt(result[f"{k}_{m}"], m) for m in cols) + " |"
          for k in ROWS if f"{k}_ssim" in result],
        "",
        "Margins per clip (model minus baseline on the same clip; 95% interval: paired "
        "bootstrap over clips, BCa; for the ghost error lower is better):",
        "",
        "| metric | baseline | margin | 95% interval | clips won |",
        "|---|---|---|---|---|",
        *[f"| {METRICS[k.split('_vs_')[0]][1]} | {ROWS[k.split('_vs_')[1]]} | "
          f"{v['margin']:+.4f} | [{v['lo']:+.4f}, {v['hi']:+.4f}] | "
          f"{v['won'] if METRICS[k.split('_vs_')[0]][2] else v['clips'] - v['won']} of {v['clips']} |"
          for k, v in margins.items()],
        "",
        f"Acceptance (on the test clips, without detail transfer; this run: {result['split']}, "
        f"transfer {transfer or 'off'}):",
        "",
        f"- moved-region SSIM at least {MOVED_SSIM_GAIN} above the copy's: {yes(acc['moved_ssim_gain'])} "
        f"({moved['margin']:+.4f} [{moved['lo']:+.4f}, {moved['hi']:+.4f}])",
        f"- ghost error at most {GHOST_RATIO} of the copy's: {yes(acc['ghost_ratio'])} "
        f"({result['model_ghost_mae']:.2f} / {result['copy_ghost_mae']:.2f} = {result['ghost_ratio']:.3f})",
        f"- SSIM above both baselines, intervals above 0: {yes(acc['ssim_above_both'])}",
        f"- Hand SSIM above both baselines, intervals above 0: {yes(acc['hand_ssim_above_both'])}",
        f"- all: {yes(acc['met'])}",
        "",
        "Samples (first frame | target pose | model | "
        + ("model without the refiner | " if result.get("refiner") else "")
        + "pose zeroed | target, at the frame of "
        f"each clip with the most moved pixels): `{args.out.name}_samples.png`"
        + (f"; training loss curves: `{args.out.name}_loss.png`." if args.runs else "."),
    ]  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
