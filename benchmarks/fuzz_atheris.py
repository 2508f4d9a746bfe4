"""Coverage-guided byte fuzzing (atheris, libFuzzer) of the keypoint readers and configs.

Where Hypothesis (benchmarks/fuzz_readers.py) mutates the STRUCTURE of valid files,
atheris mutates their BYTES, steered by which branches of signgen's readers an input
reaches. Each run starts from a corpus of valid files of one format (tests/fuzz_inputs.py)
and stops after ``-runs=N`` inputs; any exception other than InputError, or a hang, is a
crash that libFuzzer reports with the input (saved as ``crash-*`` in the working folder).

    nice -n 10 .venv/bin/python benchmarks/fuzz_atheris.py signgen -runs=20000
    nice -n 10 .venv/bin/python benchmarks/fuzz_atheris.py mska -runs=20000

Formats: signgen, mska, mmpose, deepfashion, pose, config. libFuzzer's own options
(``-runs``, ``-max_total_time``, ``-max_len``) follow the format name.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["signgen"]):
    import signgen.keypoints.formats.deepfashion
    import signgen.keypoints.formats.mmpose
    import signgen.keypoints.formats.mska
    import signgen.keypoints.formats.poseformat
    import signgen.keypoints.io
    import signgen.keypoints.safe_pickle  # noqa: F401 - instrumented for coverage
    from signgen.config import load_yaml
    from signgen.errors import InputError
    from signgen.keypoints import load_keypoints

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fuzz_inputs

# format -> (file name the reader sees, reader, seed files)
FORMATS = {
    "signgen": ("seq.json", load_keypoints),
    "mska": ("Phoenix-2014T.dev", load_keypoints),
    "mmpose": ("pred.json", lambda p: load_keypoints(p, size=(64, 80), fps=25.0)),
    "deepfashion": ("ann.csv", load_keypoints),
    "pose": ("clip.pose", load_keypoints),
    "config": ("config.yaml", load_yaml),
}


def seeds(fmt: str) -> list[bytes]:
    """A few valid files of ``fmt``, drawn from the Hypothesis strategies' valid cases."""
    import json
    import pickle

    from signgen.keypoints.formats.poseformat import pose_bytes
    from signgen.keypoints.sequence import KeypointSequence

    if fmt == "signgen":
        return [json.dumps(fuzz_inputs.signgen_doc(n, n)).encode() for n in (1, 2)]
    if fmt == "mska":
        pts = fuzz_inputs._points(2, 0)
        return [pickle.dumps({"s0": {"name": "a", "keypoint": pts}}, protocol=p) for p in (2, 4)]
    if fmt == "mmpose":
        return [json.dumps(fuzz_inputs.mmpose_doc(2, 0)).encode()]
    if fmt == "deepfashion":
        rows = fuzz_inputs.deepfashion_rows(2, 0)
        text = "name: keypoints_y: keypoints_x\n" + "".join(f"{a}: {b}: {c}\n" for a, b, c in rows)
        return [text.encode()]
    if fmt == "pose":
        return [pose_bytes(KeypointSequence(fuzz_inputs._points(2, 0), 64, 80, 25.0))]
    return [Path(__file__).resolve().parents[1].joinpath("configs", "augment_synthetic.yaml")
            .read_bytes()]  # fmt: skip


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in FORMATS:
        sys.exit(f"usage: fuzz_atheris.py {{{','.join(FORMATS)}}} [libFuzzer options]")
    fmt = sys.argv.pop(1)
    name, reader = FORMATS[fmt]
    folder = Path(tempfile.mkdtemp(prefix="sgatheris"))
    corpus = folder / "corpus"
    corpus.mkdir()
    for i, data in enumerate(seeds(fmt)):
        (corpus / f"seed{i}").write_bytes(data)
    target = folder / name

    def one_input(data: bytes) -> None:
        target.write_bytes(data)
        try:
            reader(target)
        except InputError as exc:
            assert "\n" not in str(exc), f"a multi-line error: {exc!r}"

    atheris.Setup([sys.argv[0], *sys.argv[1:], str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
