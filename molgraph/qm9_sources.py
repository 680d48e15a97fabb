"""Raw QM9 records from either source, as `Molecule`s with their properties.

Sources:
- the `qm9pack` wheel (default, offline): CSV files read directly, `qm9pack` is never imported
  (its `__init__` needs `pkg_resources`, gone from current setuptools);
- the original distribution: a directory of `dsgdb9nsd_*.xyz` files or the
  `dsgdb9nsd.xyz.tar.bz2` archive, extended XYZ, with the 3,054 uncharacterized molecules
  (1-based ids, `data/qm9_uncharacterized_ids.txt`) excluded.

Both give identical `Molecule`s for the same QM9 id (elements, coordinates, SMILES, InChI,
Mulliken charges, frequencies and the 15 scalar properties). Property names carry units;
energies are kept in hartree here (`*_ha`) exactly as QM9 stores them and converted in
`molgraph.targets`.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import os
import re
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .io import SCALAR_PROPERTIES, parse_float, parse_qm9_block  # noqa: F401  (the QM9 XYZ format lives in io)
from .molecule import Molecule, MoleculeError, normalize_symbol

N_QM9 = 133_885  # molecules in the original distribution
N_CHARACTERIZED = 130_831

# The 15 numbers of the QM9 properties line after `gdb <id>`, in file order.
# qm9pack CSV column for each.
_CSV_COLUMNS = (
    "RotA_GHz", "RotB_GHz", "RotC_GHz", "Dipole_debye", "Polarizability_bohr3", "HOMO_au",
    "LUMO_au", "HOMO_LUMO_gap_au", "R2_bohr2", "ZPVE_au", "InternalEnergy_0K_au",
    "InternalEnergy_298K_au", "Enthalphy_298K_au", "GibbsFreeEnergy_298K_au",
    "Heatcapacity_Cv_cal_mol_K",
)
_CSV_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
_CSV_POLAR = "qm9_polarizability.csv"
_POLAR_COLUMNS = ("A_xx", "A_xy", "A_yy", "A_xz", "A_yz", "A_zz")


def uncharacterized_ids() -> frozenset[int]:
    """1-based ids of the 3,054 molecules that failed QM9's consistency check."""
    text = importlib.resources.files("molgraph").joinpath("data/qm9_uncharacterized_ids.txt").read_text()
    return frozenset(int(t) for t in text.split() if t.isdigit())


def characterized_ids():
    """(130,831,) int64 array of the QM9 ids that passed the consistency check, ascending: the
    molecules QM9 keeps (and the pool a sample is drawn from)."""
    import numpy as np

    skip = uncharacterized_ids()
    return np.array([i for i in range(1, N_QM9 + 1) if i not in skip], dtype=np.int64)


# --------------------------------------------------------------------------- qm9pack (CSV)
def qm9pack_dir() -> Path:
    """Folder holding qm9pack's CSV files, found without importing the package."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded QM9 data needs the qm9pack wheel: pip install qm9pack "
            "(or pass --source xyz --root DIR with the original dsgdb9nsd files)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [p for p in (*_CSV_PARTS, _CSV_POLAR) if not (folder / p).exists()]
    if missing:
        raise FileNotFoundError(f"qm9pack at {folder} lacks {missing}; reinstall it: pip install --force-reinstall qm9pack")
    return folder


def qm9pack_files() -> list[Path]:
    folder = qm9pack_dir()
    return [folder / p for p in (*_CSV_PARTS, _CSV_POLAR)]


def files_checksum(paths: Iterable[Path]) -> str:
    """sha256 over the named files' bytes (name and content), hex."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


_NUM = re.compile(r"[^\[\],\s]+")


def _numbers(text: str) -> list[float]:
    """'[[1.,0.5],[2,3e-5]]' -> [1.0, 0.5, 2.0, 3e-05]; QM9 cells are text, not JSON."""
    return [parse_float(t) for t in _NUM.findall(text)]


def iter_qm9pack_rows() -> Iterator[dict]:
    """Raw CSV rows (dict of str) of all 130,831 molecules, in QM9 id order, with the
    polarizability tensor columns merged in."""
    folder = qm9pack_dir()
    csv.field_size_limit(1 << 30)
    with open(folder / _CSV_POLAR, newline="") as f:
        polar = {row["XYZ_file"]: row for row in csv.DictReader(f)}
    for part in _CSV_PARTS:
        with open(folder / part, newline="") as f:
            for row in csv.DictReader(f):
                p = polar.get(row["XYZ_file"])
                if p is not None:
                    row.update({k: p[k] for k in _POLAR_COLUMNS})
                yield row


def molecule_from_qm9pack_row(row: dict) -> Molecule:
    """One qm9pack CSV row -> Molecule with QM9 properties."""
    qid = int(row["Index"])
    source = f"qm9pack:{row['XYZ_file']}"
    elements = tuple(normalize_symbol(s.strip(" '\""), source=source) for s in row["Elements"].strip("[]").split(","))
    coords = np.array(_numbers(row["XYZ_Ang"]), dtype=np.float64)
    n = int(row["N_atoms"])
    if len(elements) != n or coords.size != 3 * n:
        raise MoleculeError(source, None, f"N_atoms={n} but {len(elements)} elements and {coords.size // 3} coordinates")
    props = {"qm9_id": qid, "inchi": row["InChi"]}
    try:
        for name, col in zip(SCALAR_PROPERTIES, _CSV_COLUMNS):
            props[name] = parse_float(row[col])
        props["mulliken_e"] = tuple(_numbers(row["Mulliken_pop"]))
        props["freqs_raw_cm1"] = tuple(_numbers(row["Harmonic_Freq_cmi"]))
        if "A_xx" in row:
            xx, xy, yy, xz, yz, zz = (parse_float(row[c]) for c in _POLAR_COLUMNS)
            props["alpha_tensor_bohr3"] = ((xx, xy, xz), (xy, yy, yz), (xz, yz, zz))
    except ValueError as exc:
        raise MoleculeError(source, None, f"unparsable number: {exc}") from None
    return Molecule(
        elements=elements, positions=coords.reshape(n, 3), name=f"qm9:{qid}", source=source,
        smiles=row["SMILES"], properties=props,
    )


# --------------------------------------------------------------------------- original format
def format_qm9_xyz(mol: Molecule) -> str:
    """A Molecule carrying QM9 properties -> text in the original extended-XYZ layout."""
    p = mol.properties
    head = "\t".join(["gdb", str(p["qm9_id"]), *(repr(float(p[k])) for k in SCALAR_PROPERTIES)])
    atoms = [
        "\t".join([e, *(repr(float(c)) for c in xyz), repr(float(q))])
        for e, xyz, q in zip(mol.elements, mol.positions, p["mulliken_e"])
    ]
    freqs = "\t".join(repr(float(f)) for f in p["freqs_raw_cm1"])
    smiles = f"{mol.smiles}\t{p.get('smiles_relaxed', mol.smiles)}"
    inchi = f"{p['inchi']}\t{p.get('inchi_relaxed', p['inchi'])}"
    return "\n".join([str(mol.n_atoms), head, *atoms, freqs, smiles, inchi]) + "\n"


_ID_FROM_NAME = re.compile(r"dsgdb9nsd_(\d+)\.xyz$")


def _original_members(root: Path) -> Iterator[tuple[int, str, bytes | Path]]:
    """(id, name, payload) for every dsgdb9nsd_*.xyz in a directory or tar archive, id order
    for directories, archive order for tarballs."""
    if root.is_dir():
        found = []
        for entry in os.scandir(root):
            m = _ID_FROM_NAME.search(entry.name)
            if m:
                found.append((int(m.group(1)), entry.name, Path(entry.path)))
        if not found:
            archives = sorted(root.glob("*.tar*"))
            if archives:
                yield from _original_members(archives[0])
                return
            raise FileNotFoundError(f"{root}: no dsgdb9nsd_*.xyz files and no .tar archive")
        yield from sorted(found)
        return
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or directory")
    with tarfile.open(root, "r:*") as tar:
        for member in tar:
            m = _ID_FROM_NAME.search(member.name)
            if m and member.isfile():
                data = tar.extractfile(member).read()
                yield int(m.group(1)), member.name, data


def original_checksum(root: Path) -> str:
    """Checksum of an original-format source: the archive's bytes, or for a directory the
    sorted names with their sizes and mtimes (hashing 133k small files would dominate)."""
    root = Path(root)
    if root.is_file():
        return files_checksum([root])
    h = hashlib.sha256()
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.endswith((".xyz", ".bz2", ".tar", ".gz")):
            st = entry.stat()
            h.update(f"{entry.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()


def iter_original(root: str | os.PathLike, *, exclude_uncharacterized: bool = True) -> Iterator[Molecule | MoleculeError]:
    """Molecules of the original QM9 distribution (directory or tarball), uncharacterized ids
    excluded; a bad file yields a MoleculeError naming it."""
    skip = uncharacterized_ids() if exclude_uncharacterized else frozenset()
    for qid, name, payload in _original_members(Path(root)):
        if qid in skip:
            continue
        source = name if isinstance(payload, bytes) else str(payload)
        try:
            text = payload.decode() if isinstance(payload, bytes) else payload.read_text()
            yield parse_qm9_block(text.splitlines(), source)
        except MoleculeError as exc:
            yield exc
        except UnicodeDecodeError:
            yield MoleculeError(source, None, "not a text file")


def qm9pack_version() -> str:
    try:
        return importlib.metadata.version("qm9pack")
    except importlib.metadata.PackageNotFoundError:
        return "absent"
