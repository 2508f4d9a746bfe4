#!/usr/bin/env bash
# Build the shared heavy environment at "$1" from the pinned requirements.
# Hashed into the environment key by tools/build_env.sh: any change here rebuilds.
set -euo pipefail
ENV="$1"
WHEEL_CACHE="$2"
PYTHON="${PYTHON:-python3}"
log() { printf '[env] %s\n' "$*" >&2; }

rm -rf "$ENV"
"$PYTHON" -m venv "$ENV"
PIP=("$ENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q -r requirements/bootstrap.txt
# Everything with a wheel on PyPI, pinned exactly (torch/torchvision are the standard
# CUDA-enabled wheels: they run on CPU and are what GPU users get).
"${PIP[@]}" install -q -r requirements/lock.txt
# The OpenMMLab stack needs special handling: see requirements/mm.txt.
bash tools/build_mmcv.sh "$ENV/bin/python" "$WHEEL_CACHE"
"$ENV/bin/python" -m pip check >&2 \
  || log "pip check reported the conflicts above (expected: mmpose's chumpy, never installed)"
touch "$ENV/.complete"
