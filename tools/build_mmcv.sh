#!/usr/bin/env bash
# Install the OpenMMLab stack (mmcv with compiled ops, xtcocotools, mmdet, mmpose) into the
# environment of python "$1", caching the wheels that have to be built from source in "$2".
#
#   bash tools/build_mmcv.sh <python> <wheel cache dir>
#
# Pins come from requirements/mm.txt (read that file for why each package is special).
# mmcv has no wheel for the torch pinned in requirements/lock.txt, so it is built from its
# source release (~10 min on 2 cores). The built wheel is cached under
#   <wheel cache>/mmcv-<mmcv version>-<key>/
# where <key> hashes the mmcv version, torch version, Python version, the source patch and the
# build settings below; a later environment rebuild with the same key just installs it.
# xtcocotools is cached the same way (keyed by its version, numpy and Python).
#
# The mmcv ops are built for CPU only (CUDA_VISIBLE_DEVICES="" and FORCE_CUDA=0 make mmcv's
# setup.py choose its CppExtension branch even on a machine with nvcc or a GPU), so the build is
# the same everywhere. signgen runs the pose models on CUDA without them: the HRNet models are
# plain torch. Set SIGNGEN_MMCV_CUDA=1 to build the CUDA ops too (needs nvcc matching torch's
# CUDA; the cache key records the choice).
#
# Idempotent: packages already installed at the pinned version are left alone.
# Exit status is non-zero on any failure.
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: bash tools/build_mmcv.sh <python> <wheel cache dir>" >&2
  exit 2
fi
PY="$1"
CACHE="$2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$ROOT/requirements/mm.txt"
PIP=("$PY" -m pip --disable-pip-version-check)
# Console scripts of the target environment (ninja) must be found by torch's extension builder.
export PATH="$(dirname "$PY"):$PATH"

log() { printf '[mmcv] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pin() {  # pin <name> -> version from requirements/mm.txt
  local v
  v="$(sed -n "s/^$1==\([^[:space:]#]*\).*/\1/p" "$REQ")"
  [ -n "$v" ] || die "no pin for $1 in $REQ"
  printf '%s' "$v"
}

installed() {  # installed <name> -> installed version or empty
  "$PY" - "$1" <<'PYEOF' 2>/dev/null || true
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    print(version(sys.argv[1]))
except PackageNotFoundError:
    pass
PYEOF
}

NINJA_V="$(pin ninja)"
MMCV_V="$(pin mmcv)"
XTC_V="$(pin xtcocotools)"
MMDET_V="$(pin mmdet)"
MMPOSE_V="$(pin mmpose)"

TORCH_V="$("$PY" -c 'import torch; print(torch.__version__)')" || die "torch is not installed in $PY"
NUMPY_V="$("$PY" -c 'import numpy; print(numpy.__version__)')" || die "numpy is not installed"
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
MMCV_CUDA="${SIGNGEN_MMCV_CUDA:-0}"
# The patch applied to mmcv's setup.py: torch >= 2.10 headers need C++20.
PATCH_SED='s/-std=c++1[47]/-std=c++20/g'
MMCV_KEY="$(printf '%s\n' "mmcv=$MMCV_V" "torch=$TORCH_V" "python=$PYVER" "patch=$PATCH_SED" \
  "ops=1" "cuda=$MMCV_CUDA" "$(uname -m)" | sha256sum | cut -c1-16)"
XTC_KEY="$(printf '%s\n' "xtcocotools=$XTC_V" "numpy=$NUMPY_V" "python=$PYVER" "$(uname -m)" \
  | sha256sum | cut -c1-16)"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
MMCV_DIR="$CACHE/mmcv-$MMCV_V-$MMCV_KEY"
XTC_DIR="$CACHE/xtcocotools-$XTC_V-$XTC_KEY"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

precompile_header() {  # precompile_header <mmcv source dir>
  # Every mmcv op source starts with #include "pytorch_cpp_helper.hpp", which pulls in the
  # torch headers; parsing them is most of each file's compile time. GCC uses a
  # "<header>.gch" found next to the header when the flags match and silently ignores it
  # otherwise, so this is a pure speed-up (about 2x here); the flags mirror what
  # torch.utils.cpp_extension passes for a CppExtension.
  local src="$1" flags
  flags="$("$PY" - "$src" <<'PYEOF'
import shlex, sys, sysconfig
from torch.utils.cpp_extension import include_paths
src = sys.argv[1]
cflags = (sysconfig.get_config_var("CFLAGS") or "").split()
cflags += (sysconfig.get_config_var("CCSHARED") or "").split()
incs = [f"{src}/mmcv/ops/csrc/common", *include_paths(), sys.exec_prefix + "/include",
        sysconfig.get_paths()["include"]]
defs = ["-std=c++20", "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_ext"]
print(shlex.join(cflags + [f"-I{i}" for i in incs] + defs))
PYEOF
)" || return 1
  log "precompiling the torch headers (one compile, saves most of the others)"
  # shellcheck disable=SC2086
  eval "${CXX:-c++}" -x c++-header $flags \
    "$src/mmcv/ops/csrc/common/pytorch_cpp_helper.hpp" \
    -o "$src/mmcv/ops/csrc/common/pytorch_cpp_helper.hpp.gch"
}

# --- build tools --------------------------------------------------------------------------
# mmcv's setup.py imports pkg_resources, which setuptools 81 removed.
"$PY" -c 'import pkg_resources' 2>/dev/null || "${PIP[@]}" install -q 'setuptools<81'
"$PY" -c 'import Cython' 2>/dev/null || die "Cython is missing (requirements/bootstrap.txt)"
if [ "$(installed ninja)" != "$NINJA_V" ]; then
  log "installing ninja $NINJA_V"
  "${PIP[@]}" install -q --no-deps "ninja==$NINJA_V"
fi

# --- mmcv -----------------------------------------------------------------------------------
if [ "$(installed mmcv)" = "$MMCV_V" ] && "$PY" -c 'import mmcv.ops' 2>/dev/null; then
  log "mmcv $MMCV_V already installed"
else
  if ! ls "$MMCV_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $MMCV_V from source for torch $TORCH_V / Python $PYVER (cache key $MMCV_KEY)"
    log "this takes ~10 minutes on 2 cores; the wheel is cached in $MMCV_DIR"
    "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
      -d "$TMP/sdist" "mmcv==$MMCV_V"
    tar -xzf "$TMP/sdist/mmcv-$MMCV_V.tar.gz" -C "$TMP"
    SRC="$TMP/mmcv-$MMCV_V"
    sed -i "$PATCH_SED" "$SRC/setup.py"
    grep -q -- '-std=c++20' "$SRC/setup.py" || die "patching mmcv's setup.py failed"
    if [ "$MMCV_CUDA" = "1" ]; then
      BUILD_ENV=(FORCE_CUDA=1)
    else
      BUILD_ENV=(FORCE_CUDA=0 CUDA_VISIBLE_DEVICES="")
    fi
    precompile_header "$SRC" || log "precompiled header skipped (the build is just slower)"
    LOG="$CACHE/mmcv-$MMCV_V-$MMCV_KEY.log"
    log "compiling (ninja steps below; full log: $LOG)"
    env "${BUILD_ENV[@]}" MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "${PIP[@]}" wheel -v --no-deps --no-build-isolation -w "$TMP/wheel" "$SRC" 2>&1 \
      | tee "$LOG" \
      | sed -nuE -e 's#^[[:space:]]*(\[[0-9]+/[0-9]+\]).* -c (-c )?[^ ]*/(csrc/[^ ]*) .*#[mmcv] \1 \3#p' \
                 -e '/error:|Error|Created wheel/p' >&2 || true
    ls "$TMP"/wheel/mmcv-*.whl >/dev/null 2>&1 || die "building mmcv failed (full log: $LOG)"
    "$PY" - "$TMP"/wheel/mmcv-*.whl <<'PYEOF' || die "the mmcv wheel lacks its ops or holds build files"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert any(n.startswith("mmcv/_ext") and n.endswith(".so") for n in names), "no mmcv/_ext*.so"
assert not [n for n in names if n.endswith(".gch")], "precompiled header packaged"
PYEOF
    mkdir -p "$MMCV_DIR.tmp"
    cp "$TMP"/wheel/mmcv-*.whl "$MMCV_DIR.tmp/"
    rm -rf "$MMCV_DIR"
    mv "$MMCV_DIR.tmp" "$MMCV_DIR"
    log "cached $(basename "$(ls "$MMCV_DIR"/mmcv-*.whl)")"
  else
    log "using cached mmcv wheel from $MMCV_DIR"
  fi
  "${PIP[@]}" install -q --no-deps --force-reinstall "$MMCV_DIR"/mmcv-*.whl
  "$PY" -c 'import mmcv.ops' || die "mmcv installed but its compiled ops do not import"
fi

# --- xtcocotools ----------------------------------------------------------------------------
if [ "$(installed xtcocotools)" = "$XTC_V" ] && "$PY" -c 'import xtcocotools.coco' 2>/dev/null; then
  log "xtcocotools $XTC_V already installed"
else
  if ! ls "$XTC_DIR"/xtcocotools-*.whl >/dev/null 2>&1; then
    log "building xtcocotools $XTC_V against numpy $NUMPY_V"
    "${PIP[@]}" wheel -q --no-deps --no-binary xtcocotools --no-build-isolation \
      -w "$TMP/xtc" "xtcocotools==$XTC_V"
    mkdir -p "$XTC_DIR.tmp"
    cp "$TMP"/xtc/xtcocotools-*.whl "$XTC_DIR.tmp/"
    rm -rf "$XTC_DIR"
    mv "$XTC_DIR.tmp" "$XTC_DIR"
  else
    log "using cached xtcocotools wheel from $XTC_DIR"
  fi
  "${PIP[@]}" install -q --no-deps --force-reinstall "$XTC_DIR"/xtcocotools-*.whl
fi

# --- mmdet, mmpose (pure Python wheels, no dependencies: see requirements/mm.txt) -----------
for spec in "mmdet==$MMDET_V" "mmpose==$MMPOSE_V"; do
  name="${spec%%==*}"
  if [ "$(installed "$name")" = "${spec##*==}" ]; then
    log "$name ${spec##*==} already installed"
  else
    log "installing $spec"
    "${PIP[@]}" install -q --no-deps "$spec"
  fi
done

"$PY" -c 'import mmcv.ops, mmdet.apis, mmpose.apis' || die "the OpenMMLab stack does not import"
log "OpenMMLab stack ready: mmcv $MMCV_V (ops), xtcocotools $XTC_V, mmdet $MMDET_V, mmpose $MMPOSE_V"
