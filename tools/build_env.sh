#!/usr/bin/env bash
# Build (or reuse) signgen's Python environment and link it at ./.venv.
#
# The heavy environment (torch, diffusers, ray, the compiled mmcv stack, ...) lives in
#   ${SIGNGEN_ENV_ROOT:-$HOME/.cache/signgen/envs}/<key>
# where <key> hashes the pinned requirements, the build recipe and the Python version, so
# it is rebuilt only when one of them changes, and built from nothing on a fresh machine.
# ./.venv is a thin per-checkout venv layered on top of it (a .pth file adds the shared
# site-packages) with signgen installed in editable mode, so several checkouts share one
# heavy environment and each still imports its own code.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
export PYTHON
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
ENV_ROOT="${SIGNGEN_ENV_ROOT:-$HOME/.cache/signgen/envs}"
WHEEL_CACHE="${SIGNGEN_WHEEL_CACHE:-$HOME/.cache/signgen/wheels}"

KEY="$(cat requirements/*.txt tools/env_recipe.sh tools/build_mmcv.sh <("$PYTHON" -VV) \
        | sha256sum | cut -c1-16)"
ENV="$ENV_ROOT/$KEY"
SITE="$ENV/lib/python$PYVER/site-packages"
log() { printf '[env] %s\n' "$*" >&2; }

if [ ! -f "$ENV/.complete" ]; then
  mkdir -p "$ENV_ROOT"
  exec 9>"$ENV_ROOT/.lock-$KEY"  # one builder per key (parallel make, shared machines)
  flock 9
  if [ ! -f "$ENV/.complete" ]; then
    log "building environment $ENV (first time for these requirements; ~5 min, +10 min to compile mmcv once)"
    start=$SECONDS
    bash tools/env_recipe.sh "$ENV" "$WHEEL_CACHE"
    log "environment ready in $((SECONDS - start)) s"
  fi
fi

# Thin per-checkout venv on top of the shared one.
if [ ! -f .venv/.signgen-env-key ] || [ "$(cat .venv/.signgen-env-key)" != "$KEY" ] \
   || [ ! -x .venv/bin/signgen ]; then
  log "linking .venv to $ENV"
  rm -rf .venv
  "$PYTHON" -m venv --without-pip .venv
  echo "import site; site.addsitedir('$SITE')" \
    > ".venv/lib/python$PYVER/site-packages/_signgen_env.pth"
  .venv/bin/python -m pip --disable-pip-version-check install -q --no-deps \
    --no-build-isolation -e . >&2
  # Developer tools that live in the shared environment.
  for tool in ruff; do ln -sf "$ENV/bin/$tool" ".venv/bin/$tool"; done
  echo "$KEY" > .venv/.signgen-env-key
fi

# The editable install writes the console script and the package map from pyproject.toml:
# redo it (seconds, no downloads) when pyproject.toml changed since, e.g. a new entry point.
PROJECT_KEY="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat .venv/.signgen-project-key 2>/dev/null)" != "$PROJECT_KEY" ]; then
  log "reinstalling signgen (editable) for the current pyproject.toml"
  .venv/bin/python -m pip --disable-pip-version-check install -q --no-deps \
    --no-build-isolation -e . >&2
  echo "$PROJECT_KEY" > .venv/.signgen-project-key
fi
