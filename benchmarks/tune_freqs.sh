#!/usr/bin/env bash
# Architecture and loss of the frequency-set model (issue 14), chosen on fold 0's validation
# slice only: 20,000 of fold 0's training molecules, the fold's 11,775 validation molecules,
# one core per run.
#   ROUND=1 (session 8): EPOCHS epochs each (default 25): the set layouts of gcnn.sets
#   (ascending, descending, hydrogen) with the MSE loss, the hydrogen layout with the L1 loss (the
#   sorted-set / optimal-transport error itself), and a wider head.
#   ROUND=2 (default; session 11): 40 epochs each: round 1's winner (hydrogen layout, head
#   512-256) against the same with a per-hydrogen head (--xh-head: each X-H stretch predicted on
#   its own hydrogen), two widths of it, and a second seed of the two main arms.
#   ROUND=3 (session 13): 40 epochs each: round 2's winner (per-hydrogen head 128-64) with the
#   skeleton predicted per atom as well (--skeleton-head: 3 values per heavy atom, 2 per H,
#   sorted), with and without the pooled-vector context, with the molecule-level head's
#   correction added (--skeleton-residual), a second seed, a wider head; each run's
#   validation report (qmlrp spectra --split val) follows it.
# Resumable: rerun the same script; a finished configuration is skipped, one cut by its
# --limit-minutes goes on from its checkpoint.
# Table: python benchmarks/tune_alpha.py runs/tune_freqs2 --csv docs/figures/tune_freqs2.csv (runs/tune_freqs3 ...)
set -u
export TQDM_DISABLE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ROUND=${ROUND:-2}
LIMIT=${LIMIT:-40}
COMMON="--target freqs_cm1 --split data/models/cv_zpve_ev/split.json --fold 0 --train-size 20000 --batch-size 128"
run() {  # name, flags
  name=$1; shift
  [ -f "$OUT/$name/metrics.json" ] && return
  qmlrp train $COMMON --limit-minutes "$LIMIT" --out "$OUT/$name" "$@" >> "$OUT/$name.log" 2>&1
}
if [ "$ROUND" = 1 ]; then
  OUT=${OUT:-runs/tune_freqs}
  EPOCHS=${EPOCHS:-25}
  mkdir -p "$OUT"
  run hydrogen --epochs "$EPOCHS" --set-layout hydrogen
  run ascending --epochs "$EPOCHS" --set-layout ascending
  run descending --epochs "$EPOCHS" --set-layout descending
  run hydrogen_l1 --epochs "$EPOCHS" --set-layout hydrogen --loss l1
  run hydrogen_wide_head --epochs "$EPOCHS" --set-layout hydrogen --head-hidden 512,256
elif [ "$ROUND" = 3 ]; then
  OUT=${OUT:-runs/tune_freqs3}
  mkdir -p "$OUT"
  R3="--epochs 40 --set-layout hydrogen --head-hidden 512,256 --xh-head 128,64"
  for arm in "sk_128_64 --skeleton-head 128,64" "sk_128_64_noctx --skeleton-head 128,64 --skeleton-context 0" \
             "sk_128_64_residual --skeleton-head 128,64 --skeleton-residual" "sk_128_64_s1 --skeleton-head 128,64 --seed 1" \
             "sk_256_128 --skeleton-head 256,128"; do
    set -- $arm
    name=$1; shift
    run "$name" $R3 "$@"
    if [ -f "$OUT/$name/metrics.json" ] && [ ! -f "$OUT/$name/spectra_val/report.json" ]; then
      qmlrp spectra "$OUT/$name" --split val --out "$OUT/$name/spectra_val" --no-progress >> "$OUT/$name.log" 2>&1
    fi
  done
else
  OUT=${OUT:-runs/tune_freqs2}
  mkdir -p "$OUT"
  R2="--epochs 40 --set-layout hydrogen --head-hidden 512,256"
  run wide_head $R2
  run xh_128_64 $R2 --xh-head 128,64
  run xh_256_128 $R2 --xh-head 256,128
  run xh_64 $R2 --xh-head 64
  run wide_head_s1 $R2 --seed 1
  run xh_128_64_s1 $R2 --xh-head 128,64 --seed 1
fi
