"""The proposal's protocol on top of Trainer: k-fold cross-validation (resumable fold by fold),
the fold ensemble, a final model on all data, and learning curves on a fixed test set."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from molgraph.storage import atomic_write_text

from .model import WeaveConfig
from .progress import history_summary
from .domain import DOMAIN_FILE
from .domain import record as record_domain
from .training import TEST_PREDICTIONS, TrainConfig, Trainer, load_test_predictions


def cross_validate(ds, out: str | Path, config: TrainConfig, k: int = 10, seed: int = 0, final: bool = False,
                   model_config: WeaveConfig | None = None, log: Callable[[str], None] = print,
                   progress: bool = True, deadline: float | None = None, folds: Sequence[int] | None = None,
                   trainer_kwargs: dict | None = None, train_size: int | None = None) -> dict:
    """Train and test one model per fold into out/fold_<f>/ (a finished fold is skipped, an
    interrupted one resumes at its last epoch); write cv.json and cv.csv with every finished
    fold's metrics and the mean +- standard deviation; optionally out/final/ trained on all data.
    `deadline` (time.time()) stops at an epoch boundary before it, `folds` limits the work to
    those folds; summary['complete'] says whether all k folds are done. `train_size`: every fold
    trains on a seeded subsample of that many of its training molecules (`fold_train_ids`; the
    validation slice and test bin stay the fold's own), so that a CV per size is a learning
    curve in which every molecule is tested once per size."""
    from molgraph import TARGETS, splits

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split_path = out / "split.json"
    kf = splits.kfold(ds.ids, k=k, seed=seed, source=ds.manifest["source"], source_checksum=ds.manifest["source_checksum"])
    if split_path.exists():
        old = splits.load_split(split_path)
        if old.digest != kf.digest:
            raise ValueError(f"{split_path} holds another split (digest {old.digest}, now {kf.digest}); use another --out")
    else:
        kf.save(split_path)
    cv_json = out / "cv.json"
    if cv_json.exists():
        before = json.loads(cv_json.read_text()).get("train_size")
        if before != train_size:
            raise ValueError(f"{cv_json}: this CV trained on {before or 'all'} molecules per fold, not "
                             f"{train_size or 'all'}; use another --out")
    if train_size is not None and final:
        raise ValueError("--final trains on all data; it does not go with a training-set size")
    rows = []
    wanted = set(range(k) if folds is None else folds)
    out_of_time = False
    for f in range(k):
        fold_dir = out / f"fold_{f}"
        sp = kf.fold(f)
        train = fold_train_ids(sp, f, seed, train_size)  # the fold's own, or the seeded subsample
        if not (fold_dir / "metrics.json").exists():
            if out_of_time or f not in wanted:
                continue
            log(f"fold {f + 1}/{k}: {len(train)} train, {len(sp.val)} validation, {len(sp.test)} test")
            trainer = Trainer(fold_dir, model_config, config, log=log, progress=progress, **(trainer_kwargs or {}))
            meta = {"digest": sp.digest, **sp.meta}
            if train_size is not None:
                meta.update(train_size=int(train_size), train_seed=int(seed))
            trainer.fit(ds.subset(train), ds.subset(sp.val), split_meta=meta, deadline=deadline)
            if not trainer.finished:
                out_of_time = True
                continue
            trainer.evaluate(ds.subset(sp.test))
            # a finished fold keeps its weights, config, history and metrics; the optimizer state is
            # only for resuming, and metrics.json already marks the fold as done
            (fold_dir / "checkpoint.pt").unlink(missing_ok=True)
        if f in wanted and not out_of_time and not (fold_dir / DOMAIN_FILE).exists():
            record_domain(fold_dir, ds.subset(train), log=log)  # also for folds finished before domains
        if f in wanted and not out_of_time and not config.is_vector and not (fold_dir / TEST_PREDICTIONS).exists():
            # folds finished before test predictions were kept: the same evaluation again writes them
            Trainer(fold_dir, model_config, config, log=log, progress=False, **(trainer_kwargs or {})).evaluate(
                ds.subset(sp.test))
        metrics = json.loads((fold_dir / "metrics.json").read_text())
        run = _history_summary(fold_dir)
        for t, m in metrics["targets"].items():
            rows.append({"fold": f, "target": t, "unit": m["unit"], "mae": m["mae"], "rmse": m["rmse"], "r2": m["r2"],
                         "n_train": metrics["n_train"], "n_test": metrics["n_test"], **run})
    done = sorted({r["fold"] for r in rows})
    summary = {"k": k, "seed": seed, "split_digest": kf.digest, "complete": len(done) == k, "folds_done": done,
               "folds": rows, "targets": {}}
    if train_size is not None:
        summary["train_size"] = int(train_size)
    if not rows:
        return summary
    for t in config.targets:
        maes = np.array([r["mae"] for r in rows if r["target"] == t])
        summary["targets"][t] = {"unit": TARGETS[t].unit, "mae_mean": float(maes.mean()),
                                 "mae_std": float(maes.std(ddof=1)) if len(maes) > 1 else 0.0}
    with open(out / "cv.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(out / "cv.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "cv.md", cv_table(summary))
    if not config.is_vector:
        cv_figure(out, summary)
    if final and len(done) == k and not out_of_time:
        all_ids = np.sort(ds.ids)
        val = np.sort(np.random.default_rng(seed).permutation(all_ids)[: max(1, len(all_ids) // 10)])
        train = np.setdiff1d(all_ids, val)
        log(f"final model on all data: {len(train)} train, {len(val)} validation")
        Trainer(out / "final", model_config, config, log=log, progress=progress, **(trainer_kwargs or {})).fit(ds.subset(train), ds.subset(val),
                                                                                     deadline=deadline)
    return summary


def fold_train_ids(sp, fold: int, seed: int, train_size: int | None) -> np.ndarray:
    """The training molecules of fold `fold` of a k-fold split (`sp`, its TrainValTest): all of
    them, or a seeded subsample of `train_size` (seed and fold fix it; the sizes of one fold are
    nested: a smaller size's molecules are the first of a larger one's)."""
    train = np.asarray(sp.train)
    if train_size is None:
        return train
    if not 1 <= int(train_size) <= len(train):
        raise ValueError(f"fold {fold}: a training-set size of {train_size} outside 1..{len(train)} (its training "
                         f"molecules)")
    return np.sort(np.random.default_rng([int(seed), int(fold)]).permutation(train)[: int(train_size)])


def _history_summary(fold_dir: Path) -> dict:
    """Epochs trained, the best epoch (lowest validation MAE) and the training minutes of a fold
    (`gcnn.progress.history_summary`)."""
    h = history_summary(fold_dir)
    return {k: h[k] for k in ("epochs", "best_epoch", "minutes")}


def cv_table(summary: dict) -> str:
    """The per-fold table of a CV summary in Markdown: MAE, RMSE, R^2, epochs (best), minutes,
    molecules; then the mean +- standard deviation over the finished folds."""
    lines = []
    for t, stats in summary.get("targets", {}).items():
        unit = stats["unit"]
        lines += [f"{t} ({unit}), {len(summary['folds_done'])} of {summary['k']} folds", "",
                  "| fold | MAE | RMSE | R^2 | epochs (best) | minutes | train | test |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in summary["folds"] if r["target"] == t):
            ep = "" if r.get("epochs") is None else f"{r['epochs']} ({r['best_epoch']})"
            mins = "" if r.get("minutes") is None else f"{r['minutes']:.0f}"
            lines.append(f"| {r['fold']} | {r['mae']:.4g} | {r['rmse']:.4g} | {r['r2']:.5f} | {ep} | {mins} | "
                         f"{r['n_train']:,} | {r['n_test']:,} |")
        sd = f" +- {stats['mae_std']:.2g}" if len(summary["folds_done"]) > 1 else ""
        lines += ["", f"mean MAE {stats['mae_mean']:.4g}{sd} {unit}", ""]
    return "\n".join(lines)


def out_of_fold(out: str | Path, target: str) -> dict:
    """The pooled test-bin predictions of a CV directory's finished folds (each molecule predicted
    by the one fold model that never saw it): {'fold', 'ids', 'true', 'pred'} arrays."""
    parts = []
    for d in sorted(Path(out).glob("fold_*"), key=lambda p: int(p.name.split("_")[1])):
        kept = load_test_predictions(d, target) if (d / "metrics.json").exists() else None
        if kept is not None:
            parts.append((int(d.name.split("_")[1]), *kept))
    if not parts:
        return {"fold": np.zeros(0, int), "ids": np.zeros(0, int), "true": np.zeros(0), "pred": np.zeros(0)}
    return {"fold": np.concatenate([np.full(len(p[1]), p[0]) for p in parts]),
            **{key: np.concatenate([p[j] for p in parts]) for j, key in ((1, "ids"), (2, "true"), (3, "pred"))}}


def cv_figure(out: str | Path, summary: dict) -> Path | None:
    """cv.png: per target, each finished fold's test MAE with the mean +- standard deviation, and
    the out-of-fold parity plot of every molecule of the finished folds' test bins."""
    out = Path(out)
    targets = list(summary.get("targets", {}))
    if not targets:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(targets), 2, figsize=(9, 3.8 * len(targets)), squeeze=False)
    for row, t in zip(axes, targets):
        folds = [r for r in summary["folds"] if r["target"] == t]
        unit, stats = summary["targets"][t]["unit"], summary["targets"][t]
        ax = row[0]
        ax.plot([r["fold"] for r in folds], [r["mae"] for r in folds], "o", color="C0")
        m, sd = stats["mae_mean"], stats["mae_std"]
        ax.axhline(m, color="C0", lw=1)
        if sd > 0:
            ax.axhspan(m - sd, m + sd, color="C0", alpha=0.15)
        ax.set_xticks(range(summary["k"]))
        ax.set_xlim(-0.5, summary["k"] - 0.5)
        ax.set_xlabel("fold")
        ax.set_ylabel(f"test MAE / {unit}")
        ax.set_title(f"{t}: {len(folds)} of {summary['k']} folds, mean {m:.4g}" + (f" +- {sd:.2g}" if sd > 0 else ""))
        oof = out_of_fold(out, t)
        ax = row[1]
        if len(oof["true"]):
            lo, hi = float(min(oof["true"].min(), oof["pred"].min())), float(max(oof["true"].max(), oof["pred"].max()))
            ax.hexbin(oof["true"], oof["pred"], gridsize=80, bins="log", mincnt=1, cmap="viridis",
                      extent=(lo, hi, lo, hi))
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.6)
            mae = float(np.abs(oof["pred"] - oof["true"]).mean())
            ax.set_title(f"out of fold: {len(oof['true'])} molecules, MAE {mae:.4g}")
        else:
            ax.text(0.5, 0.5, "no test predictions kept", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(f"QM9 {t} / {unit}")
        ax.set_ylabel(f"predicted / {unit}")
    fig.tight_layout()
    path = out / "cv.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _full_size_model(d: Path, sp, config: TrainConfig, model_config, n: int) -> Path:
    """A finished model that stands for the learning curve's full-size point: it must have been
    trained on exactly this split's training molecules (digest), with the same training and model
    settings; otherwise a clear error says what differs."""
    cfg_path = d / "config.json"
    if not (d / "metrics.json").exists() or not cfg_path.exists():
        raise FileNotFoundError(f"--full-from {d}: no finished model there (config.json and metrics.json)")
    cfg = json.loads(cfg_path.read_text())
    if (cfg.get("split") or {}).get("digest") != sp.digest or cfg.get("n_train") != n:
        raise ValueError(f"--full-from {d}: trained on another split ({(cfg.get('split') or {}).get('digest')}, "
                         f"{cfg.get('n_train')} molecules) than the learning curve's full size ({sp.digest}, {n})")
    mine = {"model": (model_config or WeaveConfig(n_outputs=config.n_outputs)).to_json(), "train": config.to_json()}
    for key, want in mine.items():
        got = cfg.get(key, {})
        diff = sorted(k for k in set(want) | set(got) if json.dumps(want.get(k)) != json.dumps(got.get(k)))
        if diff:
            raise ValueError(f"--full-from {d}: its {key} settings differ from this learning curve's in "
                             f"{', '.join(diff)} ({', '.join(f'{k}={got.get(k)!r}, here {want.get(k)!r}' for k in diff)})")
    return d


def learning_curve(ds, out: str | Path, config: TrainConfig, sizes: Sequence[int], seed: int = 0,
                   model_config: WeaveConfig | None = None, log: Callable[[str], None] = print,
                   progress: bool = True, trainer_kwargs: dict | None = None,
                   deadline: float | None = None, full_from: str | Path | None = None) -> list[dict]:
    """Test MAE against training-set size on one fixed test set (bin 0 of the seeded 10-fold
    split) and validation set; each size trains into out/n_<size>/ (resumable). Writes
    learning_curve.csv and a log-log learning_curve.png over the sizes finished so far.
    trainer_kwargs: passed to every Trainer (an input stage, a start from another model);
    deadline: a time.time() value; the run stops at an epoch boundary before it (the sizes not
    finished are left out of the table; the same call resumes them). full_from: a finished model
    directory trained on all of the fold's training molecules with the same split and settings
    (fold 0 of a `qmlrp cv` run): the full-size point is read from it instead of trained again."""
    from molgraph import splits

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sp = splits.kfold(ds.ids, k=10, seed=seed).fold(0)
    sp.save(out / "split.json")
    pool = np.random.default_rng(seed).permutation(sp.train)
    rows = []
    target = config.targets[0]
    for n in sorted(set(int(s) for s in sizes)):
        if n > len(pool):
            log(f"size {n} skipped: only {len(pool)} training molecules")
            continue
        d = out / f"n_{n}"
        if full_from is not None and n == len(pool):
            d = _full_size_model(Path(full_from), sp, config, model_config, n)
        if not (d / "metrics.json").exists():
            log(f"training on {n} molecules")
            tr = Trainer(d, model_config, config, log=log, progress=progress, **(trainer_kwargs or {}))
            tr.fit(ds.subset(np.sort(pool[:n])), ds.subset(sp.val), split_meta={"digest": sp.digest, "train_size": n},
                   deadline=deadline)
            if not tr.finished:
                log(f"time limit: size {n} stopped at epoch {tr.state_['epoch']}; rerun the same command to resume")
                break
            tr.evaluate(ds.subset(sp.test))
            (d / "checkpoint.pt").unlink(missing_ok=True)  # finished: weights and metrics stay, optimizer state goes
        m = json.loads((d / "metrics.json").read_text())["targets"][target]
        rows.append({"n_train": n, "target": target, "unit": m["unit"], "mae": m["mae"], "rmse": m["rmse"],
                     "epochs": _history_summary(d)["epochs"], "model": str(d)})
    if rows:
        with open(out / "learning_curve.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 4))
        ax.loglog([r["n_train"] for r in rows], [r["mae"] for r in rows], "o-")
        ax.set_xlabel("training molecules")
        ax.set_ylabel(f"test MAE / {rows[0]['unit']}")
        ax.set_title(f"{target}: learning curve\n{len(sp.test):,} test molecules", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "learning_curve.png", dpi=120)
        plt.close(fig)
    return rows
