"""``signgen evaluate`` and ``signgen report``."""

from __future__ import annotations

import argparse
import shlex
import sys

EVALUATE_EPILOG = """\
inputs:
  --pred and --gt are folders of videos: either frame folders in the Phoenix layout
  (<video>/images0001.png ...) or video files (<video>.mp4). Videos are matched by their
  path relative to the folder (without the .mp4 extension); unmatched videos are an error.
  Frames are compared in order; a frame-count mismatch compares the common frames and is
  reported. Frames are resized (bicubic) to --size, default the ground-truth size.

metrics (per frame unless noted):
  ssim       skimage structural_similarity(gaussian_weights=True, sigma=1.5,
             use_sample_covariance=False, data_range=255, channel_axis=-1)
  ssim_df    DeepFashion "SSIM" (uniform window 51, data range 1); ssim_256: CFLD's
  psnr       skimage peak_signal_noise_ratio(data_range=255)
  lpips      lpips package, AlexNet (needs --lpips-weights)
  fid        per run; --fid-variant standard (pytorch-fid weights) or pgpis
             (torchvision ImageNet Inception); needs --fid-weights
  hand_ssim  SSIM of 60x60 crops at the GT middle knuckles (needs --keypoints)
  hand_pe    L1 between hand keypoints detected on both crops (needs --keypoints and
             --hand-config/--hand-checkpoint, an mmpose HRNetv2 hand model); with
             --hand-detector mediapipe: MediaPipe Hands, no weights, reported under its own
             name hand_pe_mediapipe (not comparable with the paper's HRNetv2 Hand PE)
  flicker    per clip: mean |frame_t - frame_t-1| of the generated clip, its ratio to and
             difference from the GT's, and the temporal consistency mean |f_t - (f_t-1 +
             f_t+1) / 2| (interior frames) of both clips (docs/temporal.md)
  fvd        per run, like FID: FVD in the StyleGAN-V convention (each clip's first 16
             frames, short side 224 + centre crop, I3D logits, Frechet distance); needs
             --fvd-weights and 2+ videos of 16+ frames; shorter videos are left out, counted

outputs:
  OUT.csv or OUT.parquet: one row per frame (video, signer, frame, one column per metric);
  OUT.summary.json: means, FID, FVD, per-clip flicker and temporal consistency,
  per-signer means, implementations (FVD: with the I3D weights' SHA-256).

examples:
  signgen evaluate --pred out/test --gt PHOENIX-2014-T/features/fullFrame-210x260px/test \\
      --corpus PHOENIX-2014-T.test.corpus.csv --keypoints kp/ --size 260x210 \\
      --metrics ssim,hand_ssim,fid --fid-weights pt_inception-2015-12-05-6726825d.pth \\
      -o metrics.csv
  signgen evaluate --pred out --gt gt --workers 4 -o metrics.parquet   # on a local Ray
  signgen evaluate --pred out --gt gt --metrics ssim,flicker,fvd \
      --fvd-weights i3d_pretrained_400.pt -o metrics.csv
  signgen report metrics.csv -o report.html
"""

REPORT_EPILOG = """\
The report reads METRICS (the table written by `signgen evaluate`) and its sidecar
METRICS.summary.json (FID, flicker, implementations, and where the videos are). The
gallery needs the videos: they are found through the paths in the summary, or --pred/--gt.

example:
  signgen report metrics.csv -o report.html --worst 8
"""


# Over 80 lines: argparse declarations only (one call per option of each subcommand).
def register(subparsers: argparse._SubParsersAction) -> None:
    # Long: argparse declarations, one option per statement, each with its --help text.
    from signgen.metrics import DEFAULT_METRICS, KNOWN_METRICS

    p = subparsers.add_parser(
        "evaluate",
        help="SSIM/PSNR/LPIPS/FID/hand/flicker/FVD metrics of generated vs ground-truth videos",
        description="Compare generated videos with the ground truth, frame by frame.",
        epilog=EVALUATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pred", required=True, help="folder of generated videos")
    p.add_argument("--gt", required=True, help="folder of ground-truth videos (same names)")
    p.add_argument("-o", "--output", required=True, help="per-frame table, .csv or .parquet")
    p.add_argument(
        "--metrics",
        default=",".join(DEFAULT_METRICS),
        help=f"comma-separated, from {','.join(KNOWN_METRICS)} (default: %(default)s)",
    )
    p.add_argument("--corpus", help="Phoenix corpus CSV (name|...|speaker|...) for signers")
    p.add_argument(
        "--keypoints",
        help="GT keypoints for the hand metrics: an MSKA pickle / keypoint file, or a folder "
        "of signgen JSON named <video>.json (in the GT frames' pixel space)",
    )
    p.add_argument(
        "--sample-key",
        default="{video}",
        help="how a video's key maps to a sample in a keypoint file; {video} is the relative "
        "path, {name} its last part, e.g. 'test/{name}' (default: %(default)s)",
    )
    p.add_argument("--size", help="evaluation size HxW, e.g. 260x210 (default: the GT size)")
    p.add_argument("--batch-size", type=int, default=16, help="frames per batch (default: 16)")
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ..."
    )
    p.add_argument("--lpips-weights", help="torchvision alexnet-owt-7be5be79.pth (for lpips)")
    p.add_argument(
        "--fid-weights",
        help="pt_inception-2015-12-05-6726825d.pth (standard) or "
        "inception_v3_google-0cc3c7bd.pth (pgpis)",
    )
    p.add_argument(
        "--fid-variant",
        choices=("standard", "pgpis"),
        default="standard",
        help="which Inception FID uses (default: %(default)s)",
    )
    p.add_argument(
        "--fid-cache",
        help="folder caching the ground-truth FID statistics, keyed by the GT file list, "
        "variant and size (default: no cache)",
    )
    p.add_argument(
        "--fvd-weights",
        metavar="PATH",
        help="I3D weights for fvd: a LOCAL state dict (.pt/.pth/.safetensors) of the PyTorch "
        "I3D port, Kinetics-400 RGB (e.g. i3d_pretrained_400.pt); TorchScript archives are "
        "refused (they run code)",
    )
    p.add_argument("--hand-config", help="mmpose HRNetv2 hand model config (.py) for hand_pe")
    p.add_argument("--hand-checkpoint", help="its checkpoint (.pth)")
    p.add_argument(
        "--hand-detector",
        choices=("hrnetv2", "mediapipe"),
        default="hrnetv2",
        help="hand_pe's keypoint detector: hrnetv2 (the paper's; --hand-config/--hand-checkpoint)"
        " or mediapipe (MediaPipe Hands, no weights; reported as hand_pe_mediapipe, never "
        "as hand_pe) (default: %(default)s)",
    )
    p.add_argument(
        "--min-keypoint-score",
        type=float,
        default=0.0,
        help="a GT knuckle with score <= this is missing and its hand skipped (default: 0)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="evaluate on Ray with this many workers (0: in this process; default: 0)",
    )
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_evaluate)

    r = subparsers.add_parser(
        "report",
        help="one self-contained HTML report from `signgen evaluate` outputs",
        description="Render the metrics of `signgen evaluate` as a single HTML file.",
        epilog=REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("metrics", help="the .csv or .parquet written by `signgen evaluate`")
    r.add_argument("-o", "--output", required=True, help="report .html")
    r.add_argument("--pred", help="generated videos (default: the path in the summary)")
    r.add_argument("--gt", help="ground-truth videos (default: the path in the summary)")
    r.add_argument("--worst", type=int, default=6, help="clips in the gallery (default: 6)")
    r.add_argument(
        "--strip-frames", type=int, default=6, help="frames per gallery strip (default: 6)"
    )
    r.add_argument("--title", default="signgen evaluation", help="report title")
    r.set_defaults(func=_report)


def _evaluate(args: argparse.Namespace) -> int:
    from signgen.metrics.evaluate import EvalConfig, format_table, parse_size, run_evaluation

    _refuse_overwriting_inputs(args)
    config = EvalConfig(
        pred=args.pred,
        gt=args.gt,
        output=args.output,
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
        corpus=args.corpus,
        keypoints=args.keypoints,
        sample_key=args.sample_key,
        size=parse_size(args.size),
        batch_size=args.batch_size,
        device=args.device,
        lpips_weights=args.lpips_weights,
        fid_weights=args.fid_weights,
        fid_variant=args.fid_variant,
        fid_cache=args.fid_cache,
        fvd_weights=args.fvd_weights,
        hand_config=args.hand_config,
        hand_checkpoint=args.hand_checkpoint,
        hand_detector=args.hand_detector,
        min_keypoint_score=args.min_keypoint_score,
    )
    summary = run_evaluation(
        config,
        progress=not args.no_progress,
        workers=args.workers,
        address=args.address,
        command="signgen " + shlex.join(sys.argv[1:]),
        distributed=getattr(getattr(args, "runners", None), "evaluate", None),
    )
    print(format_table(summary))
    print(f"wrote {args.output}")
    return 0


def _refuse_overwriting_inputs(args: argparse.Namespace) -> None:
    """Neither evaluate's table nor its summary (``OUT.summary.json``) may replace an input."""
    from signgen.fileio import refuse_overwriting_inputs
    from signgen.metrics.evaluate import summary_path

    options = ("pred", "gt", "corpus", "keypoints", "lpips_weights", "fid_weights",
               "fvd_weights", "fid_cache", "hand_config", "hand_checkpoint")  # fmt: skip
    inputs = {"--" + o.replace("_", "-"): getattr(args, o) for o in options}
    for path in (args.output, summary_path(args.output)):
        refuse_overwriting_inputs(path, inputs)


def _report(args: argparse.Namespace) -> int:
    from signgen.metrics.report import write_report

    write_report(
        args.metrics,
        args.output,
        pred=args.pred,
        gt=args.gt,
        worst=args.worst,
        strip_frames=args.strip_frames,
        title=args.title,
    )
    print(f"wrote {args.output}")
    return 0
