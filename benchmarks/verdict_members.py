"""The verdict's fold-model table: group shares per member, and alpha against ZPVE fold by fold.

    python benchmarks/verdict_members.py runs/stability_full/alpha runs/stability_full/zpve [--rule epsilon] [--md OUT]

Reads `stability.json` of two `qmlrp stability` runs over the same molecules (the alpha and the
ZPVE fold models, e.g. `--models qm9-alpha` and `--models qm9-zpve`) and prints, for one rule:
(1) each member's dataset-level share of the geometric and electronic sets and of the groups that
carry the most relevance, the largest move of one group between members, the rank agreement;
(2) the members of the two targets paired by name (fold_k of alpha with fold_k of ZPVE: trained on
the same molecules), and for each of the geometric, electronic, graph-distance and spatial-distance
shares the paired difference alpha - ZPVE per fold, how many pairs it has each sign, the mean with a
t-interval across folds (95 %) and the two-sided exact sign-test p. The unit of replication is the
training run (a fold), not the molecule: this is the test of whether a difference is the target's
or one training run's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from molgraph.storage import atomic_write_text

ROWS = ("geometric", "electronic", "spatial_distance", "graph_distance", "atom_type", "hybridization")
PAIRED = ("geometric", "electronic", "graph_distance", "spatial_distance")


def load(directory: str | Path, rule: str) -> dict:
    path = Path(directory) / "stability.json"
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: cannot read a stability summary ({e})")
    if rule not in d.get("fold_spread", {}):
        raise SystemExit(f"{path}: rule {rule!r} not in the run (it ran {', '.join(d.get('fold_spread', {}))})")
    return d


def member_shares(d: dict, rule: str) -> dict[str, dict[str, float]]:
    """{member: {group or set: dataset-level share}}."""
    groups = d["fold_spread"][rule]["groups"]
    return {m: {g: float(v["dataset_share_by_member"][i]) for g, v in groups.items()}
            for i, m in enumerate(d["members"])}


def paired(a: dict[str, dict[str, float]], z: dict[str, dict[str, float]], key: str) -> dict:
    common = [m for m in a if m in z]
    diff = np.array([a[m][key] - z[m][key] for m in common])
    n = len(diff)
    out = {"members": common, "diff": diff.tolist(), "n": n, "positive": int((diff > 0).sum()),
           "negative": int((diff < 0).sum()), "mean": float(diff.mean()) if n else None, "ci": None, "sign_p": None}
    if n >= 2:
        half = stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n)
        out["ci"] = [out["mean"] - half, out["mean"] + half]
    nz = out["positive"] + out["negative"]
    if nz:
        out["sign_p"] = float(stats.binomtest(out["positive"], nz, 0.5).pvalue)
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def report(alpha: dict, zpve: dict, rule: str) -> str:
    a, z = member_shares(alpha, rule), member_shares(zpve, rule)
    lines = [f"Rule {rule}; alpha: {len(a)} members ({', '.join(a)}), ZPVE: {len(z)} members ({', '.join(z)}); "
             f"{alpha['molecules']['n_explained']} and {zpve['molecules']['n_explained']} molecules explained", "",
             "| dataset-level share per member (%) | alpha | ZPVE |", "|---|---|---|"]
    for g in ROWS:
        lines.append(f"| {g.replace('_', ' ')} | {', '.join(_pct(s[g]) for s in a.values())} | "
                     f"{', '.join(_pct(s[g]) for s in z.values())} |")
    moves = []
    for d in (alpha, zpve):
        groups = {g: v for g, v in d["fold_spread"][rule]["groups"].items() if g not in ("geometric", "electronic", "neither")}
        g, v = max(groups.items(), key=lambda kv: kv[1]["dataset_max"] - kv[1]["dataset_min"])
        moves.append(f"{100 * (v['dataset_max'] - v['dataset_min']):.1f} points ({g.replace('_', ' ')})")
    lines.append(f"| largest move of one group between members | {moves[0]} | {moves[1]} |")
    ra = [d["rank_agreement"][rule] for d in (alpha, zpve)]
    lines.append("| Spearman of the 12-group ranking between members, mean (min) | "
                 + " | ".join(f"{r['dataset_spearman']['mean']:.2f} ({r['dataset_spearman']['min']:.2f})" for r in ra) + " |")
    lines.append("| same top group per molecule in every member | "
                 + " | ".join(f"{100 * r['top_group_agreement']:.1f} %" for r in ra) + " |")
    lines += ["", "Alpha - ZPVE, fold by fold (members trained on the same molecules), share points:", "",
              "| share | per fold | alpha > ZPVE | mean (95 % t-interval over folds) | sign test p |",
              "|---|---|---|---|---|"]
    for key in PAIRED:
        p = paired(a, z, key)
        if not p["n"]:
            lines.append(f"| {key} | no common members | | | |")
            continue
        per = ", ".join(f"{m.split('_')[-1]}: {100 * x:+.1f}" for m, x in zip(p["members"], p["diff"]))
        ci = "" if p["ci"] is None else f" ({100 * p['ci'][0]:+.1f}, {100 * p['ci'][1]:+.1f})"
        sp = "-" if p["sign_p"] is None else f"{p['sign_p']:.3g}"
        lines.append(f"| {key.replace('_', ' ')} | {per} | {p['positive']} of {p['n']} | {100 * p['mean']:+.1f}{ci} | {sp} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("alpha", help="a qmlrp stability --out directory of the alpha fold models")
    ap.add_argument("zpve", help="the same for the ZPVE fold models, over the same molecules")
    ap.add_argument("--rule", default="epsilon")
    ap.add_argument("--md", help="also write the report to this Markdown file")
    args = ap.parse_args(argv)
    text = report(load(args.alpha, args.rule), load(args.zpve, args.rule), args.rule)
    print(text)
    if args.md:
        atomic_write_text(Path(args.md), text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
