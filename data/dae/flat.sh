#!/usr/bin/env bash
# The proposal's flat design (issue 13): one tied autoencoder 5887-512-64 over the flattened
# Molecular Graph, trained like the size sweep (the same 3,000 molecules of fold 0's training
# bins, 8 epochs, epoch picked on 2,000 validation molecules), inspected on 2,000 molecules of
# fold 0's test bin: reconstruction per group, padding share, renumbering sensitivity.
# Its weights (12 MB) are not committed; rerun this script to rebuild them.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=data/dae/sizes/flat_512_64
qmlrp dae train --variant flat --out "$out" --train-size 3000 --epochs 8
qmlrp dae inspect "$out" --n-test 2000 > "$out/inspect.txt"
