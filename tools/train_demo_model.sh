#!/usr/bin/env bash
# Retrain the bundled demo model (signgen/assets/demo_model) on the synthetic signer world,
# with signgen's own commands only, on CPU. Called by `make demo-model`.
#
#   1. signgen prepare synthetic   10 signers (6 train, 2 dev, 2 test: unseen in training)
#   2. signgen train vae           tiny AutoencoderKL (SD's VAE cannot be downloaded)
#   3. signgen train ipf           stage 1, source-enhanced InfoNCE (B6)
#   4. signgen train fpdm          stage 2 with the frozen VAE + IPF           -> demo model
#   5. signgen train fpdm          the same budget without IPF (ablation B3)   -> benchmark
#   6. examples/                   first frame + keypoints of a held-out test clip
#   7. benchmarks/synthetic_quality.py (SSIM / Hand SSIM vs baselines, B3 vs B6)
#
# Environment: WORK (default runs/demo), SKIP_ABLATION=1 to skip step 5 and the B3 figures,
# SKIP_BENCH=1 to skip step 7, STEPS_SCALE (e.g. 0.1) to scale every stage's steps.
set -euo pipefail
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
"$SG" prepare synthetic -o "$WORLD" --signers 10 --videos 60 --frames 32 --size 210x260 \
  --seed 0 --pairs-per-video 100 -q
fi

COMMON=(data.prepared="$WORLD/prepared")
log "2/7 VAE"
"$SG" train vae --config $CFG/demo_vae.yaml "${COMMON[@]}" output_dir="$WORK/vae" \
  train.max_steps="$(steps 300)" -q
log "3/7 IPF (stage 1, source-enhanced)"
"$SG" train ipf --config $CFG/demo_ipf.yaml "${COMMON[@]}" output_dir="$WORK/ipf" \
  train.max_steps="$(steps 80)" -q
# B6 and B3 run side by side (one thread each): on 2 cores that halves the wall time.
log "4/7 FPDM (stage 2, B6: with the source-enhanced IPF)"
"$SG" train fpdm --config $CFG/demo_fpdm.yaml "${COMMON[@]}" output_dir="$WORK/fpdm_b6" \
  fpdm.vae="$WORK/vae/export/vae" fpdm.ipf="$WORK/ipf/export/ipf" \
  train.max_steps="$(steps 300)" -q &
B6_PID=$!
if [ "${SKIP_ABLATION:-0}" != "1" ]; then
  log "5/7 FPDM without IPF (ablation B3, same budget)"
  "$SG" train fpdm --config $CFG/demo_fpdm.yaml "${COMMON[@]}" output_dir="$WORK/fpdm_b3" \
    fpdm.vae="$WORK/vae/export/vae" model.ipf.enabled=false \
    train.max_steps="$(steps 300)" -q &
  wait $!
fi
wait $B6_PID

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
  B3=()
  [ "${SKIP_ABLATION:-0}" != "1" ] && B3=(--b3 "$WORK/fpdm_b3/export")
  "$PY" benchmarks/synthetic_quality.py --world "$WORLD" --model signgen/assets/demo_model \
    "${B3[@]}" --runs "$WORK"
fi
log "done"
