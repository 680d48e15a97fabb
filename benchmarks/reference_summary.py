"""What each reference explains, for finished `qmlrp explain` runs: the reference's prediction,
mean explained and absorbed part, cancellation, the correlation of the input relevance with the
prediction, and per element the mean relevance per atom from the input features and at the
pooling (the atoms' shares of the summed histograms), with the sum of the pooling shares
against explained (exact against a reference: nothing is absorbed above the pooling).

    python benchmarks/reference_summary.py runs/full/alpha_bohr3_mean runs/full/alpha_bohr3_empty ...
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    from qmlrp.explain import load_relevance

    dirs = argv if argv is not None else sys.argv[1:]
    for d in dirs:
        s = json.loads((Path(d) / "summary.json").read_text())
        rs = load_relevance(d)
        unit, ref = rs.meta["unit"], s["reference"]
        total = rs.groups.sum(1)
        c = s["cancellation"]
        print(f"## {d}: {rs.meta['target']}, reference {ref['kind']}"
              + (f" (prediction {ref['prediction']:.4g} {unit})" if "prediction" in ref else
                 f" (training mean {ref['training_mean']:.4g} {unit})"))
        print(f"molecules {len(rs)}; mean explained {rs.explained.mean():.4g}, absorbed {rs.absorbed.mean():.4g}, "
              f"input relevance {total.mean():.4g} {unit}; r(input relevance, prediction) "
              f"{np.corrcoef(total, rs.prediction)[0, 1]:.3f}; cancellation median "
              f"{c['per_molecule_quantiles']['50']:.3f}, p90 {c['per_molecule_quantiles']['90']:.3f}, "
              f"pooled {c['pooled']:.3f}")
        if rs.atom_contribution is not None:
            per_mol = np.add.reduceat(rs.atom_contribution.astype(np.float64), rs.offsets[:-1])
            print(f"pooling shares: sum - explained, max |.| {np.abs(per_mol - rs.explained).max():.2e} {unit}, "
                  f"mean {float((per_mol - rs.explained).mean()):.4g}")
        print("| element | atoms | from features: mean (std) | at the pooling: mean (std) |")
        print("|---|---:|---:|---:|")
        for e in ("H", "C", "N", "O", "F"):
            m = rs.elements == e
            pool = ("n/a" if rs.atom_contribution is None else
                    f"{rs.atom_contribution[m].mean():.3g} ({rs.atom_contribution[m].std():.3g})")
            print(f"| {e} | {int(m.sum())} | {rs.per_atom[m].mean():.3g} ({rs.per_atom[m].std():.3g}) | {pool} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
