"""Per-atom relevance by element, and hydrogens against their bonded heavy atom.

    python benchmarks/element_relevance.py runs/alpha/explain_v2 runs/zpve/explain [--json out.json]

For each explain directory (relevance.npz of `qmlrp explain`) it prints, in the target's units:
- per element: atoms, mean per-atom relevance R_i, mean |R_i|;
- per molecule: the fraction of sum_i |R_i| held by the hydrogens, against the fraction of its
  atoms that are hydrogens (means over molecules);
- per element and hybridization (C sp/sp2/sp3, ...): atoms and mean R_i;
- an additive reference from the labels themselves: least squares of the target on the element
  counts (target ~ c0 + sum_e c_e n_e over the explained molecules), the coefficient c_e per element;
- every hydrogen against the heavy atom it is bonded to (bond = the `graph_distance_le_1` pair
  feature of the featurized graph, from the QM9 cache): median of |R_H| / |R_X|, the fraction of
  hydrogens with |R_H| > |R_X|, and mean R_H by the neighbour's element (C-H, N-H, O-H).
The per-atom relevance is the atom's own features plus half of each of its pairs (docs/explain.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def bonded_partner(graph) -> np.ndarray:
    """For each atom the index of its bonded heavy atom if it is a hydrogen, else -1."""
    from molgraph import PAIR_FEATURES

    k = PAIR_FEATURES.index("graph_distance_le_1")
    bonded = np.asarray(graph.pair_features)[:, :, k] > 0.5
    el = [str(e) for e in graph.elements]
    out = np.full(len(el), -1, dtype=np.int64)
    for i, e in enumerate(el):
        if e != "H":
            continue
        nb = [j for j in np.flatnonzero(bonded[i]) if el[j] != "H"]
        if len(nb) == 1:
            out[i] = nb[0]
    return out


def analyse(directory: str) -> dict:
    from qmlrp.explain import find_qm9, load_relevance

    rs = load_relevance(directory)
    unit = rs.meta.get("unit", "")
    ids = np.array([int(str(s).split(":")[1]) for s in rs.ids], dtype=np.int64)
    ds = find_qm9(ids, progress=False, log=lambda s: print(s, file=sys.stderr))
    sub = ds.subset(list(ids))
    el_all = np.asarray(rs.elements).astype(str)
    pa = rs.per_atom.astype(np.float64)

    per_el = {}
    for e in sorted(set(el_all), key=lambda x: "HCNOF".find(x) if x in "HCNOF" else 9):
        m = el_all == e
        per_el[e] = {"atoms": int(m.sum()), "mean": float(pa[m].mean()), "mean_abs": float(np.abs(pa[m]).mean())}

    from molgraph import ATOM_FEATURES

    hyb_cols = [ATOM_FEATURES.index(f"hybridization_{h}") for h in ("sp", "sp2", "sp3")]
    hyb: dict[str, list[float]] = {}
    counts = np.zeros((len(rs), len(per_el)))
    elist = list(per_el)
    h_abs_frac, h_count_frac = [], []
    ratio, h_bigger = [], []
    by_nb: dict[str, list[float]] = {}
    nb_val: dict[str, list[float]] = {}
    bad = 0
    for m in range(len(rs)):
        s, e = int(rs.offsets[m]), int(rs.offsets[m + 1])
        r, el = pa[s:e], el_all[s:e]
        g = sub[m]
        if [str(x) for x in g.elements] != list(el):
            bad += 1
            continue
        tot = np.abs(r).sum()
        isH = el == "H"
        if tot > 0:
            h_abs_frac.append(np.abs(r[isH]).sum() / tot)
            h_count_frac.append(isH.mean())
        af = np.asarray(g.atom_features)
        for i in range(len(el)):
            counts[m, elist.index(el[i])] += 1
            if el[i] == "H":
                continue
            on = [h for h, c in zip(("sp", "sp2", "sp3"), hyb_cols) if af[i, c] > 0.5]
            key = f"{el[i]} {on[0] if len(on) == 1 else 'other'}"
            hyb.setdefault(key, []).append(r[i])
        part = bonded_partner(g)
        for i in np.flatnonzero(part >= 0):
            j = part[i]
            by_nb.setdefault(f"{el[j]}-H", []).append(r[i])
            nb_val.setdefault(f"{el[j]}-H", []).append(r[j])
            if abs(r[j]) > 0:
                ratio.append(abs(r[i]) / abs(r[j]))
            h_bigger.append(abs(r[i]) > abs(r[j]))
    y = np.asarray(rs.target, dtype=np.float64)
    ok = np.isfinite(y)
    X = np.column_stack([np.ones(ok.sum()), counts[ok]])
    coef, *_ = np.linalg.lstsq(X, y[ok], rcond=None)
    fit_mae = float(np.mean(np.abs(X @ coef - y[ok])))
    return {
        "dir": str(directory), "target": rs.meta.get("target"), "unit": unit, "rule": rs.meta.get("rule"),
        "histogram_rule": rs.meta.get("histogram_rule"), "n_molecules": len(rs), "element_mismatch": bad,
        "per_element": per_el,
        "by_hybridization": {k: {"atoms": len(v), "mean": float(np.mean(v))} for k, v in sorted(hyb.items())},
        "additive_fit": {"intercept": float(coef[0]), "per_element": dict(zip(elist, map(float, coef[1:]))),
                         "mae": fit_mae, "n": int(ok.sum())},
        "h_share_of_abs_relevance": float(np.mean(h_abs_frac)), "h_share_of_atoms": float(np.mean(h_count_frac)),
        "hydrogens_with_partner": len(h_bigger),
        "median_abs_ratio_H_to_partner": float(np.median(ratio)),
        "fraction_H_larger_than_partner": float(np.mean(h_bigger)),
        "by_bond": {k: {"n": len(v), "mean_R_H": float(np.mean(v)), "mean_R_partner": float(np.mean(nb_val[k]))}
                    for k, v in sorted(by_nb.items())},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    res = [analyse(d) for d in a.dirs]
    for r in res:
        u = r["unit"]
        print(f"\n{r['dir']}  target {r['target']} ({u}), rule {r['rule']}/{r['histogram_rule']}, "
              f"{r['n_molecules']} molecules, element mismatches {r['element_mismatch']}")
        print(f"| element | atoms | mean R_i / {u} | mean abs R_i / {u} |\n|---|---|---|---|")
        for e, v in r["per_element"].items():
            print(f"| {e} | {v['atoms']} | {v['mean']:+.4g} | {v['mean_abs']:.4g} |")
        fit = r["additive_fit"]
        print(f"additive fit on element counts ({fit['n']} labelled molecules, MAE {fit['mae']:.3g} {u}): "
              f"intercept {fit['intercept']:+.4g}; " + ", ".join(f"{e} {c:+.4g}" for e, c in fit["per_element"].items()))
        print(f"| heavy atom | atoms | mean R_i / {u} |\n|---|---|---|")
        for k, v in r["by_hybridization"].items():
            print(f"| {k} | {v['atoms']} | {v['mean']:+.4g} |")
        print(f"hydrogens hold {100 * r['h_share_of_abs_relevance']:.1f} % of a molecule's |per-atom relevance| "
              f"(mean over molecules) and are {100 * r['h_share_of_atoms']:.1f} % of its atoms")
        print(f"{r['hydrogens_with_partner']} hydrogens: median |R_H| / |R_partner| "
              f"{r['median_abs_ratio_H_to_partner']:.3g}; |R_H| > |R_partner| for "
              f"{100 * r['fraction_H_larger_than_partner']:.1f} %")
        print(f"| bond | hydrogens | mean R_H / {u} | mean R_partner / {u} |\n|---|---|---|---|")
        for k, v in r["by_bond"].items():
            print(f"| {k} | {v['n']} | {v['mean_R_H']:+.4g} | {v['mean_R_partner']:+.4g} |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
