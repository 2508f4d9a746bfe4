"""Typed training configuration shared by ``signgen train vae|ipf|fpdm|motion|refiner|refiner-motion``.

A preset (``configs/train/*.yaml``) fills :class:`TrainConfig`; ``key=value`` overrides on
the command line patch it (``train.lr=1e-5``). The model itself is described by a model
config (``model:``: a path to a ``configs/model/*.yaml`` file read by
:mod:`signgen.models.config`, or an inline mapping).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signgen.config import apply_overrides, from_dict, load_yaml
from signgen.errors import InputError
from signgen.models.motion_config import MotionModuleConfig

STAGES = ("vae", "ipf", "fpdm", "motion", "refiner", "refiner-motion")
PRECISIONS = ("no", "fp16", "bf16")


@dataclass
class DataConfig:
    prepared: str = ""  # folder with manifest.csv and {split}_pairs.csv
    resolution: tuple[int, int] = (64, 64)  # (H, W) of the model
    num_workers: int = 0  # DataLoader worker processes
    max_train_pairs: int | None = None
    max_eval_pairs: int = 256  # dev pairs used for evaluation / sample grids
    train_split: str = "train"
    eval_split: str = "dev"  # DeepFashion has no dev split: use "test"
    # DeepFashion training augmentations (signgen.data.deepfashion.DeepFashionAugment);
    # Phoenix and synthetic pairs have none. None = that class's defaults.
    augment: dict[str, float] | None = None


@dataclass
class OptimConfig:
    lr: float = 1e-4  # AdamW (paper: 1e-4)
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max grad norm; 0 disables
    # Paper schedule: linear warm-up for ``warmup_epochs``, then x``decay_factor`` after
    # ``decay_epochs`` (FPDM: 5 and 50). Fractions of an epoch are allowed.
    warmup_epochs: float = 0.0
    decay_epochs: float = 50.0
    decay_factor: float = 0.1
    # The same in optimizer steps (for step-budgeted runs); they win when set.
    warmup_steps: int | None = None
    decay_steps: int | None = None


@dataclass
class EMAConfig:
    enabled: bool = False
    decay: float = 0.999


@dataclass
class LoopConfig:
    batch_size: int = 8  # per worker, per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; stops early when reached
    mixed_precision: str = "no"  # no | fp16 | bf16 (autocast on GPU only)
    gradient_checkpointing: bool = False
    # GPU speed options of stage 2 (signgen.speed, docs/hardware.md): the UNet's attention
    # kernel (sdpa | eager), channels-last UNet/VAE/pose encoder, torch.compile of the UNet's
    # transformer blocks, and the frozen VAE / source encoder / IPF in bf16 | fp16 (None: fp32).
    attention: str = "sdpa"
    channels_last: bool = False
    compile: bool = False
    frozen_dtype: str | None = None
    log_every: int = 10
    eval_every: int = 0  # optimizer steps; 0 = at the end only
    checkpoint_every: int = 0  # optimizer steps; 0 = at the end only
    keep_checkpoints: int = 2
    sample_every: int = 0  # FPDM sample grids; 0 = at the end only
    tensorboard: bool = True
    ema: EMAConfig = field(default_factory=EMAConfig)


@dataclass
class VAELossConfig:
    kl_weight: float = 1e-6
    # Probability, per training image, of a random hue rotation (signgen.train.vae): the
    # autoencoder then reconstructs colours it has not seen instead of memorising the
    # palettes of the training set (a few signers' clothes and backgrounds). 0 = off.
    hue_augment: float = 0.0


@dataclass
class IPFLossConfig:
    loss: str = "source_enhanced"  # source_enhanced | baseline
    temperature: float = 0.07
    freeze_vision: bool = False  # train the Combiner only
    # Weight of mean |S - F| added to the contrastive loss (signgen.train.ipf.source_fusion_l1):
    # 0 = the paper's loss; the published FPDM code uses 1e-4.
    l1_weight: float = 0.0


@dataclass
class FPDMLossConfig:
    offset_noise: float = 0.1
    # Timestep sampling. Uniform over the scheduler's timesteps when high_t_fraction is 0
    # (the paper). Otherwise that fraction of each micro-batch, spread evenly over it, draws
    # its timestep from [high_t_from * T, T) instead: more of the training signal goes to
    # the high-noise steps that decide where the body and hands are (low-noise steps only
    # sharpen), which a small model trained briefly gets too little of. Training only; the
    # evaluation loss stays uniform. signgen.train.fpdm.sample_timesteps
    high_t_fraction: float = 0.0
    high_t_from: float = 0.5
    drop_pose: float = 0.2
    drop_source: float = 0.2
    drop_fusion: float = 0.2
    ipf: str | None = None  # exported stage-1 folder (frozen); None: as the model config says
    vae: str | None = None  # trained VAE folder (diffusers AutoencoderKL); None: from config
    # An exported FPDM model folder (a run's export/) whose trained components (UNet, pose
    # encoder, source projector, fusion MLP, focal adapter) start this run, e.g. the
    # 256x176 DeepFashion model continuing from the 512x352 one. Shapes must match.
    init_from: str | None = None
    sample_steps: int = 10
    # Guidance of the periodic sample grids; None: the model config's default guidance
    # (what `signgen render` uses for the exported model), so the grids show its renders.
    guidance_source: float | None = None
    guidance_fusion: float | None = None
    num_samples: int = 4


@dataclass
class MotionTrainConfig:
    """The ``motion:`` section of ``signgen train motion`` (signgen.train.motion)."""

    base_model: str = ""  # exported per-frame FPDM folder (frozen)
    init_from: str | None = None  # a motion module folder to start from (e.g. AnimateDiff's)
    module: MotionModuleConfig = field(default_factory=MotionModuleConfig)
    window: int = 16  # frames per training window (AnimateDiff: 16); the render default
    stride: int = 8  # frames between window starts in a clip
    offset_noise: float = 0.1  # as the per-frame FPDM recipe
    drop_pose: float = 0.2  # per-window condition dropout (the per-frame recipe's values)
    drop_source: float = 0.2
    drop_fusion: float = 0.2
    drop_focal: float = 0.1  # MCLD models only
    # Render defaults saved with the module (signgen render --temporal): the overlap of
    # consecutive windows (None: a quarter of the window) and the blending taper.
    render_overlap: int | None = None
    render_taper: str = "linear"  # uniform | linear (signgen.sampling.windows.TAPERS)
    sample_steps: int = 10  # denoising steps of the sample strips
    num_samples: int = 2  # dev clips in the sample strips

    @property
    def overlap(self) -> int:
        return self.window // 4 if self.render_overlap is None else self.render_overlap

    def check(self) -> None:
        if not self.base_model:
            raise InputError("motion.base_model is not set (an exported per-frame FPDM folder)")
        if self.window < 1 or not 1 <= self.stride <= self.window:
            raise InputError(
                f"motion.window must be >= 1 and motion.stride in [1, window], got "
                f"{self.window} and {self.stride}"
            )
        if self.window > self.module.max_frames:
            raise InputError(
                f"motion.window={self.window} exceeds motion.module.max_frames="
                f"{self.module.max_frames} (the motion module's frame positions)"
            )
        if not 0 <= self.overlap < self.window:
            raise InputError(
                f"motion.render_overlap must be in [0, window), got {self.render_overlap}"
            )
        if self.render_taper not in ("uniform", "linear"):
            raise InputError(
                f"motion.render_taper must be uniform or linear, got {self.render_taper!r}"
            )
        for name in ("drop_pose", "drop_source", "drop_fusion", "drop_focal"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"motion.{name} must be a probability in [0, 1]")
        if self.sample_steps < 1 or self.num_samples < 0:
            raise InputError("motion.sample_steps must be >= 1 and motion.num_samples >= 0")


@dataclass
class RefinerTrainConfig:
    """The ``refiner:`` section of ``signgen train refiner`` (signgen.train.refiner)."""

    base_model: str = ""  # exported model folder (frozen) whose renders the refiner corrects
    every: int = 2  # frames 0, every, 2 * every, ... of each clip
    render_steps: int | None = None  # denoising steps of its renders; None: the model's
    render_batch_size: int = 16  # frames per model call while rendering (same frames)
    cache_dir: str | None = None  # where the renders are kept; None: output_dir/renders
    ssim_weight: float = 0.5  # loss = L1 + ssim_weight * (1 - SSIM)
    # The exported folder's default detail-transfer threshold (0 = off: the refiner's job).
    detail_transfer: float = 0.0
    num_samples: int = 4  # dev frames in the sample strips
    # SourceRefiner arguments (signgen.models.refiner): patch_size, block_out_channels,
    # layers_per_block, norm_num_groups.
    module: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if not self.base_model:
            raise InputError("refiner.base_model is not set (an exported model folder)")
        if self.every < 1 or self.render_batch_size < 1 or self.num_samples < 0:
            raise InputError(
                "refiner.every and refiner.render_batch_size must be >= 1, refiner.num_samples >= 0"
            )
        if self.render_steps is not None and self.render_steps < 1:
            raise InputError(f"refiner.render_steps must be >= 1, got {self.render_steps}")
        if not self.ssim_weight >= 0 or not self.detail_transfer >= 0:
            raise InputError("refiner.ssim_weight and refiner.detail_transfer must be >= 0")
        known = {"patch_size", "block_out_channels", "layers_per_block", "norm_num_groups"}
        unknown = sorted(set(self.module) - known)
        if unknown:
            raise InputError(
                f"refiner.module: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )


@dataclass
class RefinerMotionTrainConfig:
    """The ``refiner_motion:`` section of ``signgen train refiner-motion``
    (signgen.train.refiner_motion)."""

    # Exported model folder with a refiner/ and a motion_module/ (both frozen): its temporal
    # renders (``--temporal``, without the refiner) are the training inputs.
    base_model: str = ""
    render_steps: int | None = None  # denoising steps of its renders; None: the model's
    render_batch_size: int = 16  # frames per model call while rendering (same frames)
    cache_dir: str | None = None  # where the renders are kept; None: output_dir/renders
    window: int = 8  # frames per training window (and renders' default window)
    stride: int = 4  # training windows start every ``stride`` frames of a clip
    render_overlap: int = 4  # renders' default overlap of consecutive windows
    render_taper: str = "linear"  # renders' default blending of overlapping windows
    sites: list[str] = field(default_factory=lambda: ["mid", "up1", "up2"])  # refiner blocks
    ssim_weight: float = 0.5  # loss = L1 + ssim_weight * (1 - SSIM) + temporal_weight * ...
    temporal_weight: float = 1.0  # ... L1 of frame-to-frame differences vs the true frames'
    num_samples: int = 4  # frames of the first dev window in the sample strips
    # The exported folder's default for `--temporal` renders: denoise through the motion
    # module (True) or every frame alone, the refiner's layers acting alone (False).
    render_motion_module: bool = True

    def check(self) -> None:
        if not self.base_model:
            raise InputError("refiner_motion.base_model is not set (an exported model folder)")
        if self.window < 2 or not 1 <= self.stride <= self.window:
            raise InputError(
                f"refiner_motion.window must be >= 2 and refiner_motion.stride in [1, window], "
                f"got {self.window} and {self.stride}"
            )
        if not 0 <= self.render_overlap < self.window:
            raise InputError(
                f"refiner_motion.render_overlap must be in [0, window), got {self.render_overlap}"
            )
        if self.render_taper not in ("uniform", "linear"):
            raise InputError(
                f"refiner_motion.render_taper must be uniform or linear, got {self.render_taper!r}"
            )
        if self.render_steps is not None and self.render_steps < 1:
            raise InputError(f"refiner_motion.render_steps must be >= 1, got {self.render_steps}")
        if self.render_batch_size < 1 or self.num_samples < 0:
            raise InputError(
                "refiner_motion.render_batch_size must be >= 1, refiner_motion.num_samples >= 0"
            )
        if not self.ssim_weight >= 0 or not self.temporal_weight >= 0:
            raise InputError("refiner_motion.ssim_weight and temporal_weight must be >= 0")


@dataclass
class TrainConfig:
    stage: str = "fpdm"
    output_dir: str = "runs/train"
    seed: int = 0
    model: Any = None  # path to a model YAML or an inline mapping
    model_overrides: list[str] = field(default_factory=list)  # "model.a.b=v" from the CLI
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    vae: VAELossConfig = field(default_factory=VAELossConfig)
    ipf: IPFLossConfig = field(default_factory=IPFLossConfig)
    fpdm: FPDMLossConfig = field(default_factory=FPDMLossConfig)
    motion: MotionTrainConfig = field(default_factory=MotionTrainConfig)
    refiner: RefinerTrainConfig = field(default_factory=RefinerTrainConfig)
    refiner_motion: RefinerMotionTrainConfig = field(default_factory=RefinerMotionTrainConfig)

    def check(self) -> None:
        if self.stage not in STAGES:
            raise InputError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.train.mixed_precision not in PRECISIONS:
            raise InputError(
                f"train.mixed_precision must be one of {PRECISIONS}, got "
                f"{self.train.mixed_precision!r}"
            )
        if self.train.attention not in ("sdpa", "eager"):
            raise InputError(f"train.attention must be sdpa or eager, got {self.train.attention!r}")
        if self.train.frozen_dtype not in (None, "bf16", "fp16"):
            raise InputError(
                f"train.frozen_dtype must be bf16, fp16 or null, got {self.train.frozen_dtype!r}"
            )
        if self.ipf.loss not in ("source_enhanced", "baseline"):
            raise InputError(
                f"ipf.loss must be 'source_enhanced' or 'baseline', got {self.ipf.loss!r}"
            )
        if self.train.batch_size < 1 or self.train.grad_accum < 1:
            raise InputError("train.batch_size and train.grad_accum must be >= 1")
        f = self.fpdm
        if not (0 <= f.high_t_fraction <= 1 and 0 <= f.high_t_from < 1):
            raise InputError(
                "fpdm.high_t_fraction must be in [0, 1] and fpdm.high_t_from in [0, 1), got "
                f"{f.high_t_fraction!r} and {f.high_t_from!r}"
            )
        if self.stage == "ipf" and self.ipf.loss and self.train.batch_size < 2:
            raise InputError("InfoNCE needs train.batch_size >= 2 (in-batch negatives)")
        if not self.data.prepared:
            raise InputError("data.prepared is not set (a folder with manifest.csv)")
        if self.stage == "motion":  # data.resolution comes from the base model then
            self.motion.check()
        if self.stage == "refiner":
            self.refiner.check()
        if self.stage == "refiner-motion":
            self.refiner_motion.check()
        for name in ("drop_pose", "drop_source", "drop_fusion"):
            p = getattr(self.fpdm, name)
            if not 0.0 <= p <= 1.0:
                raise InputError(f"fpdm.{name} must be a probability in [0, 1], got {p}")


def load_train_config(
    path: str | Path, overrides: list[str] | None = None, stage: str | None = None
) -> TrainConfig:
    """Read a preset, apply ``key=value`` overrides, resolve relative paths, validate."""
    path = Path(path)
    overrides = list(overrides or [])
    # ``model.x=y`` patches the model config, which may live in its own file.
    model_over = [o.removeprefix("model.") for o in overrides if o.startswith("model.")]
    data = apply_overrides(load_yaml(path), [o for o in overrides if not o.startswith("model.")])
    if model_over:
        data["model_overrides"] = list(data.get("model_overrides") or []) + model_over
    if stage is not None:
        if data.get("stage", stage) != stage:
            raise InputError(f"{path} is a '{data['stage']}' config, not '{stage}'")
        data["stage"] = stage
    cfg = from_dict(TrainConfig, data)
    # A model given as a relative path is relative to the preset that names it.
    if isinstance(cfg.model, str) and not Path(cfg.model).is_absolute():
        cand = path.parent / cfg.model
        if cand.exists() and not Path(cfg.model).exists():
            cfg.model = str(cand)
    cfg.check()
    return cfg
