"""`qmlrp explain`: the command, in stages (inputs, relevance pass, files, statistics, heatmaps,
faithfulness, report)."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .charts import plot_groups
from .heatmaps import draw_heatmaps, select_representative
from .inputs import Inputs, file_inputs, label_table_of, qm9_inputs, read_ids, split_test_ids
from .models import load_model
from .relevance_pass import explain_inputs, reference_graph
from .statistics import cancellation, group_statistics, hydrogen_share
from .store import RelevanceSet, _group_names, save_relevance, write_groups_csv


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="model directory (qmlrp train) or a directory of fold_*/ models (qmlrp cv)")
    p.add_argument("--fold", type=int, help="with a CV directory: the fold model to explain (default: the first)")
    p.add_argument("files", nargs="*", help="XYZ/SDF/MOL files to explain instead of QM9 molecules")
    p.add_argument("--split", choices=("test", "val", "train"),
                   help="molecules of the model's own split (default: test, when no --ids and no files)")
    p.add_argument("--ids", help="file of QM9 ids to explain")
    p.add_argument("--rule", default="epsilon", help="LRP composite preset (default epsilon)")
    p.add_argument("--histogram-rule", choices=("pass", "rescale"),
                   help="LRP rule of the Gaussian-histogram readout: 'pass' (all membership relevance to the "
                        "value) or 'rescale' (relative to the value 0, a ReLU-dead feature); default: gcnn's "
                        "(gcnn.lrp_rules.DEFAULT_HISTOGRAM_RULE)")
    p.add_argument("--target", help="which target of a multi-target model")
    p.add_argument("--reference", default="mean",
                   help="what the explained quantity is measured from: mean (default: the training mean), empty "
                        "(the molecule with no atoms: relevance adds up to the property above the network's "
                        "constant part), or a file with one reference molecule")
    p.add_argument("--output", help="vector models (frequency sets): what is explained, summed over the chosen "
                                    "outputs: sum (default: all of a molecule's values), mode:K (the K-th sorted "
                                    "value), above:X or below:X (the values predicted above / below X, target units)")
    p.add_argument("--max-molecules", type=int, help="explain a seeded random sample of N of the selected molecules")
    p.add_argument("--heatmaps", type=int, default=12, help="heatmaps of a representative set of K molecules (default 12)")
    p.add_argument("--faithfulness", type=int, default=200,
                   help="perturbation check on a seeded sample of N molecules (default 200; 0 skips it)")
    p.add_argument("--random-orders", type=int, default=5, help="random-order baselines of the faithfulness check (default 5)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs (default 2000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="seed of --max-molecules, the bootstrap and the faithfulness sample")
    p.add_argument("--cache-dir", help="where QM9 caches live (default $QMLRP_CACHE or ~/.cache/qmlrp)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_from_args(args) -> int:
    try:
        return run(model=args.model, out=Path(args.out), files=args.files, split=args.split, ids_file=args.ids,
                   rule=args.rule, histogram_rule=args.histogram_rule, target=args.target, output=args.output, reference=args.reference, fold=args.fold, max_molecules=args.max_molecules,
                   heatmaps=args.heatmaps, faithfulness=args.faithfulness, random_orders=args.random_orders,
                   bootstrap=args.bootstrap, batch_size=args.batch_size, seed=args.seed, cache_root=args.cache_dir,
                   progress=not args.no_progress)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"qmlrp explain: {msg}", file=sys.stderr)
        return 2


def choose_inputs(lm, files: Sequence[str], split: str | None, ids_file: str | None, max_molecules: int | None,
                  seed: int, cache_root, log, progress: bool) -> Inputs:
    """Stage 1: the molecules to explain: user files, a file of QM9 ids, or the model's own split
    (rejoined with the label table the model recorded), optionally a seeded sample."""
    meta_split = lm.config.get("split", {})
    if files:
        inputs = file_inputs(list(files))
    else:
        if ids_file:
            ids, desc = np.asarray(read_ids(ids_file)), f"QM9 ids from {ids_file}"
        else:
            ids, desc = split_test_ids(lm.model_dir, split or "test")
        if max_molecules is not None and max_molecules < len(ids):
            ids = np.sort(np.random.default_rng(seed).choice(ids, size=max_molecules, replace=False))
            desc += f", a seeded sample (seed {seed}) of {max_molecules}"
        inputs = qm9_inputs(ids, lm.target, meta_split.get("source", "qm9pack"), meta_split.get("source_checksum"),
                            cache_root, desc, log=log, progress=progress, labels=label_table_of(lm.config, lm.model_dir))
    if files and max_molecules is not None and max_molecules < len(inputs.ids):
        keep = np.sort(np.random.default_rng(seed).choice(len(inputs.ids), size=max_molecules, replace=False))
        g, mo = inputs.graph, inputs.molecule
        inputs = Inputs([inputs.ids[i] for i in keep], inputs.n_atoms[keep], inputs.targets[keep],
                        lambda i: g(int(keep[i])), lambda i: mo(int(keep[i])), inputs.failures,
                        inputs.description + f", a seeded sample (seed {seed}) of {max_molecules}")
    return inputs


def amplification_of(rs: RelevanceSet, std: float) -> dict:
    """Per molecule, the sum of |relevance| over its features in units of the training std; the
    quantiles, the count above 100 and the ten largest."""
    abs_total = np.add.reduceat(np.abs(rs.atom_relevance).sum(1, dtype=np.float64), rs.offsets[:-1]) + \
        np.add.reduceat(np.abs(rs.pair_relevance).sum(1, dtype=np.float64), rs.pair_offsets[:-1])
    amp = abs_total / std
    worst = np.argsort(-amp)[:10]
    amplification = {"quantiles": {q: float(np.percentile(amp, float(q))) for q in ("50", "90", "99", "100")},
                     "n_above_100": int((amp > 100).sum()),
                     "largest": [{"id": str(rs.ids[i]), "sum_abs_relevance": float(abs_total[i]),
                                  "in_training_std": float(amp[i]), "explained": float(rs.explained[i]),
                                  "absorbed": float(rs.absorbed[i])} for i in worst]}
    return amplification


def accuracy_of(rs: RelevanceSet, lm) -> dict | None:
    """MAE and RMSE of the explained predictions over the molecules with a reference value, and
    the MAE of always predicting the training mean; None without reference values."""
    labelled = np.isfinite(rs.target)
    accuracy = None
    if labelled.any():
        err = rs.prediction[labelled] - rs.target[labelled]
        accuracy = {"n": int(labelled.sum()), "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
                    "mae_of_training_mean": float(np.abs(rs.target[labelled] - (
                        rs.prediction[labelled] - rs.explained[labelled] if lm.is_vector else lm.mean)).mean())}
    return accuracy


def summary_of(lm, rs: RelevanceSet, inputs: Inputs, rule: str, reference: str, accuracy, conservation, amplification,
               stats: dict, failures: list, made, faith, timings: dict) -> dict:
    """The content of summary.json: what was explained against what, the accuracy, conservation,
    amplification, cancellation, the group statistics, the heatmaps and the faithfulness check."""
    return {
        "model_dir": str(lm.model_dir), "model_note": lm.note, "target": lm.target, "unit": lm.unit, "rule": rule,
        "histogram_rule": rs.meta["histogram_rule"], "selection": inputs.description, "n_molecules": len(rs), "n_failed": len(inputs.failures), "failures": failures,
        "accuracy": accuracy,
        **({"output": rs.meta["output"], "output_description": rs.meta["output_description"]} if lm.is_vector else {}),
        "reference": {"training_mean": None if lm.is_vector else lm.mean, "training_std": None if lm.is_vector else lm.std,
                      "explained": (rs.meta["explained"] if lm.is_vector or "reference" in rs.meta else
                                    "prediction - training mean (target units); the training mean is not distributed"),
                      "identity": "sum of the 12 groups = sum of all feature relevances = explained - absorbed",
                      "kind": reference if reference in ("mean", "empty") else "molecule",
                      **({} if reference in ("mean", "empty") else {"file": str(Path(reference).resolve())}),
                      **({"label": rs.meta["reference"], "prediction": rs.meta["reference_prediction"]}
                         if "reference" in rs.meta else {})},
        "cancellation": cancellation(rs.groups),
        "hydrogen_share": hydrogen_share(rs),
        "domain": rs.meta.get("domain"),
        "explained_mean": float(rs.explained.mean()), "absorbed_mean": float(rs.absorbed.mean()),
        "absorbed_mean_abs": float(np.abs(rs.absorbed).mean()),
        "absorbed_by": rs.meta.get("absorbed_by"),
        "max_conservation_error": float(conservation.max()),
        "group_names": list(_group_names()),
        "definitions": {
            "group relevance": "relevance summed over the group's features and all atoms (atom groups) or all "
                               "ordered atom pairs (pair groups), target units",
            "mean": "mean over molecules", "mean_abs": "mean over molecules of |group relevance|",
            "share": "sum over molecules of |group| / sum over molecules and groups of |group|",
            "signed_share": "sum over molecules of group / sum over molecules and groups of |group|",
            "mean_per_atom": "mean over molecules of group relevance / number of atoms (the proposal's per-atom average)",
            "molecule_share": "mean over molecules of |group| / sum over groups of |group| in that molecule "
                              "(robust to molecules with very large relevances)",
            "amplification": "sum over a molecule's features of |relevance|, in units of the training std of the "
                             "target; a few std is usual, hundreds mean large cancelling relevances (the rule "
                             "amplifies, e.g. epsilon with a tiny epsilon where a neuron's input nearly cancels)",
        },
        "amplification": amplification,
        **stats,
        "heatmaps": made,
        "faithfulness": faith,
        "timings": timings,
        "files": {"relevance": "relevance.npz", "groups": "groups.csv", "chart": ["group_relevance.png", "group_relevance.svg"],
                  "report": "report.html"},
    }


def code_units_of(lm, rs: RelevanceSet, inputs: Inputs, rule: str, reference: str, batch_size: int = 128) -> dict:
    """For a network with an autoencoder input stage: the relevance of each code unit (per atom
    and pair codes of a weave network, the molecule's code of a flat one) over the explained
    molecules, with bootstrap intervals of the shares (qmlrp.autoencoder.code_unit_table). The
    code units are explained against the training mean: for another reference or a vector
    model, the reason is returned instead."""
    if lm.is_vector or reference != "mean":
        return {"skipped": "code units are explained for scalar models against the training mean (--reference mean)"}
    from molgraph import collate

    from ..autoencoder import code_relevance_per_molecule, code_unit_table

    order = np.argsort(rs.n_atoms, kind="stable")
    batches = (collate([inputs.graph(int(i)).with_targets({}) for i in order[s:s + batch_size]])
               for s in range(0, len(order), batch_size))
    per_mol, err = code_relevance_per_molecule(lm.net, batches, rule)
    rows = code_unit_table(per_mol, lm.std)
    return {"composite": rule, "n_molecules": len(order), "unit": lm.unit, "units": rows,
            "max_conservation_error": err * lm.std,
            "definition": "a unit's relevance per molecule: LRP of the network above its input stage on the codes "
                          "(summed over atoms or pairs for per-atom/pair codes); share: of the summed |relevance| "
                          "over units and molecules"}


def run(model, out: Path, files: Sequence[str] = (), split: str | None = None, ids_file: str | None = None,
        rule: str = "epsilon", target: str | None = None, fold: int | None = None, max_molecules: int | None = None,
        histogram_rule: str | None = None, output: str | None = None, reference: str = "mean", heatmaps: int = 12, faithfulness: int = 200, random_orders: int = 5, bootstrap: int = 2000,
        batch_size: int = 128, seed: int = 0, cache_root=None, progress: bool = True,
        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> int:
    import lrp
    from molgraph.storage import atomic_write_json

    t0 = time.time()
    timings = {}
    chosen_inputs = sum(x is not None and x != [] and x != () for x in (split, ids_file, list(files) or None))
    if chosen_inputs > 1:
        raise ValueError("choose the molecules one way: --split, --ids or files")
    if rule not in lrp.presets():
        raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(lrp.presets())}")
    if histogram_rule is not None:
        from gcnn.lrp_rules import histogram_rule as _check

        _check(histogram_rule)
    lm = load_model(model, fold, target, output)
    ref = reference_graph(reference)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = choose_inputs(lm, files, split, ids_file, max_molecules, seed, cache_root, log, progress)
    timings["load_s"] = round(time.time() - t0, 2)
    for f in inputs.failures:
        log(f"FAILED {f['source']}{'' if f['molecule'] is None else ', molecule ' + str(f['molecule'])}: {f['error']}")
    if not inputs.ids:
        atomic_write_json(out / "summary.json", {"model_dir": str(lm.model_dir), "target": lm.target, "unit": lm.unit,
                                                 "rule": rule, "n_molecules": 0, "failures": inputs.failures})
        raise ValueError(f"no molecule could be featurized ({len(inputs.failures)} failure(s), listed in {out / 'summary.json'})")
    log(f"explaining {len(inputs.ids)} molecules ({inputs.description}) with {lm.note}, rule {rule}")

    t = time.time()
    rs = explain_inputs(lm, inputs, rule, batch_size, progress, histogram_rule, reference=ref)
    timings["explain_s"] = round(time.time() - t, 2)
    rs.meta.update({"model_note": lm.note, "selection": inputs.description})
    conservation = np.abs(rs.groups.sum(1) + rs.absorbed - rs.explained)
    amplification = amplification_of(rs, lm.std)
    t = time.time()
    save_relevance(out / "relevance.npz", rs)
    write_groups_csv(out / "groups.csv", rs)
    timings["write_s"] = round(time.time() - t, 2)

    t = time.time()
    stats = group_statistics(rs.groups, rs.n_atoms, resamples=bootstrap, seed=seed)
    timings["statistics_s"] = round(time.time() - t, 2)
    accuracy = accuracy_of(rs, lm)
    title = f"{lm.target} ({lm.unit}): LRP {rule}, {len(rs)} molecules, {lm.model_dir}"
    plot_groups(stats, lm.unit, title, out / "group_relevance")

    failures = list(inputs.failures)
    t = time.time()
    chosen = select_representative(rs, heatmaps)
    made = draw_heatmaps(rs, inputs, chosen, out, lm.unit, failures)
    timings["heatmaps_s"] = round(time.time() - t, 2)

    faith = None
    if faithfulness > 0 and lm.is_vector:
        log("faithfulness: not implemented for vector models yet; skipped")
        faithfulness = 0
    if faithfulness > 0:
        from .faithfulness import run_faithfulness

        t = time.time()
        faith = run_faithfulness(lm, rs, inputs, n=faithfulness, random_orders=random_orders, seed=seed,
                                 batch_size=batch_size, out=out, progress=progress)
        timings["faithfulness_s"] = round(time.time() - t, 2)
    code_units = None
    if getattr(lm.net, "input_stage", None) is not None:
        t = time.time()
        code_units = code_units_of(lm, rs, inputs, rule, reference, batch_size)
        timings["code_units_s"] = round(time.time() - t, 2)
    timings["total_s"] = round(time.time() - t0, 2)
    summary = summary_of(lm, rs, inputs, rule, reference, accuracy, conservation, amplification, stats,
                         failures, made, faith, timings)
    if code_units is not None:
        summary["code_units"] = code_units
    atomic_write_json(out / "summary.json", summary)
    from .report import write_report

    write_report(out, summary)
    log(f"{len(rs)} molecules explained in {timings['explain_s']} s (total {timings['total_s']} s), "
        f"{len(failures)} failure(s); max |groups + absorbed - explained| {conservation.max():.2e} {lm.unit} -> {out / 'report.html'}")
    return 1 if inputs.failures else 0
