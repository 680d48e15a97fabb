"""The trained models that ship with qmlrp (issue 11: Faber et al. never published theirs).

Each published model is a folder of this package, `<name>/`, with the finished fold models of
one target's 10-fold cross-validation on all of QM9 (`fold_K/`: config.json, weights.pt,
checksums.json, metrics.json, domain.npz; loaded weights-only, checksums verified), `card.json`
(what, how, figures) and `MODEL_CARD.md`. `qmlrp predict --model qm9-alpha mol.xyz` resolves the
name here; with several folds the prediction is the ensemble mean and the uncertainty its spread.
`qmlrp models` lists them; `qmlrp publish CV_DIR --name NAME` (re)builds one from a
cross-validation directory.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parent
FOLD_FILES = ("config.json", "weights.pt", "checksums.json", "metrics.json", "domain.npz")
SPLIT_FILE = "split_bins.npz"  # the k-fold bins (QM9 ids), to tell which molecules a fold model trained on


def names() -> list[str]:
    return sorted(p.name for p in ROOT.iterdir() if (p / "card.json").is_file())


def card(name: str) -> dict:
    path = ROOT / name / "card.json"
    if not path.is_file():
        raise KeyError(name)
    return json.loads(path.read_text())


def resolve(model: str | Path) -> Path:
    """A model argument -> a directory: an existing path as it is, else a published name."""
    p = Path(model)
    if p.exists():
        return p
    if str(model) in names():
        return ROOT / str(model)
    known = ", ".join(names()) or "none"
    raise FileNotFoundError(f"{model}: no such model directory, and not a published model (published: {known}; "
                            f"`qmlrp models` lists them)")


def unseen(name: str, qm9_ids) -> np.ndarray:
    """(M, folds) bool: True where fold model f of a published model never saw QM9 id m (it is in
    bin f, that fold's test bin); False where it trained or validated on it."""
    with np.load(ROOT / name / SPLIT_FILE, allow_pickle=False) as z:
        bins = {int(k.split("_")[1]): set(int(i) for i in z[k]) for k in z.files if k.startswith("bin_")}
    ids = [int(i) for i in qm9_ids]
    return np.array([[i in bins[f] for f in card(name)["folds"]] for i in ids], dtype=bool).reshape(len(ids), -1)


def publish(cv_dir: str | Path, name: str, out_root: str | Path | None = None, command: str = "") -> dict:
    """Copy the finished folds of a `qmlrp cv` directory (metrics.json and domain.npz present) into
    `<out_root or this package>/<name>/` and write its card. Returns the card."""
    from gcnn import load

    cv_dir = Path(cv_dir)
    dest = Path(out_root) / name if out_root else ROOT / name
    folds = sorted((d for d in cv_dir.glob("fold_*") if (d / "metrics.json").is_file()),
                   key=lambda d: int(d.name.split("_")[1]))
    missing = [d.name for d in folds if not (d / "domain.npz").is_file()]
    if missing:
        raise ValueError(f"{cv_dir}: {', '.join(missing)} have no applicability domain; run `qmlrp domain {cv_dir}` first")
    if not folds:
        raise ValueError(f"{cv_dir}: no finished fold (fold_*/metrics.json)")
    load(cv_dir)  # every member loads, checksums verified, before anything is copied
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    rows = []
    for d in folds:
        (tmp / d.name).mkdir(parents=True)
        for f in FOLD_FILES:
            shutil.copy2(d / f, tmp / d.name / f)
        met = json.loads((d / "metrics.json").read_text())
        hist = (d / "history.csv").read_text().strip().splitlines()[1:] if (d / "history.csv").is_file() else []
        minutes = sum(float(r.split(",")[4]) for r in hist) / 60 if hist else None
        for t, m in met["targets"].items():
            rows.append({"fold": int(d.name.split("_")[1]), "target": t, "unit": m["unit"], "mae": m["mae"],
                         "rmse": m["rmse"], "r2": m["r2"], "n_train": met["n_train"], "n_test": met["n_test"],
                         "epochs": len(hist), "training_minutes": round(minutes, 1) if minutes else None,
                         **({"set": {k: m[k] for k in SET_FIGURES if k in m}} if "per_region" in m else {})})
    cfg0 = json.loads((folds[0] / "config.json").read_text())
    target = cfg0["targets"][0]
    maes = np.array([r["mae"] for r in rows])
    info = {
        "name": name, "target": target, "unit": cfg0["units"][target], "folds": [r["fold"] for r in rows],
        "k": cfg0["split"].get("k"), "split": {k: cfg0["split"][k] for k in ("kfold_digest", "source", "source_checksum")
                                              if k in cfg0["split"]},
        "inputs": cfg0.get("inputs"), "model": cfg0["model"], "train": cfg0["train"], "per_fold": rows,
        "mae_mean": float(maes.mean()), "mae_std": float(maes.std(ddof=1)) if len(maes) > 1 else None,
        "command": command or _command(cfg0, target, cv_dir),
    }
    from molgraph import splits

    kf = splits.load_split(cv_dir / "split.json")
    labels = (cfg0.get("inputs") or {}).get("labels")
    if labels:
        info["labels"] = {**_label_level(labels), "n_molecules": int(sum(len(b) for b in kf.bins)),
                          "n_heavy": _heavy_range(folds)}
    if cfg0.get("init_from"):
        info["init_from"] = cfg0["init_from"]
    skill = against_mean(folds, target)
    if skill:
        info["against_mean"] = skill
    np.savez_compressed(tmp / SPLIT_FILE, digest=np.array(kf.digest),
                        **{f"bin_{i}": np.asarray(b, dtype=np.int32) for i, b in enumerate(kf.bins)})
    (tmp / "card.json").write_text(json.dumps(info, indent=2))
    (tmp / "MODEL_CARD.md").write_text(model_card(info))
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return info


def against_mean(folds: list[Path], target: str, resamples: int = 2000, seed: int = 0) -> dict | None:
    """The shipped folds' pooled test predictions (test_predictions.npz) against the baseline of
    predicting each fold's training mean (config.json): MAE, baseline MAE and the skill
    1 - MAE / baseline MAE with a 95 % bootstrap interval over the molecules. None when a fold
    kept no test predictions (folds finished before they were kept, vector targets)."""
    from gcnn.training import load_test_predictions

    err, base = [], []
    for d in folds:
        kept = load_test_predictions(d, target)
        if kept is None:
            return None
        cfg = json.loads((d / "config.json").read_text())
        y, p = kept[1].astype(np.float64), kept[2].astype(np.float64)
        err.append(np.abs(p - y))
        base.append(np.abs(cfg["mean"][cfg["targets"].index(target)] - y))
    e, b = np.concatenate(err), np.concatenate(base)
    if not len(e) or b.sum() == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, len(e), size=(resamples, len(e)))
    boot = 1 - e[idx].mean(1) / b[idx].mean(1)
    return {"n": int(len(e)), "mae": float(e.mean()), "baseline_mae": float(b.mean()), "skill": float(1 - e.mean() / b.mean()),
            "skill_ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))], "resamples": resamples}


SET_FIGURES = ("per_region", "omega_1_mae", "per_molecule_mae_median", "zpve_from_set_mae_ev", "zpve_from_true_set_mae_ev")
# config key -> flag of the settings a `qmlrp cv` command states when they differ from the defaults
_MODEL_FLAGS = {"atom_hidden": "--atom-hidden", "pair_hidden": "--pair-hidden", "n_layers": "--layers",
                "readout_hidden": "--readout-hidden", "head_hidden": "--head-hidden", "pair_cutoff": "--pair-cutoff",
                "xh_head": "--xh-head", "skeleton_head": "--skeleton-head", "skeleton_context": "--skeleton-context",
                "skeleton_residual": "--skeleton-residual", "readout_activation": "--readout-activation"}
_TRAIN_FLAGS = {"lr": "--lr", "weight_decay": "--weight-decay", "lr_factor": "--lr-factor", "lr_patience": "--lr-patience",
                "patience": "--patience", "loss": "--loss", "set_layout": "--set-layout", "clip_grad_norm": "--clip-grad-norm",
                "schedule": "--schedule", "mix_sizes": "--mix-sizes"}


def _changed_settings(model: dict, train: dict) -> list[str]:
    """`--flag value` for every model or training setting of a config.json that differs from the
    defaults (the Faber-like configuration)."""
    from dataclasses import asdict

    import gcnn

    def plain(v):
        return tuple(v) if isinstance(v, list) else v  # JSON lists against the dataclasses' tuples

    out = []
    for table, defaults, flags in ((model, asdict(gcnn.WeaveConfig()), _MODEL_FLAGS),
                                   (train, asdict(gcnn.TrainConfig()), _TRAIN_FLAGS)):
        for key, flag in flags.items():
            v = table.get(key)
            if v is not None and plain(v) != plain(defaults.get(key)):
                if isinstance(v, bool):  # a switch: stated when on
                    if v:
                        out.append(flag)
                    continue
                out.append(f"{flag} {','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}")
    return out


def _command(cfg: dict, target: str, cv_dir: Path) -> str:
    """The `qmlrp cv` command a CV directory's config says it came from (ids files are not
    recorded: a label model's command names them by what they hold)."""
    t = cfg["train"]
    parts = [f"qmlrp cv --target {target} --folds {cfg['split'].get('k')} --epochs {t['epochs']} --batch-size "
             f"{t['batch_size']}"]
    labels = (cfg.get("inputs") or {}).get("labels")
    if labels:
        parts.append(f"--labels {labels['table']} --ids <the table's labelled ids>")
    parts += _changed_settings(cfg.get("model", {}), t)
    if cfg.get("init_from"):
        parts.append(f"--init-from {cfg['init_from']['model']}")
    if cfg["split"].get("train_size") is not None:
        parts.append(f"--train-size {cfg['split']['train_size']}")
    parts.append(f"--out {cv_dir}")
    return " ".join(parts)


def _label_level(labels: dict) -> dict:
    """The label table's record plus the level of theory its rows state (xc, basis, result key)."""
    import csv

    out = {k: labels.get(k) for k in ("table", "sha256")}
    path = next((Path(p) for p in (labels.get("table"), labels.get("absolute")) if p and Path(p).is_file()), None)
    if path is not None:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for col in ("xc", "basis", "key", "code_version"):
            vals = sorted({r.get(col) for r in rows if r.get(col)})
            out[col] = vals[0] if len(vals) == 1 else vals
    return out


def _heavy_range(folds) -> list | None:
    """[min, max] heavy atoms of the fold models' training molecules (their domains)."""
    from gcnn.domain import Domain

    ranges = [d.n_heavy for d in (Domain.load(f) for f in folds) if d is not None and d.n_heavy is not None]
    return [min(r[0] for r in ranges), max(r[1] for r in ranges)] if ranges else None


BARS = {"alpha_bohr3": (0.227, "0.227 bohr^3"), "zpve_ev": (0.00975, "9.75 meV")}  # the proposal's bars
_LIMITS = ("Intended use: predictions for QM9-like molecules (neutral, closed-shell, H C N O F, up to 9 heavy "
           "atoms and 29 atoms, near-equilibrium geometries; QM9's level B3LYP/6-31G(2df,p)), and as a subject of "
           "explanation (`qmlrp explain --model NAME`). Every prediction carries an applicability-domain verdict; "
           "outside it (1 % of QM9's own test molecules, every molecule of another kind) the error is larger and "
           "unbounded. The ensemble spread of the fold models is a measure of disagreement, not a calibrated "
           "error bar. Geometries matter: the model reads 3D distances, so a crude or unrelaxed geometry changes "
           "the prediction.")


def _label_card(info: dict) -> str:
    """Data section of a model trained on a QM label table (qmlrp label)."""
    lab = info["labels"]
    heavy = lab.get("n_heavy")
    span = f"{heavy[0]}-{heavy[1]} heavy atoms" if heavy else "heavy-atom range not recorded"
    start = ""
    if info.get("init_from"):
        start = (f" Every fold model started from `{info['init_from']['model']}` (targets "
                 f"{', '.join(info['init_from'].get('targets', []))}; all weights but the output layer), then trained on "
                 f"the labels.")
    return (f"Labels: `{lab.get('table')}` (SHA-256 `{lab.get('sha256')}`), computed with `qmlrp label beta` at "
            f"{lab.get('xc')}/{lab.get('basis')} (result key `{lab.get('key')}`, {lab.get('code_version')}) on QM9's "
            f"geometries: {lab['n_molecules']} labelled molecules with {span}. Seeded {info['k']}-fold cross-validation "
            f"within them (split digest `{info['split'].get('kfold_digest')}`): fold K tests on bin K and trains on the "
            f"rest (10 % of it for validation and early stopping).{start}")


def _label_limits(info: dict) -> str:
    heavy = info["labels"].get("n_heavy")
    most = heavy[1] if heavy else "?"
    return (f"Intended use: a first, small-data model of a property no public data set holds at this level. It was "
            f"trained on {info['labels']['n_molecules']} molecules with at most {most} heavy atoms; QM9 has up to 9. A "
            f"molecule with more heavy atoms than that lies outside the training domain and `qmlrp predict` says so "
            f"(\"OUTSIDE the domain: N heavy atoms\"): its error is unknown and likely large. The figures above come "
            f"from test bins of about {max(1, info['labels']['n_molecules'] // (info['k'] or 10))} molecules each: read "
            f"their spread, not their last digit. The ensemble spread is disagreement between fold models, not a "
            f"calibrated error bar. Geometries matter (the model reads 3D distances).")


def _set_section(rows: list[dict], unit: str) -> str:
    """The frequency-set figures of each fold (docs/spectra.md): MAE per spectral region, of the
    highest mode omega_1, and of the ZPVE recomputed from the predicted set."""
    regions = list(rows[0]["set"]["per_region"])
    head = " | ".join(regions)
    out = ["\n\nFrequency sets: the MAE above is over all sorted modes (the 1-D earth mover's distance between "
           "predicted and QM9 stick spectra). Per region (by the true mode), the highest mode omega_1, and the ZPVE "
           "recomputed as half the predicted set's sum against QM9's ZPVE (QM9's own set reproduces it to the "
           "last column's figure):\n\n",
           f"| fold | {head} | omega_1 ({unit}) | ZPVE from the set (meV) | QM9's set (meV) |\n",
           "|---|" + "---:|" * (len(regions) + 3) + "\n"]
    for r in rows:
        st = r["set"]
        reg = " | ".join("-" if st["per_region"][k]["mae"] is None else f"{st['per_region'][k]['mae']:.1f}" for k in regions)
        z = st.get("zpve_from_set_mae_ev")
        zt = st.get("zpve_from_true_set_mae_ev")
        out.append(f"| {r['fold']} | {reg} | {st['omega_1_mae']:.2f} | {'-' if z is None else f'{1e3 * z:.2f}'} | "
                   f"{'-' if zt is None else f'{1e3 * zt:.2f}'} |\n")
    out.append("\nFor comparison (docs/spectra.md): omega_1 MAE of models trained for omega_1 alone, Faber et al.'s GC "
               "3.2 cm^-1 and Gilmer et al.'s MPNN 1.9 cm^-1; the dedicated ZPVE model `qm9-zpve` 6.83 meV on fold 0.\n")
    return "".join(out)


def model_card(info: dict) -> str:
    """MODEL_CARD.md of a published model: a full-QM9 CV model, or one trained on a QM label table
    (its data and limits sections say so)."""
    unit = info["unit"]
    n = len(info["per_fold"])
    train = {k: info["train"][k] for k in ("epochs", "batch_size", "lr", "lr_factor", "lr_patience", "patience")}
    if info.get("labels"):
        intro = (f"A weave network (Molecular Graph input; qmlrp's `gcnn.WeaveNet`) trained on QM labels computed in "
                 f"this project; {n} of {info['k']} fold models ship here.")
        data, limits = _label_card(info), _label_limits(info)
    else:
        faber_like = not _changed_settings(info["model"], info["train"])
        how = "the Faber-like configuration of" if faber_like else "the settings under 'How it was trained', in"
        intro = (f"A weave network (Molecular Graph input; {how} qmlrp's `gcnn.WeaveNet`) "
                 f"trained on all of QM9 with a seeded {info['k']}-fold cross-validation; {n} of {info['k']} fold models "
                 f"ship here" + (" (the rest are still training; the ensemble grows as they finish)."
                                 if n < (info["k"] or n) else "."))
        inputs = info.get("inputs") or {}
        data = (f"QM9 from the `qm9pack` wheel (source checksum `{inputs.get('source_checksum', '?')}`), featurizer "
                f"`{inputs.get('featurizer_version', '?')}`; k-fold split digest `{info['split'].get('kfold_digest')}` "
                f"(`qmlrp split --k 10` with seed 0 gives it). Fold K tests on bin K and trains on the rest (10 % of it "
                f"for validation and early stopping).")
        limits = _LIMITS
        if any(r.get("set") for r in info["per_fold"]):
            limits += (" The predicted set is QM9's kind of spectrum: harmonic B3LYP/6-31G(2df,p) frequencies, unscaled, "
                       "without intensities; compare it with experiment only after the usual scaling (about 0.96-0.97 "
                       "for this level, NIST CCCBDB), and read the X-H stretches of O-H and N-H with the per-class omega_1 errors "
                       "of docs/spectra.md in mind.")
    lines = [f"# {info['name']}: {info['target']} ({unit})\n\n", intro, "\n\n## Data and split\n\n", data,
             "\n\n## How it was trained\n\n",
             f"`{info['command']}`; model {json.dumps(info['model'])}; training {json.dumps(train)}.",
             "\n\n## Figures (each fold's test bin)\n\n",
             f"| fold | test MAE ({unit}) | RMSE | R^2 | training molecules | test molecules | epochs | minutes |\n"
             "|---|---:|---:|---:|---:|---:|---:|---:|\n"]
    for r in info["per_fold"]:
        lines.append(f"| {r['fold']} | {r['mae']:.5g} | {r['rmse']:.5g} | {r['r2']:.5f} | {r['n_train']} | {r['n_test']} | "
                     f"{r['epochs']} | {r['training_minutes']} |\n")
    sd = f" +- {info['mae_std']:.4g}" if info["mae_std"] is not None else " (one fold: no spread yet)"
    lines.append(f"\nMean test MAE over the shipped folds: {info['mae_mean']:.5g}{sd} {unit}.")
    am = info.get("against_mean")
    if am:
        lo, hi = am["skill_ci95"]
        lines.append(f" Against predicting each fold's training mean (MAE {am['baseline_mae']:.4g} {unit} on the same "
                     f"{am['n']} test molecules, pooled: {am['mae']:.4g}): skill 1 - MAE / baseline = {am['skill']:.3f} "
                     f"[{lo:.3f}, {hi:.3f}] (95 % bootstrap over the molecules).")
    sets = [r for r in info["per_fold"] if r.get("set")]
    if sets:
        lines.append(_set_section(sets, unit))
    bar = BARS.get(info["target"])
    if bar:
        verdict = "meets" if info["mae_mean"] <= bar[0] else "does not meet"
        lines.append(f" The proposal's reproduction bar is a 10-fold mean MAE <= {bar[1]}; the shipped folds' mean "
                     f"{verdict} it.")
    lines.append("\n")
    lines.append("\n## Intended use and limits\n\n" + limits + "\n")
    lines.append("\n## Loading\n\n`gcnn.load(path)` or `qmlrp predict --model NAME`: config.json + weights.pt read with "
                 "`torch.load(weights_only=True)`, domain.npz with `allow_pickle=False`; a file that does not match "
                 "checksums.json is refused with the reason.\n")
    return "".join(lines)
