"""GPU memory and time of the full-size FPDM, predicted from what full_size.py measured.

Inputs (benchmarks/results/full_size.json): parameter counts; per-sample FLOPs counted by
torch's FlopCounterMode on the meta device; activation memory measured on CPU by the torch
allocator's peak (profiler allocation events) under bf16 autocast with CUDA's fp32 norms,
at batch 1 and 2, gradient checkpointing off and on (part ``memory``). One more
measurement is taken here, in a second: the transient memory of AdamW's multi-tensor
(foreach) step, the implementation PyTorch picks on CUDA, relative to the parameter bytes.

Memory of training at micro-batch B (bf16 autocast, fp32 master weights, AdamW):
    trained weights 4 P_t + gradients 4 P_t + AdamW moments 8 P_t + frozen weights
    (4 or 2 bytes x P_f) + the largest of: activations A(B) (linear through the measured
    batch-1 and batch-2 peaks), the frozen encoders' transient (batch-1 peak x B), AdamW's
    transient (measured ratio x 4 P_t).
Memory of rendering at batch B (bf16 weights): 2 P + the largest of: the denoiser's
transient for B frames x branches (measured at one frame, two branches), the VAE decoder's
(measured at one frame; x B, or x 1 with VAE slicing), the source encoder's (one frame).
Both are allocated bytes, what torch.cuda.max_memory_allocated reports; the CUDA context
and the caching allocator's unused reserve come on top (typically 1-3 GiB).

Time: seconds = counted FLOPs / (MFU x peak), frames/s and GPU-hours for the Phoenix-2014T
test set (64,627 frames in 642 clips; the source is encoded once per clip).

    .venv/bin/python benchmarks/hardware_model.py    # writes benchmarks/results/hardware_model.{md,json}
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _fullsize as fs

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 2**30
BATCHES = (1, 2, 4, 8, 16, 32)
# Stage-2 training samples of the Phoenix B6 recipe: 100,000 prepared training pairs
# (docs/reproducing.md, `signgen prepare phoenix --train-pairs 100000`) x 20 epochs
# (configs/recipes/fpdm_phoenix_b6.yaml).
PHOENIX_TRAIN_SAMPLES = 100_000 * 20
MFUS = (0.30, 0.35, 0.45)


# ---- measurements ------------------------------------------------------------------------------
def adamw_transient_ratio(params: int = 8_000_000) -> float:
    """Peak bytes an AdamW step allocates (multi-tensor implementation, moments already
    there: a step after the first) per byte of fp32 trained weights, measured on CPU."""
    import torch

    torch.manual_seed(0)
    layers = [torch.nn.Linear(1000, 1000) for _ in range(params // 1_001_000)]
    ps = [p for m in layers for p in m.parameters()]
    for p in ps:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(ps, lr=1e-4, weight_decay=1e-4, foreach=True)
    opt.step()  # allocates the two moments
    with fs.AllocatorPeak() as mem:
        torch.nn.utils.clip_grad_norm_(ps, 1.0, foreach=True)
        opt.step()
    return mem.peak / (4 * sum(p.numel() for p in ps))


def _linear(rows: list[dict[str, Any]], ckpt: bool, key: str = "peak_gib"):
    """f(B) = f(1) + (f(2) - f(1)) (B - 1) through the measured batch-1 and batch-2 rows."""
    by_b = {r["batch"]: r[key] for r in rows if r["checkpointing"] == ckpt}
    return lambda b: by_b[1] + (by_b[2] - by_b[1]) * (b - 1)


# ---- the model ---------------------------------------------------------------------------------
def training_memory(counts, memory, adam_ratio, b, ckpt, frozen_bytes) -> dict[str, float]:
    """Predicted peak allocated GiB of one training micro-batch (see module docstring)."""
    pt = counts["trainable_stage2"]
    pf = counts["total"] - pt
    static = (16 * pt + frozen_bytes * pf) / GIB
    act = _linear(memory["train"], ckpt)(b)
    enc = memory["frozen_encoders_autocast_peak_gib"] * b
    opt = adam_ratio * 4 * pt / GIB
    return {"static": static, "activations": act, "encoders": enc, "optimizer": opt,
            "total": static + max(act, enc, opt)}  # fmt: skip


def render_memory(counts, memory, b, branches, slicing) -> dict[str, float]:
    """Predicted peak allocated GiB of rendering a batch of ``b`` frames in bf16."""
    inf = memory["inference_bf16"]
    weights = 2 * counts["total"] / GIB
    unet = inf["denoiser_batch2_peak_gib"] * branches * b / 2
    dec = inf["vae_decode_batch1_peak_gib"] * (1 if slicing else b)
    src = inf["source_encoder_batch1_peak_gib"]
    return {"weights": weights, "denoiser": unet, "decode": dec,
            "total": weights + max(unet, dec, src)}  # fmt: skip


def frame_flops(f: dict[str, int], branches: int, steps: int, clip_frames: float) -> float:
    """Counted FLOPs per rendered frame; the source (DINOv2 + CLIP) once per clip."""
    per = (steps * branches * f["unet_forward"] + branches * f["condition_encoders"]
           + f["clip_embed"] + f["combiner"] + f["vae_decode"])  # fmt: skip
    return per + (f["source_encoder"] + f["clip_embed"]) / clip_frames


def train_flops(f: dict[str, int], ckpt: bool) -> float:
    """Counted FLOPs per training sample, recomputation included when checkpointing:
    frozen VAE encoder, source encoder, CLIP on source and pose, Combiner, denoiser fwd+bwd."""
    den = f["denoiser_train_checkpointed" if ckpt else "denoiser_train"]
    return den + f["vae_encode"] + f["source_encoder"] + 2 * f["clip_embed"] + f["combiner"]


# ---- report ---------------------------------------------------------------------------------------
def build_report(full: dict[str, Any], adam_ratio: float, peak_tflops: float) -> dict[str, Any]:
    parts = full["parts"]
    counts = parts["params"]["counts"]
    f = parts["flops"]["per_sample"]
    memory = parts["memory"]
    peak = peak_tflops * 1e12
    clip_frames = fs.PHOENIX_TEST_FRAMES / fs.PHOENIX_TEST_CLIPS
    train = [{
        "batch": b,
        **{f"{'ckpt' if c else 'no_ckpt'}_{fb}": training_memory(counts, memory, adam_ratio, b, c,
                                                                  4 if fb == "fp32" else 2)["total"]
           for c in (False, True) for fb in ("fp32", "bf16")},
    } for b in BATCHES]  # fmt: skip
    render = [{"batch": b,
               "two_branches": render_memory(counts, memory, b, 2, False)["total"],
               "two_branches_sliced": render_memory(counts, memory, b, 2, True)["total"],
               "three_branches": render_memory(counts, memory, b, 3, False)["total"]}
              for b in BATCHES]  # fmt: skip
    speed = []
    for nb in (2, 3):
        ff = frame_flops(f, nb, 20, clip_frames)
        for mfu in MFUS:
            fps = mfu * peak / ff
            speed.append({"branches": nb, "mfu": mfu, "tflop_per_frame": ff / 1e12,
                          "frames_per_s": fps,
                          "phoenix_gpu_hours": fs.PHOENIX_TEST_FRAMES / fps / 3600})  # fmt: skip
    train_time = []
    for ckpt in (False, True):
        per = train_flops(f, ckpt)
        for mfu in MFUS:
            train_time.append({"checkpointing": ckpt, "mfu": mfu, "tflop_per_sample": per / 1e12,
                               "samples_per_s": mfu * peak / per,
                               "step_s_batch32": 32 * per / (mfu * peak),
                               "phoenix_b6_gpu_hours": PHOENIX_TRAIN_SAMPLES * per
                               / (mfu * peak) / 3600})  # fmt: skip
    b1 = training_memory(counts, memory, adam_ratio, 1, False, 4)
    return {"peak_tflops": peak_tflops, "adamw_transient_ratio": adam_ratio,
            "clip_frames": clip_frames, "training_memory_gib": train,
            "render_memory_gib": render, "render_speed": speed, "train_speed": train_time,
            "training_parts_b1_no_ckpt": b1,
            "flops_per_sample": f, "params": counts}  # fmt: skip


def markdown(r: dict[str, Any], command: str) -> list[str]:
    f = r["flops_per_sample"]
    s = r["training_parts_b1_no_ckpt"]
    lines = [
        "# GPU memory and time of the full-size FPDM (predicted)",
        "",
        f"- command: `{command}`",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "- inputs: benchmarks/results/full_size.json (FLOPs counted on the meta device, "
        "activation peaks measured on CPU under bf16 autocast with CUDA's fp32 norms at "
        "batch 1 and 2), AdamW multi-tensor transient measured here: "
        f"{r['adamw_transient_ratio']:.2f} x the fp32 trained weights",
        f"- GPU: {r['peak_tflops']:.0f} TFLOP/s dense bf16 (H200); MFU = counted FLOPs / "
        "(seconds x peak)",
        "",
        "## Training memory (GiB allocated, one micro-batch, bf16 autocast, AdamW)",
        "",
        f"Static part at fp32 frozen encoders: {s['static']:.1f} GiB (trained weights, gradients "
        f"and AdamW moments 16 bytes x {r['params']['trainable_stage2'] / 1e6:.0f}M, frozen VAE "
        "+ DINOv2-L + CLIP-L + Combiner 4 bytes x "
        f"{(r['params']['total'] - r['params']['trainable_stage2']) / 1e6:.0f}M); at batch 1 "
        f"without checkpointing the activations add {s['activations']:.1f} GiB.",
        "",
        "| micro-batch | no ckpt | no ckpt, frozen bf16 | ckpt | ckpt, frozen bf16 |",
        "|---:|---:|---:|---:|---:|",
        *(f"| {t['batch']} | {t['no_ckpt_fp32']:.1f} | {t['no_ckpt_bf16']:.1f} | "
          f"{t['ckpt_fp32']:.1f} | {t['ckpt_bf16']:.1f} |" for t in r["training_memory_gib"]),
        "",
        "## Render memory (GiB allocated, bf16 weights)",
        "",
        "| frames per batch | guidance 2, 2 (2 branches) | same, VAE slicing | 3 branches |",
        "|---:|---:|---:|---:|",
        *(f"| {t['batch']} | {t['two_branches']:.1f} | {t['two_branches_sliced']:.1f} | "
          f"{t['three_branches']:.1f} |" for t in r["render_memory_gib"]),
        "",
        "## Render speed (512x512, 20 steps)",
        "",
        f"Counted per frame: UNet {f['unet_forward'] / 1e12:.3f} TFLOP per sample and step "
        f"({f['source_tokens']} source tokens), VAE decode {f['vae_decode'] / 1e12:.2f}, CLIP "
        f"pose embedding {f['clip_embed'] / 1e12:.2f}, pose encoder + source projector "
        f"{f['condition_encoders'] / 1e12:.3f} per branch; per clip: DINOv2-L "
        f"{f['source_encoder'] / 1e12:.2f} (Phoenix test clips: {r['clip_frames']:.1f} frames "
        "on average).",
        "",
        "| branches | MFU | TFLOP per frame | frames/s | Phoenix test set (64,627 frames), "
        "GPU-hours |",
        "|---:|---:|---:|---:|---:|",
        *(f"| {x['branches']} | {x['mfu']:.0%} | {x['tflop_per_frame']:.1f} | "
          f"{x['frames_per_s']:.2f} | {x['phoenix_gpu_hours']:.2f} |" for x in r["render_speed"]),
        "",
        "## Training speed (one sample = frozen encoders + denoiser forward and backward)",
        "",
        "| checkpointing | MFU | TFLOP per sample | samples/s | s per optimizer step of 32 "
        "| Phoenix B6 (2 M samples), GPU-hours |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {'on' if x['checkpointing'] else 'off'} | {x['mfu']:.0%} | "
          f"{x['tflop_per_sample']:.2f} | {x['samples_per_s']:.1f} | {x['step_s_batch32']:.2f} "
          f"| {x['phoenix_b6_gpu_hours']:.1f} |" for x in r["train_speed"]),
        "",
    ]  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument(
        "--full-size",
        type=Path,
        default=RESULTS / "full_size.json",
        help="full_size.py's result (default benchmarks/results/full_size.json)",
    )
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=790.0,
        help="the GPU's dense bf16 TFLOP/s (default 790, H200)",
    )
    ap.add_argument(
        "-o",
        "--output",
        type=Path,
        default=RESULTS / "hardware_model",
        help="result path without suffix (.json and .md)",
    )
    args = ap.parse_args(argv)
    if not args.full_size.is_file():
        print(f"hardware_model.py: {args.full_size} not found; run benchmarks/full_size.py "
              "first", file=sys.stderr)  # fmt: skip
        return 2
    full = json.loads(args.full_size.read_text())
    missing = [p for p in ("params", "flops", "memory") if "error" in full["parts"].get(p, {"error": 1})
               or "skipped" in full["parts"].get(p, {})]  # fmt: skip
    if missing:
        print(f"hardware_model.py: {args.full_size} lacks the part(s) {', '.join(missing)}",
              file=sys.stderr)  # fmt: skip
        return 2
    report = build_report(full, adamw_transient_ratio(), args.peak_tflops)
    command = "python benchmarks/hardware_model.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    from signgen.fileio import atomic_write_text

    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
    text = "\n".join(markdown(report, command.strip())) + "\n"
    atomic_write_text(args.output.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
