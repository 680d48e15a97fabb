#!/usr/bin/env bash
# beta_par and |beta_vec| with few labels (issue 15): 10-fold CV inside the labelled set of
# data/labels/beta-b3lyp-6-31g2dfp (QM9's level), the same seeded folds for every arm of a
# molecule set, and the alpha model trained the same way on the same molecules (the proposal's
# "complex properties have larger relative errors" needs both at equal data). Arms:
#   scratch      a weave network from random weights (the Faber-like default architecture)
#   alpha-init   started from the published qm9-alpha model (all weights but the output layer,
#                trained on QM9's alpha for 117,747 molecules), then trained on the labels
#   zpve-init    the same from qm9-zpve: does any pretrained network help, or alpha's in particular?
#   dae-frozen / dae-fine-tune   the graph autoencoder data/dae/graph_a8_p4 as the input stage
#   small        from scratch with a network of 16/16 channels, readout 32, head 32 (few labels,
#                few parameters)
#   *_n40, *_n80, *_n160   scratch, zpve-init and alpha on N training molecules per fold
#                (--train-size): the learning curve inside the set (benchmarks/beta_learning_curve.py)
# The label set grows as the farm goes on, and a CV split belongs to one molecule set: each label
# count gets its own folder, data/beta_study/n<labelled molecules>/, with a copy of the table it
# was run on (labels/). Rerunning resumes; finished
# folds are skipped. Table, CIs and parity plots: qmlrp cv-compare, e.g.
#   qmlrp cv-compare scratch=$OUT/par_scratch alpha-init=$OUT/par_alpha-init ... \
#       --labels $L/table.csv --ids $L/ids_all.txt --out $OUT/compare_par
set -euo pipefail
cd "$(dirname "$0")/../.."
export TQDM_DISABLE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
L=${LABELS:-data/labels/beta-b3lyp-6-31g2dfp}
OUT=${OUT:-data/beta_study/n$(grep -c . "$L/ids_all.txt")}
# a snapshot of the table: the models record its path and SHA-256, and the farm's table moves on
if [ ! -f "$OUT/labels/table.csv" ]; then
  mkdir -p "$OUT/labels" && cp "$L/table.csv" "$L/ids.txt" "$L/ids_all.txt" "$OUT/labels/"
fi
L=$OUT/labels
COMMON=(--labels "$L/table.csv" --folds 10 --epochs "${EPOCHS:-300}" --batch-size 16 --patience 40)
# UNTIL (optional, a `date -d` time such as "23:45"): every arm stops cleanly at an epoch boundary
# before it (--limit-minutes), and the arms not started by then are left for the next run
run() {  # name, ids file, target, flags...
  name=$1 ids=$2 target=$3; shift 3
  [ -f "$OUT/$name/cv.json" ] && python -c "import json,sys; sys.exit(0 if json.load(open('$OUT/$name/cv.json'))['complete'] else 1)" && return 0
  limit=()
  if [ -n "${UNTIL:-}" ]; then
    left=$(( ($(date -d "$UNTIL" +%s) - $(date +%s)) / 60 ))
    [ "$left" -lt 3 ] && return 0
    limit=(--limit-minutes "$left")
  fi
  qmlrp cv --target "$target" --ids "$ids" "${COMMON[@]}" "${limit[@]}" --out "$OUT/$name" "$@" >> "$OUT/$name.log" 2>&1 || true
}
run par_scratch "$L/ids.txt" beta_par_au
run par_alpha-init "$L/ids.txt" beta_par_au --init-from qm9-alpha
run alpha_on_par "$L/ids.txt" alpha_bohr3
run vec_scratch "$L/ids_all.txt" beta_vec_au
run vec_alpha-init "$L/ids_all.txt" beta_vec_au --init-from qm9-alpha
run alpha_on_all "$L/ids_all.txt" alpha_bohr3
run par_zpve-init "$L/ids.txt" beta_par_au --init-from qm9-zpve
run par_dae-frozen "$L/ids.txt" beta_par_au --input-stage data/dae/graph_a8_p4 --freeze
run par_dae-fine-tune "$L/ids.txt" beta_par_au --input-stage data/dae/graph_a8_p4 --fine-tune
run par_small "$L/ids.txt" beta_par_au --atom-hidden 16 --pair-hidden 16 --readout-hidden 32 --head-hidden 32
# The learning curve inside the labelled set: `qmlrp cv --train-size N` trains every fold on a
# seeded N of its ~300 training molecules (nested across sizes; the same validation slice and test
# bin), so each size is tested out of fold on every molecule and the sizes compare paired with
# cv-compare; the full size is the arm of the same name above.
for n in 40 80 160; do
  run par_scratch_n$n "$L/ids.txt" beta_par_au --train-size $n
  run par_zpve-init_n$n "$L/ids.txt" beta_par_au --init-from qm9-zpve --train-size $n
  run alpha_on_par_n$n "$L/ids.txt" alpha_bohr3 --train-size $n
done
