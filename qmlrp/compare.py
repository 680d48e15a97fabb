"""`qmlrp compare`: the verdict on the proposal's hypothesis from two `qmlrp explain` runs.

The proposal (aim 2) expects a strongly geometry-dependent property (the ZPVE) to lean on
geometric input features and a density-dependent one (the polarizability alpha) on electronic
ones. This module reads two explain directories (`groups.csv` + `summary.json`), pairs their
molecules by QM9 id and answers, claim by claim, with statistics:

* per molecule, the share of each of the 12 groups in the molecule's total absolute group
  relevance, s_g = |R_g| / sum_h |R_h| (R_g: the relevance summed over the group's features,
  all atoms or all atom pairs). Shares have no unit, so an alpha model (bohr^3) and a ZPVE
  model (eV) can be compared molecule by molecule;
* per model, the mean share over the common molecules with a percentile bootstrap 95 % CI;
* per group, the Wilcoxon signed-rank test of the paired differences s_g(A) - s_g(B), Holm
  correction over the 12 groups, the median difference with its distribution-free 95 % CI
  (order statistics) and the matched-pairs rank-biserial correlation as effect size;
* the same for the aggregated geometric / electronic shares (sets below), and within each model
  geometric vs electronic;
* a plain-language verdict, claim by claim, whatever the data say.

Group sets, as the proposal and issue 6 state them. Geometric: bond type, graph distance,
spatial distance (the proposal's "bond lengths"), and same ring (a pair feature describing the
topology; issue 6's brief puts it with the geometric ones). Electronic: partial charge (the
proposal's "partial atomic charges"), atom type, hybridization, aromaticity. Chirality, formal
charge, ring sizes and hydrogen bonding belong to neither; their share is reported as
"neither".
"""
from __future__ import annotations

import csv
import html
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from molgraph import GROUP_NAMES

from .explain.statistics import bootstrap_means, holm, median_ci, rank_biserial, wilcoxon_test  # noqa: F401

GEOMETRIC = ("bond_type", "graph_distance", "same_ring", "spatial_distance")
ELECTRONIC = ("atom_type", "partial_charge", "hybridization", "aromaticity")
NEITHER = ("chirality", "formal_charge", "ring_sizes", "hydrogen_bonding")
GROUP_SETS = {"geometric": GEOMETRIC, "electronic": ELECTRONIC, "neither": NEITHER}
assert sorted(GEOMETRIC + ELECTRONIC + NEITHER) == sorted(GROUP_NAMES)

META_COLUMNS = ("id", "n_atoms", "prediction", "target", "explained", "absorbed")
SIGNIFICANCE = 0.05
MIN_EFFECT = 0.01  # a significant mean difference below 1 share point is called negligible
ROUND_OFF = 1e-9  # paired share differences smaller than this are round-off (CSV text, float sums): zero


def group_set_of(group: str) -> str:
    for name, members in GROUP_SETS.items():
        if group in members:
            return name
    raise KeyError(group)


# ----------------------------------------------------------------------------- reading
@dataclass
class ExplainRun:
    """One `qmlrp explain` output directory.

    ids: (n,) molecule ids as strings ('qm9:123'); relevance: (n, 12) group relevance in the target's units, columns in
    `GROUP_NAMES` order; meta: the other groups.csv columns, (n,) each; summary: summary.json
    (empty if absent); skipped: rows left out, each with the reason.
    """

    path: Path
    ids: np.ndarray
    relevance: np.ndarray
    meta: dict
    summary: dict
    skipped: list = field(default_factory=list)

    @property
    def target(self) -> str | None:
        return self.summary.get("target")

    @property
    def unit(self) -> str | None:
        return self.summary.get("unit")

    @property
    def rule(self):
        return self.summary.get("rule")

    @property
    def label(self) -> str:
        return self.target or self.path.as_posix()


def read_explain_dir(path) -> ExplainRun:
    """Read `groups.csv` (and `summary.json` when present) of an explain directory. A bad row
    (unparsable or non-finite number, repeated id) is skipped and listed in `skipped`; a wrong
    header is an error that names the file and the columns."""
    path = Path(path)
    csv_path = path / "groups.csv"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such directory (expected the output of `qmlrp explain`)")
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no such file; {path} is not a `qmlrp explain` output directory")
    expected = list(META_COLUMNS) + list(GROUP_NAMES)
    ids, rel, meta_rows, skipped, seen = [], [], [], [], set()
    with open(csv_path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{csv_path}: empty file (no header)")
        header = [h.strip() for h in header]
        if header != expected:
            missing = [c for c in expected if c not in header]
            extra = [c for c in header if c not in expected]
            detail = []
            if missing:
                detail.append(f"missing {', '.join(missing)}")
            if extra:
                detail.append(f"unexpected {', '.join(extra)}")
            if not detail:
                detail.append("columns in another order")
            raise ValueError(f"{csv_path}: header must be {','.join(expected)}; {'; '.join(detail)}")
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{csv_path}, line {line}"
            if len(row) != len(expected):
                skipped.append(f"{where}: {len(row)} fields, expected {len(expected)}")
                continue
            qid = normalize_id(row[0])
            if not qid:
                skipped.append(f"{where}: empty id")
                continue
            where = f"{csv_path}, line {line} (id {qid})"
            try:  # an empty meta field (a molecule without a label has no target) reads as NaN
                values = [float(v) if v.strip() or k >= len(META_COLUMNS) - 1 else float("nan")
                          for k, v in enumerate(row[1:])]
            except ValueError as exc:
                skipped.append(f"{where}: {exc}")
                continue
            groups = np.array(values[len(META_COLUMNS) - 1:])
            if not np.isfinite(groups).all():
                bad = [g for g, v in zip(GROUP_NAMES, groups) if not np.isfinite(v)]
                skipped.append(f"{where}: non-finite relevance in {', '.join(bad)}")
                continue
            if qid in seen:
                skipped.append(f"{where}: id {qid} repeated; the first row is kept")
                continue
            seen.add(qid)
            ids.append(qid)
            rel.append(groups)
            meta_rows.append(values[: len(META_COLUMNS) - 1])
    summary = {}
    sj = path / "summary.json"
    if sj.is_file():
        try:
            summary = json.loads(sj.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{sj}: not valid JSON ({exc})") from None
    m = np.array(meta_rows, dtype=float).reshape(-1, len(META_COLUMNS) - 1)
    meta = {c: m[:, k] for k, c in enumerate(META_COLUMNS[1:])}
    return ExplainRun(path, np.array(ids, dtype=str), np.array(rel, dtype=float).reshape(-1, len(GROUP_NAMES)),
                      meta, summary, skipped)


def normalize_id(text: str) -> str:
    """A molecule id of groups.csv: 'qm9:123' as written by `qmlrp explain`; a bare integer is
    read as a QM9 id ('123' -> 'qm9:123'); anything else (a file's molecule) is kept as it is."""
    t = text.strip()
    return f"qm9:{int(t)}" if t.isdigit() else t


# ----------------------------------------------------------------------------- statistics
def molecule_shares(relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 12) group relevance -> ((n, 12) shares |R_g| / sum_h |R_h|, (n,) bool: molecule has
    any relevance). Rows without relevance get shares of zero and False."""
    a = np.abs(np.asarray(relevance, dtype=float))
    tot = a.sum(1)
    ok = tot > 0
    s = np.zeros_like(a)
    s[ok] = a[ok] / tot[ok, None]
    return s, ok


def set_shares(shares: np.ndarray) -> dict[str, np.ndarray]:
    """(n, 12) shares -> {set name: (n,) summed share of its groups}."""
    idx = {g: k for k, g in enumerate(GROUP_NAMES)}
    return {name: shares[:, [idx[g] for g in members]].sum(1) for name, members in GROUP_SETS.items()}


def profile_similarity(sa: np.ndarray, sb: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """How alike two models' 12-group profiles are, over paired molecules (rows of sa, sb: per
    molecule shares): the Spearman rank correlation of the two mean-share profiles and their
    total-variation distance, half the L1 distance (0: the same profile, 1: disjoint groups), each
    with a basic bootstrap 95 % CI over molecules (the same resamples for both)."""
    from scipy.stats import spearmanr

    def stats(ma, mb):
        return float(spearmanr(ma, mb).statistic), float(0.5 * np.abs(ma - mb).sum())

    rho, tv = stats(sa.mean(0), sb.mean(0))
    rng = np.random.default_rng(seed)
    boot = np.array([stats(sa[i].mean(0), sb[i].mean(0)) for i in (rng.integers(0, len(sa), len(sa)) for _ in range(n_boot))])
    q_lo, q_hi = np.quantile(boot, 0.025, axis=0), np.quantile(boot, 0.975, axis=0)
    est = np.array([rho, tv])
    # basic (reverse-percentile) interval 2 est - q: a distance's bootstrap distribution sits above the
    # estimate when the profiles are close (|.| of a noisy difference), and a percentile interval would miss it
    lo, hi = np.clip(2 * est - q_hi, [-1, 0], [1, 1]), np.clip(2 * est - q_lo, [-1, 0], [1, 1])
    return {"spearman": rho, "spearman_lo": float(lo[0]), "spearman_hi": float(hi[0]),
            "total_variation": tv, "total_variation_lo": float(lo[1]), "total_variation_hi": float(hi[1]),
            "definition": "between the two 12-group mean-share profiles: Spearman rank correlation; total-variation "
                          "distance 0.5 sum_g |share_a - share_b| (0 same, 1 disjoint); basic bootstrap 95 % CI over "
                          "molecules"}


def format_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "p = n/a"
    if p < 1e-300:
        return "p < 1e-300"
    if p < 1e-3:
        return f"p = {p:.1e}"
    return f"p = {p:.3f}"


def _p_short(p: float) -> str:
    t = format_p(p)
    return t[4:] if t.startswith("p = ") else t[2:]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


# ----------------------------------------------------------------------------- roles
def _role(run: ExplainRun) -> str | None:
    """'alpha' or 'zpve' from summary.json's target; without one, from the directory's name or
    its parent's (runs/alpha/explain)."""
    here = run.path.resolve()
    names = [run.target] if run.target else [here.name, here.parent.name]
    for name in names:
        n = name.lower()
        if n.startswith("zpve") or n.endswith("zpve") or "_zpve" in n or "zpve_" in n:
            return "zpve"
        if n.startswith("alpha") or n.endswith("alpha") or "_alpha" in n or "alpha_" in n:
            return "alpha"
    return None


# ----------------------------------------------------------------------------- comparison
def _paired(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = x - y
    d[np.abs(d) < ROUND_OFF] = 0.0
    return d


def compare(dir_a, dir_b, n_boot: int = 2000, seed: int = 0, warn=None) -> dict:
    """Compare two explain directories; returns everything `compare.json` holds (see module
    docstring). Raises ValueError naming both directories when they share no molecule."""
    warn = warn or (lambda m: print(f"qmlrp compare: warning: {m}", file=sys.stderr))
    a, b = read_explain_dir(dir_a), read_explain_dir(dir_b)
    warnings = []

    def note(msg):
        warnings.append(msg)
        warn(msg)

    for run in (a, b):
        for s in run.skipped:
            note(f"skipped {s}")
        if not run.summary:
            note(f"{run.path}: no summary.json; target, unit and rule unknown")
    if a.rule is not None and b.rule is not None and json.dumps(a.rule, sort_keys=True) != json.dumps(b.rule, sort_keys=True):
        note(f"the runs used different LRP rules ({a.path}: {a.rule}; {b.path}: {b.rule}); "
             "group shares depend on the rule, so part of any difference may be the rule's")
    common, ia, ib = np.intersect1d(a.ids, b.ids, return_indices=True)
    only_a, only_b = np.setdiff1d(a.ids, b.ids), np.setdiff1d(b.ids, a.ids)
    if len(common) == 0:
        raise ValueError(f"no molecule is in both {a.path / 'groups.csv'} ({len(a.ids)} molecules) and "
                         f"{b.path / 'groups.csv'} ({len(b.ids)} molecules); explain the same molecules with both "
                         "models (e.g. the same --split test of the same split file)")
    if len(only_a) or len(only_b):
        note(f"{len(only_a)} molecule(s) only in {a.path}, {len(only_b)} only in {b.path}; "
             f"compared on the {len(common)} in both")
    sa, oka = molecule_shares(a.relevance[ia])
    sb, okb = molecule_shares(b.relevance[ib])
    ok = oka & okb
    zero = common[~ok]
    if len(zero):
        note(f"{len(zero)} common molecule(s) have no group relevance in one run and are left out "
             f"(first ids: {', '.join(str(i) for i in zero[:10])})")
    if not ok.any():
        raise ValueError(f"none of the {len(common)} molecules common to {a.path} and {b.path} has any group relevance in both")
    ids, sa, sb = common[ok], sa[ok], sb[ok]
    n = len(ids)
    seta, setb = set_shares(sa), set_shares(sb)
    # one column matrix for a single paired bootstrap: shares a (12 + 3), b (12 + 3), within-model geo - elec
    names = list(GROUP_NAMES) + list(GROUP_SETS)
    xa = np.column_stack([sa] + [seta[k] for k in GROUP_SETS])
    xb = np.column_stack([sb] + [setb[k] for k in GROUP_SETS])
    within_a = _paired(seta["geometric"], seta["electronic"])
    within_b = _paired(setb["geometric"], setb["electronic"])
    cols = np.column_stack([xa, xb, xa - xb, within_a, within_b])
    lo, hi = bootstrap_means(cols, n_boot=n_boot, seed=seed)
    k = len(names)

    def block(j):
        return lo[j * k:(j + 1) * k], hi[j * k:(j + 1) * k]

    (la, ha), (lb, hb), (ld, hd) = block(0), block(1), block(2)
    pooled_a = np.abs(a.relevance[ia][ok]).sum(0) / np.abs(a.relevance[ia][ok]).sum()
    pooled_b = np.abs(b.relevance[ib][ok]).sum(0) / np.abs(b.relevance[ib][ok]).sum()
    rows = []
    for j, name in enumerate(names):
        d = _paired(xa[:, j], xb[:, j])
        t = wilcoxon_test(d)
        mlo, mhi = median_ci(d)
        row = {
            "group": name, "set": name if name in GROUP_SETS else group_set_of(name),
            "kind": "set" if name in GROUP_SETS else "group",
            "share_a": float(xa[:, j].mean()), "share_a_lo": float(la[j]), "share_a_hi": float(ha[j]),
            "share_b": float(xb[:, j].mean()), "share_b_lo": float(lb[j]), "share_b_hi": float(hb[j]),
            "mean_diff": float(d.mean()), "mean_diff_lo": float(ld[j]), "mean_diff_hi": float(hd[j]),
            "median_diff": float(np.median(d)), "median_diff_lo": mlo, "median_diff_hi": mhi,
            "rank_biserial": rank_biserial(d), "wilcoxon_w": t["statistic"], "z": t["z"], "p": t["p"],
            "n_pairs": n, "n_nonzero": t["n_nonzero"],
        }
        if j < len(GROUP_NAMES):
            row["pooled_share_a"] = float(pooled_a[j])
            row["pooled_share_b"] = float(pooled_b[j])
            row["mean_relevance_a"] = float(a.relevance[ia][ok][:, j].mean())
            row["mean_relevance_b"] = float(b.relevance[ib][ok][:, j].mean())
        rows.append(row)
    # Holm within each family: the 12 groups; the 3 sets
    for family in ("group", "set"):
        fam = [r for r in rows if r["kind"] == family]
        for r, p in zip(fam, holm([r["p"] for r in fam])):
            r["p_holm"] = float(p)
            r["significant"] = bool(p < SIGNIFICANCE)
    within = {}
    wl, wh = lo[3 * k:], hi[3 * k:]
    for j, (key, run, d) in enumerate((("a", a, within_a), ("b", b, within_b))):
        t = wilcoxon_test(d)
        mlo, mhi = median_ci(d)
        within[key] = {"model": run.label, "mean_diff": float(d.mean()), "mean_diff_lo": float(wl[j]),
                       "mean_diff_hi": float(wh[j]), "median_diff": float(np.median(d)), "median_diff_lo": mlo,
                       "median_diff_hi": mhi, "rank_biserial": rank_biserial(d), "wilcoxon_w": t["statistic"],
                       "z": t["z"], "p": t["p"], "n_nonzero": t["n_nonzero"]}
    for r, p in zip(within.values(), holm([w["p"] for w in within.values()])):
        r["p_holm"] = float(p)
        r["significant"] = bool(p < SIGNIFICANCE)

    def run_info(run, only):
        return {"dir": str(run.path), "target": run.target, "unit": run.unit, "rule": run.rule,
                "model": run.summary.get("model_dir", run.summary.get("model")), "n_molecules": int(len(run.ids)),
                "n_only_here": int(len(only)),
                "n_rows_skipped": len(run.skipped), "role": _role(run)}

    result = {
        "a": run_info(a, only_a), "b": run_info(b, only_b),
        "n_common": int(len(common)), "n_compared": int(n), "n_without_relevance": int(len(zero)),
        "group_sets": {k: list(v) for k, v in GROUP_SETS.items()},
        "share_definition": "per molecule |R_g| / sum_h |R_h| over the 12 groups; mean over the compared molecules",
        "ci": f"percentile bootstrap over molecules, {n_boot} resamples, seed {seed}, 95 %",
        "median_ci": "distribution-free 95 % CI of the median from order statistics",
        "test": "two-sided Wilcoxon signed-rank on paired per-molecule differences (a - b), zeros dropped; "
                f"Holm correction within the 12 groups and within the 3 sets; significant at {SIGNIFICANCE}",
        "groups": rows, "within_model_geometric_minus_electronic": within,
        "profile": profile_similarity(sa, sb, n_boot=min(n_boot, 1000), seed=seed),
        "warnings": warnings,
    }
    result["claims"] = claims(result)
    return result


# ----------------------------------------------------------------------------- verdict
def _between_claim(text, row, favoured_is_a, label_a, label_b) -> dict:
    sign = 1 if favoured_is_a else -1
    eff = sign * row["mean_diff"]
    rb = sign * row["rank_biserial"]
    sa, sb = (row["share_a"], row["share_b"]) if favoured_is_a else (row["share_b"], row["share_a"])
    la, lb = (label_a, label_b) if favoured_is_a else (label_b, label_a)
    lo, hi = sorted((sign * row["mean_diff_lo"], sign * row["mean_diff_hi"]))
    if row["significant"] and rb > 0:
        verdict = "holds" if eff >= MIN_EFFECT else "holds, but the difference is negligible"
    elif row["significant"]:
        verdict = "does not hold: the opposite is significant"
    else:
        verdict = "does not hold: no significant difference"
    detail = (f"{_pct(sa)} ({la}) vs {_pct(sb)} ({lb}) of |relevance|; difference {_pts(eff)} points "
              f"[{_pts(lo)}, {_pts(hi)}], rank-biserial {rb:+.2f}, Wilcoxon {format_p(row['p_holm'])} (Holm), "
              f"n = {row['n_pairs']:,}")
    return {"claim": text, "verdict": verdict, "holds": verdict.startswith("holds"), "detail": detail}


def _within_claim(text, w, geometric_first: bool) -> dict:
    sign = 1 if geometric_first else -1
    eff, rb = sign * w["mean_diff"], sign * w["rank_biserial"]
    lo, hi = sorted((sign * w["mean_diff_lo"], sign * w["mean_diff_hi"]))
    if w["significant"] and rb > 0:
        verdict = "holds" if eff >= MIN_EFFECT else "holds, but the difference is negligible"
    elif w["significant"]:
        verdict = "does not hold: the opposite is significant"
    else:
        verdict = "does not hold: no significant difference"
    detail = (f"mean per-molecule difference {_pts(eff)} points [{_pts(lo)}, {_pts(hi)}], rank-biserial {rb:+.2f}, "
              f"Wilcoxon {format_p(w['p_holm'])} (Holm over the two models)")
    return {"claim": text, "verdict": verdict, "holds": verdict.startswith("holds"), "detail": detail}


def _majority_claim(text, set_name, share, lo, hi) -> dict:
    if lo > 0.5:
        verdict = "holds"
    elif hi < 0.5:
        verdict = "does not hold"
    else:
        verdict = "undecided: the 95 % CI contains 50 %"
    return {"claim": text, "verdict": verdict, "holds": verdict == "holds",
            "detail": f"{_pct(share)} [{_pct(lo)}, {_pct(hi)}] of |relevance| on the {set_name} groups"}


def claims(result: dict) -> list[dict]:
    """The hypothesis, part by part, as claims with a verdict word ('holds' / 'does not hold ...'
    / 'undecided ...') and the numbers behind it. Needs one alpha and one ZPVE run; otherwise
    one entry saying why no claim is evaluated."""
    roles = {result["a"]["role"]: "a", result["b"]["role"]: "b"}
    if set(roles) != {"alpha", "zpve"}:
        return [{"claim": "the proposal's hypothesis (ZPVE geometric, alpha electronic)", "verdict": "not evaluated",
                 "holds": None, "detail": f"needs one alpha and one ZPVE run; got targets {result['a']['target']!r} "
                                          f"and {result['b']['target']!r}"}]
    z_is_a = roles["zpve"] == "a"
    rows = {r["group"]: r for r in result["groups"]}
    la, lb = ("ZPVE", "alpha") if z_is_a else ("alpha", "ZPVE")
    out = [
        _between_claim("ZPVE relies more on the geometric groups than alpha does", rows["geometric"], z_is_a, la, lb),
        _between_claim("alpha relies more on the electronic groups than ZPVE does", rows["electronic"], not z_is_a, la, lb),
    ]
    w = result["within_model_geometric_minus_electronic"]
    out.append(_within_claim("ZPVE relies more on its geometric than on its electronic groups", w[roles["zpve"]], True))
    out.append(_within_claim("alpha relies more on its electronic than on its geometric groups", w[roles["alpha"]], False))
    z, al = roles["zpve"], roles["alpha"]
    g, e = rows["geometric"], rows["electronic"]
    out.append(_majority_claim("ZPVE relies mostly (> 50 %) on the geometric groups", "geometric",
                               g[f"share_{z}"], g[f"share_{z}_lo"], g[f"share_{z}_hi"]))
    out.append(_majority_claim("alpha relies mostly (> 50 %) on the electronic groups", "electronic",
                               e[f"share_{al}"], e[f"share_{al}_lo"], e[f"share_{al}_hi"]))
    out.append(_between_claim("ZPVE relies more on spatial distance (the proposal's bond lengths) than alpha does",
                              rows["spatial_distance"], z_is_a, la, lb))
    out.append(_between_claim("ZPVE relies more on bond type than alpha does", rows["bond_type"], z_is_a, la, lb))
    out.append(_between_claim("alpha relies more on partial charge than ZPVE does", rows["partial_charge"], not z_is_a, la, lb))
    return out


def verdict_text(result: dict) -> str:
    lines = [f"{c['claim']}: {c['verdict']} ({c['detail']})" for c in result["claims"]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- outputs
CSV_FIELDS = ("group", "set", "kind", "model_a", "model_b", "share_a", "share_a_lo", "share_a_hi", "share_b", "share_b_lo",
              "share_b_hi", "pooled_share_a", "pooled_share_b", "mean_relevance_a", "mean_relevance_b", "mean_diff",
              "mean_diff_lo", "mean_diff_hi", "median_diff", "median_diff_lo", "median_diff_hi", "rank_biserial",
              "wilcoxon_w", "z", "p", "p_holm", "significant", "n_pairs", "n_nonzero")


def _csv_text(result: dict) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in result["groups"]:
        w.writerow({**{k: "" for k in CSV_FIELDS}, **r, "model_a": _label(result["a"]), "model_b": _label(result["b"])})
    return buf.getvalue()


def _label(info: dict) -> str:
    return info["target"] or info["dir"]


def plot(result: dict, out: Path) -> list[str]:
    """Grouped bars (model a, model b) of the mean share per group and per set, 95 % CI error
    bars, * over Holm-significant differences. Writes compare.png and compare.svg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    set_colour = {"geometric": "tab:orange", "electronic": "tab:blue", "neither": "dimgray"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [4, 1.3]})
    for ax, kind in zip(axes, ("group", "set")):
        rows = [r for r in result["groups"] if r["kind"] == kind]
        x = np.arange(len(rows))
        for off, key, colour in ((-0.2, "a", "tab:red"), (0.2, "b", "tab:green")):
            v = np.array([r[f"share_{key}"] for r in rows])
            err = np.array([[r[f"share_{key}"] - r[f"share_{key}_lo"] for r in rows],
                            [r[f"share_{key}_hi"] - r[f"share_{key}"] for r in rows]])
            ax.bar(x + off, v, width=0.4, yerr=np.clip(err, 0, None), capsize=2, color=colour,
                   label=_label(result[key]) if kind == "group" else None)
        top = max(max(r["share_a_hi"], r["share_b_hi"]) for r in rows)
        for xi, r in zip(x, rows):
            if r["significant"]:
                ax.text(xi, max(r["share_a_hi"], r["share_b_hi"]) + 0.01 * max(top, 0.1), "*", ha="center")
        ax.set_xticks(x, [r["group"] for r in rows], rotation=45, ha="right")
        for t, r in zip(ax.get_xticklabels(), rows):
            t.set_color(set_colour[r["set"]])
        ax.set_ylim(0, top * 1.12 + 1e-9)
    axes[0].set_ylabel("mean per-molecule share of |group relevance|")
    axes[0].set_title("per group (labels: orange geometric, blue electronic, grey neither)", fontsize=9)
    axes[1].set_title("per set", fontsize=9)
    axes[0].legend(loc="upper right")
    fig.suptitle(f"{_label(result['a'])} vs {_label(result['b'])}: {result['n_compared']:,} molecules; "
                 "95 % bootstrap CI; * Holm-adjusted Wilcoxon p < 0.05", fontsize=10)
    fig.tight_layout()
    names = ["compare.png", "compare.svg"]
    fig.savefig(out / names[0], dpi=130)
    fig.savefig(out / names[1])
    plt.close(fig)
    return names


def _table_md(result: dict) -> str:
    la, lb = _label(result["a"]), _label(result["b"])
    head = (f"| group | set | {la} share [95% CI] | {lb} share [95% CI] | mean diff (a-b), points [CI] | "
            "median diff [CI] | rank-biserial | Wilcoxon p (Holm) |\n|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in result["groups"]:
        name = f"**{r['group']}**" if r["kind"] == "set" else r["group"]
        lines.append(
            f"| {name} | {r['set']} | {_pct(r['share_a'])} [{_pct(r['share_a_lo'])}, {_pct(r['share_a_hi'])}] | "
            f"{_pct(r['share_b'])} [{_pct(r['share_b_lo'])}, {_pct(r['share_b_hi'])}] | {_pts(r['mean_diff'])} "
            f"[{_pts(r['mean_diff_lo'])}, {_pts(r['mean_diff_hi'])}] | {_pts(r['median_diff'])} "
            f"[{_pts(r['median_diff_lo'])}, {_pts(r['median_diff_hi'])}] | {r['rank_biserial']:+.2f} | "
            f"{_p_short(r['p_holm'])}{' *' if r['significant'] else ''} |")
    return head + "\n".join(lines) + "\n"


def verdict_markdown(result: dict, command: str | None = None) -> str:
    a, b = result["a"], result["b"]
    parts = ["# Verdict: which feature groups the models rely on\n\n"]
    if command:
        parts.append(f"Command: `{command}`\n\n")
    parts.append(
        f"- a: `{a['dir']}` (target {a['target']}, unit {a['unit']}, rule {a['rule']}; {a['n_molecules']:,} molecules, "
        f"{a['n_only_here']:,} only here)\n"
        f"- b: `{b['dir']}` (target {b['target']}, unit {b['unit']}, rule {b['rule']}; {b['n_molecules']:,} molecules, "
        f"{b['n_only_here']:,} only here)\n"
        f"- compared: {result['n_compared']:,} molecules in both ({result['n_without_relevance']} left out for lack of "
        "relevance)\n")
    parts.append("\n## Verdict\n\n")
    parts.extend(f"- {c['claim']}: **{c['verdict']}** ({c['detail']})\n" for c in result["claims"])
    parts.append("\n## Shares side by side\n\n")
    parts.append(_table_md(result))
    parts.append(f"\nShares: {result['share_definition']}. CIs: {result['ci']}; median: {result['median_ci']}. "
                 f"Tests: {result['test']}. Points = percentage points of share.\n")
    w = result["within_model_geometric_minus_electronic"]
    parts.append("\n## Within each model: geometric minus electronic share\n\n| model | mean [95% CI] | median [CI] | "
                 "rank-biserial | Wilcoxon p (Holm) |\n|---|---|---|---|---|\n")
    for v in w.values():
        parts.append(f"| {v['model']} | {_pts(v['mean_diff'])} [{_pts(v['mean_diff_lo'])}, {_pts(v['mean_diff_hi'])}] | "
                     f"{_pts(v['median_diff'])} [{_pts(v['median_diff_lo'])}, {_pts(v['median_diff_hi'])}] | "
                     f"{v['rank_biserial']:+.2f} | {format_p(v['p_holm'])} |\n")
    pr = result.get("profile")
    if pr:
        parts.append(f"\n## How alike the two profiles are\n\nOver the 12 groups' mean shares: Spearman rank correlation "
                     f"{pr['spearman']:.2f} [{pr['spearman_lo']:.2f}, {pr['spearman_hi']:.2f}]; total-variation distance "
                     f"{pr['total_variation']:.3f} [{pr['total_variation_lo']:.3f}, {pr['total_variation_hi']:.3f}] "
                     f"(0: the same profile, 1: disjoint groups; basic bootstrap 95 % CIs over molecules).\n")
    sets = result["group_sets"]
    parts.append(f"\nGroup sets: geometric = {', '.join(sets['geometric'])}; electronic = {', '.join(sets['electronic'])}; "
                 f"neither = {', '.join(sets['neither'])}.\n")
    if result["warnings"]:
        parts.append("\n## Warnings\n\n" + "".join(f"- {m}\n" for m in result["warnings"]))
    return "".join(parts)


def _html(result: dict, figures: list[str]) -> str:
    la, lb = html.escape(_label(result["a"])), html.escape(_label(result["b"]))
    claims_html = "".join(f"<li>{html.escape(c['claim'])}: <b>{html.escape(c['verdict'])}</b> "
                          f"<small>({html.escape(c['detail'])})</small></li>" for c in result["claims"])
    rows = "".join(
        f"<tr><td>{'<b>' if r['kind'] == 'set' else ''}{html.escape(r['group'])}{'</b>' if r['kind'] == 'set' else ''}</td>"
        f"<td>{r['set']}</td><td>{_pct(r['share_a'])} [{_pct(r['share_a_lo'])}, {_pct(r['share_a_hi'])}]</td>"
        f"<td>{_pct(r['share_b'])} [{_pct(r['share_b_lo'])}, {_pct(r['share_b_hi'])}]</td>"
        f"<td>{_pts(r['mean_diff'])}</td><td>{r['rank_biserial']:+.2f}</td>"
        f"<td>{html.escape(format_p(r['p_holm']))}{' *' if r['significant'] else ''}</td></tr>"
        for r in result["groups"])
    warn = "".join(f"<li>{html.escape(m)}</li>" for m in result["warnings"]) or "<li>none</li>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>qmlrp compare: {la} vs {lb}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>{la} vs {lb}: which feature groups the models rely on</h1>
<p>{result['n_compared']:,} molecules explained by both models ({html.escape(result['a']['dir'])},
{html.escape(result['b']['dir'])}).</p>
<h2>Verdict</h2><ul>{claims_html}</ul>
<p><img src="{figures[0]}" alt="group shares side by side" width="960"></p>
<h2>Shares side by side</h2>
<table><tr><th>group</th><th>set</th><th>{la}</th><th>{lb}</th><th>mean diff (points)</th><th>rank-biserial</th>
<th>Wilcoxon (Holm)</th></tr>{rows}</table>
<p>{html.escape(result['share_definition'])}; {html.escape(result['ci'])}; {html.escape(result['test'])}.</p>
<h2>Warnings</h2><ul>{warn}</ul>
<p>Numbers: <a href="compare.json">compare.json</a>, <a href="compare.csv">compare.csv</a>,
<a href="verdict.md">verdict.md</a>; figure also as <a href="{figures[1]}">SVG</a>.</p>
</body></html>
"""


def write_outputs(result: dict, out, command: str | None = None) -> list[str]:
    from molgraph.storage import atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "compare.json", result)
    atomic_write_text(out / "compare.csv", _csv_text(result))
    figures = plot(result, out)
    atomic_write_text(out / "verdict.md", verdict_markdown(result, command))
    atomic_write_text(out / "compare.html", _html(result, figures))
    return ["compare.json", "compare.csv", *figures, "verdict.md", "compare.html"]


def run(dir_a, dir_b, out, n_boot: int = 2000, seed: int = 0, command: str | None = None) -> int:
    """The CLI body: compare, write the files, print the verdict. Returns the exit status."""
    try:
        result = compare(dir_a, dir_b, n_boot=n_boot, seed=seed)
    except (FileNotFoundError, ValueError) as exc:
        print(f"qmlrp compare: {exc}", file=sys.stderr)
        return 2
    files = write_outputs(result, out, command)
    print(f"{_label(result['a'])} vs {_label(result['b'])}: {result['n_compared']:,} molecules in both")
    print(verdict_text(result))
    print(f"-> {Path(out)}/{{{','.join(files)}}}")
    return 0
