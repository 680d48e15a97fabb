"""How far long, resumable runs have got: one row per training directory (a `qmlrp train` run,
each fold of a `qmlrp cv`, each size of a `qmlrp learning-curve`), read from the files the
runs leave (config.json, history.csv, metrics.json, checkpoint.pt), never from the weights.

    rows = run_progress("data/models/cv_alpha_bohr3")
    print(progress_table(rows))

A run is *done* when metrics.json exists (it was tested), *in progress* when it has trained
some epochs, *not started* when a CV's split names a fold that has no directory yet. The time
left is an upper bound: the remaining epochs up to the limit at the run's recent seconds per
epoch (the median of its last 10; a fold not yet started borrows the folds' in progress, else the
finished folds'), while early
stopping may end a run sooner. Seconds per epoch are wall time of the machine that ran them,
so the estimate holds for a machine as fast and as busy.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

RECENT = 10  # epochs whose median seconds estimate the time left
_CHILD = re.compile(r"^(fold|n)_(\d+)$")


def _is_run(d: Path) -> bool:
    return any((d / f).exists() for f in ("config.json", "history.csv", "checkpoint.pt", "metrics.json"))


def _history(d: Path) -> list[dict] | None:
    p = d / "history.csv"
    if not p.exists():
        return None
    with open(p, newline="") as fh:
        return list(csv.DictReader(fh))


def history_summary(d: str | Path) -> dict:
    """What a run's history.csv says: epochs trained, the best epoch (lowest validation MAE) and
    its MAE, the training minutes (the sum of the per-epoch seconds, validation included) and the
    median seconds of the last RECENT epochs. Without a history.csv every field is None; an empty
    one has 0 epochs and 0.0 minutes. `gcnn.protocol`'s CV tables read the same summary."""
    hist = _history(Path(d))
    if hist is None:
        return {"epochs": None, "best_epoch": None, "best_val_mae": None, "minutes": None, "s_per_epoch": None}
    secs = [float(r["seconds"]) for r in hist if r.get("seconds") not in (None, "")]
    val = [(float(r["val_mae"]), int(r["epoch"])) for r in hist if r.get("val_mae") not in (None, "")]
    best = min(val, key=lambda v: v[0]) if val else (None, None)  # the first epoch of the lowest MAE
    return {"epochs": len(hist), "best_epoch": best[1], "best_val_mae": best[0],
            "minutes": round(sum(secs) / 60, 1) if secs else 0.0,
            "s_per_epoch": float(np.median(secs[-RECENT:])) if secs else None}


def _read_json(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _row(d: Path, name: str) -> dict:
    cfg = _read_json(d / "config.json") or {}
    train = cfg.get("train") or {}
    h = history_summary(d)
    metrics = _read_json(d / "metrics.json")
    row = {"run": name, "path": str(d), "state": "done" if metrics is not None else ("in progress" if h["epochs"] else "started"),
           "epochs": h["epochs"] or 0, "epoch_limit": train.get("epochs"), "target": (cfg.get("targets") or [None])[0],
           "n_train": cfg.get("n_train"), "best_val_mae": h["best_val_mae"], "best_epoch": h["best_epoch"],
           "test_mae": None, "unit": (cfg.get("units") or {}).get((cfg.get("targets") or [None])[0]),
           "minutes": h["minutes"] or 0.0, "s_per_epoch": h["s_per_epoch"], "left_min": None,
           "resumable": (d / "checkpoint.pt").exists()}
    if metrics is not None:
        t = row["target"] if row["target"] in metrics.get("targets", {}) else next(iter(metrics.get("targets", {})), None)
        if t is not None:
            row["test_mae"] = metrics["targets"][t].get("mae")
        row["left_min"] = 0.0
    elif row["epoch_limit"] and row["s_per_epoch"] is not None:
        row["left_min"] = round(max(0, row["epoch_limit"] - row["epochs"]) * row["s_per_epoch"] / 60, 1)
    return row


def run_progress(path: str | Path) -> list[dict]:
    """The rows of one directory: itself when it is a training run, else its fold_<k> / n_<size>
    children (numeric order), with the folds a CV's split.json names but no directory holds yet."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such directory")
    if _is_run(path):
        return [_row(path, path.name)]
    children = sorted(((m.group(1), int(m.group(2)), c) for c in path.iterdir()
                       if c.is_dir() and (m := _CHILD.match(c.name))), key=lambda x: (x[0], x[1]))
    rows = [_row(c, f"{path.name}/{c.name}") for _, _, c in children if _is_run(c)]
    split = _read_json(path / "split.json")
    is_cv = (split is not None and split.get("kind") == "kfold" and isinstance(split.get("k"), int)
             and not any(kind == "n" for kind, _, _ in children))  # a learning curve's split is k-fold too
    if is_cv:
        have = {n for k, n, c in children if k == "fold" and _is_run(c)}
        limits = [r["epoch_limit"] for r in rows if r["epoch_limit"]]
        # a fold not started borrows the speed of the folds in progress (the machine as it runs now),
        # else of the finished ones
        speeds = ([r["s_per_epoch"] for r in rows if r["state"] != "done" and r["s_per_epoch"] is not None]
                  or [r["s_per_epoch"] for r in rows if r["s_per_epoch"] is not None])
        for f in range(int(split["k"])):
            if f in have:
                continue
            left = round(max(limits) * float(np.median(speeds)) / 60, 1) if limits and speeds else None
            rows.append({"run": f"{path.name}/fold_{f}", "path": str(path / f"fold_{f}"), "state": "not started",
                         "epochs": 0, "epoch_limit": max(limits) if limits else None, "target": None, "n_train": None,
                         "best_val_mae": None, "best_epoch": None, "test_mae": None, "unit": None, "minutes": 0.0,
                         "s_per_epoch": None, "left_min": left, "resumable": False})
        rows.sort(key=lambda r: int(r["run"].rsplit("_", 1)[1]))
    if not rows:
        raise FileNotFoundError(f"{path}: neither a training run (config.json, history.csv) nor a directory of "
                                f"fold_<k> or n_<size> runs")
    return rows


def _fmt(x, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)


def progress_table(rows: list[dict]) -> str:
    """A markdown table of the rows, and the totals: runs done, training hours spent, hours left."""
    lines = ["| run | state | epochs | best val MAE (epoch) | test MAE | s/epoch | minutes | left (min, at most) |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        ep = f"{r['epochs']}" + (f" / {r['epoch_limit']}" if r["epoch_limit"] else "")
        best = "-" if r["best_val_mae"] is None else f"{r['best_val_mae']:.4g} ({r['best_epoch']})"
        unit = f" {r['unit']}" if r["unit"] and r["test_mae"] is not None else ""
        lines.append(f"| {r['run']} | {r['state']} | {ep} | {best} | {_fmt(r['test_mae'])}{unit} | "
                     f"{_fmt(r['s_per_epoch'], '.1f')} | {_fmt(r['minutes'], '.0f')} | {_fmt(r['left_min'], '.0f')} |")
    done = sum(r["state"] == "done" for r in rows)
    spent = sum(r["minutes"] or 0.0 for r in rows) / 60
    lefts = [r["left_min"] for r in rows if r["state"] != "done"]
    known = [x for x in lefts if x is not None]
    left = f"{sum(known) / 60:.1f} h" + ("" if len(known) == len(lefts) else f" (+ {len(lefts) - len(known)} without an estimate)")
    lines.append("")
    lines.append(f"{done} of {len(rows)} done; {spent:.1f} h of training so far; at most {left} left at the recent "
                 f"speed (one job each; runs side by side on separate cores divide the wall time)")
    return "\n".join(lines)
