"""Named mmpose models: short names -> config shipped inside mmpose + checkpoint to download.

signgen never downloads weights. A name resolves to

- the config file inside the installed mmpose package (``mmpose/.mim/configs/...``), and
- the checkpoint file name, looked up as ``$SIGNGEN_WEIGHTS_DIR/<file>`` unless an explicit
  checkpoint path is given; the URL it is published at is part of the entry so that the
  error for a missing file (and ``signgen keypoints models``) tells the user what to fetch.

Config and checkpoint pairs are the ones of mmpose's model zoo (the ``Weights:`` entries of
the metafiles next to each config); the whole-body models are trained on COCO-WholeBody
(133 points, the layout signgen uses), the hand models predict 21 points.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from signgen.errors import InputError, MissingWeightsError

WEIGHTS_DIR_ENV = "SIGNGEN_WEIGHTS_DIR"
_ZOO = "https://download.openmmlab.com/mmpose"
_WB = "wholebody_2d_keypoint/topdown_heatmap/coco-wholebody"
_HAND = "hand_2d_keypoint/topdown_heatmap"


@dataclass(frozen=True)
class PoseModelSpec:
    """One named top-down model: where its config lives and which checkpoint it needs."""

    name: str
    config: str  # relative to mmpose's configs folder
    checkpoint: str  # file name
    url: str  # where users download ``checkpoint`` from
    num_keypoints: int  # 133 (COCO-WholeBody) or 21 (hand)
    input_size: tuple[int, int]  # (width, height) of the model input crop
    description: str

    def config_path(self) -> Path:
        """Absolute path of the config inside the installed mmpose package."""
        return mmpose_config_root() / self.config


def _wb(name, cfg, ckpt, size, desc) -> PoseModelSpec:
    return PoseModelSpec(
        name, f"{_WB}/{cfg}", ckpt, f"{_ZOO}/top_down/hrnet/{ckpt}", 133, size, desc
    )


def _hand(name, cfg, ckpt, sub, desc) -> PoseModelSpec:
    return PoseModelSpec(
        name, f"{_HAND}/{cfg}", ckpt, f"{_ZOO}/hand/{sub}/{ckpt}", 21, (256, 256), desc
    )


MODELS: dict[str, PoseModelSpec] = {
    m.name: m
    for m in (
        _wb(
            "hrnet-w32-wholebody",
            "td-hm_hrnet-w32_8xb64-210e_coco-wholebody-256x192.py",
            "hrnet_w32_coco_wholebody_256x192-853765cd_20200918.pth",
            (192, 256),
            "HRNet-W32 whole-body, 256x192 (the FPDM paper's keypoints; default)",
        ),
        _wb(
            "hrnet-w32-dark-wholebody",
            "td-hm_hrnet-w32_dark-8xb64-210e_coco-wholebody-256x192.py",
            "hrnet_w32_coco_wholebody_256x192_dark-469327ef_20200922.pth",
            (192, 256),
            "HRNet-W32 whole-body with DARK decoding, 256x192",
        ),
        _wb(
            "hrnet-w48-wholebody",
            "td-hm_hrnet-w48_8xb32-210e_coco-wholebody-256x192.py",
            "hrnet_w48_coco_wholebody_256x192-643e18cb_20200922.pth",
            (192, 256),
            "HRNet-W48 whole-body, 256x192",
        ),
        _wb(
            "hrnet-w48-dark-wholebody",
            "td-hm_hrnet-w48_dark-8xb32-210e_coco-wholebody-384x288.py",
            "hrnet_w48_coco_wholebody_384x288_dark-f5726563_20200918.pth",
            (288, 384),
            "HRNet-W48 whole-body with DARK decoding, 384x288 (most accurate, slowest)",
        ),
        _hand(
            "hrnetv2-w18-hand",
            "coco_wholebody_hand/td-hm_hrnetv2-w18_8xb32-210e_coco-wholebody-hand-256x256.py",
            "hrnetv2_w18_coco_wholebody_hand_256x256-1c028db7_20210908.pth",
            "hrnetv2",
            "HRNetV2-W18 hand (21 points), COCO-WholeBody-Hand; the Hand PE detector",
        ),
        _hand(
            "hrnetv2-w18-onehand10k",
            "onehand10k/td-hm_hrnetv2-w18_8xb64-210e_onehand10k-256x256.py",
            "hrnetv2_w18_onehand10k_256x256-30bc9c6b_20210330.pth",
            "hrnetv2",
            "HRNetV2-W18 hand (21 points), OneHand10K",
        ),
    )
}
DEFAULT_WHOLEBODY_MODEL = "hrnet-w32-wholebody"
DEFAULT_HAND_MODEL = "hrnetv2-w18-hand"


def mmpose_config_root() -> Path:
    """The ``configs`` folder shipped inside the installed mmpose package."""
    try:
        import mmpose
    except ImportError as exc:
        raise InputError(
            f"mmpose is not installed ({exc}); run `make env` (tools/build_mmcv.sh installs it)"
        ) from None
    return Path(mmpose.__file__).parent / ".mim" / "configs"


def get_model(name: str) -> PoseModelSpec:
    """The spec of a named model; InputError listing the names for an unknown one."""
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(
            f"unknown model {name!r}; choose one of {', '.join(MODELS)} "
            "(`signgen keypoints models` lists them)"
        ) from None


def weights_dir() -> Path | None:
    """``$SIGNGEN_WEIGHTS_DIR`` as a Path, or None when unset."""
    value = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(value).expanduser() if value else None


def find_checkpoint(spec: PoseModelSpec, checkpoint: str | os.PathLike | None = None) -> Path:
    """The local checkpoint file of ``spec``: ``checkpoint`` if given, else in the weights dir.

    Raises MissingWeightsError naming the file and the URL to download it from.
    """
    where = f"download it from {spec.url}"
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise MissingWeightsError(
                f"checkpoint for {spec.name} not found: {path} ({where}, file {spec.checkpoint})"
            )
        return path
    root = weights_dir()
    if root is None:
        raise MissingWeightsError(
            f"{spec.name} needs the checkpoint {spec.checkpoint}: {where} and pass "
            f"--pose-checkpoint PATH, or put it in the folder named by ${WEIGHTS_DIR_ENV}"
        )
    path = root / spec.checkpoint
    if not path.is_file():
        raise MissingWeightsError(
            f"{spec.name} needs the checkpoint {path} (not found): {where} into "
            f"${WEIGHTS_DIR_ENV}={root}, or pass --pose-checkpoint PATH"
        )
    return path


def resolve_model(
    name: str | None,
    config: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    default: str = DEFAULT_WHOLEBODY_MODEL,
) -> tuple[Path, Path]:
    """(config path, checkpoint path) from a model name or an explicit config + checkpoint.

    - ``config`` given: any mmpose top-down config file; ``checkpoint`` is then required.
    - otherwise the named model (``default`` when ``name`` is None) with its checkpoint from
      ``checkpoint`` or ``$SIGNGEN_WEIGHTS_DIR``.
    """
    if config is not None:
        if name is not None:
            raise InputError("pass either --model or --pose-config, not both")
        cfg = Path(config).expanduser()
        if not cfg.is_file():
            raise InputError(f"pose config not found: {cfg}")
        if checkpoint is None:
            raise MissingWeightsError(
                f"--pose-config {cfg} needs --pose-checkpoint (the .pth trained with it); "
                "signgen never initialises a pose model with random weights"
            )
        ckpt = Path(checkpoint).expanduser()
        if not ckpt.is_file():
            raise MissingWeightsError(f"pose checkpoint not found: {ckpt}")
        return cfg, ckpt
    spec = get_model(name or default)
    ckpt = find_checkpoint(spec, checkpoint)
    cfg = spec.config_path()
    if not cfg.is_file():
        raise InputError(
            f"config of {spec.name} not found in the installed mmpose: {cfg} "
            "(is mmpose 1.3.x installed? see requirements/mm.txt)"
        )
    return cfg, ckpt


def format_model_table() -> str:
    """The text ``signgen keypoints models`` prints."""
    root = weights_dir()
    lines = []
    for spec in MODELS.values():
        have = ""
        if root is not None:
            have = " [found]" if (root / spec.checkpoint).is_file() else " [missing]"
        lines += [
            f"{spec.name}  ({spec.num_keypoints} keypoints, crops {spec.input_size[0]} wide x "
            f"{spec.input_size[1]} high)  {spec.description}",
            f"    config:     mmpose/.mim/configs/{spec.config}",
            f"    checkpoint: {spec.checkpoint}{have}",
            f"    download:   {spec.url}",
        ]
    where = f"{WEIGHTS_DIR_ENV}={root}" if root else f"{WEIGHTS_DIR_ENV} is not set"
    lines.append(
        f"\nCheckpoints are looked up in ${WEIGHTS_DIR_ENV} ({where}) unless "
        "--pose-checkpoint is given."
    )
    return "\n".join(lines)
