"""``signgen render-many`` and ``signgen augment``: the Ray jobs of :mod:`pipelines`."""

from __future__ import annotations

import argparse
import sys

RENDER_MANY_EPILOG = """\
MANIFEST is a CSV with a header:
clip_id,video,keypoints[,sample][,seed][,retarget][,source_keypoints]
  clip_id    output name (DIR/<clip_id>.mp4): letters, digits and ._+=-
  video      video, frame folder or image; its first frame gives the appearance
  keypoints  keypoint file (any format `signgen render` reads)
  sample     sample name inside a multi-sample keypoint file (MSKA pickle), optional
  seed       integer; empty or absent: derived from --seed and clip_id (sha256), the
             seed used is written to DIR/ledger.jsonl
  retarget   1: put the keypoints on the body of the first frame's signer first (pose
             retargeting, as `signgen render --retarget`; for keypoints of another
             person); 0, empty or absent: render them as they are
  source_keypoints  keypoint file of the first frame (its first pose), optional: the
             reference skeleton of retarget=1 (default: extracted from the first frame
             in the read stage, with the `auto` backend of `signgen keypoints extract`,
             resolved once on this machine), and where MCLD models find face and hands
Relative paths are relative to the manifest's folder.

Every DIR/<clip_id>.mp4 is what `signgen render --video VIDEO --keypoints KEYPOINTS
--seed SEED` (plus --retarget and --source-keypoints FILE when the row says so) writes
with the same model and options. Frames of several clips share a batch; the order of
frames is restored per clip before encoding. The ledger records each retargeted clip's
fit (reference, global scale, limbs the reference lacks); DIR/job.json the retargeting
settings (confidence threshold, pose backend).

--temporal (a model with a motion module): each clip is rendered whole through the motion
module in overlapping windows (--window, --overlap, --taper), as `signgen render
--temporal` renders it; up to --batch-size clips go to an actor at once and their windows
share model calls (--batch-size // W windows per call). DIR/job.json records the temporal
options like the others.

Resuming: DIR/ledger.jsonl records every finished clip (after its video was renamed into
place). Run the same command again after a crash or Ctrl-C: finished clips are skipped,
the rest are rendered. Videos are written atomically: a half-written file never has the
final name. A clip with bad inputs (missing video, unreadable keypoints, keypoints of
another frame size) is recorded as failed with its reason and the job goes on; failed
clips are tried again by the next run.

Exit codes: 0 all clips done; 3 some clips failed (listed at the end and in the ledger);
2 bad options or manifest.

Cluster: without --address a local Ray is started on this machine (whatever an earlier
`ray start` left behind, and whatever RAY_ADDRESS says). --address auto joins the cluster
of RAY_ADDRESS or of `ray start --head` on this node, HOST:6379 a head, ray://HOST:10001 a
remote one through Ray Client. A head with token authentication needs RAY_AUTH_MODE=token
and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token). Every node needs signgen installed
(same image), or --ship-code.

examples:
  signgen render-many --manifest clips.csv --out renders/ --model runs/fpdm/final
  signgen render-many --manifest clips.csv --out renders/ --workers 2 --batch-size 4 \\
      --device cpu --steps 10
  signgen render-many --manifest clips.csv --out renders_t/ --model runs/fpdm/final \\
      --temporal --window 16 --overlap 4
  signgen render-many --manifest clips.csv --out /nfs/renders --address auto \\
      --workers 8 --gpus-per-worker 1 --batch-size 16 --dtype bf16 --model /nfs/fpdm

a manifest in which two signers perform a third person's keypoints:
  clip_id,video,keypoints,retarget,source_keypoints
  anna_hello,anna.png,hello_by_bob.json,1,anna_keypoints.json
  carl_hello,carl.mp4,hello_by_bob.json,1,
"""

AUGMENT_EPILOG = """\
CONFIG is a YAML file (see configs/augment_*.yaml); KEY=VALUE pairs override it, e.g.
split=dev appearances=2 cluster.workers=2 render.steps=10.

For each video of the split, K = `appearances` other signers are chosen (deterministically
from `seed`), and the video's keypoints are rendered with the first frame of one of that
signer's videos. With `retarget: true` (the default) the keypoints are first put on that
signer's body (pose retargeting, docs/retargeting.md: their bone lengths, size and place,
from the first pose of the appearance video in the dataset's own keypoint file, never
extracted; the source's joint angles and timing); retarget=false renders them as they are,
which gives the appearance signer the source signer's body. A folder is resumed with the
setting it was started with. The output is a dataset in the Phoenix-2014T layout:
  OUT/PHOENIX-2014-T/features/fullFrame-WxHpx/<split>/<name>__as__<Signer>/images0001.png
  OUT/PHOENIX-2014-T/annotations/manual/PHOENIX-2014-T.<split>.corpus.csv
      speaker <AppearanceSigner>_as_<SourceSigner>; gloss and translation of the source
  OUT/keypoints/Phoenix-2014T.<split>      MSKA pickle of the new names: the keypoints each
                                           video was rendered from (retargeted, or copied)
  OUT/augment_manifest.<split>.csv         name, source video/signer, appearance
                                           video/signer, seed, frames, retarget (1/0)
It passes `signgen prepare phoenix --root OUT/PHOENIX-2014-T --keypoints OUT/keypoints`.
Resumable like render-many (ledger in OUT).

examples:
  signgen augment --config configs/augment_phoenix.yaml root=data/PHOENIX-2014-T \\
      keypoints=data/mska out=data/phoenix_aug render.model=runs/fpdm/final
  signgen augment --config configs/augment_synthetic.yaml root=world/PHOENIX-2014-T \\
      keypoints=world/keypoints out=world_aug split=train cluster.workers=2
  signgen augment --config configs/augment_synthetic.yaml root=world/PHOENIX-2014-T \\
      keypoints=world/keypoints out=world_aug_raw retarget=false
"""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "render-many",
        help="render many clips on Ray (resumable, batches across clips, multi-GPU)",
        description="Render every clip of a manifest with FPDM on a Ray cluster (or a local "
        "Ray): one video per clip in DIR, identical to `signgen render` for the same seed.",
        epilog=RENDER_MANY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--manifest", required=True, metavar="CSV",
                   help="clips to render (columns: see below)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: <clip_id>.mp4, ledger.jsonl, job.json")  # fmt: skip
    _add_render_options(p)
    _add_cluster_options(p)
    p.add_argument("--seed", type=int, default=0,
                   help="base seed of clips without a seed column (default 0)")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_render_many)

    a = subparsers.add_parser(
        "augment",
        help="re-render a Phoenix-layout dataset with other signers' appearance (Ray)",
        description="Dataset augmentation: render every video of a split with the appearance "
        "of K other signers and write a new dataset tree in the Phoenix-2014T layout.",
        epilog=AUGMENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("--config", required=True, metavar="YAML",
                   help="augmentation config (configs/augment_*.yaml)")  # fmt: skip
    a.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, dotted keys (cluster.workers=2)")  # fmt: skip
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=run_augment)


def _add_render_options(p: argparse.ArgumentParser) -> None:
    from signgen.sampling.options import add_render_arguments

    p.add_argument("--model", metavar="DIR", default=None,
                   help="FPDM model folder or hub id in the local cache (default: the "
                   "bundled demo model); must be readable on every node")  # fmt: skip
    # The options of `signgen render`, declared once (seeds and batch size: see below).
    add_render_arguments(p, clip=False)


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="model actors (one per GPU on a GPU cluster; default 1)")  # fmt: skip
    p.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                   help="GPUs reserved per actor (default 0: CPU actors; 0.5 packs two "
                   "actors on a GPU)")  # fmt: skip
    p.add_argument("--cpus-per-worker", type=float, default=None, metavar="C",
                   help="CPUs reserved per actor (default 1 with GPUs, else the local CPUs "
                   "minus the read stage's share, divided by --workers)")  # fmt: skip
    p.add_argument("--threads-per-worker", type=_positive_int, default=None, metavar="T",
                   help="torch threads of a CPU actor (default: its CPUs, at least 1)")  # fmt: skip
    p.add_argument("--batch-size", type=_positive_int, default=8, metavar="B",
                   help="frames per model call, mixing clips (default 8); the frames do not "
                   "depend on it (up to float rounding: a rare pixel may differ by 1)")  # fmt: skip
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="actor device: auto (cuda if --gpus-per-worker > 0, else cpu)")  # fmt: skip
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="join an existing Ray cluster (auto, HOST:6379, ray://HOST:10001); "
                   "default: start a local Ray")  # fmt: skip
    p.add_argument("--num-cpus", type=_positive_int, default=None, metavar="N",
                   help="local Ray only: CPUs to use (default: all)")  # fmt: skip
    p.add_argument("--worker-resources", default=None, metavar="JSON",
                   help="custom Ray resources each model actor reserves, as JSON, e.g. "
                   "'{\"signgen_gpu_node\": 1}': actors then run only on nodes started with "
                   "`ray start --resources` naming them")  # fmt: skip
    p.add_argument("--ship-code", action="store_true",
                   help="send this signgen checkout to the workers (Ray runtime_env "
                   "py_modules) instead of relying on it being installed on every node")  # fmt: skip


def _settings(args: argparse.Namespace):
    from pipelines.render_many import ClusterSettings, RenderSettings
    from signgen.sampling.options import options_from_args

    render = options_from_args(args, clip=False, cls=RenderSettings, model=args.model)
    cluster = ClusterSettings(
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        threads_per_worker=args.threads_per_worker,
        batch_size=args.batch_size,
        device=args.device,
        address=args.address,
        num_cpus=args.num_cpus,
        ship_code=args.ship_code,
        worker_resources=args.worker_resources,  # ClusterSettings parses the JSON
    )
    return render, cluster


def run_render_many(args: argparse.Namespace) -> int:
    from pipelines.render_many import Mp4Sink, read_manifest, run_job, summarize

    render, cluster = _settings(args)
    if args.address is None and args.model is None:
        _warn_untrained()
    specs = read_manifest(args.manifest, base_seed=args.seed)
    result = run_job(specs, Mp4Sink(args.out), args.out, render, cluster, progress=not args.quiet)
    for line in summarize(result):
        print(line, file=sys.stderr if line.startswith("FAILED") else sys.stdout)
    if result.failed:
        sys.stderr.write(
            f"signgen: {len(result.failed)} clip(s) failed (reasons above and in "
            f"{args.out}/ledger.jsonl); fix them and run the same command again\n"
        )
    return result.exit_code


def run_augment(args: argparse.Namespace) -> int:
    from pipelines.augment import load_augment_config, run_augment_job
    from pipelines.render_many import summarize

    cfg = load_augment_config(args.config, args.overrides)
    result = run_augment_job(cfg, progress=not args.quiet)
    for line in summarize(result, what="videos"):
        print(line, file=sys.stderr if line.startswith("FAILED") else sys.stdout)
    return result.exit_code


def _warn_untrained() -> None:
    from signgen.sampling.loading import MODEL_INDEX, default_model_path

    if not (default_model_path() / MODEL_INDEX).is_file():
        sys.stderr.write(
            "signgen: WARNING: no --model and no bundled demo model: rendering with a tiny "
            "UNTRAINED model (the output is noise). Pass --model DIR.\n"
        )
