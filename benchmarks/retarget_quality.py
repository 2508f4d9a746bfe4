"""Pose retargeting on held-out synthetic signers: B driven by A's keypoints, raw vs retargeted.

Ground truth: ``signgen prepare synthetic --retarget-pairs 1`` draws, for every test video
(driver: signer A), the next test signer B performing A's motion with B's own body (A's
joint angles and timing, B's bone lengths, size and place; signgen.data.synthetic
``write_retarget_pairs``). The job of retargeting: given B's own first frame (the source of
the render, from B's own clip) and its keypoints (the reference), and A's keypoints,
produce keypoints for B performing A's motion. Every row uses the same source frame.

Rows:
* raw         A's keypoints as they are (what signgen rendered before retargeting)
* global      A's keypoints through the global fit only (scale + translation from the torso;
              keypoints only, no render)
* retargeted  signgen.keypoints.retarget.retarget_sequence(A, B's first-frame keypoints)
* truth       B's true keypoints of the target (renders only: the best any keypoints can do)

Metrics, per clip, then frame-weighted over clips:
* keypoint error: mean Euclidean distance in pixels (at 260 x 210, H x W) to B's true
  keypoints, over the points with a true score > 0 (body without legs, face, hands), and
  per part;
* SSIM / Hand SSIM of renders against B's true frames (benchmarks/synthetic_quality.py:
  Gaussian 11/1.5, data range 255; 60 x 60 crops at the true middle knuckles), rendered as
  ``signgen render`` does with the model's defaults (DDIM 20 steps, the model's guidance
  and detail transfer, seed 0). Every frame is generated independently from the source,
  so renders of every second frame (--render-every 2: 16 of each clip's 32, the whole
  motion) measure the same thing at half the cost; keypoint errors use every frame.
Margins: retargeted minus raw per clip (for keypoint error: raw minus retargeted), with a
95% paired bootstrap interval over clips (signgen.metrics.stats.paired_margin).

The world is generated when --world does not exist, with the settings of the demo model's
world (tools/train_demo_model.sh: 100 signers, 160 videos of 32 frames at 210 x 260) but
its own seed (--seed, default 1), so every signer is new to the demo model.

    nice -n 10 .venv/bin/python benchmarks/retarget_quality.py --world runs/retarget/world
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine, write_result
from synthetic_quality import score

from signgen.metrics.stats import paired_margin, weighted_mean

ROOT = Path(__file__).resolve().parents[1]
PARTS = {"body": list(range(0, 17)), "face": list(range(23, 91)),
         "hands": list(range(91, 133))}  # fmt: skip


def make_world(path: Path, seed: int) -> None:
    """The demo model's world settings (tools/train_demo_model.sh), plus retargeting pairs."""
    from signgen.data.synthetic import SyntheticConfig, write_dataset

    cfg = SyntheticConfig(out=str(path), signers=100, videos=160, frames=32, width=210,
                          height=260, seed=seed, train_pairs_per_video=100, retarget_pairs=1)  # fmt: skip
    write_dataset(cfg, progress=True)


def keypoint_error(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Mean pixel distance over the points with a true score > 0, overall and per part."""
    seen = truth[..., 2] > 0  # (T, 133)
    dist = np.linalg.norm(pred[..., :2] - truth[..., :2], axis=-1)  # (T, 133)
    out = {"kp": float(dist[seen].mean()), "n": len(truth)}
    for part, idx in PARTS.items():
        m = seen[:, idx]
        out[f"kp_{part}"] = float(dist[:, idx][m].mean()) if m.any() else float("nan")
    return out


def every(seq, idx: np.ndarray):
    """The frames ``idx`` of a KeypointSequence."""
    from signgen.keypoints import KeypointSequence

    return KeypointSequence(seq.points[idx], seq.width, seq.height, seq.fps, meta=seq.meta)


def overlay(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Keypoints drawn (signgen.pose.draw) over a dimmed frame, (H, W, 3) uint8."""
    from signgen.pose.draw import draw_pose

    h, w = frame.shape[:2]
    pose = draw_pose(points, (w, h))
    drawn = pose.any(axis=-1, keepdims=True)
    return np.where(drawn, pose, (frame * 0.45).astype(np.uint8))


def labelled(columns: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Columns side by side under a white strip with their labels."""
    import cv2

    row = np.concatenate(columns, axis=1)
    strip = np.full((22, row.shape[1], 3), 255, np.uint8)
    w = columns[0].shape[1]
    for i, text in enumerate(labels):
        cv2.putText(strip, text, (i * w + 4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)  # fmt: skip
    return np.concatenate([strip, row], axis=0)


def main(argv: list[str] | None = None) -> int:
    # Over 80 lines: one linear script (load, retarget, render, score, report), as the
    # other quality benchmarks are; splitting it would only pass its tables around.
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=Path, default=ROOT / "runs" / "retarget" / "world",
                    help="`signgen prepare synthetic --retarget-pairs 1` output; generated "
                    "when missing")  # fmt: skip
    ap.add_argument("--seed", type=int, default=1, help="seed of a generated world (default 1)")
    ap.add_argument("--model", type=Path, default=ROOT / "signgen" / "assets" / "demo_model")
    ap.add_argument("--split", default="test", help="pairs of this split (default: test)")
    ap.add_argument("--pairs", type=int, default=None, help="at most this many pairs")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps (default: 20)")
    ap.add_argument("--render-every", type=int, default=2, metavar="K",
                    help="render every K-th frame of each clip (default: 2)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "retarget_quality")  # fmt: skip
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from signgen.data.pairs import load_frame, read_manifest
    from signgen.data.synthetic import read_retarget_pairs
    from signgen.keypoints import load_keypoints
    from signgen.keypoints.retarget import apply_fit, fit_retarget, retarget_sequence
    from signgen.sampling.pipeline import FPDMPipeline

    t0, cpu0 = time.perf_counter(), time.process_time()
    if not (args.world / "prepared" / "retarget_pairs.csv").is_file():
        make_world(args.world, args.seed)
    world_seconds = time.perf_counter() - t0
    manifest = read_manifest(args.world / "prepared")
    pairs = [
        p for p in read_retarget_pairs(args.world / "prepared") if p.target.split == args.split
    ]
    pairs = pairs[: args.pairs] if args.pairs else pairs
    if not pairs:
        ap.error(f"no {args.split!r} retargeting pairs in {args.world}")
    pipe = FPDMPipeline.from_pretrained(args.model)
    kw = {"num_inference_steps": args.steps, "seed": 0, "batch_size": 16}  # model defaults

    kp_rows: dict[str, list[dict[str, float]]] = {"raw": [], "global": [], "retargeted": []}
    img_rows: dict[str, list[dict[str, float]]] = {"raw": [], "retargeted": [], "truth": []}
    picture: list[tuple[float, np.ndarray]] = []  # (raw keypoint error, picture row)
    for pair in pairs:
        target = pair.target
        gt = np.stack([load_frame(target, t) for t in range(target.frames)])  # (T, H, W, 3)
        truth = load_keypoints(target.keypoints_file)
        drive = load_keypoints(manifest[pair.driver_video].keypoints_file)
        own = manifest[pair.appearance_video]  # B's own clip: its first frame is the source
        source = load_frame(own, 0)
        reference = load_keypoints(own.keypoints_file)
        rt = retarget_sequence(drive, reference.points[0], reference.size)
        fit = fit_retarget(drive.points, reference.points[0])
        only_global = apply_fit(drive.points, dataclasses.replace(
            fit, ratios=np.full_like(fit.ratios, fit.scale)))  # fmt: skip
        for name, pts in (("raw", drive.points), ("global", only_global),
                          ("retargeted", rt.points)):  # fmt: skip
            kp_rows[name].append(keypoint_error(pts, truth.points))
        idx = np.arange(0, len(gt), args.render_every)
        renders = {name: pipe(source, every(seq, idx), **kw)
                   for name, seq in (("raw", drive), ("retargeted", rt), ("truth", truth))}  # fmt: skip
        for name, pred in renders.items():
            img_rows[name].append(score(pred, gt[idx], truth.points[idx]))
        j = len(idx) // 2
        t = int(idx[j])
        picture.append((kp_rows["raw"][-1]["kp"], labelled(
            [source, overlay(source, drive.points[t]), overlay(source, rt.points[t]),
             renders["raw"][j], renders["retargeted"][j], gt[t]],
            ["source (B)", "A's keypoints", "retargeted", "render: raw",
             "render: retargeted", "B doing A (truth)"])))  # fmt: skip
        print(f"{target.video}: keypoint error raw {kp_rows['raw'][-1]['kp']:.2f} px, "
              f"retargeted {kp_rows['retargeted'][-1]['kp']:.2f} px; SSIM / Hand SSIM raw "
              f"{img_rows['raw'][-1]['ssim']:.3f} / {img_rows['raw'][-1]['hand_ssim']:.3f}, "
              f"retargeted {img_rows['retargeted'][-1]['ssim']:.3f} / "
              f"{img_rows['retargeted'][-1]['hand_ssim']:.3f}", flush=True)  # fmt: skip

    result: dict = {}
    for name, rows in kp_rows.items():
        for key in ("kp", *(f"kp_{p}" for p in PARTS)):
            result[f"{name}_{key}"] = weighted_mean(rows, key, "n")
    for name, rows in img_rows.items():
        result[f"{name}_ssim"] = weighted_mean(rows, "ssim", "n")
        result[f"{name}_hand_ssim"] = weighted_mean(rows, "hand_ssim", "n_hand")
    result["kp_ratio"] = result["retargeted_kp"] / result["raw_kp"]
    margins = {
        # Keypoint error: raw minus retargeted (positive = retargeting is closer to the truth).
        "kp_error_reduction": paired_margin(kp_rows["raw"], kp_rows["retargeted"], "kp", "n"),
        "ssim": paired_margin(img_rows["retargeted"], img_rows["raw"], "ssim", "n"),
        "hand_ssim": paired_margin(img_rows["retargeted"], img_rows["raw"], "hand_ssim",
                                   "n_hand"),
    }  # fmt: skip
    result["margins"] = margins
    result["target_met"] = bool(result["kp_ratio"] <= 0.5 and margins["ssim"]["lo"] > 0
                                and margins["hand_ssim"]["lo"] > 0)  # fmt: skip
    result["pairs"] = len(pairs)
    result["frames"] = int(sum(p.target.frames for p in pairs))
    result["signers"] = sorted({p.target.signer for p in pairs} | {p.driver_signer for p in pairs})
    result["guidance"] = list(pipe.guidance_or_default(None))
    result["detail_transfer"] = pipe.detail_transfer
    result["world_seconds"] = round(world_seconds, 1)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["cpu_seconds"] = round(time.process_time() - cpu0, 1)

    from PIL import Image

    args.out.parent.mkdir(parents=True, exist_ok=True)
    # The three pairs whose raw keypoints are furthest from the truth (the bodies differ most).
    shown = sorted(picture, key=lambda x: -x[0])[:3]
    # A 256-colour palette: the picture is shown in the README, and the synthetic world's flat
    # colours survive it (330 KB as RGB, under 100 KB as a palette).
    rows = np.concatenate([row for _, row in shown], axis=0)
    Image.fromarray(rows).quantize(256).save(f"{args.out}.png", optimize=True)
    command = " ".join(["python", *(sys.argv if argv is None else [__file__, *argv])])
    command = command.replace(str(ROOT) + "/", "")
    meta = {"command": command,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(), "torch_threads": torch.get_num_threads()}  # fmt: skip
    Path(f"{args.out}.json").write_text(json.dumps({**meta, **result}, indent=2))

    def m(key: str) -> str:
        v = margins[key]
        return f"{v['margin']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}], {v['won']} of {v['clips']}"

    r = result
    lines = [
        "# Pose retargeting on held-out synthetic signers",
        "",
        f"- command: `{command}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']['cpu']}, {meta['machine']['nproc']} cores (shared), "
        f"{meta['torch_threads']} torch thread(s); load average {meta['machine']['load average (1/5/15 min)']}",
        f"- world: {args.world.name} ({'generated in this run' if world_seconds > 1 else 'existing'}); "
        f"{r['pairs']} {args.split} pairs (signer B performs signer A's motion), "
        f"{r['frames']} frames at 260x210 (H x W; renders: 1 frame in {args.render_every}); signers {', '.join(r['signers'])}, none "
        "seen by the demo model",
        f"- renders: the demo model, DDIM {args.steps} steps, guidance {tuple(r['guidance'])}, "
        f"detail transfer {r['detail_transfer']}, seed 0 (the `signgen render` defaults); "
        f"source = B's own first frame; run time {r['seconds'] / 60:.1f} min wall, "
        f"{r['cpu_seconds'] / 60:.1f} min CPU",
        "",
        "Keypoint error (mean pixel distance to B's true keypoints; lower is better):",
        "",
        "| keypoints | all | body | face | hands |",
        "|---|---|---|---|---|",
        *[f"| {name} | {r[f'{name}_kp']:.2f} | {r[f'{name}_kp_body']:.2f} | "
          f"{r[f'{name}_kp_face']:.2f} | {r[f'{name}_kp_hands']:.2f} |"
          for name in ("raw", "global", "retargeted")],
        "",
        f"Retargeted / raw keypoint error: **{r['kp_ratio']:.3f}** (target: at most 0.5); "
        f"raw minus retargeted per clip {m('kp_error_reduction')} clips closer.",
        "",
        "Renders against B's true frames (higher is better):",
        "",
        "| keypoints rendered | SSIM | Hand SSIM |",
        "|---|---|---|",
        *[f"| {name} | {r[f'{name}_ssim']:.4f} | {r[f'{name}_hand_ssim']:.4f} |"
          for name in ("raw", "retargeted", "truth")],
        "",
        "Retargeted minus raw, per clip (95% interval: paired bootstrap over clips, BCa; clips "
        "won):",
        "",
        f"- SSIM: {m('ssim')}",
        f"- Hand SSIM: {m('hand_ssim')}",
        "",
        f"Target (error at least halved, both intervals above 0): "
        f"**{'met' if r['target_met'] else 'NOT met'}**.",
        "",
        f"Picture (`{args.out.name}.png`; the middle frame of the three pairs with the largest "
        "raw keypoint error, i.e. the most different bodies, not typical ones): B's own "
        "first frame | A's keypoints over it | retargeted keypoints over it | render from A's "
        "keypoints | render from the retargeted ones | B performing A (truth).",
    ]  # fmt: skip
    write_result(Path(f"{args.out}.md"), lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
