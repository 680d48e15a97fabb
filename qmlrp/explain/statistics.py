"""Statistics of explanations: pure functions of arrays (no files, no models)."""
from __future__ import annotations


import numpy as np

from .store import _group_names

NORMALIZATION = (
    "Z[m, g] = (G[m, g] - mu[g]) / S, where G[m, g] is molecule m's relevance summed over group g "
    "(target units), mu[g] = mean over the explained molecules of G[., g] (each group centred on its "
    "own dataset mean) and S = max over all molecules and groups of |G[m, g] - mu[g]|, the largest absolute "
    "value of the centred relevances over the dataset (one scale for all groups, so they stay comparable): Z lies in [-1, 1] and has zero mean per group. mu and S "
    "are computed once on all explained molecules and held fixed in the bootstrap."
)


def group_statistics(g: np.ndarray, n_atoms: np.ndarray | None = None, resamples: int = 2000, seed: int = 0,
                     ci: float = 0.95) -> dict:
    """Per-group statistics of G (M, 12), raw and normalized, with percentile bootstrap CIs
    (molecules resampled with replacement, `resamples` times, seeded).

    For a matrix X (raw G or normalized Z): mean = mean over molecules of X[., g];
    mean_abs = mean of |X[., g]|; share = sum_m |X[m, g]| / sum_m sum_h |X[m, h]| (the group's
    part of all absolute relevance); signed_share = sum_m X[m, g] / sum_m sum_h |X[m, h]|;
    raw only: molecule_share = mean over molecules of |G[m, g]| / sum_h |G[m, h]| (each molecule
    weighs the same, however large its relevances), median."""
    names = _group_names()
    g = np.asarray(g, dtype=np.float64)
    m = len(g)
    if m == 0:
        raise ValueError("no molecules to summarize")
    mu = g.mean(0)
    scale = float(np.abs(g - mu).max())
    z = (g - mu) / scale if scale > 0 else np.zeros_like(g)
    rng = np.random.default_rng(seed)
    lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2

    row_abs = np.abs(g).sum(1, keepdims=True)
    mol_share = np.abs(g) / np.where(row_abs > 0, row_abs, 1.0)  # (M, 12) each molecule's own shares
    keys = ("mean", "mean_abs", "share", "signed_share", "molecule_share")

    def stats(w, x):  # w: (R, M) resample counts
        s, a = w @ x, w @ np.abs(x)  # (R, 12)
        tot = a.sum(1, keepdims=True)
        tot[tot == 0] = 1.0
        nw = w.sum(1, keepdims=True)
        return {"mean": s / nw, "mean_abs": a / nw, "share": a / tot, "signed_share": s / tot,
                "molecule_share": (w @ mol_share) / nw}

    boot = {"raw": {k: [] for k in keys}, "normalized": {k: [] for k in keys}}
    done = 0
    while done < resamples:
        r = min(250, resamples - done)
        w = rng.multinomial(m, np.full(m, 1.0 / m), size=r).astype(np.float64)  # (r, M)
        for kind, x in (("raw", g), ("normalized", z)):
            for k, v in stats(w, x).items():
                boot[kind][k].append(v)
        done += r
    point = {kind: stats(np.ones((1, m)), x) for kind, x in (("raw", g), ("normalized", z))}
    out = {}
    from molgraph import FEATURE_GROUPS

    per_atom_mean = (g / np.asarray(n_atoms, dtype=np.float64)[:, None]).mean(0) if n_atoms is not None else None
    for j, name in enumerate(names):
        entry = {"kind": FEATURE_GROUPS[name].kind}
        for kind in ("raw", "normalized"):
            d = {}
            for k in keys[:4] if kind == "normalized" else keys:
                samples = np.concatenate(boot[kind][k])[:, j]
                d[k] = float(point[kind][k][0, j])
                d[f"{k}_ci"] = [float(np.percentile(samples, lo_q)), float(np.percentile(samples, hi_q))]
            entry[kind] = d
        entry["raw"]["median"] = float(np.median(g[:, j]))
        if per_atom_mean is not None:
            entry["raw"]["mean_per_atom"] = float(per_atom_mean[j])
        out[name] = entry
    return {"groups": out, "normalization": {"definition": NORMALIZATION, "centre": dict(zip(names, map(float, mu))),
                                             "scale": scale},
            "bootstrap": {"resamples": resamples, "seed": seed, "ci": ci, "method": "percentile, molecules resampled"}}


# ----------------------------------------------------------------------------- paired tests
def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def median_ci(d: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median from order statistics: [d_(k), d_(n-k+1)] with k
    the largest rank such that P(Bin(n, 1/2) < k) <= (1 - level) / 2."""
    from scipy.stats import binom

    d = np.sort(np.asarray(d, dtype=float))
    n = len(d)
    if n == 0:
        return float("nan"), float("nan")
    k = int(binom.ppf((1 - level) / 2, n, 0.5))  # P(B <= k) >= a/2, so P(B < k) <= a/2
    k = max(k, 1)
    return float(d[k - 1]), float(d[n - k])


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014): (T+ - T-) / (T+ + T-) over the
    non-zero differences; +1 when every pair favours the first set, -1 the second, 0 none."""
    from scipy.stats import rankdata

    d = np.asarray(d, dtype=float)
    d = d[d != 0]
    if len(d) == 0:
        return 0.0
    r = rankdata(np.abs(d))
    tp, tm = r[d > 0].sum(), r[d < 0].sum()
    return float((tp - tm) / (tp + tm))


def wilcoxon_test(d: np.ndarray) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired differences d (zeros dropped, as in
    Wilcoxon's original procedure). All-zero differences give p = 1."""
    from scipy.stats import wilcoxon

    d = np.asarray(d, dtype=float)
    nz = int((d != 0).sum())
    if nz == 0:
        return {"statistic": 0.0, "z": 0.0, "p": 1.0, "n_nonzero": 0, "note": "all paired differences are zero"}
    res = wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="approx" if nz > 50 else "auto")
    z = getattr(res, "zstatistic", None)
    return {"statistic": float(res.statistic), "z": None if z is None else float(z), "p": float(res.pvalue),
            "n_nonzero": nz}


def bootstrap_means(columns: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the column means of (n, C), resampling rows (molecules) with
    replacement; one set of resamples for all columns, so paired quantities stay paired."""
    x = np.asarray(columns, dtype=float)
    n = len(x)
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, x.shape[1]))
    for b in range(n_boot):
        means[b] = x[rng.integers(0, n, n)].mean(0)
    a = (1 - level) / 2
    return np.quantile(means, a, axis=0), np.quantile(means, 1 - a, axis=0)


def cancellation(groups: np.ndarray) -> dict:
    """How much the 12 group relevances of a molecule cancel: c = sum_g |R_g| / |sum_g R_g|
    (1: all of one sign, no cancellation; 10: the groups' sizes are ten times their net sum).
    Per-molecule quantiles, the pooled ratio over the data set (sum over molecules of the
    numerators over the sum of the denominators), and how many molecules have a net sum of 0."""
    g = np.asarray(groups, dtype=np.float64)
    size, net = np.abs(g).sum(1), np.abs(g.sum(1))
    ok = net > 0
    per = size[ok] / net[ok]
    q = {k: float(np.percentile(per, float(k))) for k in ("10", "50", "90", "99")} if per.size else {}
    return {"definition": "sum over groups of |group relevance| / |sum over groups of group relevance|; 1 = no "
                          "cancellation", "per_molecule_quantiles": q,
            "pooled": float(size.sum() / net.sum()) if net.sum() > 0 else float("inf"),
            "n_zero_net": int((~ok).sum())}


def hydrogen_share(rs, n_boot: int = 2000, seed: int = 0) -> dict:
    """Where the relevance of a `RelevanceSet` sits, hydrogens against the skeleton, per molecule
    then averaged over the molecules with hydrogens and relevance (95 % bootstrap CIs; one set of
    resamples, so each excess = share - fraction is paired):

    - atoms: the share of sum_i |R_i| held by the hydrogens (R_i: the per-atom relevance, own
      features plus half of each of the atom's pairs) against the share of atoms that are H;
    - with_pairs: hydrogens *and their pairs*: |own relevance| of the H atoms plus |relevance| of
      every ordered pair with an H in it, over the same sums for all atoms and pairs, against the
      share of atoms and pairs that involve an H. The X-H stretches above 2,600 cm^-1 should sit
      here above their fraction; modes of the skeleton below it.
    """
    el = np.asarray(rs.elements).astype(str)
    own = np.abs(np.asarray(rs.atom_relevance, dtype=np.float64).sum(1))
    per_atom = np.abs(np.asarray(rs.per_atom, dtype=np.float64))
    pair = np.abs(np.asarray(rs.pair_relevance, dtype=np.float64).sum(1))
    rows = []
    for m in range(len(rs.offsets) - 1):
        s0, e0 = int(rs.offsets[m]), int(rs.offsets[m + 1])
        ps, pe = int(rs.pair_offsets[m]), int(rs.pair_offsets[m + 1])
        n = e0 - s0
        h = el[s0:e0] == "H"
        if not h.any() or per_atom[s0:e0].sum() <= 0:
            continue
        hp = (h[:, None] | h[None, :]) & ~np.eye(n, dtype=bool)
        pr = pair[ps:pe].reshape(n, n)
        off = ~np.eye(n, dtype=bool)
        tot = own[s0:e0].sum() + pr[off].sum()
        rows.append([per_atom[s0:e0][h].sum() / per_atom[s0:e0].sum(), h.mean(),
                     (own[s0:e0][h].sum() + pr[hp].sum()) / tot if tot > 0 else np.nan,
                     (h.sum() + hp.sum()) / (n + off.sum())])
    x = np.asarray(rows, dtype=np.float64)
    x = x[np.isfinite(x).all(1)] if len(x) else x
    if not len(x):
        return {"n": 0}
    cols = np.column_stack([x, x[:, 0] - x[:, 1], x[:, 2] - x[:, 3]])
    lo, hi = bootstrap_means(cols, n_boot=n_boot, seed=seed)
    mean = cols.mean(0)

    def part(k_share, k_frac, k_excess):
        return {"share": float(mean[k_share]), "share_ci95": [float(lo[k_share]), float(hi[k_share])],
                "fraction": float(mean[k_frac]), "excess": float(mean[k_excess]),
                "excess_ci95": [float(lo[k_excess]), float(hi[k_excess])]}

    return {"definition": "per molecule, means over molecules with 95 % bootstrap CIs. atoms: sum over H of "
                          "|per-atom relevance| / sum over atoms, against H atoms / atoms. with_pairs: |own relevance| "
                          "of H atoms + |relevance| of ordered pairs with an H, over all atoms and pairs, against the "
                          "share of atoms and pairs that involve an H",
            "n": len(cols), "atoms": part(0, 1, 4), "with_pairs": part(2, 3, 5)}
