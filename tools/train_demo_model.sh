#!/usr/bin/env bash
# Retrain the bundled demo model (signgen/assets/demo_model) on the synthetic signer world,
# with signgen's own commands only, on CPU. Called by `make demo-model`.
#
#   1. signgen prepare synthetic   100 signers (60 train, 20 dev, 20 test: unseen in training),
#                                  frames, keypoints and per-frame part labels
#   2. (no VAE to train: the demo model uses the fixed patch autoencoder, demo_model.yaml)
#   3. signgen train ipf           stage 1, source-enhanced InfoNCE (B6)
#   4. signgen train fpdm          stage 2 with the frozen IPF                  -> demo model
#   5. signgen train fpdm          the same budget without IPF (ablation B3)   -> benchmark
#      signgen train fpdm          the same budget with MCLD focal conditioning -> benchmark
#                                  (B6, B3 and MCLD train side by side, one thread each)
#      signgen train motion        the motion module on the B6 model (frozen) -> demo model's
#                                  motion_module/ (`signgen render --temporal`)
#      signgen train refiner       the source refiner on the B6 model (frozen), beside the
#                                  motion module -> demo model's refiner/ (every render)
#      signgen train refiner-motion the refiner's temporal layers on the B6 model with both
#                                  (frozen) -> demo model's refiner_motion/ (`--temporal`)
#   6. examples/                   first frame, keypoints and ground truth of a held-out
#                                  test clip
#   7. benchmarks/synthetic_quality.py on every test clip (model, copy, pose zeroed, B3/MCLD
#                                  when trained)
#
# Resumable: run it again after an interruption and it goes on where it stopped. A stage
# that finished with the same recipe (its command line and config files) is kept; one that
# was interrupted continues from its last checkpoint (`signgen train --resume`, exact);
# one whose recipe changed starts again.
#
# Environment: WORK (default runs/demo); SKIP_ABLATION=1 to skip step 5 (B3 and MCLD);
# SKIP_BENCH=1 to skip step 7; STEPS_SCALE (e.g. 0.01) to scale every stage's steps and
# checkpoint interval (a quick check of the whole chain); BUNDLE=0 to leave signgen/assets
# and examples/ alone (step 6); FRESH=1 to start every stage again.
# Experiment recipes: FPDM_CONFIG (default demo_fpdm.yaml, the bundled model's) names the
# stage-2 preset under configs/train (B6 and B3), WORKERS (default 1) runs stage 2 as that
# many data-parallel processes (`signgen train fpdm --workers N`, Ray Train with gloo; the
# preset's batch size is per worker), e.g.
#   FPDM_CONFIG=demo256_fpdm.yaml WORKERS=2 BUNDLE=0 WORK=runs/demo256 make demo-model
set -euo pipefail
# Stop the stages that run in the background when this script stops early.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
# One thread per process: on a small shared machine torch's default thread pool spins and
# runs several times slower than a single thread (measured: 4.6 s vs 22 s per VAE step).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SG="${SIGNGEN:-$ROOT/.venv/bin/signgen}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
WORK="${WORK:-runs/demo}"
# Absolute: Ray workers run in their own working folder.
case "$WORK" in /*) ;; *) WORK="$ROOT/$WORK" ;; esac
SCALE="${STEPS_SCALE:-1}"
steps() { "$PY" -c "print(max(2, int($1 * $SCALE)))"; }
CFG=configs/train
WORLD="$WORK/world"
start=$(date +%s)
log() { echo "[demo-model $(( $(date +%s) - start ))s] $*" >&2; }
mkdir -p "$WORK"

# recipe KEY FILES... : a hash of a stage's command line and the config files it reads.
recipe() {
  local key="$1"; shift
  { echo "$key"; cat "$@"; } | sha256sum | cut -c1-16
}

# train STAGE OUT KEY [signgen train args...]: run `signgen train STAGE` into OUT unless it
# already finished with this KEY; resume it when it was interrupted with this KEY.
train() {
  local stage="$1" out="$2" key="$3"; shift 3
  local mode=--overwrite
  if [ "${FRESH:-0}" != "1" ] && [ "$(cat "$out/.recipe" 2>/dev/null)" = "$key" ]; then
    if [ -f "$out/summary.json" ]; then
      log "   $out: finished with this recipe, kept"
      return 0
    fi
    [ -d "$out/checkpoints" ] && mode=--resume
  fi
  mkdir -p "$out"
  echo "$key" > "$out/.recipe"
  log "   $out: ${mode#--}"
  "$SG" train "$stage" "$mode" "$@" output_dir="$out" -q
}

# ---- 1. world
WORLD_ARGS=(--signers 100 --videos 160 --frames 32 --size 210x260 --seed 0 --pairs-per-video 100)
WORLD_KEY=$(recipe "${WORLD_ARGS[*]}" signgen/data/synthetic.py)
log "1/7 synthetic world -> $WORLD"
if [ "${FRESH:-0}" != "1" ] && [ "$(cat "$WORLD/.recipe" 2>/dev/null)" = "$WORLD_KEY" ] \
   && [ -f "$WORLD/prepared/manifest.csv" ]; then
  log "   $WORLD: kept"
else
  rm -rf "$WORLD"
  "$SG" prepare synthetic -o "$WORLD" "${WORLD_ARGS[@]}" -q
  echo "$WORLD_KEY" > "$WORLD/.recipe"
fi
COMMON=(data.prepared="$WORLD/prepared")

# ---- 3. IPF
log "3/7 IPF (stage 1, source-enhanced)"
IPF_ARGS=(--config $CFG/demo_ipf.yaml "${COMMON[@]}" train.max_steps="$(steps 80)")
train ipf "$WORK/ipf" "$(recipe "$WORLD_KEY ${IPF_ARGS[*]}" $CFG/demo_ipf.yaml $CFG/demo_base.yaml \
  $CFG/demo_model.yaml)" "${IPF_ARGS[@]}"

# ---- 4./5. FPDM: B6, B3 and MCLD side by side (one thread each) with the same budget
WORKERS="${WORKERS:-1}"
FPDM_CONFIG="$CFG/${FPDM_CONFIG:-demo_fpdm.yaml}"
# preset_value PRESET KEY [STAGE]: train.KEY of a preset (after its base: chain).
preset_value() {
  "$PY" -c "from signgen.train.config import load_train_config as l; \
print(getattr(l('$1', stage='${3:-fpdm}').train, '$2'))"
}
FPDM=(train.max_steps="$(steps "$(preset_value "$FPDM_CONFIG" max_steps)")"
      train.checkpoint_every="$(steps "$(preset_value "$FPDM_CONFIG" checkpoint_every)")"
      fpdm.ipf="$WORK/ipf/export/ipf")
# The presets a stage-2 run reads (its base: chain and its model's), for the recipe keys.
FPDM_MODEL=$("$PY" -c "from signgen.train.config import load_train_config as l; \
print(l('$FPDM_CONFIG', stage='fpdm').model)")
FPDM_FILES=("$FPDM_CONFIG" $CFG/demo_fpdm.yaml $CFG/demo_base.yaml "$FPDM_MODEL"
            $CFG/demo_model.yaml)
IPF_KEY=$(cat "$WORK/ipf/.recipe")
B6_ARGS=(--workers "$WORKERS" --config "$FPDM_CONFIG" "${COMMON[@]}" "${FPDM[@]}")
log "4/7 FPDM B6 (stage 2, with the source-enhanced IPF; $FPDM_CONFIG), $WORKERS worker(s)"
train fpdm "$WORK/fpdm_b6" "$(recipe "$IPF_KEY ${B6_ARGS[*]}" "${FPDM_FILES[@]}")" \
  "${B6_ARGS[@]}" &
PIDS=($!)
if [ "${SKIP_ABLATION:-0}" != "1" ]; then
  log "5/7 FPDM without IPF (ablation B3) and with MCLD, same budget"
  B3_ARGS=("${B6_ARGS[@]}" model.ipf.enabled=false)
  MCLD_ARGS=(--workers "$WORKERS" --config $CFG/demo_mcld.yaml "${COMMON[@]}" "${FPDM[@]}")
  train fpdm "$WORK/fpdm_b3" "$(recipe "$IPF_KEY ${B3_ARGS[*]}" "${FPDM_FILES[@]}")" \
    "${B3_ARGS[@]}" &
  PIDS+=($!)
  train fpdm "$WORK/fpdm_mcld" "$(recipe "$IPF_KEY ${MCLD_ARGS[*]}" "${FPDM_FILES[@]}" \
    $CFG/demo_mcld.yaml $CFG/demo_mcld_model.yaml)" "${MCLD_ARGS[@]}" &
  PIDS+=($!)
fi
for pid in "${PIDS[@]}"; do wait "$pid"; done

# ---- 5b. the motion module (temporal FPDM) and 5c. the source refiner on the B6 model, which
#      stays frozen; side by side, one thread each
log "5/7 motion module and source refiner on the B6 model"
MOTION_CONFIG=$CFG/demo_motion.yaml
# budget PRESET STAGE: the preset's step budget and checkpoint interval, scaled (STEPS_SCALE).
budget() {
  echo "train.max_steps=$(steps "$(preset_value "$1" max_steps "$2")")" \
    "train.checkpoint_every=$(steps "$(preset_value "$1" checkpoint_every "$2")")"
}
# shellcheck disable=SC2046 # budget's two words are meant to split
MOTION_ARGS=(--config "$MOTION_CONFIG" "${COMMON[@]}" motion.base_model="$WORK/fpdm_b6/export"
             $(budget "$MOTION_CONFIG" motion))
train motion "$WORK/motion" "$(recipe "$(cat "$WORK/fpdm_b6/.recipe") ${MOTION_ARGS[*]}" \
  "$MOTION_CONFIG" $CFG/demo_base.yaml)" "${MOTION_ARGS[@]}" &
PIDS=($!)
REFINER_CONFIG=$CFG/demo_refiner.yaml
# shellcheck disable=SC2046
REFINER_ARGS=(--config "$REFINER_CONFIG" "${COMMON[@]}" refiner.base_model="$WORK/fpdm_b6/export"
              $(budget "$REFINER_CONFIG" refiner))
train refiner "$WORK/refiner" "$(recipe "$(cat "$WORK/fpdm_b6/.recipe") ${REFINER_ARGS[*]}" \
  "$REFINER_CONFIG" $CFG/demo_base.yaml)" "${REFINER_ARGS[@]}" &
PIDS+=($!)
for pid in "${PIDS[@]}"; do wait "$pid"; done
# ---- 5d. the refiner's temporal layers on the B6 model with its refiner and motion module
log "5/7 the refiner's temporal layers"
# Copies keep their files' times: the cached renders (keyed by them) stay valid on a rerun.
rm -rf "$WORK/temporal_base"
cp -a "$WORK/refiner/export" "$WORK/temporal_base"
cp -a "$WORK/motion/export/motion_module" "$WORK/temporal_base/"
RM_CONFIG=$CFG/demo_refiner_motion.yaml
# shellcheck disable=SC2046
RM_ARGS=(--config "$RM_CONFIG" "${COMMON[@]}" refiner_motion.base_model="$WORK/temporal_base"
         $(budget "$RM_CONFIG" refiner-motion))
RM_KEY=$(recipe "$(cat "$WORK/refiner/.recipe" "$WORK/motion/.recipe") ${RM_ARGS[*]}" \
  "$RM_CONFIG" $CFG/demo_base.yaml)
# Alone on the machine: two threads.
OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 train refiner-motion "$WORK/refiner_motion" "$RM_KEY" \
  "${RM_ARGS[@]}"

# ---- 6. bundle
if [ "${BUNDLE:-1}" = "1" ]; then
log "6/7 export to signgen/assets/demo_model and examples/"
rm -rf signgen/assets/demo_model.new
# The last export: the B6 folder plus refiner/ (and its render defaults), motion_module/
# and refiner_motion/.
cp -r "$WORK/refiner_motion/export" signgen/assets/demo_model.new
rm -rf signgen/assets/demo_model
mv signgen/assets/demo_model.new signgen/assets/demo_model
"$PY" - "$WORLD" <<'PYEOF'
import csv, shutil, sys
from pathlib import Path

from signgen.data.pairs import frame_path, read_manifest
from signgen.video import read_frames, write_video

world = Path(sys.argv[1])
entry = next(e for e in read_manifest(world / "prepared").values() if e.split == "test")
ex = Path("examples")
ex.mkdir(exist_ok=True)
shutil.copy(frame_path(entry, 0), ex / "first_frame.png")
shutil.copy(entry.keypoints_file, ex / "sequence.json")
# Its true frames (the world renders them from the keypoints), for `make demo` to show
# beside the render; crf 18: visually lossless.
write_video(ex / "ground_truth.mp4", read_frames(entry.frames_dir), entry.fps, crf=18)
print(f"examples/ <- held-out test clip {entry.video} ({entry.signer}, not seen in training)")
PYEOF
du -sh signgen/assets/demo_model >&2
fi

# ---- 7. benchmark
if [ "${SKIP_BENCH:-0}" != "1" ]; then
  log "7/7 benchmark (every test clip)"
  ABL=()
  [ -f "$WORK/fpdm_b3/summary.json" ] && ABL+=(--b3 "$WORK/fpdm_b3/export")
  [ -f "$WORK/fpdm_mcld/summary.json" ] && ABL+=(--mcld "$WORK/fpdm_mcld/export")
  "$PY" benchmarks/synthetic_quality.py --world "$WORLD" --model "$WORK/refiner/export" \
    "${ABL[@]}" --runs "$WORK"
fi
log "done"
