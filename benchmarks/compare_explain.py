"""Compare `qmlrp explain` runs side by side: faithfulness (LRP / random AOPC and the share of
molecules where LRP beats random, atoms and features, signed and absolute), absorbed
relevance, relevance size and group shares. Prints two markdown tables.

    python benchmarks/compare_explain.py runs/alpha/explain_epsilon_pass runs/alpha/explain_epsilon_rescale
"""
import json
import sys
from pathlib import Path

import numpy as np


def row(run: Path) -> dict:
    s = json.loads((run / "summary.json").read_text())
    f = json.loads((run / "faithfulness.json").read_text())["aopc"]
    rel = np.load(run / "relevance.npz")
    out = {"run": run.name, "rule": s["rule"], "histogram": s.get("histogram_rule", "pass (before the option)"),
           "n": s["n_molecules"]}
    for part in ("atoms", "features"):
        for mode in ("signed", "absolute"):
            a = f[part][mode]
            out[f"{part} {mode}"] = f"{a['lrp_over_random']:.2f} ({100 * a['fraction_of_molecules_lrp_above_random']:.0f} %)"
    out["gxi features signed"] = f"{f['features']['signed']['gradient_x_input_over_random']:.2f}"
    out["absorbed mean (mean abs)"] = f"{rel['absorbed'].mean():+.1f} ({np.abs(rel['absorbed']).mean():.1f})"
    out["explained mean"] = f"{rel['explained'].mean():+.2f}"
    out["size p50 / std"] = f"{s['amplification']['quantiles']['50']:.1f}"
    out["relevance pass s"] = s["timings"].get("explain_s")
    out["groups"] = {g: (v["raw"]["share"], v["raw"]["signed_share"]) for g, v in s["groups"].items()}
    return out


def main(argv) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    rows = [row(Path(a)) for a in argv]
    keys = [k for k in rows[0] if k != "groups"]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    groups = sorted(rows[0]["groups"], key=lambda g: -rows[0]["groups"][g][0])
    print("\n| group | " + " | ".join(r["run"] for r in rows) + " |\n|---|" + "---|" * len(rows))
    for g in groups:
        print(f"| {g} | " + " | ".join(f"{100 * r['groups'][g][0]:.1f} % ({100 * r['groups'][g][1]:+.1f})" for r in rows) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
