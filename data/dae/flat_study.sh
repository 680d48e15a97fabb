#!/usr/bin/env bash
# The flat design in front of a fully connected network (issue 13), next to the weave arms of
# data/dae/study.sh on the same molecules: alpha on N molecules of fold 0's training bins (the
# split files study.sh writes: seed 0, 1,000 validation molecules pick the epoch), figures on fold
# 0's whole test bin (13,084 molecules). The flat autoencoder 5887-512-64 is trained like the graph
# one the weave arms use (20,000 molecules of fold 0's training bins, 12 epochs), at lr 1e-3 (at the
# graph one's 3e-3 its held-out loss jumped 990 -> 3,022 -> 37,649 in epochs 1-3). Three arms:
# the flat network on the raw flattened graph (--architecture flat), with the flat encoder frozen
# in front, and the same fine-tuned. Rerunning resumes; finished runs are skipped. The flat
# encoder's weights (12 MB, and every flat model's) are not committed; rerun to rebuild.
# SEEDS="1 2" repeats the arms with other training seeds (folders *_s1, *_s2).
set -euo pipefail
cd "$(dirname "$0")/../.."
AE=${AE:-data/dae/flat_512_64}
trained() { [ -f "$AE/weights.pt" ] && [ ! -f "$AE/checkpoint.pt" ]; }  # a finished run drops its checkpoint
trained || qmlrp dae train --variant flat --out "$AE" --train-size 20000 --epochs 12 --lr 1e-3 \
  ${LIMIT:+--limit-minutes $LIMIT}
trained || exit 0  # stopped by the time limit: rerun to go on
[ -f "$AE/inspect.txt" ] || qmlrp dae inspect "$AE" --n-test 2000 > "$AE/inspect.txt"
for n in ${SIZES:-1000 5000}; do
  split=data/dae/study/split_n${n}.json
  [ -f "$split" ] || { echo "$split is missing: run data/dae/study.sh first (SIZES=$n)"; exit 1; }
  epochs=$([ "$n" = 1000 ] && echo 40 || echo 25)
  for seed in ${SEEDS:-0}; do  # the training seed (initialization, batch order); the molecules stay the same
  for arm in scratch frozen fine-tune; do
    out=data/dae/study/alpha_n${n}_flat_${arm}$([ "$seed" = 0 ] || echo "_s$seed")
    [ -f "$out/metrics.json" ] && continue
    extra=(--architecture flat)
    [ "$arm" = frozen ] && extra=(--input-stage "$AE" --freeze)
    [ "$arm" = fine-tune ] && extra=(--input-stage "$AE" --fine-tune)
    qmlrp train --target alpha_bohr3 --split "$split" --epochs "$epochs" --batch-size 64 --seed "$seed" --out "$out" \
      "${extra[@]}" ${LIMIT:+--limit-minutes $LIMIT}
  done
  done
done
