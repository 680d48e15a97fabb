"""Readers for user molecules: XYZ (one or many per file, QM9's extended XYZ too) and SDF/MOL.

Every problem raises `MoleculeError` naming the source, the 0-based molecule index and the
problem. `iter_xyz` / `iter_sdf` yield `Molecule | MoleculeError` so that a batch can go on with
the rest and report the failures; `read_xyz` / `read_sdf` raise on the first bad molecule.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from .molecule import ATOMIC_NUMBER, Molecule, MoleculeError, normalize_symbol

PathOrText = str | os.PathLike


def parse_float(token: str) -> float:
    """Float parser that accepts Mathematica's `2.1997*^-6` (found in QM9 files)."""
    return float(token.replace("*^", "e"))


def _load_text(path_or_text: PathOrText) -> tuple[str, str]:
    """(text, source label). A str with a newline is text; anything else is a path."""
    if isinstance(path_or_text, str) and ("\n" in path_or_text or path_or_text == ""):
        return path_or_text, "<text>"
    path = Path(path_or_text)
    if not path.exists():
        raise MoleculeError(str(path), None, "file not found")
    if path.is_dir():
        raise MoleculeError(str(path), None, "is a directory, expected an XYZ file")
    data = path.read_bytes()
    if b"\x00" in data:
        raise MoleculeError(str(path), None, "not a text file (it holds NUL bytes)")
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is not part of the count line
    try:
        return data.decode("utf-8"), str(path)
    except UnicodeDecodeError:
        # not UTF-8: a Latin-1 byte in a comment or name line; coordinates are ASCII either way
        return data.decode("latin-1"), str(path)


_KEYVAL = re.compile(r"(\w+)\s*=\s*(\S+)")


def _charge_and_multiplicity(comment: str, source: str, index: int) -> tuple[int, int]:
    """Read optional `charge=` / `multiplicity=` (or `mult=`) from an XYZ comment line."""
    charge, mult = 0, 1
    for key, value in _KEYVAL.findall(comment):
        key = key.lower()
        try:
            if key == "charge":
                charge = int(value)
            elif key in ("multiplicity", "mult", "spin_multiplicity"):
                mult = int(value)
        except ValueError:
            raise MoleculeError(source, index, f"unparsable {key}={value!r} in comment line") from None
    if mult < 1:
        raise MoleculeError(source, index, f"multiplicity must be >= 1, got {mult}")
    return charge, mult


def _looks_like_atom(line: str) -> bool:
    """'El x y z' with a known element symbol or atomic number and three numbers."""
    parts = line.split()
    if len(parts) < 4:
        return False
    try:
        [float(v) for v in parts[1:4]]
    except ValueError:
        return False
    return parts[0].isdigit() or parts[0].capitalize() in ATOMIC_NUMBER


def _split_blocks(text: str, source: str) -> Iterator[tuple[int, list[str]] | MoleculeError]:
    """Cut an XYZ text into per-molecule line blocks. Yields (index, lines) or an error; an
    error in the framing (a bad count line) ends the file, since nothing after it can be
    located reliably."""
    # only \n, \r\n and \r end a line: str.splitlines would also split at a form feed, \x1c-\x1e or
    # \x85 (NEL, a Latin-1 byte) inside a comment line and shift every line after it
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    pos, index = 0, 0
    while True:
        while pos < len(lines) and not lines[pos].strip():
            pos += 1
        if pos >= len(lines):
            if index == 0:
                yield MoleculeError(source, None, "empty input: no molecules found")
            return
        head = lines[pos].split()
        try:
            n = int(head[0])
            if len(head) != 1 or n < 0:
                raise ValueError
        except ValueError:
            yield MoleculeError(source, index, f"line {pos + 1}: expected the atom count, got {lines[pos].strip()!r}")
            return
        if n == 0:
            yield MoleculeError(source, index, f"line {pos + 1}: atom count is 0")
            return
        comment = lines[pos + 1] if pos + 1 < len(lines) else ""
        body = lines[pos + 2: pos + 2 + n]
        is_qm9 = comment.split()[:1] == ["gdb"]
        extra = 3 if is_qm9 else 0  # QM9: frequencies, SMILES and InChI lines follow
        tail = lines[pos + 2 + n: pos + 2 + n + extra]
        n_coord = sum(1 for ln in body if ln.strip())
        if len(body) < n or n_coord < n:
            if _looks_like_atom(comment) and n_coord == n - 1:
                yield MoleculeError(source, index, f"line {pos + 2}: the comment line is missing (an XYZ record is the "
                                                   f"count line, one comment line, then {n} atom lines; line {pos + 2} "
                                                   f"is an atom line)")
            else:
                yield MoleculeError(source, index, f"wrong atom count: header says {n} atoms but {n_coord} coordinate "
                                                   f"lines follow")
            return
        nxt = pos + 2 + n + extra
        # More coordinate-looking lines right after the block: the count is too small.
        if not is_qm9 and nxt < len(lines) and len(lines[nxt].split()) >= 4:
            yield MoleculeError(source, index, f"wrong atom count: header says {n} atoms but more coordinate lines follow (line {nxt + 1})")
            return
        yield index, [lines[pos], comment, *body, *tail]
        pos = nxt
        index += 1


def _parse_block(block: list[str], source: str, index: int) -> Molecule:
    n = int(block[0].split()[0])
    comment = block[1]
    if comment.split()[:1] == ["gdb"]:
        return parse_qm9_block(block, source, index)
    elements, coords = [], []
    for k, line in enumerate(block[2: 2 + n]):
        parts = line.split()
        if len(parts) < 4:
            raise MoleculeError(source, index, f"atom {k + 1}: expected 'element x y z', got {line.strip()!r}")
        elements.append(normalize_symbol(parts[0], source=source, index=index))
        try:
            coords.append([parse_float(t) for t in parts[1:4]])
        except ValueError:
            raise MoleculeError(source, index, f"atom {k + 1}: unparsable coordinates {' '.join(parts[1:4])!r}") from None
    charge, mult = _charge_and_multiplicity(comment, source, index)
    return Molecule(
        elements=tuple(elements), positions=np.array(coords), charge=charge, multiplicity=mult,
        name=comment.strip(), source=source, index=index,
    )


def iter_xyz(path_or_text: PathOrText) -> Iterator[Molecule | MoleculeError]:
    """Yield each molecule of an XYZ file or text, or a MoleculeError in its place."""
    try:
        text, source = _load_text(path_or_text)
    except MoleculeError as exc:
        yield exc
        return
    for item in _split_blocks(text, source):
        if isinstance(item, MoleculeError):
            yield item
            continue
        index, block = item
        try:
            yield _parse_block(block, source, index)
        except MoleculeError as exc:
            yield exc


def read_xyz(path_or_text: PathOrText) -> list[Molecule]:
    """All molecules of an XYZ file (path) or XYZ text (a str containing a newline).

    Accepts plain XYZ (`n`, comment, `element x y z` lines; extra columns ignored; several
    molecules back to back) and QM9's extended XYZ (comment line starting with `gdb`).
    `charge=` and `multiplicity=` in the comment line set those fields. Raises MoleculeError
    on the first problem.
    """
    out = []
    for item in iter_xyz(path_or_text):
        if isinstance(item, MoleculeError):
            raise item
        out.append(item)
    return out


_BOND_ORDER = {1: 1.0, 2: 2.0, 3: 3.0, 12: 1.5}


def iter_sdf(path: PathOrText) -> Iterator[Molecule | MoleculeError]:
    """Yield each record of an SDF or MOL file as a Molecule (with its bond table), or an error."""
    from rdkit import Chem, RDLogger

    path = Path(path)
    source = str(path)
    if not path.exists():
        yield MoleculeError(source, None, "file not found")
        return
    text = path.read_text(errors="replace")
    if not text.strip():
        yield MoleculeError(source, None, "empty input: no molecules found")
        return
    RDLogger.DisableLog("rdApp.*")
    try:
        supplier = Chem.SDMolSupplier(source, removeHs=False, sanitize=False, strictParsing=True)
        for index in range(len(supplier)):
            mol = supplier[index]
            if mol is None:
                yield MoleculeError(source, index, "unparsable MOL record (bad counts line, atom or bond block)")
                continue
            try:
                yield _from_rdkit(mol, source, index)
            except MoleculeError as exc:
                yield exc
    finally:
        RDLogger.EnableLog("rdApp.*")


def _from_rdkit(mol, source: str, index: int) -> Molecule:

    name = mol.GetProp("_Name") if mol.HasProp("_Name") else ""
    if mol.GetNumAtoms() == 0:
        raise MoleculeError(source, index, "molecule has no atoms")
    if mol.GetNumConformers() == 0:
        raise MoleculeError(source, index, "no coordinates")
    try:
        mol.UpdatePropertyCache(strict=True)
    except Exception as exc:  # RDKit's valence errors
        raise MoleculeError(source, index, f"invalid valence: {exc}") from None
    implicit = [a.GetIdx() + 1 for a in mol.GetAtoms() if a.GetTotalNumHs(includeNeighbors=False) > 0]
    if implicit:
        raise MoleculeError(
            source, index,
            f"atoms {implicit[:5]} carry implicit hydrogens; the Molecular Graph needs every atom "
            "with 3D coordinates (add them, e.g. RDKit Chem.AddHs(mol, addCoords=True))",
        )
    conf = mol.GetConformer()
    if not conf.Is3D():
        raise MoleculeError(source, index, "coordinates are 2D; 3D coordinates are required")
    elements = tuple(a.GetSymbol() for a in mol.GetAtoms())
    bonds = []
    for b in mol.GetBonds():
        order = _BOND_ORDER.get(int(b.GetBondType()))
        if order is None:
            raise MoleculeError(source, index, f"unsupported bond type {b.GetBondType()} between atoms {b.GetBeginAtomIdx() + 1} and {b.GetEndAtomIdx() + 1}")
        bonds.append((b.GetBeginAtomIdx(), b.GetEndAtomIdx(), order))
    charges = tuple(a.GetFormalCharge() for a in mol.GetAtoms())
    radicals = sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
    return Molecule(
        elements=elements, positions=np.array(conf.GetPositions()), charge=int(sum(charges)),
        multiplicity=radicals + 1, name=name, source=source, index=index,
        bonds=tuple(bonds), atom_charges=charges,
    )


def read_sdf(path: PathOrText) -> list[Molecule]:
    """All records of an SDF/MOL file; hydrogens must be explicit with 3D coordinates.
    Raises MoleculeError on the first problem."""
    out = []
    for item in iter_sdf(path):
        if isinstance(item, MoleculeError):
            raise item
        out.append(item)
    return out


def iter_molecules(path: PathOrText) -> Iterator[Molecule | MoleculeError]:
    """Dispatch on the file extension: .xyz -> XYZ, .sdf/.mol/.sd -> SDF."""
    suffix = Path(path).suffix.lower()
    if suffix in (".sdf", ".mol", ".sd"):
        yield from iter_sdf(path)
    elif suffix == ".xyz" or not Path(path).exists():
        yield from iter_xyz(path)
    else:
        yield MoleculeError(str(path), None, f"unknown file type {suffix!r}; expected .xyz, .sdf or .mol")


def write_xyz(molecules, path: PathOrText | None = None) -> str:
    """Plain XYZ text for molecules (fixed-decimal coordinates); written atomically if `path`."""
    chunks = []
    for m in molecules:
        comment = m.name.replace("\n", " ")
        if m.charge or m.multiplicity != 1:
            comment = f"{comment} charge={m.charge} multiplicity={m.multiplicity}".strip()
        rows = [f"{e:<2s} {x:15.10f} {y:15.10f} {z:15.10f}" for e, (x, y, z) in zip(m.elements, m.positions)]
        chunks.append("\n".join([str(m.n_atoms), comment, *rows]))
    text = "\n".join(chunks) + "\n"
    if path is not None:
        from .storage import atomic_write_text

        atomic_write_text(path, text)
    return text


# --------------------------------------------------------------------------- QM9's extended XYZ
SCALAR_PROPERTIES = (
    "rot_a_ghz", "rot_b_ghz", "rot_c_ghz", "mu_debye", "alpha_bohr3", "homo_ha", "lumo_ha",
    "gap_ha", "r2_bohr2", "zpve_ha", "u0_ha", "u_ha", "h_ha", "g_ha", "cv_cal_molk",
)


def parse_qm9_block(block: list[str], source: str, index: int | None = None) -> Molecule:
    """Lines of one original QM9 file -> Molecule.

    Layout: atom count; `gdb <id>` and 15 properties; n lines `El x y z q_Mulliken`;
    harmonic frequencies; `GDB-SMILES  relaxed-SMILES`; `GDB-InChI  relaxed-InChI`.
    """
    try:
        n = int(block[0].split()[0])
    except (ValueError, IndexError):
        raise MoleculeError(source, index, "first line must be the atom count") from None
    if len(block) < n + 5:
        raise MoleculeError(source, index, f"truncated QM9 record: expected {n + 5} lines, got {len(block)}")
    head = block[1].split()
    if len(head) != 17 or head[0] != "gdb":
        raise MoleculeError(source, index, f"properties line must be 'gdb <id>' and 15 numbers, got {len(head) - 2} numbers")
    try:
        qid = int(head[1])
        props: dict = {"qm9_id": qid}
        props.update(zip(SCALAR_PROPERTIES, (parse_float(t) for t in head[2:])))
        elements, coords, mull = [], [], []
        for k, line in enumerate(block[2: 2 + n]):
            parts = line.split()
            if len(parts) != 5:
                raise MoleculeError(source, index, f"atom {k + 1}: expected 'El x y z q', got {line.strip()!r}")
            elements.append(normalize_symbol(parts[0], source=source, index=index))
            coords.append([parse_float(t) for t in parts[1:4]])
            mull.append(parse_float(parts[4]))
        props["mulliken_e"] = tuple(mull)
        props["freqs_raw_cm1"] = tuple(parse_float(t) for t in block[2 + n].split())
    except ValueError as exc:
        raise MoleculeError(source, index, f"unparsable number: {exc}") from None
    smiles = block[3 + n].split()
    inchi = block[4 + n].split()
    if not smiles or not inchi:
        raise MoleculeError(source, index, "missing SMILES or InChI line")
    props["inchi"] = inchi[0]
    if len(smiles) > 1:
        props["smiles_relaxed"] = smiles[1]
    if len(inchi) > 1:
        props["inchi_relaxed"] = inchi[1]
    return Molecule(
        elements=tuple(elements), positions=np.array(coords), name=f"qm9:{qid}", source=source,
        index=index, smiles=smiles[0], properties=props,
    )
