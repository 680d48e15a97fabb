"""Measure the molgraph.qm response engine on QM9 molecules (1 thread).

    python benchmarks/qm_response.py agree --n 12 --out /tmp/qm_agree.jsonl
        the N smallest QM9 molecules (by atom count, then id) at B3LYP/6-31G(2df,p) 6D/7F:
        computed |mu| and isotropic alpha vs QM9's columns.
    python benchmarks/qm_response.py timing --ids 11 23 1000 20332 --basis "6-31g*" --out ...
        wall time (SCF, CPHF, beta) per molecule.

Each molecule is one JSON line (appended as soon as it is done); a summary is printed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

DEBYE_AU = 0.393430307  # e a0 per debye


def qm9_molecules(ids=None, n_smallest=None):
    from molgraph.qm9_sources import iter_qm9pack_rows, molecule_from_qm9pack_row, uncharacterized_ids

    bad = uncharacterized_ids()
    mols = []
    for row in iter_qm9pack_rows():
        qid = int(row["Index"])
        if ids is not None and qid not in ids:
            continue
        if qid in bad:
            continue
        mols.append(molecule_from_qm9pack_row(row))
    if n_smallest is not None:
        mols.sort(key=lambda m: (len(m.elements), m.properties["qm9_id"]))
        mols = mols[:n_smallest]
    return mols


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("agree", "timing"))
    ap.add_argument("--n", type=int, default=12, help="agree: number of smallest molecules")
    ap.add_argument("--ids", type=int, nargs="*", help="QM9 ids")
    ap.add_argument("--xc", default="b3lyp")
    ap.add_argument("--basis", default="6-31g(2df,p)")
    ap.add_argument("--no-df", action="store_true", help="exact four-centre integrals")
    ap.add_argument("--out", required=True, help="JSON lines output (appended)")
    args = ap.parse_args(argv)

    from molgraph.qm import QMError, response_properties

    mols = qm9_molecules(set(args.ids) if args.ids else None, args.n if args.mode == "agree" and not args.ids else None)
    rows = []
    for m in mols:
        try:
            r = response_properties(m, xc=args.xc, basis=args.basis, density_fit=not args.no_df, threads=1)
        except QMError as exc:
            print(f"FAILED {exc}", file=sys.stderr)
            continue
        row = {
            "qm9_id": m.properties["qm9_id"], "smiles": m.smiles, "n_atoms": len(m.elements), "n_basis": r.n_basis,
            "mu_debye": r.dipole_norm / DEBYE_AU, "qm9_mu_debye": m.properties["mu_debye"],
            "alpha_iso": r.alpha_iso, "qm9_alpha": m.properties["alpha_bohr3"],
            "beta_parallel": r.beta_parallel if r.beta_parallel_defined else None, "beta_vector_norm": r.beta_vector_norm,
            "wall_s": r.wall_time_s, **{k: v for k, v in r.timings.items()},
            "xc": args.xc, "basis": args.basis, "density_fit": not args.no_df,
        }
        rows.append(row)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    if rows and args.mode == "agree":
        da = np.array([r["alpha_iso"] - r["qm9_alpha"] for r in rows])
        dm = np.array([r["mu_debye"] - r["qm9_mu_debye"] for r in rows])
        print(f"{len(rows)} molecules: alpha MAE {np.abs(da).mean():.4f} max {np.abs(da).max():.4f} bohr^3; "
              f"|mu| MAE {np.abs(dm).mean():.4f} max {np.abs(dm).max():.4f} D")


if __name__ == "__main__":
    main()
