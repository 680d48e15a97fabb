"""`qmlrp label`: QM labels for QM9 molecules with a Dask task farm, and their tables.

    qmlrp label beta --dataset qm9 [--ids FILE] [--min-heavy-atoms K] [--max-heavy-atoms K] [--sample N] [--seed S]
                     --xc b3lyp --basis "6-31g(2df,p)" --out labels/beta-b3lyp
                     [--workers N] [--threads-per-worker 1] [--scheduler ADDRESS]
                     [--limit-minutes M] [--task-timeout-minutes T] [--order size|id] [--retry-failed]
                     [--engine-option KEY=VALUE ...]
    qmlrp label collect labels/beta-b3lyp [--out table.csv] [--key KEY]
    qmlrp label compare A.csv B.csv [--out comparison.json]

The selection filters combine: --ids, then --min/--max-heavy-atoms, then a seeded --sample of
what is left. Exit status: 0 when every selected molecule has a result, 1 when some failed (listed),
3 when a --limit-minutes run stopped with molecules left to do (rerun to go on), 2 for bad input.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def add_parser(sub) -> None:
    """The `label` subcommand and its three actions, on the CLI's subparsers."""
    lab = sub.add_parser("label", help="QM labels (first hyperpolarizability) for QM9 with a Dask task farm; collect, compare")
    acts = lab.add_subparsers(dest="label_command", required=True, metavar="ACTION")

    b = acts.add_parser("beta", help="compute dipole, alpha and beta for QM9 molecules (resumable task farm)")
    b.add_argument("--dataset", default="qm9", choices=["qm9"], help="molecules to label (qm9: the embedded QM9)")
    b.add_argument("--ids", help="file of QM9 ids (spaces, commas or newlines)")
    b.add_argument("--max-heavy-atoms", type=int, help="only molecules with at most K non-H atoms")
    b.add_argument("--min-heavy-atoms", type=int, help="only molecules with at least K non-H atoms (with --sample: "
                   "e.g. --min-heavy-atoms 7 --sample 150, a seeded sample of the large molecules)")
    b.add_argument("--sample", type=int, help="a seeded random sample of N of the selected molecules")
    b.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    b.add_argument("--xc", default="b3lyp", help="'hf' or a functional PySCF knows (default b3lyp, Gaussian's = QM9's)")
    b.add_argument("--basis", default="6-31g(2df,p)", help="basis set (default 6-31g(2df,p), QM9's)")
    b.add_argument("--method", default="analytic", help="analytic (default) or finite_field")
    b.add_argument("--out", required=True, help="output folder (rerun to resume; results/<key>/<id>.json)")
    b.add_argument("--workers", type=int, help="local worker processes (default: cores // threads-per-worker)")
    b.add_argument("--threads-per-worker", type=int, default=1, help="threads of each worker and of PySCF in it (default 1)")
    b.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786) instead of a local cluster;"
                                       " its workers must see --out at the same path")
    b.add_argument("--limit-minutes", type=float, help="stop submitting new molecules after M minutes, let the running ones"
                                                       " finish, and exit (chunked runs: rerun to go on)")
    b.add_argument("--task-timeout-minutes", type=float, help="record a molecule running longer than T minutes as failed"
                                                              " and restart its worker")
    b.add_argument("--order", default="size", choices=["size", "id"], help="size (default): fewest heavy atoms first")
    b.add_argument("--retry-failed", action="store_true", help="compute again the molecules that failed before")
    b.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra keyword for molgraph.qm.response_properties, VALUE as JSON (e.g. density_fit=false,"
                        " grids_level=4); part of the result key")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_label_beta)

    c = acts.add_parser("collect", help="gather a label folder's results into one table (CSV, Parquet with pyarrow)")
    c.add_argument("folder", help="the --out folder of `qmlrp label beta`")
    c.add_argument("--out", help="table path (default FOLDER/table.csv; .parquet writes Parquet)")
    c.add_argument("--key", help="which result key when the folder holds several levels of theory")
    c.set_defaults(func=cmd_label_collect)

    k = acts.add_parser("compare", help="two collected tables (two levels of theory) on their overlap: r, MAE")
    k.add_argument("a")
    k.add_argument("b")
    k.add_argument("--out", help="JSON to write (default: comparison.json beside B)")
    k.set_defaults(func=cmd_label_compare)


def _err(cmd: str, msg: str) -> int:
    print(f"qmlrp label {cmd}: {msg}", file=sys.stderr)
    return 2


def _read_ids(path: str) -> list[int]:
    from molgraph.splits import read_ids

    try:
        return read_ids(path)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None


def _engine_options(items: list[str]) -> dict:
    opts = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--engine-option {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            opts[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            opts[k.strip()] = v  # a bare string
    return opts


def cmd_label_beta(args) -> int:
    try:
        from molgraph.qm.farm import LabelSpec, qm9_molecules, run_farm
    except ImportError as exc:
        return _err("beta", f"needs the QM extra ({exc}); pip install 'qmlrp[qm]'")
    try:
        ids = _read_ids(args.ids) if args.ids else None
        spec = LabelSpec(xc=args.xc, basis=args.basis, method=args.method, threads=args.threads_per_worker,
                         options=_engine_options(args.engine_option))
        for name in ("workers", "sample", "max_heavy_atoms", "min_heavy_atoms"):
            v = getattr(args, name)
            if v is not None and v < (0 if name.endswith("heavy_atoms") else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")
        mols, missing = qm9_molecules(ids=ids, max_heavy_atoms=args.max_heavy_atoms, sample=args.sample, seed=args.seed,
                                      min_heavy_atoms=args.min_heavy_atoms)
    except (ValueError, FileNotFoundError) as exc:
        return _err("beta", str(exc))
    for m in missing:
        print(f"not labelled: qm9:{m['id']}: {m['reason']}", file=sys.stderr)
    if not mols:
        return _err("beta", "no molecules selected")
    s = run_farm(mols, args.out, spec, workers=args.workers, scheduler=args.scheduler, limit_minutes=args.limit_minutes,
                 task_timeout_minutes=args.task_timeout_minutes, retry_failed=args.retry_failed, order=args.order,
                 progress=not args.no_progress, log=lambda m: print(m, file=sys.stderr))
    print(f"{s.n_ok} labelled, {s.n_failed} failed in this run ({s.seconds:.1f} s); {s.n_skipped_done} were done before,"
          f" {s.n_left} left to do{' (time limit reached: rerun to go on)' if s.stopped_by_limit else ''}")
    if s.failures:
        print(f"{len(s.failures)} molecule(s) failed (error files in {Path(args.out) / 'failed' / s.key};"
              f" --retry-failed computes them again):")
        for f in s.failures:
            print(f"  {f['name'] or f['id']}: {f['error']}")
    print(f"results: {Path(args.out) / 'results' / s.key}; manifest: {Path(args.out) / 'manifest.json'};"
          f" table: qmlrp label collect {args.out}")
    if s.failures:
        return 1
    return 3 if s.n_left else 0


def _fmt(x, spec=".4f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def cmd_label_collect(args) -> int:
    from molgraph.qm.collect import collect, write_id_lists, write_table
    from molgraph.storage import atomic_write_json

    try:
        c = collect(args.folder, key=args.key)
    except (ValueError, FileNotFoundError) as exc:
        return _err("collect", str(exc))
    out = Path(args.out) if args.out else Path(args.folder) / "table.csv"
    try:
        written = write_table(c.rows, out)
    except ImportError as exc:
        return _err("collect", str(exc))
    summary = c.summary()
    summary_path = out.with_name(out.stem + ".summary.json")
    atomic_write_json(summary_path, summary)
    id_lists = write_id_lists(c.rows, out.parent)
    spec = summary["spec"] or {}
    print(f"{c.key}: {spec.get('xc')}/{spec.get('basis')} ({spec.get('method')}), {summary['code_version']}")
    print(f"{summary['n_done']} done, {summary['n_failed']} failed, {summary['n_unreadable']} unreadable; "
          f"beta_par undefined (no dipole) for {summary['n_beta_par_undefined']}")
    for name, unit in (("mu_debye", "D"), ("alpha_iso_bohr3", "bohr^3")):
        v = summary["vs_qm9"][name]
        print(f"vs QM9 {name}: MAE {_fmt(v['mae'])} {unit}, max |diff| {_fmt(v['max_abs'])}, mean (ours - QM9) "
              f"{_fmt(v['mean_signed'])} over {v['n']} molecules")
    for f in c.failures:
        print(f"  failed {f['name'] or f['id']}: {f['error']}")
    for f in c.unreadable:
        print(f"  unreadable {f['file']}: {f['error']}")
    print("-> " + ", ".join(str(p) for p in [*written, summary_path, *id_lists.values()]))
    return 1 if c.unreadable else 0


def cmd_label_compare(args) -> int:
    from molgraph.qm.collect import compare
    from molgraph.storage import atomic_write_json

    try:
        r = compare(args.a, args.b)
    except (ValueError, FileNotFoundError) as exc:
        return _err("compare", str(exc))
    out = Path(args.out) if args.out else Path(args.b).with_name("comparison.json")
    atomic_write_json(out, r)
    print(f"A: {args.a} {', '.join(r['level_a'])} ({r['n_a']} molecules)")
    print(f"B: {args.b} {', '.join(r['level_b'])} ({r['n_b']} molecules)")
    print(f"overlap: {r['n_overlap']} molecules")
    for col, s in r["columns"].items():
        print(f"  {col:<14} n {s['n']:>6}  r {_fmt(s['pearson_r'])}  MAE {_fmt(s.get('mae'))}  RMSE {_fmt(s.get('rmse'))}"
              f"  mean(B-A) {_fmt(s.get('mean_signed'))}  max|B-A| {_fmt(s.get('max_abs'))}  MAE/mean|A| {_fmt(s.get('relative_mae'))}")
    print(f"-> {out}")
    return 0 if r["n_overlap"] else 1
