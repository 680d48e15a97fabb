"""Gather a label farm's result files into one table, and compare two levels of theory.

    from molgraph.qm.collect import collect, write_table, compare
    c = collect("labels/beta-b3lyp")            # Collected: rows, failures, summary
    write_table(c.rows, "labels/beta-b3lyp/table.csv")   # and table.parquet when pyarrow is installed
    cmp = compare("a/table.csv", "b/table.csv")  # correlation and MAE of beta_par, beta_vec_norm on the overlap

Everything is in atomic units (energy hartree, dipole e a0, alpha e^2 a0^2 / Eh = bohr^3, beta
e^3 a0^3 / Eh^2) in the input frame of the QM9 geometry, except the columns named in Debye. beta
is in the Taylor convention (the DALTON one). Columns (one row per finished molecule):

    qm9_id, id, name, smiles, formula, n_atoms, n_heavy, n_basis, xc, basis, method, code_version, key,
    energy_ha, mu_x, mu_y, mu_z, mu_au, mu_debye,
    alpha_xx, alpha_xy, alpha_xz, alpha_yy, alpha_yz, alpha_zz, alpha_iso,
    beta_xxx ... beta_zzz (all 27, beta_ijk), beta_vec_x, beta_vec_y, beta_vec_z, beta_vec_norm,
    beta_par (empty when the molecule has no dipole: undefined there),
    qm9_mu_debye, qm9_alpha_bohr3, qm9_alpha_xx ... qm9_alpha_zz (QM9's own values, same molecule),
    wall_s, host, finished
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..storage import atomic_write_text

AU_DEBYE = 2.541746473  # 1 e a0 in Debye (CODATA 2018)
AXES = "xyz"
ALPHA_COMPONENTS = ("xx", "xy", "xz", "yy", "yz", "zz")
BETA_COMPONENTS = tuple("".join(c) for c in itertools.product(AXES, repeat=3))
COLUMNS = (
    "qm9_id", "id", "name", "smiles", "formula", "n_atoms", "n_heavy", "n_basis", "xc", "basis", "method", "code_version",
    "key", "energy_ha", "mu_x", "mu_y", "mu_z", "mu_au", "mu_debye",
    *(f"alpha_{c}" for c in ALPHA_COMPONENTS), "alpha_iso",
    *(f"beta_{c}" for c in BETA_COMPONENTS), "beta_vec_x", "beta_vec_y", "beta_vec_z", "beta_vec_norm", "beta_par",
    "qm9_mu_debye", "qm9_alpha_bohr3", *(f"qm9_alpha_{c}" for c in ALPHA_COMPONENTS),
    "wall_s", "host", "finished",
)


def _get(d: dict, *names):
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    return None


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def result_row(rec: dict) -> dict:
    """One result file's record -> one table row (see the module docstring for the columns)."""
    r = rec["result"]
    spec = rec.get("spec", {})
    mu = np.asarray(_get(r, "dipole", "dipole_au", "mu"), dtype=float).reshape(3)
    alpha = np.asarray(_get(r, "polarizability", "alpha", "alpha_au"), dtype=float).reshape(3, 3)
    beta = np.asarray(_get(r, "beta", "beta_au"), dtype=float).reshape(3, 3, 3)
    bvec = _get(r, "beta_vector", "beta_vec")
    bvec = np.asarray(bvec, dtype=float).reshape(3) if bvec is not None else np.array(
        [(np.einsum("ijj->i", beta)[i] + np.einsum("jij->i", beta)[i] + np.einsum("jji->i", beta)[i]) / 3 for i in range(3)])
    iso = _get(r, "alpha_iso", "isotropic_alpha", "alpha_isotropic", "polarizability_iso")
    bnorm = _get(r, "beta_vector_norm", "beta_vec_norm")
    row = {
        "qm9_id": rec.get("qm9_id"), "id": rec["id"], "name": rec.get("name"), "smiles": rec.get("smiles"),
        "formula": rec.get("formula"), "n_atoms": rec.get("n_atoms"), "n_heavy": rec.get("n_heavy"),
        "n_basis": r.get("n_basis"), "xc": spec.get("xc"), "basis": spec.get("basis"), "method": spec.get("method"),
        "code_version": rec.get("code_version"), "key": rec.get("key"),
        "energy_ha": _nan(_get(r, "energy", "energy_ha", "e_tot")),
        "mu_x": mu[0], "mu_y": mu[1], "mu_z": mu[2], "mu_au": float(np.linalg.norm(mu)),
        "mu_debye": float(np.linalg.norm(mu)) * AU_DEBYE,
        **{f"alpha_{c}": alpha[AXES.index(c[0]), AXES.index(c[1])] for c in ALPHA_COMPONENTS},
        "alpha_iso": float(iso) if iso is not None else float(np.trace(alpha) / 3),
        **{f"beta_{c}": beta[AXES.index(c[0]), AXES.index(c[1]), AXES.index(c[2])] for c in BETA_COMPONENTS},
        "beta_vec_x": bvec[0], "beta_vec_y": bvec[1], "beta_vec_z": bvec[2],
        "beta_vec_norm": float(bnorm) if bnorm is not None else float(np.linalg.norm(bvec)),
        "beta_par": _nan(_get(r, "beta_parallel", "beta_par")),
    }
    ref = rec.get("reference_qm9") or {}
    row["qm9_mu_debye"] = _nan(ref.get("mu_debye"))
    row["qm9_alpha_bohr3"] = _nan(ref.get("alpha_bohr3"))
    qa = np.asarray(ref["alpha_tensor_bohr3"], dtype=float) if ref.get("alpha_tensor_bohr3") is not None else np.full((3, 3), np.nan)
    for c in ALPHA_COMPONENTS:
        row[f"qm9_alpha_{c}"] = qa[AXES.index(c[0]), AXES.index(c[1])]
    row.update(wall_s=rec.get("wall_s"), host=rec.get("host"), finished=rec.get("finished"))
    return {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in row.items()}


@dataclass
class Collected:
    """rows: one dict per finished molecule (COLUMNS); failures: {'id', 'name', 'error'} for each
    molecule whose latest attempt failed; unreadable: files that could not be read, with why."""

    folder: Path
    key: str
    key_info: dict
    rows: list[dict]
    failures: list[dict]
    unreadable: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        """Counts, failures, and agreement with QM9's own dipole norm and isotropic alpha."""
        def mae(a, b):
            x = np.array([r[a] for r in self.rows], float) - np.array([r[b] for r in self.rows], float)
            ok = np.isfinite(x)
            return {"n": int(ok.sum()), "mae": float(np.abs(x[ok]).mean()) if ok.any() else None,
                    "max_abs": float(np.abs(x[ok]).max()) if ok.any() else None,
                    "mean_signed": float(x[ok].mean()) if ok.any() else None}

        n_par = sum(math.isfinite(r["beta_par"]) for r in self.rows)
        return {"folder": str(self.folder), "key": self.key, "spec": self.key_info.get("spec"),
                "code_version": self.key_info.get("code_version"), "n_done": len(self.rows),
                "n_failed": len(self.failures), "n_unreadable": len(self.unreadable),
                "n_beta_par_undefined": len(self.rows) - n_par,
                "vs_qm9": {"mu_debye": mae("mu_debye", "qm9_mu_debye"), "alpha_iso_bohr3": mae("alpha_iso", "qm9_alpha_bohr3")},
                "wall_s_total": float(sum(r["wall_s"] or 0 for r in self.rows)),
                "failures": self.failures, "unreadable": self.unreadable}


def result_keys(folder: str | os.PathLike) -> list[str]:
    return sorted(p.name for p in (Path(folder) / "results").glob("*/") if p.is_dir())


def collect(folder: str | os.PathLike, key: str | None = None) -> Collected:
    """Read every result and error file of one key under a label farm's output folder."""
    folder = Path(folder)
    if not (folder / "results").is_dir():
        raise FileNotFoundError(f"{folder}: no results/ folder; is it the --out of `qmlrp label beta`?")
    keys = result_keys(folder)
    if key is None:
        if len(keys) != 1:
            raise ValueError(f"{folder} holds {len(keys)} result keys; choose one with key= (--key): {', '.join(keys) or 'none'}")
        key = keys[0]
    elif key not in keys:
        raise ValueError(f"{folder}: no results for key {key!r}; present: {', '.join(keys) or 'none'}")
    res_dir, fail_dir = folder / "results" / key, folder / "failed" / key
    info = json.loads((res_dir / "key.json").read_text()) if (res_dir / "key.json").exists() else {}
    rows, unreadable = [], []
    for p in sorted(res_dir.glob("*.json")):
        if p.name.startswith(".") or p.name == "key.json":
            continue
        try:
            rec = json.loads(p.read_text())
            rows.append(result_row(rec))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            unreadable.append({"file": str(p), "error": f"{type(exc).__name__}: {exc}"})
    done = {r["id"] for r in rows}
    failures = []
    for p in sorted(fail_dir.glob("*.json")) if fail_dir.is_dir() else []:
        if p.name.startswith(".") or p.name == "key.json" or p.stem in done:
            continue
        try:
            rec = json.loads(p.read_text())
            failures.append({"id": p.stem, "qm9_id": rec.get("qm9_id"), "name": rec.get("name"), "error": rec.get("error")})
        except (OSError, ValueError) as exc:
            unreadable.append({"file": str(p), "error": f"{type(exc).__name__}: {exc}"})
    rows.sort(key=lambda r: (r["qm9_id"] is None, r["qm9_id"] or 0, r["id"]))
    return Collected(folder, key, info, rows, failures, unreadable)


def write_id_lists(rows: Sequence[dict], folder: str | os.PathLike) -> dict[str, Path]:
    """The QM9 ids of a collected table, one per line, for `--ids`: `ids.txt` (beta_par defined,
    i.e. molecules with a dipole) and `ids_all.txt` (every labelled molecule; beta_vec is defined
    for all). Atomic; rows without a QM9 id are left out."""
    folder = Path(folder)
    lists = {"ids.txt": [r["qm9_id"] for r in rows if r["qm9_id"] is not None and math.isfinite(r["beta_par"])],
             "ids_all.txt": [r["qm9_id"] for r in rows if r["qm9_id"] is not None]}
    out = {}
    for name, ids in lists.items():
        atomic_write_text(folder / name, "".join(f"{int(i)}\n" for i in sorted(ids)))
        out[name] = folder / name
    return out


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    return str(v)


def write_table(rows: Sequence[dict], path: str | os.PathLike) -> list[Path]:
    """Rows -> CSV at `path` (empty cell = undefined), plus a Parquet file beside it when
    pyarrow is installed (a `.parquet` path writes only Parquet and needs pyarrow). Atomic."""
    path = Path(path)
    written = []
    try:
        import pyarrow
    except ImportError:
        pyarrow = None
    if path.suffix != ".parquet":
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in COLUMNS])
        atomic_write_text(path, buf.getvalue())
        written.append(path)
    if pyarrow is not None or path.suffix == ".parquet":
        if pyarrow is None:
            raise ImportError(f"{path}: writing Parquet needs pyarrow (pip install pyarrow), or give a .csv path")
        import pyarrow.parquet as pq

        pq_path = path.with_suffix(".parquet")
        cols = {c: [r.get(c) for r in rows] for c in COLUMNS}
        tmp = pq_path.with_name(f".{pq_path.name}.tmp{os.getpid()}")
        pq.write_table(pyarrow.table(cols), tmp)
        os.replace(tmp, pq_path)
        written.append(pq_path)
    return written


def read_table(path: str | os.PathLike) -> list[dict]:
    """A collected table (CSV or Parquet) -> rows with numbers as float (NaN for empty cells)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such label table (make one with `qmlrp label collect`)")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    text = {"id", "name", "smiles", "formula", "xc", "basis", "method", "code_version", "key", "host", "finished"}
    out = []
    for k, r in enumerate(rows):
        row = {}
        for c, v in r.items():
            if c in text:
                row[c] = v
            else:
                try:
                    row[c] = float("nan") if v in ("", None) else float(v)
                except ValueError:
                    raise ValueError(f"{path}, row {k + 2}: column {c!r} is not a number: {v!r}") from None
        out.append(row)
    return out


COMPARED = ("beta_par", "beta_vec_norm", "alpha_iso", "mu_au")


def compare(a: str | os.PathLike, b: str | os.PathLike, columns: Sequence[str] = COMPARED) -> dict:
    """Two collected tables (e.g. two levels of theory) on the molecules both hold (by id):
    per column n, Pearson r, MAE, RMSE, mean signed difference (b - a), max |b - a|, and MAE
    relative to mean |a|."""
    ra, rb = read_table(a), read_table(b)
    by_a, by_b = {r["id"]: r for r in ra}, {r["id"]: r for r in rb}
    common = sorted(set(by_a) & set(by_b))
    level = lambda rows: sorted({f"{r.get('xc')}/{r.get('basis')} ({r.get('method')})" for r in rows})
    out = {"a": str(a), "b": str(b), "level_a": level(ra), "level_b": level(rb), "n_a": len(ra), "n_b": len(rb),
           "n_overlap": len(common), "columns": {}}
    for c in columns:
        x = np.array([by_a[i].get(c, np.nan) for i in common], float)
        y = np.array([by_b[i].get(c, np.nan) for i in common], float)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        d = y - x
        stats = {"n": int(ok.sum())}
        if ok.sum() >= 1:
            stats.update(mae=float(np.abs(d).mean()), rmse=float(np.sqrt((d ** 2).mean())), mean_signed=float(d.mean()),
                         max_abs=float(np.abs(d).max()),
                         relative_mae=float(np.abs(d).mean() / np.abs(x).mean()) if np.abs(x).mean() > 0 else None)
        stats["pearson_r"] = float(np.corrcoef(x, y)[0, 1]) if ok.sum() >= 3 and x.std() > 0 and y.std() > 0 else None
        out["columns"][c] = stats
    return out
