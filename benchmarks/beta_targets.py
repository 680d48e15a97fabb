"""What beta_par and |beta_vec| are as regression targets, from a label table (issue 15).

    python benchmarks/beta_targets.py data/labels/beta-b3lyp-6-31g2dfp/table.csv \
        [--other data/labels/beta-b3lyp-6-31g2dfp-pyscf/table.csv]

beta_par = 3/5 beta_vec . mu/|mu| is |beta_vec| times 3/5 cos(theta), theta the angle between the
beta vector and the dipole: it is undefined without a dipole, and where the dipole is small its
direction (and so the sign and size of beta_par) hangs on details. Prints, for the table: how many
molecules have beta_par, the |mu| distribution, the sign split, the spread of cos(theta), and
mean |target| (the denominator of the relative error). With --other (the same molecules at a
slightly different level, e.g. another basis), how much each target moves between the two, by
dipole size: the part of a beta_par error that no model can be blamed for.
"""
from __future__ import annotations

import argparse
import csv

import numpy as np

DEBYE_AU = 0.393430307


def read(path: str) -> dict[int, dict]:
    with open(path, newline="") as f:
        return {int(r["qm9_id"]): r for r in csv.DictReader(f) if r.get("qm9_id")}


def num(r: dict, key: str) -> float:
    v = r.get(key, "")
    return float(v) if v not in ("", None) else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table")
    ap.add_argument("--other", help="a second table of the same molecules (another level)")
    ap.add_argument("--small-dipole-debye", type=float, default=0.5, help="what counts as a small dipole (0.5 D)")
    args = ap.parse_args(argv)
    rows = read(args.table)
    mu = np.array([num(r, "mu_debye") for r in rows.values()])
    par = np.array([num(r, "beta_par") for r in rows.values()])
    vec = np.array([num(r, "beta_vec_norm") for r in rows.values()])
    has = np.isfinite(par)
    cos = np.where(has & (vec > 0), par / (0.6 * np.where(vec > 0, vec, 1)), np.nan)
    small = mu < args.small_dipole_debye
    print(f"{args.table}: {len(rows)} molecules; beta_par defined for {has.sum()} (no dipole: {(~has).sum()})")
    print(f"|mu| / D: median {np.median(mu):.2f}, quartiles {np.percentile(mu, 25):.2f}-{np.percentile(mu, 75):.2f}; "
          f"below {args.small_dipole_debye} D (with beta_par): {(small & has).sum()}")
    print(f"beta_par: {(par[has] > 0).sum()} positive, {(par[has] < 0).sum()} negative; mean |beta_par| "
          f"{np.abs(par[has]).mean():.2f} au, mean |beta_vec| {vec.mean():.2f} au")
    c = cos[np.isfinite(cos)]
    print(f"cos(beta_vec, mu) = beta_par / (0.6 |beta_vec|): |cos| > 0.9 for {(np.abs(c) > 0.9).mean():.0%}, "
          f"< 0.5 for {(np.abs(c) < 0.5).mean():.0%} of the molecules with beta_par")
    if args.other:
        other = read(args.other)
        common = sorted(set(rows) & set(other))
        print(f"\nagainst {args.other}: {len(common)} molecules in common")
        for key, label in (("beta_par", "beta_par"), ("beta_vec_norm", "|beta_vec|")):
            a = np.array([num(rows[q], key) for q in common])
            b = np.array([num(other[q], key) for q in common])
            m = np.array([num(rows[q], "mu_debye") for q in common])
            ok = np.isfinite(a) & np.isfinite(b)
            d = np.abs(a - b)[ok]
            flips = int((np.sign(a[ok]) != np.sign(b[ok])).sum())
            sm = m[ok] < args.small_dipole_debye
            print(f"  {label:10s}: mean |difference| {d.mean():.2f} au ({d.mean() / np.abs(a[ok]).mean():.1%} of mean |value|),"
                  f" max {d.max():.2f}; sign flips {flips}; small dipoles (<{args.small_dipole_debye} D, n={sm.sum()}): "
                  f"{d[sm].mean() if sm.any() else float('nan'):.2f} au, others (n={(~sm).sum()}): "
                  f"{d[~sm].mean() if (~sm).any() else float('nan'):.2f} au")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
