"""Table of the alpha hyperparameter search (benchmarks/tune_alpha.sh): per configuration, the
architecture and schedule that differ from the defaults, epochs run, best validation MAE on fold
0's validation slice (the selection criterion; no test bin is read), final training loss
(standardized MSE), seconds per epoch, and whether the run is finished. Frequency-set runs
(benchmarks/tune_freqs.sh) that have a validation report (`qmlrp spectra RUN --split val --out
RUN/spectra_val`) add its omega_1 MAE, X-H region MAE (above 2,600 cm^-1) and omega_1 mean error
by X-H class.

    python benchmarks/tune_alpha.py [runs/tune_alpha] [--csv docs/figures/tune_alpha.csv]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

CHECKPOINTS = (10, 20, 30, 40, 60)  # "best validation MAE by epoch E" columns
DEFAULTS = {"atom_hidden": 50, "pair_hidden": 50, "n_layers": 2, "readout_hidden": 128, "head_hidden": [128],
            "pair_cutoff": None, "xh_head": None, "lr": 1e-3, "lr_patience": 5, "patience": 20, "weight_decay": 0.0,
            "batch_size": 128, "clip_grad_norm": None, "schedule": "plateau", "seed": 0, "readout_activation": None,
            "mix_sizes": 1}
SPECTRA = ("omega_1_mae", "above_2600_mae", "omega_1_bias_O-H", "omega_1_bias_N-H", "omega_1_bias_C-H only")


def row(d: Path) -> dict | None:
    hist, cfg_path = d / "history.csv", d / "config.json"
    if not hist.is_file() or not cfg_path.is_file():
        return None
    cfg = json.loads(cfg_path.read_text())
    merged = {**cfg["model"], **cfg["train"]}
    changed = {k: merged.get(k) for k in DEFAULTS if merged.get(k, DEFAULTS[k]) != DEFAULTS[k]}
    rows = list(csv.DictReader(hist.open()))
    best = min(rows, key=lambda r: float(r["val_mae"]))
    secs = [float(r["seconds"]) for r in rows]
    best_by = {e: min(float(r["val_mae"]) for r in rows[:e]) if len(rows) >= e else None for e in CHECKPOINTS}
    spectra = {}
    rep = d / "spectra_val" / "report.json"
    if rep.is_file():
        r = json.loads(rep.read_text())
        by = r.get("omega_1_by_class") or {}
        spectra = {"omega_1_mae": r["omega_1_mae"], "above_2600_mae": r["per_region"]["above_2600"]["mae"],
                   **{f"omega_1_bias_{c}": (by.get(c) or {}).get("mean_error") for c in ("O-H", "N-H", "C-H only")}}
    return {"config": d.name, "changed": "; ".join(f"{k}={v}" for k, v in changed.items()) or "(defaults)",
            "epochs": len(rows), "of": cfg["train"]["epochs"], "best_val_mae": float(best["val_mae"]),
            "best_epoch": int(best["epoch"]), **{f"best_by_{e}": best_by[e] for e in CHECKPOINTS},
            "last_train_loss": float(rows[-1]["train_loss"]),
            "s_per_epoch": sum(secs) / len(secs), "finished": (d / "metrics.json").is_file(), **spectra}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", nargs="?", default="runs/tune_alpha")
    p.add_argument("--csv", help="also write the table as CSV here")
    a = p.parse_args(argv)
    rows = [r for d in sorted(Path(a.root).iterdir()) if d.is_dir() and (r := row(d))]
    if not rows:
        print(f"{a.root}: no configuration has a history.csv yet", file=sys.stderr)
        return 1
    extra = [k for k in SPECTRA if any(k in r for r in rows)]
    print("| config | changed | epochs | best val MAE (target units) | at epoch | best by epoch "
          + " / ".join(map(str, CHECKPOINTS)) + " | last train loss "
          "| s/epoch | finished |" + "".join(f" val {k.replace('_', ' ')} |" for k in extra))
    print("|---|---|---:|---:|---:|---|---:|---:|---|" + "---:|" * len(extra))
    for r in sorted(rows, key=lambda r: r["best_val_mae"]):
        by = " / ".join("-" if r[f"best_by_{e}"] is None else f"{r[f'best_by_{e}']:.3f}" for e in CHECKPOINTS)
        more = "".join(" - |" if r.get(k) is None else f" {r[k]:+.1f} |" if "bias" in k else f" {r[k]:.2f} |" for k in extra)
        print(f"| {r['config']} | {r['changed']} | {r['epochs']}/{r['of']} | {r['best_val_mae']:.4f} | {r['best_epoch']} "
              f"| {by} | {r['last_train_loss']:.5f} | {r['s_per_epoch']:.1f} | {'yes' if r['finished'] else 'no'} |{more}")
    if a.csv:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with open(a.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
