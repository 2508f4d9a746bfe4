"""``signgen render``: one clip on one machine (the render path: ``docs/render_path.md``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from signgen.errors import InputError
from signgen.sampling.options import add_render_arguments, options_from_args

logger = logging.getLogger(__name__)

EPILOG = """\
The first frame (FIRST: a video, of which the first frame is used, or an image) gives the
appearance; SEQ gives one pose per output frame (any keypoint format signgen reads). The
output has exactly FIRST's width and height and SEQ's fps. The model runs at its own
resolution, in the model's own geometry (saved in its folder): letterbox (border pixels
replicated to the model's aspect ratio, every generated frame mapped back by the exact
inverse, so nothing is cropped or squashed) or squash (a plain bicubic resize both ways,
as the FPDM authors' code; the paper's and converted models). Keypoints measured on a frame of another size are rescaled (with a warning)
if the aspect ratios agree within 1%; otherwise it is an error.

By default every frame starts from the same initial noise (drawn once from --seed), which
keeps the clip consistent; --independent-noise draws per-frame noise from (seed, frame).
The same seed gives the same frames, whatever --batch-size.

--retarget puts SEQ on the body of the signer in FIRST before rendering (pose retargeting,
docs/retargeting.md; what `signgen keypoints retarget` writes): FIRST's bone lengths, size
and place in the frame, SEQ's joint angles and timing. Use it when SEQ comes from another
person. The reference skeleton is the first pose of --source-keypoints FILE (brought to
FIRST's size), else FIRST's keypoints extracted with the `auto` backend of `signgen
keypoints extract` (HRNet when its checkpoint is found, else MediaPipe Holistic, offline).
SEQ may then be measured on a frame of any size. A reference missing a limb keeps SEQ's
length for it, said in one warning line.

--temporal (models with a motion module, e.g. the bundled demo model): the clip is denoised
in windows of W frames overlapping by O (--window, --overlap; default: the motion module's),
the frames of a window attending to each other; predictions of frames two windows share are
blended (--taper). The clip's latents stay on the CPU and one window batch at a time goes to
the device, so memory does not grow with the clip's length; --batch-size frames per model
call, i.e. batch-size // W windows.

MCLD models (multi-focal conditioning) also encode the face and hands of FIRST, located by
its keypoints: --source-keypoints FILE (the first pose in FILE), with --retarget the
reference skeleton, else the first pose of SEQ (right when SEQ was extracted from FIRST's
video). Their guidance has a fourth term,
eps = eps_u + W_SRC (eps_src - eps_u) + W_FOCAL (eps_focal - eps_src)
            + W_FUSE (eps_full - eps_focal), still one batched UNet call per step.

Models are loaded offline only (local folder, or the Hugging Face cache under HF_HOME;
set HF_HUB_OFFLINE=1). Without --model the bundled demo model is used; if none is bundled
a tiny UNTRAINED model is built and the output is noise (said on stderr).

examples:
  signgen render --video first.mp4 --keypoints seq.json
  signgen render --video signer.png --keypoints Phoenix-2014T.test --sample NAME \\
      --model runs/fpdm/final -o out/NAME.mp4 --frames-dir out/NAME --steps 20 --device cuda
  signgen render --video first.mp4 --keypoints seq.json --scheduler dpm++ --steps 10 \\
      --guidance 2.0 2.0 --seed 7 --batch-size 16 --dtype bf16
  signgen render --video first.mp4 --keypoints seq.json --model DIR --device cuda \\
      --dtype bf16 --channels-last --compile --vae-slicing --batch-size 32   # GPU speed
  signgen render --video first.mp4 --keypoints seq.json --model runs/mcld/export \\
      --guidance-focal 3.0 --source-keypoints first_pose.json
  signgen render --video signer.png --keypoints other_signer.json --retarget
  signgen render --video signer.png --keypoints other_signer.json --retarget \\
      --source-keypoints signer_keypoints.json
  signgen render --video first.mp4 --keypoints seq.json --temporal --independent-noise
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "render",
        help="render one clip: first frame + keypoint sequence -> video",
        description="Generate a video in which the person of FIRST performs the poses of SEQ "
        "(FPDM, every frame generated from the first frame and its pose).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--video", required=True, metavar="FIRST",
                   help="video (its first frame is used) or image of the signer")  # fmt: skip
    p.add_argument("--keypoints", required=True, metavar="SEQ",
                   help="keypoint sequence: signgen JSON, MSKA pickle, OpenPose/mmpose "
                   "folder, DeepFashion CSV")  # fmt: skip
    p.add_argument("-o", "--output", metavar="OUT", default=None,
                   help="output video (.mp4/.mkv/.mov); default <FIRST stem>_signgen.mp4 in "
                   "the current directory")  # fmt: skip
    p.add_argument("--model", metavar="DIR", default=None,
                   help="FPDM model folder (FPDMPipeline.save_pretrained) or a Hugging Face "
                   "hub id in the local cache; default: the bundled demo model")  # fmt: skip
    p.add_argument("--sample", metavar="NAME", default=None,
                   help="sample name inside a multi-sample keypoint file (MSKA pickle, "
                   "DeepFashion CSV)")  # fmt: skip
    # Clip inputs, not render options: they decide which keypoints are rendered, not how
    # (the pipeline never sees them; render-many takes them per clip, as manifest columns).
    p.add_argument("--retarget", action="store_true",
                   help="put SEQ on the body of FIRST's signer first (bone lengths, size, "
                   "place; see below): for keypoints of another person")  # fmt: skip
    p.add_argument("--source-keypoints", metavar="FILE", default=None,
                   help="keypoints of FIRST (its first pose is used): the reference skeleton "
                   "of --retarget (default: extracted from FIRST), and where MCLD models find "
                   "face and hands (default: the first pose of SEQ)")  # fmt: skip
    add_render_arguments(p)
    p.add_argument("--device", default="auto",
                   help="auto (cuda if available, else cpu; default), cpu, cuda or cuda:N")  # fmt: skip
    p.add_argument("--frames-dir", metavar="DIR", default=None,
                   help="also write the frames as numbered PNGs (images0001.png, ...)")  # fmt: skip
    p.set_defaults(func=run_render)


def run_render(args: argparse.Namespace) -> int:
    # Over 80 lines: the command's four numbered steps (options, inputs, model, render)
    # read top to bottom, as docs/render_path.md lists them; each is a few calls.
    import torch  # noqa: F401 - imported here so `signgen --help` stays fast

    from signgen.devices import resolve_device
    from signgen.fileio import refuse_overwriting_inputs
    from signgen.keypoints.io import load_keypoints
    from signgen.keypoints.retarget import caught_retarget_warnings
    from signgen.runtime import quiet_libraries
    from signgen.sampling.inputs import check_clip, retarget_clip
    from signgen.sampling.pipeline import FPDMPipeline, load_default_pipeline
    from signgen.video import VideoWriter, read_first_frame, write_png_frames

    # 1. Options that need no file: checked once, before loading anything.
    options = options_from_args(args)
    device = resolve_device(args.device)
    output = (
        Path(args.output) if args.output else Path.cwd() / f"{Path(args.video).stem}_signgen.mp4"
    )
    refuse_overwriting_inputs(output, {"--video": args.video, "--keypoints": args.keypoints,
                                       "--source-keypoints": args.source_keypoints})  # fmt: skip

    # 2. Inputs: first frame and keypoints (retargeted onto FIRST's signer with --retarget).
    first = read_first_frame(args.video)
    drive = load_keypoints(args.keypoints, sample=args.sample)
    source = load_keypoints(args.source_keypoints) if args.source_keypoints else None
    source_points = None
    if args.retarget:
        with caught_retarget_warnings() as warned:
            kp, source_points = retarget_clip(first, drive, source)
        for message in warned:
            sys.stderr.write(f"signgen: warning: {message}\n")
    else:
        kp = check_clip(first, drive)
        if source is not None:
            source_points = check_clip(first, source).points[0]

    # 3. Model, and the options that depend on it.
    quiet_libraries()
    if args.model:
        pipe = FPDMPipeline.from_pretrained(args.model, device=device, dtype=options.dtype)
    else:
        pipe, trained = load_default_pipeline(device=device, dtype=options.dtype)
        if not trained:
            sys.stderr.write(
                "signgen: WARNING: no bundled demo model found; using a tiny UNTRAINED "
                "random-init model: the output is noise, not a signer. Pass --model DIR.\n"
            )
    if source is not None and not args.retarget and pipe.focal_adapter is None:
        raise InputError("--source-keypoints needs an MCLD model (this one has no focal "
                         "conditioning) or --retarget")  # fmt: skip
    pipe.guidance_plan(options)  # the options against this model, before any output opens
    from signgen.speed import apply_render_options

    apply_render_options(pipe, options)  # attention kernel, layout, compile, VAE slicing

    # 4. Render, streaming frames into the video (and PNGs); outputs appear only on success.
    from tqdm.auto import tqdm

    h, w = first.shape[:2]
    start = time.perf_counter()
    n = 0
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(VideoWriter(output, fps=kp.fps, width=w, height=h))
        frames_tmp = stack.enter_context(_staged_dir(args.frames_dir))
        # A temporal render denoises the whole clip before decoding: its bar counts frames x
        # denoising steps.
        total, unit = (
            (len(kp) * pipe.steps_for(options), "frame-step")
            if options.temporal
            else (len(kp), "frame")
        )
        bar = stack.enter_context(
            tqdm(total=total, unit=unit, desc="render", file=sys.stderr, dynamic_ncols=True)
        )
        for batch in pipe.render(first, kp, options, source_points=source_points, progress=bar):
            for frame in batch:
                writer.write(frame)
            if frames_tmp is not None:
                write_png_frames(frames_tmp, batch, start_index=n + 1)
            n += len(batch)
    seconds = time.perf_counter() - start
    assert n == len(kp), (n, len(kp))
    extra = f" and {args.frames_dir}/" if args.frames_dir else ""
    print(
        f"wrote {n} frames ({w}x{h}, {kp.fps:g} fps) to {output}{extra} in {seconds:.1f} s "
        f"({n / seconds:.2f} frames/s)" + (_retarget_note(kp) if args.retarget else "")
    )
    return 0


def _retarget_note(kp) -> str:
    fit = kp.meta["retarget"]  # set by retarget_clip
    return (f"; keypoints retargeted onto FIRST's signer (reference: {fit['reference']}; "
            f"global scale x{fit['scale']:.3f})")  # fmt: skip


@contextlib.contextmanager
def _staged_dir(target: str | None):
    """Yield a temporary folder next to ``target`` and rename it onto ``target`` on success
    (merging into an existing folder file by file), so a failed render leaves no frames."""
    if target is None:
        yield None
        return
    final = Path(target)
    if final.exists() and not final.is_dir():
        raise InputError(f"--frames-dir is a file: {final}")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.part.", dir=final.parent))
    try:
        yield tmp
        if not final.exists():
            os.replace(tmp, final)
        else:
            for f in sorted(tmp.iterdir()):
                os.replace(f, final / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
