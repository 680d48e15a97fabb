"""The group-relevance chart of `qmlrp explain`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

def plot_groups(stats: dict, unit: str, title: str, out_stem: Path) -> list[Path]:
    """Bar chart: share of |relevance| per group (with CI) and mean signed relevance (with CI);
    atom groups blue, pair groups orange."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = list(stats["groups"])
    g = stats["groups"]
    colours = ["tab:blue" if g[n]["kind"] == "atom" else "tab:orange" for n in names]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, key, label in ((axes[0], "share", "share of total |relevance|"),
                           (axes[1], "mean", f"mean relevance per molecule / {unit}")):
        v = np.array([g[n]["raw"][key] for n in names])
        lo = np.array([g[n]["raw"][f"{key}_ci"][0] for n in names])
        hi = np.array([g[n]["raw"][f"{key}_ci"][1] for n in names])
        ax.bar(x, v, color=colours, yerr=np.vstack([v - lo, hi - v]), capsize=3, ecolor="black")
        ax.set_xticks(x, names, rotation=45, ha="right")
        ax.set_ylabel(label)
        ax.axhline(0, color="black", lw=0.6)
    axes[0].legend(handles=[Patch(color="tab:blue", label="atom groups"), Patch(color="tab:orange", label="pair groups")],
                   loc="upper right")
    ci = int(round(100 * stats["bootstrap"]["ci"]))
    fig.suptitle(f"{title}\nerror bars: {ci} % bootstrap CI over molecules", fontsize=11)
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        p = out_stem.with_name(out_stem.name + "." + ext)
        tmp = p.with_name(f".{p.name}.tmp")
        fig.savefig(tmp, dpi=120, format=ext)
        tmp.replace(p)
        paths.append(p)
    plt.close(fig)
    return paths


