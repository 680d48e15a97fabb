#!/usr/bin/env bash
# Architecture and loss of the frequency-set model (issue 14), chosen on fold 0's validation
# slice only: 20,000 of fold 0's training molecules, the fold's 11,775 validation molecules,
# EPOCHS epochs each (default 25), one core. Compared: the set layouts of gcnn.sets (ascending,
# descending, hydrogen) with the MSE loss, and the hydrogen layout with the L1 loss (the
# sorted-set / optimal-transport error itself). Resumable: rerun the same script; a finished
# configuration is skipped, one cut by its --limit-minutes goes on from its checkpoint.
# Table: python benchmarks/tune_alpha.py runs/tune_freqs --csv docs/figures/tune_freqs.csv
set -u
export TQDM_DISABLE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-runs/tune_freqs}
LIMIT=${LIMIT:-40}
EPOCHS=${EPOCHS:-25}
COMMON="--target freqs_cm1 --split data/models/cv_zpve_ev/split.json --fold 0 --train-size 20000 --epochs $EPOCHS --batch-size 128"
run() {  # name, flags
  name=$1; shift
  qmlrp train $COMMON --limit-minutes "$LIMIT" --out "$OUT/$name" "$@" >> "$OUT/$name.log" 2>&1
}
mkdir -p "$OUT"
run hydrogen --set-layout hydrogen
run ascending --set-layout ascending
run descending --set-layout descending
run hydrogen_l1 --set-layout hydrogen --loss l1
run hydrogen_wide_head --set-layout hydrogen --head-hidden 512,256
