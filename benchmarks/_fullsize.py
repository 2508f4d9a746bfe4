"""Shared by full_size.py, gpu_check.py and hardware_model.py (not a benchmark).

The paper's model at full size with random weights (no downloads), FLOP counting on the
meta device, the CPU allocator's peak inside a block, one training step as signgen's loop
runs it, and example inputs from ``examples/``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
PAPER_MODEL = "fpdm_sd21_dinov2l_512"
MINI_MODEL = "tiny"
# Stage 2 and stage 1 recipes of the Phoenix-2014T model (paper Table 4).
PAPER_FPDM_RECIPE = REPO / "configs" / "recipes" / "fpdm_phoenix_b6.yaml"
PAPER_IPF_RECIPE = REPO / "configs" / "recipes" / "ipf_phoenix_a3.yaml"
# Every pretrained source off: each component is built from its inline architecture with
# seeded random weights, so nothing is read from the Hugging Face cache.
RANDOM_INIT = [
    "vae.pretrained=null",
    "unet.pretrained=null",
    "source_encoder.pretrained=null",
    "ipf.pretrained=null",
    "ipf.clip.pretrained=null",
    "scheduler.pretrained=null",
]
# Published parameter counts of the pretrained checkpoints the paper uses (the same
# sources as tests/test_models.py): SD 2.x UNet "865M" (stabilityai/stable-diffusion-2-1
# model card), SD KL-f8 VAE 83.7M, DINOv2 ViT-L/14 304M (facebookresearch/dinov2 README),
# CLIP ViT-L/14 vision tower + 1024x768 projection ~304M.
PUBLISHED_PARAMS = {"unet": 865.9e6, "vae": 83.7e6, "source_encoder": 304e6, "ipf_clip": 304e6}
PHOENIX_TEST_FRAMES = 64_627  # frames of the Phoenix-2014T test split (paper Table 4)
PHOENIX_TEST_CLIPS = 642


def model_config(name: str = PAPER_MODEL, overrides: list[str] | None = None):
    """The model config ``configs/model/<name>.yaml`` with every pretrained source off."""
    from signgen.models.config import load_model_config

    return load_model_config(name, [*RANDOM_INIT, *(overrides or [])])


def build(cfg) -> dict[str, Any]:
    """Every component of ``cfg`` on CPU, random weights (seeded by ``cfg.seed``)."""
    from signgen.models.factory import build_components

    return build_components(cfg, device="cpu", load_pretrained=False)


def param_counts(comps: dict[str, Any]) -> dict[str, int]:
    """Parameters per component; ``ipf_clip`` is the IPF's CLIP vision tower (+ projection)."""

    def n(m: torch.nn.Module | None) -> int:
        return 0 if m is None else sum(p.numel() for p in m.parameters())

    out = {k: n(comps[k]) for k in ("unet", "vae", "source_encoder", "pose_encoder",
                                    "source_projector", "fusion_mlp")}  # fmt: skip
    ipf = comps.get("ipf")
    out["ipf_clip"] = n(ipf.vision_model) if ipf is not None else 0
    out["ipf_combiner"] = n(ipf.combiner) if ipf is not None else 0
    out["total"] = sum(out.values())
    out["trainable_stage2"] = sum(out[k] for k in ("unet", "pose_encoder", "source_projector",
                                                   "fusion_mlp"))  # fmt: skip
    return out


# ---- FLOPs ---------------------------------------------------------------------------------
def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of ``fn()`` as torch's FlopCounterMode counts them (matmuls, convolutions,
    attention; 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def meta_flops(cfg) -> dict[str, int]:
    """Per-sample FLOPs of every FPDM piece at ``cfg``'s resolution, counted on the meta
    device (shapes only, no compute): the UNet forward, its training forward + backward with
    and without gradient checkpointing, the condition encoders and the VAE."""
    from signgen.models.factory import build_components
    from signgen.models.fpdm import FPDMDenoiser
    from signgen.models.modules import vae_downscale_factor

    comps = build_components(cfg, device="meta")
    h, w = cfg.resolution
    sh, sw = cfg.source_encoder.image_size
    down = vae_downscale_factor(comps["vae"])
    lat = (1, comps["unet"].config.out_channels, h // down, w // down)
    out: dict[str, int] = {}
    unet = comps["unet"]
    den = FPDMDenoiser(unet, comps["pose_encoder"], comps["source_projector"],
                       comps["fusion_mlp"])  # fmt: skip
    for m in (comps["vae"], comps["source_encoder"], comps["ipf"]):
        if m is not None:
            m.requires_grad_(False)  # frozen in training: no backward through them
    with torch.device("meta"):
        px = torch.empty(1, 3, sh, sw)
        hidden = comps["source_encoder"](pixel_values=px).last_hidden_state  # (1, N, Ds)
        out["source_tokens"] = int(hidden.shape[1])
        out["source_encoder"] = count_flops(lambda: comps["source_encoder"](pixel_values=px))
        pose = torch.empty(1, 3, h, w)
        fusion = None
        if comps["ipf"] is not None:
            ih, iw = comps["ipf"].image_size
            ipx = torch.empty(1, 3, ih, iw)
            out["clip_embed"] = count_flops(lambda: comps["ipf"].embed(ipx))
            emb = comps["ipf"].embed(ipx)
            out["combiner"] = count_flops(lambda: comps["ipf"].fuse(emb, emb))
            fusion = emb
        out["vae_encode"] = count_flops(
            lambda: comps["vae"].encode(torch.empty(1, 3, h, w)).latent_dist.mean
        )
        out["vae_decode"] = count_flops(lambda: comps["vae"].decode(torch.empty(lat)).sample)
        cond = den.encode_conditions(pose, hidden, fusion)
        out["condition_encoders"] = count_flops(lambda: den.encode_conditions(pose, hidden, fusion))
        x, t = torch.empty(lat), torch.tensor([500])
        out["unet_forward"] = count_flops(lambda: den.denoise(x, t, cond))

        def train_step() -> None:
            c = den.encode_conditions(pose, hidden, fusion)
            den.denoise(x, t, c).float().pow(2).mean().backward()

        den.train().requires_grad_(True)
        out["denoiser_train"] = count_flops(train_step)
        unet.enable_gradient_checkpointing()
        out["denoiser_train_checkpointed"] = count_flops(train_step)
    return out


# ---- memory ----------------------------------------------------------------------------------
class AllocatorPeak:
    """Bytes the torch CPU allocator holds inside a ``with`` block, relative to its start:
    ``peak`` (the most at any moment) and ``end`` (still held at exit); the CPU analogue of
    ``torch.cuda.max_memory_allocated``. Read from torch.profiler's allocation events
    (``profile_memory``): resident set sizes also count freed pages glibc keeps, so they
    overstate what tensors need."""

    def __init__(self) -> None:
        self.peak = 0
        self.end = 0
        self._prof: Any = None

    def __enter__(self) -> AllocatorPeak:
        from torch.profiler import ProfilerActivity, profile

        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        with _quiet_stderr():
            self._prof.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        from torch._C._profiler import _EventType

        with _quiet_stderr():
            self._prof.__exit__(*exc)
        events, stack = [], list(self._prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            e = stack.pop()
            if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu":
                events.append((e.start_time_ns, e.extra_fields.alloc_size))
            stack.extend(e.children)
        live = peak = 0
        for _t, size in sorted(events):
            live += size
            peak = max(peak, live)
        self.peak, self.end = peak, live
        self._prof = None


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null inside the block: the profiler's native library
    (kineto) prints start/stop lines there that no log level turns off."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def peak_rss_mib() -> float:
    """Peak resident set size of this process (``ru_maxrss``), MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def mem_available_gib() -> float:
    """``MemAvailable`` of /proc/meminfo, GiB (inf where the file is absent)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


@contextlib.contextmanager
def cuda_like_autocast_norms() -> Iterator[None]:
    """Group and layer norms in float32 under CPU autocast, as CUDA autocast runs them.

    CUDA autocast casts ``group_norm`` and ``layer_norm`` to float32 (torch.amp's CUDA op
    lists) while CPU autocast leaves them in bfloat16, so activation sizes measured under
    CPU autocast would be too small for a GPU; inside this block the CPU runs them like CUDA.
    """
    import torch.nn.functional as F

    group_norm, layer_norm = F.group_norm, F.layer_norm

    def gn(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return group_norm(x.float(), *_floats(args), **_floats(kwargs))

    def ln(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return layer_norm(x.float(), *_floats(args), **_floats(kwargs))

    F.group_norm, F.layer_norm = gn, ln
    try:
        yield
    finally:
        F.group_norm, F.layer_norm = group_norm, layer_norm


def _floats(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor) and obj.is_floating_point():
        return obj.float()
    if isinstance(obj, tuple):
        return tuple(_floats(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _floats(v) for k, v in obj.items()}
    return obj


# ---- inputs ----------------------------------------------------------------------------------
def example_clip(frames: int) -> tuple[np.ndarray, Any]:
    """The bundled example: first frame uint8 (260, 210, 3) and its first ``frames`` poses
    (the 32-frame sequence repeated when more are asked for)."""
    from PIL import Image

    from signgen.keypoints.io import load_keypoints
    from signgen.keypoints.sequence import KeypointSequence

    image = np.asarray(Image.open(EXAMPLES / "first_frame.png").convert("RGB"))
    kp = load_keypoints(EXAMPLES / "sequence.json")
    idx = np.arange(frames) % len(kp)
    return image, KeypointSequence(kp.points[idx], kp.width, kp.height, kp.fps)


def example_batch(resolution: tuple[int, int], batch: int) -> dict[str, torch.Tensor]:
    """A training batch as signgen.data.pairs.PairDataset gives it: source and target
    frames uint8 (B, H0, W0, 3), target pose images (B, 3, H, W) in [0, 1] drawn in the
    letterboxed geometry of the model resolution."""
    from signgen.models.preprocess import Letterbox
    from signgen.pose.draw import draw_pose

    image, kp = example_clip(batch + 1)
    h, w = resolution
    box = Letterbox.fit((kp.width, kp.height), (w, h))
    poses = np.stack([draw_pose(box.points_to_padded(kp.points[i + 1]), box.padded_size, (w, h))
                      for i in range(batch)])  # (B, H, W, 3)  # fmt: skip
    frames = torch.from_numpy(np.stack([image] * batch))
    return {
        "source": frames,
        "target": frames.flip(2).contiguous(),  # another image than the source
        "target_pose": torch.from_numpy(poses).permute(0, 3, 1, 2).float() / 255.0,
    }


# ---- training ----------------------------------------------------------------------------------
def fpdm_training(
    model: str = PAPER_MODEL,
    overrides: list[str] | None = None,
    device: torch.device | str = "cpu",
    comps: dict[str, Any] | None = None,
) -> tuple[Any, torch.optim.Optimizer, Any]:
    """(FPDMModule, AdamW, TrainConfig) of the Phoenix B6 recipe with ``overrides``, as
    ``signgen train fpdm`` builds them (FPDMTask + run_training), with random weights and
    no dataset: the frozen stage-1 IPF is the config's random one instead of a trained
    folder. ``model``: a configs/model name (the paper's, or ``tiny`` for miniature);
    ``comps``: its components when already built (:func:`build`)."""
    from signgen.models.config import CONFIG_DIR
    from signgen.train.config import load_train_config
    from signgen.train.fpdm import FPDMModule
    from signgen.train.loop import seed_everything

    over = [f"model={CONFIG_DIR / f'{model}.yaml'}", "fpdm.ipf=null",
            *[f"model.{o}" for o in RANDOM_INIT], *(overrides or [])]  # fmt: skip
    tcfg = load_train_config(PAPER_FPDM_RECIPE, over, stage="fpdm")
    from signgen.train.common import model_config as train_model_config

    mcfg = train_model_config(tcfg)
    seed_everything(tcfg.seed)  # as run_training does first: noise, timesteps, dropout
    comps = build(mcfg) if comps is None else comps
    if tcfg.train.gradient_checkpointing:
        comps["unet"].enable_gradient_checkpointing()
    module = FPDMModule(comps, mcfg, tcfg).to(device)
    return module, adamw(module, tcfg), tcfg


def ipf_training(
    model: str = PAPER_MODEL, overrides: list[str] | None = None
) -> tuple[Any, torch.optim.Optimizer, Any]:
    """(IPFModule, AdamW, TrainConfig) of the Phoenix A3 stage-1 recipe, as ``signgen train
    ipf`` builds them (IPFTask + run_training), random weights, no dataset."""
    from signgen.models.config import CONFIG_DIR
    from signgen.train.common import model_config as train_model_config
    from signgen.train.config import load_train_config
    from signgen.train.ipf import IPFModule, build_ipf
    from signgen.train.loop import seed_everything

    over = [f"model={CONFIG_DIR / f'{model}.yaml'}", *[f"model.{o}" for o in RANDOM_INIT],
            *(overrides or [])]  # fmt: skip
    tcfg = load_train_config(PAPER_IPF_RECIPE, over, stage="ipf")
    seed_everything(tcfg.seed)
    ipf = build_ipf(train_model_config(tcfg), tcfg.seed)
    if tcfg.ipf.freeze_vision:
        ipf.vision_model.requires_grad_(False)
    module = IPFModule(ipf, tcfg.ipf.loss, tcfg.ipf.temperature)
    return module, adamw(module, tcfg), tcfg


def adamw(module: torch.nn.Module, tcfg) -> torch.optim.Optimizer:
    """The optimizer of signgen.train.loop.run_training for ``module``'s trainable weights."""
    oc = tcfg.optim
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=oc.lr, betas=tuple(oc.betas), weight_decay=oc.weight_decay)


def train_step(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[dict[str, Any]],
    grad_clip: float,
    amp_dtype: torch.dtype | None = None,
    sync: Callable[[], None] = lambda: None,
    track: Callable[[str], Any] | None = None,
) -> dict[str, float]:
    """One optimizer step of signgen.train.loop.run_training: zero grads, for each
    micro-batch forward (under autocast when ``amp_dtype``) and backward of loss / n, grad
    clipping, AdamW. Returns seconds per phase, the mean loss and the grad norm.
    ``track(phase)`` returns a context manager entered around each phase ("forward",
    "backward", "optimizer"), e.g. an :class:`AllocatorPeak`."""

    def phase(name: str) -> Any:
        return track(name) if track is not None else contextlib.nullcontext()

    device_type = next(module.parameters()).device.type
    params = [p for g in optimizer.param_groups for p in g["params"]]
    times = {"forward_s": 0.0, "backward_s": 0.0}
    losses = []
    optimizer.zero_grad(set_to_none=True)
    for batch in batches:
        t0 = time.perf_counter()
        amp = (torch.autocast(device_type, dtype=amp_dtype) if amp_dtype is not None
               else contextlib.nullcontext())  # fmt: skip
        with phase("forward"), amp:
            loss, _ = module(batch)
            sync()
        t1 = time.perf_counter()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()}")
        with phase("backward"):
            (loss / len(batches)).backward()
            sync()
        times["forward_s"] += t1 - t0
        times["backward_s"] += time.perf_counter() - t1
        losses.append(float(loss.detach()))
    t0 = time.perf_counter()
    with phase("optimizer"):
        norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip)) if grad_clip > 0 else 0.0
        optimizer.step()
        sync()
    times["optimizer_s"] = time.perf_counter() - t0
    return {**times, "loss": float(np.mean(losses)), "grad_norm": norm}


class CallTimer:
    """Counts the calls of a module and times each (forward pre/post hooks). Times are
    wall-clock; on a GPU pass ``sync`` (torch.cuda.synchronize) so they mean something."""

    def __init__(self, module: torch.nn.Module, sync: Callable[[], None] = lambda: None) -> None:
        self.seconds: list[float] = []
        self.batches: list[int] = []
        self.finite = True
        self._sync = sync
        self._t0 = 0.0
        self._handles = [module.register_forward_pre_hook(self._pre, with_kwargs=True),
                         module.register_forward_hook(self._post)]  # fmt: skip

    def _pre(self, _m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self._sync()
        first = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        self.batches.append(int(first[0].shape[0]) if first else 0)
        self._t0 = time.perf_counter()

    def _post(self, _m: torch.nn.Module, _args: tuple, out: Any) -> None:
        self._sync()
        self.seconds.append(time.perf_counter() - self._t0)
        first = out[0] if isinstance(out, tuple) else getattr(out, "sample", out)
        if isinstance(first, torch.Tensor):
            self.finite = self.finite and bool(torch.isfinite(first).all())

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
