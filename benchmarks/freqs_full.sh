#!/usr/bin/env bash
# The frequency-set model's figures and readings on fold 0's whole test bin (docs/spectra.md,
# issue 14), once data/models/cv_freqs_cm1/fold_0 is finished:
#  1. `qmlrp spectra` against the baselines and the dedicated ZPVE model (qm9-zpve, same fold);
#  2. where the relevance of the X-H stretches, the lowest modes and the sum sits (hydrogen share,
#     per element and partner: benchmarks/element_relevance.py);
#  3. the sum of all modes (2 x ZPVE in wavenumbers) against the ZPVE model on the same molecules.
# Outputs under runs/freqs_full/ (not in git; the figures go into docs/spectra.md).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TQDM_DISABLE=1
M=${M:-data/models/cv_freqs_cm1/fold_0}  # any frequency-set model directory
OUT=${OUT:-runs/freqs_full}
mkdir -p "$OUT"
qmlrp spectra "$M" --zpve-model qm9-zpve --out "$OUT/spectra" --no-progress > "$OUT/spectra.log" 2>&1
for sel in above:2600 below:1000 sum; do
  name=${sel/:/_}
  qmlrp explain --model "$M" --split test --output "$sel" --heatmaps 0 --faithfulness 0 --no-progress \
    --out "$OUT/explain_$name" > "$OUT/explain_$name.log" 2>&1
done
python benchmarks/element_relevance.py "$OUT/explain_above_2600" "$OUT/explain_below_1000" > "$OUT/element_relevance.txt"
qmlrp explain --model qm9-zpve --split test --heatmaps 0 --faithfulness 0 --no-progress --out "$OUT/explain_zpve" \
  > "$OUT/explain_zpve.log" 2>&1
qmlrp compare "$OUT/explain_sum" "$OUT/explain_zpve" --out "$OUT/compare_sum_zpve" > "$OUT/compare_sum_zpve.log" 2>&1
echo "-> $OUT"
