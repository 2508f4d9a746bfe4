"""Fuzz every input reader for longer than the test suite does; count what each input ended in.

Runs the Hypothesis strategies of tests/fuzz_inputs.py (a valid file of each format,
corrupted the way real files go wrong: wrong types, shapes, NaN/inf, huge numbers, odd
unicode, missing and unknown keys, truncated and bit-flipped bytes) with ``--examples``
inputs per reader, through the same oracle as tests/test_fuzz_readers.py. Per reader it
records how many inputs were read into a valid result, how many were refused with one
InputError line, and how many FAILED (any other exception, a hang past
fuzz_inputs.CALL_TIMEOUT_S, an invalid result): that last column must be 0. Each failure
is listed once per (reader, exception type, place) with the first input that raised it.

Writes benchmarks/results/fuzz_readers.md.

    nice -n 10 .venv/bin/python benchmarks/fuzz_readers.py --examples 400
    nice -n 10 .venv/bin/python benchmarks/fuzz_readers.py --readers mska,pose --examples 2000
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

from _common import machine, write_result  # benchmarks/ is on sys.path when a script runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fuzz_inputs
from hypothesis import HealthCheck, Phase, given, seed, settings

RESULTS = Path(__file__).resolve().parent / "results" / "fuzz_readers.md"


def fuzz_reader(name: str, examples: int, base_seed: int) -> dict:
    """Run ``examples`` inputs of reader ``name``; counts, seconds and distinct failures."""
    strategy, read, validate = fuzz_inputs.READERS[name]
    counts = {"ok": 0, "input-error": 0, "failed": 0}
    failures: dict[tuple[str, str], str] = {}

    @seed(base_seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=(Phase.generate,),
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy())
    def run(case):
        with tempfile.TemporaryDirectory(prefix="sgfuzz") as tmp:
            try:
                counts[fuzz_inputs.check(read(case, Path(tmp)), validate)] += 1
            except Exception as exc:
                counts["failed"] += 1
                where = traceback.extract_tb(exc.__traceback__)[-1]
                key = (type(exc).__name__, f"{Path(where.filename).name}:{where.lineno}")
                failures.setdefault(key, f"{str(exc)[:160]!r} on {case.files!r:.300}")

    t0 = time.perf_counter()
    run()
    return {"counts": counts, "seconds": time.perf_counter() - t0, "failures": failures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--examples", type=int, default=400, help="inputs per reader (default 400)")
    ap.add_argument("--readers", default=",".join(sorted(fuzz_inputs.READERS)),
                    help="comma-separated reader names (default: all)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="markdown results file")
    args = ap.parse_args()
    names = [n.strip() for n in args.readers.split(",") if n.strip()]
    unknown = [n for n in names if n not in fuzz_inputs.READERS]
    if unknown:
        ap.error(f"unknown reader(s) {unknown}; choose from {sorted(fuzz_inputs.READERS)}")
    fuzz_inputs.warm_up()
    results = {}
    for name in names:
        results[name] = r = fuzz_reader(name, args.examples, args.seed)
        c = r["counts"]
        print(f"{name:15s} ok {c['ok']:5d}  input-error {c['input-error']:5d}  "
              f"failed {c['failed']:3d}  {r['seconds']:.0f} s", flush=True)  # fmt: skip

    command = "nice -n 10 .venv/bin/python benchmarks/fuzz_readers.py " + shlex.join(sys.argv[1:])
    lines = ["# Fuzzed inputs per reader", "",
             f"`{command.strip()}` ({dt.date.today()}), Hypothesis seed {args.seed}.", "",
             "Each input is a valid file of the reader's format corrupted as real files go "
             "wrong (tests/fuzz_inputs.py). *ok*: read into a valid result; *input-error*: "
             "refused with one InputError line; *failed*: anything else (a traceback, a hang "
             f"past {fuzz_inputs.CALL_TIMEOUT_S} s, an invalid result).", "",
             "| reader | inputs | ok | input-error | failed | seconds |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, r in results.items():
        c = r["counts"]
        lines.append(f"| {name} | {sum(c.values())} | {c['ok']} | {c['input-error']} | "
                     f"{c['failed']} | {r['seconds']:.0f} |")  # fmt: skip
    total = {k: sum(r["counts"][k] for r in results.values()) for k in ("ok", "input-error",
                                                                        "failed")}  # fmt: skip
    lines.append(f"| **all** | {sum(total.values())} | {total['ok']} | {total['input-error']} | "
                 f"{total['failed']} | {sum(r['seconds'] for r in results.values()):.0f} |")  # fmt: skip
    failures = [(n, k, v) for n, r in results.items() for k, v in r["failures"].items()]
    lines += ["", "## Failures", ""]
    lines += [f"- {n}: {k[0]} at {k[1]}: {v}" for n, k, v in failures] or ["None."]
    lines += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in machine().items()]
    write_result(args.out, lines)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
