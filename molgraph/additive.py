"""Additive models of a molecular property: the property as a sum of contributions of atom
types or bond types, fitted by least squares. A chemist's check that needs no network.

Two typing schemes, read from the Molecular Graph features (so QM9 caches and user files are
typed the same way):

- `atoms`: element + hybridization, aromatic atoms apart (H, C_sp3, C_sp2, C_ar, C_sp,
  N_sp3, N_sp2, N_ar, N_sp, O_sp3, O_sp2, O_ar, F_sp3: RDKit gives F sp3), in the spirit of Miller's atomic hybrid
  polarizabilities (K. J. Miller, J. Am. Chem. Soc. 112, 8533 (1990)), where a molecule's
  polarizability is a sum over its atoms of a value per atom hybrid type;
- `bonds`: the two elements and the bond order (C-H, C-C, C=C, C#C, C:C, C=O, O-H, ...), the
  classical bond-additive picture of vibrational zero-point energy (each bond carries its
  stretch and a share of the bends).

    y = c0 + sum_t a_t n_t(molecule)

Against a reference molecule (or the mean counts) the model's own attribution is exact:
y(x) - y(ref) = sum_t a_t (n_t(x) - n_t(ref)), one term per type, the intercept cancels.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .features import ATOM_TYPES, FEATURE_GROUPS

SCHEMES = ("atoms", "bonds")
OTHER = "other"
_BOND_SYMBOL = {1: "-", 2: "=", 3: "#", 4: ":"}  # bond order codes of the featurizer (1..4)
_ELEMENT_RANK = {e: k for k, e in enumerate(ATOM_TYPES)}  # H, C, N, O, F: bond labels put H last


def elements_of(atom_features: np.ndarray) -> np.ndarray:
    """(n, 21) atom features -> (n,) element symbols (the atom_type one-hot)."""
    g = FEATURE_GROUPS["atom_type"]
    one_hot = np.asarray(atom_features)[:, g.slice]
    if len(one_hot) and not np.allclose(one_hot.sum(1), 1.0):
        raise ValueError("atom features without exactly one atom type set (padding rows?)")
    return np.asarray(ATOM_TYPES, dtype="<U2")[one_hot.argmax(1)] if len(one_hot) else np.zeros(0, "<U2")


def atom_types(atom_features: np.ndarray) -> np.ndarray:
    """(n, 21) atom features -> (n,) labels of the `atoms` scheme: element, '_' hybridization
    (sp, sp2, sp3), or '_ar' for aromatic atoms; an atom without a hybridization bit (H) is the element."""
    x = np.asarray(atom_features)
    el = elements_of(x)
    hyb = x[:, FEATURE_GROUPS["hybridization"].slice]
    names = np.array(["_" + n.split("_")[1] for n in FEATURE_GROUPS["hybridization"].names], dtype=object)
    aromatic = x[:, FEATURE_GROUPS["aromaticity"].slice][:, 0] > 0.5
    suffix = np.where(hyb.max(1) > 0.5, names[hyb.argmax(1)] if len(x) else names[:0], "")
    suffix = np.where(aromatic, "_ar", suffix)
    return el.astype(object) + suffix.astype(object)


def bond_orders(pair_features: np.ndarray) -> np.ndarray:
    """(n, n, 13) pair features -> (n, n) bond order code: 0 none, 1 single, 2 double, 3 triple,
    4 aromatic (the featurizer's codes)."""
    b = np.asarray(pair_features)[..., FEATURE_GROUPS["bond_type"].slice]
    return np.where(b.max(-1) > 0.5, b.argmax(-1) + 1, 0).astype(np.int8)


def bonds(elements: Sequence[str], orders: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bonds of a molecule: (i, j, labels) for i < j with orders[i, j] > 0; labels like
    'C-H', 'C=O', 'C:C', 'C#N' (heavier-listed element first in H, C, N, O, F order, H last)."""
    o = np.asarray(orders)
    i, j = np.nonzero(np.triu(o, 1))
    labels = []
    for a, b in zip(i, j):
        ea, eb = str(elements[a]), str(elements[b])
        first, second = sorted((ea, eb), key=lambda e: (_ELEMENT_RANK.get(e, 99) == 0, _ELEMENT_RANK.get(e, 99)))
        labels.append(f"{first}{_BOND_SYMBOL[int(o[a, b])]}{second}")
    return i, j, np.asarray(labels, dtype=object)


def units(scheme: str, atom_features: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """The typed units of one molecule under `scheme`: (n,) atom labels or (n_bonds,) bond labels."""
    if scheme == "atoms":
        return atom_types(atom_features)
    if scheme == "bonds":
        return bonds(elements_of(atom_features), orders)[2]
    raise ValueError(f"unknown additive scheme {scheme!r}; valid: {', '.join(SCHEMES)}")


def vocabulary(labels_per_molecule: Iterable[Sequence[str]], min_molecules: int = 20) -> tuple[str, ...]:
    """The types that occur in at least `min_molecules` molecules, most frequent first; rarer ones
    are pooled into 'other' (kept as a column so every unit is counted)."""
    seen = Counter()
    units_seen = Counter()
    for labels in labels_per_molecule:
        seen.update(set(labels))
        units_seen.update(labels)
    keep = [t for t, c in seen.items() if c >= min_molecules]
    keep.sort(key=lambda t: (-units_seen[t], t))
    if len(keep) < len(seen):
        keep.append(OTHER)
    return tuple(keep)


def count_matrix(labels_per_molecule: Iterable[Sequence[str]], types: Sequence[str]) -> np.ndarray:
    """(M, T) counts of each type per molecule; a label outside `types` counts as 'other' (an
    error if `types` has no 'other')."""
    col = {t: k for k, t in enumerate(types)}
    rows = []
    for labels in labels_per_molecule:
        r = np.zeros(len(types))
        for t, c in Counter(labels).items():
            k = col.get(t, col.get(OTHER))
            if k is None:
                raise ValueError(f"type {t!r} is not in the vocabulary ({', '.join(types)}) and it has no '{OTHER}'")
            r[k] += c
        rows.append(r)
    return np.asarray(rows).reshape(-1, len(types))


@dataclass(frozen=True)
class AdditiveModel:
    """y = intercept + counts @ coefficients, fitted by least squares.

    types: the column labels; coefficients (T,) and their standard errors (T,) in target units per
    unit; fit statistics on the molecules it was fitted to (n_fit, mae, rmse, r2)."""

    scheme: str
    types: tuple[str, ...]
    intercept: float
    coefficients: np.ndarray
    standard_errors: np.ndarray
    n_fit: int
    mae: float
    rmse: float
    r2: float
    mean_counts: np.ndarray = field(default=None)  # (T,) over the fit molecules

    def predict(self, counts: np.ndarray) -> np.ndarray:
        c = np.asarray(counts, dtype=np.float64)
        return self.intercept + _times(c, self.coefficients).sum(-1)

    def attribution(self, counts: np.ndarray, reference_counts: np.ndarray | None = None) -> np.ndarray:
        """(M, T): a_t (n_t - n_t(ref)), the exact per-type split of y(x) - y(ref); reference
        None = the empty molecule (all counts 0)."""
        c = np.asarray(counts, dtype=np.float64)
        if reference_counts is not None:
            c = c - np.asarray(reference_counts, dtype=np.float64)
        return _times(c, self.coefficients)

    def to_json(self) -> dict:
        return {"scheme": self.scheme, "intercept": self.intercept, "n_fit": self.n_fit, "mae": self.mae,
                "rmse": self.rmse, "r2": self.r2,
                "types": [{"type": t, "coefficient": float(a), "standard_error": float(s),
                           "mean_count": None if self.mean_counts is None else float(m)}
                          for t, a, s, m in zip(self.types, self.coefficients, self.standard_errors,
                                                self.mean_counts if self.mean_counts is not None
                                                else [None] * len(self.types))]}


def _times(counts: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """counts * coefficients, 0 where a count is 0 (a type never seen in the fit has a NaN
    coefficient, which only a molecule that has the type inherits)."""
    return np.where(counts == 0, 0.0, counts * coefficients)


def fit(counts: np.ndarray, y: np.ndarray, types: Sequence[str], scheme: str = "") -> AdditiveModel:
    """Least squares y ~ c0 + counts @ a. A type absent from every molecule (a zero column) gets
    coefficient NaN rather than an arbitrary value."""
    c = np.asarray(counts, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != len(y) or c.shape[1] != len(types):
        raise ValueError(f"counts {c.shape} do not match {len(y)} values and {len(types)} types")
    if len(y) <= c.shape[1] + 1:
        raise ValueError(f"{len(y)} molecules are too few to fit {c.shape[1]} contributions and an intercept")
    present = c.any(0)
    x = np.column_stack([np.ones(len(y)), c[:, present]])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    dof = max(len(y) - x.shape[1], 1)
    sigma2 = float(resid @ resid) / dof
    cov = sigma2 * np.linalg.pinv(x.T @ x)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    coef = np.full(c.shape[1], np.nan)
    coef_se = np.full(c.shape[1], np.nan)
    coef[present], coef_se[present] = beta[1:], se[1:]
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return AdditiveModel(scheme, tuple(types), float(beta[0]), coef, coef_se, len(y), float(np.abs(resid).mean()),
                         float(np.sqrt((resid ** 2).mean())), 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan"),
                         c.mean(0))


def _bond_table() -> np.ndarray:
    """(5, 5, 5) object: the bond label of elements (rank a, rank b) and order code 0..4."""
    t = np.empty((len(ATOM_TYPES), len(ATOM_TYPES), 5), dtype=object)
    for ra, ea in enumerate(ATOM_TYPES):
        for rb, eb in enumerate(ATOM_TYPES):
            first, second = sorted((ea, eb), key=lambda e: (_ELEMENT_RANK[e] == 0, _ELEMENT_RANK[e]))
            for code in range(5):
                t[ra, rb, code] = f"{first}{_BOND_SYMBOL.get(code, '?')}{second}"
    return t


_BONDS = _bond_table()


def dataset_units(ds, scheme: str) -> list[np.ndarray]:
    """The typed units of every molecule of a `molgraph.qm9.QM9Dataset`, in dataset order, read
    straight from its memory-mapped arrays (the same labels as `units` on each molecule's
    features, tested; about 50x faster than featurizing molecule by molecule)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown additive scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    a, rows = ds._a, np.asarray(ds._rows)
    off = np.asarray(a["atom_offsets"])
    starts, ends = off[rows], off[rows + 1]
    n = ends - starts
    index = np.repeat(starts - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(n.sum())
    feats = np.asarray(a["atom_features"][index]) if len(index) else np.zeros((0, 21), np.float32)
    local = np.concatenate([[0], np.cumsum(n)])
    if scheme == "atoms":
        labels = atom_types(feats)
        return [labels[local[k]:local[k + 1]] for k in range(len(rows))]
    rank = FEATURE_GROUPS["atom_type"]
    ranks = feats[:, rank.slice].argmax(1)
    poff = np.asarray(a["pair_offsets"])
    codes_all = a["bond"]
    out = []
    for k, r in enumerate(rows):
        m = int(n[k])
        codes = np.asarray(codes_all[poff[r]:poff[r + 1]]).astype(np.int64)
        iu, ju = np.triu_indices(m, 1)
        nz = codes > 0
        rk = ranks[local[k]:local[k + 1]]
        out.append(_BONDS[rk[iu[nz]], rk[ju[nz]], codes[nz]])
    return out
