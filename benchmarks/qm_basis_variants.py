"""Which 6-31G(2df,p) did QM9 use? Isotropic alpha of QM9 molecules under two definitions of the
basis's doubled d shell, against QM9's own alpha column (issue 15: the alpha discrepancy).

    python benchmarks/qm_basis_variants.py --ids 1 2 3 5 9 11 184 --out /tmp/basis_variants.jsonl

PySCF's 6-31G(2df,p) (the Basis Set Exchange's) doubles the d shell as 2x and 0.5x the 6-311G*
d exponent of each element (C 0.626, N 0.913, O 1.292, F 1.75). The alternative here doubles the
6-31G* exponent (0.8 for C, N, O, F): d = 1.6 and 0.4. Everything else (6-31G core and valence,
the f shell, H's p = 1.1, 6D/7F, Gaussian's B3LYP, density fitting, grid level 3, QM9's
geometry) is the same in both, so a difference is the d exponents alone. One JSON line per
molecule and variant, appended as it is done; a summary at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from qm_response import qm9_molecules  # noqa: E402

D_631GS = 0.8  # the 6-31G* d exponent of C, N, O and F


def basis_variant(elements, name: str = "6-31g(2df,p)", d_exponent: float | None = D_631GS) -> dict:
    """{element: PySCF basis}: `name` with each heavy element's two single-primitive d shells
    replaced by 2x and 0.5x `d_exponent` (None: `name` unchanged)."""
    from pyscf import gto

    out = {}
    for el in sorted(set(elements)):
        shells = gto.basis.load(name, el)
        if d_exponent is not None and el != "H":
            d = [k for k, s in enumerate(shells) if s[0] == 2]
            if len(d) != 2 or any(len(shells[k]) != 2 for k in d):
                raise ValueError(f"{name} for {el}: expected two single-primitive d shells, got {len(d)}")
            shells = [s for s in shells if s[0] != 2] + [[2, [2 * d_exponent, 1.0]], [2, [0.5 * d_exponent, 1.0]]]
        out[el] = shells
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, nargs="+", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from molgraph.qm import response_properties

    done = set()
    if os.path.exists(args.out):
        for line in open(args.out):
            r = json.loads(line)
            done.add((r["qm9_id"], r["variant"]))
    for m in qm9_molecules(set(args.ids)):
        qid = m.properties["qm9_id"]
        for variant, dexp in (("pyscf-bse", None), ("d-from-6-31G*", D_631GS)):
            if (qid, variant) in done:
                continue
            basis = basis_variant(m.elements, d_exponent=dexp)
            r = response_properties(m, basis=basis, basis_convention="6d7f", threads=1)
            alpha = float(np.trace(r.polarizability) / 3)
            rec = {"qm9_id": qid, "name": m.name, "variant": variant, "alpha_iso": alpha,
                   "qm9_alpha": float(m.properties["alpha_bohr3"]), "mu_debye": float(np.linalg.norm(r.dipole) / 0.393430307),
                   "qm9_mu_debye": float(m.properties["mu_debye"]), "n_basis": r.n_basis}
            with open(args.out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"qm9:{qid} {m.name} {variant}: alpha {alpha:.3f} (QM9 {rec['qm9_alpha']:.2f}), n_basis {r.n_basis}",
                  flush=True)
    rows = [json.loads(line) for line in open(args.out)]
    for variant in ("pyscf-bse", "d-from-6-31G*"):
        d = np.array([r["alpha_iso"] - r["qm9_alpha"] for r in rows if r["variant"] == variant])
        if len(d):
            print(f"{variant}: {len(d)} molecules, alpha - QM9: MAE {np.abs(d).mean():.3f}, max {np.abs(d).max():.3f}, "
                  f"mean {d.mean():+.3f} bohr^3")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
