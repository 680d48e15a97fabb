#!/usr/bin/env bash
# Hyperparameter search for the alpha weave network (issue 11), on fold 0's validation slice only:
# 20,000 of fold 0's training molecules, the fold's 11,775 validation molecules, 40 epochs each.
# Resumable: rerun the same script; a finished configuration is skipped, one cut by its
# --limit-minutes goes on from its checkpoint. Results: benchmarks/tune_alpha.py reads the
# history.csv files (best validation MAE, epochs, minutes) into a table.
set -u
export TQDM_DISABLE=1  # no progress bars in the logs
OUT=${OUT:-runs/tune_alpha}
LIMIT=${LIMIT:-30}
COMMON="--target alpha_bohr3 --split data/models/cv_alpha_bohr3/split.json --fold 0 --train-size 20000 --epochs 40 --batch-size 128"
run() {  # name, flags
  name=$1; shift
  qmlrp train $COMMON --limit-minutes "$LIMIT" --out "$OUT/$name" "$@" >> "$OUT/$name.log" 2>&1
}
mkdir -p "$OUT"
while pgrep -f "out $OUT/base" > /dev/null; do sleep 20; done  # a stretch of base still running
run base
run lr_3e-4 --lr 3e-4
run wide --atom-hidden 100 --pair-hidden 100
run deep --layers 3
run big_readout --readout-hidden 256 --head-hidden 256,128
