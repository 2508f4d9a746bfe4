"""Where model folders come from, and what a model folder may ask us to import.

* :func:`resolve_model_dir`: a local folder, or a Hugging Face hub id resolved through the
  local cache only (``local_files_only=True``; signgen never downloads).
* :func:`check_model_index`: the allow-list. ``model_index.json`` names, per component, a
  (library, class) pair that diffusers' loader would import; a folder from elsewhere must
  not make us import anything else, so every pair is checked against
  :data:`COMPONENT_CLASSES` before any loading starts, and a folder holding Python files
  is refused (diffusers would offer to run them as custom code). It also reads the layout
  that folders were written in before the pipeline became a diffusers ``DiffusionPipeline``
  (short ``signgen`` library names, ``resolution`` + ``source_preprocess`` instead of an
  ``image_processor`` entry), so they load unchanged. A ``motion_module/`` folder that the
  index does not list (a motion module added to a per-frame model folder) is loaded as if
  listed, under the same allow-list.
* :func:`default_model_path`: the bundled demo model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from signgen.errors import MissingWeightsError
from signgen.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

MODEL_INDEX = "model_index.json"
PIPELINE_CLASS = "FPDMPipeline"
_SCHEDULER_CLASSES = (
    "DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler",
)  # fmt: skip  # = signgen.models.schedulers.SCHEDULERS (a test checks they agree)
# The (library, class) pairs each component of a model folder may name: nothing else is
# ever imported. signgen classes are named by their module, as diffusers records them.
COMPONENT_CLASSES: dict[str, frozenset[tuple[str, str]]] = {
    "vae": frozenset(
        {("diffusers", "AutoencoderKL"), ("signgen.models.modules", "PatchAutoencoder")}
    ),
    "unet": frozenset({("diffusers", "UNet2DConditionModel")}),
    "pose_encoder": frozenset({("signgen.models.modules", "PoseEncoder")}),
    "source_encoder": frozenset(
        {
            ("transformers", "Dinov2Model"),
            ("transformers", "CLIPVisionModel"),
            # DINOv2 with DINO's position-embedding interpolation (the FPDM authors' setting)
            ("signgen.models.dinov2", "Dinov2ModelDino"),
        }
    ),
    "source_projector": frozenset({("signgen.models.modules", "SourceProjector")}),
    "scheduler": frozenset(("diffusers", name) for name in _SCHEDULER_CLASSES),
    "ipf": frozenset({("signgen.models.ipf", "IPFModel")}),
    "fusion_mlp": frozenset({("signgen.models.modules", "FusionMLP")}),
    "focal_adapter": frozenset({("signgen.models.mcld", "FocalAdapter")}),
    # Temporal FPDM (signgen.models.motion): AnimateDiff's motion module.
    "motion_module": frozenset({("diffusers", "MotionAdapter")}),
    # The source refiner (signgen.models.refiner).
    "refiner": frozenset({("signgen.models.refiner", "SourceRefiner")}),
    # The source refiner's temporal layers (signgen.models.refiner_motion).
    "refiner_motion": frozenset({("signgen.models.refiner_motion", "RefinerMotion")}),
}
OPTIONAL_COMPONENTS = (
    "ipf", "fusion_mlp", "focal_adapter", "motion_module", "refiner", "refiner_motion",
)  # fmt: skip
MOTION_MODULE = "motion_module"  # = signgen.models.motion.MOTION_FOLDER
# Folders written before named signgen's classes by the package alone.
_SIGNGEN_MODULES = {
    cls: lib
    for pairs in COMPONENT_CLASSES.values()
    for lib, cls in pairs
    if lib.startswith("signgen.")
}


def check_model_index(index: dict[str, Any], where: str | os.PathLike) -> dict[str, Any]:
    """A model folder's ``model_index.json`` (``where``, for messages) checked against the
    allow-list and translated from the earlier layout; returns the index diffusers loads."""
    if index.get("_class_name") != PIPELINE_CLASS:
        raise MissingWeightsError(
            f"{where} is not an FPDM model folder (_class_name {index.get('_class_name')!r})"
        )
    out = dict(index)
    motion_config = Path(where).parent / MOTION_MODULE / "config.json"
    if out.get(MOTION_MODULE) in (None, [None, None]) and motion_config.is_file():
        # A motion module added to a per-frame model folder (`signgen train motion`'s export,
        # the bundled demo model): loaded like a listed component, if its class is allowed.
        out[MOTION_MODULE] = ["diffusers", _class_name(motion_config)]
    for name, allowed in COMPONENT_CLASSES.items():
        entry = out.get(name)
        if entry is None or list(entry) == [None, None]:
            if name not in OPTIONAL_COMPONENTS:
                raise MissingWeightsError(f"{where} lists no {name!r} component")
            out[name] = [None, None]
            continue
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
            raise MissingWeightsError(f"{where}: component {name!r} must be [library, class]")
        lib, cls = (str(v) for v in entry)
        if lib == "signgen":  # the earlier layout
            lib = _SIGNGEN_MODULES.get(cls, lib)
        if (lib, cls) not in allowed:
            raise MissingWeightsError(
                f"{where}: component {name!r} has unsupported class {lib}.{cls}"
            )
        out[name] = [lib, cls]
    if "image_processor" not in out:  # the earlier layout: resolution + source_preprocess
        pre = out.pop("source_preprocess", {}) or {}
        out["image_processor"] = {
            "resolution": list(out.pop("resolution", (512, 512))),
            "resize_mode": "letterbox",
            "source_size": list(pre.get("image_size", (512, 512))),
            "source_mean": list(pre.get("mean", IMAGENET_MEAN)),
            "source_std": list(pre.get("std", IMAGENET_STD)),
        }
    return out


def _class_name(config: Path) -> str:
    """``_class_name`` of a component's config.json ("" when unreadable)."""
    import json

    try:
        return str(json.loads(config.read_text()).get("_class_name", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def check_model_folder(root: Path, index: dict[str, Any]) -> None:
    """Every component the index lists has its folder and config file; no Python files."""
    code = sorted(p.name for p in root.glob("*.py")) + sorted(
        str(p.relative_to(root)) for p in root.glob("*/*.py")
    )
    if code:
        raise MissingWeightsError(
            f"model folder {root} holds Python files ({', '.join(code[:3])}); signgen runs no "
            "code from model folders: remove them"
        )
    for name in COMPONENT_CLASSES:
        if index[name] == [None, None]:
            continue
        config = "scheduler_config.json" if name == "scheduler" else "config.json"
        if name == "ipf" and (root / name / "ipf_config.json").is_file():
            config = "ipf_config.json"  # the earlier IPF layout (signgen.models.ipf)
        if not (root / name / config).is_file():
            raise MissingWeightsError(
                f"model folder {root} is missing component {name!r} (expected {root / name / config})"
            )


def resolve_model_dir(path: str | os.PathLike, local_files_only: bool = True) -> Path:
    """A local model folder, or a hub id (``owner/name``) resolved in the Hugging Face cache
    (``HF_HOME``); anything else is a MissingWeightsError naming it."""
    p = Path(path)
    if p.is_dir():
        return p
    text = str(path)
    looks_like_hub_id = text.count("/") == 1 and not p.suffix and not text.startswith((".", "/"))
    if not looks_like_hub_id:
        raise MissingWeightsError(f"model folder not found: {p}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, local_files_only=local_files_only))
    except Exception as exc:  # hub errors vary by version; all mean "absent"
        raise MissingWeightsError(
            f"model {text!r} is neither a local folder nor in the Hugging Face cache "
            f"({type(exc).__name__}); set HF_HOME to the cache that holds it "
            "(signgen loads with local_files_only=True and never downloads)"
        ) from None


def default_model_path() -> Path:
    """The bundled demo model folder (``signgen/assets/demo_model``); may not exist."""
    return Path(__file__).resolve().parents[1] / "assets" / "demo_model"
