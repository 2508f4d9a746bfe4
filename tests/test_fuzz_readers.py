"""Fuzzing every input reader with Hypothesis: any input ends in a result or one InputError line.

Readers: the keypoint formats (signgen JSON, MSKA pickle, OpenPose folder, mmpose JSON,
DeepFashion CSV, PCDMs .txt, .pose), the render-many manifest, augment configs, training
configs and model configs. Inputs are valid files of each format corrupted the way real
files go wrong (tests/fuzz_inputs.py); the oracle is ``fuzz_inputs.check``: a valid result
or one InputError line, never another exception, never a hang. Through the CLI, a fuzzed
keypoint file given to `signgen keypoints convert` exits 0 with its output written or
exits 2 with one stderr line and no output.

The budget here is small (FUZZ_EXAMPLES per reader, derandomized so the suite is
reproducible); `benchmarks/fuzz_readers.py` runs the same strategies for longer, and
atheris. Inputs that once failed are pinned in test_regressions.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("hypothesis")

import fuzz_inputs
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("SIGNGEN_FUZZ_EXAMPLES", "40"))
# No shrinking in the suite: a failure is reported as drawn (shrinking a failing config
# took Hypothesis over five minutes); `benchmarks/fuzz_readers.py --shrink` shrinks.
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=list(HealthCheck))  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _imports():
    fuzz_inputs.warm_up()


@pytest.mark.parametrize("reader", sorted(fuzz_inputs.READERS))
def test_reader_gives_a_result_or_one_error_line(reader):
    strategy, read, validate = fuzz_inputs.READERS[reader]
    outcomes: dict[str, int] = {}

    @FUZZ
    @given(strategy())
    def run(case):
        with tempfile.TemporaryDirectory(prefix="sgfuzz") as tmp:
            got = fuzz_inputs.check(read(case, Path(tmp)), validate)
        outcomes[got] = outcomes.get(got, 0) + 1

    run()
    # The strategies reach both ends: some inputs still read, others are refused (a
    # strategy that only produced garbage, or only valid files, would test little).
    assert sum(outcomes.values()) >= min(FUZZ_EXAMPLES, 10)
    assert "input-error" in outcomes and "ok" in outcomes, outcomes


@FUZZ
@given(st.sampled_from(sorted(fuzz_inputs.KEYPOINT_STRATEGIES)).flatmap(
    lambda name: fuzz_inputs.KEYPOINT_STRATEGIES[name]()))  # fmt: skip
def test_keypoints_convert_cli_exits_0_or_2_with_one_line(case):
    from pipelines.app import main

    with tempfile.TemporaryDirectory(prefix="sgfuzz") as tmp:
        src = case.write(Path(tmp))
        before = {p: p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
        out = Path(tmp) / "out" / "seq.json"
        argv = ["keypoints", "convert", str(src), "-o", str(out)]
        if "size" in case.kwargs:
            argv += ["--size", "64x80", "--fps", "25"]
        err, stdout = io.StringIO(), io.StringIO()
        with fuzz_inputs.time_limit(fuzz_inputs.CALL_TIMEOUT_S):
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout):
                code = main(argv)
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        assert code in (0, 2), (code, err.getvalue())
        if code == 2:
            assert len(lines) == 1 and lines[0].startswith("signgen: error: "), err.getvalue()
            assert not out.parent.exists() or not any(out.parent.iterdir())  # nothing written
        else:
            assert json.loads(out.read_text())["frames"]
        after = {p: p.read_bytes() for p in before}
        assert after == before  # inputs untouched


# ---- failures the fuzzers found, pinned ------------------------------------------------------------
def _one_line_error(call) -> str:
    from signgen.errors import InputError

    with pytest.raises(InputError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def _signgen_json(tmp_path: Path, **fields) -> Path:
    doc = fuzz_inputs.signgen_doc(1, 0)
    doc.update(fields)
    path = tmp_path / "seq.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    return path


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"width": math.inf}, "width"),
        ({"width": "wide"}, "width"),
        ({"height": [80]}, "height"),
        ({"fps": "fast"}, "fps"),
        ({"fps": None}, "fps"),
        ({"meta": "not a mapping"}, "meta"),
        ({"meta": [1, 2]}, "meta"),
        ({"layout": ["x"]}, "layout"),
        ({"schema_version": [1]}, "schema_version"),
    ],
)
def test_regression_signgen_json_fields_of_the_wrong_type(tmp_path, fields, message):
    from signgen.keypoints import load_keypoints

    path = _signgen_json(tmp_path, **fields)
    assert message in _one_line_error(lambda: load_keypoints(path))


def test_regression_mmpose_frame_ids_of_mixed_types(tmp_path):
    """Frames are ordered by frame_id: ids that are not integers (sorting "one" against 1
    raised TypeError) are refused."""
    from signgen.keypoints import load_keypoints

    doc = fuzz_inputs.mmpose_doc(3, 0)
    doc[1]["frame_id"] = "one"
    doc[2]["frame_id"] = None
    (tmp_path / "p.json").write_text(json.dumps(doc))
    assert "frame_id" in _one_line_error(
        lambda: load_keypoints(tmp_path / "p.json", size=(64, 80), fps=25)
    )
    doc[1]["frame_id"], doc[2]["frame_id"] = 2, 1  # integers, out of order: sorted
    (tmp_path / "p.json").write_text(json.dumps(doc))
    seq = load_keypoints(tmp_path / "p.json", size=(64, 80), fps=25)
    want = fuzz_inputs._points(3, 0)[[2, 1], :, :2]
    got = seq.points[1:, :, :2]
    kept = got.any(axis=-1)  # points under the reader's score threshold are zeroed
    assert kept.mean() > 0.9
    np.testing.assert_allclose(got[kept], want[kept], atol=1e-3)


def test_regression_manifest_bad_bytes_and_extra_cells(tmp_path):
    from pipelines.render_many import read_manifest

    (tmp_path / "a.csv").write_bytes(b"clip_id,video,keypoints\n\xff\xfe,v,k\n")
    assert "UTF-8" in _one_line_error(lambda: read_manifest(tmp_path / "a.csv"))
    (tmp_path / "b.csv").write_text("clip_id,video,keypoints\na,v,k,extra\n")
    assert "b.csv:2: 1 more cell" in _one_line_error(lambda: read_manifest(tmp_path / "b.csv"))
    (tmp_path / "c.csv").write_text("clip_id,video,keypoints\na,v," + "k" * 200_000 + "\n")
    assert "c.csv" in _one_line_error(lambda: read_manifest(tmp_path / "c.csv"))


def test_regression_config_base_cycle_and_odd_keys(tmp_path):
    from signgen.config import load_yaml

    (tmp_path / "a.yaml").write_text("base: b.yaml\nx: 1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ny: 2\n")
    assert "cycle" in _one_line_error(lambda: load_yaml(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("base: [1]\n")
    assert "base" in _one_line_error(lambda: load_yaml(tmp_path / "c.yaml"))
    (tmp_path / "d.yaml").write_bytes(b"\xff\xfe\x00")
    assert "d.yaml" in _one_line_error(lambda: load_yaml(tmp_path / "d.yaml"))


def test_regression_config_keys_that_are_not_strings(tmp_path):
    from pipelines.augment import load_augment_config

    (tmp_path / "a.yaml").write_text("1: 2\nroot: r\n")
    assert "unknown config key" in _one_line_error(lambda: load_augment_config(tmp_path / "a.yaml"))


def test_regression_mska_keypoint_of_objects(tmp_path):
    from signgen.keypoints import load_keypoints

    samples = {"s": {"keypoint": np.array([None, "x", 1], dtype=object)}}
    path = tmp_path / "Phoenix-2014T.dev"
    path.write_bytes(pickle.dumps(samples))
    assert "keypoint" in _one_line_error(lambda: load_keypoints(path))


def test_regression_mska_tensor_with_a_corrupt_storage_key(tmp_path):
    """A tensor in a plain pickle carries its storage as torch.save bytes; a storage key
    that names no storage made torch's loader raise AssertionError."""
    import re

    import torch

    from signgen.keypoints import load_keypoints

    data = pickle.dumps({"s0": {"name": "a", "keypoint": torch.zeros(2, 133, 3)}}, protocol=3)
    key = list(re.finditer(rb"\d{6,}", data))[-1]  # the second mention of the storage key
    bad = data[: key.start()] + (b"1" if data[key.start()] != ord("1") else b"2")
    path = tmp_path / "Phoenix-2014T.dev"
    path.write_bytes(bad + data[key.start() + 1 :])
    assert "corrupt" in _one_line_error(lambda: load_keypoints(path))
    path.write_bytes(data)  # the file intact: read
    assert load_keypoints(path).points.shape == (2, 133, 3)


def test_regression_pickle_memo_index_does_not_allocate_gigabytes(tmp_path):
    """A 60-byte pickle whose PUT opcode names memo slot 175726962 made the C unpickler
    allocate a 1.4 GB memo array (found by atheris). The reader's peak allocation stays
    small and the file is refused in one line."""
    import tracemalloc

    from signgen.keypoints import load_keypoints

    # {"s0": {"name": "a"}}, the inner dict memoized at index 175726962 (LONG_BINPUT).
    data = (b"\x80\x02}q\x00X\x02\x00\x00\x00s0q\x01}q\x02X\x04\x00\x00\x00nameq\x03"
            b"r\x72\x5e\x79\x0aX\x01\x00\x00\x00as.")  # fmt: skip
    path = tmp_path / "Phoenix-2014T.dev"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        message = _one_line_error(lambda: load_keypoints(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "keypoint" in message
    assert peak < 100 * 1024**2, f"{peak / 1024**2:.0f} MB"


def test_regression_pickle_truncated_inside_a_length_field(tmp_path):
    from signgen.keypoints import load_keypoints

    data = pickle.dumps({"s0": {"name": "a", "keypoint": np.zeros((1, 133, 3), np.float32)}})
    path = tmp_path / "Phoenix-2014T.dev"
    path.write_bytes(data[:10] + b"\x8d\x01\x00")  # BINUNICODE8 whose 8-byte length is cut
    assert "truncated or corrupt" in _one_line_error(lambda: load_keypoints(path))


def test_regression_pickle_numpy_dtype_state_that_numpy_cannot_set(tmp_path):
    """A dtype whose pickled state holds a set where numpy expects a subarray: numpy's
    __setstate__ raised SystemError (found by atheris)."""
    from signgen.keypoints import load_keypoints

    data = (b"\x80\x04}\x94\x8c\x02s0\x94}\x94(\x8c\x08keypoint\x94\x8c\x16numpy._core.multiarray"
            b"\x94\x8c\x0c_reconstruct\x94\x93\x94\x8c\x05numpy\x94\x8c\x07ndarray\x94\x93\x94K"
            b"\x00\x85\x94C\x01b\x94\x87\x94R\x94(K\x01K\x02K\x85K\x03\x87\x94h\x07\x8c\x05dtype"
            b"\x94\x93\x94\x8c\x02f4\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x8fNNNJ\xff\xff\xff"
            b"\xffJ\xff\xff\xff\xffK\x00t\x94b")  # fmt: skip
    path = tmp_path / "Phoenix-2014T.dev"
    path.write_bytes(data)
    assert "truncated or corrupt" in _one_line_error(lambda: load_keypoints(path))
