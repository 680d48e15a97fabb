#!/usr/bin/env bash
# Reconstruction against code size (issue 13): graph autoencoders with atom/pair codes of
# 2/1, 4/2, 8/4 and 12/6 units (hidden 32/16), each trained on the same 3,000 molecules of fold
# 0's training bins for 8 epochs (epoch picked on 2,000 validation molecules) and inspected on 2,000 molecules of fold 0's test bin.
set -euo pipefail
cd "$(dirname "$0")/../.."
for s in "2 1" "4 2" "8 4" "12 6"; do
  set -- $s
  out=data/dae/sizes/a$1_p$2
  qmlrp dae train --out "$out" --atom-sizes 21,32,$1 --pair-sizes 13,16,$2 --train-size 3000 --epochs 8
  qmlrp dae inspect "$out" --n-test 2000 > "$out/inspect.txt"
done
