"""Do the verdict's two between-model claims survive a change of LRP rule?

    python benchmarks/verdict_rules.py runs/alpha/stability runs/zpve/stability

Reads `stability_molecules.csv` of two single-model `qmlrp stability` runs over the same
molecules (an alpha model and a ZPVE model) and, for every rule both ran, tests on the paired
per-molecule set shares (`qmlrp.compare` definitions: geometric / electronic sets):
geometric share ZPVE - alpha and electronic share alpha - ZPVE (the hypothesis predicts both > 0).
Mean difference with a percentile bootstrap 95 % CI (2,000 resamples, seed 0), rank-biserial
correlation, two-sided Wilcoxon signed-rank p, Holm-adjusted over all the tests printed.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from molgraph import GROUP_NAMES
from qmlrp.compare import set_shares
from qmlrp.explain.statistics import bootstrap_means, holm, rank_biserial, wilcoxon_test


def read(directory: str) -> dict[str, dict[str, np.ndarray]]:
    """{rule: {id: (12,) shares}} (the members' mean share; one member: its share)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    path = Path(directory) / "stability_molecules.csv"
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["group"] not in GROUP_NAMES:  # the set rows (geometric, ...) are recomputed below
                continue
            v = out.setdefault(row["rule"], {}).setdefault(row["id"], np.full(len(GROUP_NAMES), np.nan))
            v[GROUP_NAMES.index(row["group"])] = float(row["share_mean"])
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    a, z = read(argv[0]), read(argv[1])
    rows = []
    for rule in [r for r in a if r in z]:
        ids = sorted(set(a[rule]) & set(z[rule]))
        sa = set_shares(np.array([a[rule][i] for i in ids]))
        sz = set_shares(np.array([z[rule][i] for i in ids]))
        for claim, d in (("geometric: ZPVE - alpha", sz["geometric"] - sa["geometric"]),
                         ("electronic: alpha - ZPVE", sa["electronic"] - sz["electronic"])):
            lo, hi = bootstrap_means(d[:, None])
            rows.append((rule, claim, len(ids), d.mean(), lo[0], hi[0], rank_biserial(d), wilcoxon_test(d)["p"]))
    padj = holm([r[-1] for r in rows])
    print("| rule | difference (hypothesis: > 0) | molecules | mean, points [95 % CI] | rank-biserial | Wilcoxon p (Holm) |")
    print("|---|---|---|---|---|---|")
    for r, p in zip(rows, padj):
        print(f"| {r[0]} | {r[1]} | {r[2]} | {100 * r[3]:+.1f} [{100 * r[4]:+.1f}, {100 * r[5]:+.1f}] | "
              f"{r[6]:+.2f} | {p:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
