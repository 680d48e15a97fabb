#!/usr/bin/env bash
# What pretraining buys (issue 13): alpha on fold 0 of the full-QM9 10-fold split (the split of
# data/models/cv_alpha_bohr3): N training molecules drawn (seed 0) from its training bins, 1,000
# molecules of its validation slice to pick the epoch, and fold 0's whole test bin (13,084
# molecules) for the figures. Three arms per size: from scratch, with the graph autoencoder's
# encoders frozen in front, and the same fine-tuned. Rerunning resumes; finished runs are skipped.
#   TARGET=zpve_ev: the same for ZPVE (folders zpve_n*); SIZES="1000 5000 20000";
#   SEEDS="1 2": other training seeds on the same molecules (folders *_s1, *_s2);
#   EPOCHS: per run (default 40 at N = 1,000, 25 above, as in docs/dae.md);
#   AE=... TAG=_ctx: another autoencoder's arms (folders *_frozen_ctx, ...; scratch is shared).
set -euo pipefail
cd "$(dirname "$0")/../.."
AE=${AE:-data/dae/graph_a8_p4}
TARGET=${TARGET:-alpha_bohr3}
prefix=${TARGET%%_*}  # alpha, zpve
mkdir -p data/dae/study
for n in ${SIZES:-1000 5000}; do
  epochs=${EPOCHS:-$([ "$n" = 1000 ] && echo 40 || echo 25)}
  split=data/dae/study/split_n${n}.json
  [ -f "$split" ] || python - "$n" "$split" <<'PY'
import sys
import numpy as np
from molgraph import splits
n, path = int(sys.argv[1]), sys.argv[2]
kf = splits.load_split("data/models/cv_alpha_bohr3/split.json")
f0 = kf.fold(0)
rng = np.random.default_rng(0)
train = np.sort(rng.permutation(f0.train)[:n])
val = np.sort(rng.permutation(f0.val)[:1000])
splits.TrainValTest(train, val, np.asarray(f0.test), meta={"from": "fold 0 of data/models/cv_alpha_bohr3/split.json",
                    "n_train": n, "n_val": 1000, "seed": 0}).save(path)
PY
  for seed in ${SEEDS:-0}; do  # the training seed (initialization, batch order); the molecules stay the same
  for arm in scratch frozen fine-tune; do
    out=data/dae/study/${prefix}_n${n}_${arm}${TAG:-}$([ "$seed" = 0 ] || echo "_s$seed")
    [ "$arm" = scratch ] && [ -n "${TAG:-}" ] && continue  # another autoencoder: the scratch arm is the same run
    [ -f "$out/metrics.json" ] && continue
    extra=()
    [ "$arm" = frozen ] && extra=(--input-stage "$AE" --freeze)
    [ "$arm" = fine-tune ] && extra=(--input-stage "$AE" --fine-tune)
    qmlrp train --target "$TARGET" --split "$split" --epochs "$epochs" --batch-size 64 --seed "$seed" --out "$out" \
      "${extra[@]}" ${LIMIT:+--limit-minutes $LIMIT}
  done
  done
done
