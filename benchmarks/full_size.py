"""Full-size FPDM, executed: the paper's model (SD 2.1 UNet and VAE, DINOv2-L at 512,
CLIP ViT-L/14 IPF) with random weights from configs/model/fpdm_sd21_dinov2l_512.yaml
(nothing downloaded), run end to end on this CPU in fp32.

Parts, each in its own subprocess so that each peak resident set size is its own:

  params    parameter count of every component (meta device) against the published ones
  flops     per-sample FLOPs of every piece, counted by torch's FlopCounterMode on the meta
            device (shapes only)
  render    a 2-step render of a 4-frame clip at 512x512 through FPDMPipeline.render:
            guidance 2, 3 so that all three guidance branches run (batch 3 x 4 per UNet
            call), the source encoded once
  train     one stage-2 optimizer step at batch 1 (FPDMModule + AdamW as `signgen train
            fpdm` builds them, Phoenix B6 recipe), gradient checkpointing off and on
  ipf       one stage-1 (IPF, A3 source-enhanced InfoNCE) optimizer step at batch 2, the
            smallest batch with an in-batch negative (the recipe's is 48)
  memory    measurements for the GPU memory model (benchmarks/hardware_model.py): the
            denoiser's training forward + backward under bf16 autocast at batch 1 and 2,
            checkpointing off and on, and the inference peaks of the UNet (one frame, two
            guidance branches), VAE decoder and source encoder in bf16

Memory is the torch CPU allocator's peak inside each phase (torch.profiler allocation
events, the CPU analogue of torch.cuda.max_memory_allocated) and the process's peak RSS.
Before a heavy part the parent checks MemAvailable against what the part needs (weights,
gradients, AdamW state and a margin, from the parameter counts) and waits, polling, up to
--wait-min minutes when other processes hold the memory; a part that still does not fit is
recorded as skipped. Run it niced, it keeps the CPU for about an hour:

    nice -n 10 .venv/bin/python benchmarks/full_size.py            # all parts
    nice -n 10 .venv/bin/python benchmarks/full_size.py --parts train --merge
    .venv/bin/python benchmarks/full_size.py --model tiny -o /tmp/fs  # check the script

Writes benchmarks/results/full_size.md and full_size.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _fullsize as fs
from _common import machine

RESULTS = Path(__file__).resolve().parent / "results" / "full_size"
PARTS = ("params", "flops", "render", "train", "ipf", "memory")
GIB = 2**30
RENDER_GUIDANCE = (2.0, 3.0)  # weights (1 - 2, 2 - 3, 3): no branch has weight 0
RENDER_FRAMES, RENDER_STEPS = 4, 2


# ---- children: one part each, last stdout line = its JSON result --------------------------------
def child_params(args: argparse.Namespace) -> dict[str, Any]:
    from signgen.models.factory import build_components

    comps = build_components(fs.model_config(args.model), device="meta")
    counts = fs.param_counts(comps)
    checks = {}
    if args.model == fs.PAPER_MODEL:
        for name, published in fs.PUBLISHED_PARAMS.items():
            checks[name] = {"count": counts[name], "published": published,
                            "ratio": counts[name] / published,
                            "ok": abs(counts[name] / published - 1) < 0.01}  # fmt: skip
    return {"counts": counts, "published_checks": checks}


def child_flops(args: argparse.Namespace) -> dict[str, Any]:
    return {"per_sample": fs.meta_flops(fs.model_config(args.model))}


def child_render(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from signgen.sampling.options import RenderOptions
    from signgen.sampling.pipeline import FPDMPipeline

    cfg = fs.model_config(args.model)
    t0 = time.perf_counter()
    comps = fs.build(cfg)
    pipe = FPDMPipeline.from_components(cfg, comps).eval()
    build_s = time.perf_counter() - t0
    image, kp = fs.example_clip(RENDER_FRAMES)
    opts = RenderOptions(steps=RENDER_STEPS, guidance=RENDER_GUIDANCE, batch_size=RENDER_FRAMES)
    unet = fs.CallTimer(pipe.unet)
    source = fs.CallTimer(pipe.source_encoder)
    clip = fs.CallTimer(pipe.ipf.vision_model) if pipe.ipf is not None else None
    decode = {"seconds": [], "finite": True}
    vae_decode = pipe.vae.decode

    def timed_decode(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        out = vae_decode(*a, **k)
        decode["seconds"].append(time.perf_counter() - t)
        decode["finite"] &= bool(torch.isfinite(out[0] if isinstance(out, tuple) else out.sample)
                                 .all())  # fmt: skip
        return out

    pipe.vae.decode = timed_decode
    t0 = time.perf_counter()
    with fs.AllocatorPeak() as mem:
        frames = np.concatenate(list(pipe.render(image, kp, opts)))
    seconds = time.perf_counter() - t0
    branches = pipe.guidance_plan(opts).num_branches
    checks = {
        "frames_shape": list(frames.shape) == [RENDER_FRAMES, *image.shape],
        "unet_outputs_finite": unet.finite,
        "decoded_finite": decode["finite"],
        "three_branches": branches == 3 and unet.batches == [3 * RENDER_FRAMES] * RENDER_STEPS,
        "source_encoded_once": len(source.seconds) == 1,
    }
    return {
        "build_s": build_s, "seconds": seconds, "frames": int(frames.shape[0]),
        "output_size": [int(frames.shape[2]), int(frames.shape[1])],
        "steps": RENDER_STEPS, "guidance": list(RENDER_GUIDANCE), "branches": branches,
        "unet_calls": len(unet.seconds), "unet_batch": unet.batches,
        "unet_call_s": unet.seconds,
        "unet_s_per_sample": float(np.mean(unet.seconds)) / max(1, unet.batches[0]),
        "source_encoder_calls": len(source.seconds), "source_encoder_s": source.seconds,
        "clip_calls": len(clip.seconds) if clip else 0, "clip_s": clip.seconds if clip else [],
        "vae_decode_s": decode["seconds"],
        "allocator_peak_gib": mem.peak / GIB, "checks": checks,
        "param_counts": fs.param_counts(comps),
    }  # fmt: skip


def child_train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    ckpt = args.checkpointing
    module, opt, tcfg = fs.fpdm_training(
        args.model, ["train.batch_size=1", f"train.gradient_checkpointing={str(ckpt).lower()}"]
    )
    module.train()
    batch = fs.example_batch(tuple(module.resolution), 1)
    unet = fs.CallTimer(module.denoiser.unet)
    # The UNet's first and last convolutions get a gradient whatever the recipe's per-sample
    # condition dropout drops (fusion MLP, source projector, pose encoder may get none).
    watch = {n: p.detach().clone() for n, p in module.denoiser.named_parameters()
             if n in ("unet.conv_in.weight", "unet.conv_out.weight")}  # fmt: skip
    phases: dict[str, fs.AllocatorPeak] = {}

    def track(name: str) -> fs.AllocatorPeak:
        phases[name] = fs.AllocatorPeak()
        return phases[name]

    t0 = time.perf_counter()
    step = fs.train_step(module, opt, [batch], tcfg.optim.grad_clip, track=track)
    seconds = time.perf_counter() - t0
    f, b, o = phases["forward"], phases["backward"], phases["optimizer"]
    grads = [p.grad for p in opt.param_groups[0]["params"] if p.grad is not None]
    params = dict(module.denoiser.named_parameters())
    checks = {
        "loss_finite": bool(torch.isfinite(torch.tensor(step["loss"]))),
        "grads_finite": all(bool(torch.isfinite(g).all()) for g in grads),
        "params_finite": all(bool(torch.isfinite(p).all()) for p in params.values()),
        "unet_updated": all(not torch.equal(params[n], v) for n, v in watch.items()),
        "checkpointing": bool(module.denoiser.unet.is_gradient_checkpointing) == ckpt,
    }
    no_grad = sorted({n.split(".")[0] for n, p in params.items()
                      if p.grad is None or not bool(p.grad.any())})  # fmt: skip
    return {
        "checkpointing": ckpt, "batch": 1, "seconds": seconds, **step,
        "modules_without_gradient": no_grad,
        "unet_calls": len(unet.seconds), "unet_forward_s": unet.seconds,
        "allocator_gib": {
            "forward_retained": f.end / GIB,
            "step_peak": max(f.peak, f.end + b.peak, f.end + b.end + o.peak) / GIB,
            "optimizer_peak": (f.end + b.end + o.peak) / GIB,
        },
        "checks": checks,
    }  # fmt: skip


def child_ipf(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    module, opt, tcfg = fs.ipf_training(args.model, ["train.batch_size=2"])
    module.train()
    batch = fs.example_batch(tuple(tcfg.data.resolution), 2)
    clip = fs.CallTimer(module.ipf.vision_model)
    t0 = time.perf_counter()
    step = fs.train_step(module, opt, [batch], tcfg.optim.grad_clip)
    grads = [p.grad for p in opt.param_groups[0]["params"] if p.grad is not None]
    checks = {
        "loss_finite": bool(torch.isfinite(torch.tensor(step["loss"]))),
        "grads_finite": bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads),
        "params_finite": all(bool(torch.isfinite(p).all()) for p in module.parameters()),
    }
    from signgen.config import load_yaml

    recipe_batch = load_yaml(fs.PAPER_IPF_RECIPE)["train"]["batch_size"]
    return {"batch": 2, "recipe_batch": recipe_batch, "seconds":
            time.perf_counter() - t0, **step, "clip_calls": len(clip.seconds),
            "clip_batch": clip.batches, "clip_forward_s": clip.seconds, "checks": checks}  # fmt: skip


def child_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Measurements behind the GPU memory model (see the module docstring)."""
    import torch

    bf16 = torch.bfloat16
    module, _opt, _tcfg = fs.fpdm_training(args.model, ["train.batch_size=1"])
    del _opt
    module.train()
    res = tuple(module.resolution)
    with torch.no_grad(), torch.autocast("cpu", dtype=bf16), fs.cuda_like_autocast_norms():
        with fs.AllocatorPeak() as enc:
            cond = module.conditions(fs.example_batch(res, 1))
    out: dict[str, Any] = {"frozen_encoders_autocast_peak_gib": enc.peak / GIB, "train": []}

    def conditions_of(b: int):
        return lambda batch, generator=None: {
            k: (None if v is None else torch.cat([v] * b)) for k, v in cond.items()
        }

    unet = module.denoiser.unet
    # Gradients already allocated, as from a step's second micro-batch on (and on every
    # step after the first when gradients are zeroed in place): backward adds into them,
    # so the figures below are activations and temporaries alone.
    trained = [p for p in module.parameters() if p.requires_grad]
    for p in trained:
        p.grad = torch.zeros_like(p)
    for ckpt in (False, True):
        unet.enable_gradient_checkpointing() if ckpt else unet.disable_gradient_checkpointing()
        for b in (1, 2):
            module.conditions = conditions_of(b)  # the frozen encoders' outputs, reused
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=bf16), fs.cuda_like_autocast_norms():
                with fs.AllocatorPeak() as f:
                    loss, _ = module(fs.example_batch(res, b))
            with fs.cuda_like_autocast_norms(), fs.AllocatorPeak() as bw:
                loss.backward()  # recomputed blocks must cast their norms as the forward did
            finite = bool(torch.isfinite(loss))
            del loss
            for p in trained:
                p.grad.zero_()
            out["train"].append({
                "checkpointing": ckpt, "batch": b, "seconds": time.perf_counter() - t0,
                "forward_retained_gib": f.end / GIB, "forward_peak_gib": f.peak / GIB,
                "backward_peak_gib": bw.peak / GIB, "backward_end_gib": bw.end / GIB,
                "peak_gib": max(f.peak, f.end + bw.peak) / GIB, "loss_finite": finite,
            })  # fmt: skip
            print(json.dumps(out["train"][-1]), file=sys.stderr, flush=True)
    del module.conditions
    module.zero_grad(set_to_none=True)

    # Inference in bf16 weights (FPDMPipeline.to(dtype=bf16)): one frame, two branches.
    den = module.denoiser.to(bf16).eval()
    cb = {k: None if v is None else v.to(bf16) for k, v in cond.items()}
    with torch.no_grad():
        drop = torch.tensor([True, False])
        with fs.AllocatorPeak() as inf:
            c = den.encode_conditions(torch.cat([cb["pose"]] * 2), torch.cat([cb["hidden"]] * 2),
                                      torch.cat([cb["fusion"]] * 2), drop_pose=drop,
                                      drop_source=drop, drop_fusion=drop)  # fmt: skip
            pred = den.denoise(torch.cat([cb["z0"]] * 2), torch.tensor([500, 500]), c)
        vae = module.vae.to(bf16)
        with fs.AllocatorPeak() as dec:
            img = vae.decode(cb["z0"] / vae.config.scaling_factor).sample
        enc_model = module.source_encoder.to(bf16)
        sh, sw = module.source_size
        with fs.AllocatorPeak() as src:
            enc_model(pixel_values=torch.zeros(1, 3, sh, sw, dtype=bf16))
    out["inference_bf16"] = {
        "denoiser_batch2_peak_gib": inf.peak / GIB,
        "vae_decode_batch1_peak_gib": dec.peak / GIB,
        "source_encoder_batch1_peak_gib": src.peak / GIB,
        "finite": bool(torch.isfinite(pred).all() and torch.isfinite(img).all()),
    }
    return out


CHILDREN = {"params": child_params, "flops": child_flops, "render": child_render,
            "train": child_train, "ipf": child_ipf, "memory": child_memory}  # fmt: skip


def run_child(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result = CHILDREN[args.child](args)
    result.update(wall_s=time.perf_counter() - t0, peak_rss_mib=fs.peak_rss_mib())
    print(json.dumps(result))
    return 0


# ---- parent ----------------------------------------------------------------------------------------
def needed_gib(part: str, counts: dict[str, int], checkpointing: bool) -> float:
    """Memory a part needs: fp32 weights (+ gradients and two AdamW moments of the trained
    weights) plus a margin for activations, measured at batch 1 by the part itself."""
    w = 4 * counts["total"] / GIB
    trained = 4 * counts["trainable_stage2"] / GIB
    clip = 4 * (counts["ipf_clip"] + counts["ipf_combiner"]) / GIB
    return {
        "params": 1.0, "flops": 1.0,
        "render": w + 5.0,
        "train": w + 3 * trained + (1.5 if checkpointing else 2.5),
        "ipf": 4 * clip + 3.0,
        "memory": w + trained + 8.0,
    }[part]  # fmt: skip


def wait_for_memory(need: float, wait_min: float) -> tuple[bool, float, float]:
    """(fits, seconds waited, MemAvailable GiB): poll every 30 s up to ``wait_min``."""
    t0 = time.time()
    while True:
        have = fs.mem_available_gib()
        if have >= need:
            return True, time.time() - t0, have
        if time.time() - t0 >= wait_min * 60:
            return False, time.time() - t0, have
        print(f"  waiting: {need:.1f} GiB needed, {have:.1f} GiB available", flush=True)
        time.sleep(30)


def spawn(part: str, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", part, "--model", args.model,
           "--threads", str(args.threads), *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = "\n".join(res.stderr.strip().splitlines()[-15:])
        return {"error": f"child exited {res.returncode}", "stderr_tail": tail}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    # Long: a benchmark script's options, then each part run in its own process and the
    # result files written, read top to bottom.
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--model", default=fs.PAPER_MODEL,
                    help=f"configs/model name (default {fs.PAPER_MODEL}; {fs.MINI_MODEL} checks "
                    "the script in seconds)")  # fmt: skip
    ap.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (default: all)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads per part (default 2)")
    ap.add_argument(
        "--wait-min",
        type=float,
        default=60.0,
        help="minutes to wait for free memory before a part is skipped (default 60)",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the parts of an earlier result that this run does not redo",
    )
    ap.add_argument("-o", "--output", type=Path, default=RESULTS,
                    help="result path without suffix: writes .json and .md (default "
                    "benchmarks/results/full_size)")  # fmt: skip
    ap.add_argument(
        "--train-variants",
        default="off,on",
        help="gradient checkpointing settings of the part train (default off,on)",
    )
    ap.add_argument(
        "--markdown-only",
        action="store_true",
        help="only rewrite the .md from the .json (after changing its layout)",
    )
    ap.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_child(args)
    if args.markdown_only:
        _write(args.output, json.loads(args.output.with_suffix(".json").read_text()))
        return 0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        print(f"full_size.py: unknown part {bad[0]!r}; choose from {', '.join(PARTS)}",
              file=sys.stderr)  # fmt: skip
        return 2
    json_path = args.output.with_suffix(".json")
    result: dict[str, Any] = {}
    if args.merge and json_path.is_file():
        result = json.loads(json_path.read_text())
        if result.get("model") != args.model:
            result = {}
    result.update(model=args.model, machine=machine(), threads=args.threads)
    result.setdefault("parts", {})
    argv_list = sys.argv[1:] if argv is None else argv
    command = "nice -n 10 .venv/bin/python benchmarks/full_size.py " + " ".join(argv_list)
    counts = spawn("params", args, [])["counts"]
    for part in parts:
        variants = [(False, [])]
        if part == "train":
            chosen = args.train_variants.split(",")
            variants = [(c == "on", ["--checkpointing"] if c == "on" else []) for c in chosen]
        for ckpt, extra in variants:
            key = f"train_checkpointing_{'on' if ckpt else 'off'}" if part == "train" else part
            need = needed_gib(part, counts, ckpt)
            fits, waited, have = wait_for_memory(need, args.wait_min)
            print(f"{key}: needs ~{need:.1f} GiB, {have:.1f} GiB available"
                  f"{f' after waiting {waited:.0f} s' if waited >= 1 else ''}", flush=True)  # fmt: skip
            meta = {"command": command.strip(), "date": _now(), "needed_gib": need,
                    "mem_available_gib": have, "waited_s": waited,
                    "load_average": machine()["load average (1/5/15 min)"]}  # fmt: skip
            if not fits:
                result["parts"][key] = {**meta, "skipped": f"needed {need:.1f} GiB, "
                                        f"{have:.1f} GiB available after {waited:.0f} s"}  # fmt: skip
                continue
            t0 = time.perf_counter()
            out = spawn(part, args, extra)
            result["parts"][key] = {**meta, **out}
            print(f"  {key}: {time.perf_counter() - t0:.0f} s"
                  f"{' ERROR ' + out['error'] if 'error' in out else ''}", flush=True)  # fmt: skip
            _write(args.output, result)  # after every part: a later crash keeps the earlier
    _write(args.output, result)
    print(args.output.with_suffix(".md").read_text())
    failed = [k for k, v in result["parts"].items() if "error" in v or not _checks_ok(v)]
    return 1 if failed else 0


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _checks_ok(part: dict[str, Any]) -> bool:
    checks = part.get("checks", {})
    pub = part.get("published_checks", {})
    return all(checks.values()) and all(c["ok"] for c in pub.values())


def _write(base: Path, result: dict[str, Any]) -> None:
    from signgen.fileio import atomic_write_text

    base.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(base.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    atomic_write_text(base.with_suffix(".md"), "\n".join(render_markdown(result)) + "\n")


def render_markdown(r: dict[str, Any]) -> list[str]:
    """The result as Markdown: one section per part that ran."""
    p = r["parts"]
    m = r["machine"]
    lines = [
        "# Full-size FPDM on CPU: the paper's model, random weights, end to end",
        "",
        f"- model: `configs/model/{r['model']}.yaml`, every component random-initialised "
        "from its inline architecture (nothing downloaded), fp32 on CPU",
        f"- machine: {platform.node()} {platform.machine()}, {m['nproc']} cores ({m['cpu']}), "
        f"{r['threads']} torch threads per part, each part in its own subprocess, shared with "
        "other processes (load average at each part's start below)",
        "- memory: *allocator peak* = the most bytes the torch CPU allocator held during the "
        "phase (torch.profiler allocation events); *peak RSS* = the part's process "
        "(`ru_maxrss`, includes the interpreter, libraries and freed pages glibc keeps)",
        "",
    ]
    lines += _md_params(p.get("params"))
    lines += _md_render(p.get("render"))
    lines += _md_train(p.get("train_checkpointing_off"), p.get("train_checkpointing_on"))
    lines += _md_ipf(p.get("ipf"))
    lines += _md_flops(p.get("flops"))
    lines += _md_memory(p.get("memory"))
    lines += ["## Runs", "", "| part | command | date | MemAvailable at start (GiB) | waited (s) "
              "| load average | wall (s) | peak RSS (GiB) |", "|---|---|---|---:|---:|---|---:|---:|"]  # fmt: skip
    for key, v in p.items():
        wall = f"{v['wall_s']:.0f}" if "wall_s" in v else "-"
        rss = f"{v['peak_rss_mib'] / 1024:.2f}" if "peak_rss_mib" in v else "-"
        status = v.get("skipped") or v.get("error")
        lines.append(f"| {key}{' (' + status + ')' if status else ''} | `{v.get('command', '')}` | "
                     f"{v.get('date', '')} | {v.get('mem_available_gib', float('nan')):.1f} | "
                     f"{v.get('waited_s', 0):.0f} | {v.get('load_average', '')} | {wall} | {rss} |")  # fmt: skip
    return lines


def _checks_line(v: dict[str, Any]) -> list[str]:
    checks = v.get("checks", {})
    text = ", ".join(f"{k} {'ok' if ok else 'FAILED'}" for k, ok in checks.items())
    return [f"Checks: {text}.", ""]


def _not_run(v: dict[str, Any] | None) -> list[str] | None:
    if v is None:
        return ["not run", ""]
    if "skipped" in v or "error" in v:
        return [f"**{v.get('skipped') or v.get('error')}**", "", "```", v.get("stderr_tail", ""),
                "```", ""]  # fmt: skip
    return None


def _md_params(v: dict[str, Any] | None) -> list[str]:
    lines = ["## Parameters", ""]
    if (skip := _not_run(v)) is not None:
        return lines + skip
    c = v["counts"]
    pub = v["published_checks"]
    lines += ["| component | parameters | published | ratio |", "|---|---:|---:|---:|"]
    for name in ("unet", "vae", "source_encoder", "ipf_clip", "ipf_combiner", "pose_encoder",
                 "source_projector", "fusion_mlp", "total"):  # fmt: skip
        if name in pub:
            q = pub[name]
            lines.append(f"| {name} | {c[name] / 1e6:.2f}M | {q['published'] / 1e6:.1f}M | "
                         f"{q['ratio']:.4f}{'' if q['ok'] else ' **off by > 1 %**'} |")  # fmt: skip
        else:
            lines.append(f"| {name} | {c[name] / 1e6:.2f}M | | |")
    lines += ["", f"Trained in stage 2 (UNet, pose encoder, source projector, fusion MLP): "
              f"{c['trainable_stage2'] / 1e6:.2f}M.", ""]  # fmt: skip
    return lines


def _md_render(v: dict[str, Any] | None) -> list[str]:
    lines = [f"## Render: {RENDER_STEPS} steps, {RENDER_FRAMES} frames, 512x512, all three "
             "guidance branches", ""]  # fmt: skip
    if (skip := _not_run(v)) is not None:
        return lines + skip
    calls = ", ".join(f"{s:.1f}" for s in v["unet_call_s"])
    lines += [
        f"`FPDMPipeline.render` of the example clip (first frame {v['output_size'][0]}x"
        f"{v['output_size'][1]}, letterboxed to 512x512 and back), guidance "
        f"{v['guidance'][0]:g}, {v['guidance'][1]:g} ({v['branches']} branches), batch "
        f"{RENDER_FRAMES}: {v['unet_calls']} UNet calls of batch {v['unet_batch'][0]}.",
        "",
        "| what | value |",
        "|---|---:|",
        f"| build (random init) | {v['build_s']:.0f} s |",
        f"| render total | {v['seconds']:.0f} s |",
        f"| UNet calls (batch {v['unet_batch'][0]}) | {calls} s |",
        f"| UNet seconds per sample | {v['unet_s_per_sample']:.2f} s |",
        f"| source encoder (DINOv2-L, 1297 tokens), calls | {v['source_encoder_calls']} "
        f"({', '.join(f'{s:.1f}' for s in v['source_encoder_s'])} s) |",
        f"| CLIP ViT-L/14 calls (source once, then the poses) | {v['clip_calls']} "
        f"({', '.join(f'{s:.1f}' for s in v['clip_s'])} s) |",
        f"| VAE decode of {RENDER_FRAMES} frames | "
        f"{', '.join(f'{s:.1f}' for s in v['vae_decode_s'])} s |",
        f"| allocator peak above the weights | {v['allocator_peak_gib']:.2f} GiB |",
        f"| peak RSS | {v['peak_rss_mib'] / 1024:.2f} GiB |",
        "",
    ]
    return lines + _checks_line(v)


def _md_train(off: dict[str, Any] | None, on: dict[str, Any] | None) -> list[str]:
    lines = ["## Stage 2: one training step, batch 1", "",
             "FPDMModule + AdamW as `signgen train fpdm` builds them from "
             "`configs/recipes/fpdm_phoenix_b6.yaml` (batch 1, fp32 on CPU: the loop's "
             "autocast is for GPUs), one optimizer step: zero grads, forward, backward, "
             "gradient clipping, AdamW (its two moments are allocated in this first step).",
             ""]  # fmt: skip
    runs = [("off", off), ("on", on)]
    for name, v in runs:
        if (skip := _not_run(v)) is not None:
            lines += [f"Checkpointing {name}:", "", *skip]
    done = [(n, v) for n, v in runs if _not_run(v) is None]
    if not done:
        return lines
    lines += ["| | " + " | ".join(f"checkpointing {n}" for n, _ in done) + " |",
              "|---|" + "---:|" * len(done)]  # fmt: skip

    def row(label: str, fn) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(v) for _, v in done) + " |")

    row("step total", lambda v: f"{v['seconds']:.0f} s")
    row("forward (frozen encoders + denoiser)", lambda v: f"{v['forward_s']:.0f} s")
    row("UNet forward", lambda v: f"{sum(v['unet_forward_s']):.0f} s")
    row("backward", lambda v: f"{v['backward_s']:.0f} s")
    row("optimizer (clip + AdamW)", lambda v: f"{v['optimizer_s']:.1f} s")
    row("loss / grad norm", lambda v: f"{v['loss']:.4f} / {v['grad_norm']:.3g}")
    row(
        "allocator: kept for backward",
        lambda v: f"{v['allocator_gib']['forward_retained']:.2f} GiB",
    )
    row(
        "allocator: step peak above the weights",
        lambda v: f"{v['allocator_gib']['step_peak']:.2f} GiB",
    )
    row("peak RSS", lambda v: f"{v['peak_rss_mib'] / 1024:.2f} GiB")
    row("modules with all-zero gradients (dropped conditions)",
        lambda v: "not recorded" if "modules_without_gradient" not in v
        else ", ".join(v["modules_without_gradient"]) or "none")  # fmt: skip
    row("checks", lambda v: ", ".join(f"{k} {'ok' if ok else 'FAILED'}"
                                       for k, ok in v["checks"].items()))  # fmt: skip
    lines.append("")
    earlier = [n for n, v in done if "params_updated" in v["checks"]]
    if earlier:
        # Records of the first version of this part: unseeded draws, and an update check on
        # the fusion MLP, which the recipe's per-sample condition dropout can leave without
        # any gradient at batch 1 (the current check watches the UNet's first and last
        # convolutions, which get a gradient whatever is dropped).
        lines += [f"Recorded before the step was seeded and before the update check moved "
                  f"to the UNet's ends (checkpointing {' and '.join(earlier)}): "
                  "`params_updated` required both the UNet's first convolution and the fusion "
                  "MLP's first layer to change, and the fusion MLP's gradient the recipe's "
                  "condition dropout (`fpdm.drop_fusion` 0.2) can zero at batch 1, and the "
                  "two runs drew different noise, timesteps and dropout, so their losses "
                  "differ. Re-run `--parts train --merge` for the current checks.", ""]  # fmt: skip
    elif len(done) == 2:  # same seed, same draws: checkpointing must not change the numbers
        a, b = off, on
        same = all(abs(a[k] - b[k]) <= 1e-4 * abs(a[k]) for k in ("loss", "grad_norm"))
        lines += [f"Same loss and gradient norm with and without checkpointing (relative "
                  f"1e-4): {'yes' if same else 'NO'}.", ""]  # fmt: skip
    return lines


def _md_ipf(v: dict[str, Any] | None) -> list[str]:
    lines = ["## Stage 1 (IPF): one training step, batch 2", ""]
    if (skip := _not_run(v)) is not None:
        return lines + skip
    lines += [
        "IPFModule (CLIP ViT-L/14 + Combiner, source-enhanced InfoNCE) + AdamW as `signgen "
        "train ipf` builds them from `configs/recipes/ipf_phoenix_a3.yaml`, batch 2 (the "
        f"smallest with an in-batch negative): one CLIP call of batch {v['clip_batch'][0]} "
        "(source, pose image and target of each pair).",
        "",
        "| what | value |",
        "|---|---:|",
        f"| step total | {v['seconds']:.0f} s (forward {v['forward_s']:.0f}, backward "
        f"{v['backward_s']:.0f}, optimizer {v['optimizer_s']:.1f}) |",
        f"| loss / grad norm | {v['loss']:.4f} / {v['grad_norm']:.3g} |",
        f"| peak RSS | {v['peak_rss_mib'] / 1024:.2f} GiB |",
        "",
    ]
    return lines + _checks_line(v)


def _md_flops(v: dict[str, Any] | None) -> list[str]:
    lines = ["## FLOPs per sample (counted, meta device)", ""]
    if (skip := _not_run(v)) is not None:
        return lines + skip
    f = v["per_sample"]
    lines += ["torch.utils.flop_counter.FlopCounterMode on the meta device (2 FLOPs per "
              "multiply-add; matmuls, convolutions, attention).", "",
              "| piece | GFLOP |", "|---|---:|"]  # fmt: skip
    for k, val in f.items():
        if k != "source_tokens":
            lines.append(f"| {k} | {val / 1e9:,.1f} |")
    lines += ["", f"Source tokens: {f['source_tokens']}.", ""]
    return lines


def _md_memory(v: dict[str, Any] | None) -> list[str]:
    lines = ["## Activation memory for the GPU model (bf16 autocast on CPU)", ""]
    if (skip := _not_run(v)) is not None:
        return lines + skip
    lines += [
        "The denoiser's training forward (frozen encoders' outputs computed once, then "
        "reused) under CPU bf16 autocast, group and layer norms in fp32 as CUDA autocast "
        "runs them; backward outside autocast, as in the loop, into gradients already "
        "allocated (as from a step's second micro-batch on). Allocator bytes relative to the "
        "weights and gradients: activations, autocast's bf16 weight copies, temporaries.",
        "",
        "| checkpointing | batch | kept for backward (GiB) | forward peak | backward peak "
        "above kept | step peak (GiB) | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in v["train"]:
        lines.append(f"| {'on' if t['checkpointing'] else 'off'} | {t['batch']} | "
                     f"{t['forward_retained_gib']:.2f} | {t['forward_peak_gib']:.2f} | "
                     f"{t['backward_peak_gib']:.2f} | {t['peak_gib']:.2f} | {t['seconds']:.0f} |")  # fmt: skip
    i = v["inference_bf16"]
    lines += [
        "",
        f"Frozen encoders (VAE encoder, DINOv2-L, CLIP x2) at batch 1 under autocast: peak "
        f"{v['frozen_encoders_autocast_peak_gib']:.2f} GiB above the weights.",
        "",
        "Inference, bf16 weights, no autocast (allocator peak above the weights): "
        f"denoiser at batch 2 (one frame, two guidance branches) "
        f"{i['denoiser_batch2_peak_gib']:.2f} GiB; VAE decode of one 512x512 frame "
        f"{i['vae_decode_batch1_peak_gib']:.2f} GiB; source encoder of one frame "
        f"{i['source_encoder_batch1_peak_gib']:.2f} GiB; outputs finite: {i['finite']}.",
        "",
    ]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
