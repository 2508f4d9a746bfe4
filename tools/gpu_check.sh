#!/usr/bin/env bash
# One-shot check of the full-size FPDM on one GPU, at most 8 minutes: the CUDA-marked tests,
# render throughput at 512x512 (batch 8/16/32, 20 steps, bf16, UNet MFU), a training step
# at the paper's batch with and without gradient checkpointing, `signgen render-many` with
# one GPU worker, and each speed option on and off. Writes gpu_check.json and gpu_check.md
# (default benchmarks/results/; see benchmarks/gpu_check.py --help).
#
#   tools/gpu_check.sh                                   # on a machine with a CUDA GPU
#   tools/gpu_check.sh --cpu-smoke --out out/smoke       # the same code, miniature, on CPU
#
# Environment: PYTHON (default .venv/bin/python, else python3 on PATH).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# The Python side stops itself inside its budget (default 470 s) and writes what it has;
# this outer limit only catches a hang it cannot interrupt.
exec timeout --kill-after=10 480 "$PY" "$ROOT/benchmarks/gpu_check.py" "$@"
