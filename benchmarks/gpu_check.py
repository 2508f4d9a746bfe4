"""One-shot GPU check of the full-size FPDM: at most 8 minutes on one GPU, one JSON and one
Markdown file. Run it through tools/gpu_check.sh.

Sections, in order, each skipped with a note when the time left cannot cover it:

  tests        the CUDA-marked tests (pytest -m gpu)
  render       throughput of FPDMPipeline.render_frames at the model resolution (512x512),
               20 steps, the paper's guidance 2, 2 (two branches per UNet call), bf16, at
               batch 8, 16 and 32: frames/s, and the UNet's MFU from its counted FLOPs
  train        one optimizer step of stage 2 at the paper's batch (micro-batch 8 x 4
               accumulation, configs/recipes/fpdm_phoenix_b6.yaml) under bf16 autocast, with
               and without gradient checkpointing, and with the frozen encoders in bf16:
               seconds and peak GPU memory
  render_many  `signgen render-many` with one GPU worker on three example clips
  speed        each render speed option (signgen.speed) on and off against the
               bf16 baseline at batch 16: fp32 weights, eager attention, channels-last,
               torch.compile of the UNet's transformer blocks, VAE slicing (batch 32)

The model is the paper's (configs/model/fpdm_sd21_dinov2l_512.yaml) with random weights:
speed and memory do not depend on the weights. FLOPs come from torch's FlopCounterMode on
the meta device; MFU = counted FLOPs / seconds / --peak-tflops (default 790, an H200's
dense bf16 rate). --cpu-smoke runs the same code at miniature size (configs/model/tiny.yaml,
2 steps, batches of 2 to 8, :data:`SMOKE`) on the CPU in about a minute, so CI keeps it
working.

    tools/gpu_check.sh                      # writes benchmarks/results/gpu_check.{json,md}
    tools/gpu_check.sh --cpu-smoke --out out/gpu_check_smoke
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _fullsize as fs

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("tests", "render", "train", "render_many", "speed")
GIB = 2**30
GUIDANCE = (2.0, 2.0)  # the paper's: branches uncond and full


@dataclass(frozen=True)
class Sizes:
    """How much each section does: the paper's settings on a GPU, miniature on the CPU."""

    steps: int = 20  # render steps (the paper's)
    render_batches: tuple[int, ...] = (8, 16, 32)
    speed_batch: int = 16  # frames per batch of the speed-option runs (x2 for VAE slicing)
    speed_steps: int = 5
    train_batch: tuple[int, int] | None = None  # (micro-batch, accumulation); None = recipe's
    clip_frames: int = 32  # frames of each render-many clip


FULL = Sizes()
SMOKE = Sizes(steps=2, render_batches=(2, 4, 8), speed_batch=4, speed_steps=2,
              train_batch=(2, 2), clip_frames=4)  # fmt: skip
# Seconds each section is expected to need at least on an H200 (from the predicted speeds
# in docs/hardware.md plus start-up; to be replaced by the first GPU run's timings); a
# section starts only when that much of the budget is left.
NEEDS_S = {"tests": 30, "build": 60, "render": 45, "train": 60, "render_many": 90, "speed": 60}


class OutOfTime(BaseException):  # not caught by library code catching Exception
    """The whole budget is spent (SIGALRM)."""


class Check:
    """Device, budget and the result being written."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args = args
        self.smoke = args.cpu_smoke
        self.sizes = SMOKE if self.smoke else FULL
        self.device = torch.device("cpu" if self.smoke else "cuda")
        self.t0 = time.monotonic()
        self.result: dict[str, Any] = {"sections": {}, "notes": []}

    # -- time ---------------------------------------------------------------------------------
    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.t0)

    # -- device -------------------------------------------------------------------------------
    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def peak(self) -> Iterator[dict[str, float]]:
        """Peak memory inside the block: CUDA ``max_memory_allocated`` (GiB); on the CPU
        (smoke run) the process's peak RSS so far, which costs nothing to read."""
        import torch

        out: dict[str, float] = {}
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            yield out
            torch.cuda.synchronize()
            out["peak_gib"] = torch.cuda.max_memory_allocated() / GIB
        else:
            yield out
            out["peak_gib"] = fs.peak_rss_mib() / 1024

    def free(self) -> None:
        """Return cached GPU memory (the next section, or a render-many worker process on
        the same GPU, starts from what is really in use)."""
        import gc

        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- sections -------------------------------------------------------------------------------
    def section(self, name: str, fn: Callable[[], dict[str, Any]], need_s: float) -> None:
        """Run one section if ``need_s`` seconds are left; record its result, its error or
        why it was skipped, and write the files."""
        if name not in self.args.sections:
            return
        if self.left() < need_s:
            self.result["sections"][name] = {
                "skipped": f"{self.left():.0f} s of the budget left, the section needs "
                f"~{need_s:.0f} s"
            }
            self.write()
            return
        t = time.monotonic()
        print(f"gpu_check: {name} ({self.left():.0f} s left)", file=sys.stderr, flush=True)
        try:
            out = fn()
        except OutOfTime:
            out = {"error": "stopped: the time budget ran out during this section"}
        except Exception as exc:
            out = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                   "traceback": traceback.format_exc().splitlines()[-8:]}  # fmt: skip
        out["seconds"] = time.monotonic() - t
        self.free()
        self.result["sections"][name] = out
        self.write()

    def write(self) -> None:
        from signgen.fileio import atomic_write_text

        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        self.result["elapsed_s"] = time.monotonic() - self.t0
        atomic_write_text(out / "gpu_check.json", json.dumps(self.result, indent=1) + "\n")
        atomic_write_text(out / "gpu_check.md", "\n".join(markdown(self.result)) + "\n")


# ---- tests --------------------------------------------------------------------------------------
def run_tests(chk: Check) -> dict[str, Any]:
    """``pytest -m gpu`` on the test files that mark a test ``gpu`` (collecting only those
    is much faster than the whole suite); counts from its summary line."""
    files = sorted(str(p) for p in (fs.REPO / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text(encoding="utf-8"))  # fmt: skip
    if not files:
        return {"command": "pytest -m gpu", "summary": "no test is marked gpu", "counts": {},
                "returncode": 5}  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    timeout = max(10.0, min(chk.left() - 5, 180.0))
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                             cwd=fs.REPO)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"pytest -m gpu did not finish in {timeout:.0f} s"}
    tail = res.stdout.strip().splitlines()[-1:] or [""]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|deselected)",
                                                tail[0])}  # fmt: skip
    out = {"command": "pytest -m gpu " + " ".join(Path(f).name for f in files),
           "returncode": res.returncode, "summary": tail[0], "counts": counts}  # fmt: skip
    if res.returncode not in (0, 5):  # 5: no test collected
        out["failures"] = [ln for ln in res.stdout.splitlines() if ln.startswith("FAILED")][:10]
    return out


# ---- model --------------------------------------------------------------------------------------
class Model:
    """The random-weight components (built once, on CPU), FLOP counts, example inputs."""

    def __init__(self, chk: Check) -> None:
        name = fs.MINI_MODEL if chk.smoke else fs.PAPER_MODEL
        self.name = name
        self.cfg = fs.model_config(name)
        t = time.monotonic()
        self.comps = fs.build(self.cfg)
        self.build_s = time.monotonic() - t
        self.flops = fs.meta_flops(self.cfg)
        self.params = fs.param_counts(self.comps)
        self.image, self.kp = fs.example_clip(max(chk.sizes.render_batches))

    def pipeline(self, chk: Check):
        """FPDMPipeline in bf16 on the device (a copy: the components stay for training)."""
        import torch

        from signgen.sampling.pipeline import FPDMPipeline

        pipe = FPDMPipeline.from_components(self.cfg, copy.deepcopy(self.comps)).eval()
        return pipe.to(chk.device, torch.bfloat16)

    def frame_flops(self, branches: int, steps: int, clip_frames: int) -> float:
        """Counted FLOPs per rendered frame (source encoding spread over the clip)."""
        f = self.flops
        per_frame = (steps * branches * f["unet_forward"] + branches * f["condition_encoders"]
                     + f.get("clip_embed", 0) + f.get("combiner", 0) + f["vae_decode"])  # fmt: skip
        return per_frame + (f["source_encoder"] + f.get("clip_embed", 0)) / clip_frames


def render_once(chk: Check, model: Model, pipe: Any, batch: int, steps: int) -> dict[str, Any]:
    """Time one ``render_frames`` batch after a warm-up batch; UNet calls timed apart."""
    from signgen.sampling.options import RenderOptions

    opts = RenderOptions(steps=steps, guidance=GUIDANCE, batch_size=batch)
    src = pipe.prepare_clip(model.image, opts)
    points, idx = model.kp.points[:batch], list(range(batch))
    pipe.render_frames([src] * batch, points, idx, opts.replace(steps=2))
    unet = fs.CallTimer(pipe.unet, chk.sync)
    try:
        with chk.peak() as mem:
            chk.sync()
            t = time.perf_counter()
            frames = pipe.render_frames([src] * batch, points, idx, opts)
            chk.sync()
            seconds = time.perf_counter() - t
    finally:
        unet.remove()
    nb = pipe.guidance_plan(opts).num_branches
    unet_flops = sum(unet.batches) * model.flops["unet_forward"]
    unet_s = sum(unet.seconds)
    peak = chk.args.peak_tflops * 1e12
    return {
        "batch": batch, "steps": steps, "branches": nb, "seconds": seconds,
        "frames_per_s": batch / seconds, "unet_calls": len(unet.seconds),
        "unet_batch": unet.batches[0], "unet_s": unet_s,
        "unet_mfu": unet_flops / unet_s / peak,
        "model_mfu": model.frame_flops(nb, steps, len(model.kp)) * batch / seconds / peak,
        "peak_gib": mem["peak_gib"], "finite": unet.finite,
        "frames_ok": len(frames) == batch and frames[0].shape == model.image.shape,
    }  # fmt: skip


def run_render(chk: Check, model: Model) -> dict[str, Any]:
    pipe = model.pipeline(chk)
    rows = []
    for b in chk.sizes.render_batches:
        if chk.left() < 15:
            rows.append({"batch": b, "skipped": "time budget"})
            continue
        rows.append(render_once(chk, model, pipe, b, chk.sizes.steps))
    return {"dtype": "bf16", "guidance": list(GUIDANCE), "rows": rows,
            "flops_per_unet_sample": model.flops["unet_forward"]}  # fmt: skip


# ---- training -----------------------------------------------------------------------------------
def run_train(chk: Check, model: Model) -> dict[str, Any]:
    """One optimizer step at the recipe's batch, checkpointing off / on, frozen encoders
    fp32 / bf16; each after a warm-up step (AdamW's moments, kernel autotuning)."""
    import torch

    from signgen.speed import SpeedOptions, apply_training_options

    # A copy of the components: the frozen-encoder variant changes them in place.
    over = []
    if chk.sizes.train_batch is not None:
        over = [f"train.batch_size={chk.sizes.train_batch[0]}",
                f"train.grad_accum={chk.sizes.train_batch[1]}"]  # fmt: skip
    module, opt, tcfg = fs.fpdm_training(model.name, over, device=chk.device,
                                         comps=copy.deepcopy(model.comps))  # fmt: skip
    module.train()
    micro, accum = tcfg.train.batch_size, tcfg.train.grad_accum
    batches = [fs.example_batch(tuple(module.resolution), micro) for _ in range(accum)]
    unet = module.denoiser.unet
    rows = []
    variants = [("off", "fp32"), ("on", "fp32"), ("on", "bf16")]
    for ckpt, frozen in variants:
        if chk.left() < 20:
            rows.append(
                {"checkpointing": ckpt, "frozen_encoders": frozen, "skipped": "time budget"}
            )
            continue
        unet.enable_gradient_checkpointing() if ckpt == "on" else unet.disable_gradient_checkpointing()
        if frozen == "bf16":
            apply_training_options(module, SpeedOptions(frozen_dtype="bf16"))
        row: dict[str, Any] = {"checkpointing": ckpt, "frozen_encoders": frozen,
                               "micro_batch": micro, "grad_accum": accum}  # fmt: skip
        oom = False
        try:
            fs.train_step(module, opt, batches[:1], tcfg.optim.grad_clip, torch.bfloat16, chk.sync)
            with chk.peak() as mem:
                t = time.perf_counter()
                step = fs.train_step(module, opt, batches, tcfg.optim.grad_clip, torch.bfloat16,
                                     chk.sync)  # fmt: skip
                row["seconds"] = time.perf_counter() - t
            row.update(step, peak_gib=mem["peak_gib"],
                       samples_per_s=micro * accum / row["seconds"])  # fmt: skip
        except torch.OutOfMemoryError:
            oom = True  # cleaned up below, once the traceback no longer holds the tensors
        if oom:
            row["error"] = "out of memory"
            opt.zero_grad(set_to_none=True)
            chk.free()
        rows.append(row)
    del module, opt  # freed by Check.section: the next sections start from nothing
    return {"recipe": str(fs.PAPER_FPDM_RECIPE.relative_to(fs.REPO)), "amp": "bf16",
            "rows": rows}  # fmt: skip


# ---- render-many -----------------------------------------------------------------------------------
def run_render_many(chk: Check, model: Model) -> dict[str, Any]:
    """`signgen render-many` with one worker on three example clips (a model folder saved
    from the bf16 pipeline)."""
    from pipelines.ledger import read_ledger

    frames, steps, batch = chk.sizes.clip_frames, chk.sizes.steps, chk.sizes.speed_batch
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        pipe = model.pipeline(chk)
        pipe.to("cpu").save_pretrained(work / "model")
        del pipe
        rows = ["clip_id,video,keypoints,seed"]
        _image, kp = fs.example_clip(frames + 8)
        for i in range(3):  # three clips starting at other poses
            kp.slice(i * 4, i * 4 + frames).save(work / f"clip{i}.json")
            rows.append(f"clip{i},{fs.EXAMPLES / 'first_frame.png'},clip{i}.json,{i}")
        (work / "clips.csv").write_text("\n".join(rows) + "\n")
        device = ["--device", "cpu", "--num-cpus", "2", "--threads-per-worker", "1"] if chk.smoke else [
            "--device", "cuda", "--gpus-per-worker", "1"]  # fmt: skip
        cmd = [sys.executable, "-c", "from pipelines.app import main; raise SystemExit(main())",
               "render-many", "--manifest", str(work / "clips.csv"), "--out", str(work / "out"),
               "--model", str(work / "model"), "--workers", "1", "--steps", str(steps),
               "--batch-size", str(batch), "--dtype", "bf16", "-q", *device]  # fmt: skip
        t = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, check=False,
                             timeout=max(10.0, chk.left() - 5))  # fmt: skip
        seconds = time.perf_counter() - t
        ledger = read_ledger(work / "out" / "ledger.jsonl")
        done = [e for e in ledger.values() if e.status == "done"]
        videos = sorted(p.name for p in (work / "out").glob("*.mp4"))
    summary = [ln for ln in res.stdout.splitlines() if "rendered" in ln]
    m = re.search(r"\(([\d.]+) frames in ([\d.]+) s", summary[0]) if summary else None
    out = {"command": "signgen render-many --workers 1 " + " ".join(device) + " --dtype bf16 "
           f"--steps {steps} --batch-size {batch}", "returncode": res.returncode,
           "clips": 3, "frames_per_clip": frames, "videos": len(videos),
           "ledger_done": len(done), "seconds": seconds,
           "summary": summary[0] if summary else None}  # fmt: skip
    if m:
        out.update(frames=int(float(m.group(1))), job_s=float(m.group(2)),
                   frames_per_s=float(m.group(1)) / float(m.group(2)))  # fmt: skip
    if res.returncode != 0:
        out["error"] = f"render-many exited {res.returncode}"
        out["stderr_tail"] = res.stderr.strip().splitlines()[-8:]
    return out


# ---- speed options ---------------------------------------------------------------------------------
def run_speed(chk: Check, model: Model) -> dict[str, Any]:
    """Each render option on and off against the bf16 baseline, same batch and steps."""
    import torch

    from signgen import speed

    pipe = model.pipeline(chk)

    sb = chk.sizes.speed_batch

    def measure(batch: int) -> dict[str, Any]:
        return render_once(chk, model, pipe, batch, chk.sizes.speed_steps)

    def toggle_dtype(on: bool) -> None:
        pipe.to(dtype=torch.float32 if on else torch.bfloat16)

    def toggle_attention(on: bool) -> None:
        speed.set_attention(pipe.unet, "eager" if on else "sdpa")
        speed.set_attention(pipe.vae, "eager" if on else "sdpa")

    def toggle_channels_last(on: bool) -> None:
        fmt = torch.channels_last if on else torch.contiguous_format
        for m in (pipe.unet, pipe.vae, pipe.pose_encoder):
            m.to(memory_format=fmt)

    def toggle_compile(on: bool) -> None:
        if on:
            speed.compile_repeated_blocks(pipe.unet, "eager" if chk.smoke else "inductor")
        else:
            for m in pipe.unet.modules():
                m._compiled_call_impl = None

    def toggle_slicing(on: bool) -> None:
        speed.set_vae_slicing(pipe.vae, on)

    options = [  # (name, what "on" means, toggle, batch)
        ("fp32 weights", "fp32 instead of bf16", toggle_dtype, sb),
        ("eager attention", "explicit softmax(QK^T)V instead of SDPA", toggle_attention,
         sb),
        ("channels-last", "NHWC UNet, VAE, pose encoder", toggle_channels_last, sb),
        ("torch.compile", "UNet transformer blocks compiled (first call not timed)",
         toggle_compile, sb),
        ("VAE slicing", "decode one frame at a time", toggle_slicing, 2 * sb),
    ]  # fmt: skip
    rows = []
    baselines: dict[int, dict[str, Any]] = {}
    for name, what, toggle, batch in options:
        if chk.left() < 25:
            rows.append({"option": name, "skipped": "time budget"})
            continue
        if batch not in baselines:
            baselines[batch] = measure(batch)
        row: dict[str, Any] = {"option": name, "on_means": what, "batch": batch,
                               "off": _brief(baselines[batch])}  # fmt: skip
        oom = False
        try:
            toggle(True)
            row["on"] = _brief(measure(batch))
            row["speedup"] = row["off"]["seconds"] / row["on"]["seconds"]
        except torch.OutOfMemoryError:
            oom = True
        finally:
            toggle(False)
        if oom:
            row["error"] = "out of memory"
            chk.free()
        rows.append(row)
    return {"baseline": "bf16 weights, SDPA attention, contiguous, eager, no slicing",
            "steps": chk.sizes.speed_steps, "rows": rows}  # fmt: skip


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("seconds", "frames_per_s", "unet_mfu", "peak_gib", "finite")}


# ---- Markdown ---------------------------------------------------------------------------------------
def markdown(r: dict[str, Any]) -> list[str]:
    """The result as Markdown, one table per section."""
    s = r["sections"]
    lines = ["# GPU check: the full-size FPDM", "",
             *(f"- {k}: {v}" for k, v in r.get("setup", {}).items()), "",
             *(f"- note: {n}" for n in r["notes"]), ""]  # fmt: skip

    def head(name: str, title: str) -> bool:
        lines.extend([f"## {title}", ""])
        v = s.get(name)
        if v is None:
            lines.extend(["not run", ""])
            return False
        if "skipped" in v or "error" in v:
            lines.extend([f"**{v.get('skipped') or v.get('error')}**", ""])
            return "rows" in v
        return True

    if head("tests", "CUDA-marked tests (pytest -m gpu)"):
        lines += [f"`{s['tests']['summary']}` (exit {s['tests']['returncode']})", ""]
        lines += [f"- {f}" for f in s["tests"].get("failures", [])]
    z = r["setup"]["sizes"]
    if head("render", f"Render throughput ({z['steps']} steps, guidance 2, 2, bf16)"):
        lines += ["| batch | frames/s | s per batch | UNet calls x batch | UNet MFU | "
                  "end-to-end MFU | peak (GiB) | finite |", "|---:|---:|---:|---|---:|---:|---:|---|"]  # fmt: skip
        for x in s["render"]["rows"]:
            if "skipped" in x:
                lines.append(f"| {x['batch']} | skipped: {x['skipped']} | | | | | | |")
                continue
            lines.append(f"| {x['batch']} | {x['frames_per_s']:.2f} | {x['seconds']:.2f} | "
                         f"{x['unet_calls']} x {x['unet_batch']} | {x['unet_mfu']:.1%} | "
                         f"{x['model_mfu']:.1%} | {x['peak_gib']:.2f} | {x['finite']} |")  # fmt: skip
        lines.append("")
    if head("train", "Training step (stage 2, recipe batch, bf16 autocast)"):
        lines += ["| checkpointing | frozen encoders | batch | s per step | samples/s | "
                  "peak (GiB) | loss |", "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
        for x in s["train"]["rows"]:
            if "seconds" not in x:
                lines.append(f"| {x['checkpointing']} | {x['frozen_encoders']} | | "
                             f"{x.get('skipped') or x.get('error')} | | | |")  # fmt: skip
                continue
            lines.append(f"| {x['checkpointing']} | {x['frozen_encoders']} | {x['micro_batch']} "
                         f"x {x['grad_accum']} | {x['seconds']:.2f} | {x['samples_per_s']:.1f} | "
                         f"{x['peak_gib']:.2f} | {x['loss']:.4f} |")  # fmt: skip
        lines.append("")
    if head("render_many", "render-many, one worker"):
        x = s["render_many"]
        lines += [f"`{x['command']}`: {x['videos']} videos of {x['clips']}, {x['ledger_done']} "
                  f"in the ledger; {x.get('summary')}", ""]  # fmt: skip
    if head("speed", f"Speed options, {z['speed_steps']} steps, each on vs the bf16 baseline"):
        lines += ["| option (on =) | batch | s off | s on | speed-up | peak off / on (GiB) |",
                  "|---|---:|---:|---:|---:|---|"]  # fmt: skip
        for x in s["speed"]["rows"]:
            if "on" not in x:
                lines.append(f"| {x['option']} | | | {x.get('skipped') or x.get('error')} | | |")
                continue
            lines.append(f"| {x['option']} ({x['on_means']}) | {x['batch']} | "
                         f"{x['off']['seconds']:.2f} | {x['on']['seconds']:.2f} | "
                         f"{x['speedup']:.2f}x | {x['off']['peak_gib']:.2f} / "
                         f"{x['on']['peak_gib']:.2f} |")  # fmt: skip
        lines.append("")
    lines += [f"Elapsed: {r.get('elapsed_s', 0):.0f} s of a {r['setup']['budget_s']} s budget.", ""]
    return lines


# ---- main -------------------------------------------------------------------------------------------
def setup_info(chk: Check) -> dict[str, Any]:
    import torch

    info = {"command": "tools/gpu_check.sh " + " ".join(chk.args.argv),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
            "torch": torch.__version__, "device": str(chk.device),
            "budget_s": chk.args.budget_s, "peak_tflops": chk.args.peak_tflops,
            "sizes": asdict(chk.sizes)}  # fmt: skip
    if chk.device.type == "cuda":
        p = torch.cuda.get_device_properties(chk.device)
        info["gpu"] = f"{p.name}, {p.total_memory / GIB:.0f} GiB, CUDA {torch.version.cuda}"
    return info


def main(argv: list[str] | None = None) -> int:
    # Long: the check's options, then its sections one after another (each a call), and
    # the JSON and Markdown files written, read top to bottom.
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="miniature model on the CPU (CI): the same code in about a minute",
    )
    ap.add_argument("--out", default=None,
                    help="folder for gpu_check.json and gpu_check.md (default "
                    "benchmarks/results, or out/gpu_check_smoke with --cpu-smoke)")  # fmt: skip
    ap.add_argument(
        "--budget-s",
        type=float,
        default=470.0,
        help="total seconds (default 470: inside 8 minutes with start-up)",
    )
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=790.0,
        help="the GPU's dense bf16 peak for MFU (default 790, H200)",
    )
    ap.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    bad = [x for x in args.sections if x not in SECTIONS]
    if bad:
        print(f"gpu_check: unknown section {bad[0]!r}; choose from {', '.join(SECTIONS)}",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.out is None:
        args.out = fs.REPO / "out" / "gpu_check_smoke" if args.cpu_smoke else RESULTS
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible (use --cpu-smoke for the CPU run)", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # dtype-cast advice on every `to(bf16)`
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # "Writing model shards" of save_pretrained
    if args.cpu_smoke:  # tiny ops: more threads only spin (and the machine may be shared)
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"  # for the pytest and render-many processes
    chk = Check(args)
    chk.result["setup"] = setup_info(chk)
    if args.cpu_smoke:
        chk.result["notes"].append("CPU smoke run: miniature model (configs/model/tiny.yaml); "
                                   "speeds and MFU mean nothing here")  # fmt: skip

    def out_of_time(*_: Any) -> None:
        raise OutOfTime

    signal.signal(signal.SIGALRM, out_of_time)  # the hard stop: whatever a section is doing
    signal.alarm(max(1, int(args.budget_s)))
    try:
        chk.section("tests", lambda: run_tests(chk), NEEDS_S["tests"])
        model = None
        if any(x in args.sections for x in SECTIONS[1:]) and chk.left() > NEEDS_S["build"]:
            model = Model(chk)
            chk.result["model"] = {"config": f"configs/model/{model.name}.yaml",
                                   "build_s": model.build_s, "params": model.params,
                                   "flops_per_sample": model.flops}  # fmt: skip
        elif any(x in args.sections for x in SECTIONS[1:]):
            chk.result["notes"].append("no time left to build the model")
        if model is not None:
            chk.section("render", lambda: run_render(chk, model), NEEDS_S["render"])
            chk.section("train", lambda: run_train(chk, model), NEEDS_S["train"])
            chk.section("render_many", lambda: run_render_many(chk, model), NEEDS_S["render_many"])
            chk.section("speed", lambda: run_speed(chk, model), NEEDS_S["speed"])
    except OutOfTime:
        chk.result["notes"].append("the time budget ran out outside a section")
    finally:
        signal.alarm(0)
        chk.write()
    print(Path(args.out) / "gpu_check.md")
    errors = [k for k, v in chk.result["sections"].items() if "error" in v]
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
