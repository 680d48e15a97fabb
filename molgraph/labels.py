"""Targets computed outside QM9 (the QM label farm), joined to QM9 molecules by id.

    ds = molgraph.qm9.load(labels="labels/beta-b3lyp/table.csv")
    ds.target("beta_par_au")        # (M,) with NaN where a molecule has no label
    ds.label_mask("beta_par_au")    # (M,) bool: which molecules have one

A label table is what `qmlrp label collect` writes (CSV, or Parquet): one row per molecule
with a `qm9_id` column. Only numbers are read here, so training needs neither PySCF nor Dask.
A molecule without a row, or whose value is undefined (beta_par of a molecule without a
dipole), gets NaN, and the gcnn trainer masks NaN targets out of the loss and the metrics.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .targets import LABEL_TARGETS, TARGETS

# target name -> column of a collected label table ('label:<column>' in the target's source)
LABEL_COLUMNS: Mapping[str, str] = {t: TARGETS[t].source.split(":", 1)[1] for t in LABEL_TARGETS}


@dataclass(frozen=True)
class LabelTable:
    """ids: (K,) QM9 ids; values: target name -> (K,) float64 (NaN = undefined); source: file."""

    ids: np.ndarray
    values: Mapping[str, np.ndarray]
    source: str

    def aligned(self, qm9_ids: np.ndarray) -> dict[str, np.ndarray]:
        """target name -> (len(qm9_ids),) values in that order, NaN for ids without a row."""
        row = {int(q): k for k, q in enumerate(self.ids)}
        idx = np.array([row.get(int(q), -1) for q in qm9_ids], dtype=np.int64)
        out = {}
        for name, v in self.values.items():
            a = np.full(len(idx), np.nan)
            a[idx >= 0] = v[idx[idx >= 0]]
            out[name] = a
        return out


def read_label_table(path: str | os.PathLike) -> LabelTable:
    """A collected table (CSV or Parquet), or a label folder holding `table.csv`, as a LabelTable.

    Raises FileNotFoundError / ValueError naming the file, the row and the problem."""
    path = Path(path)
    if path.is_dir():
        for name in ("table.csv", "table.parquet"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"{path}: no table.csv; make it with `qmlrp label collect {path}`")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such label table; make one with `qmlrp label collect`")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        header = list(rows[0]) if rows else []
    else:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows, header = list(reader), reader.fieldnames or []
    needed = ["qm9_id", *LABEL_COLUMNS.values()]
    missing = [c for c in needed if c not in header]
    if missing:
        raise ValueError(f"{path}: not a label table: columns {missing} missing (has {header[:6]}...)")
    ids = np.zeros(len(rows), dtype=np.int64)
    values = {name: np.full(len(rows), np.nan) for name in LABEL_COLUMNS}
    seen: dict[int, int] = {}
    for k, r in enumerate(rows):
        line = k + 2
        try:
            q = int(float(r["qm9_id"]))
        except (TypeError, ValueError):
            raise ValueError(f"{path}, line {line}: qm9_id {r['qm9_id']!r} is not a QM9 id") from None
        if q in seen:
            raise ValueError(f"{path}, line {line}: qm9:{q} appears twice (also line {seen[q]}); "
                             "a table holds one level of theory, one row per molecule")
        seen[q] = line
        ids[k] = q
        for name, col in LABEL_COLUMNS.items():
            v = r[col]
            if v in ("", None):
                continue
            try:
                values[name][k] = float(v)
            except ValueError:
                raise ValueError(f"{path}, line {line}, qm9:{q}: {col} {v!r} is not a number") from None
            if not math.isfinite(values[name][k]):
                values[name][k] = np.nan
    return LabelTable(ids, values, str(path))
