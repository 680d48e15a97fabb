"""`qmlrp quickstart`: the data stage of the pipeline on the embedded QM9, end to end.

Featurizes a seeded sample of QM9 into the cache, writes the 10-fold split, trains a weave
network for alpha on fold 0, explains its test molecules with LRP (group relevance here, and the
full `qmlrp explain` output with heatmaps and faithfulness under `explain/`), measures the
Molecular Graph (how often each of the 12 feature groups is active, target statistics) and
writes `report.html` with its figures.
"""
from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np


def feature_group_activity(ds, max_molecules: int | None = None) -> dict:
    """Per feature group: fraction of atoms (or ordered atom pairs) where the group is non-zero,
    and the mean absolute value per atom (pair) over the dataset."""
    from molgraph import FEATURE_GROUPS

    n = len(ds) if max_molecules is None else min(len(ds), max_molecules)
    active = {g: 0.0 for g in FEATURE_GROUPS}
    magnitude = {g: 0.0 for g in FEATURE_GROUPS}
    atoms = pairs = 0
    for i in range(n):
        g = ds[i]
        k = g.n_atoms
        atoms += k
        pairs += k * (k - 1)
        for name, grp in FEATURE_GROUPS.items():
            block = (g.atom_features if grp.kind == "atom" else g.pair_features)[..., grp.slice]
            active[name] += float((block != 0).any(-1).sum())
            magnitude[name] += float(block.abs().sum())
    out = {}
    for name, grp in FEATURE_GROUPS.items():
        denom = atoms if grp.kind == "atom" else pairs
        out[name] = {"kind": grp.kind, "n_features": len(grp.indices), "active_fraction": active[name] / denom,
                     "mean_abs_sum": magnitude[name] / denom}
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _group_bars(values: dict, path: Path, ylabel: str, title: str, colors) -> None:
    """One bar per feature group, names on the x axis."""
    plt = _pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(range(len(names)), [values[n] for n in names], color=colors)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot(groups: dict, alpha: np.ndarray, zpve: np.ndarray, natoms: np.ndarray, out: Path) -> list[str]:
    colors = ["tab:blue" if g["kind"] == "atom" else "tab:orange" for g in groups.values()]
    _group_bars({n: g["active_fraction"] for n, g in groups.items()}, out / "feature_groups.png",
                "fraction of atoms / atom pairs with the group active",
                "Molecular Graph feature groups (blue: atom, orange: pair)", colors)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    axes[0].hist(alpha, bins=50, color="tab:green")
    axes[0].set_xlabel("alpha / bohr^3")
    axes[1].hist(zpve, bins=50, color="tab:purple")
    axes[1].set_xlabel("ZPVE / eV")
    axes[2].hist(natoms, bins=np.arange(natoms.min(), natoms.max() + 2) - 0.5, color="tab:gray")
    axes[2].set_xlabel("atoms per molecule")
    for a in axes:
        a.set_ylabel("molecules")
    fig.tight_layout()
    fig.savefig(out / "targets.png", dpi=120)
    plt.close(fig)
    return ["feature_groups.png", "targets.png"]


def group_relevance(atom_rel, pair_rel) -> dict[str, np.ndarray]:
    """Relevance (B, N, 21) and (B, N, N, 13) -> {group: (B,) summed over its features, all atoms
    or all ordered atom pairs}."""
    from molgraph import GROUP_NAMES
    from molgraph.relevance import group_sums

    sums = group_sums(atom_rel, pair_rel).numpy()  # (B, 12)
    return {n: sums[:, k] for k, n in enumerate(GROUP_NAMES)}


def _train_and_explain(ds, kf, out: Path, seed: int, epochs: int) -> dict:

    import gcnn

    fold = kf.fold(0)
    model_dir = out / "model_alpha"
    trainer = gcnn.Trainer(model_dir, gcnn.WeaveConfig(), gcnn.TrainConfig(targets=("alpha_bohr3",), epochs=epochs, batch_size=64, seed=seed),
                           log=lambda m: print(f"      {m}"))
    trainer.fit(ds.subset(fold.train), ds.subset(fold.val), split_meta={"digest": fold.digest, **fold.meta})
    test = ds.subset(fold.test)
    metrics = trainer.evaluate(test)["targets"]["alpha_bohr3"]
    gcnn.domain.record(model_dir, ds.subset(fold.train))  # predict/explain then flag molecules unlike these
    predictor = gcnn.load(model_dir)
    net = predictor.models[0].model  # the WeaveNet, standardized output
    from molgraph import GROUP_NAMES

    from .explain.relevance_pass import relevance_batches

    per_group = {n: np.zeros(len(test)) for n in GROUP_NAMES}
    errors = []
    for idx, _, e in relevance_batches(net, test.__getitem__, test.n_atoms, "epsilon", batch_size=64):
        for n, v in group_relevance(e.relevance[0], e.relevance[1]).items():
            per_group[n][idx] = v
        errors.append(float(e.conservation_error().max()))
    total_abs = sum(np.abs(v).mean() for v in per_group.values())
    groups = {n: {"mean": float(v.mean()), "share": float(np.abs(v).mean() / total_abs)} for n, v in per_group.items()}
    _group_bars({n: g["share"] for n, g in groups.items()}, out / "group_relevance.png", "share of |relevance|",
                "What the weave network uses for alpha (LRP-epsilon, test molecules of fold 0)", "tab:red")
    y = ds.subset(fold.train).target("alpha_bohr3")
    print(f"      test MAE {metrics['mae']:.2f} bohr^3 on {len(test)} molecules")
    return {
        "architecture": "gcnn.WeaveNet (defaults)", "target": "alpha_bohr3", "rule": "epsilon (1e-6)",
        "model_dir": model_dir.name, "epochs": trainer.state_["epoch"],
        "n_train": len(fold.train), "n_val": len(fold.val), "n_test": len(test), "test_mae_bohr3": metrics["mae"],
        "baseline_mae_bohr3": float(np.abs(test.target("alpha_bohr3") - y.mean()).mean()), "groups": groups,
        "max_conservation_error": max(errors), "figure": "group_relevance.png",
    }


def published_on(test) -> list[dict]:
    """What the published full-QM9 models (`qmlrp models`) predict for the quickstart's test
    molecules: the out-of-fold MAE (each molecule predicted by the shipped fold model whose test
    bin holds it, where one ships) and, apart, the ensemble's MAE on the molecules every shipped
    member trained or validated on (not a test), with the applicability-domain flags."""
    import gcnn

    from . import published

    rows = []
    ids = [int(i) for i in test.ids]
    for name in published.names():
        c = published.card(name)
        if c["target"] not in test.manifest["scalar_targets"]:
            continue
        pred = gcnn.load(published.ROOT / name)
        graphs = [test[i] for i in range(len(test))]
        members = pred.member_predictions(graphs)[:, :, 0]  # (folds, M)
        y = np.asarray(test.target(c["target"]), dtype=np.float64)
        unseen = published.unseen(name, ids)  # (M, folds): member f never saw molecule m (its test bin)
        never = unseen.any(1)
        own = members.T[np.arange(len(ids)), unseen.argmax(1)]  # the member that never saw it, where one does
        seen = ~never
        verdicts = pred.check_domain(graphs) or []
        rows.append({"name": name, "target": c["target"], "unit": c["unit"], "folds": len(c["folds"]),
                     "n": len(ids), "n_unseen": int(never.sum()),
                     "mae_unseen": float(np.abs(own - y)[never].mean()) if never.any() else None,
                     "mae_seen": float(np.abs(members.mean(0) - y)[seen].mean()) if seen.any() else None,
                     "n_outside_domain": int(sum(not v.inside for v in verdicts)),
                     "published_mae": c["mae_mean"]})
    return rows


def run(out: Path, sample: int = 2000, seed: int = 0, cache_root=None, workers=None, epochs: int = 30) -> int:
    from molgraph import qm9, splits
    from molgraph.storage import atomic_write_json, atomic_write_text

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/5] featurizing a seeded sample of {sample} QM9 molecules (qm9pack)")
    ds = qm9.load(sample=sample, seed=seed, cache_root=cache_root, workers=workers)
    rep = ds.report()
    print(f"      {rep['n_molecules']} featurized, {rep['n_failed']} failed; cache {ds.path}")
    print("[2/5] writing the seeded 10-fold split")
    kf = splits.kfold(ds.ids, k=10, seed=seed, source="qm9pack", source_checksum=ds.manifest["source_checksum"],
                      featurizer_version=ds.manifest["featurizer_version"], sample=sample)
    kf.save(out / "split_10fold.json")
    print("[3/5] training a weave network for alpha on fold 0, explaining its test molecules with LRP")
    model_info = _train_and_explain(ds, kf, out, seed, epochs)
    print("      heatmaps, faithfulness and the explanation report (qmlrp explain)")
    from .explain.command import run as explain_run

    atomic_write_text(out / "test_ids.txt", "\n".join(str(int(i)) for i in kf.fold(0).test) + "\n")
    explain_run(out / model_info["model_dir"], out / "explain", ids_file=str(out / "test_ids.txt"), heatmaps=6, faithfulness=100,
                cache_root=cache_root, progress=False, log=lambda m: print(f"      {m}"))
    model_info["explain_report"] = "explain/report.html"
    print("      the published full-QM9 models (qmlrp models) on the same test molecules")
    model_info["published"] = published_on(ds.subset(kf.fold(0).test))
    for r in model_info["published"]:
        print(f"      {r['name']}: out-of-fold MAE {r['mae_unseen']:.4g} {r['unit']} on the {r['n_unseen']} test molecules "
              f"in a shipped fold's test bin"
              if r["mae_unseen"] is not None else f"      {r['name']}: every test molecule was in its training set")
    print("[4/5] measuring feature groups and targets")
    groups = feature_group_activity(ds)
    alpha, zpve = ds.target("alpha_bohr3"), ds.target("zpve_ev")
    targets = {name: {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)), "max": float(np.max(v))}
               for name, v in (("alpha_bohr3", alpha), ("zpve_ev", zpve))}
    print("[5/5] writing the report")
    figures = _plot(groups, alpha, zpve, ds.n_atoms, out)
    summary = {
        "sample": sample, "seed": seed, "n_molecules": rep["n_molecules"], "n_failed": rep["n_failed"],
        "failures": rep["failures"], "perception": rep["perception"], "cache": str(ds.path),
        "split": {"file": "split_10fold.json", "digest": kf.digest, "bin_sizes": [len(b) for b in kf.bins]},
        "feature_groups": groups, "targets": targets, "model": model_info, "seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(out / "summary.json", summary)
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{g['kind']}</td><td>{g['n_features']}</td>"
        f"<td>{g['active_fraction']:.3f}</td><td>{g['mean_abs_sum']:.3f}</td></tr>"
        for n, g in groups.items()
    )
    model_rows = "".join(f"<tr><td>{n}</td><td>{v['mean']:+.4f}</td><td>{v['share']:.3f}</td></tr>"
                         for n, v in model_info["groups"].items())
    def _fmt(v):
        return "n/a" if v is None else f"{v:.4g}"

    pub_rows = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{r['target']}</td><td>{r['folds']}</td><td>{r['n_unseen']} of {r['n']}</td>"
        f"<td>{_fmt(r['mae_unseen'])} {r['unit']}</td><td>{_fmt(r['mae_seen'])} {r['unit']}</td>"
        f"<td>{r['n_outside_domain']}</td><td>{_fmt(r['published_mae'])} {r['unit']}</td></tr>"
        for r in model_info["published"])
    fails = "".join(f"<li>qm9:{f['id']}: {html.escape(f['reason'])}</li>" for f in rep["failures"]) or "<li>none</li>"
    trows = "".join(f"<tr><td>{n}</td><td>{t['mean']:.4f}</td><td>{t['std']:.4f}</td><td>{t['min']:.4f}</td><td>{t['max']:.4f}</td></tr>"
                    for n, t in targets.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>qmlrp quickstart</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}td,th{{padding:2px 10px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>qmlrp quickstart: a weave network on QM9, trained and explained</h1>
<p>{rep['n_molecules']} molecules featurized from a seeded sample of {sample} (seed {seed}) of the embedded QM9
(qm9pack); {rep['n_failed']} failed. Bonds from: {', '.join(f'{k} {v}' for k, v in rep['perception'].items())}.
Run time {summary['seconds']} s.</p>
<h2>Feature groups</h2>
<p>Fraction of atoms (atom groups) or ordered atom pairs (pair groups) on which the group is non-zero,
and the mean absolute feature sum per atom / pair.</p>
<table><tr><th>group</th><th>kind</th><th>features</th><th>active fraction</th><th>mean |x| sum</th></tr>{rows}</table>
<p><img src="{figures[0]}" alt="feature group activity" width="720"></p>
<h2>A model and its explanation</h2>
<p>A weave network ({model_info['architecture']}, model directory <a href="{model_info['model_dir']}/config.json">{model_info['model_dir']}</a>)
trained for alpha on fold 0 ({model_info['n_train']} training, {model_info['n_val']} validation molecules,
{model_info['epochs']} epochs): test MAE <b>{model_info['test_mae_bohr3']:.2f} bohr^3</b> on {model_info['n_test']} molecules
(predicting the mean gives {model_info['baseline_mae_bohr3']:.2f}). A sample of 2,000 molecules is a
demonstration; the accuracy of Faber et al. needs all of QM9 (<code>qmlrp train</code>).</p>
<p>LRP ({model_info['rule']}) of the standardized prediction (alpha - mean) / std on every test molecule,
summed into the 12 feature groups: mean relevance per molecule and the group's share of the total
absolute relevance. Relevance + absorbed = explained to {model_info['max_conservation_error']:.1e}.</p>
<table><tr><th>group</th><th>mean relevance</th><th>share of |relevance|</th></tr>{model_rows}</table>
<p><img src="{model_info['figure']}" alt="group relevance" width="720"></p>
<p>The same model explained by <code>qmlrp explain</code>: bootstrap confidence intervals, heatmaps of
typical and extreme molecules, and the faithfulness check: <a href="{model_info['explain_report']}">explain/report.html</a>.</p>
<h2>The published models on the same molecules</h2>
<p>The models trained on all of QM9 that ship with qmlrp (<code>qmlrp models</code>; 1 to 10 fold models
each), predicting this run's test molecules. "Out of fold": molecules in the test bin of a shipped
fold model, each predicted by that model, which never saw it; the others were in the training or
validation data of every shipped model, so the ensemble's error on them is not a test.</p>
<table><tr><th>model</th><th>target</th><th>fold models</th><th>out of fold</th><th>MAE, out of fold</th>
<th>MAE, ensemble, seen</th><th>outside the domain</th><th>published test MAE</th></tr>{pub_rows}</table>
<h2>Targets</h2><table><tr><th>target</th><th>mean</th><th>std</th><th>min</th><th>max</th></tr>{trows}</table>
<p><img src="{figures[1]}" alt="target distributions" width="900"></p>
<h2>Split</h2><p>Seeded shuffle into 10 uniform bins: <a href="split_10fold.json">split_10fold.json</a>
(digest {kf.digest}; bin sizes {min(summary['split']['bin_sizes'])}-{max(summary['split']['bin_sizes'])}).</p>
<h2>Molecules that failed</h2><ul>{fails}</ul>
<p>Numbers: <a href="summary.json">summary.json</a>. Rerun: <code>qmlrp quickstart --sample {sample} --seed {seed}</code>.</p>
</body></html>
"""
    atomic_write_text(out / "report.html", page)
    print(f"done in {summary['seconds']} s: {out / 'report.html'}")
    return 0
