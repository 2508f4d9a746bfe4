"""Side-by-side video and PNG strip of a rendered clip: first frame | pose | render [| truth].

Called by ``make demo`` after ``signgen render``, so that whether the render follows the
pose can be judged at a glance:

    .venv/bin/python tools/demo_sheet.py --first examples/first_frame.png \\
        --keypoints examples/sequence.json --render out/demo_frames \\
        --truth examples/ground_truth.mp4 --video out/demo_side_by_side.mp4 \\
        --strip out/demo_strip.png

``--render`` and ``--truth`` are a video or a folder of frames; ``--truth`` is optional
(the bundled example is a held-out clip of the synthetic world, whose frames are known).
Both outputs are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--first", required=True, help="the first frame (image or video)")
    ap.add_argument("--keypoints", required=True, help="the keypoint sequence that was rendered")
    ap.add_argument("--render", required=True, help="the rendered clip (video or frame folder)")
    ap.add_argument("--truth", default=None, help="the ground-truth clip, when known")
    ap.add_argument("--video", required=True, help="side-by-side video to write (.mp4)")
    ap.add_argument("--strip", required=True, help="PNG strip of a few frames to write")
    ap.add_argument("--rows", type=int, default=4, help="frames in the strip (default: 4)")
    args = ap.parse_args(argv)

    from signgen.errors import InputError

    try:
        write_sheet(args)
    except InputError as exc:
        sys.stderr.write(f"demo_sheet: error: {exc}\n")
        return 2
    print(f"wrote {args.video} and {args.strip}")
    return 0


def write_sheet(args: argparse.Namespace) -> None:
    from PIL import Image

    from signgen.errors import InputError
    from signgen.fileio import atomic_path
    from signgen.keypoints.io import load_keypoints
    from signgen.pose.draw import draw_pose_batch
    from signgen.video import read_first_frame, read_frames, write_video
    from signgen.video.sheet import side_by_side, strip, strip_indices

    if args.rows < 1:
        raise InputError(f"--rows must be >= 1, got {args.rows}")
    first = read_first_frame(args.first)  # (H, W, 3)
    h, w = first.shape[:2]
    kp = load_keypoints(args.keypoints)
    render = read_frames(args.render)  # (T, H, W, 3)
    if render.shape[1:3] != (h, w) or len(render) != len(kp):
        raise InputError(f"{args.render}: {len(render)} frames of {render.shape[2]}x"
                         f"{render.shape[1]}, expected {len(kp)} of {w}x{h} (the first frame "
                         "and the keypoints)")  # fmt: skip
    poses = draw_pose_batch(kp.points, (kp.width, kp.height), (w, h))  # (T, H, W, 3)
    columns, labels = [first, poses, render], ["first frame", "pose", "render"]
    if args.truth:
        truth = read_frames(args.truth)
        if truth.shape != render.shape:
            raise InputError(f"{args.truth}: {truth.shape[0]} frames of {truth.shape[2]}x"
                             f"{truth.shape[1]}, expected those of the render")  # fmt: skip
        columns.append(truth)
        labels.append("ground truth")
    sheet = side_by_side(columns, labels, frame_labels=True)  # (T, H', W', 3)
    write_video(args.video, sheet, kp.fps)
    out = Path(args.strip)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Image.fromarray(strip(sheet, strip_indices(len(sheet), args.rows))).save(tmp, "PNG")


if __name__ == "__main__":
    raise SystemExit(main())
