"""`qmlrp` command line: thin subcommands over the Python API.

    qmlrp quickstart [--out runs/quickstart] [--sample 2000]
    qmlrp featurize [--source qm9] [--root DIR] [--sample N | --ids FILE] [--workers N]
    qmlrp inspect FILE [FILE ...] [--json OUT]
    qmlrp split [--k 10] [--seed 0] --out FILE
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _read_ids(path: str) -> list[int]:
    if not Path(path).is_file():
        raise SystemExit(f"qmlrp: {path}: no such ids file")
    text = Path(path).read_text()
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError as exc:
        raise SystemExit(f"qmlrp: {path}: ids must be integers separated by spaces, commas or newlines ({exc})")


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


def _load(args, progress=True):
    from molgraph import qm9

    source = args.source
    if source == "qm9":
        source = "xyz" if args.root else "qm9pack"
    return qm9.load(
        source, args.root, ids=_read_ids(args.ids) if args.ids else None, sample=args.sample,
        seed=args.seed, cache_root=args.cache_dir, workers=args.workers, progress=progress,
        rebuild=getattr(args, "rebuild", False), log=lambda m: print(m, file=sys.stderr),
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


def cmd_quickstart(args) -> int:
    from .quickstart import run

    return run(out=Path(args.out), sample=args.sample, seed=args.seed, cache_root=args.cache_dir, workers=args.workers)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qmlrp", description="Explain what chemistry-trained neural networks learn.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser("quickstart", help="featurize a QM9 sample, split it, and write a report")
    q.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    q.add_argument("--sample", type=int, default=2000, help="molecules to use (default 2000)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--cache-dir")
    q.add_argument("--workers", type=int)
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

    s = sub.add_parser("split", help="write the seeded k-fold split of the featurized QM9 ids")
    _dataset_args(s)
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--split-seed", dest="seed_split", type=int, default=0)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_split)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
