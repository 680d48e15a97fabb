"""Seeded splits of QM9 ids, saved to and read from JSON so every result names its split.

The proposal's protocol: shuffle the QM9 ids with a seeded generator and cut them into k
uniform bins (sizes differ by at most one); fold f tests on bin f and trains on the other
k-1, with a seeded validation slice taken from those.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from .storage import atomic_write_json


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.asarray(a, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class KFold:
    """k uniform bins of a seeded shuffle of `ids`. `bins[f]` is fold f's test set."""

    bins: tuple[np.ndarray, ...]
    seed: int
    meta: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.bins)

    @property
    def digest(self) -> str:
        return _digest(self.bins)

    def fold(self, f: int, val_fraction: float = 0.1, seed: int | None = None) -> "TrainValTest":
        """Fold f: test = bin f; train/validation = the other bins, validation a seeded
        `val_fraction` of them."""
        if not 0 <= f < self.k:
            raise IndexError(f"fold {f} out of range 0..{self.k - 1}")
        rest = np.concatenate([b for i, b in enumerate(self.bins) if i != f])
        rng = np.random.default_rng(self.seed * 1000 + f if seed is None else seed)
        rest = rng.permutation(rest)
        n_val = int(round(val_fraction * len(rest)))
        return TrainValTest(np.sort(rest[n_val:]), np.sort(rest[:n_val]), np.sort(self.bins[f]),
                            meta={**self.meta, "kfold_digest": self.digest, "fold": f, "k": self.k})

    def save(self, path) -> None:
        atomic_write_json(path, {"kind": "kfold", "seed": self.seed, "k": self.k, "digest": self.digest,
                                 "meta": self.meta, "bins": [b.tolist() for b in self.bins]})


@dataclass(frozen=True)
class TrainValTest:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return _digest((self.train, self.val, self.test))

    def save(self, path) -> None:
        atomic_write_json(path, {"kind": "train_val_test", "digest": self.digest, "meta": self.meta,
                                 "train": self.train.tolist(), "val": self.val.tolist(), "test": self.test.tolist()})


def kfold(ids: Iterable[int], k: int = 10, seed: int = 0, **meta) -> KFold:
    """Seeded shuffle of the (sorted, unique) ids into k uniform bins."""
    ids = np.unique(np.asarray(list(ids), dtype=np.int64))
    if k < 2 or k > len(ids):
        raise ValueError(f"k must be between 2 and the number of ids ({len(ids)}), got {k}")
    perm = np.random.default_rng(seed).permutation(ids)
    return KFold(tuple(np.array_split(perm, k)), seed, dict(meta))


def train_val_test(ids: Iterable[int], val: float = 0.1, test: float = 0.1, seed: int = 0, **meta) -> TrainValTest:
    """Seeded random split by fractions."""
    ids = np.unique(np.asarray(list(ids), dtype=np.int64))
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"fractions must satisfy 0 <= val, test and val + test < 1, got val={val}, test={test}")
    perm = np.random.default_rng(seed).permutation(ids)
    n_test, n_val = int(round(test * len(ids))), int(round(val * len(ids)))
    return TrainValTest(np.sort(perm[n_test + n_val:]), np.sort(perm[n_test:n_test + n_val]), np.sort(perm[:n_test]),
                        meta={"seed": seed, **meta})


def load_split(path) -> KFold | TrainValTest:
    """Read a split file written by `KFold.save` or `TrainValTest.save`; the stored digest is
    checked so an edited file is caught."""
    data = json.loads(Path(path).read_text())
    if data.get("kind") == "kfold":
        split = KFold(tuple(np.array(b, dtype=np.int64) for b in data["bins"]), int(data["seed"]), data.get("meta", {}))
    elif data.get("kind") == "train_val_test":
        split = TrainValTest(*(np.array(data[k], dtype=np.int64) for k in ("train", "val", "test")), meta=data.get("meta", {}))
    else:
        raise ValueError(f"{path}: not a split file (kind={data.get('kind')!r})")
    if split.digest != data.get("digest"):
        raise ValueError(f"{path}: ids do not match the stored digest {data.get('digest')}; the file was edited or truncated")
    return split


def read_ids(path: str | Path) -> list[int]:
    """QM9 ids from a text file: integers or 'qm9:123' (the form groups.csv and relevance files
    write), separated by white space or commas; '#' starts a comment. The one id reader of every
    command."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no such ids file")
    toks = " ".join(line.split("#", 1)[0] for line in p.read_text().splitlines()).replace(",", " ").split()
    bad = [t for t in toks if not t.removeprefix("qm9:").isdigit()]
    if bad:
        raise ValueError(f"{path}: QM9 ids must be integers (optionally 'qm9:123'); got {bad[:3]}")
    return [int(t.removeprefix("qm9:")) for t in toks]
