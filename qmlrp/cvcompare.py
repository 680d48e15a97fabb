"""Cross-validation runs side by side on the same molecules: `qmlrp cv-compare`.

Each `qmlrp cv` directory holds one model per fold, each tested on its own bin, so the fold
models together predict every molecule once without having seen it (out-of-fold predictions).
This module pools them and compares runs on the molecules they share, with what a small data
set needs to be read honestly:

- MAE, RMSE, R^2 and the relative error MAE / mean |target| (the proposal's measure for "complex
  properties have larger relative errors"), each MAE with a bootstrap 95 % interval over the
  molecules;
- the trivial baseline of each fold (predict the mean of the fold's training targets) and the
  skill 1 - MAE / baseline MAE: a model that does not beat it has learned nothing usable;
- paired differences against the first run, resampling the same molecules for both (a pair of
  runs of the same target: the MAE difference; runs of different targets: the difference of
  relative errors).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from molgraph.storage import atomic_write_text


def out_of_fold(cv_dir: str | Path, ds) -> dict:
    """The pooled test-bin predictions of a CV directory's finished folds on dataset `ds` (the
    molecules the run was made on, label table joined where its target needs one): ids, fold,
    true, pred, baseline (the fold's mean training target), target, unit, folds."""
    import gcnn
    from gcnn.protocol import fold_train_ids
    from molgraph import TARGETS, splits

    cv_dir = Path(cv_dir)
    split_path = cv_dir / "split.json"
    if not split_path.is_file():
        raise FileNotFoundError(f"{cv_dir}: no split.json; is it the --out of `qmlrp cv`?")
    kf = splits.load_split(split_path)
    if not isinstance(kf, splits.KFold):
        raise ValueError(f"{split_path}: not a k-fold split")
    have = set(int(i) for i in ds.ids)
    missing = sorted(int(i) for b in kf.bins for i in b if int(i) not in have)
    if missing:
        raise ValueError(f"{cv_dir}: {len(missing)} molecules of its split are not in the given data set (first: "
                         f"qm9:{missing[0]}); pass the --ids/--labels the run was made with")
    rows = {"ids": [], "fold": [], "true": [], "pred": [], "baseline": []}
    target, folds = None, []
    for f in range(kf.k):
        d = cv_dir / f"fold_{f}"
        if not (d / "metrics.json").is_file():
            continue
        cfg = _fold_config(d)
        targets = list(cfg.get("targets", []))
        if len(targets) != 1 or int(cfg.get("model", {}).get("n_outputs", 1)) != 1:
            raise ValueError(f"{d}: cv-compare takes models of one scalar target; this one predicts {', '.join(targets)}")
        if target is None:
            target = targets[0]
        elif targets[0] != target:
            raise ValueError(f"{cv_dir}: fold models predict different targets ({target}, {targets[0]})")
        sp = kf.fold(f)
        test = ds.subset(sp.test)
        true = test.target(target)
        keep = np.isfinite(true)
        part = cfg.get("split") or {}
        train_y = ds.subset(fold_train_ids(sp, f, int(part.get("train_seed", 0)), part.get("train_size"))).target(target)
        pred = _stored_predictions(d, target, np.asarray(sp.test), true)
        if pred is None:  # no usable record of the test-bin predictions: run the fold model
            pred = gcnn.load(d).predict_dataset(test)[:, 0]
        rows["ids"].append(np.asarray(sp.test)[keep])
        rows["fold"].append(np.full(int(keep.sum()), f))
        rows["true"].append(true[keep])
        rows["pred"].append(pred[keep])
        rows["baseline"].append(np.full(int(keep.sum()), float(np.nanmean(train_y))))
        folds.append(f)
    if target is None:
        raise ValueError(f"{cv_dir}: no finished fold (fold_*/metrics.json)")
    out = {k: np.concatenate(v) for k, v in rows.items()}
    out.update(target=target, unit=TARGETS[target].unit, folds=folds, k=kf.k, split_digest=kf.digest)
    return out


def _fold_config(d: Path) -> dict:
    try:
        return json.loads((d / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{d}: unreadable config.json ({exc})") from exc


def _stored_predictions(d: Path, target: str, test_ids: np.ndarray, true: np.ndarray) -> np.ndarray | None:
    """The fold's own record of its test-bin predictions (test_predictions.npz, written when the
    fold finished), in the order of `test_ids`; None where the directory kept none or kept other
    molecules. The weights of a finished study may stay out of git; this record is what makes its
    out-of-fold figures rerunnable from the repository. A record whose reference values no longer
    match the labels given is refused: the labels changed under the run."""
    from gcnn.training import load_test_predictions

    try:
        kept = load_test_predictions(d, target)
    except (ValueError, KeyError, OSError):
        return None
    if kept is None:
        return None
    ids, ref, pred = kept
    order = {int(q): k for k, q in enumerate(ids)}
    finite = np.isfinite(true)
    if len(order) != int(finite.sum()) or any(int(q) not in order for q in test_ids[finite]):
        return None
    out = np.full(len(test_ids), np.nan)
    idx = np.array([order[int(q)] for q in test_ids[finite]], dtype=np.int64)
    out[finite] = pred[idx]
    if not np.allclose(ref[idx], true[finite], rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(true[finite]).max()))):
        raise ValueError(f"{d}: the reference values recorded in test_predictions.npz differ from the given labels' "
                         f"{target}; pass the --labels table the run was made with")
    return out


def _ci95(stat, resamples: np.ndarray) -> tuple[float, float]:
    """Percentile interval of `stat(indices)` over the rows of `resamples` (n_boot, n)."""
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample whose baseline is exact: no ratio
        draws = np.array([stat(s) for s in resamples], dtype=float)
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return float("nan"), float("nan")
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def compare(runs: dict[str, dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """runs: name -> `out_of_fold` result; the first is the reference. Metrics on the molecules
    every run predicts (the intersection of their ids)."""
    names = list(runs)
    if not names:
        raise ValueError("no runs to compare")
    common = np.array(sorted(set.intersection(*(set(int(i) for i in r["ids"]) for r in runs.values()))), dtype=np.int64)
    if len(common) < 2:
        raise ValueError(f"the runs share {len(common)} molecule(s); nothing to compare")
    aligned = {}
    for name, r in runs.items():
        order = {int(q): k for k, q in enumerate(r["ids"])}
        idx = np.array([order[int(q)] for q in common])
        aligned[name] = {k: r[k][idx] for k in ("true", "pred", "baseline", "fold")}
    n = len(common)
    S = np.random.default_rng(seed).integers(0, n, (n_boot, n))  # one set of resamples for every run: paired
    table = []
    ref = names[0]
    for name in names:
        a, r = aligned[name], runs[name]
        err = np.abs(a["pred"] - a["true"])
        base = np.abs(a["baseline"] - a["true"])
        scale = np.abs(a["true"])
        ss_tot = float(((a["true"] - a["true"].mean()) ** 2).sum())
        row = {"run": name, "target": r["target"], "unit": r["unit"], "folds": len(r["folds"]), "k": r["k"], "n": n,
               "mae": float(err.mean()), "mae_ci95": _ci95(lambda s: err[s].mean(), S),
               "rmse": float(np.sqrt((err ** 2).mean())),
               "r2": 1 - float((err ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan"),
               "mean_abs_target": float(scale.mean()),
               "relative_mae": float(err.mean() / scale.mean()),
               "relative_mae_ci95": _ci95(lambda s: err[s].mean() / scale[s].mean(), S),
               "baseline_mae": float(base.mean()), "skill": float(1 - err.mean() / base.mean()),
               "skill_ci95": _ci95(lambda s: 1 - err[s].mean() / base[s].mean(), S)}
        if name != ref:
            e0 = np.abs(aligned[ref]["pred"] - aligned[ref]["true"])
            s0 = np.abs(aligned[ref]["true"])
            if r["target"] == runs[ref]["target"]:
                row["vs_reference"] = {"measure": "mae difference (this - reference)", "value": float(err.mean() - e0.mean()),
                                       "ci95": _ci95(lambda s: err[s].mean() - e0[s].mean(), S)}
            else:
                row["vs_reference"] = {"measure": "relative mae difference (this - reference)",
                                       "value": float(err.mean() / scale.mean() - e0.mean() / s0.mean()),
                                       "ci95": _ci95(lambda s: err[s].mean() / scale[s].mean() - e0[s].mean() / s0[s].mean(), S)}
        table.append(row)
    return {"reference": ref, "n_common": n, "bootstrap": n_boot, "seed": seed, "ids": [int(q) for q in common],
            "runs": table}


def _ci(c) -> str:
    return f"[{c[0]:.3g}, {c[1]:.3g}]"


def markdown(result: dict) -> str:
    lines = [f"{result['n_common']} molecules predicted out of fold by every run; 95 % intervals: bootstrap over the "
             f"molecules ({result['bootstrap']} resamples); reference: {result['reference']}.", "",
             "| run | target | folds | MAE | 95 % CI | RMSE | R^2 | mean abs target | MAE / mean abs | 95 % CI | baseline MAE | "
             "skill | 95 % CI | vs reference [95 % CI] |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        vs = r.get("vs_reference")
        vs_text = f"{vs['value']:+.3g} {_ci(vs['ci95'])} ({'MAE' if vs['measure'].startswith('mae') else 'relative'})" if vs else ""
        lines.append(f"| {r['run']} | {r['target']} ({r['unit']}) | {r['folds']}/{r['k']} | {r['mae']:.3g} | {_ci(r['mae_ci95'])} | "
                     f"{r['rmse']:.3g} | {r['r2']:.3f} | {r['mean_abs_target']:.3g} | {r['relative_mae']:.3f} | "
                     f"{_ci(r['relative_mae_ci95'])} | {r['baseline_mae']:.3g} | {r['skill']:.3f} | {_ci(r['skill_ci95'])} | "
                     f"{vs_text} |")
    lines += ["", "baseline: each fold's mean training target; skill = 1 - MAE / baseline MAE (0: no better than "
              "the mean, 1: exact)."]
    return "\n".join(lines) + "\n"


def parity_plots(runs: dict[str, dict], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(runs)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, r) in zip(axes.flat, runs.items()):
        lo, hi = float(min(r["true"].min(), r["pred"].min())), float(max(r["true"].max(), r["pred"].max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8)
        ax.scatter(r["true"], r["pred"], s=8, alpha=0.7)
        ax.set_title(f"{name}\nMAE {np.abs(r['pred'] - r['true']).mean():.3g} {r['unit']}", fontsize=9)
        ax.set_xlabel(f"{r['target']} (reference)", fontsize=8)
        ax.set_ylabel("out-of-fold prediction", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(runs: dict[str, dict], result: dict, out: str | Path) -> list[Path]:
    """compare.json, compare.md, out_of_fold.csv (every run's predictions on the common
    molecules) and parity.png under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.json", json.dumps(result, indent=2))
    atomic_write_text(out / "compare.md", markdown(result))
    ids = result["ids"]
    header = ["qm9_id"] + [f"{name}:{col}" for name in runs for col in ("fold", "true", "pred")]
    lines = [",".join(header)]
    look = {name: {int(q): k for k, q in enumerate(r["ids"])} for name, r in runs.items()}
    for q in ids:
        cells = [str(q)]
        for name, r in runs.items():
            k = look[name][q]
            cells += [str(int(r["fold"][k])), repr(float(r["true"][k])), repr(float(r["pred"][k]))]
        lines.append(",".join(cells))
    atomic_write_text(out / "out_of_fold.csv", "\n".join(lines) + "\n")
    return [out / "compare.json", out / "compare.md", out / "out_of_fold.csv", parity_plots(runs, out / "parity.png")]


def parse_runs(items: Sequence[str]) -> dict[str, Path]:
    """NAME=CV_DIR or CV_DIR (named by its folder) -> {name: path}, in order; names unique."""
    runs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        if name in runs:
            raise ValueError(f"run name {name!r} given twice; name runs NAME=CV_DIR")
        runs[name] = Path(path)
    return runs
