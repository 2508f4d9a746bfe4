"""``signgen keypoints extract`` and ``signgen keypoints models``.

``register(keypoints_subparsers)`` adds both to the ``signgen keypoints`` command; the
keypoints CLI calls it. mmpose and mediapipe are imported only when a command runs, so
``--help`` and ``models`` work without them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from pathlib import Path

from signgen.errors import InputError
from signgen.keypoints.models import (
    DEFAULT_WHOLEBODY_MODEL,
    MODELS,
    WEIGHTS_DIR_ENV,
    format_model_table,
    get_model,
    resolve_model,
    weights_dir,
)
from signgen.video.encode import VIDEO_SUFFIXES as _WRITTEN_SUFFIXES

VIDEO_SUFFIXES = (*_WRITTEN_SUFFIXES, ".avi", ".webm", ".m4v")  # what --batch takes as videos

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "mediapipe", "hrnet")

EXTRACT_DESCRIPTION = f"""\
Extract COCO-WholeBody keypoints (133 per frame) from a video, a folder of frames or an image,
and write a signgen keypoint JSON (or a pose-format .pose file) at its size and fps.

Backends (--backend):
  mediapipe  MediaPipe Holistic (body, face and both hands), offline on CPU with no weights
             to download: its models ship with the mediapipe package. Clips run in video
             mode (tracking), single images in static mode. Body, feet, the 68 face points
             and the hands are mapped to COCO-WholeBody (docs/keypoint_extraction.md).
  hrnet      a top-down mmpose model (HRNet-W32 whole-body by default, the FPDM paper's
             keypoints). Needs its checkpoint: a name from `signgen keypoints models`
             (default {DEFAULT_WHOLEBODY_MODEL}) read from --pose-checkpoint or
             ${WEIGHTS_DIR_ENV}/<file>, or any mmpose top-down config (--pose-config) with its
             checkpoint. A missing checkpoint is an error naming the file and its URL; a pose
             model never runs with random weights.
  auto       (default) hrnet when its checkpoint is found locally (or an HRNet option such as
             --model or --pose-checkpoint is given), else mediapipe. The summary line and the
             file's meta.extractor say which ran and why.

HRNet's box per frame (--bbox):
  auto     with --det-config/--det-checkpoint: the mmdet detector's best person box (frames
           without one reuse the previous box). Without a detector: the whole frame for the
           first batch, then a box around the confident keypoints of the previous batch's
           last frame, padded by 20% on each side (whole frame when too few points are
           confident). Sign-language videos show one signer who barely moves.
  full     the whole frame, every frame.
  x1,y1,x2,y2  a fixed box in pixels, every frame.
mmpose enlarges every box by 1.25 before cropping.

--batch DIR extracts every video ({", ".join(VIDEO_SUFFIXES)}), image and frame folder
directly inside DIR into -o OUTDIR/<name>.json (or .pose with --out-format pose), loading the
model once; all inputs are checked before the first frame is processed.
"""

EXTRACT_EPILOG = f"""\
examples:
  signgen keypoints extract --video signer.mp4 -o seq.json             # auto backend
  signgen keypoints extract --video signer.mp4 -o seq.pose --backend mediapipe
  signgen keypoints extract --batch clips/ -o keypoints/ --skip-existing
  export {WEIGHTS_DIR_ENV}=~/weights     # holds hrnet_w32_coco_wholebody_256x192-853765cd_20200918.pth
  signgen keypoints extract --video PHOENIX-2014-T/features/fullFrame-210x260px/test/NAME \\
      -o NAME.json --backend hrnet --model hrnet-w48-dark-wholebody --batch-size 32 --device cuda
  signgen keypoints extract --video clip.mp4 -o seq.json --backend hrnet --bbox 40,0,200,260
  signgen keypoints extract --video clip.mp4 -o seq.json \\
      --pose-config my_topdown_cfg.py --pose-checkpoint my_model.pth \\
      --det-config rtmdet_m_8xb32-300e_coco.py --det-checkpoint rtmdet_m.pth
"""


def register(keypoints_subparsers: argparse._SubParsersAction) -> None:
    """Add ``extract`` and ``models`` to the ``signgen keypoints`` sub-command parsers."""
    # Long: argparse declarations, one option per statement, each with its --help text.
    p = keypoints_subparsers.add_parser(
        "extract",
        help="extract 133 whole-body keypoints from a video (MediaPipe Holistic or HRNet)",
        description=EXTRACT_DESCRIPTION,
        epilog=EXTRACT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--video",
        metavar="V",
        help="video file, folder of frames (Phoenix images0001.png ...; 25 fps) or image",
    )
    src.add_argument(
        "--batch",
        metavar="DIR",
        help="a folder of videos, images and frame folders: one output per item in -o OUTDIR",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="file to write (signgen JSON, or pose-format when it ends in .pose); with --batch "
        "the folder to write into",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="mediapipe, hrnet, or auto: hrnet when its checkpoint is found, else mediapipe "
        "(default: auto)",
    )
    p.add_argument(
        "--out-format",
        choices=("json", "pose"),
        help="with --batch: write signgen JSON (default) or pose-format .pose files",
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="with --batch: leave items whose output file already exists",
    )
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
        metavar="auto|full|x1,y1,x2,y2",
        help="hrnet: the signer's box per frame, see above (default: auto)",
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
        help="hrnet: auto (a CUDA GPU when visible, else CPU), cpu, cuda or cuda:N "
        "(default: auto; mediapipe always runs on CPU)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        metavar="N",
        help="hrnet: frames per forward pass; also the frames decoded at a time (default: 8)",
    )
    p.add_argument(
        "--no-flip-test",
        action="store_true",
        help="hrnet: skip mmpose's flip test-time augmentation (2x faster, slightly less accurate)",
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


# Options that only the HRNet backend uses (their presence makes --backend auto pick it).
_HRNET_OPTIONS = (
    ("model", "--model"),
    ("pose_config", "--pose-config"),
    ("pose_checkpoint", "--pose-checkpoint"),
    ("det_config", "--det-config"),
    ("det_checkpoint", "--det-checkpoint"),
    ("bbox", "--bbox"),
)


def choose_backend(args: argparse.Namespace) -> tuple[str, str]:
    """(backend, why) for ``--backend``: ``auto`` -> hrnet when its weights are found locally."""
    given = [flag for attr, flag in _HRNET_OPTIONS if getattr(args, attr, None) is not None]
    if args.backend != "auto":
        if args.backend == "mediapipe" and given:
            raise InputError(
                f"{given[0]} is an HRNet option; --backend mediapipe takes none of "
                f"{', '.join(flag for _, flag in _HRNET_OPTIONS)}"
            )
        return args.backend, "requested"
    if given:
        return "hrnet", f"auto: {given[0]} given"
    spec = get_model(DEFAULT_WHOLEBODY_MODEL)
    root = weights_dir()
    if root is None:
        return "mediapipe", f"auto: ${WEIGHTS_DIR_ENV} is not set, no HRNet checkpoint"
    if not (root / spec.checkpoint).is_file():
        return "mediapipe", f"auto: no {spec.checkpoint} in ${WEIGHTS_DIR_ENV}"
    try:
        import mmpose  # noqa: F401
    except ImportError:
        return "mediapipe", "auto: mmpose is not installed"
    return "hrnet", f"auto: {spec.checkpoint} found in ${WEIGHTS_DIR_ENV}"


def _batch_items(folder: Path) -> list[Path]:
    """Videos, images and frame folders directly inside ``folder``, in name order."""
    from signgen.video import IMAGE_SUFFIXES, list_frame_files

    if not folder.is_dir():
        raise InputError(f"--batch {folder}: not a folder")
    items = []
    for path in sorted(folder.iterdir(), key=lambda q: q.name):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix.lower() in (*VIDEO_SUFFIXES, *IMAGE_SUFFIXES):
            items.append(path)
        elif path.is_dir():
            try:
                list_frame_files(path)
            except InputError:
                continue  # not a frame folder
            items.append(path)
    if not items:
        raise InputError(
            f"--batch {folder}: no videos ({', '.join(VIDEO_SUFFIXES)}), images or frame "
            "folders in it"
        )
    return items


def _jobs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """(input, output file) pairs; every path checked before any model loads."""
    from signgen.fileio import refuse_overwriting_inputs

    out = Path(args.output)
    models = {k: getattr(args, k.strip("-").replace("-", "_"), None)
              for k in ("--pose-config", "--pose-checkpoint", "--det-config", "--det-checkpoint")}  # fmt: skip
    if args.video is not None:
        if args.out_format is not None or args.skip_existing:
            raise InputError("--out-format and --skip-existing go with --batch")
        if out.is_dir():
            raise InputError(f"--output {out} is a directory; give a file name like seq.json")
        refuse_overwriting_inputs(out, {"--video": args.video, **models})
        return [(Path(args.video), out)]
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out} is a file; with --batch give the folder to write into")
    suffix = ".pose" if args.out_format == "pose" else ".json"
    jobs, seen = [], {}
    for item in _batch_items(Path(args.batch)):
        name = item.stem if item.is_file() else item.name
        if name in seen:
            raise InputError(
                f"--batch: {seen[name].name} and {item.name} would both write {name}{suffix}"
            )
        seen[name] = item
        target = out / f"{name}{suffix}"
        refuse_overwriting_inputs(target, {f"--batch item {item.name}": item, **models})
        if not (args.skip_existing and target.is_file()):
            jobs.append((item, target))
    return jobs


def _run_extract(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from signgen.devices import resolve_device
    from signgen.keypoints.extract import parse_bbox
    from signgen.keypoints.io import save_keypoints
    from signgen.video import probe

    # 1. Check every argument and input before loading anything heavy.
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    bbox = parse_bbox(args.bbox or "auto")
    if (args.det_config is None) != (args.det_checkpoint is None):
        raise InputError("--det-config and --det-checkpoint go together")
    if args.det_config is not None and not (isinstance(bbox, str) and bbox == "auto"):
        raise InputError("--det-config is used with --bbox auto only")
    jobs = _jobs(args)
    backend, why = choose_backend(args)
    if not jobs:
        print(f"nothing to extract: every output in {args.output} exists (--skip-existing)")
        return 0
    frames = sum(probe(src).num_frames for src, _ in jobs)  # unreadable input -> one line
    if backend == "hrnet":
        device = str(resolve_device(args.device))  # mmpose/mmdet take text
        config, checkpoint = resolve_model(args.model, args.pose_config, args.pose_checkpoint)

    # 2. Load the model (once for every input).
    if backend == "hrnet":
        run = _hrnet_runner(args, bbox, device, config, checkpoint, why)
    else:
        run = _mediapipe_runner(why)

    # 3. Extract, and write each output atomically. MediaPipe's native logging is kept off the
    # terminal for the whole run (signgen.keypoints.holistic.native_stderr_to_log).
    written, extractor, seq = 0, {}, None
    if backend == "mediapipe":
        from signgen.keypoints.holistic import native_stderr_to_log

        session = native_stderr_to_log()
    else:
        session = contextlib.nullcontext(sys.stderr)
    with (
        session as term,
        tqdm(
            total=frames, unit="frame", desc=f"extract ({backend})", file=term, disable=args.quiet
        ) as bar,
    ):
        for src, out in jobs:
            seq = run(src, bar)
            if args.batch is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
            save_keypoints(seq, out)
            written += 1
            extractor = seq.meta["extractor"]
            logger.debug("wrote %s: %d frames", out, len(seq))
    what = f"{extractor['name']} {extractor.get('version', '')}".strip()
    if args.batch is None:
        print(
            f"wrote {jobs[0][1]}: {len(seq)} frames, {seq.width}x{seq.height}, {seq.fps:g} fps; "
            f"backend {backend} ({what}; {why})"
        )
    else:
        print(
            f"wrote {written} keypoint file{'' if written == 1 else 's'} to "
            f"{args.output} ({frames} frames); "
            f"backend {backend} ({what}; {why})"
        )
    return 0


def _mediapipe_runner(why: str):
    from signgen.keypoints.holistic import extract_keypoints_mediapipe, mediapipe_version

    mediapipe_version()  # a clear error before the first input when it is not installed

    def run(src: Path, bar):
        return extract_keypoints_mediapipe(
            src, progress=bar, meta={"extractor": {"backend_choice": why}}
        )

    return run


def _hrnet_runner(args, bbox, device, config, checkpoint, why: str):
    from importlib.metadata import version

    from signgen.keypoints.extract import (
        MMDetPersonDetector,
        MMPoseWholeBody,
        extract_keypoints,
    )

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
    extractor = {
        "name": "mmpose-topdown",
        "version": version("mmpose"),
        "backend": "hrnet",
        "backend_choice": why,
        "model": args.model or (None if args.pose_config else DEFAULT_WHOLEBODY_MODEL),
        "config": Path(config).name,
        "checkpoint": Path(checkpoint).name,
        "bbox": args.bbox or "auto",
        "detector": Path(args.det_config).name if args.det_config else None,
        "flip_test": not args.no_flip_test,
    }

    def run(src: Path, bar):
        return extract_keypoints(
            src,
            model,
            bbox=bbox,
            detector=detector,
            batch_size=args.batch_size,
            progress=bar,
            meta={"extractor": dict(extractor)},
        )

    return run
