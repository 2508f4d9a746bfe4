"""``signgen render-pairs``: generate the target image of every DeepFashion test pair.

Pose-guided person image synthesis is evaluated on (source, target) pairs, not clips
(the paper's Table 1: 8,570 DeepFashion test pairs). DeepFashion keypoints are OpenPose-18,
so the pose image of each target comes from :class:`signgen.data.deepfashion.DeepFashionPairs`
(``target_pose``: exactly what stage 2 was trained on) and goes to
:meth:`signgen.sampling.pipeline.FPDMPipeline.generate`, the denoising loop of ``signgen
render``, with the same options object (:class:`~signgen.sampling.options.RenderOptions`),
guidance and noise; the image processor maps the result back to the target's size.

Output, ready for ``signgen evaluate --pred OUT/pred --gt OUT/gt`` (every pair is a
one-frame "video" in the Phoenix layout, so the evaluation code is the clips' one):

    OUT/pred/<key>/images0001.png   generated target, at the prepared image size
    OUT/gt/<key>/images0001.png     the ground-truth target image
    OUT/pairs.csv                   key, source, target

``key`` is ``<pair index, 5 digits>_<target image stem>``. Every PNG is written under a
temporary name and renamed, and a re-run skips the pairs already generated, so a killed
job continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
import time
from pathlib import Path

import numpy as np

from signgen.errors import InputError
from signgen.fileio import atomic_write_bytes, atomic_write_text
from signgen.sampling.options import RenderOptions

logger = logging.getLogger(__name__)

EPILOG = """\
examples:
  signgen render-pairs --prepared data/deepfashion-512 --model runs/fpdm_deepfashion_512x352_b6/export \\
      -o out/df512 --device cuda --batch-size 16
  signgen evaluate --pred out/df512/pred --gt out/df512/gt --metrics ssim,psnr,lpips,fid \\
      --lpips-weights alexnet.pth -o out/df512_metrics.csv
"""


def pair_key(index: int, target_name: str) -> str:
    stem = Path(str(target_name).replace("\\", "/")).stem
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return f"{index:05d}_{safe}"


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def render_pairs(
    pipe,
    prepared: str | Path,
    out: str | Path,
    options: RenderOptions | None = None,
    *,
    split: str = "test",
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Generate every pair of ``split`` not yet in ``out`` with ``options`` (steps,
    guidance, seed, batch size; default :class:`RenderOptions`); returns counts."""
    import torch
    from tqdm.auto import tqdm

    from signgen.data.deepfashion import DeepFashionPairs
    from signgen.models.preprocess import tensor_to_uint8

    options = options or RenderOptions()
    if pipe.focal_adapter is not None:
        raise InputError("render-pairs does not support MCLD models (they need whole-body "
                         "keypoints of the source to locate face and hands)")  # fmt: skip
    ds = DeepFashionPairs(prepared, split, pipe.resolution, max_pairs=limit)
    out = Path(out)
    keys = {i: (pair_key(i, tgt), src, tgt) for i, (src, tgt) in enumerate(ds.pairs)}
    pending = [i for i, (key, _, _) in keys.items()
               if not (out / "pred" / key / "images0001.png").is_file()]  # fmt: skip
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["key", "source", "target"])
    writer.writerows(keys.values())
    atomic_write_text(out / "pairs.csv", table.getvalue())
    batch_size = options.batch_size
    bar = tqdm(total=len(pending), unit="pair", desc="render-pairs", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)  # fmt: skip
    with bar:
        for start in range(0, len(pending), batch_size):
            idx = pending[start : start + batch_size]
            items = [ds[i] for i in idx]
            sources = [pipe.encode_source(it["source"].numpy()) for it in items]
            pose = torch.stack([it["target_pose"] for it in items])  # (b, 3, mh, mw)
            with torch.no_grad():
                images = pipe.generate(sources, pose, [0] * len(idx), options)
            sizes = [(it["target"].shape[1], it["target"].shape[0]) for it in items]
            preds = pipe.image_processor.postprocess(images, sizes)  # (1, 3, H0, W0) each
            for i, it, pred in zip(idx, items, preds, strict=True):
                pred = tensor_to_uint8(pred)[0]
                key = keys[i][0]
                # Ground truth first: a pair counts as done once its prediction exists.
                atomic_write_bytes(out / "gt" / key / "images0001.png", _png(it["target"].numpy()))
                atomic_write_bytes(out / "pred" / key / "images0001.png", _png(pred))
            bar.update(len(idx))
    return {"pairs": len(keys), "rendered": len(pending), "skipped": len(keys) - len(pending)}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "render-pairs",
        help="generate the target image of every (source, target) pair of a prepared "
        "DeepFashion split",
        description="Generate the target image of each (source, target) pair of a prepared "
        "DeepFashion split (OUT/pred), next to its ground truth (OUT/gt), for `signgen "
        "evaluate`. Resumable: pairs already generated are skipped.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prepared", required=True, metavar="DIR",
                   help="output of `signgen prepare deepfashion`")  # fmt: skip
    p.add_argument("--model", required=True, metavar="DIR", help="FPDM model folder")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    p.add_argument("--split", default="test", help="pair split (default test)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N pairs only")
    p.add_argument("--steps", type=int, default=20, metavar="N",
                   help="denoising steps (default 20, as in the paper)")  # fmt: skip
    p.add_argument("--guidance", type=float, nargs=2, default=None, metavar=("W_SRC", "W_FUSE"),
                   help="cumulative guidance (default: the model's; 2.0 2.0 for the paper's "
                        "models)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B",
                   help="pairs generated together (default 8)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"),
                   help="model precision (default fp32)")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from signgen.devices import resolve_device
    from signgen.sampling.pipeline import FPDMPipeline

    options = RenderOptions(
        steps=args.steps, guidance=args.guidance, seed=args.seed, batch_size=args.batch_size,
        dtype=args.dtype,
    )  # fmt: skip
    device = resolve_device(args.device)
    pipe = FPDMPipeline.from_pretrained(args.model, device=device, dtype=options.dtype)
    t0 = time.perf_counter()
    counts = render_pairs(pipe, args.prepared, args.output, options, split=args.split,
                          limit=args.limit, progress=not args.quiet)  # fmt: skip
    logger.info("render-pairs: %d pairs (%d generated, %d already there) in %.1f s -> %s",
                counts["pairs"], counts["rendered"], counts["skipped"],
                time.perf_counter() - t0, args.output)  # fmt: skip
    return 0
