#!/usr/bin/env bash
# What pretraining buys (issue 13): alpha on fold 0 of the full-QM9 10-fold split (the same
# split as data/models/cv_alpha_bohr3), N training molecules drawn from its training bins,
# validation slice for the epoch, fold 0's test bin (13,084 molecules) for the figures.
# Three arms per size: from scratch, with the graph autoencoder's encoders frozen, fine-tuned.
# Each run resumes when rerun; finished runs are skipped by their metrics.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
AE=${AE:-data/dae/graph_a8_p4}
EPOCHS=${EPOCHS:-40}
for n in ${SIZES:-1000 5000}; do
  for arm in scratch frozen fine-tune; do
    out=data/dae/study/alpha_n${n}_${arm}
    [ -f "$out/metrics.json" ] && continue
    extra=()
    [ "$arm" = frozen ] && extra=(--input-stage "$AE" --freeze)
    [ "$arm" = fine-tune ] && extra=(--input-stage "$AE" --fine-tune)
    qmlrp train --target alpha_bohr3 --split data/models/cv_alpha_bohr3/split.json --fold 0 --train-size "$n" \
      --epochs "$EPOCHS" --batch-size 64 --out "$out" "${extra[@]}" ${LIMIT:+--limit-minutes $LIMIT}
  done
done
