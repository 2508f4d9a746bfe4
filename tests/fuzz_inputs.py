"""Helpers (no tests): structure-aware fuzzed inputs for every reader, and the oracle.

Used by ``tests/test_fuzz_readers.py`` (a small budget in the suite) and
``benchmarks/fuzz_readers.py`` (a longer one). Random bytes rarely get past a reader's
first check, so each strategy starts from a VALID input of its format (a signgen JSON, an
MSKA pickle, an OpenPose folder, ...) and corrupts it the way real files go wrong: a field
of the wrong type, a wrong shape, NaN/inf, huge or negative numbers, unicode and control
characters, a missing or an unknown key, a truncated or bit-flipped file.

The oracle (:func:`check`) is the rule every reader must keep: any input ends in a result
(a valid :class:`~signgen.keypoints.sequence.KeypointSequence` for keypoint readers) or in
one :class:`~signgen.errors.InputError` whose message is one line; never another
exception (a traceback through the CLI), never a hang (each call runs under an alarm).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import pickle
import signal
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from signgen.errors import InputError

CALL_TIMEOUT_S = 20  # a reader that takes longer on a file of a few kB is hung

# ---- values that break readers ---------------------------------------------------------------
NASTY_NUMBERS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 1e-320, 0, -0.0, -1, 1, 2**31,
                 2**63, 10**30, -(2**63), 0.5, 255]  # fmt: skip
NASTY_STRINGS = ["", " ", "NaN", "inf", "-1", "1e999", "0x10", "é", "\u0000", "\ud800",
                 "\u202e", "../../etc/passwd", "a" * 300, "😀", "1,2,3", "\n", "true"]  # fmt: skip


def nasty_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(NASTY_NUMBERS),
        st.sampled_from(NASTY_STRINGS),
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
    )


def nasty_values() -> st.SearchStrategy[Any]:
    """Scalars, and small containers of them (wrong types where numbers are expected)."""
    return st.recursive(
        nasty_scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.text(max_size=6), inner, max_size=3),
        ),
        max_leaves=6,
    )


# ---- structural mutation of a JSON-like document ------------------------------------------------
def _paths(doc: Any, prefix: tuple = (), depth: int = 0) -> Iterator[tuple]:
    """Every path to a node of ``doc`` (dict keys and list indices), big lists sampled."""
    yield prefix
    if depth > 6:
        return
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k), depth + 1)
    elif isinstance(doc, list):
        idx = range(len(doc)) if len(doc) <= 4 else (0, 1, len(doc) // 2, len(doc) - 1)
        for i in idx:
            yield from _paths(doc[i], (*prefix, i), depth + 1)


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def mutate(draw: Callable, doc: Any, max_mutations: int = 3) -> Any:
    """``doc`` (a deep copy) with 1..max_mutations structural mutations at random nodes:
    replace by a nasty value, delete, add an unknown key, wrap in a list, truncate a list,
    change the shape of a number list (drop/append an element)."""
    doc = json.loads(json.dumps(doc))  # deep copy (the docs here are JSON-able)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "wrap", "truncate",
                                   "extend", "scale"]))  # fmt: skip
        if not path:  # the root itself
            if op in ("replace", "wrap"):
                doc = draw(nasty_values()) if op == "replace" else [doc]
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        node = parent[key]
        if op == "replace":
            parent[key] = draw(nasty_values())
        elif op == "delete":
            del parent[key]
        elif op == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(["extra", "", "é", "frames", "0"]))] = draw(nasty_values())
        elif op == "wrap":
            parent[key] = [node]
        elif op == "truncate" and isinstance(node, list):
            parent[key] = node[: draw(st.integers(0, max(0, len(node) - 1)))]
        elif op == "extend" and isinstance(node, list):
            parent[key] = [*node, draw(nasty_values()) if not node else node[-1]]
        elif op == "scale" and isinstance(node, (int, float)) and not isinstance(node, bool):
            parent[key] = node * draw(st.sampled_from([-1, 0, 1e6, 1e300, 1e-300]))
    return doc


def _index(draw: Callable, n: int) -> int:
    """An index into ``n`` items drawn as a fraction, so that inputs whose length varies
    between runs (torch.save writes a random serialization id) still replay the same way."""
    return min(n - 1, int(draw(st.floats(0, 1, exclude_max=True)) * n))


def corrupt_bytes(draw: Callable, data: bytes) -> bytes:
    """Maybe truncate the file and maybe flip or overwrite a few bytes."""
    kind = draw(st.sampled_from(["keep", "keep", "truncate", "flip", "overwrite"]))
    if kind == "truncate" and data:
        return data[: _index(draw, len(data))]
    if kind == "flip" and data:
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            buf[_index(draw, len(buf))] ^= 1 << draw(st.integers(0, 7))
        return bytes(buf)
    if kind == "overwrite" and data:
        buf = bytearray(data)
        i = _index(draw, len(buf))
        chunk = draw(st.sampled_from([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\xff" * 8,
                                      struct.pack("<f", math.nan), struct.pack("<i", -1)]))  # fmt: skip
        buf[i : i + len(chunk)] = chunk
        return bytes(buf)
    return data


def _dump_json(draw: Callable, doc: Any) -> bytes:
    text = json.dumps(doc, allow_nan=True, ensure_ascii=draw(st.booleans()))
    data = text.encode("utf-8", errors="surrogatepass")
    return corrupt_bytes(draw, data)


# ---- valid documents of each format ------------------------------------------------------------
def _points(frames: int, seed: int, w: int = 64, h: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = np.zeros((frames, 133, 3), np.float32)
    pts[..., 0] = rng.uniform(0, w, (frames, 133))
    pts[..., 1] = rng.uniform(0, h, (frames, 133))
    pts[..., 2] = rng.uniform(0, 1, (frames, 133))
    return np.round(pts, 2)


def signgen_doc(frames: int, seed: int) -> dict[str, Any]:
    from signgen.keypoints.sequence import LAYOUT_NAME

    return {"schema_version": 1, "layout": LAYOUT_NAME, "width": 64, "height": 80,
            "fps": 25.0, "frames": _points(frames, seed).tolist(),
            "meta": {"gloss": "A B"}}  # fmt: skip


def openpose_doc(seed: int, people: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)

    def flat(n: int) -> list[float]:
        return np.round(rng.uniform(0, 60, (n, 3)), 1).reshape(-1).tolist()

    return {"version": 1.3, "people": [
        {"person_id": [-1], "pose_keypoints_2d": flat(25), "face_keypoints_2d": flat(70),
         "hand_left_keypoints_2d": flat(21), "hand_right_keypoints_2d": flat(21)}
        for _ in range(people)]}  # fmt: skip


def mmpose_doc(frames: int, seed: int) -> list[dict[str, Any]]:
    pts = _points(frames, seed)
    return [{"frame_id": t, "instances": [{
        "keypoints": pts[t, :, :2].tolist(), "keypoint_scores": pts[t, :, 2].tolist(),
        "bbox": [[0.0, 0.0, 60.0, 70.0]], "bbox_score": 0.9}]} for t in range(frames)]  # fmt: skip


def deepfashion_rows(rows: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    out = []
    for r in range(rows):
        ys = rng.integers(-1, 256, 18).tolist()
        xs = rng.integers(-1, 176, 18).tolist()
        out.append([f"fashionWOMEN{r}.jpg", json.dumps(ys), json.dumps(xs)])
    return out


# ---- file strategies: (what, write(folder) -> path, extra reader kwargs) -------------------------
@dataclass
class Case:
    """One fuzzed input: ``write(folder)`` creates it and returns the path to read."""

    label: str
    files: dict[str, bytes]  # relative name -> content ("" name: the folder itself)
    target: str  # relative path handed to the reader
    kwargs: dict[str, Any]

    def write(self, folder: Path) -> Path:
        for name, data in self.files.items():
            p = folder / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        (folder / self.target).parent.mkdir(parents=True, exist_ok=True)
        return folder / self.target


@st.composite
def signgen_json_cases(draw) -> Case:
    doc = signgen_doc(draw(st.integers(1, 3)), draw(st.integers(0, 9)))
    data = _dump_json(draw, mutate(draw, doc))
    return Case("signgen", {"seq.json": data}, "seq.json", {})


def _tensor_or_array(draw, arr: np.ndarray, kind: str | None = None) -> Any:
    import torch

    if kind is None:
        kind = draw(st.sampled_from(["numpy", "torch", "list", "float16", "int", "bool",
                                     "object"]))  # fmt: skip
    if kind == "torch":
        return torch.from_numpy(arr.copy())
    if kind == "list":
        return arr.tolist()
    if kind == "float16":
        return torch.from_numpy(arr.astype(np.float16))
    if kind == "int":
        return arr.astype(np.int64)
    if kind == "bool":
        return torch.from_numpy(arr > 0.5)
    if kind == "object":
        return np.array([draw(nasty_scalars()) for _ in range(3)], dtype=object)
    return arr


class _Evil:
    """Pickles to a call of os.system: the restricted unpickler must refuse it."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def _clean_mska(draw) -> Case:
    """A valid one-sample MSKA pickle (the keypoints as numpy, torch, float16 or a list)."""
    arr = _points(draw(st.integers(1, 3)), draw(st.integers(0, 9)))
    kind = draw(st.sampled_from(["numpy", "torch", "list", "float16"]))
    sample = {"name": "train/s0", "gloss": "A", "text": "a", "num_frames": len(arr),
              "keypoint": _tensor_or_array(draw, arr, kind)}  # fmt: skip
    data = pickle.dumps({"s0": sample}, protocol=draw(st.integers(2, 5)))
    return Case("mska", {"Phoenix-2014T.dev": data}, "Phoenix-2014T.dev", {"sample": None})


@st.composite
def mska_cases(draw) -> Case:
    if draw(st.integers(0, 3)) == 0:  # a valid file now and then: readers must still read
        return _clean_mska(draw)
    samples: dict[Any, Any] = {}
    for i in range(draw(st.integers(1, 2))):
        t = draw(st.integers(0, 3))
        shape = draw(st.sampled_from([(t, 133, 3), (t, 133, 3), (t, 134, 3), (t, 133, 2),
                                      (t, 133), (133, 3), (t, 0, 3), (t, 133, 4)]))  # fmt: skip
        arr = np.asarray(np.random.default_rng(i).uniform(0, 200, shape), np.float32)
        if arr.size and draw(st.booleans()):
            arr.reshape(-1)[_index(draw, arr.size)] = draw(
                st.sampled_from([math.nan, math.inf, -1e38, 3e38])
            )
        sample = {"name": f"train/s{i}", "gloss": "A", "text": "a", "num_frames": t,
                  "keypoint": _tensor_or_array(draw, arr)}  # fmt: skip
        if draw(st.booleans()):
            key = draw(st.sampled_from(["name", "gloss", "num_frames", "keypoint", "signer"]))
            sample[key] = draw(nasty_values())
        if draw(st.integers(0, 9)) == 0:
            sample.pop("keypoint")
        samples[draw(st.sampled_from([f"s{i}", i, (i,), None, f"é{i}"]))] = sample
    root: Any = samples
    top = draw(st.integers(0, 14))
    if top == 0:
        root = list(samples.values())
    elif top == 1:
        root = {"s": _Evil()}
    elif top == 2:
        root = {k: draw(nasty_values()) for k in samples}
    data = pickle.dumps(root, protocol=draw(st.integers(2, 5)))
    data = corrupt_bytes(draw, data)
    return Case("mska", {"Phoenix-2014T.dev": data}, "Phoenix-2014T.dev", {"sample": None})


@st.composite
def openpose_cases(draw) -> Case:
    files = {}
    for t in range(draw(st.integers(1, 3))):
        doc = openpose_doc(t, draw(st.integers(0, 2)))
        if draw(st.booleans()):
            doc = mutate(draw, doc)
        files[f"op/clip_{t:012d}_keypoints.json"] = _dump_json(draw, doc)
    return Case("openpose", files, "op", {"size": (64, 80), "fps": 25.0})


@st.composite
def mmpose_cases(draw) -> Case:
    doc: Any = mmpose_doc(draw(st.integers(1, 3)), draw(st.integers(0, 9)))
    shape = draw(st.sampled_from(["video", "image", "demo"]))
    if shape == "image":
        doc = doc[0]["instances"]
    elif shape == "demo":
        doc = {"meta_info": {}, "instance_info": doc}
    data = _dump_json(draw, mutate(draw, doc))
    return Case("mmpose", {"pred.json": data}, "pred.json", {"size": (64, 80), "fps": 25.0})


@st.composite
def deepfashion_cases(draw) -> Case:
    rows: list[list[Any]] = [[n, json.loads(y), json.loads(x)]
                             for n, y, x in deepfashion_rows(draw(st.integers(1, 3)),
                                                             draw(st.integers(0, 9)))]  # fmt: skip
    for _ in range(draw(st.integers(0, 3))):
        r = draw(st.integers(0, len(rows) - 1))
        c = draw(st.integers(0, 2))
        if c == 0 or draw(st.booleans()):
            rows[r][c] = draw(st.sampled_from([*NASTY_STRINGS, "a:b", '"', "x" * 200_000]))
        else:
            rows[r][c] = mutate(draw, rows[r][c])
    cells = [[v if isinstance(v, str) else json.dumps(v, allow_nan=True) for v in row]
             for row in rows]  # fmt: skip
    if draw(st.integers(0, 5)) == 0:
        cells[0] = cells[0][: draw(st.integers(0, 2))] + cells[0][3:]
    buf = io.StringIO()
    csv.writer(buf, delimiter=":", lineterminator="\n").writerows(
        [["name", "keypoints_y", "keypoints_x"], *cells]
    )
    data = buf.getvalue().encode("utf-8", errors="surrogatepass")
    return Case("deepfashion", {"ann.csv": corrupt_bytes(draw, data)}, "ann.csv", {})


@st.composite
def pcdms_cases(draw) -> Case:
    rows = [[float(x), float(y)] for x, y in np.random.default_rng(0).integers(-1, 200, (18, 2))]
    for _ in range(draw(st.integers(0, 3))):
        r = draw(st.integers(0, 17))
        rows[r][draw(st.integers(0, 1))] = draw(st.sampled_from(NASTY_NUMBERS))
    if draw(st.booleans()):
        rows = rows[: draw(st.integers(0, 18))]
    text = "\n".join(f"{x!r} {y!r}".replace("nan", "nan") for x, y in rows) + "\n"
    data = corrupt_bytes(draw, text.encode())
    return Case("pcdms", {"pose.txt": data}, "pose.txt", {})


@st.composite
def pose_cases(draw) -> Case:
    from signgen.keypoints.formats.poseformat import pose_bytes
    from signgen.keypoints.sequence import KeypointSequence

    pts = _points(draw(st.integers(1, 3)), draw(st.integers(0, 9)))
    data = pose_bytes(KeypointSequence(pts, 64, 80, 25.0))
    # Structure-aware: the header (frame size, component and point names, counts) is the
    # first part of the file; corruptions there change what the rest is parsed as.
    header_end = max(1, len(data) - pts.size * 4)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["header", "header", "anywhere"]))
        hi = header_end if where == "header" else len(data)
        i = draw(st.integers(0, hi - 1))
        chunk = draw(st.sampled_from([b"\xff\xff", b"\x00\x00", b"\xff\xff\xff\x7f",
                                      struct.pack("<f", math.nan), struct.pack("<f", -1.0),
                                      struct.pack("<H", 0), b"\xc3\x28"]))  # fmt: skip
        data = data[:i] + chunk + data[i + len(chunk) :]
    if draw(st.booleans()):
        data = data[: draw(st.integers(1, len(data)))]
    return Case("pose", {"clip.pose": data}, "clip.pose", {})


KEYPOINT_STRATEGIES: dict[str, Callable[[], st.SearchStrategy[Case]]] = {
    "signgen": signgen_json_cases,
    "mska": mska_cases,
    "openpose": openpose_cases,
    "mmpose": mmpose_cases,
    "deepfashion": deepfashion_cases,
    "pcdms": pcdms_cases,
    "pose": pose_cases,
}


# ---- manifests and configs -------------------------------------------------------------------------
@st.composite
def manifest_cases(draw) -> Case:
    header = ["clip_id", "video", "keypoints"]
    if draw(st.booleans()):
        header += draw(st.lists(st.sampled_from(["sample", "seed", "colour", "clip_id", ""]),
                                max_size=2))  # fmt: skip
    if draw(st.integers(0, 6)) == 0:
        header = draw(st.permutations(header))[: draw(st.integers(0, len(header)))]
    rows = []
    for i in range(draw(st.integers(0, 3))):
        row = [f"c{i}", "v.mp4", "k.json", "", str(i)][: len(header)]
        row += [""] * (len(header) - len(row))
        for _ in range(draw(st.integers(0, 2))):
            j = draw(st.integers(0, len(row) + 1))
            value = draw(st.one_of(st.sampled_from([*NASTY_STRINGS, "1.5", "1e3", "-5",
                                                                     str(2**64)]),
                                   st.text(max_size=8)))  # fmt: skip
            if j < len(row):
                row[j] = value
            else:
                row.append(value)  # more cells than the header
        rows.append(row)
    buf = io.StringIO()
    csv.writer(buf, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))).writerows([header, *rows])
    text = buf.getvalue()
    enc = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    data = text.encode(enc, errors="replace") if enc != "utf-8" else text.encode(
        "utf-8", errors="surrogatepass")  # fmt: skip
    return Case("manifest", {"clips.csv": corrupt_bytes(draw, data)}, "clips.csv", {})


def _yaml_bytes(draw, doc: Any, corrupt: bool = True) -> bytes:
    import yaml

    text = yaml.safe_dump(doc, allow_unicode=draw(st.booleans()), sort_keys=False)
    data = text.encode("utf-8", errors="surrogatepass")
    return corrupt_bytes(draw, data) if corrupt else data


def _config_case(draw, label: str, doc: dict[str, Any], override_keys: list[str]) -> Case:
    if draw(st.integers(0, 3)) == 0:  # a valid file now and then: readers must still read
        return Case(label, {"config.yaml": _yaml_bytes(draw, doc, corrupt=False)},
                    "config.yaml", {"overrides": []})  # fmt: skip
    doc = mutate(draw, doc)
    extra = draw(st.integers(0, 9))
    files: dict[str, bytes] = {}
    if extra == 0 and isinstance(doc, dict):
        doc["base"] = draw(st.sampled_from(["config.yaml", "other.yaml", "missing.yaml", 5, [],
                                            "/", "../config.yaml"]))  # fmt: skip
        files["other.yaml"] = b"base: config.yaml\n"  # a cycle through another file
    data = _yaml_bytes(draw, doc)
    if extra == 1:
        data = draw(st.sampled_from([b"!!python/object/apply:os.system ['true']\n",
                                     b"a: &x [*x]\n", b"- [" * 2000, b"{1: 2, [3]: 4}\n",
                                     b"\xff\xfe\x00", b"a: 1\na: 2\n", b"? [a]\n: 1\n"]))  # fmt: skip
    files["config.yaml"] = data
    overrides = []
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from([*override_keys, "", "a..b", "=", "render"]))
        value = draw(st.sampled_from(["1", "-1", "x", "[1, 2]", "{a: 1}", ".nan", "", "null",
                                      "1e999", "[", "true"]))  # fmt: skip
        overrides.append(f"{key}={value}" if draw(st.integers(0, 5)) else key)
    return Case(label, files, "config.yaml", {"overrides": overrides})


@st.composite
def augment_config_cases(draw) -> Case:
    doc = {"root": "world/PHOENIX-2014-T", "keypoints": "world/keypoints", "out": "out",
           "split": "train", "appearances": 1, "seed": 0, "frames_subdir": None,
           "max_videos": None,
           "render": {"model": None, "steps": 4, "guidance": [2.0, 2.0], "scheduler": None,
                      "independent_noise": False, "dtype": "fp32"},
           "cluster": {"address": None, "workers": 2, "gpus_per_worker": 0, "batch_size": 4,
                       "device": "cpu", "worker_resources": {"gpu_node": 1}}}  # fmt: skip
    keys = ["render.steps", "cluster.workers", "render.guidance", "split", "seed",
            "cluster.worker_resources", "render.dtype", "render.scheduler"]  # fmt: skip
    return _config_case(draw, "augment config", doc, keys)


@st.composite
def train_config_cases(draw) -> Case:
    doc = {"stage": "fpdm", "model": "tiny", "seed": 0, "output_dir": "runs/x",
           "data": {"prepared": "p", "resolution": [32, 32], "max_eval_pairs": 8},
           "optim": {"lr": 1e-3, "weight_decay": 1e-4, "warmup_epochs": 0, "decay_epochs": 50,
                     "betas": [0.9, 0.999]},
           "train": {"batch_size": 4, "epochs": 1, "max_steps": 2, "log_every": 1,
                     "tensorboard": False, "ema": {"enabled": True, "decay": 0.99}},
           "fpdm": {"offset_noise": 0.1, "drop_pose": 0.2}}  # fmt: skip
    keys = ["train.batch_size", "optim.lr", "data.resolution", "model.unet.sample_size",
            "train.ema.decay", "stage", "seed"]  # fmt: skip
    return _config_case(draw, "train config", doc, keys)


@st.composite
def model_config_cases(draw) -> Case:
    import yaml

    from signgen.models.config import CONFIG_DIR

    doc = yaml.safe_load((CONFIG_DIR / "tiny.yaml").read_text())
    keys = ["resolution", "unet.sample_size", "guidance", "scheduler"]
    return _config_case(draw, "model config", doc, keys)


# ---- the oracle --------------------------------------------------------------------------------------
class Hang(Exception):
    """A reader call ran past CALL_TIMEOUT_S."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def alarm(signum, frame):
        raise Hang(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check(call: Callable[[], Any], validate: Callable[[Any], None] | None = None) -> str:
    """Run ``call`` under the rule of the module doc; returns "ok" or "input-error".

    Any other exception propagates (Hypothesis then shrinks the input that raised it).
    """
    try:
        with time_limit(CALL_TIMEOUT_S):
            result = call()
    except InputError as exc:
        message = str(exc)
        assert message.strip(), f"{type(exc).__name__} with an empty message"
        assert "\n" not in message, f"a multi-line error message: {message!r}"
        return "input-error"
    if validate is not None:
        validate(result)
    return "ok"


def valid_sequence(seq: Any) -> None:
    """What a keypoint reader's result must be: a finite (T, 133, 3) float32 sequence with
    a positive frame size and fps."""
    from signgen.keypoints.sequence import KeypointSequence

    assert isinstance(seq, KeypointSequence), type(seq)
    assert seq.points.dtype == np.float32 and seq.points.ndim == 3, seq.points.shape
    assert seq.points.shape[0] >= 1 and seq.points.shape[1:] == (133, 3), seq.points.shape
    assert np.isfinite(seq.points).all()
    assert seq.width > 0 and seq.height > 0 and math.isfinite(seq.fps) and seq.fps > 0


def read_keypoints(case: Case, folder: Path) -> Callable[[], Any]:
    from signgen.keypoints import load_keypoints

    path = case.write(folder)
    return lambda: load_keypoints(path, **case.kwargs)


def read_manifest_case(case: Case, folder: Path) -> Callable[[], Any]:
    from pipelines.render_many import read_manifest

    path = case.write(folder)
    return lambda: read_manifest(path)


def read_augment_config(case: Case, folder: Path) -> Callable[[], Any]:
    from pipelines.augment import load_augment_config

    path = case.write(folder)

    def call():
        cfg = load_augment_config(path, case.kwargs["overrides"])
        cfg.cluster.validate()  # what run_job checks before it starts Ray (the render
        # settings are checked when made)
        return cfg

    return call


def read_train_config(case: Case, folder: Path) -> Callable[[], Any]:
    from signgen.train.config import load_train_config

    path = case.write(folder)
    return lambda: load_train_config(path, case.kwargs["overrides"])


def read_model_config(case: Case, folder: Path) -> Callable[[], Any]:
    from signgen.models.config import load_model_config

    path = case.write(folder)
    return lambda: load_model_config(path, case.kwargs["overrides"])


def warm_up() -> None:
    """Import what the readers import (diffusers, torch: many seconds on a loaded machine)
    before any call runs under the alarm of :func:`check`."""
    import pipelines.augment
    import pipelines.render_many  # noqa: F401
    import signgen.keypoints
    import signgen.models.config
    import signgen.sampling.pipeline
    import signgen.train.config  # noqa: F401


# reader name -> (strategy, how to read a case, how to check a result)
READERS: dict[str, tuple[Callable[[], st.SearchStrategy[Case]], Callable, Callable | None]] = {
    **{name: (s, read_keypoints, valid_sequence) for name, s in KEYPOINT_STRATEGIES.items()},
    "manifest": (manifest_cases, read_manifest_case, None),
    "augment config": (augment_config_cases, read_augment_config, None),
    "train config": (train_config_cases, read_train_config, None),
    "model config": (model_config_cases, read_model_config, None),
}
