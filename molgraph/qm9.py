"""QM9 as a featurized, cached, memory-mapped dataset.

    ds = molgraph.qm9.load()                 # qm9pack, all 130,831 molecules
    ds = molgraph.qm9.load(source="xyz", root="~/data/dsgdb9nsd.xyz.tar.bz2")
    g = ds.by_id(1234)                       # MolGraph with targets
    alpha = ds.target("alpha_bohr3")         # (M,) numpy, dataset order

The cache is a folder of .npy arrays plus `manifest.json`, keyed by the source checksum, the
featurizer version and the molecule selection: a different key is a different folder, so stale
data is never reused; a folder whose manifest disagrees raises with the fix. The build runs in
chunks over a process pool; each finished chunk is saved atomically under `<cache>.partial/`,
so a killed build resumes where it stopped, and the final folder appears by one atomic rename,
only once complete.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import torch

from . import qm9_sources as src
from .features import N_ATOM_FEATURES, N_PAIR_FEATURES
from .featurizer import EncodedGraph, MolecularGraphFeaturizer, MolGraph, decode
from .molecule import ELEMENTS, Molecule, MoleculeError
from .storage import atomic_save_npz, atomic_write_json
from .labels import LabelTable, read_label_table
from .targets import LABEL_TARGETS, SCALAR_TARGETS, TARGETS, compute_targets

if TYPE_CHECKING:
    from .batch import MolBatch

CACHE_FORMAT = 1
CHUNK = 1000
_METHODS = ("given", "template", "geometry")


def default_cache_root() -> Path:
    """$QMLRP_CACHE, else $XDG_CACHE_HOME/qmlrp, else ~/.cache/qmlrp."""
    if os.environ.get("QMLRP_CACHE"):
        return Path(os.environ["QMLRP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qmlrp"


# ----------------------------------------------------------------------------- the source plan
@dataclass
class _Source:
    name: str  # 'qm9pack' or 'xyz'
    root: Path | None
    checksum: str
    ids: np.ndarray | None  # QM9 ids selected, ascending; None: all of the source


def _selection_digest(ids: np.ndarray | None) -> str:
    if ids is None:
        return "all"
    return hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()[:12]


def _iter_payloads(source: str, root: Path | None, wanted: set[int] | None) -> Iterable[tuple[int, object]]:
    """(id, payload) where payload is a raw qm9pack row, a Molecule or a MoleculeError."""
    if source == "qm9pack":
        for row in src.iter_qm9pack_rows():
            qid = int(row["Index"])
            if wanted is None or qid in wanted:
                yield qid, row
    else:
        for item in src.iter_original(root):
            if isinstance(item, MoleculeError):
                found = src._ID_FROM_NAME.search(item.source)
                qid = int(found.group(1)) if found else -1
                if wanted is None or qid in wanted or qid == -1:
                    yield qid, item
                continue
            qid = item.properties["qm9_id"]
            if wanted is None or qid in wanted:
                yield qid, item


# ----------------------------------------------------------------------------- worker
def _die_with_parent() -> None:
    """Pool initializer: the kernel sends SIGTERM to this worker when its parent dies (Linux
    prctl PR_SET_PDEATHSIG), so a killed build leaves no orphans; elsewhere a no-op."""
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() == 1:  # the parent died before the call
            os._exit(1)
    except OSError:
        pass


def _featurize_chunk(args) -> dict:
    """Worker: payloads -> packed arrays for the molecules that worked, and the failures."""
    chunk_id, payloads, featurizer = args
    ok: list[tuple[int, EncodedGraph, dict, str]] = []
    failed: list[tuple[int, str]] = []
    for qid, payload in payloads:
        try:
            if isinstance(payload, MoleculeError):
                raise payload
            mol = payload if isinstance(payload, Molecule) else src.molecule_from_qm9pack_row(payload)
            enc = featurizer.encode(mol)
            ok.append((qid, enc, compute_targets(mol.properties, mol.n_atoms), mol.smiles or ""))
        except MoleculeError as exc:
            failed.append((qid, str(exc)))
        except Exception as exc:  # an RDKit crash on one molecule must not stop the build
            failed.append((qid, f"qm9:{qid}: unexpected {type(exc).__name__}: {exc}"))
    return _pack(chunk_id, ok, failed)


def _pack(chunk_id: int, ok, failed) -> dict:
    n = np.array([e.atom_features.shape[0] for _, e, _, _ in ok], dtype=np.int64)
    iu = [np.triu_indices(k, 1) for k in n]
    cat = lambda xs, shape, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(shape, dt)
    freqs = [t["freqs_cm1"] for _, _, t, _ in ok]
    return dict(
        chunk=np.array(chunk_id),
        ids=np.array([q for q, *_ in ok], dtype=np.int64),
        n_atoms=n,
        atom_features=cat([e.atom_features for _, e, _, _ in ok], (0, 21), np.float32),
        positions=cat([e.positions for _, e, _, _ in ok], (0, 3), np.float32),
        atomic_numbers=cat([e.atomic_numbers for _, e, _, _ in ok], (0,), np.uint8),
        bond=cat([e.bond[i] for (_, e, _, _), i in zip(ok, iu)], (0,), np.int8),
        path=cat([e.path[i] for (_, e, _, _), i in zip(ok, iu)], (0,), np.int8),
        ring=cat([e.ring[i] for (_, e, _, _), i in zip(ok, iu)], (0,), np.bool_),
        method=np.array([_METHODS.index(e.method) for _, e, _, _ in ok], dtype=np.int8),
        scalars=np.array([[t[k] for k in SCALAR_TARGETS] for _, _, t, _ in ok], dtype=np.float64).reshape(len(ok), len(SCALAR_TARGETS)),
        freqs=cat(freqs, (0,), np.float64),
        n_freqs=np.array([f.size for f in freqs], dtype=np.int64),
        alpha_tensor=np.array([t["alpha_tensor_bohr3"] for _, _, t, _ in ok], dtype=np.float64).reshape(len(ok), 3, 3),
        mulliken=cat([t["mulliken_e"] for _, _, t, _ in ok], (0,), np.float64),
        smiles=np.array([s for *_, s in ok], dtype=str),
        failed_ids=np.array([q for q, _ in failed], dtype=np.int64),
        failed_reasons=np.array([r for _, r in failed], dtype=str),
    )


# ----------------------------------------------------------------------------- build
def _key(source: _Source, featurizer: MolecularGraphFeaturizer) -> dict:
    return {
        "cache_format": CACHE_FORMAT,
        "source": source.name,
        "source_checksum": source.checksum,
        "featurizer": repr(featurizer),
        "featurizer_version": featurizer.version,
        "selection": _selection_digest(source.ids),
    }


def _cache_dir(cache_root: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root / f"qm9-{key['source']}-{key['featurizer_version']}-{key['selection']}-{digest}"


def build(source: _Source, featurizer: MolecularGraphFeaturizer, out: Path, *, workers: int | None = None,
          progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Featurize `source` into cache folder `out` (resumable)."""
    key = _key(source, featurizer)
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(out.name + ".tmp*"):  # left by a build killed while assembling
        shutil.rmtree(stale, ignore_errors=True)
    plan_path = partial / "plan.json"
    plan = {"key": key, "chunk": CHUNK}
    if plan_path.exists() and json.loads(plan_path.read_text()) != plan:
        shutil.rmtree(partial)
        partial.mkdir(parents=True)
    atomic_write_json(plan_path, plan)
    done = {int(p.stem.split("_")[1]) for p in partial.glob("chunk_*.npz")}
    t0 = time.time()
    wanted = None if source.ids is None else set(int(i) for i in source.ids)
    workers = workers or os.cpu_count() or 1

    seen: set[int] = set()

    def chunks():
        buf, cid = [], 0
        for item in _iter_payloads(source.name, source.root, wanted):
            seen.add(item[0])  # every payload passes here, also those of chunks done earlier
            buf.append(item)
            if len(buf) == CHUNK:
                if cid not in done:
                    yield cid, buf, featurizer
                buf, cid = [], cid + 1
        if buf and cid not in done:
            yield cid, buf, featurizer

    from tqdm.auto import tqdm

    total = len(wanted) if wanted is not None else (src.N_CHARACTERIZED if source.name == "qm9pack" else None)
    bar = tqdm(total=total, unit="mol", desc="featurize", disable=not progress, smoothing=0.05)
    bar.update(len(done) * CHUNK if total is None else min(len(done) * CHUNK, total))
    n_failed = 0
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent) if workers > 1 else None

    def bounded(pool):
        """Results in chunk order with at most 2 x workers chunks in flight (bounded memory)."""
        todo = chunks()
        window = deque(pool.submit(_featurize_chunk, a) for a in itertools.islice(todo, 2 * workers))
        while window:
            res = window.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                window.append(pool.submit(_featurize_chunk, nxt))
            yield res

    results = bounded(pool) if pool is not None else map(_featurize_chunk, chunks())
    try:
        for res in results:
            atomic_save_npz(partial / f"chunk_{int(res['chunk']):05d}.npz", **res)
            n_failed += len(res["failed_ids"])
            bar.update(len(res["ids"]) + len(res["failed_ids"]))
            bar.set_postfix(failed=n_failed)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    missing = sorted(wanted - seen) if wanted is not None else []
    skip = src.uncharacterized_ids()
    not_in_source = [{"id": q, "reason": "uncharacterized in QM9 (excluded)" if q in skip else "not in the source"} for q in missing]
    _assemble(partial, out, key, time.time() - t0, log, not_in_source)
    shutil.rmtree(partial, ignore_errors=True)
    return out


def _assemble(partial: Path, out: Path, key: dict, seconds: float, log, not_in_source=()) -> None:
    parts = [dict(np.load(p)) for p in sorted(partial.glob("chunk_*.npz"))]
    cat = lambda k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0)
    ids = cat("ids")
    order = np.argsort(ids, kind="stable")
    n_atoms = cat("n_atoms")
    n_pairs = n_atoms * (n_atoms - 1) // 2
    n_freqs = cat("n_freqs")

    def ragged_order(lengths):
        """(index into the concatenated values, new offsets) that put molecules in id order."""
        off = np.concatenate([[0], np.cumsum(lengths)])
        idx = np.concatenate([np.arange(off[i], off[i + 1]) for i in order]) if len(order) else np.zeros(0, np.int64)
        return idx, np.concatenate([[0], np.cumsum(lengths[order])])

    arrays = {"ids": ids[order], "n_atoms": n_atoms[order]}
    idx, arrays["atom_offsets"] = ragged_order(n_atoms)  # computed once per kind of ragged array
    for name in ("atom_features", "positions", "atomic_numbers", "mulliken"):
        arrays[name] = cat(name)[idx]
    idx, arrays["pair_offsets"] = ragged_order(n_pairs)
    for name in ("bond", "path", "ring"):
        arrays[name] = cat(name)[idx]
    idx, arrays["freq_offsets"] = ragged_order(n_freqs)
    arrays["freqs"] = cat("freqs")[idx]
    for name in ("method", "scalars", "alpha_tensor", "smiles"):
        arrays[name] = cat(name)[order]
    failed = sorted(zip(cat("failed_ids").tolist(), cat("failed_reasons").tolist()))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", arr)
    methods = np.bincount(arrays["method"].astype(np.int64), minlength=len(_METHODS)) if len(ids) else np.zeros(3, int)
    manifest = {
        **key,
        "n_molecules": int(len(ids)),
        "n_failed": len(failed),
        "failures": [{"id": int(i), "reason": r} for i, r in failed],
        "perception": {m: int(c) for m, c in zip(_METHODS, methods)},
        "not_in_source": list(not_in_source),
        "scalar_targets": list(SCALAR_TARGETS),
        "build_seconds": round(seconds, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(tmp / "manifest.json", manifest)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    log(f"featurized {len(ids)} molecules, {len(failed)} failed, in {seconds:.1f} s -> {out}")


# ----------------------------------------------------------------------------- dataset
def _pair_tables():
    """Columns of the pair features and lookup tables from the stored codes (bond order code,
    graph distance code) to their feature values, as `featurizer.decode` computes them."""
    from .features import FEATURE_GROUPS, MAX_GRAPH_DISTANCE

    g = FEATURE_GROUPS
    cols = {"bond": list(g["bond_type"].indices), "path": list(g["graph_distance"].indices),
            "ring": g["same_ring"].indices[0], "distance": g["spatial_distance"].indices[0]}
    bond = np.zeros((256, len(cols["bond"])), np.float32)  # indexed by the int8 code (0 = no bond)
    for code in range(1, len(cols["bond"]) + 1):
        bond[code, code - 1] = 1.0
    path = np.zeros((256, MAX_GRAPH_DISTANCE), np.float32)  # indexed by the uint8 view of the code
    for code in range(256):
        signed = code - 256 if code > 127 else code
        path[code] = [(signed >= 1) & (signed <= k) for k in range(1, MAX_GRAPH_DISTANCE + 1)]
    code = np.zeros((5 * 256, N_PAIR_FEATURES), np.float32)  # bond code * 256 + uint8 path code
    for c in range(5 * 256):
        code[c, cols["bond"]] = bond[c // 256]
        code[c, cols["path"]] = path[c % 256]
    return cols, code


_PAIR_COLS, _CODE_LUT = _pair_tables()
_TRIU: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _triu(n: int) -> tuple[np.ndarray, np.ndarray]:
    if n not in _TRIU:
        _TRIU[n] = np.triu_indices(n, 1)
    return _TRIU[n]


class QM9Dataset(torch.utils.data.Dataset):
    """Featurized QM9, memory-mapped. Index i in 0..len-1 (dataset order = ascending QM9 id).

    Attributes:
        ids: (M,) QM9 ids (1-based, as in the original distribution).
        manifest: how the cache was built (source checksum, featurizer version, failures).
        targets_selected: the target names each MolGraph carries (default: all scalars,
            `freqs_cm1` and `alpha_tensor_bohr3`, and the label targets when labels are joined).
        labels: the joined QM label table (`molgraph.labels.LabelTable`), or None. Its targets
            (`beta_par_au`, `beta_vec_au`) are NaN for molecules without a label.
    """

    def __init__(self, path: str | os.PathLike, targets: Sequence[str] | None = None, *, _rows: np.ndarray | None = None,
                 labels: LabelTable | str | os.PathLike | None = None, _label_values: dict | None = None):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"{self.path} is not a complete QM9 cache (no manifest.json); rebuild it with `qmlrp featurize`")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("cache_format") != CACHE_FORMAT:
            raise ValueError(f"{self.path}: cache format {self.manifest.get('cache_format')} != {CACHE_FORMAT}; delete the folder and rerun `qmlrp featurize`")
        a = {p.stem: np.load(p, mmap_mode="r") for p in self.path.glob("*.npy")}
        self._a = a
        self._rows = np.arange(len(a["ids"])) if _rows is None else np.asarray(_rows)
        self.ids = np.asarray(a["ids"])[self._rows]
        self._scalar_col = {k: i for i, k in enumerate(self.manifest["scalar_targets"])}
        if labels is not None and not isinstance(labels, LabelTable):
            labels = read_label_table(labels)
        self.labels = labels
        if labels is not None and _label_values is None:
            _label_values = labels.aligned(np.asarray(a["ids"]))  # over the whole cache, NaN = no label
        self._label_values = _label_values
        default = (*SCALAR_TARGETS, "freqs_cm1", "alpha_tensor_bohr3", *(LABEL_TARGETS if labels is not None else ()))
        self.targets_selected = tuple(targets) if targets is not None else default
        unknown = [t for t in self.targets_selected if t not in TARGETS]
        if unknown:
            raise KeyError(f"unknown target(s) {unknown}; valid: {', '.join(TARGETS)}")
        for t in self.targets_selected:
            self._check_label(t)
        self._row_of_id = None

    def _check_label(self, name: str) -> None:
        if name in LABEL_TARGETS and self.labels is None:
            raise KeyError(f"{name} is not in QM9: it comes from a QM label table; load with labels=TABLE "
                           f"(qm9.load(labels=...), or --labels on the command line; tables: `qmlrp label collect`)")

    # -- views
    def __len__(self) -> int:
        return len(self._rows)

    def subset(self, ids: Iterable[int]) -> "QM9Dataset":
        """The molecules with these QM9 ids, in the given order (KeyError names a missing id)."""
        rows = self._rows[[self.index_of(int(i)) for i in ids]]
        return QM9Dataset(self.path, self.targets_selected, _rows=rows, labels=self.labels, _label_values=self._label_values)

    def with_targets(self, targets: Sequence[str]) -> "QM9Dataset":
        return QM9Dataset(self.path, targets, _rows=self._rows, labels=self.labels, _label_values=self._label_values)

    def with_labels(self, labels: LabelTable | str | os.PathLike) -> "QM9Dataset":
        """The same molecules with a QM label table joined by QM9 id (see `molgraph.labels`)."""
        return QM9Dataset(self.path, None, _rows=self._rows, labels=labels)

    def label_mask(self, name: str) -> np.ndarray:
        """(M,) bool: which molecules have a value of label target `name`."""
        return np.isfinite(self.target(name))

    def index_of(self, qm9_id: int) -> int:
        if self._row_of_id is None:
            self._row_of_id = {int(q): i for i, q in enumerate(self.ids)}
        try:
            return self._row_of_id[int(qm9_id)]
        except KeyError:
            failed = {f["id"]: f["reason"] for f in self.manifest["failures"]}
            if int(qm9_id) in failed:
                raise KeyError(f"QM9 id {qm9_id} failed featurization: {failed[int(qm9_id)]}") from None
            raise KeyError(f"QM9 id {qm9_id} is not in this dataset") from None

    @property
    def failures(self) -> list[dict]:
        return self.manifest["failures"]

    # -- per-molecule access
    def encoded(self, i: int) -> EncodedGraph:
        a, r = self._a, int(self._rows[i])
        s, e = int(a["atom_offsets"][r]), int(a["atom_offsets"][r + 1])
        ps, pe = int(a["pair_offsets"][r]), int(a["pair_offsets"][r + 1])
        n = e - s
        iu = np.triu_indices(n, 1)

        def square(flat, dtype):
            m = np.zeros((n, n), dtype=dtype)
            m[iu] = flat[ps:pe]
            return m + m.T

        return EncodedGraph(
            np.asarray(a["atom_features"][s:e]), np.asarray(a["positions"][s:e]), np.asarray(a["atomic_numbers"][s:e]),
            square(a["bond"], np.int8), square(a["path"], np.int8), square(a["ring"], np.bool_),
            _METHODS[int(a["method"][r])],
        )

    def target_value(self, i: int, name: str) -> torch.Tensor:
        a, r = self._a, int(self._rows[i])
        kind = TARGETS[name].kind
        if name in LABEL_TARGETS:
            self._check_label(name)
            return torch.tensor(float(self._label_values[name][r]), dtype=torch.float64)
        if kind == "scalar":
            return torch.tensor(float(a["scalars"][r, self._scalar_col[name]]), dtype=torch.float64)
        if name == "freqs_cm1":
            return torch.from_numpy(np.array(a["freqs"][a["freq_offsets"][r]: a["freq_offsets"][r + 1]]))
        if name == "alpha_tensor_bohr3":
            return torch.from_numpy(np.array(a["alpha_tensor"][r]))
        if name == "mulliken_e":
            return torch.from_numpy(np.array(a["mulliken"][a["atom_offsets"][r]: a["atom_offsets"][r + 1]]))
        raise KeyError(name)

    def __getitem__(self, i: int) -> MolGraph:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} molecules")
        i = i % len(self)
        targets = {t: self.target_value(i, t) for t in self.targets_selected}
        return decode(self.encoded(i), targets, name=f"qm9:{int(self.ids[i])}")

    def batch(self, indices: Sequence[int]) -> "MolBatch":
        """`collate([self[i] for i in indices])`, filled straight from the memory-mapped arrays with
        a few vectorized gathers instead of one dense MolGraph per molecule (tests check the two
        are identical); the training and prediction loops read their batches this way."""
        from .batch import MolBatch, collate_targets

        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            raise ValueError("batch needs at least one molecule")
        idx = np.where(idx < 0, idx + len(self), idx)
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"index out of range for {len(self)} molecules")
        a, rows = self._a, self._rows[idx]
        n = np.asarray(a["n_atoms"][rows], dtype=np.int64)
        b, big = len(rows), int(n.max())
        # atoms: molecule k's atom t comes from row atom_offsets[k] + t
        first = np.repeat(np.cumsum(n) - n, n)
        local = np.arange(int(n.sum())) - first
        mol = np.repeat(np.arange(b), n)
        src = np.repeat(np.asarray(a["atom_offsets"][rows]), n) + local
        x = np.zeros((b, big, N_ATOM_FEATURES), np.float32)
        x[mol, local] = a["atom_features"][src]
        pos = np.zeros((b, big, 3), np.float32)
        pos[mol, local] = a["positions"][src]
        mask = np.zeros((b, big), bool)
        mask[mol, local] = True
        # pairs i < j, stored row-major per molecule; features decoded as `featurizer.decode` does
        n_pairs = n * (n - 1) // 2
        tri = [_triu(int(k)) for k in n]
        pi = np.concatenate([t[0] for t in tri])
        pj = np.concatenate([t[1] for t in tri])
        pmol = np.repeat(np.arange(b), n_pairs)
        psrc = np.repeat(np.asarray(a["pair_offsets"][rows]), n_pairs) + np.arange(int(n_pairs.sum())) \
            - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
        code = np.asarray(a["bond"][psrc]).astype(np.intp) * 256 + np.asarray(a["path"][psrc]).view(np.uint8)
        feats = _CODE_LUT[code]  # (P, 13): bond type and graph distance set, the rest zero
        feats[:, _PAIR_COLS["ring"]] = a["ring"][psrc]
        apos = np.asarray(a["positions"][src], dtype=np.float64)  # the batch's atoms, in order
        base = np.repeat(np.cumsum(n) - n, n_pairs)
        d = apos[base + pi] - apos[base + pj]
        feats[:, _PAIR_COLS["distance"]] = np.sqrt((d ** 2).sum(-1)).astype(np.float32)
        pair = torch.zeros(b * big * big, N_PAIR_FEATURES)
        flat = pair.numpy()
        flat[(pmol * big + pi) * big + pj] = feats
        flat[(pmol * big + pj) * big + pi] = feats
        pair = pair.view(b, big, big, N_PAIR_FEATURES)
        names = tuple(f"qm9:{int(q)}" for q in self.ids[idx])
        scalar = [t for t in self.targets_selected if TARGETS[t].kind == "scalar"]
        other = [t for t in self.targets_selected if TARGETS[t].kind != "scalar"]
        targets, masks = collate_targets([{t: self.target_value(int(i), t) for t in other} for i in idx], names) \
            if other else ({}, {})
        for t in scalar:  # (B,) float64, as stacking the per-molecule 0-d tensors gives
            col = self._label_values[t][rows] if t in LABEL_TARGETS else a["scalars"][rows, self._scalar_col[t]]
            targets[t] = torch.from_numpy(np.array(col, dtype=np.float64))
        targets = {t: targets[t] for t in self.targets_selected}  # the dataset's order, as collate's
        return MolBatch(torch.from_numpy(x), pair, torch.from_numpy(mask), torch.from_numpy(pos),
                        torch.from_numpy(n), targets, masks, names)

    def by_id(self, qm9_id: int) -> MolGraph:
        return self[self.index_of(qm9_id)]

    def molecule(self, i: int) -> Molecule:
        """Plain Molecule (elements, positions, SMILES) of entry i, e.g. for depiction."""
        enc = self.encoded(i)
        return Molecule(
            tuple(ELEMENTS[int(z) - 1] for z in enc.atomic_numbers), enc.positions.astype(np.float64),
            name=f"qm9:{int(self.ids[i])}", source=str(self.path), smiles=str(self._a["smiles"][self._rows[i]]),
        )

    # -- whole-column access
    def target(self, name: str) -> np.ndarray:
        """Scalar target over the dataset, (M,) float64 in dataset order."""
        if TARGETS.get(name) is None or TARGETS[name].kind != "scalar":
            raise KeyError(f"{name!r} is not a scalar target; scalar targets: {', '.join((*SCALAR_TARGETS, *LABEL_TARGETS))}")
        if name in LABEL_TARGETS:
            self._check_label(name)
            return self._label_values[name][self._rows].copy()
        return np.asarray(self._a["scalars"][self._rows, self._scalar_col[name]])

    @property
    def n_atoms(self) -> np.ndarray:
        return np.asarray(self._a["n_atoms"])[self._rows]

    @property
    def n_hydrogens(self) -> np.ndarray:
        """(M,) number of H atoms of each molecule, in dataset order."""
        if getattr(self, "_n_h_all", None) is None:
            z = np.asarray(self._a["atomic_numbers"]) == 1
            off = np.asarray(self._a["atom_offsets"], dtype=np.int64)
            c = np.concatenate([[0], np.cumsum(z, dtype=np.int64)])
            self._n_h_all = c[off[1:]] - c[off[:-1]]
        return self._n_h_all[self._rows]

    def report(self) -> dict:
        m = self.manifest
        total = m["n_molecules"] + m["n_failed"]
        return {
            "source": m["source"], "n_molecules": m["n_molecules"], "n_failed": m["n_failed"],
            "failed_fraction": m["n_failed"] / total if total else 0.0,
            "perception": m["perception"], "failures": m["failures"],
            "not_in_source": m.get("not_in_source", []),
        }


# ----------------------------------------------------------------------------- entry point
def resolve_source(source: str = "qm9pack", root: str | os.PathLike | None = None,
                   ids: Iterable[int] | None = None, sample: int | None = None, seed: int = 0) -> _Source:
    """Which molecules from where, with the checksum that keys the cache."""
    if source == "qm9pack":
        if root is not None:
            raise ValueError("root is for the original distribution (source='xyz'); the embedded QM9 needs none")
        checksum = src.files_checksum(src.qm9pack_files())
    elif source == "xyz":
        if root is None:
            raise ValueError("source 'xyz' needs root: a folder of dsgdb9nsd_*.xyz files or dsgdb9nsd.xyz.tar.bz2")
        root = Path(root).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or directory")
        checksum = src.original_checksum(root)
    else:
        raise ValueError(f"unknown source {source!r}; valid: qm9pack, xyz")
    selected = None
    if ids is not None:
        selected = np.unique(np.asarray(list(ids), dtype=np.int64))
    elif sample is not None:
        pool = src.characterized_ids()
        rng = np.random.default_rng(seed)
        selected = np.sort(rng.choice(pool, size=min(sample, len(pool)), replace=False))
    return _Source(source, Path(root) if root else None, checksum, selected)


def load(source: str = "qm9pack", root: str | os.PathLike | None = None, *, ids: Iterable[int] | None = None,
         sample: int | None = None, seed: int = 0, targets: Sequence[str] | None = None,
         cache_root: str | os.PathLike | None = None, featurizer: MolecularGraphFeaturizer | None = None,
         workers: int | None = None, progress: bool = True, rebuild: bool = False,
         log: Callable[[str], None] = print, labels: LabelTable | str | os.PathLike | None = None) -> QM9Dataset:
    """Featurized QM9, built on first use and memory-mapped afterwards.

    Args:
        source: 'qm9pack' (embedded, default) or 'xyz' (original files under `root`).
        ids / sample: restrict to these QM9 ids, or a seeded random sample of N molecules.
        targets: target names carried by each MolGraph (see `molgraph.TARGETS`).
        cache_root: where caches live (default `default_cache_root()`).
        workers: processes for the build (default: all cores).
        rebuild: build again even if a complete cache exists.
        labels: a QM label table (`qmlrp label collect`; path or LabelTable) joined by QM9 id,
            giving targets `beta_par_au` and `beta_vec_au` (NaN where a molecule has no label).
    """
    featurizer = featurizer or MolecularGraphFeaturizer()
    s = resolve_source(source, root, ids, sample, seed)
    key = _key(s, featurizer)
    out = _cache_dir(Path(cache_root) if cache_root else default_cache_root(), key)
    manifest = out / "manifest.json"
    if manifest.exists() and not rebuild:
        stored = json.loads(manifest.read_text())
        mismatch = {k: (stored.get(k), v) for k, v in key.items() if stored.get(k) != v}
        if mismatch:
            raise ValueError(f"cache {out} was built with {mismatch}; delete it or pass rebuild=True (--rebuild)")
    else:
        build(s, featurizer, out, workers=workers, progress=progress, log=log)
    return QM9Dataset(out, targets, labels=labels)
