"""The relevance store: the one reader and writer of `relevance.npz` (per-molecule relevance of
every feature, atom and pair) and `groups.csv` (the 12 group sums per molecule)."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RELEVANCE_FORMAT = "qmlrp-relevance-1"
N_ATOM_FEATURES, N_PAIR_FEATURES = 21, 13


@dataclass(frozen=True)
class MoleculeRelevance:
    """One molecule's explanation, in the target's units.

    atom: (n, 21) relevance of every atom feature; pair: (n, n, 13) of every ordered pair's
    features; per_atom: (n,) own features + half of each pair, both orders (sums to the total);
    groups: (12,) per group, `molgraph.GROUP_NAMES` order; prediction, target (NaN without a
    label), explained (= prediction - the reference's prediction), absorbed; contribution: (n,)
    each atom's relevance at the pooling (the atoms' histograms summed; None in files from before
    it was stored), which sums to explained minus what the head absorbs."""

    id: str
    n_atoms: int
    atom: np.ndarray
    pair: np.ndarray
    per_atom: np.ndarray
    groups: np.ndarray
    prediction: float
    target: float
    explained: float
    absorbed: float
    elements: tuple[str, ...] = ()
    contribution: np.ndarray | None = None

    @property
    def total(self) -> float:
        """Relevance summed over every feature (= explained - absorbed)."""
        return float(self.atom.sum(dtype=np.float64) + self.pair.sum(dtype=np.float64))


@dataclass
class RelevanceSet:
    """The ragged per-molecule arrays of `relevance.npz`.

    Molecule m has atoms offsets[m]:offsets[m+1] in `atom_relevance` (sum n, 21) and
    `per_atom`, and ordered pairs pair_offsets[m]:pair_offsets[m+1] in `pair_relevance`
    (sum n^2, 13; row-major over (i, j), i.e. reshape to (n, n, 13)).
    """

    ids: np.ndarray
    n_atoms: np.ndarray
    offsets: np.ndarray
    pair_offsets: np.ndarray
    atom_relevance: np.ndarray
    pair_relevance: np.ndarray
    per_atom: np.ndarray
    groups: np.ndarray
    prediction: np.ndarray
    target: np.ndarray
    explained: np.ndarray
    absorbed: np.ndarray
    elements: np.ndarray
    meta: dict = field(default_factory=dict)
    atom_contribution: np.ndarray | None = None  # (sum n,) per atom at the pooling; None in older files
    _index: dict | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, key: int | str) -> int:
        if isinstance(key, (int, np.integer)):
            if not -len(self) <= key < len(self):
                raise IndexError(f"molecule {key} out of range for {len(self)} molecules")
            return int(key) % len(self)
        if self._index is None:
            self._index = {str(s): k for k, s in enumerate(self.ids)}
        try:
            return self._index[str(key)]
        except KeyError:
            raise KeyError(f"no molecule {key!r} in this explanation") from None

    def molecule(self, key: int | str) -> MoleculeRelevance:
        """By position or by id ('qm9:1234', 'mol.xyz:0')."""
        m = self.index(key)
        s, e = int(self.offsets[m]), int(self.offsets[m + 1])
        ps, pe = int(self.pair_offsets[m]), int(self.pair_offsets[m + 1])
        n = e - s
        return MoleculeRelevance(
            str(self.ids[m]), n, self.atom_relevance[s:e], self.pair_relevance[ps:pe].reshape(n, n, N_PAIR_FEATURES),
            self.per_atom[s:e], self.groups[m], float(self.prediction[m]), float(self.target[m]),
            float(self.explained[m]), float(self.absorbed[m]), tuple(str(x) for x in self.elements[s:e]),
            None if self.atom_contribution is None else self.atom_contribution[s:e],
        )


def offsets_of(n_atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(n_atoms, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(n)]), np.concatenate([[0], np.cumsum(n * n)])


def save_relevance(path: Path, rs: RelevanceSet) -> None:
    from molgraph.storage import atomic_save_npz

    atomic_save_npz(
        path, format=np.array(RELEVANCE_FORMAT), meta=np.array(json.dumps(rs.meta)),
        ids=np.asarray(rs.ids, dtype=str), n_atoms=rs.n_atoms.astype(np.int64), offsets=rs.offsets,
        pair_offsets=rs.pair_offsets, atom_relevance=rs.atom_relevance.astype(np.float32),
        pair_relevance=rs.pair_relevance.astype(np.float32), per_atom=rs.per_atom.astype(np.float32),
        groups=rs.groups.astype(np.float64), group_names=np.asarray(_group_names(), dtype=str),
        prediction=rs.prediction, target=rs.target, explained=rs.explained, absorbed=rs.absorbed,
        elements=np.asarray(rs.elements, dtype=str),
        **({} if rs.atom_contribution is None else {"atom_contribution": rs.atom_contribution.astype(np.float32)}),
    )


def load_relevance(directory: str | Path) -> RelevanceSet:
    """Read `relevance.npz` from an explain output directory (or the file itself)."""
    path = Path(directory)
    if path.is_dir():
        path = path / "relevance.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no relevance file (run `qmlrp explain` first)")
    with np.load(path, allow_pickle=False) as z:
        if str(z["format"]) != RELEVANCE_FORMAT:
            raise ValueError(f"{path}: format {str(z['format'])!r}, expected {RELEVANCE_FORMAT!r}")
        if tuple(str(x) for x in z["group_names"]) != _group_names():
            raise ValueError(f"{path}: group names differ from molgraph.GROUP_NAMES")
        return RelevanceSet(
            z["ids"], z["n_atoms"], z["offsets"], z["pair_offsets"], z["atom_relevance"], z["pair_relevance"],
            z["per_atom"], z["groups"], z["prediction"], z["target"], z["explained"], z["absorbed"], z["elements"],
            json.loads(str(z["meta"])), z["atom_contribution"] if "atom_contribution" in z.files else None,
        )


def _group_names() -> tuple[str, ...]:
    from molgraph import GROUP_NAMES

    return tuple(GROUP_NAMES)


def write_groups_csv(path: Path, rs: RelevanceSet) -> None:
    from molgraph.storage import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "n_atoms", "prediction", "target", "explained", "absorbed", *_group_names()])
    for m in range(len(rs)):
        t = "" if not np.isfinite(rs.target[m]) else repr(float(rs.target[m]))
        w.writerow([str(rs.ids[m]), int(rs.n_atoms[m]), repr(float(rs.prediction[m])), t, repr(float(rs.explained[m])),
                    repr(float(rs.absorbed[m])), *(repr(float(v)) for v in rs.groups[m])])
    atomic_write_text(path, buf.getvalue())


def read_groups_csv(path: str | Path) -> tuple[list[str], np.ndarray, list[dict]]:
    """(ids, G (M, 12), rows as dicts) of a groups.csv."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    names = _group_names()
    return [r["id"] for r in rows], np.array([[float(r[n]) for n in names] for r in rows]).reshape(-1, 12), rows


