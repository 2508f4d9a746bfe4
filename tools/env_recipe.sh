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
# Packages installed without their declared requirements: see requirements/nodeps.txt.
"${PIP[@]}" install -q --no-deps -r requirements/nodeps.txt
# The OpenMMLab stack needs special handling: see requirements/mm.txt.
bash tools/build_mmcv.sh "$ENV/bin/python" "$WHEEL_CACHE"
# pip check lines expected here: the requirements skipped on purpose, mmpose's chumpy
# (requirements/mm.txt) and mediapipe's jax, jaxlib, opencv-contrib-python and sounddevice
# (requirements/nodeps.txt); and decord 0.6.0, whose only wheel is tagged cp36-cp36m (pip check
# rejects the tag; it installs, imports and decodes on 3.11). Anything else is shown.
EXPECTED='^(mmpose [^ ]+ requires chumpy,|mediapipe [^ ]+ requires (jax|jaxlib|opencv-contrib-python|sounddevice),|decord [^ ]+ is not supported on this platform$)'
CHECK="$("$ENV/bin/python" -m pip check 2>&1 || true)"
UNEXPECTED="$(printf '%s\n' "$CHECK" | grep -Ev "$EXPECTED|^No broken requirements" || true)"
if [ -n "$UNEXPECTED" ]; then
  printf '%s\n' "$UNEXPECTED" >&2
  log "pip check reported the unexpected conflicts above"
fi
touch "$ENV/.complete"
