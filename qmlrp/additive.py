"""`qmlrp additive`: does the network's relevance follow the chemistry an additive model knows?

A chemical check that needs no network (issue 18): fit an additive model to QM9 (alpha against
counts of atom hybrid types, in the spirit of Miller's atomic hybrid polarizabilities; ZPVE
against counts of bond types; `molgraph.additive`), then read the network's relevance of a
finished `qmlrp explain` run type by type and compare.

What is compared. An explain run distributes explained = f(x) - f(ref) (f(ref): the training
mean, the empty molecule, or a reference molecule) over atoms (`per_atom`: own features + half
of every pair). For the `bonds` scheme each atom's relevance is split equally over its bonds
(R_ij = R_i / deg_i + R_j / deg_j), so bond relevances sum to the atoms' and nothing is lost.
Summed over the units of type t in molecule x this gives R_t(x). The additive model's own exact
split of y(x) - y(ref) is A_t(x) = a_t (n_t(x) - n_t(ref)), with n(ref) = the mean counts of the
training molecules (the mean reference: the additive model fitted with an intercept has the
training mean as its mean), 0 (the empty molecule) or the reference molecule's counts. Then:

- the network's implied contribution per unit of type t, the least-squares slope through the
  origin of R_t(x) on d_t(x) = n_t(x) - n_t(ref) over the explained molecules,
  a~_t = sum_x R_t d_t / sum_x d_t^2 (= a_t when the relevance of type t is exactly additive),
  with a percentile bootstrap CI over molecules;
- the correlation over types of a~_t with a_t (bootstrap CI), and of both with the coefficients
  of the additive model fitted to the network's own predictions on the same molecules (what the
  network computes, read without LRP): a~ far from that fit means LRP does not read the network's
  additive structure; close to it but far from a means the network computes something else;
- per unit (meaningful against the empty molecule, where a unit's relevance and a_t measure the
  same thing), the distribution of the relevance of each type's units and its correlation with
  a_t over all units.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from molgraph import additive as am

DEFAULT_SCHEME = {"alpha_bohr3": "atoms", "zpve_ev": "bonds"}
SCHEME_TEXT = {"atoms": "atom hybrid types (element + hybridization, aromatic apart)",
               "bonds": "bond types (elements + bond order)"}


def unit_relevance(scheme: str, per_atom: np.ndarray, atom_labels: np.ndarray,
                   bonds: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """One molecule's (labels, relevance) per unit: atoms as they are; for bonds, each atom's
    relevance split equally over its bonds (an atom without bonds keeps its relevance under the
    label 'unbonded <type>'). The units' relevances sum to the atoms'."""
    r = np.asarray(per_atom, dtype=np.float64)
    if scheme == "atoms":
        return np.asarray(atom_labels, dtype=object), r
    i, j, labels = bonds
    deg = np.bincount(np.concatenate([i, j]).astype(np.int64), minlength=len(r)).astype(np.float64)
    share = np.divide(r, deg, out=np.zeros_like(r), where=deg > 0)
    rel = share[i] + share[j]
    lonely = np.flatnonzero(deg == 0)
    if len(lonely):
        labels = np.concatenate([labels, np.array([f"unbonded {atom_labels[k]}" for k in lonely], dtype=object)])
        rel = np.concatenate([rel, r[lonely]])
    return labels, rel


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    rank = lambda v: np.argsort(np.argsort(v)).astype(np.float64)  # noqa: E731 (no ties in practice)
    return _pearson(rank(x[ok]), rank(y[ok])) if ok.sum() >= 3 else float("nan")


def _slopes(r_t: np.ndarray, d: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Least-squares slopes through the origin per column: sum w R d / sum w d^2 ((T,) or (B, T))."""
    num, den = (r_t * d), d * d
    if w is None:
        num, den = num.sum(0), den.sum(0)
    else:
        num, den = w @ num, w @ den
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def compare_additive(model: am.AdditiveModel, unit_labels: Sequence[np.ndarray], unit_rel: Sequence[np.ndarray],
                     predictions: np.ndarray, targets: np.ndarray, reference_counts: np.ndarray | None,
                     resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """The comparison of one explain run with one additive model (see the module docstring).
    unit_labels / unit_rel: per explained molecule, its units' types and relevances;
    reference_counts: n(ref) ((T,); None = the empty molecule)."""
    types = model.types
    col = {t: k for k, t in enumerate(types)}
    m = len(unit_labels)
    counts = am.count_matrix(unit_labels, types)
    r_t = np.zeros((m, len(types)))
    for x, (labels, rel) in enumerate(zip(unit_labels, unit_rel)):
        k = np.array([col.get(t, col.get(am.OTHER, -1)) for t in labels], dtype=np.int64)
        if (k < 0).any():
            raise ValueError(f"molecule {x}: a unit type outside the additive model's types and no '{am.OTHER}'")
        np.add.at(r_t[x], k, rel)
    ref = np.zeros(len(types)) if reference_counts is None else np.asarray(reference_counts, dtype=np.float64)
    d = counts - ref
    a = model.coefficients
    implied = _slopes(r_t, d)
    rng = np.random.default_rng(seed)
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    boot, boot_r = [], []
    named = np.array([t != am.OTHER for t in types]) & np.isfinite(a)
    for start in range(0, resamples, 200):
        b = min(200, resamples - start)
        w = rng.multinomial(m, np.full(m, 1.0 / m), size=b).astype(np.float64)
        s = _slopes(r_t, d, w)
        boot.append(s)
        boot_r.extend(_pearson(a[named], row[named]) for row in s)
    boot = np.concatenate(boot) if boot else np.zeros((0, len(types)))
    ci = np.nanpercentile(boot, [lo_q, hi_q], axis=0) if len(boot) else np.full((2, len(types)), np.nan)
    net_fit = am.fit(counts, predictions, types, model.scheme) if m > len(types) + 1 else None
    flat_labels = np.concatenate(list(unit_labels)) if m else np.zeros(0, object)
    flat_rel = np.concatenate(list(unit_rel)) if m else np.zeros(0)
    flat_a = np.array([a[col[t]] if t in col else a[col[am.OTHER]] if am.OTHER in col else np.nan
                       for t in flat_labels], dtype=np.float64)
    rows = []
    for k, t in enumerate(types):
        sel = flat_labels == t if t != am.OTHER else ~np.isin(flat_labels, [u for u in types if u != am.OTHER])
        v = flat_rel[sel]
        rows.append({
            "type": t, "n_units": int(sel.sum()), "n_molecules": int((counts[:, k] > 0).sum()),
            "additive": float(a[k]), "additive_se": float(model.standard_errors[k]),
            "implied": float(implied[k]), "implied_ci": [float(ci[0, k]), float(ci[1, k])],
            "network_additive": None if net_fit is None else float(net_fit.coefficients[k]),
            "unit_mean": float(v.mean()) if len(v) else None, "unit_std": float(v.std()) if len(v) else None,
            "unit_quantiles": {q: float(np.percentile(v, q)) for q in (10, 50, 90)} if len(v) else None,
            "r_molecules": _pearson(r_t[:, k], d[:, k]),
        })
    boot_r = np.asarray(boot_r, dtype=np.float64)
    attribution = model.attribution(counts, ref)
    total_rel, total_add = r_t.sum(1), attribution.sum(1)
    finite = np.isfinite(targets)
    add_pred = model.predict(counts)
    out = {
        "types": rows,
        "reference_counts": ref.tolist(),
        "r_types": _pearson(a[named], implied[named]),
        "r_types_ci": [float(np.nanpercentile(boot_r, lo_q)), float(np.nanpercentile(boot_r, hi_q))]
        if np.isfinite(boot_r).any() else [float("nan")] * 2,
        "spearman_types": _spearman(a[named], implied[named]),
        "slope_types": float(np.polyfit(a[named], implied[named], 1)[0]) if named.sum() >= 2 else float("nan"),
        "r_units": _pearson(flat_a, flat_rel),
        "r_totals": _pearson(total_add, total_rel),
        "mae_totals": float(np.abs(total_add - total_rel).mean()) if m else float("nan"),
        "additive_mae": float(np.abs(add_pred - targets)[finite].mean()) if finite.any() else None,
        "network_mae": float(np.abs(predictions - targets)[finite].mean()) if finite.any() else None,
        "n_molecules": m, "n_units": int(len(flat_rel)),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": level,
                      "method": "percentile, molecules resampled; the additive coefficients held fixed"},
    }
    if net_fit is not None:
        a_net = net_fit.coefficients
        out.update({"network_fit": {"intercept": net_fit.intercept, "mae": net_fit.mae, "r2": net_fit.r2},
                    "r_implied_vs_network_fit": _pearson(a_net[named], implied[named]),
                    "r_network_fit_vs_additive": _pearson(a_net[named], a[named])})
    return out


# -- the command -------------------------------------------------------------------------------

def _reference_of(summary: dict, rs_meta: dict) -> tuple[str, str | None]:
    ref = summary.get("reference") or {}
    kind = ref.get("kind", "mean")
    return kind, ref.get("file")


def run(explain_dir, out=None, schemes: Sequence[str] | None = None, resamples: int = 1000, seed: int = 0,
        min_molecules: int = 20, cache_root=None, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
        progress: bool = True) -> dict:
    from molgraph import MolecularGraphFeaturizer, iter_molecules
    from molgraph.storage import atomic_write_json, atomic_write_text

    from .explain.inputs import find_qm9, split_test_ids
    from .explain.store import load_relevance

    explain_dir = Path(explain_dir)
    summary_path = explain_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{explain_dir}: no summary.json (not a finished `qmlrp explain` directory)")
    summary = json.loads(summary_path.read_text())
    rs = load_relevance(explain_dir)
    target, unit = rs.meta.get("target"), rs.meta.get("unit")
    if rs.meta.get("output"):
        raise ValueError(f"{explain_dir}: the additive check is for scalar targets; this run explains a vector "
                         f"model's output selection {rs.meta['output']!r}")
    bad = [str(i) for i in rs.ids if not str(i).startswith("qm9:")]
    if bad:
        raise ValueError(f"{explain_dir}: the additive check compares with QM9 labels and types QM9 molecules by id; "
                         f"{len(bad)} explained molecule(s) are not QM9 ids (e.g. {bad[0]})")
    schemes = list(schemes or [DEFAULT_SCHEME.get(target, "atoms")])
    for s in schemes:
        if s not in am.SCHEMES:
            raise ValueError(f"unknown scheme {s!r}; valid: {', '.join(am.SCHEMES)}")
    model_dir = Path(rs.meta["model_dir"])
    train_ids, train_where = split_test_ids(model_dir, "train")
    ids = np.array([int(str(i)[4:]) for i in rs.ids], dtype=np.int64)
    ds = find_qm9(np.concatenate([train_ids, ids]), cache_root=cache_root, log=log, progress=progress)
    if target not in ds.manifest["scalar_targets"]:
        raise ValueError(f"{target}: not a QM9 scalar target of the featurized cache; the additive check needs QM9 labels")
    present = set(int(q) for q in ds.ids)
    train_ids = np.array([int(q) for q in train_ids if int(q) in present])
    train = ds.subset(train_ids)
    expl = ds.subset(ids)
    y_train = np.asarray(train.target(target), dtype=np.float64)
    kind, ref_file = _reference_of(summary, rs.meta)
    out = Path(out) if out else explain_dir / "additive"
    out.mkdir(parents=True, exist_ok=True)
    result = {"explain_dir": str(explain_dir), "model_dir": str(model_dir), "target": target, "unit": unit,
              "reference": kind, "reference_file": ref_file, "fit_molecules": f"{len(train_ids)} training molecules "
              f"({train_where})", "explained_molecules": len(rs), "schemes": {}}
    atom_labels_expl = am.dataset_units(expl, "atoms")
    for scheme in schemes:
        log(f"{scheme}: typing {len(train)} training molecules and fitting the additive model")
        train_units = am.dataset_units(train, scheme)
        types = am.vocabulary(train_units, min_molecules=min_molecules)
        model = am.fit(am.count_matrix(train_units, types), y_train, types, scheme)
        if kind == "mean":
            ref_counts = model.mean_counts
        elif kind == "empty":
            ref_counts = None
        else:
            if not ref_file or not Path(ref_file).is_file():
                raise FileNotFoundError(f"{explain_dir}: the run used a reference molecule whose file "
                                        f"({ref_file}) is not here; its counts are needed")
            g = MolecularGraphFeaturizer()(next(iter(iter_molecules(ref_file))))
            feats = g.atom_features.numpy()
            from molgraph.additive import bond_orders

            ref_units = am.units(scheme, feats, bond_orders(g.pair_features.numpy()))
            ref_counts = am.count_matrix([ref_units], types)[0]
        labels, rels, pooled_rels = [], [], []
        for x in range(len(rs)):
            mr = rs.molecule(x)
            if mr.elements and tuple(mr.elements) != tuple(am.elements_of(expl.encoded(x).atom_features)):
                raise ValueError(f"{explain_dir}: molecule {mr.id} has other atoms in relevance.npz than in the "
                                 f"featurized QM9 cache (another featurizer?); rerun qmlrp explain")
            bonds = None
            if scheme == "bonds":
                e = expl.encoded(x)
                bonds = am.bonds(am.elements_of(e.atom_features), e.bond)
            lab, rel = unit_relevance(scheme, mr.per_atom, atom_labels_expl[x], bonds)
            labels.append(lab)
            rels.append(rel)
            if mr.contribution is not None:
                pooled_rels.append(unit_relevance(scheme, mr.contribution, atom_labels_expl[x], bonds)[1])
        cmp = compare_additive(model, labels, rels, rs.prediction, rs.target, ref_counts, resamples, seed)
        if pooled_rels:  # the same comparison one level up: the atoms' shares at the pooling
            pc = compare_additive(model, labels, pooled_rels, rs.prediction, rs.target, ref_counts, resamples, seed)
            for row, prow in zip(cmp["types"], pc["types"]):
                row.update({"implied_pooling": prow["implied"], "implied_pooling_ci": prow["implied_ci"],
                            "unit_mean_pooling": prow["unit_mean"], "unit_std_pooling": prow["unit_std"],
                            "unit_quantiles_pooling": prow["unit_quantiles"]})
            cmp["pooling"] = {k: pc[k] for k in ("r_types", "r_types_ci", "spearman_types", "slope_types", "r_units",
                                                 "r_totals", "mae_totals") if k in pc}
            cmp["pooling"]["r_implied_vs_network_fit"] = pc.get("r_implied_vs_network_fit")
        cmp["additive_model"] = model.to_json()
        cmp["scheme_text"] = SCHEME_TEXT[scheme]
        result["schemes"][scheme] = cmp
        atomic_write_text(out / f"{scheme}.csv", _csv(cmp))
        result["schemes"][scheme]["figure"] = _plot(cmp, scheme, target, unit, kind, out / f"{scheme}.png")
        log(summary_line(cmp, scheme, unit, kind))
    atomic_write_json(out / "additive.json", result)
    atomic_write_text(out / "additive.md", markdown(result))
    return result


def summary_line(cmp: dict, scheme: str, unit: str, kind: str) -> str:
    lo, hi = cmp["r_types_ci"]
    text = (f"{scheme} (reference {kind}): r(additive, LRP-implied) over {sum(t['type'] != am.OTHER for t in cmp['types'])} "
            f"types = {cmp['r_types']:.3f} [{lo:.3f}, {hi:.3f}], per unit r = {cmp['r_units']:.3f}")
    if "pooling" in cmp:
        p = cmp["pooling"]
        text += (f"; at the pooling r = {p['r_types']:.3f} [{p['r_types_ci'][0]:.3f}, {p['r_types_ci'][1]:.3f}], "
                 f"per unit r = {p['r_units']:.3f}")
    return text + f"; additive MAE {_fmt(cmp['additive_mae'])} vs network {_fmt(cmp['network_mae'])} {unit}"


def _fmt(v, digits=4) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}g}"


def _csv(cmp: dict) -> str:
    head = ["type", "n_units", "n_molecules", "additive", "additive_se", "implied", "implied_lo", "implied_hi",
            "network_additive", "unit_mean", "unit_std", "unit_p10", "unit_p50", "unit_p90", "r_molecules",
            "implied_pooling", "implied_pooling_lo", "implied_pooling_hi", "unit_mean_pooling", "unit_std_pooling"]
    lines = [",".join(head)]
    for t in cmp["types"]:
        q = t["unit_quantiles"] or {}
        vals = [t["type"], t["n_units"], t["n_molecules"], t["additive"], t["additive_se"], t["implied"],
                *t["implied_ci"], t["network_additive"], t["unit_mean"], t["unit_std"], q.get(10), q.get(50), q.get(90),
                t["r_molecules"], t.get("implied_pooling"), *(t.get("implied_pooling_ci") or [None, None]),
                t.get("unit_mean_pooling"), t.get("unit_std_pooling")]
        lines.append(",".join("" if v is None else (v if isinstance(v, str) else repr(float(v))) for v in vals))
    return "\n".join(lines) + "\n"


def markdown(result: dict) -> str:
    unit = result["unit"]
    parts = [f"# Additive check: {result['target']} ({unit}), reference {result['reference']}\n",
             f"Explain run `{result['explain_dir']}` ({result['explained_molecules']} molecules), model "
             f"`{result['model_dir']}`; additive models fitted on {result['fit_molecules']}.\n"]
    for scheme, c in result["schemes"].items():
        am_json = c["additive_model"]
        lo, hi = c["r_types_ci"]
        parts.append(f"\n## {scheme}: {c['scheme_text']}\n\n"
                     f"Additive fit: intercept {am_json['intercept']:.4g} {unit}, training MAE {am_json['mae']:.4g}, "
                     f"R^2 {am_json['r2']:.4f}; on the explained molecules MAE {_fmt(c['additive_mae'])} "
                     f"(network {_fmt(c['network_mae'])}).\n\n"
                     f"Correlation over types of the additive contribution a_t with the LRP-implied one: "
                     f"r = {c['r_types']:.3f} (95 % CI {lo:.3f} to {hi:.3f}), Spearman {c['spearman_types']:.3f}, "
                     f"slope {c['slope_types']:.3f}; per unit r = {c['r_units']:.3f} over {c['n_units']} units; "
                     f"molecule totals r = {c['r_totals']:.3f} (mean |difference| {c['mae_totals']:.4g} {unit}).")
        if "network_fit" in c:
            parts.append(f" The additive model fitted to the network's own predictions (MAE "
                         f"{c['network_fit']['mae']:.4g}): r with the LRP-implied contributions "
                         f"{c['r_implied_vs_network_fit']:.3f}, with the QM9 fit {c['r_network_fit_vs_additive']:.3f}.")
        pool = "pooling" in c
        if pool:
            p = c["pooling"]
            parts.append(f" At the pooling (each atom's share of the summed histograms the head reads, before the "
                         f"rules below it): r = {p['r_types']:.3f} (95 % CI {p['r_types_ci'][0]:.3f} to "
                         f"{p['r_types_ci'][1]:.3f}), slope {p['slope_types']:.3f}, per unit r = {p['r_units']:.3f}.")
        parts.append("\n\n| type | units | additive a_t | LRP-implied, features (95 % CI) | per-unit mean (std) |"
                     + (" at the pooling (95 % CI) | per-unit mean (std) |" if pool else "")
                     + " fit to network |\n|---|---:|---:|---:|---:|" + ("---:|---:|" if pool else "") + "---:|\n")
        for t in c["types"]:
            parts.append(f"| {t['type']} | {t['n_units']} | {t['additive']:.4g} | {t['implied']:.4g} "
                         f"({t['implied_ci'][0]:.4g} to {t['implied_ci'][1]:.4g}) | "
                         f"{_fmt(t['unit_mean'])} ({_fmt(t['unit_std'])}) |")
            if pool:
                lo_p, hi_p = t["implied_pooling_ci"]
                parts.append(f" {t['implied_pooling']:.4g} ({lo_p:.4g} to {hi_p:.4g}) | "
                             f"{_fmt(t['unit_mean_pooling'])} ({_fmt(t['unit_std_pooling'])}) |")
            parts.append(f" {_fmt(t['network_additive'])} |\n")
    return "".join(parts)


def _plot(cmp: dict, scheme: str, target: str, unit: str, kind: str, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [t for t in cmp["types"] if t["type"] != am.OTHER and np.isfinite(t["additive"]) and t["n_units"] > 0]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1, 1.6]})
    a = np.array([t["additive"] for t in rows])
    b = np.array([t["implied"] for t in rows])
    err = np.array([[t["implied"] - t["implied_ci"][0], t["implied_ci"][1] - t["implied"]] for t in rows]).T
    ax.errorbar(a, b, yerr=np.abs(err), fmt="o", ms=4, capsize=2, label="from the input features")
    if rows and rows[0].get("implied_pooling") is not None:
        bp = np.array([t["implied_pooling"] for t in rows])
        ep = np.array([[t["implied_pooling"] - t["implied_pooling_ci"][0], t["implied_pooling_ci"][1] - t["implied_pooling"]]
                       for t in rows]).T
        ax.errorbar(a, bp, yerr=np.abs(ep), fmt="s", ms=4, capsize=2, color="C1", label="at the pooling")
        b = np.concatenate([b, bp])
    for t, x, y in zip(rows, a, b):
        ax.annotate(t["type"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    lim = [min(a.min(), np.nanmin(b)), max(a.max(), np.nanmax(b))] if len(a) else [0, 1]
    ax.plot(lim, lim, "k--", lw=0.8, label="y = x")
    ax.set_xlabel(f"additive contribution a_t ({unit} per unit)")
    ax.set_ylabel(f"LRP-implied contribution ({unit} per unit)")
    ax.set_title(f"{target}, {scheme}, reference {kind}: r = {cmp['r_types']:.2f}", fontsize=9)
    ax.legend(fontsize=7)
    q = [t["unit_quantiles"] for t in rows]
    x = np.arange(len(rows))
    bx.vlines(x, [v[10] for v in q], [v[90] for v in q], color="C0", lw=3, alpha=0.5, label="relevance per unit, 10-90 %")
    bx.plot(x, [v[50] for v in q], "o", color="C0", ms=4, label="median")
    bx.plot(x, a, "k_", ms=12, mew=2, label="additive a_t")
    bx.set_xticks(x, [t["type"] for t in rows], rotation=60, fontsize=7)
    bx.set_ylabel(f"{unit} per unit")
    bx.axhline(0, color="grey", lw=0.5)
    bx.set_title("relevance of single units (comparable with a_t against the empty molecule)", fontsize=9)
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def add_parser(sub) -> None:
    p = sub.add_parser("additive", help="chemical check: the relevance of a finished explain run against an "
                                        "atom- or bond-additive model fitted to QM9")
    p.add_argument("explain_dir", help="a `qmlrp explain` output directory (QM9 molecules of a QM9-trained model)")
    p.add_argument("--scheme", action="append", choices=am.SCHEMES,
                   help="atoms (atom hybrid types) or bonds (bond types); repeat for both "
                        "(default: atoms for alpha, bonds for ZPVE)")
    p.add_argument("--out", help="output folder (default EXPLAIN_DIR/additive)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--min-molecules", type=int, default=20,
                   help="a type seen in fewer training molecules is pooled into 'other' (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="where caches live (default $QMLRP_CACHE or ~/.cache/qmlrp)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    try:
        run(args.explain_dir, args.out, args.scheme, args.bootstrap, args.seed, args.min_molecules,
                     args.cache_dir, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"qmlrp additive: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.explain_dir) / "additive"
    print(f"-> {out / 'additive.md'}, {out / 'additive.json'}")
    return 0
