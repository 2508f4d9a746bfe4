"""``signgen convert``: bring models trained elsewhere into signgen's model-folder format."""

from __future__ import annotations

import argparse
from pathlib import Path

from signgen.errors import InputError
from signgen.fileio import existing_file, refuse_replacing_inputs

FPDM_EPILOG = """\
examples:
  signgen convert fpdm-lightning diffusion/last.ckpt -o models/fpdm_deepfashion
  signgen convert fpdm-lightning diffusion/last.ckpt --ipf fusion/last.ckpt -o models/fpdm_df
  signgen render --model models/fpdm_deepfashion --video first.mp4 --keypoints seq.json

The checkpoint is read without running any code from it: only tensors and plain
containers are admitted (its OmegaConf hyper-parameters are read as plain values); a file
that names anything else is refused with the name of what was refused. The architecture
is inferred from the tensor shapes; the model resolution, source-encoder input size,
guidance weight and step count come from the checkpoint's hyper-parameters. The folder
resizes inputs as the authors' code does (squash, PIL bicubic) and samples with DDPM, 20
steps and the authors' cumulative guidance by default (docs/reproducing.md).
"""


def run_fpdm_lightning(args: argparse.Namespace) -> int:
    from signgen.models.convert import convert_checkpoint
    from signgen.runtime import quiet_libraries

    quiet_libraries()  # no per-shard progress bars of diffusers' save
    ckpt = existing_file(args.checkpoint, "checkpoint")
    ipf = existing_file(args.ipf, "stage-1 checkpoint") if args.ipf else None
    out = Path(args.out)
    # The folder is written whole (a finished conversion replaces it): inputs inside it would go.
    refuse_replacing_inputs(out, {"CKPT": ckpt, "--ipf": ipf}, replaced=(".",))
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not args.overwrite:
        raise InputError(f"{out} exists; choose another -o or pass --overwrite")
    folder = convert_checkpoint(ckpt, out, ipf=ipf, head_dim=args.head_dim)
    print(f"wrote {folder}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert",
        help="convert trained models from other code bases into signgen model folders",
        description="Convert trained models from other code bases into signgen model folders.",
    )
    sub = convert.add_subparsers(dest="convert_command", metavar="FORMAT")
    p = sub.add_parser(
        "fpdm-lightning",
        help="the FPDM authors' PyTorch-Lightning checkpoints (stage 2, optional stage 1)",
        description=(
            "Convert a stage-2 checkpoint of the published FPDM code (PyTorch Lightning "
            "'.ckpt', diffusion model) into a model folder for signgen render, "
            "render-pairs and render-many."
        ),
        epilog=FPDM_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CKPT", help="stage-2 (diffusion) Lightning checkpoint")
    p.add_argument(
        "--ipf",
        metavar="STAGE1_CKPT",
        help="stage-1 (fusion) checkpoint; default: the fusion model stored in CKPT",
    )
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="model folder to write")
    p.add_argument(
        "--head-dim",
        type=int,
        default=64,
        help="attention head width, which tensor shapes do not show (default: 64, as in "
        "Stable Diffusion 2.1, DINOv2 and CLIP)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    p.set_defaults(func=run_fpdm_lightning)
    convert.set_defaults(func=lambda _args: convert.print_help() or 2)
