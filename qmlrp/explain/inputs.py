"""What is explained: QM9 selections (a model's split, a file of ids) and user XYZ/SDF files."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from molgraph.splits import read_ids  # noqa: F401  (the one id reader, re-exported)

@dataclass
class Inputs:
    """The molecules to explain: ids, sizes, labels (NaN without), a featurized graph and a
    plain Molecule (for depiction) per position, and what could not be featurized."""

    ids: list[str]
    n_atoms: np.ndarray
    targets: np.ndarray
    graph: Callable[[int], object]
    molecule: Callable[[int], object]
    failures: list[dict]
    description: str
    vector_target: Callable[[int], np.ndarray] | None = None  # a vector target's values (QM9 inputs)


def split_test_ids(model_dir: Path, which: str = "test") -> tuple[np.ndarray, str]:
    """Ids of the model's split (`split.json` in the model directory written by `qmlrp train`,
    or, for a fold of `qmlrp cv`, the k-fold split in the parent directory)."""
    from molgraph import splits

    cfg = json.loads((model_dir / "config.json").read_text())
    meta = cfg.get("split", {})
    own = model_dir / "split.json"
    if own.exists():
        sp = splits.load_split(own)
        if isinstance(sp, splits.KFold):
            sp = sp.fold(int(meta.get("fold", 0)))
        return np.asarray(getattr(sp, which)), f"{which} molecules of {own}"
    parent = model_dir.parent / "split.json"
    if parent.exists() and meta.get("digest"):  # a fold of `qmlrp cv` or a size of `qmlrp learning-curve`
        sp = splits.load_split(parent)
        cands = [sp] if isinstance(sp, splits.TrainValTest) else [sp.fold(f) for f in range(sp.k)]
        if "fold" in meta and isinstance(sp, splits.KFold):
            cands.insert(0, sp.fold(int(meta["fold"])))
        for c in cands:
            if c.digest == meta["digest"]:
                where = f"fold {c.meta['fold']} of {parent}" if "fold" in c.meta else str(parent)
                return np.asarray(getattr(c, which)), f"{which} molecules of {where}"
        raise ValueError(f"{parent} does not hold the split {model_dir} was trained on (digest {meta['digest']})")
    bins_file = model_dir.parent / "split_bins.npz"  # a fold of a published model (qmlrp publish)
    if bins_file.exists() and meta.get("digest") and "fold" in meta:
        with np.load(bins_file, allow_pickle=False) as z:
            bins = tuple(np.asarray(z[f"bin_{i}"]) for i in range(sum(k.startswith("bin_") for k in z.files)))
        f = int(meta["fold"])
        sp = splits.KFold(bins, seed=0).fold(f)  # the seeded protocol's validation slice (seed 0)
        if which != "test" and sp.digest != meta["digest"]:
            raise ValueError(f"{bins_file}: fold {f}'s {which} molecules cannot be rebuilt (split digest "
                             f"{sp.digest}, the model's {meta['digest']}); its test bin can (--split test)")
        return np.asarray(getattr(sp, which)), f"{which} molecules of fold {f} of {bins_file}"
    raise FileNotFoundError(f"{model_dir}: no split.json here or (for a fold model) in the parent directory; "
                            f"choose the molecules with --ids FILE or give XYZ/SDF files")


def find_qm9(ids: np.ndarray, source: str = "qm9pack", checksum: str | None = None, cache_root=None,
             log: Callable[[str], None] = print, progress: bool = True):
    """A featurized QM9 dataset holding `ids`: the smallest complete cache under the cache root
    that has them all (same source, checksum and featurizer), else one built for exactly these ids."""
    from molgraph import FEATURIZER_VERSION, qm9

    root = Path(cache_root) if cache_root else qm9.default_cache_root()
    wanted = np.unique(np.asarray(ids, dtype=np.int64))
    best = None
    for man in sorted(root.glob("qm9-*/manifest.json")) if root.exists() else []:
        try:
            m = json.loads(man.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("source") != source or m.get("featurizer_version") != FEATURIZER_VERSION:
            continue
        if checksum and m.get("source_checksum") != checksum:
            continue
        if best is not None and m.get("n_molecules", 0) >= best[0]:
            continue
        try:
            ds = qm9.QM9Dataset(man.parent)
        except (FileNotFoundError, ValueError):
            continue
        have = np.isin(wanted, ds.ids)
        failed = {int(f["id"]) for f in ds.failures}
        if np.all(have | np.isin(wanted, list(failed))):
            best = (m.get("n_molecules", len(ds)), ds)
    if best is not None:
        return best[1]
    if source != "qm9pack":
        raise FileNotFoundError(f"no featurized QM9 cache from source {source!r} under {root} holds these molecules; "
                                f"featurize them first (qmlrp featurize --root ...)")
    log(f"featurizing {len(wanted)} QM9 molecules into the cache {root}")
    return qm9.load(source, ids=wanted, cache_root=cache_root, progress=progress, log=log)


def label_table_of(config: dict, model_dir: Path | None = None) -> str | None:
    """The QM label table a model was trained with (config.json's inputs.labels), checked against
    its recorded SHA-256; None for a model of plain QM9 targets."""
    from molgraph.storage import sha256_file

    rec = (config.get("inputs") or {}).get("labels")
    if not rec:
        return None
    where = model_dir / "config.json" if model_dir else "config.json"
    for cand in (rec.get("table"), rec.get("absolute")):
        if cand and Path(cand).is_file():
            digest = sha256_file(cand)
            if rec.get("sha256") and digest != rec["sha256"]:
                raise ValueError(f"{cand}: the label table changed since the model in {where} was trained on it "
                                 f"(SHA-256 {digest[:12]}..., recorded {rec['sha256'][:12]}...)")
            return cand
    raise FileNotFoundError(f"{where}: the model was trained with the label table {rec.get('table')}, which is not "
                            f"here (nor at {rec.get('absolute')}); run from the directory it was trained in")


def qm9_inputs(ids: Sequence[int], target: str, source: str = "qm9pack", checksum: str | None = None,
               cache_root=None, description: str = "", log=print, progress: bool = True,
               labels: str | None = None) -> Inputs:
    """QM9 molecules by id, with the target values of `target` (rejoined with the label table
    `labels` for a target that comes from one, e.g. beta_par_au)."""
    ds = find_qm9(np.asarray(ids), source, checksum, cache_root, log=log, progress=progress)
    if labels is not None:
        ds = ds.with_labels(labels)
    failed = {int(f["id"]): f["reason"] for f in ds.failures}
    present = set(int(i) for i in ds.ids)
    failures, keep = [], []
    for i in ids:
        i = int(i)
        if i in present:
            keep.append(i)
        else:
            failures.append({"source": "qm9", "molecule": f"qm9:{i}",
                             "error": failed.get(i, "not in the featurized dataset")})
    from molgraph import TARGETS

    sub = ds.subset(keep).with_targets([])
    vector = None
    if TARGETS[target].kind == "vector":  # e.g. freqs_cm1: the values, per molecule, for the selection
        y = np.full(len(keep), np.nan)
        vector = lambda i, _s=ds.subset(keep): _s.target_value(int(i), target).numpy()  # noqa: E731
    else:
        y = ds.subset(keep).target(target) if keep else np.zeros(0)
    return Inputs([f"qm9:{i}" for i in keep], np.asarray(sub.n_atoms, dtype=np.int64), np.asarray(y, dtype=np.float64),
                  sub.__getitem__, sub.molecule, failures, description, vector)


def file_inputs(paths: Sequence[str]) -> Inputs:
    """Featurize every molecule of XYZ/SDF/MOL files; failures are recorded and skipped."""
    from molgraph import MolecularGraphFeaturizer, MoleculeError, iter_molecules

    featurizer = MolecularGraphFeaturizer()
    graphs, mols, ids, failures = [], [], [], []
    names = [Path(p).name for p in paths]
    for path, name in zip(paths, names):
        label = name if names.count(name) == 1 else str(path)
        if not Path(path).is_file():
            why = ("is a directory, expected a molecule file (XYZ, SDF or MOL)" if Path(path).is_dir()
                   else "no such file")
            failures.append({"source": str(path), "molecule": None, "error": why})
            continue
        for item in iter_molecules(path):
            try:
                if isinstance(item, MoleculeError):
                    raise item
                g = featurizer(item)
            except MoleculeError as exc:
                failures.append({"source": exc.source, "molecule": exc.index, "error": exc.problem})
                continue
            graphs.append(g)
            mols.append(item)
            ids.append(f"{label}:{item.index if item.index is not None else 0}")
    n = np.array([g.n_atoms for g in graphs], dtype=np.int64)
    return Inputs(ids, n, np.full(len(ids), np.nan), graphs.__getitem__, mols.__getitem__, failures,
                  f"{len(ids)} molecule(s) from {len(paths)} file(s)")


def qm9_pool() -> np.ndarray:
    """Every characterized QM9 id (the ids a sample is drawn from)."""
    from molgraph.qm9_sources import characterized_ids

    return characterized_ids()
