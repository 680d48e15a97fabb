"""Learning curves inside the labelled beta set (issue 15), from the out-of-fold predictions that
`qmlrp cv-compare` wrote for CV runs made with `qmlrp cv --train-size N` (data/beta_study/study.sh).

For every series (a cv-compare directory and the prefix of its run names, which end in `n<size>`)
it prints the out-of-fold MAE and the relative error (MAE / mean |target|) per training-set size
and the slope of log MAE against log size, with a 95 % bootstrap interval over the molecules (the
same resample for every size of a series: the sizes are paired, every molecule is tested once per
size). A slope of -0.5 halves the error for 4x the labels; 0 is a flat curve. Optionally a log-log
figure of the relative error.

    python benchmarks/beta_learning_curve.py data/beta_study/n389 --out docs/figures/beta_learning_curve.png
"""
from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import numpy as np

SERIES = (  # label, cv-compare directory under the study folder, run-name prefix
    ("beta_par from scratch", "compare_lc_par", ""),
    ("beta_par from qm9-zpve", "compare_lc_par", "zpve-init_"),
    ("alpha (QM9's), same molecules", "compare_lc_alpha", ""),
)


def read_series(path: Path, prefix: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Sizes, true values (n_mol,) and predictions (n_sizes, n_mol) of the runs `<prefix>n<size>`."""
    with open(path / "out_of_fold.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SystemExit(f"{path}/out_of_fold.csv: no rows")
    runs = {}
    for col in rows[0]:
        m = re.fullmatch(re.escape(prefix) + r"n(\d+):pred", col)
        if m:
            runs[int(m.group(1))] = col[: -len(":pred")]
    if len(runs) < 2:
        raise SystemExit(f"{path}: fewer than two runs named {prefix}n<size>")
    sizes = sorted(runs)
    true = np.array([float(r[f"{runs[sizes[0]]}:true"]) for r in rows])
    pred = np.array([[float(r[f"{runs[n]}:pred"]) for r in rows] for n in sizes])
    return sizes, true, pred


def slope(sizes, err: np.ndarray) -> np.ndarray:
    """Least-squares slope of log MAE on log size; err (..., n_sizes, n_mol)."""
    x = np.log(np.asarray(sizes, dtype=float))
    y = np.log(err.mean(-1))
    x = x - x.mean()
    return ((y - y.mean(-1, keepdims=True)) * x).sum(-1) / (x**2).sum()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", help="a study folder with compare_lc_par/ and compare_lc_alpha/ (data/beta_study/n389)")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write a log-log PNG of the relative error here")
    args = ap.parse_args(argv)
    study = Path(args.study)
    rng = np.random.default_rng(args.seed)
    curves = []
    print("| series | training molecules per fold | out-of-fold MAE | MAE / mean abs target | slope of log MAE on log size [95 % CI] |")
    print("|---|---|---|---|---|")
    for label, sub, prefix in SERIES:
        sizes, true, pred = read_series(study / sub, prefix)
        err = np.abs(pred - true)
        scale = np.abs(true).mean()
        idx = rng.integers(0, err.shape[1], size=(args.bootstrap, err.shape[1]))
        boot = slope(sizes, err[:, idx].transpose(1, 0, 2))
        lo, hi = np.percentile(boot, [2.5, 97.5])
        mae = err.mean(1)
        print(f"| {label} | {', '.join(map(str, sizes))} | {', '.join(f'{m:.3g}' for m in mae)} | "
              f"{', '.join(f'{m / scale:.3f}' for m in mae)} | {slope(sizes, err):+.3f} [{lo:+.3f}, {hi:+.3f}] |")
        curves.append((label, sizes, mae / scale))
    print(f"\n{err.shape[1]} molecules per series; {args.bootstrap} bootstrap resamples over the molecules, seed {args.seed}")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.2, 4))
        for label, sizes, rel in curves:
            ax.loglog(sizes, rel, "o-", label=label)
        ax.set_xlabel("training molecules per fold")
        ax.set_ylabel("out-of-fold MAE / mean |target|")
        ax.set_title(f"learning curves inside {study.name}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.out, dpi=120)
        print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
