"""`qmlrp` command line: thin subcommands over the Python API.

    qmlrp quickstart [--out runs/quickstart] [--sample 2000] [--epochs 30]
    qmlrp featurize [--source qm9] [--root DIR] [--sample N | --ids FILE] [--workers N]
    qmlrp inspect FILE [FILE ...] [--json OUT]
    qmlrp split [--k 10] [--split-seed 0] --out FILE
    qmlrp train --target T --out DIR [--epochs E] [--train-size N] [--split FILE --fold K] [--device cuda]
    qmlrp cv --target T --folds 10 --out DIR [--final]
    qmlrp learning-curve --target T --sizes 1000,2000,5000 --out DIR
    qmlrp cv-compare [NAME=]CV_DIR [[NAME=]CV_DIR ...] [--ids FILE --labels TABLE] --out DIR
    qmlrp predict --model DIR FILE [FILE ...] [--json]
    qmlrp explain --model DIR [--split test | --ids FILE | FILE ...] --rule epsilon --out DIR
    qmlrp compare runs/alpha/explain runs/zpve/explain [--out DIR]
    qmlrp stability --models CV_DIR [--rules epsilon,weave,alpha2-beta1] [--split outside|test | --ids FILE] --out DIR
    qmlrp label beta|collect|compare ...   (QM labels with a Dask task farm; see qmlrp/label.py)
Long work shows a progress bar; every command that trains resumes when rerun.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _read_ids(path: str) -> list[int]:
    from molgraph.splits import read_ids

    try:
        return read_ids(path)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"qmlrp: {exc}")


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="qm9", choices=["qm9", "qm9pack", "xyz"],
                   help="qm9 (default): the embedded QM9, or the original files when --root is given; "
                        "qm9pack: always the embedded one; xyz: original dsgdb9nsd files under --root")
    p.add_argument("--root", help="folder of dsgdb9nsd_*.xyz files or dsgdb9nsd.xyz.tar.bz2 (with --source xyz)")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--sample", type=int, help="a seeded random sample of N molecules instead of all")
    sel.add_argument("--ids", help="file of QM9 ids to use instead of all")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--cache-dir", help="where caches live (default $QMLRP_CACHE or ~/.cache/qmlrp)")
    p.add_argument("--workers", type=int, help="processes for featurization (default: all cores)")
    p.add_argument("--labels", help="QM label table (qmlrp label collect) joined by QM9 id: targets beta_par_au, beta_vec_au")


def _load(args, progress=True):
    from molgraph import qm9

    source = args.source
    if source == "qm9":
        source = "xyz" if args.root else "qm9pack"
    return qm9.load(
        source, args.root, ids=_read_ids(args.ids) if args.ids else None, sample=args.sample,
        seed=args.seed, cache_root=args.cache_dir, workers=args.workers, progress=progress,
        rebuild=getattr(args, "rebuild", False), log=lambda m: print(m, file=sys.stderr),
        labels=getattr(args, "labels", None),
    )


def cmd_featurize(args) -> int:
    try:
        ds = _load(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"qmlrp featurize: {exc}", file=sys.stderr)
        return 2
    r = ds.report()
    total = r["n_molecules"] + r["n_failed"]
    print(f"cache: {ds.path}")
    print(f"featurized {r['n_molecules']} of {total} molecules; {r['n_failed']} failed ({100 * r['failed_fraction']:.3f} %)")
    print("bonds perceived by: " + ", ".join(f"{k} {v}" for k, v in r["perception"].items()))
    for f in r["failures"]:
        print(f"  failed qm9:{f['id']}: {f['reason']}")
    if r["not_in_source"]:
        print(f"{len(r['not_in_source'])} requested id(s) are not in the source:")
        for f in r["not_in_source"]:
            print(f"  qm9:{f['id']}: {f['reason']}")
    if args.report:
        from molgraph.storage import atomic_write_json

        atomic_write_json(args.report, {**r, "cache": str(ds.path), "manifest": {k: v for k, v in ds.manifest.items() if k != "failures"}})
        print(f"report: {args.report}")
    return 0


def cmd_inspect(args) -> int:
    """Featurize user files; print a per-molecule summary; go on past bad molecules."""
    from molgraph import ATOM_FEATURES, FEATURE_GROUPS, MolecularGraphFeaturizer, MoleculeError, iter_molecules

    featurizer = MolecularGraphFeaturizer()
    results, failures = [], []
    for path in args.files:
        for item in iter_molecules(path):
            if isinstance(item, MoleculeError):
                failures.append(str(item))
                continue
            try:
                g = featurizer(item)
            except MoleculeError as exc:
                failures.append(str(exc))
                continue
            groups = {
                name: float((g.atom_features if grp.kind == "atom" else g.pair_features)[..., grp.slice].abs().sum())
                for name, grp in FEATURE_GROUPS.items()
            }
            atoms = []
            for k, e in enumerate(g.elements):
                on = [ATOM_FEATURES[j] for j in range(len(ATOM_FEATURES)) if g.atom_features[k, j] != 0 and not ATOM_FEATURES[j].startswith("partial")]
                atoms.append({"atom": k + 1, "element": e, "gasteiger": round(float(g.atom_features[k, FEATURE_GROUPS["partial_charge"].indices[0]]), 4), "on": on})
            results.append({"source": item.source, "index": item.index, "name": item.name, "formula": item.formula,
                            "n_atoms": g.n_atoms, "group_abs_sums": groups, "atoms": atoms})
            print(f"{item.source} [{item.index}] {item.name or ''} {item.formula}: {g.n_atoms} atoms, "
                  f"{int(g.pair_features[..., FEATURE_GROUPS['bond_type'].slice].sum()) // 2} bonds")
            for a in atoms:
                print(f"   {a['atom']:>3} {a['element']:<2} q={a['gasteiger']:+.4f}  {' '.join(n for n in a['on'] if not n.startswith('atom_type'))}")
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    print(f"{len(results)} molecule(s) featurized, {len(failures)} failed", file=sys.stderr)
    if args.json:
        from molgraph.storage import atomic_write_json

        atomic_write_json(args.json, {"molecules": results, "failures": failures})
    return 1 if failures else 0


def cmd_split(args) -> int:
    from molgraph import splits

    ds = _load(args)
    kf = splits.kfold(ds.ids, k=args.k, seed=args.seed_split, source=ds.manifest["source"],
                      source_checksum=ds.manifest["source_checksum"], featurizer_version=ds.manifest["featurizer_version"])
    kf.save(args.out)
    sizes = [len(b) for b in kf.bins]
    print(f"{kf.k} bins of {min(sizes)}-{max(sizes)} ids (seed {args.seed_split}, digest {kf.digest}) -> {args.out}")
    return 0


def cmd_train(args) -> int:
    import gcnn
    from molgraph import splits

    if not _check_target("train", args.target):
        return 2
    from gcnn.training import init_distributed

    rank, world = init_distributed()  # under torchrun: DDP over the ranks; otherwise (0, 1)
    if rank == 0:
        ds = _load(args)  # builds the cache once
    if world > 1:
        import torch.distributed

        torch.distributed.barrier()
    if rank != 0:
        ds = _load(args, progress=False)
    if args.split:
        sp = splits.load_split(args.split)
        sp = sp.fold(args.fold) if isinstance(sp, splits.KFold) else sp
    else:
        sp = splits.train_val_test(ds.ids, val=0.1, test=0.1, seed=args.seed, source=ds.manifest["source"])
    train_ids = sp.train
    if args.train_size:
        train_ids = np.sort(np.random.default_rng(args.seed).permutation(sp.train)[: args.train_size])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        splits.TrainValTest(train_ids, sp.val, sp.test, meta=sp.meta).save(out / "split.json")
    try:
        model_config, stage = _input_stage(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"qmlrp train: {exc}", file=sys.stderr)
        return 2
    trainer = gcnn.Trainer(out, model_config=model_config, config=_train_config(args), log=lambda m: print(m, file=sys.stderr),
                           progress=rank == 0, **stage)
    try:
        trainer.fit(ds.subset(train_ids), ds.subset(sp.val), split_meta={"digest": sp.digest, **sp.meta},
                    deadline=_deadline(args))
    except ValueError as exc:
        print(f"qmlrp train: {exc}", file=sys.stderr)
        return 2
    if rank != 0:
        return 0
    if not trainer.finished:
        print(f"stopped at epoch {trainer.state_['epoch']} of {args.epochs} (time limit); rerun the same command to "
              f"resume -> {out}")
        return 0
    metrics = trainer.evaluate(ds.subset(sp.test))
    from gcnn.domain import record as record_domain

    record_domain(out, ds.subset(train_ids), log=lambda m: print(m, file=sys.stderr))
    m = metrics["targets"][args.target]
    print(f"{args.target}: test MAE {m['mae']:.4f} {m['unit']}, RMSE {m['rmse']:.4f}, R^2 {m['r2']:.4f} "
          f"(n_train {metrics['n_train']}, n_test {metrics['n_test']}) -> {out}")
    return 0


def _check_target(cmd, target) -> bool:
    from molgraph import TARGETS

    if target not in TARGETS or TARGETS[target].kind not in ("scalar", "vector"):
        valid = ", ".join(t for t, v in TARGETS.items() if v.kind in ("scalar", "vector"))
        print(f"qmlrp {cmd}: unknown target {target!r}; valid: {valid}", file=sys.stderr)
        return False
    return True


def _deadline(args):
    import time

    return None if args.limit_minutes is None else time.time() + 60 * args.limit_minutes


def _train_config(args):
    import gcnn

    return gcnn.TrainConfig(targets=(args.target,), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            weight_decay=args.weight_decay, lr_factor=args.lr_factor, lr_patience=args.lr_patience,
                            patience=args.patience, seed=args.seed, device=args.device,
                            amp=args.device.startswith("cuda"), set_layout=args.set_layout, loss=args.loss,
                            clip_grad_norm=getattr(args, "clip_grad_norm", None),
                            schedule=getattr(args, "schedule", "plateau"), mix_sizes=getattr(args, "mix_sizes", 1))


def _model_config(args, **extra):
    """The WeaveNet configuration of the architecture flags (defaults: gcnn.WeaveConfig's, the
    Faber-like reproduction)."""
    import gcnn

    head = tuple(int(h) for h in str(args.head_hidden).split(",") if h.strip())
    if getattr(args, "architecture", None) == "flat" or extra.get("architecture") == "flat":
        weave_only = {"atom_hidden": 50, "pair_hidden": 50, "layers": 2, "readout_hidden": 128, "pair_cutoff": None, "xh_head": None,
                      "skeleton_head": None, "readout_activation": None}
        changed = [k for k, v in weave_only.items() if getattr(args, k, v) != v]
        if changed:
            raise ValueError(f"--{changed[0].replace('_', '-')} is a weave network setting; the flat network "
                             f"(--architecture flat) has only --head-hidden")
        extra.pop("architecture", None)
        return gcnn.FlatConfig(head_hidden=head, n_outputs=_train_config(args).n_outputs, **extra)
    return gcnn.WeaveConfig(atom_hidden=args.atom_hidden, pair_hidden=args.pair_hidden, n_layers=args.layers,
                            readout_hidden=args.readout_hidden, head_hidden=head,
                            pair_cutoff=getattr(args, "pair_cutoff", None), xh_head=_xh_head(args),
                            readout_activation=getattr(args, "readout_activation", None),
                            **_skeleton_head(args), n_outputs=_train_config(args).n_outputs, **extra)


def _xh_head(args):
    """--xh-head WIDTHS: the per-hydrogen head's hidden widths (None without the flag)."""
    spec = getattr(args, "xh_head", None)
    if spec is None:
        return None
    if getattr(args, "set_layout", None) != "hydrogen":
        raise ValueError("--xh-head fills the X-H block of the hydrogen layout: add --set-layout hydrogen")
    return tuple(int(h) for h in str(spec).split(",") if h.strip())


def _skeleton_head(args) -> dict:
    """--skeleton-head WIDTHS [--skeleton-context W]: the per-atom skeleton head ({} without it)."""
    spec = getattr(args, "skeleton_head", None)
    if spec is None:
        if getattr(args, "skeleton_residual", False):
            raise ValueError("--skeleton-residual adds the molecule-level head to the per-atom skeleton head: add "
                             "--skeleton-head")
        return {}
    if getattr(args, "xh_head", None) is None:
        raise ValueError("--skeleton-head fills the skeleton block next to the per-hydrogen X-H block: add --xh-head")
    return {"skeleton_head": tuple(int(h) for h in str(spec).split(",") if h.strip()),
            "skeleton_context": int(getattr(args, "skeleton_context", 64)),
            "skeleton_residual": bool(getattr(args, "skeleton_residual", False))}


def _input_stage(args):
    """(model config, Trainer keyword arguments) for the architecture flags, --input-stage
    DAE_DIR [--freeze|--fine-tune] and --init-from MODEL ({} with neither)."""
    if getattr(args, "init_from", None):
        if getattr(args, "input_stage", None):
            raise ValueError("--init-from and --input-stage exclude each other (the model started from brings its own inputs)")
        return _init_from(args)
    if not getattr(args, "input_stage", None):
        return _model_config(args), {}
    from molgraph.storage import sha256_file

    from . import autoencoder

    variant, ae, cfg = autoencoder.load(args.input_stage)
    if variant == "flat":  # the flat code in front of a fully connected network
        if getattr(args, "architecture", None) == "weave":
            raise ValueError(f"{args.input_stage}: a 'flat' autoencoder codes whole molecules; the weave network's "
                             f"input stage needs the 'graph' variant (codes per atom and pair); drop --architecture "
                             f"weave to put it in front of the flat network")
        model_config = _model_config(args, architecture="flat", input_stage=ae.config(),
                                     freeze_input_stage=bool(args.freeze))
        state = ae.encoder.state_dict()
    else:
        if getattr(args, "architecture", None) == "flat":
            raise ValueError(f"{args.input_stage}: a 'graph' autoencoder codes atoms and pairs, the input of the weave "
                             f"network; the flat network's input stage is a 'flat' one (qmlrp dae train --variant flat)")
        model_config = _model_config(args, input_stage=ae.config(), freeze_input_stage=bool(args.freeze))
        state = ae.encoder().state_dict()
    record = {"autoencoder": str(args.input_stage), "weights_sha256": sha256_file(Path(args.input_stage) / "weights.pt"),
              "mode": "frozen" if args.freeze else "fine-tuned"}
    return model_config, {"input_stage_state": state, "input_stage_record": record}


def _init_from(args):
    """--init-from MODEL: the network starts from a trained model's weights (a published name, a
    model directory, or a CV directory, whose first fold model is used), all but its output layer,
    and keeps that model's architecture; the new target's normalization is its own."""
    from dataclasses import asdict, replace

    import gcnn
    from molgraph.storage import sha256_file

    from .published import resolve

    src = resolve(args.init_from)
    dirs = gcnn.model_dirs(src)
    if not dirs:
        raise ValueError(f"--init-from {args.init_from}: no model directory (config.json + weights.pt) there")
    predictor = gcnn.load(dirs[0])
    net = predictor.models[0].model
    n_out = _train_config(args).n_outputs
    given = asdict(_model_config(args))
    source = asdict(replace(net.config, n_outputs=n_out))
    default = asdict(replace(gcnn.WeaveConfig(), n_outputs=n_out))
    if given != default and given != source:
        differ = sorted(k for k in given if given[k] != source[k])
        raise ValueError(f"--init-from {args.init_from} keeps that model's architecture; drop the flags that change "
                         f"{', '.join(differ)}")
    state, dropped = gcnn.transfer_state(net)
    record = {"model": str(args.init_from), "directory": str(dirs[0]),
              "weights_sha256": sha256_file(dirs[0] / "weights.pt"), "targets": list(predictor.targets),
              "reinitialized": dropped}
    return replace(net.config, n_outputs=n_out), {"init_state": state, "init_record": record}


def _fold_list(text, k):
    if not text:
        return None
    folds = [int(f) for f in text.split(",") if f.strip()]
    bad = [f for f in folds if not 0 <= f < k]
    if bad:
        raise SystemExit(f"qmlrp cv: --only-folds {bad} outside 0..{k - 1}")
    return folds


def cmd_cv(args) -> int:
    import gcnn

    if not _check_target("cv", args.target):
        return 2
    ds = _load(args)
    try:
        model_config, stage = _input_stage(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"qmlrp cv: {exc}", file=sys.stderr)
        return 2
    try:
        summary = gcnn.cross_validate(ds, args.out, _train_config(args), k=args.folds, seed=args.seed, final=args.final,
                                      log=lambda m: print(m, file=sys.stderr), deadline=_deadline(args),
                                      folds=_fold_list(args.only_folds, args.folds), model_config=model_config,
                                      trainer_kwargs=stage, train_size=args.train_size)
    except ValueError as exc:
        print(f"qmlrp cv: {exc}", file=sys.stderr)
        return 2
    for r in summary["folds"]:
        print(f"fold {r['fold']}: MAE {r['mae']:.4f} {r['unit']} (n_test {r['n_test']})")
    if not summary["complete"]:
        print(f"{len(summary['folds_done'])} of {args.folds} folds done (time limit or --only-folds); rerun the same "
              f"command to go on -> {args.out}")
        return 0
    t = summary["targets"][args.target]
    print(f"{args.target}: {args.folds}-fold MAE {t['mae_mean']:.4f} +- {t['mae_std']:.4f} {t['unit']} -> {args.out}/cv.json;"
          f" ensemble of the fold models: qmlrp predict --model {args.out}")
    return 0


def cmd_learning_curve(args) -> int:
    import gcnn

    if not _check_target("learning-curve", args.target):
        return 2
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        print(f"qmlrp learning-curve: --sizes must be integers separated by commas, got {args.sizes!r}", file=sys.stderr)
        return 2
    ds = _load(args)
    try:
        model_config, stage = _input_stage(args)
        rows = gcnn.learning_curve(ds, args.out, _train_config(args), sizes, seed=args.seed, model_config=model_config,
                                   log=lambda m: print(m, file=sys.stderr), trainer_kwargs=stage,
                                   deadline=_deadline(args), full_from=args.full_from)
    except (FileNotFoundError, ValueError) as exc:
        print(f"qmlrp learning-curve: {exc}", file=sys.stderr)
        return 2
    for r in rows:
        print(f"n_train {r['n_train']:>7}: test MAE {r['mae']:.4f} {r['unit']}")
    print(f"-> {args.out}/learning_curve.csv, learning_curve.png")
    return 0


def cmd_progress(args) -> int:
    """How far resumable runs have got: epochs, best validation and test MAE, time spent and left."""
    from gcnn.progress import progress_table, run_progress

    rows, bad = [], 0
    for d in args.dirs:
        try:
            rows.extend(run_progress(d))
        except FileNotFoundError as exc:
            print(f"qmlrp progress: {exc}", file=sys.stderr)
            bad += 1
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(progress_table(rows))
    return 2 if bad and not rows else (1 if bad else 0)


def cmd_cv_compare(args) -> int:
    """CV runs side by side on the molecules they share: out-of-fold MAE with bootstrap CIs,
    relative error, the mean baseline, paired differences against the first run."""
    from . import cvcompare

    try:
        paths = cvcompare.parse_runs(args.runs)
        ds = _load(args, progress=False)
        runs = {name: cvcompare.out_of_fold(path, ds) for name, path in paths.items()}
        result = cvcompare.compare(runs, n_boot=args.bootstrap)
    except (FileNotFoundError, ValueError) as exc:
        print(f"qmlrp cv-compare: {exc}", file=sys.stderr)
        return 2
    written = cvcompare.write(runs, result, args.out)
    print(cvcompare.markdown(result), end="")
    print("-> " + ", ".join(str(p) for p in written))
    return 0


def cmd_predict(args) -> int:
    import gcnn
    from molgraph import MolecularGraphFeaturizer, MoleculeError, iter_molecules

    from .published import resolve

    try:
        predictor = gcnn.load(resolve(args.model))
    except (FileNotFoundError, ValueError) as exc:
        print(f"qmlrp predict: {exc}", file=sys.stderr)
        return 2
    featurizer = MolecularGraphFeaturizer()
    rows, failures = [], []
    for path in args.files:
        for item in iter_molecules(path):
            try:
                if isinstance(item, MoleculeError):
                    raise item
                g = featurizer(item)
            except MoleculeError as exc:
                failures.append(str(exc))
                continue
            verdict = predictor.check_domain([g])
            base = {"source": item.source, "index": item.index, "name": item.name, "formula": item.formula,
                    "n_models": len(predictor.models),
                    "domain": None if verdict is None else verdict[0].to_json()}
            if predictor.is_vector:  # a set of values: as many as the molecule has (3N-6, or 3N-5 if linear)
                t = predictor.targets[0]
                try:
                    (values,), (spread_set,) = predictor.predict_sets([g])
                except ValueError as exc:
                    failures.append(f"{item.source}: molecule {item.index} ({item.formula}): {exc}")
                    continue
                unc = [round(float(v), 6) for v in spread_set] if len(predictor.models) > 1 else None
                row = {**base, "target": t, "prediction": [round(float(v), 6) for v in values],
                       "uncertainty": unc, "unit": predictor.units[t]}
                ref = _reference_set(item)
                if ref is not None:  # a QM9-format file carries its own harmonic frequencies
                    row["reference"] = [round(float(v), 4) for v in ref]
                if args.plot:
                    row["plot"] = str(_plot_spectrum(args.plot, item, values, spread_set, len(predictor.models),
                                                     predictor.units[t], ref))
                rows.append(row)
                continue
            mean, spread = predictor.predict_graphs([g])
            for k, t in enumerate(predictor.targets):
                # one model has no ensemble spread: null, not 0 (which would read as certainty)
                unc = float(spread[0, k]) if len(predictor.models) > 1 else None
                rows.append({**base, "target": t, "prediction": float(mean[0, k]), "uncertainty": unc,
                             "unit": predictor.units[t]})
    if args.json:
        print(json.dumps({"predictions": rows, "failures": failures}, indent=2))
    else:
        for r in rows:
            if isinstance(r["prediction"], list):
                vals = " ".join(f"{v:.1f}" for v in r["prediction"])
                print(f"{r['source']}\t{r['index']}\t{r['formula']}\t{r['target']}\t[{vals}] {r['unit']}\t{_domain_text(r)}")
                continue
            unc = f" +- {r['uncertainty']:.4f}" if r["n_models"] > 1 else ""
            print(f"{r['source']}\t{r['index']}\t{r['formula']}\t{r['target']}\t{r['prediction']:.4f}{unc} {r['unit']}"
                  f"\t{_domain_text(r)}")
    outside = sum(1 for r in rows if r.get("domain") and not r["domain"]["inside"])
    if outside:
        print(f"{outside} prediction(s) outside the model's applicability domain (reasons in the last column; "
              f"such predictions may be far off)", file=sys.stderr)
    if rows and not predictor.has_domain:
        print(f"{args.model}: no applicability domain recorded (models from before it was); "
              f"`qmlrp domain {args.model}` adds one", file=sys.stderr)
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failures else 0


def _reference_set(item):
    """A QM9-format file's own real harmonic frequencies, sorted (QM9's quirks handled), or None."""
    from molgraph.targets import clean_frequencies

    raw = item.properties.get("freqs_raw_cm1")
    return clean_frequencies(raw, item.n_atoms)[0] if raw else None


def _plot_spectrum(folder, item, values, spread, n_models: int, unit: str, reference=None) -> Path:
    """DIR/<file stem>_<index>.png: the stick spectrum, the reference under it where there is one."""
    from .spectra import plot_sticks

    stem = Path(str(item.source)).stem or "molecule"
    return plot_sticks(Path(folder) / f"{stem}_{item.index}.png", values, spread if n_models > 1 else None, reference,
                       title=f"{item.name or item.formula} ({item.formula}), {n_models} model(s)", unit=unit)


def _domain_text(row) -> str:
    d = row.get("domain")
    if d is None:
        return "domain: not recorded"
    return "inside the domain" if d["inside"] else "OUTSIDE the domain: " + "; ".join(d["reasons"])


def cmd_domain(args) -> int:
    """Record (or rebuild) the applicability domain of a model directory or of every fold model of
    a cross-validation directory, from each model's training molecules (its split.json)."""
    import gcnn
    from gcnn.domain import record as record_domain
    from molgraph import splits

    root = Path(args.model)
    dirs = gcnn.model_dirs(root)
    if not dirs:
        print(f"qmlrp domain: {root}: no config.json + weights.pt and no fold_*/ model directories", file=sys.stderr)
        return 2
    ds = _load(args)
    for d in dirs:
        split = d / "split.json" if (d / "split.json").exists() else root / "split.json"
        if not split.exists():
            print(f"qmlrp domain: {d}: no split.json here or in {root}; the training molecules are unknown",
                  file=sys.stderr)
            return 2
        sp = splits.load_split(split)
        if isinstance(sp, splits.KFold):
            fold = json.loads((d / "config.json").read_text()).get("split", {}).get("fold")
            if fold is None:
                print(f"qmlrp domain: {d}: config.json names no fold of the k-fold split {split}", file=sys.stderr)
                return 2
            sp = sp.fold(int(fold))
        present = set(int(i) for i in ds.ids)
        train = [int(i) for i in sp.train if int(i) in present]
        record_domain(d, ds.subset(train), max_molecules=args.max_molecules, log=lambda m: print(m, file=sys.stderr))
    return 0


def cmd_models(args) -> int:
    """The published models: name, target, folds shipped, mean test MAE."""
    from . import published

    names = published.names()
    if not names:
        print("no published models in this installation", file=sys.stderr)
        return 1
    for n in names:
        c = published.card(n)
        sd = f" +- {c['mae_std']:.4g}" if c.get("mae_std") is not None else ""
        print(f"{n}\t{c['target']}\t{len(c['folds'])} of {c['k']} fold models\ttest MAE {c['mae_mean']:.4g}{sd} "
              f"{c['unit']}\t{published.ROOT / n / 'MODEL_CARD.md'}")
    return 0


def cmd_publish(args) -> int:
    from . import published

    try:
        info = published.publish(args.cv_dir, args.name, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"qmlrp publish: {exc}", file=sys.stderr)
        return 2
    where = Path(args.out) / args.name if args.out else published.ROOT / args.name
    print(f"{args.name}: {len(info['folds'])} fold model(s) of {info['target']}, test MAE {info['mae_mean']:.4g} "
          f"{info['unit']} -> {where}")
    return 0


def cmd_compare(args) -> int:
    from .compare import run

    command = f"qmlrp compare {args.dir_a} {args.dir_b} --out {args.out}"
    return run(args.dir_a, args.dir_b, args.out, n_boot=args.bootstrap, seed=args.seed, command=command)


def cmd_explain(args) -> int:
    from .explain.command import run_from_args

    return run_from_args(args)


def cmd_stability(args) -> int:
    from .stability import default_out, run

    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    ids = _read_ids(args.ids) if args.ids else None
    sel = f" --ids {args.ids}" if args.ids else (f" --split {args.split}" if args.split else "")
    out = args.out or str(default_out(args.models))
    command = (f"qmlrp stability --models {args.models} --rules {','.join(rules)}{sel} "
               f"--max-molecules {args.max_molecules} --out {out}")
    if args.histogram_rule:
        command += f" --histogram-rule {args.histogram_rule}"
    if args.reference != "mean":
        command += f" --reference {args.reference}"
    return run(args.models, out, rules, args.split, ids, args.max_molecules, args.seed, args.batch_size,
               args.cache_dir, command=command, histogram_rule=args.histogram_rule, reference=args.reference)


def cmd_quickstart(args) -> int:
    from .quickstart import run

    return run(out=Path(args.out), sample=args.sample, seed=args.seed, cache_root=args.cache_dir, workers=args.workers,
               epochs=args.epochs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qmlrp", description="Explain what chemistry-trained neural networks learn.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser("quickstart", help="featurize a QM9 sample, train a weave network, explain it, write a report")
    q.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    q.add_argument("--sample", type=int, default=2000, help="molecules to use (default 2000)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--cache-dir")
    q.add_argument("--workers", type=int)
    q.add_argument("--epochs", type=int, default=30, help="training epochs of the weave network (default 30)")
    q.set_defaults(func=cmd_quickstart)

    f = sub.add_parser("featurize", help="build the featurized QM9 cache and report failures")
    _dataset_args(f)
    f.add_argument("--rebuild", action="store_true", help="build again even if a complete cache exists")
    f.add_argument("--report", help="also write the report as JSON here")
    f.set_defaults(func=cmd_featurize)

    i = sub.add_parser("inspect", help="featurize XYZ/SDF/MOL files and show the atom features")
    i.add_argument("files", nargs="+")
    i.add_argument("--json", help="write the features summary as JSON here")
    i.set_defaults(func=cmd_inspect)

    def training_args(p):
        _dataset_args(p)
        p.add_argument("--target", required=True, help="e.g. alpha_bohr3, zpve_ev")
        p.add_argument("--out", required=True, help="output directory (rerunning the command resumes)")
        p.add_argument("--epochs", type=int, default=100)
        p.add_argument("--batch-size", type=int, default=128)
        p.add_argument("--lr", type=float, default=1e-3)
        arch = p.add_argument_group("architecture and schedule (defaults: the Faber-like reproduction)")
        arch.add_argument("--atom-hidden", type=int, default=50, help="atom channels of each weave module (50)")
        arch.add_argument("--pair-hidden", type=int, default=50, help="pair channels of each weave module (50)")
        arch.add_argument("--layers", type=int, default=2, help="weave modules (2)")
        arch.add_argument("--readout-hidden", type=int, default=128, help="channels of the histogram readout (128)")
        arch.add_argument("--head-hidden", default="128", help="hidden widths of the head, comma-separated (128)")
        arch.add_argument("--readout-activation", choices=("relu", "tanh", "softplus", "silu", "identity"),
                          help="the activation between the readout layer and the Gaussian histogram (default: "
                               "the network's, ReLU; DeepChem's WeaveModel uses tanh; docs/gcnn.md)")
        arch.add_argument("--pair-cutoff", type=int, metavar="K", help="only pairs at most K bonds apart exist for the "
                          "weave network (Kearnes et al.'s N2 setting is 2; default: all pairs)")
        arch.add_argument("--weight-decay", type=float, default=0.0)
        arch.add_argument("--lr-factor", type=float, default=0.5, help="ReduceLROnPlateau factor (0.5)")
        arch.add_argument("--lr-patience", type=int, default=5, help="epochs without a better validation MAE "
                          "before the learning rate is cut (5)")
        arch.add_argument("--patience", type=int, default=20, help="early stopping patience in epochs (20)")
        arch.add_argument("--schedule", choices=("plateau", "cosine"), default="plateau", help="learning-rate schedule: "
                          "plateau (ReduceLROnPlateau on the validation MAE, --lr-factor, --lr-patience; the default) "
                          "or cosine (annealed from --lr to --lr x 0.01 over --epochs)")
        arch.add_argument("--loss", choices=("mse", "l1"), default="mse", help="loss on the standardized outputs (mse)")
        arch.add_argument("--clip-grad-norm", type=float, metavar="NORM", help="clip each step's gradient to this "
                          "global L2 norm (default: no clipping)")
        arch.add_argument("--mix-sizes", type=int, default=1, metavar="K", help="each optimizer step accumulates K "
                          "size buckets of batch-size / K molecules, so that it sees molecules of K sizes (1: one "
                          "bucket of one or two atom counts per step, the default; docs/gcnn.md)")
        arch.add_argument("--set-layout", choices=("ascending", "descending", "hydrogen"), default="ascending",
                          help="vector targets (freqs_cm1): which output holds which member of the sorted set "
                               "(docs/spectra.md); ascending by default")
        arch.add_argument("--xh-head", metavar="WIDTHS", help="frequency sets, hydrogen layout: predict each X-H "
                          "stretch on its own hydrogen with a per-atom head of these hidden widths (e.g. 128,64), "
                          "sorted into the X-H outputs (docs/spectra.md); default: one molecule-level head")
        arch.add_argument("--skeleton-head", metavar="WIDTHS", help="with --xh-head: predict the skeletal modes "
                          "per atom as well (3 values per heavy atom, 2 per hydrogen, the highest 3N - n_H - 6 "
                          "sorted into the other outputs) with a head of these hidden widths, in place of the "
                          "molecule-level head (docs/spectra.md)")
        arch.add_argument("--skeleton-context", type=int, default=64, metavar="W", help="with --skeleton-head: "
                          "the width of the pooled molecule vector's projection that every atom's skeleton head "
                          "reads next to its own vector (0: none; 64)")
        arch.add_argument("--skeleton-residual", action="store_true", help="with --skeleton-head: keep the "
                          "molecule-level head (--head-hidden) and add its outputs to the sorted per-atom values")
        p.add_argument("--device", default="cpu", help="cpu or cuda (mixed precision on cuda)")
        p.add_argument("--limit-minutes", type=float, help="stop cleanly at the last epoch boundary before this "
                       "many minutes (rerun the same command to resume)")
        arch.add_argument("--architecture", choices=("weave", "flat"), help="weave (default): the weave network; flat: "
                          "the flattened Molecular Graph (29 atom slots, the proposal's 5,887-long vector) read by a "
                          "fully connected network of --head-hidden widths (gcnn.FlatNet); implied by a flat --input-stage")
        p.add_argument("--input-stage", metavar="DAE_DIR", help="put a trained autoencoder's encoders (qmlrp dae train) "
                       "in front of the network: a graph autoencoder's per atom and pair in front of the weave "
                       "network, a flat one's in front of the flat network")
        p.add_argument("--init-from", metavar="MODEL", help="start from a trained model's weights (published name, model or "
                       "CV directory: its first fold), all but the output layer, with its architecture: fine-tuning "
                       "from another target, e.g. --init-from qm9-alpha for beta_par_au")
        how = p.add_mutually_exclusive_group()
        how.add_argument("--freeze", dest="freeze", action="store_true", default=True,
                         help="keep the input stage as pretrained (default with --input-stage)")
        how.add_argument("--fine-tune", dest="freeze", action="store_false", help="train the input stage with the network")

    t = sub.add_parser("train", help="train a weave network on QM9 for one target")
    training_args(t)
    t.add_argument("--split", help="split file (qmlrp split); default: seeded 80/10/10")
    t.add_argument("--fold", type=int, default=0, help="fold of a k-fold split file")
    t.add_argument("--train-size", type=int, help="use only N training molecules (learning curves)")
    t.set_defaults(func=cmd_train)

    cv = sub.add_parser("cv", help="k-fold cross-validation (the proposal's protocol); resumes fold by fold")
    training_args(cv)
    cv.add_argument("--folds", type=int, default=10)
    cv.add_argument("--final", action="store_true", help="also train one model on all data into OUT/final")
    cv.add_argument("--only-folds", help="comma-separated folds to work on in this run, e.g. 0 or 0,1 (default all)")
    cv.add_argument("--train-size", type=int, help="every fold trains on a seeded subsample of N of its training "
                    "molecules (same validation and test bins): one CV per size is a learning curve in which "
                    "every molecule is tested once (compare the sizes with qmlrp cv-compare)")
    cv.set_defaults(func=cmd_cv)

    lc = sub.add_parser("learning-curve", help="test MAE against training-set size on a fixed test set")
    training_args(lc)
    lc.add_argument("--sizes", required=True, help="comma-separated training-set sizes, e.g. 1000,2000,5000")
    lc.add_argument("--full-from", metavar="MODEL_DIR", help="a finished model trained on all of fold 0's training "
                    "molecules with the same settings (e.g. data/models/cv_alpha_bohr3/fold_0): the full-size point "
                    "is read from it, not trained again")
    lc.set_defaults(func=cmd_learning_curve)

    pg = sub.add_parser("progress", help="how far resumable runs have got (train, cv, learning-curve directories): "
                        "epochs, best validation and test MAE, hours spent and left")
    pg.add_argument("dirs", nargs="+", metavar="DIR", help="a qmlrp train --out, cv --out or learning-curve --out directory")
    pg.add_argument("--json", action="store_true", help="the rows as JSON instead of a table")
    pg.set_defaults(func=cmd_progress)

    pr = sub.add_parser("predict", help="predict molecules from XYZ/SDF files with a trained model")
    pr.add_argument("--model", required=True, help="model directory, or a folder of fold_*/ models (ensemble)")
    pr.add_argument("files", nargs="+")
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pr.add_argument("--plot", metavar="DIR", help="frequency-set models: draw each molecule's predicted stick spectrum "
                    "(with the ensemble spread, and a QM9 file's own frequencies under it) into DIR")
    pr.set_defaults(func=cmd_predict)

    ms = sub.add_parser("models", help="list the published models (qmlrp predict --model NAME)")
    ms.set_defaults(func=cmd_models)
    pb = sub.add_parser("publish", help="package the finished fold models of a qmlrp cv directory as a published "
                                        "model with its card")
    pb.add_argument("cv_dir")
    pb.add_argument("--name", required=True, help="e.g. qm9-alpha")
    pb.add_argument("--out", help="folder to write NAME/ into (default: the installed package's published models)")
    pb.set_defaults(func=cmd_publish)

    dm = sub.add_parser("domain", help="record the applicability domain of a trained model (or of every fold "
                                       "model) from its training molecules; predict and explain then flag inputs "
                                       "outside it")
    dm.add_argument("model", help="model directory, or a folder of fold_*/ models")
    _dataset_args(dm)
    dm.add_argument("--max-molecules", type=int, help="fit on a seeded sample of this many training molecules")
    dm.set_defaults(func=cmd_domain)

    cmp_ = sub.add_parser("compare", help="the verdict: group shares of two explain runs side by side, paired tests")
    cmp_.add_argument("dir_a", help="an explain output directory (groups.csv, summary.json), e.g. runs/alpha/explain")
    cmp_.add_argument("dir_b", help="the other one, e.g. runs/zpve/explain")
    cmp_.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    cmp_.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs (default 2000)")
    cmp_.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    cmp_.set_defaults(func=cmd_compare)

    ex = sub.add_parser("explain", help="explain a trained model with LRP: feature, atom and group relevance, heatmaps, report")
    from .explain.command import add_arguments as explain_arguments

    explain_arguments(ex)
    ex.set_defaults(func=cmd_explain)

    cc = sub.add_parser("cv-compare", help="cross-validation runs side by side on the same molecules (out-of-fold "
                        "MAE with bootstrap CIs, relative error, mean baseline, paired differences)")
    cc.add_argument("runs", nargs="+", metavar="[NAME=]CV_DIR", help="qmlrp cv directories; the first is the reference")
    _dataset_args(cc)
    cc.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95 %% intervals (2000)")
    cc.add_argument("--out", required=True, help="folder for compare.json/.md, out_of_fold.csv, parity.png")
    cc.set_defaults(func=cmd_cv_compare)

    st = sub.add_parser("stability", help="how group shares vary across fold models and LRP rules")
    st.add_argument("--models", required=True, help="a directory of fold_*/ models (qmlrp cv) or one model directory")
    st.add_argument("--rules", default="epsilon,weave,alpha2-beta1",
                    help="comma-separated LRP presets (default epsilon,weave,alpha2-beta1)")
    stsel = st.add_mutually_exclusive_group()
    stsel.add_argument("--split", choices=["outside", "test"],
                       help="outside (default): QM9 molecules in no member's split; test: the members' test molecules")
    stsel.add_argument("--ids", help="file of QM9 ids to explain instead")
    st.add_argument("--max-molecules", type=int, default=200, help="seeded sample of at most N molecules (default 200)")
    st.add_argument("--out", help="output folder (default MODELS/stability)")
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--batch-size", type=int, default=64)
    st.add_argument("--cache-dir", help="where caches live (default $QMLRP_CACHE or ~/.cache/qmlrp)")
    st.add_argument("--reference", default="mean", help="as in qmlrp explain: mean (default), empty, or a molecule file")
    st.add_argument("--histogram-rule", choices=("pass", "rescale"),
                    help="LRP rule of the Gaussian-histogram readout, as in qmlrp explain (default: gcnn's)")
    st.set_defaults(func=cmd_stability)

    s = sub.add_parser("split", help="write the seeded k-fold split of the featurized QM9 ids")
    _dataset_args(s)
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--split-seed", dest="seed_split", type=int, default=0)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_split)

    from .label import add_parser as add_label_parser

    add_label_parser(sub)
    from .autoencoder import add_parser as add_dae_parser

    add_dae_parser(sub)
    from .additive import add_parser as add_additive_parser

    add_additive_parser(sub)
    from .spectra import add_parser as add_spectra_parser

    add_spectra_parser(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
