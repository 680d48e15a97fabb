"""Frequency-set models read as spectra (issue 14): stick-spectrum pictures, the baselines of
the notes, and the report of a model on its test molecules.

    qmlrp spectra MODEL [--split test] [--out DIR]      report.json, report.md, parity.png
    qmlrp predict --model MODEL mol.xyz --plot DIR      one stick spectrum per molecule

A stick spectrum here is the set of harmonic frequencies, one unit-height line each (QM9 has no
intensities). The predicted sticks point up, the reference (a QM9 file's own frequencies) down,
as spectroscopists compare a computed with a measured spectrum; an ensemble's spread is drawn as
a horizontal bar at the top of each predicted stick.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

REGION_LABELS = {"below_1000": "below 1,000", "1000_2000": "1,000-2,000", "2000_2600": "2,000-2,600",
                 "above_2600": "above 2,600"}


def plot_sticks(path, predicted: Sequence[float], spread: Sequence[float] | None = None,
                reference: Sequence[float] | None = None, title: str = "", unit: str = "cm^-1") -> Path:
    """Draw a stick spectrum (predicted up, reference down) into `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = np.asarray(predicted, dtype=float)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.vlines(pred, 0, 1, color="tab:blue", lw=1.2, label=f"predicted ({len(pred)} modes)")
    if spread is not None and np.any(np.asarray(spread) > 0):
        ax.errorbar(pred, np.ones_like(pred), xerr=np.asarray(spread, dtype=float), fmt="none", ecolor="tab:blue",
                    elinewidth=0.8, capsize=2, label="ensemble spread (1 std)")
    if reference is not None and len(reference):
        ref = np.sort(np.asarray(reference, dtype=float))
        ax.vlines(ref, -1, 0, color="tab:red", lw=1.2, label=f"reference ({len(ref)} modes)")
        if len(ref) == len(pred):
            ax.set_title(f"{title}  (sorted-mode MAE {np.abs(np.sort(pred) - ref).mean():.1f} {unit})", fontsize=10)
    if not ax.get_title():
        ax.set_title(title, fontsize=10)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlim(0, max(4000.0, float(np.nanmax(pred)) + 100))
    ax.set_ylim(-1.15 if reference is not None else 0, 1.25)
    ax.set_yticks([])
    ax.set_xlabel(f"harmonic frequency ({unit})")
    ax.legend(loc="upper left", fontsize=8, frameon=False, ncol=3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def formula_key(elements: Sequence[str]) -> tuple:
    return tuple(sum(e == x for e in elements) for x in ("H", "C", "N", "O", "F"))


def baselines(train_sets: np.ndarray, train_mask: np.ndarray, train_keys: Sequence, test_sets: np.ndarray,
              test_mask: np.ndarray, test_keys: Sequence) -> dict[str, np.ndarray]:
    """The notes' two input-only baselines, fitted on the training sets: the mean sorted set of
    the training molecules with the same number of modes, and with the same stoichiometry (the
    mode-count mean where the formula is not among the training molecules). Returns
    {name: (M_test, length) predicted sets}."""
    n_tr, n_te = train_mask.sum(1), test_mask.sum(1)
    by_count: dict[int, list[int]] = defaultdict(list)
    by_formula: dict[tuple, list[int]] = defaultdict(list)
    for i, (n, k) in enumerate(zip(n_tr, train_keys)):
        by_count[int(n)].append(i)
        by_formula[(int(n), k)].append(i)
    count_mean = {n: train_sets[idx].mean(0) for n, idx in by_count.items()}
    formula_mean = {k: train_sets[idx].mean(0) for k, idx in by_formula.items()}
    counts = np.array(sorted(count_mean))
    out = {"mean_per_mode_count": np.zeros_like(test_sets), "mean_per_stoichiometry": np.zeros_like(test_sets)}
    for i, (n, k) in enumerate(zip(n_te, test_keys)):
        n = int(n)
        c = count_mean.get(n)
        if c is None:  # no training molecule with as many modes: the nearest count's mean, cut or padded
            near = int(counts[np.argmin(np.abs(counts - n))])
            c = count_mean[near]
        out["mean_per_mode_count"][i] = c
        out["mean_per_stoichiometry"][i] = formula_mean.get((n, k), c)
    return out


def parity_plot(path, sets: np.ndarray, true: np.ndarray, mask: np.ndarray, title: str = "") -> Path:
    """Predicted against true frequency, one panel per spectral region (by the true value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gcnn.sets import REGION_NAMES, regions_of

    reg = regions_of(true)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    for r, (ax, name) in enumerate(zip(axes, REGION_NAMES)):
        sel = mask & (reg == r)
        t, p = true[sel], sets[sel]
        if len(t):
            lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
            ax.hexbin(t, p, gridsize=60, bins="log", mincnt=1, cmap="viridis", extent=(lo, hi, lo, hi))
            ax.plot([lo, hi], [lo, hi], "r-", lw=0.7)
            ax.set_title(f"{REGION_LABELS[name]} cm$^{{-1}}$: MAE {np.abs(p - t).mean():.1f}\n({len(t):,} modes)",
                         fontsize=9)
        ax.set_xlabel("QM9 frequency (cm$^{-1}$)")
    axes[0].set_ylabel("predicted (cm$^{-1}$)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def unseen_members(root: str | Path, ids: np.ndarray) -> list[Path]:
    """The model directories of `root` (one model or a fold ensemble) that never trained on any
    of the QM9 `ids`: the members whose predictions of these molecules are out-of-sample (for
    fold k's test bin of a 10-fold ensemble, fold k's model alone; a validation slice, which
    only chose the epoch, counts as unseen). An error naming the model when there is none."""
    import gcnn

    from .explain.inputs import split_test_ids

    ids = np.asarray(ids, dtype=np.int64)
    keep = [d for d in gcnn.model_dirs(root) if not np.isin(ids, split_test_ids(d, "train")[0]).any()]
    if not keep:
        raise ValueError(f"{root}: every member trained on some of these {len(ids)} molecules; "
                         f"an out-of-sample comparison needs one that did not (e.g. the fold model whose test bin they are)")
    return keep


def report(model: str, out: str | Path, split: str = "test", cache_root=None, max_molecules: int | None = None,
           zpve_model: str | None = None, log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """The frequency-set model's figures on its own split: sorted-mode MAE overall and per region,
    omega_1, per-molecule MAE, the ZPVE from the set (against QM9's ZPVE and, with `zpve_model`,
    against that model on the same molecules), the baselines fitted on the model's training
    molecules; report.json, report.md, parity.png in `out`."""
    import gcnn
    from gcnn.training import CM1_TO_EV, regression_metrics, set_metrics, sorted_sets

    from .explain.inputs import find_qm9, split_test_ids
    from .explain.models import resolve_model_dir
    from .published import resolve

    root = resolve(model)
    first, _ = resolve_model_dir(root, 0 if gcnn.model_dirs(root) != [root] else None)
    predictor = gcnn.load(root, members=[first])
    if not predictor.is_vector:
        raise ValueError(f"{root} predicts {', '.join(predictor.targets)}; `qmlrp spectra` is for frequency-set models")
    target = predictor.targets[0]
    test_ids, where = split_test_ids(first, split)
    train_ids, _ = split_test_ids(first, "train")
    if max_molecules is not None and len(test_ids) > max_molecules:
        test_ids = np.sort(np.random.default_rng(0).permutation(test_ids)[:max_molecules])
    cfg = json.loads((first / "config.json").read_text())
    src = (cfg.get("inputs") or {}).get("source_checksum")
    ds = find_qm9(np.concatenate([train_ids, test_ids]), checksum=src, cache_root=cache_root, log=log, progress=progress)
    test, train = ds.subset(test_ids).with_targets([target, "zpve_ev"]), ds.subset(train_ids)
    members = unseen_members(root, test_ids)  # an ensemble's other folds trained on this bin
    predictor = gcnn.load(root, members=members)
    log(f"{len(test_ids)} {where}; {len(members)} model(s) that never saw them ({', '.join(d.name for d in members)})")
    sets, spread, mask = predictor.predict_dataset_sets(test.with_targets([target]))
    true, _ = sorted_sets(test, target, predictor.n_outputs)
    sets = np.where(mask, sets, 0.0)
    m = {"n_molecules": int(len(test_ids)), "n_values": int(mask.sum()), **regression_metrics(sets[mask], true[mask]),
         **set_metrics(sets, true, mask, test)}
    m["omega_1_by_class"] = omega_1_by_class(sets, true, mask, [xh_class(test[i]) for i in range(len(test))])
    tr_sets, tr_mask = sorted_sets(train, target, predictor.n_outputs)
    keys = lambda d: [formula_key(d.molecule(i).elements) for i in range(len(d))]  # noqa: E731
    base = baselines(tr_sets, tr_mask, keys(train), true, mask, keys(test))
    m["baselines"] = {name: {"mae": float(np.abs(b - true)[mask].mean()),
                             **{k: v for k, v in set_metrics(np.where(mask, b, 0), true, mask, test).items()
                                if k in ("omega_1_mae", "zpve_from_set_mae_ev", "per_region")}}
                      for name, b in base.items()}
    if zpve_model is not None:
        zroot = resolve(zpve_model)
        zmembers = unseen_members(zroot, test_ids)
        log(f"ZPVE model {zpve_model}: {len(zmembers)} model(s) that never saw these molecules "
            f"({', '.join(d.name for d in zmembers)})")
        zp = gcnn.load(zroot, members=zmembers)
        z_true = np.asarray(test.target("zpve_ev"))
        z_model = zp.predict_dataset(test.with_targets([]))[:, list(zp.targets).index("zpve_ev")]
        z_set = 0.5 * sets.sum(1) * CM1_TO_EV
        m["zpve_model"] = {"model": str(zpve_model), "members": [d.name for d in zmembers], "mae_ev": float(np.abs(z_model - z_true).mean()),
                           "set_vs_model_r": float(np.corrcoef(z_set - z_true, z_model - z_true)[0, 1])}
    m.update({"model": str(model), "split": where, "unit": predictor.units[target], "layout": predictor.layout.name})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from molgraph.storage import atomic_write_text

    atomic_write_text(out / "report.json", json.dumps(m, indent=2))
    parity_plot(out / "parity.png", sets, true, mask, title=f"{model}: {where}")
    atomic_write_text(out / "report.md", markdown(m))
    return m


XH_CLASSES = ("O-H", "N-H", "C-H only", "no H")


def xh_class(graph) -> str:
    """What a molecule's highest mode omega_1 most likely is, from its Molecular Graph: an O-H
    stretch if an H is bonded to O, else N-H, else C-H (X-H stretches are the highest modes of
    QM9: O-H ~3,700-3,850, N-H ~3,450-3,600, C-H ~2,900-3,450 cm^-1), or none."""
    from molgraph import FEATURE_GROUPS, PAIR_FEATURES
    from molgraph.features import ATOM_TYPES

    t = graph.atom_features[:, FEATURE_GROUPS["atom_type"].slice] > 0.5  # one column per ATOM_TYPES element
    bonded = graph.pair_features[..., PAIR_FEATURES.index("graph_distance_le_1")] > 0.5
    h = t[:, ATOM_TYPES.index("H")]
    if not bool(h.any()):
        return "no H"
    partners = bonded[h].any(0)  # atoms bonded to some H
    for name, element in (("O-H", "O"), ("N-H", "N")):
        if bool((partners & t[:, ATOM_TYPES.index(element)]).any()):
            return name
    return "C-H only"


def omega_1_by_class(sets: np.ndarray, true: np.ndarray, mask: np.ndarray, classes: Sequence[str]) -> dict:
    """omega_1 (the highest mode) MAE and signed mean error per X-H class of `xh_class`."""
    n = mask.sum(1)
    rows = np.arange(len(n))[n > 0]
    err = sets[rows, n[rows] - 1] - true[rows, n[rows] - 1]
    cls = np.asarray(classes, dtype=object)[rows]
    out = {}
    for c in XH_CLASSES:
        e = err[cls == c]
        if len(e):
            out[c] = {"n_molecules": int(len(e)), "mae": float(np.abs(e).mean()), "mean_error": float(e.mean()),
                      "true_mean": float(true[rows, n[rows] - 1][cls == c].mean())}
    return out


def markdown(m: dict) -> str:
    rows = [("this model", m["mae"], m["omega_1_mae"], m.get("zpve_from_set_mae_ev"), m["per_region"])]
    rows += [(name.replace("_", " "), b["mae"], b["omega_1_mae"], b.get("zpve_from_set_mae_ev"), b["per_region"])
             for name, b in m["baselines"].items()]
    lines = [f"# {m['model']}: {m['n_molecules']:,} molecules ({m['split']}), {m['n_values']:,} modes, layout "
             f"{m['layout']}", "",
             "| predictor | sorted-mode MAE | " + " | ".join(f"{v} cm^-1" for v in REGION_LABELS.values())
             + " | omega_1 MAE | ZPVE from the set, MAE (meV) |",
             "|---|---:|" + "---:|" * len(REGION_LABELS) + "---:|---:|"]
    for name, mae, w1, z, reg in rows:
        cells = " | ".join("-" if reg[k]["mae"] is None else f"{reg[k]['mae']:.1f}" for k in REGION_LABELS)
        lines.append(f"| {name} | {mae:.2f} | {cells} | {w1:.2f} | {'-' if z is None else f'{1000 * z:.2f}'} |")
    if "omega_1_by_class" in m:
        lines += ["", "omega_1 by what the highest mode is (an H bonded to O, else to N, else to C):", "",
                  "| class | molecules | mean QM9 omega_1 | MAE | mean error (predicted - QM9) |", "|---|---:|---:|---:|---:|"]
        for c, r in m["omega_1_by_class"].items():
            lines.append(f"| {c} | {r['n_molecules']:,} | {r['true_mean']:.0f} | {r['mae']:.1f} | {r['mean_error']:+.1f} |")
    if "zpve_model" in m:
        lines += ["", f"Dedicated ZPVE model {m['zpve_model']['model']}: MAE {1000 * m['zpve_model']['mae_ev']:.2f} meV "
                      f"on the same molecules; correlation of the two ZPVE errors r = {m['zpve_model']['set_vs_model_r']:.2f}."]
    return "\n".join(lines) + "\n"


def add_parser(sub) -> None:
    p = sub.add_parser("spectra", help="a frequency-set model on its test molecules: sorted-mode MAE per region, "
                                       "omega_1, ZPVE from the set, baselines, parity plot")
    p.add_argument("model", help="a frequency-set model directory, a folder of fold models, or a published name")
    p.add_argument("--split", default="test", choices=("test", "val"), help="which molecules of the model's split (test)")
    p.add_argument("--out", help="output folder (default MODEL/spectra)")
    p.add_argument("--max-molecules", type=int, help="a seeded sample of the split's molecules")
    p.add_argument("--zpve-model", help="a ZPVE model to compare the ZPVE from the set with (e.g. qm9-zpve)")
    p.add_argument("--cache-dir", help="where caches live (default $QMLRP_CACHE or ~/.cache/qmlrp)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    import sys

    from .published import resolve

    out = Path(args.out) if args.out else Path(resolve(args.model)) / "spectra"
    try:
        m = report(args.model, out, args.split, args.cache_dir, args.max_molecules, args.zpve_model,
                   log=lambda s: print(s, file=sys.stderr), progress=not args.no_progress)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"qmlrp spectra: {exc}", file=sys.stderr)
        return 2
    print(markdown(m), end="")
    print(f"-> {out / 'report.md'}, {out / 'report.json'}, {out / 'parity.png'}")
    return 0
