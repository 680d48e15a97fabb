"""Faithfulness of an explanation by input perturbation ("pixel flipping", Samek et al. 2017).

Remove parts of a molecule in the order an explanation ranks them and watch the prediction.
If the explanation is faithful, removing what it calls most relevant first changes the
prediction faster than removing parts in random order.

Two kinds of parts:
- atoms: a removed atom is masked out together with all its pairs (its features and the
  features of every pair it belongs to are zeroed and `atom_mask` is False). That is exactly
  how the network sees a smaller molecule, so the input stays inside what it was built for.
  Removing every atom gives the empty-molecule output.
- features: a removed feature is set to 0; a pair feature is removed for both orders (i, j)
  and (j, i) together, so the input stays symmetric. Zero is the neutral value because it is
  the reference LRP (and gradient x input) decomposes against: every rule used here gives an
  input feature relevance of the form x * (modified gradient), so a feature at 0 carries no
  relevance and setting it to 0 removes exactly what the explanation attributed to it. For the
  one-hot and count groups 0 also means "absent"; for the interatomic distance it is
  unphysical, and the curves say what the network does with it. Features already 0 are not
  parts (removing them changes nothing).

Orders, per molecule: LRP (the stored explanation; an atom's score is its per-atom relevance,
a feature's its own relevance, both orders summed for a pair feature), gradient x input (same
aggregation) and several seeded random permutations.

Curves: at fractions q = 0, 0.1, ..., 1 of the parts removed (round(q * n_parts), most
relevant first), the prediction change
    signed:   D(q) = f(x) - f(x_q), parts ranked by relevance, most positive first
    absolute: |f(x) - f(x_q)|,     parts ranked by |relevance|
in target units, averaged over the molecules. D(0) = 0 and D(1) is the same for every order.
AOPC (area over the perturbation curve) = mean of the curve over the 11 fractions; the ratio
AOPC(LRP) / AOPC(random, mean over seeds) says how much faster LRP's order changes the
prediction than chance (> 1: better than random).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np

FRACTIONS = tuple(np.round(np.linspace(0.0, 1.0, 11), 10))


# ----------------------------------------------------------------------------- perturbations
def remove_atoms(atom_features, pair_features, atom_mask, removed):
    """Mask out `removed` (B, N) bool atoms with all their pairs -> (atoms, pairs, mask)."""
    keep = atom_mask.bool() & ~removed  # (B, N)
    pk = keep[:, :, None] & keep[:, None, :]  # (B, N, N)
    return atom_features * keep[..., None], pair_features * pk[..., None], keep


def empty_output(net, output: int = 0) -> float:
    """Standardized output of the network for a molecule with no atoms."""
    import torch

    with torch.no_grad():
        return float(net(torch.zeros(1, 1, 21), torch.zeros(1, 1, 1, 13), torch.zeros(1, 1, dtype=torch.bool))[0, output])


def feature_units(graph) -> dict:
    """The removable features of one molecule: every non-zero atom feature (i, f) and every
    non-zero pair feature of an unordered pair i < j. Returns arrays kind (0 atom / 1 pair), i,
    j (= i for atoms), f."""
    a = graph.atom_features.numpy()
    p = graph.pair_features.numpy()
    ai, af = np.nonzero(a)
    n = a.shape[0]
    iu, ju = np.triu_indices(n, 1)
    nz = p[iu, ju] != 0  # (n_pairs, 13)
    pk, pf = np.nonzero(nz)
    return {"kind": np.concatenate([np.zeros(len(ai), np.int8), np.ones(len(pk), np.int8)]),
            "i": np.concatenate([ai, iu[pk]]), "j": np.concatenate([ai, ju[pk]]), "f": np.concatenate([af, pf])}


def unit_scores(units: dict, atom_rel: np.ndarray, pair_rel: np.ndarray) -> np.ndarray:
    """Score of each feature unit: atom relevance R[i, f]; pair R[i, j, f] + R[j, i, f]."""
    k, i, j, f = units["kind"], units["i"], units["j"], units["f"]
    s = np.zeros(len(k))
    at, pr = k == 0, k == 1
    s[at] = atom_rel[i[at], f[at]]
    s[pr] = pair_rel[i[pr], j[pr], f[pr]] + pair_rel[j[pr], i[pr], f[pr]]
    return s


def atom_scores(atom_rel: np.ndarray, pair_rel: np.ndarray) -> np.ndarray:
    """Per-atom score: own features + half of each pair, both orders (as `molgraph.relevance.per_atom`)."""
    s = pair_rel.sum(-1)
    return atom_rel.sum(-1) + 0.5 * (s.sum(1) + s.sum(0))


def gradient_x_input(net, graphs: Sequence, output: int = 0, batch_size: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    """Plain gradient x input of the (standardized) output for each graph: [(atom (n, 21), pair (n, n, 13))]."""
    import torch

    from molgraph import collate

    res = []
    for s in range(0, len(graphs), batch_size):
        gs = graphs[s:s + batch_size]
        b = collate([g.with_targets({}) for g in gs])
        a = b.atom_features.clone().requires_grad_(True)
        p = b.pair_features.clone().requires_grad_(True)
        with torch.enable_grad():
            out = net(a, p, b.atom_mask)[:, output].sum()
            ga, gp = torch.autograd.grad(out, (a, p))
        ra, rp = (ga * a).detach().numpy(), (gp * p).detach().numpy()
        for k, g in enumerate(gs):
            n = g.n_atoms
            res.append((ra[k, :n].astype(np.float64), rp[k, :n, :n].astype(np.float64)))
    return res


def _counts(n_parts: int, fractions: Sequence[float]) -> list[int]:
    return [int(round(q * n_parts)) for q in fractions]


def atom_curves(net, graphs: Sequence, orders: Sequence[np.ndarray], fractions=FRACTIONS, output: int = 0,
                batch_size: int = 64) -> np.ndarray:
    """(M, F) standardized outputs with the first round(q n) atoms of each molecule's order removed."""
    import torch

    from molgraph import collate

    out = np.zeros((len(graphs), len(fractions)))
    with torch.no_grad():
        for s in range(0, len(graphs), batch_size):
            gs = graphs[s:s + batch_size]
            b = collate([g.with_targets({}) for g in gs])
            for q_i, q in enumerate(fractions):
                removed = torch.zeros_like(b.atom_mask, dtype=torch.bool)
                for k, g in enumerate(gs):
                    c = _counts(g.n_atoms, [q])[0]
                    removed[k, torch.as_tensor(orders[s + k][:c], dtype=torch.long)] = True
                a, p, m = remove_atoms(b.atom_features, b.pair_features, b.atom_mask, removed)
                out[s:s + len(gs), q_i] = net(a, p, m)[:, output].double().numpy()
    return out


def feature_curves(net, graphs: Sequence, units: Sequence[dict], orders: Sequence[np.ndarray], fractions=FRACTIONS,
                   output: int = 0, batch_size: int = 64) -> np.ndarray:
    """(M, F) standardized outputs with the first round(q U) feature units of each molecule's
    order set to 0 (pair features in both orders)."""
    import torch

    from molgraph import collate

    out = np.zeros((len(graphs), len(fractions)))
    with torch.no_grad():
        for s in range(0, len(graphs), batch_size):
            gs = graphs[s:s + batch_size]
            b = collate([g.with_targets({}) for g in gs])
            for q_i, q in enumerate(fractions):
                a, p = b.atom_features.clone(), b.pair_features.clone()
                for k in range(len(gs)):
                    u, o = units[s + k], orders[s + k]
                    sel = o[: _counts(len(o), [q])[0]]
                    kind, i, j, f = (torch.as_tensor(u[x][sel], dtype=torch.long) for x in ("kind", "i", "j", "f"))
                    at, pr = kind == 0, kind == 1
                    a[k, i[at], f[at]] = 0.0
                    p[k, i[pr], j[pr], f[pr]] = 0.0
                    p[k, j[pr], i[pr], f[pr]] = 0.0
                out[s:s + len(gs), q_i] = net(a, p, b.atom_mask)[:, output].double().numpy()
    return out


def aopc(changes: np.ndarray) -> float:
    """Area over the perturbation curve: mean over molecules and the fractions (q = 0 included)."""
    return float(np.mean(changes))


# ----------------------------------------------------------------------------- the check
def evaluate(net, graphs: Sequence, lrp_relevance: Sequence[tuple[np.ndarray, np.ndarray]], output: int = 0,
             std: float = 1.0, random_orders: int = 5, seed: int = 0, batch_size: int = 64,
             fractions=FRACTIONS, progress: bool = False) -> dict:
    """Perturbation curves and AOPC for LRP, gradient x input and random orders.

    lrp_relevance: per graph (atom (n, 21), pair (n, n, 13)) relevance (any positive scale).
    Returns curves (target units: standardized outputs x std) and AOPC values."""
    import torch

    from molgraph import collate

    m = len(graphs)
    base = np.zeros(m)  # f(x), batched as the curves are
    with torch.no_grad():
        for s in range(0, m, batch_size):
            b = collate([g.with_targets({}) for g in graphs[s:s + batch_size]])
            base[s:s + batch_size] = net(b.atom_features, b.pair_features, b.atom_mask)[:, output].double().numpy()
    gxi = gradient_x_input(net, list(graphs), output, batch_size)
    units = [feature_units(g) for g in graphs]
    explainers = {"lrp": lrp_relevance, "gradient_x_input": gxi}
    res = {"fractions": [float(q) for q in fractions], "n_molecules": m, "random_orders": random_orders, "seed": seed,
           "empty_output": empty_output(net, output) * std}
    steps = []
    for kind in ("atoms", "features"):
        for name, rel in explainers.items():
            for mode in ("signed", "absolute"):
                steps.append((kind, name, mode, rel))
        for r in range(random_orders):
            steps.append((kind, f"random_{r}", None, None))
    curves: dict = {"atoms": {}, "features": {}}
    bar = steps
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(steps, file=sys.stderr, desc="faithfulness", unit="order")
    for kind, name, mode, rel in bar:
        if rel is not None:
            if kind == "atoms":
                sc = [atom_scores(a, p) for a, p in rel]
            else:
                sc = [unit_scores(u, a, p) for u, (a, p) in zip(units, rel)]
            orders = [np.argsort(-(s if mode == "signed" else np.abs(s)), kind="stable") for s in sc]
        else:
            r = int(name.split("_")[1])
            sizes = [g.n_atoms for g in graphs] if kind == "atoms" else [len(u["kind"]) for u in units]
            orders = [np.random.default_rng([seed, r, k, 0 if kind == "atoms" else 1]).permutation(sz)
                      for k, sz in enumerate(sizes)]
        if kind == "atoms":
            f_q = atom_curves(net, list(graphs), orders, fractions, output, batch_size)
        else:
            f_q = feature_curves(net, list(graphs), units, orders, fractions, output, batch_size)
        delta = (base[:, None] - f_q) * std  # (M, F) target units
        if rel is not None:
            curves[kind][f"{name}_{mode}"] = delta if mode == "signed" else np.abs(delta)
        else:
            curves[kind][f"{name}_signed"] = delta
            curves[kind][f"{name}_absolute"] = np.abs(delta)
    res["curves"], res["aopc"] = {}, {}
    for kind in ("atoms", "features"):
        res["curves"][kind], res["aopc"][kind] = {}, {}
        for mode in ("signed", "absolute"):
            c = curves[kind]
            rand = np.stack([c[f"random_{r}_{mode}"] for r in range(random_orders)]) if random_orders else None
            entry = {
                "lrp": aopc(c[f"lrp_{mode}"]),
                "gradient_x_input": aopc(c[f"gradient_x_input_{mode}"]),
            }
            cur = {"lrp": c[f"lrp_{mode}"].mean(0).tolist(), "gradient_x_input": c[f"gradient_x_input_{mode}"].mean(0).tolist()}
            if rand is not None:
                per_seed = rand.mean(axis=(1, 2))  # (R,)
                entry["random_mean"] = float(per_seed.mean())
                entry["random_per_seed"] = per_seed.tolist()
                entry["lrp_over_random"] = entry["lrp"] / entry["random_mean"] if entry["random_mean"] != 0 else None
                entry["gradient_x_input_over_random"] = (entry["gradient_x_input"] / entry["random_mean"]
                                                         if entry["random_mean"] != 0 else None)
                per_mol_lrp = c[f"lrp_{mode}"].mean(1)
                per_mol_rand = rand.mean(axis=(0, 2))
                entry["fraction_of_molecules_lrp_above_random"] = float(np.mean(per_mol_lrp > per_mol_rand))
                cur["random_mean"] = rand.mean(axis=(0, 1)).tolist()
                cur["random_min"] = rand.mean(axis=1).min(0).tolist()
                cur["random_max"] = rand.mean(axis=1).max(0).tolist()
            res["aopc"][kind][mode] = entry
            res["curves"][kind][mode] = cur
    res["_raw"] = curves  # (M, F) per molecule, for tests and further analysis; not written to JSON
    return res


def plot(res: dict, unit: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = np.array(res["fractions"])
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    labels = {"atoms": "atoms removed (masked out with their pairs)", "features": "non-zero features set to 0"}
    for r, kind in enumerate(("atoms", "features")):
        for c, mode in enumerate(("signed", "absolute")):
            ax = axes[r, c]
            cur, a = res["curves"][kind][mode], res["aopc"][kind][mode]
            ax.plot(q, cur["lrp"], "o-", color="tab:red", label=f"LRP (AOPC {a['lrp']:.3g})")
            ax.plot(q, cur["gradient_x_input"], "s--", color="tab:green",
                    label=f"gradient x input (AOPC {a['gradient_x_input']:.3g})")
            if "random_mean" in cur:
                ax.plot(q, cur["random_mean"], "-", color="gray",
                        label=f"random, {res['random_orders']} seeds (AOPC {a['random_mean']:.3g})")
                ax.fill_between(q, cur["random_min"], cur["random_max"], color="gray", alpha=0.25)
            ax.axhline(0, color="black", lw=0.5)
            ylab = f"f(x) - f(x perturbed) / {unit}" if mode == "signed" else f"|f(x) - f(x perturbed)| / {unit}"
            ax.set_ylabel(ylab)
            order = "most positive relevance first" if mode == "signed" else "largest |relevance| first"
            ax.set_title(f"{kind}: {order}", fontsize=10)
            if r == 1:
                ax.set_xlabel(f"fraction of parts removed ({labels[kind]})" if c == 0 else "fraction of parts removed")
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    tmp.replace(path)
    plt.close(fig)


def run_faithfulness(lm, rs, inputs, n: int = 200, random_orders: int = 5, seed: int = 0, batch_size: int = 64,
                     out: Path | None = None, progress: bool = True) -> dict:
    """The check of `qmlrp explain` on a seeded sample of n explained molecules; writes
    faithfulness.json and faithfulness.png into `out`; returns the summary (no curves)."""
    from molgraph.storage import atomic_write_json

    m = len(rs)
    pick = np.arange(m) if n >= m else np.sort(np.random.default_rng(seed).choice(m, size=n, replace=False))
    graphs = [inputs.graph(int(i)) for i in pick]
    rel = []
    for i in pick:
        mr = rs.molecule(int(i))
        rel.append((mr.atom.astype(np.float64), mr.pair.astype(np.float64)))
    res = evaluate(lm.net, graphs, rel, output=lm.output, std=lm.std, random_orders=random_orders, seed=seed,
                   batch_size=min(batch_size, 64), progress=progress)
    res.pop("_raw")
    res["ids"] = [str(rs.ids[i]) for i in pick]
    res["unit"] = lm.unit
    res["empty_output"] = res["empty_output"] + lm.mean  # a prediction in target units
    res["neutral_values"] = {"atom": "masked out with all its pairs", "feature": "0 (pair features: both orders)"}
    res["definition"] = ("signed: parts removed most positive relevance first, curve = mean of f(x) - f(x_q); "
                         "absolute: largest |relevance| first, curve = mean |f(x) - f(x_q)|; AOPC = mean of the curve "
                         "over the fractions 0, 0.1, ..., 1; target units")
    if out is not None:
        atomic_write_json(Path(out) / "faithfulness.json", res)
        plot(res, lm.unit, f"Faithfulness, {lm.target}: {len(pick)} molecules, rule {rs.meta.get('rule')}",
             Path(out) / "faithfulness.png")
    return {k: v for k, v in res.items() if k not in ("curves", "ids")} | {
        "file": "faithfulness.json", "figure": "faithfulness.png"}
