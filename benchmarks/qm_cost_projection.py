"""Cost of QM labels per molecule, by size, and the projected cost of all of QM9.

    python benchmarks/qm_cost_projection.py data/labels/beta-b3lyp-6-31g2dfp [--since 2026-11-24T09:34] [--exponent 3]

Reads the per-molecule result files of `qmlrp label beta` (each records its wall time, the
number of basis functions and the thread count), fits wall = c * n_basis^p on them (least
squares in log-log) when their sizes span at least a factor 1.5 (otherwise, or with
`--exponent p`, p is fixed and c is anchored at the median of the largest size measured: cubic
is the density-fitted SCF/CPHF's formal scaling), prints the median time per heavy-atom count, and projects the core-hours
for every QM9 molecule in the embedded data set from its own basis size. `--since` keeps only
results finished after a time stamp (e.g. after an engine speed-up). The basis size of a
molecule is counted from its elements for the basis the results used: 6-31G(2df,p) with 6D/7F
(H 5 functions, C/N/O/F 28) or 6-31G* with 6D (H 2, C/N/O/F 15).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

FUNCTIONS = {
    "6-31g(2df,p)": {"H": 5, "C": 28, "N": 28, "O": 28, "F": 28},
    "6-31g*": {"H": 2, "C": 15, "N": 15, "O": 15, "F": 15},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--since", default="", help="ISO time stamp; only results finished after it")
    ap.add_argument("--exponent", type=float, default=None, help="fix the scaling exponent p")
    args = ap.parse_args()
    rows = []
    for f in sorted(args.folder.glob("results/*/*.json")):
        d = json.loads(f.read_text())
        if d.get("status") != "ok" or d.get("finished", "") < args.since:
            continue
        r = d["result"]
        rows.append((d["n_heavy"], r["n_basis"], d["wall_s"], d["spec"]["threads"], d["spec"]["basis"]))
    if len(rows) < 3:
        raise SystemExit(f"{args.folder}: {len(rows)} results after {args.since!r}; need at least 3")
    heavy, nbf, wall, threads, basis = map(np.array, zip(*rows))
    if len(set(basis)) != 1 or basis[0] not in FUNCTIONS:
        raise SystemExit(f"{args.folder}: basis {sorted(set(basis))}: one of {sorted(FUNCTIONS)} expected")
    core_s = wall * threads
    if args.exponent is None and nbf.max() >= 1.5 * nbf.min():
        p, logc = np.polyfit(np.log(nbf), np.log(core_s), 1)
        how = "fit"
    else:
        if args.exponent is None:
            raise SystemExit(f"{args.folder}: n_basis spans only {nbf.min()}-{nbf.max()}: too narrow to fit an "
                             "exponent; pass --exponent")
        p = args.exponent
        top = nbf >= np.percentile(nbf, 75)
        logc = np.log(np.median(core_s[top])) - p * np.log(np.median(nbf[top]))
        how = f"fixed exponent, anchored at the median of the largest quarter (n_basis {int(np.median(nbf[top]))})"
    print(f"{len(rows)} molecules at {basis[0]}, {threads.max()} thread(s) each; core-s = "
          f"{np.exp(logc):.3g} * n_basis^{p:.2f} ({how})")
    for k in sorted(set(heavy)):
        sel = heavy == k
        print(f"  {k} heavy atoms: {sel.sum():4d} molecules, n_basis {int(np.median(nbf[sel]))}, "
              f"median {np.median(core_s[sel]):7.1f} core-s (range {core_s[sel].min():.1f}-{core_s[sel].max():.1f})")

    from molgraph.qm9_sources import iter_qm9pack_rows
    from molgraph.qm9_sources import molecule_from_qm9pack_row

    per_el = FUNCTIONS[basis[0]]
    sizes = []
    for row in iter_qm9pack_rows():
        counts = Counter(molecule_from_qm9pack_row(row).elements)
        sizes.append(sum(per_el[e] * n for e, n in counts.items()))
    sizes = np.array(sizes, dtype=float)
    proj = np.exp(logc) * sizes ** p
    print(f"QM9 ({len(sizes)} molecules): n_basis median {np.median(sizes):.0f}, max {sizes.max():.0f}; "
          f"projected median {np.median(proj) / 60:.1f} core-min, largest {proj.max() / 60:.1f} core-min per molecule; "
          f"all of QM9 {proj.sum() / 3600:,.0f} core-hours (extrapolated beyond n_basis {nbf.max()})")


if __name__ == "__main__":
    main()
