#!/usr/bin/env bash
# The full-QM9 explanations of docs/verdict.md and docs/explain.md: both fold-0 models, mean and
# empty reference, the two comparisons and the additive checks (about 15 minutes on 2 cores).
export OMP_NUM_THREADS=1
for t in alpha_bohr3 zpve_ev; do
  for ref in empty mean; do
    qmlrp explain --model data/models/cv_$t --fold 0 --reference $ref --no-progress --out runs/full/${t}_$ref > runs/full/${t}_$ref.log 2>&1
  done
done
for ref in empty mean; do
  qmlrp compare runs/full/alpha_bohr3_$ref runs/full/zpve_ev_$ref --out runs/full/compare_$ref > runs/full/compare_$ref.log 2>&1
done
for ref in empty mean; do
  qmlrp additive runs/full/alpha_bohr3_$ref --scheme atoms --scheme bonds --no-progress > runs/full/additive_alpha_$ref.log 2>&1
  qmlrp additive runs/full/zpve_ev_$ref --scheme bonds --scheme atoms --no-progress > runs/full/additive_zpve_$ref.log 2>&1
done
