"""`qmlrp stability`: how much the group picture of an explanation depends on the model
instance and on the LRP rule.

(a) Across the fold models of a cross-validation directory (`fold_*/`, `qmlrp cv`): the same
    molecules are explained by every member separately (each member's WeaveNet with its
    standardized output; relevance times the member's std, i.e. in the target's units), and
    per molecule and group the share |R_g| / sum_h |R_h| is compared across members: mean,
    standard deviation (population, over members), min and max, per molecule and for the
    dataset-level mean share; rank agreement of the 12 groups between members (Spearman and
    Kendall, per molecule and for the dataset-level shares) and how often every member puts the
    same group first.
(b) Across LRP presets (`lrp.composites.presets()`): the same members and molecules explained
    with each rule; per group the change of the mean share between rules, the mean absolute
    per-molecule change, the total-variation distance between the share vectors, and the rank
    correlation between rules.

Which molecules. A fold model has seen most of its sample in training (fold f trains on all
bins but f), so a molecule of the sample is training data for k-1 of the k members. The default
`--split outside` takes a seeded sample of QM9 molecules that are in no member's split at all
(never trained on, validated on or tested on by any member); `--split test` takes the members'
test molecules (for a CV directory: the whole sample, each molecule the test molecule of one
member and training or validation data of the others); `--ids FILE` takes given QM9 ids. Every
molecule's count of members that trained on it is recorded.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from molgraph import GROUP_NAMES

from .compare import GROUP_SETS, set_shares
from .explain.inputs import qm9_pool
from .explain.models import member_dirs
from .explain.relevance_pass import reference_graph, reference_pooled, relevance_batches

DEFAULT_RULES = ("epsilon", "weave", "alpha2-beta1")


# ----------------------------------------------------------------------------- models and molecules
def member_split(model_dir: Path) -> dict[str, np.ndarray] | None:
    """{'train', 'val', 'test': QM9 ids} of a member (its split.json, or its fold of the parent's
    k-fold split); None when the model directory records no split."""
    from .explain.inputs import split_test_ids

    try:
        return {w: np.asarray(split_test_ids(model_dir, w)[0], dtype=np.int64) for w in ("train", "val", "test")}
    except FileNotFoundError:
        return None


def select_molecules(splits_: Sequence[dict | None], split: str | None, ids: Sequence[int] | None,
                     max_molecules: int | None, seed: int = 0, pool: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """The QM9 ids to explain and a sentence saying how they were chosen (see module docstring)."""
    if ids is not None:
        chosen, desc = np.unique(np.asarray(ids, dtype=np.int64)), "QM9 ids from a file"
    else:
        if any(s is None for s in splits_):
            raise ValueError("a model directory records no split (split.json); choose the molecules with --ids FILE")
        split = split or "outside"
        if split == "test":
            chosen = np.unique(np.concatenate([s["test"] for s in splits_]))
            desc = "the members' test molecules"
        elif split == "outside":
            seen = np.unique(np.concatenate([s[w] for s in splits_ for w in ("train", "val", "test")]))
            pool = qm9_pool() if pool is None else np.asarray(pool, dtype=np.int64)
            chosen = np.setdiff1d(pool, seen)
            desc = "QM9 molecules in no member's split (never trained, validated or tested on)"
        else:
            raise ValueError(f"unknown --split {split!r}; valid: outside, test")
    if len(chosen) == 0:
        raise ValueError("no molecule to explain: " + desc)
    if max_molecules is not None and max_molecules < len(chosen):
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, size=max_molecules, replace=False))
        desc += f", a seeded sample (seed {seed}) of {max_molecules}"
    return chosen, desc


def seen_counts(ids: np.ndarray, splits_: Sequence[dict | None]) -> dict[str, np.ndarray] | None:
    """Per molecule, how many members trained / validated / tested on it."""
    if any(s is None for s in splits_):
        return None
    return {w: np.array([sum(int(np.isin(i, s[w])) for s in splits_) for i in ids]) for w in ("train", "val", "test")}


# ----------------------------------------------------------------------------- explaining
def explain_groups(net, std: float, ds, rule: str, batch_size: int = 64, progress=None,
                   histogram_rule: str | None = None, reference="mean") -> dict[str, np.ndarray]:
    """Every molecule of `ds` explained by one WeaveNet (standardized output) with one rule, through
    the relevance pass `explain` uses (`relevance_batches`: the same composite and histogram rule):
    {'groups': (M, 12) relevance per group in target units (times std), 'explained', 'absorbed',
    'conservation': (M,) |sum + absorbed - explained|}."""
    import torch

    from molgraph.relevance import group_sums

    m = len(ds)
    g = np.zeros((m, len(GROUP_NAMES)))
    explained, absorbed, cons = np.zeros(m), np.zeros(m), np.zeros(m)
    target = None
    for idx, _, e in relevance_batches(net, ds.__getitem__, np.asarray(ds.n_atoms), rule, histogram_rule, target,
                                       batch_size=batch_size, reference=reference_pooled(net, reference)):
        with torch.no_grad():
            gs = group_sums(e.relevance[0].double(), e.relevance[1].double()).numpy() * std  # (B, 12)
            g[idx] = gs
            explained[idx] = e.explained.double().numpy() * std
            absorbed[idx] = e.absorbed.double().numpy() * std
            cons[idx] = np.abs(gs.sum(1) + absorbed[idx] - explained[idx])
        if progress is not None:
            progress(len(idx))
    return {"groups": g, "explained": explained, "absorbed": absorbed, "conservation": cons}


# ----------------------------------------------------------------------------- statistics
def shares_of(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., M, 12) group relevance -> (shares |R_g| / sum |R_h|, (M,) True where every leading
    index (rule, member) gives the molecule some relevance)."""
    a = np.abs(groups)
    tot = a.sum(-1, keepdims=True)
    ok = (tot[..., 0] > 0).reshape(-1, a.shape[-2]).all(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(tot > 0, a / np.where(tot > 0, tot, 1.0), 0.0)
    return s, ok


def _with_sets(s: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(..., M, 12) shares -> (..., M, 15) with the geometric / electronic / neither sums."""
    flat = s.reshape(-1, s.shape[-1])
    sets = set_shares(flat)
    extra = np.stack([sets[k] for k in GROUP_SETS], -1).reshape(*s.shape[:-1], len(GROUP_SETS))
    return np.concatenate([s, extra], -1), list(GROUP_NAMES) + list(GROUP_SETS)


def _rank_corr(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman and Kendall (tau-b) between two share vectors over the groups that carry
    relevance in either: groups absent from a molecule (no chirality, no ring) would otherwise
    agree as tied zeros and inflate the agreement. NaN with fewer than 3 such groups or a
    constant vector."""
    from scipy.stats import kendalltau, spearmanr

    active = (x > 0) | (y > 0)
    x, y = x[active], y[active]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    return float(spearmanr(x, y).statistic), float(kendalltau(x, y).statistic)


def _summ(v) -> dict:
    v = np.asarray([x for x in v if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return {"mean": None, "median": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
            "n": int(len(v))}


def fold_spread(s: np.ndarray) -> dict:
    """(F, M, 12) shares of F members -> spread across members, per group and set and overall."""
    x, names = _with_sets(s)  # (F, M, 15)
    per_mol_std = x.std(0)  # (M, 15), population std over members
    per_mol_range = x.max(0) - x.min(0)
    ds_share = x.mean(1)  # (F, 15) dataset-level share of each member
    groups = {}
    for j, name in enumerate(names):
        groups[name] = {
            "mean_share": float(x[:, :, j].mean()),
            "molecule_std_mean": float(per_mol_std[:, j].mean()), "molecule_std_median": float(np.median(per_mol_std[:, j])),
            "molecule_std_max": float(per_mol_std[:, j].max()),
            "molecule_range_mean": float(per_mol_range[:, j].mean()), "molecule_range_max": float(per_mol_range[:, j].max()),
            "dataset_share_by_member": [float(v) for v in ds_share[:, j]],
            "dataset_std": float(ds_share[:, j].std()), "dataset_min": float(ds_share[:, j].min()),
            "dataset_max": float(ds_share[:, j].max()),
        }
    g12 = slice(0, len(GROUP_NAMES))
    overall = {
        "molecule_std_mean": float(per_mol_std[:, g12].mean()),
        "molecule_std_max": float(per_mol_std[:, g12].max()),
        "molecule_range_mean": float(per_mol_range[:, g12].mean()),
        "dataset_std_max": float(ds_share[:, g12].std(0).max()),
        "dataset_range_max": float((ds_share[:, g12].max(0) - ds_share[:, g12].min(0)).max()),
    }
    return {"groups": groups, "overall": overall}


def rank_agreement(s: np.ndarray) -> dict:
    """(F, M, 12) shares -> Spearman / Kendall between members' group rankings (over the groups
    active in either member, see `_rank_corr`): of the dataset-level shares (per member pair)
    and per molecule (averaged over member pairs); the fraction of molecules on which every
    member ranks the same group first."""
    f = s.shape[0]
    pairs = list(itertools.combinations(range(f), 2))
    ds_share = s.mean(1)
    ds = [_rank_corr(ds_share[i], ds_share[j]) for i, j in pairs]
    per_mol_sp, per_mol_kt = [], []
    for m in range(s.shape[1]):
        c = [_rank_corr(s[i, m], s[j, m]) for i, j in pairs]
        sp = [a for a, _ in c if np.isfinite(a)]
        kt = [b for _, b in c if np.isfinite(b)]
        per_mol_sp.append(np.mean(sp) if sp else np.nan)
        per_mol_kt.append(np.mean(kt) if kt else np.nan)
    top = s.argmax(-1)  # (F, M)
    return {
        "n_member_pairs": len(pairs),
        "dataset_spearman": _summ([a for a, _ in ds]), "dataset_kendall": _summ([b for _, b in ds]),
        "molecule_spearman": _summ(per_mol_sp), "molecule_kendall": _summ(per_mol_kt),
        "top_group_agreement": float((top == top[0]).all(0).mean()) if f else None,
    }


def rule_comparison(s: np.ndarray, rules: Sequence[str]) -> dict:
    """(R, F, M, 12) shares -> per rule the mean shares; per rule pair the change per group, the
    mean absolute per-molecule change, total-variation distances and rank correlations."""
    x, names = _with_sets(s)  # (R, F, M, 15)
    per_rule = {}
    for r, rule in enumerate(rules):
        per_rule[rule] = {n: float(x[r, :, :, j].mean()) for j, n in enumerate(names)}
    pairs = {}
    g12 = slice(0, len(GROUP_NAMES))
    for a, b in itertools.combinations(range(len(rules)), 2):
        d = x[a] - x[b]  # (F, M, 15)
        pa, pb = s[a].mean((0, 1)), s[b].mean((0, 1))  # dataset-level 12-share vectors
        sp, kt = _rank_corr(pa, pb)
        mol_sp = []
        for f in range(s.shape[1]):
            for m in range(s.shape[2]):
                c = _rank_corr(s[a, f, m], s[b, f, m])[0]
                if np.isfinite(c):
                    mol_sp.append(c)
        pairs[f"{rules[a]} vs {rules[b]}"] = {
            "mean_diff": {n: float(d[:, :, j].mean()) for j, n in enumerate(names)},
            "molecule_abs_diff_mean": {n: float(np.abs(d[:, :, j]).mean()) for j, n in enumerate(names)},
            "dataset_total_variation": float(0.5 * np.abs(pa - pb).sum()),
            "molecule_total_variation_mean": float(0.5 * np.abs(d[:, :, g12]).sum(-1).mean()),
            "dataset_spearman": sp, "dataset_kendall": kt, "molecule_spearman": _summ(mol_sp),
        }
    return {"mean_share": per_rule, "pairs": pairs}


# ----------------------------------------------------------------------------- the study
def study(models, rules: Sequence[str] = DEFAULT_RULES, split: str | None = None, ids: Sequence[int] | None = None,
          max_molecules: int | None = 200, seed: int = 0, batch_size: int = 64, cache_root=None, pool=None,
          log: Callable[[str], None] = lambda m: print(m, file=sys.stderr), progress: bool = True,
          histogram_rule: str | None = None, reference: str = "mean") -> tuple[dict, dict]:
    """Run the study (`histogram_rule` as in `qmlrp explain`: None keeps gcnn's default); returns (stability.json content, arrays: ids, groups (R, F, M, 12), ...)."""
    import gcnn
    import lrp

    from .explain import find_qm9

    t0 = time.time()
    unknown = [r for r in rules if r not in lrp.presets()]
    if unknown or not rules:
        raise ValueError(f"unknown rule(s) {', '.join(unknown) or '(none given)'}; valid: {', '.join(lrp.presets())}")
    ref = reference_graph(reference)
    dirs = member_dirs(models)
    loaded = []
    for d in dirs:
        p = gcnn.load(d)
        if p.is_vector or len(p.targets) != 1:
            raise ValueError(f"{d}: the stability study explains one scalar target; this model predicts {', '.join(p.targets)}")
        mem = p.models[0]
        net = mem.model.eval()
        for q in net.parameters():
            q.requires_grad_(False)
        loaded.append((d, net, float(mem.std[0]), p.targets[0], p.units[p.targets[0]]))
    targets = {t for *_, t, _ in loaded}
    if len(targets) != 1:
        raise ValueError(f"{models}: members predict different targets ({', '.join(sorted(targets))})")
    target, unit = loaded[0][3], loaded[0][4]
    splits_ = [member_split(d) for d in dirs]
    chosen, desc = select_molecules(splits_, split, ids, max_molecules, seed, pool)
    cfg = json.loads((dirs[0] / "config.json").read_text()).get("split", {})
    ds_all = find_qm9(chosen, cfg.get("source", "qm9pack"), cfg.get("source_checksum"), cache_root,
                      log=log, progress=progress)
    present = set(int(i) for i in ds_all.ids)
    failed = {int(f["id"]): f["reason"] for f in ds_all.failures}
    failures = [{"molecule": f"qm9:{int(i)}", "error": failed.get(int(i), "not in the featurized dataset")}
                for i in chosen if int(i) not in present]
    for f in failures:
        log(f"FAILED {f['molecule']}: {f['error']}")
    keep = np.array([i for i in chosen if int(i) in present], dtype=np.int64)
    if len(keep) == 0:
        raise ValueError(f"none of the {len(chosen)} chosen molecules could be featurized")
    ds = ds_all.subset(keep).with_targets([])
    log(f"explaining {len(keep)} molecules ({desc}) with {len(dirs)} model(s) x {len(rules)} rule(s)")
    total = len(keep) * len(dirs) * len(rules)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="stability", unit="mol", file=sys.stderr)
    R, F, M = len(rules), len(dirs), len(keep)
    groups = np.zeros((R, F, M, len(GROUP_NAMES)))
    explained, absorbed, cons = np.zeros((R, F, M)), np.zeros((R, F, M)), np.zeros((R, F, M))
    for r, rule in enumerate(rules):
        for f, (_, net, std, _, _) in enumerate(loaded):
            res = explain_groups(net, std, ds, rule, batch_size, progress=bar.update if bar else None,
                                     histogram_rule=histogram_rule, reference=ref)
            groups[r, f], explained[r, f], absorbed[r, f], cons[r, f] = (res["groups"], res["explained"],
                                                                         res["absorbed"], res["conservation"])
    if bar:
        bar.close()
    s, ok = shares_of(groups)
    dropped = [f"qm9:{int(i)}" for i in keep[~ok]]
    if dropped:
        log(f"{len(dropped)} molecule(s) without any group relevance under some rule or member are left out: "
            f"{', '.join(dropped[:10])}")
    s = s[:, :, ok]
    used = keep[ok]
    seen = seen_counts(used, splits_)
    member_names = [d.name if len(dirs) > 1 else str(d) for d in dirs]
    out = {
        "models": str(models), "members": member_names, "target": target, "unit": unit, "rules": list(rules),
        "reference": reference, "histogram_rule": histogram_rule,
        "molecules": {
            "selection": desc, "n_chosen": int(len(chosen)), "n_explained": int(len(used)),
            "failures": failures, "without_relevance": dropped,
            "trained_on_by_members": None if seen is None else {str(k): int(v) for k, v in
                                                               zip(*np.unique(seen["train"], return_counts=True))},
            "validated_on_by_members": None if seen is None else {str(k): int(v) for k, v in
                                                                 zip(*np.unique(seen["val"], return_counts=True))},
            "tested_on_by_members": None if seen is None else {str(k): int(v) for k, v in
                                                              zip(*np.unique(seen["test"], return_counts=True))},
        },
        "share_definition": "per molecule |R_g| / sum_h |R_h| over the 12 groups (R_g: relevance summed over the "
                            "group's features and all atoms / ordered atom pairs)",
        "conservation": {rule: {"max_abs_error": float(cons[r].max()),
                                "absorbed_over_explained": float(np.abs(absorbed[r]).sum() /
                                                                 max(np.abs(explained[r]).sum(), 1e-300)),
                                "absorbed_over_explained_median": float(np.median(
                                    np.abs(absorbed[r]) / np.maximum(np.abs(explained[r]), 1e-12)))}
                         for r, rule in enumerate(rules)},
        "fold_spread": None, "rank_agreement": None,
        "rule_comparison": rule_comparison(s, rules) if R > 1 else None,
        "seconds": None,
    }
    if F > 1:
        out["fold_spread"] = {rule: fold_spread(s[r]) for r, rule in enumerate(rules)}
        out["rank_agreement"] = {rule: rank_agreement(s[r]) for r, rule in enumerate(rules)}
    out["seconds"] = round(time.time() - t0, 1)
    arrays = {"ids": used, "shares": s, "groups": groups[:, :, ok], "seen": seen, "member_names": member_names}
    return out, arrays


# ----------------------------------------------------------------------------- outputs
def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _pts(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _f(x, fmt=".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, fmt)


def plot(res: dict, arrays: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = res["rules"]
    s = arrays["shares"]  # (R, F, M, 12)
    x, names = _with_sets(s)
    F = s.shape[1]
    n_panels = (2 if F > 1 else 0) + (1 if len(rules) > 1 else 0)
    n_panels = max(n_panels, 1)
    fig, axes = plt.subplots(n_panels, 1, figsize=(11, 3.6 * n_panels), squeeze=False)
    axes = list(axes[:, 0])
    pos = np.arange(len(names))
    k = 0
    if F > 1:
        ax = axes[k]
        k += 1
        ds_share = x[0].mean(1)  # (F, 15)
        ax.bar(pos, ds_share.mean(0), color="lightgray", label=f"mean of the {F} members")
        rng = np.random.default_rng(0)
        for f in range(F):
            ax.plot(pos + rng.uniform(-0.25, 0.25, len(pos)), ds_share[f], "o", ms=3, color="tab:blue",
                    label="one member (dataset mean)" if f == 0 else None)
        ax.set_ylabel("mean share")
        ax.set_title(f"(a) {res['target']}, {rules[0]}: mean share per member ({F} fold models, "
                     f"{s.shape[2]} molecules)", fontsize=10)
        ax.legend(fontsize=8)
        ax = axes[k]
        k += 1
        std = x[0].std(0)  # (M, 15)
        ax.boxplot([std[:, j] for j in range(len(names))], positions=pos, widths=0.6, showfliers=True,
                   flierprops={"markersize": 2})
        ax.set_ylabel("std across members")
        ax.set_title("(a) per-molecule spread of the share across the fold models", fontsize=10)
    if len(rules) > 1:
        ax = axes[k]
        width = 0.8 / len(rules)
        for r, rule in enumerate(rules):
            ax.bar(pos + (r - (len(rules) - 1) / 2) * width, x[r].mean((0, 1)), width=width, label=rule)
        ax.set_ylabel("mean share")
        ax.set_title(f"(b) {res['target']}: mean share per LRP rule (members and molecules averaged)", fontsize=10)
        ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(pos, names, rotation=40, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.axvline(len(GROUP_NAMES) - 0.5, color="k", lw=0.5)
    fig.tight_layout()
    files = ["stability.png", "stability.svg"]
    fig.savefig(out / files[0], dpi=120)
    fig.savefig(out / files[1])
    plt.close(fig)
    return files


def markdown(res: dict, command: str | None = None) -> str:
    rules = res["rules"]
    mol = res["molecules"]
    p = [f"# Stability of the explanations: {res['target']}\n\n"]
    if command:
        p.append(f"Command: `{command}`\n\n")
    p.append(f"Models: `{res['models']}` ({len(res['members'])} member(s)); rules: {', '.join(rules)}; "
             f"{mol['n_explained']} molecules explained ({mol['selection']}; {len(mol['failures'])} failed to featurize"
             f", {len(mol['without_relevance'])} without relevance).\n")
    if mol["trained_on_by_members"] is not None:
        def hist(h):
            return ", ".join(f"{v} molecule(s) by {k}" for k, v in sorted(h.items(), key=lambda t: int(t[0])))

        p.append(f"\nHow many of the {len(res['members'])} member(s) saw each molecule: trained on it: "
                 f"{hist(mol['trained_on_by_members'])}; validated on it: {hist(mol['validated_on_by_members'])}; "
                 f"tested on it: {hist(mol['tested_on_by_members'])}.\n")
    p.append(f"\nShares: {res['share_definition']}. Spreads are in share points (1 point = 1 % of a molecule's "
             "total |group relevance|). Rank correlations are taken over the groups that carry relevance in either of "
             "the two compared share vectors (absent groups would agree as tied zeros).\n")
    if res["fold_spread"]:
        rule = rules[0]
        fs, ra = res["fold_spread"][rule], res["rank_agreement"][rule]
        p.append(f"\n## (a) Across the {len(res['members'])} fold models ({rule})\n\n"
                 "| group | mean share | per-molecule std across members, mean (max) | per-molecule min-max range, "
                 "mean (max) | dataset-level share, min-max over members |\n|---|---|---|---|---|\n")
        for name, g in fs["groups"].items():
            bold = "**" if name in GROUP_SETS else ""
            p.append(f"| {bold}{name}{bold} | {_pct(g['mean_share'])} | {_pts(g['molecule_std_mean'])} "
                     f"({_pts(g['molecule_std_max'])}) | {_pts(g['molecule_range_mean'])} ({_pts(g['molecule_range_max'])}) | "
                     f"{_pct(g['dataset_min'])}-{_pct(g['dataset_max'])} |\n")
        o = fs["overall"]
        p.append(f"\nOverall (12 groups): per-molecule std {_pts(o['molecule_std_mean'])} points on average (max "
                 f"{_pts(o['molecule_std_max'])}); the dataset-level share of a group moves by at most "
                 f"{_pts(o['dataset_range_max'])} points between members. Rank agreement of the 12 groups between "
                 f"members ({ra['n_member_pairs']} pairs): dataset-level Spearman {_f(ra['dataset_spearman']['mean'])} "
                 f"(min {_f(ra['dataset_spearman']['min'])}), Kendall {_f(ra['dataset_kendall']['mean'])} (min "
                 f"{_f(ra['dataset_kendall']['min'])}); per molecule Spearman {_f(ra['molecule_spearman']['mean'])} "
                 f"(median {_f(ra['molecule_spearman']['median'])}), Kendall {_f(ra['molecule_kendall']['mean'])}; every "
                 f"member ranks the same group first on {_pct(ra['top_group_agreement'])} of the molecules.\n")
        if len(rules) > 1:
            p.append("\nThe same for every rule:\n\n| rule | per-molecule std, mean | dataset-level range, max | "
                     "Spearman dataset (min) | Spearman per molecule | same top group |\n|---|---|---|---|---|---|\n")
            for rule in rules:
                o, ra = res["fold_spread"][rule]["overall"], res["rank_agreement"][rule]
                p.append(f"| {rule} | {_pts(o['molecule_std_mean'])} | {_pts(o['dataset_range_max'])} | "
                         f"{_f(ra['dataset_spearman']['mean'])} ({_f(ra['dataset_spearman']['min'])}) | "
                         f"{_f(ra['molecule_spearman']['mean'])} | {_pct(ra['top_group_agreement'])} |\n")
    else:
        p.append("\n## (a) Across fold models\n\nOne model only: no spread across members (give a directory of "
                 "fold_*/ models).\n")
    rc = res["rule_comparison"]
    if rc:
        p.append(f"\n## (b) Across LRP rules (mean over {len(res['members'])} member(s) and the molecules)\n\n| group | "
                 + " | ".join(rules) + " |\n|---|" + "---|" * len(rules) + "\n")
        for name in rc["mean_share"][rules[0]]:
            bold = "**" if name in GROUP_SETS else ""
            p.append(f"| {bold}{name}{bold} | " + " | ".join(_pct(rc["mean_share"][r][name]) for r in rules) + " |\n")
        p.append("\n| rules | dataset-level total variation | per-molecule total variation, mean | largest group change "
                 "(points) | Spearman dataset | Kendall dataset | Spearman per molecule |\n|---|---|---|---|---|---|---|\n")
        for pair, v in rc["pairs"].items():
            big = max(((n, d) for n, d in v["mean_diff"].items() if n not in GROUP_SETS), key=lambda t: abs(t[1]))
            p.append(f"| {pair} | {_pts(v['dataset_total_variation'])} | {_pts(v['molecule_total_variation_mean'])} | "
                     f"{big[0]} {100 * big[1]:+.1f} | {_f(v['dataset_spearman'])} | {_f(v['dataset_kendall'])} | "
                     f"{_f(v['molecule_spearman']['mean'])} |\n")
        p.append("\nTotal variation = half the summed absolute share differences over the 12 groups (0: the same "
                 "picture, 100: disjoint).\n")
    p.append("\nWhat the explanations leave in biases and stabilizers (absorbed; explained = prediction - training "
             "mean of the member):\n\n| rule | max conservation error | sum abs(absorbed) / sum abs(explained) | "
             "median per molecule |\n|---|---|---|---|\n")
    for rule, c in res["conservation"].items():
        p.append(f"| {rule} | {c['max_abs_error']:.1e} {res['unit']} | {c['absorbed_over_explained']:.2f} | "
                 f"{c['absorbed_over_explained_median']:.2f} |\n")
    return "".join(p)


def _molecules_csv(res: dict, arrays: dict) -> str:
    """One row per rule, molecule and group: share mean/std/min/max across members."""
    x, names = _with_sets(arrays["shares"])  # (R, F, M, 15)
    seen = arrays["seen"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rule", "id", "group", "share_mean", "share_std", "share_min", "share_max", "n_members",
                "members_trained_on"])
    F = x.shape[1]
    for r, rule in enumerate(res["rules"]):
        mean, std, lo, hi = x[r].mean(0), x[r].std(0), x[r].min(0), x[r].max(0)  # (M, 15)
        for m, qid in enumerate(arrays["ids"]):
            t = "" if seen is None else int(seen["train"][m])
            for j, name in enumerate(names):
                w.writerow([rule, f"qm9:{int(qid)}", name, f"{mean[m, j]:.6g}", f"{std[m, j]:.6g}", f"{lo[m, j]:.6g}",
                            f"{hi[m, j]:.6g}", F, t])
    return buf.getvalue()


def write_outputs(res: dict, arrays: dict, out, command: str | None = None) -> list[str]:
    from molgraph.storage import atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "stability.json", res)
    atomic_write_text(out / "stability_molecules.csv", _molecules_csv(res, arrays))
    figures = plot(res, arrays, out)
    atomic_write_text(out / "stability.md", markdown(res, command))
    return ["stability.json", "stability_molecules.csv", *figures, "stability.md"]


def default_out(models) -> Path:
    """Where `qmlrp stability` writes without --out: MODELS/stability, or runs/stability_<name> for
    a published model (not inside the installed package)."""
    return Path(models) / "stability" if Path(models).exists() else Path("runs") / f"stability_{models}"


def run(models, out=None, rules: Sequence[str] = DEFAULT_RULES, split: str | None = None, ids: Sequence[int] | None = None,
        max_molecules: int | None = 200, seed: int = 0, batch_size: int = 64, cache_root=None,
        command: str | None = None, progress: bool = True, histogram_rule: str | None = None,
        reference: str = "mean") -> int:
    """The CLI body. Returns the exit status. `models` may be a published name (`qmlrp models`);
    its default output folder is then runs/stability_<name>, not the installed package."""
    from .published import resolve

    try:
        resolved = resolve(models)
    except FileNotFoundError as exc:
        print(f"qmlrp stability: {exc}", file=sys.stderr)
        return 2
    out = Path(out) if out else default_out(models)
    models = resolved
    try:
        if split and ids is not None:
            raise ValueError("choose the molecules one way: --split or --ids")
        res, arrays = study(models, rules, split, ids, max_molecules, seed, batch_size, cache_root, progress=progress,
                            histogram_rule=histogram_rule, reference=reference)
    except (FileNotFoundError, ValueError) as exc:
        print(f"qmlrp stability: {exc}", file=sys.stderr)
        return 2
    files = write_outputs(res, arrays, out, command)
    print(markdown(res, command))
    print(f"-> {out}/{{{','.join(files)}}}")
    return 0
