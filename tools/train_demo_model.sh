#!/usr/bin/env bash
# Retrain the bundled demo model (signgen/assets/demo_model) on the synthetic signer world,
# with signgen's own commands only, on CPU. Called by `make demo-model`.
#
#   1. signgen prepare synthetic   100 signers (60 train, 20 dev, 20 test: unseen in training)
#   2. (no VAE to train: the demo model uses the fixed patch autoencoder, demo_model.yaml)
#   3. signgen train ipf           stage 1, source-enhanced InfoNCE (B6)
#   4. signgen train fpdm          stage 2 with the frozen IPF                  -> demo model
#   5. signgen train fpdm          the same budget without IPF (ablation B3)   -> benchmark
#      signgen train fpdm          the same budget with MCLD focal conditioning -> benchmark
#   6. examples/                   first frame + keypoints of a held-out test clip
#   7. benchmarks/synthetic_quality.py (SSIM / Hand SSIM / Face SSIM vs baselines, B3, MCLD)
#
# Environment: WORK (default runs/demo), SKIP_ABLATION=1 to skip step 5 (B3 and MCLD),
# SKIP_BENCH=1 to skip step 7, STEPS_SCALE (e.g. 0.1) to scale every stage's steps,
# REUSE_WORLD=1 to keep an existing world.
set -euo pipefail
# Stop the stages that run in the background when this script stops early.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
# One thread per process: on a small shared machine, torch's default thread pool spins and
# runs several times slower than a single thread (measured: 4.6 s vs 22 s per VAE step).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SG="${SIGNGEN:-$ROOT/.venv/bin/signgen}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
WORK="${WORK:-runs/demo}"
SCALE="${STEPS_SCALE:-1}"
steps() { "$PY" -c "print(max(2, int($1 * $SCALE)))"; }
CFG=configs/train
WORLD="$WORK/world"
start=$(date +%s)
log() { echo "[demo-model $(( $(date +%s) - start ))s] $*" >&2; }

log "1/7 synthetic world -> $WORLD"
if [ "${REUSE_WORLD:-0}" = "1" ] && [ -f "$WORLD/prepared/manifest.csv" ]; then
  log "   reusing $WORLD"
else
rm -rf "$WORLD"
"$SG" prepare synthetic -o "$WORLD" --signers 100 --videos 160 --frames 32 --size 210x260 \
  --seed 0 --pairs-per-video 100 -q
fi

COMMON=(data.prepared="$WORLD/prepared")
log "3/7 IPF (stage 1, source-enhanced)"
"$SG" train ipf --overwrite --config $CFG/demo_ipf.yaml "${COMMON[@]}" output_dir="$WORK/ipf" \
  train.max_steps="$(steps 80)" -q
# B6, B3 and MCLD train side by side (one thread each) with the same budget.
FPDM=(train.max_steps="$(steps 2000)" -q)
log "4/7 FPDM (stage 2, B6: with the source-enhanced IPF)"
"$SG" train fpdm --overwrite --config $CFG/demo_fpdm.yaml "${COMMON[@]}" output_dir="$WORK/fpdm_b6" \
  fpdm.ipf="$WORK/ipf/export/ipf" "${FPDM[@]}" &
PIDS=($!)
if [ "${SKIP_ABLATION:-0}" != "1" ]; then
  log "5/7 FPDM without IPF (ablation B3) and with MCLD, same budget"
  "$SG" train fpdm --overwrite --config $CFG/demo_fpdm.yaml "${COMMON[@]}" output_dir="$WORK/fpdm_b3" \
    model.ipf.enabled=false "${FPDM[@]}" &
  PIDS+=($!)
  "$SG" train fpdm --overwrite --config $CFG/demo_mcld.yaml "${COMMON[@]}" output_dir="$WORK/fpdm_mcld" \
    fpdm.ipf="$WORK/ipf/export/ipf" "${FPDM[@]}" &
  PIDS+=($!)
fi
for pid in "${PIDS[@]}"; do wait "$pid"; done

log "6/7 export to signgen/assets/demo_model and examples/"
rm -rf signgen/assets/demo_model.new
cp -r "$WORK/fpdm_b6/export" signgen/assets/demo_model.new
rm -rf signgen/assets/demo_model
mv signgen/assets/demo_model.new signgen/assets/demo_model
"$PY" - "$WORLD" <<'PYEOF'
import csv, shutil, sys
from pathlib import Path
world = Path(sys.argv[1])
rows = [r for r in csv.DictReader(open(world / "prepared" / "manifest.csv")) if r["split"] == "test"]
r = rows[0]
prep = world / "prepared"
ex = Path("examples"); ex.mkdir(exist_ok=True)
shutil.copy((prep / r["frames_dir"]).resolve() / "images0001.png", ex / "first_frame.png")
shutil.copy((prep / r["keypoints_file"]).resolve(), ex / "sequence.json")
print(f"examples/ <- held-out test clip {r['video']} ({r['signer']}, not seen in training)")
PYEOF
du -sh signgen/assets/demo_model >&2

if [ "${SKIP_BENCH:-0}" != "1" ]; then
  log "7/7 benchmark"
  ABL=()
  [ "${SKIP_ABLATION:-0}" != "1" ] && ABL=(--b3 "$WORK/fpdm_b3/export" --mcld "$WORK/fpdm_mcld/export")
  "$PY" benchmarks/synthetic_quality.py --world "$WORLD" --model signgen/assets/demo_model \
    "${ABL[@]}" --runs "$WORK"
fi
log "done"
