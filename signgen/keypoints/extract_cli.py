"""``signgen keypoints extract`` and ``signgen keypoints models``.

``register(keypoints_subparsers)`` adds both to the ``signgen keypoints`` command; the
keypoints CLI calls it. mmpose is imported only when a command runs, so ``--help`` and
``models`` work without the OpenMMLab stack.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

from signgen.errors import InputError
from signgen.keypoints.models import (
    DEFAULT_WHOLEBODY_MODEL,
    MODELS,
    WEIGHTS_DIR_ENV,
    format_model_table,
    resolve_model,
)

logger = logging.getLogger(__name__)

EXTRACT_DESCRIPTION = f"""\
Extract COCO-WholeBody keypoints (133 per frame) from a video with a top-down mmpose model
(HRNet by default, as in the FPDM paper) and write a signgen keypoint JSON at the video's
size and fps.

The model is a name from `signgen keypoints models` (default {DEFAULT_WHOLEBODY_MODEL}), whose
checkpoint is read from --pose-checkpoint or ${WEIGHTS_DIR_ENV}/<file>, or any mmpose top-down
config (--pose-config) with its checkpoint. signgen downloads nothing and never runs a pose
model with random weights: a missing checkpoint is an error that names the file and its URL.

The signer's box per frame (--bbox):
  auto     with --det-config/--det-checkpoint: the mmdet detector's best person box (frames
           without one reuse the previous box). Without a detector: the whole frame for the
           first batch, then a box around the confident keypoints of the previous batch's
           last frame, padded by 20% on each side (whole frame when too few points are
           confident). Sign-language videos show one signer who barely moves.
  full     the whole frame, every frame.
  x1,y1,x2,y2  a fixed box in pixels, every frame.
mmpose enlarges every box by 1.25 before cropping.
"""

EXTRACT_EPILOG = f"""\
examples:
  export {WEIGHTS_DIR_ENV}=~/weights     # holds hrnet_w32_coco_wholebody_256x192-853765cd_20200918.pth
  signgen keypoints extract --video signer.mp4 -o seq.json
  signgen keypoints extract --video PHOENIX-2014-T/features/fullFrame-210x260px/test/NAME \\
      -o NAME.json --model hrnet-w48-dark-wholebody --batch-size 32 --device cuda
  signgen keypoints extract --video clip.mp4 -o seq.json --bbox 40,0,200,260
  signgen keypoints extract --video clip.mp4 -o seq.json \\
      --pose-config my_topdown_cfg.py --pose-checkpoint my_model.pth \\
      --det-config rtmdet_m_8xb32-300e_coco.py --det-checkpoint rtmdet_m.pth
"""


def register(keypoints_subparsers: argparse._SubParsersAction) -> None:
    """Add ``extract`` and ``models`` to the ``signgen keypoints`` sub-command parsers."""
    p = keypoints_subparsers.add_parser(
        "extract",
        help="extract 133 whole-body keypoints from a video with mmpose (HRNet)",
        description=EXTRACT_DESCRIPTION,
        epilog=EXTRACT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--video",
        required=True,
        metavar="V",
        help="video file, folder of frames (Phoenix images0001.png ...; 25 fps) or image",
    )
    p.add_argument("-o", "--output", required=True, metavar="JSON", help="signgen JSON to write")
    p.add_argument(
        "--model",
        metavar="NAME",
        choices=list(MODELS),
        help=f"named model ({', '.join(MODELS)}); default {DEFAULT_WHOLEBODY_MODEL} unless "
        "--pose-config is given",
    )
    p.add_argument("--pose-config", metavar="C", help="any mmpose top-down config file (.py)")
    p.add_argument(
        "--pose-checkpoint",
        metavar="P",
        help=f"checkpoint .pth (default for a named model: ${WEIGHTS_DIR_ENV}/<its file>)",
    )
    p.add_argument(
        "--bbox",
        default="auto",
        metavar="auto|full|x1,y1,x2,y2",
        help="the signer's box per frame, see above (default: auto)",
    )
    p.add_argument("--det-config", metavar="C", help="mmdet detector config for --bbox auto")
    p.add_argument("--det-checkpoint", metavar="P", help="its checkpoint .pth")
    p.add_argument(
        "--det-score-thr",
        type=float,
        default=0.5,
        metavar="S",
        help="minimum person score of a detection (default: 0.5)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (a CUDA GPU when visible, else CPU), cpu, cuda or cuda:N (default: auto)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        metavar="N",
        help="frames per forward pass; also the frames decoded at a time (default: 8)",
    )
    p.add_argument(
        "--no-flip-test",
        action="store_true",
        help="skip mmpose's flip test-time augmentation (2x faster, slightly less accurate)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_extract)

    m = keypoints_subparsers.add_parser(
        "models",
        help="list the named keypoint models and the checkpoint files they need",
        description="List the named mmpose models, their configs (inside the installed mmpose), "
        f"the checkpoint file each needs (looked up in ${WEIGHTS_DIR_ENV}) and its download URL.",
        epilog=f"example:\n  {WEIGHTS_DIR_ENV}=~/weights signgen keypoints models",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    print(format_model_table())
    return 0


def run_extract(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        if not getattr(args, "verbose", False):
            # OpenMMLab's import-time and config-resolution chatter (deprecations, "using
            # the config file shipped in the package"); -v shows it.
            warnings.filterwarnings("ignore", module=r"(mmcv|mmengine|mmpose|mmdet)(\.|$)")
            warnings.filterwarnings("ignore", message=r".*pkg_resources is deprecated.*")
        return _run_extract(args)


def _run_extract(args: argparse.Namespace) -> int:
    from signgen.devices import resolve_device
    from signgen.keypoints.extract import (
        MMDetPersonDetector,
        MMPoseWholeBody,
        extract_keypoints,
        parse_bbox,
    )
    from signgen.video import probe

    # 1. Check every argument before loading anything heavy.
    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"--output {out} is a directory; give a file name like seq.json")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    bbox = parse_bbox(args.bbox)
    if (args.det_config is None) != (args.det_checkpoint is None):
        raise InputError("--det-config and --det-checkpoint go together")
    if args.det_config is not None and not (isinstance(bbox, str) and bbox == "auto"):
        raise InputError("--det-config is used with --bbox auto only")
    device = resolve_device(args.device)
    probe(args.video)  # unreadable video -> one clear line before the model loads
    config, checkpoint = resolve_model(args.model, args.pose_config, args.pose_checkpoint)

    # 2. Load the models.
    model = MMPoseWholeBody(
        config,
        checkpoint,
        device=device,
        batch_size=args.batch_size,
        flip_test=False if args.no_flip_test else None,
    )
    detector = None
    if args.det_config is not None:
        detector = MMDetPersonDetector(
            args.det_config, args.det_checkpoint, device=device, score_thr=args.det_score_thr
        )

    # 3. Extract and write atomically.
    seq = extract_keypoints(
        args.video,
        model,
        bbox=bbox,
        detector=detector,
        batch_size=args.batch_size,
        progress=not args.quiet,
        meta={
            "extractor": {
                "model": args.model or (None if args.pose_config else DEFAULT_WHOLEBODY_MODEL),
                "config": Path(config).name,
                "checkpoint": Path(checkpoint).name,
                "bbox": args.bbox,
                "detector": Path(args.det_config).name if args.det_config else None,
                "flip_test": not args.no_flip_test,
            }
        },
    )
    seq.save(out)
    logger.info(
        "wrote %s: %d frames, %dx%d, %.3g fps", out, len(seq), seq.width, seq.height, seq.fps
    )
    return 0
