"""Plain-data molecules and the one error type of `molgraph`.

A `Molecule` is what the readers return and what the featurizer consumes. It holds no
RDKit object, so it pickles cheaply (for process pools) and can be built by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

# Symbol <-> atomic number for every element a user file may plausibly name. The default
# featurizer only accepts H, C, N, O, F; the readers accept any real element so that the
# refusal comes from the featurizer with a message that says so.
ELEMENTS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge "
    "As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm "
    "Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U "
    "Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()
ATOMIC_NUMBER = {sym: z for z, sym in enumerate(ELEMENTS, start=1)}


class MoleculeError(ValueError):
    """Bad molecular input.

    The message always names where the molecule came from (`source`), which molecule in that
    source (`index`, 0-based, or None when the source holds one molecule or the position is
    unknown) and what is wrong (`problem`).
    """

    def __init__(self, source: str | None, index: int | None, problem: str):
        self.source = source or "<input>"
        self.index = index
        self.problem = problem
        where = self.source if index is None else f"{self.source}, molecule {index}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # keep the three fields across process boundaries
        return (MoleculeError, (self.source, self.index, self.problem))


def normalize_symbol(symbol: str, *, source: str | None = None, index: int | None = None) -> str:
    """'c', 'CL', '6' -> 'C', 'Cl', 'C'; raises MoleculeError for anything that is not an element."""
    s = symbol.strip()
    if s.isdigit():
        z = int(s)
        if 1 <= z <= len(ELEMENTS):
            return ELEMENTS[z - 1]
        raise MoleculeError(source, index, f"unknown element with atomic number {s!r}")
    s = s[:1].upper() + s[1:].lower()
    if s not in ATOMIC_NUMBER:
        raise MoleculeError(source, index, f"unknown element {symbol!r}")
    return s


@dataclass(frozen=True, eq=False)
class Molecule:
    """A molecule as plain data.

    Fields:
        elements: element symbols, length n (normalized spelling, e.g. 'Cl').
        positions: (n, 3) float64 Cartesian coordinates in Angstrom.
        charge: net charge in elementary charges.
        multiplicity: spin multiplicity 2S+1 (1 = closed shell).
        name: a label (QM9 id as 'qm9:123', the comment line of an XYZ file, an SDF title).
        source: file (or '<text>') the molecule was read from; used in error messages.
        index: 0-based position of the molecule in `source`.
        smiles: optional SMILES template used for bond orders (QM9 ships one per molecule).
        bonds: optional ((i, j, order), ...) with order 1, 2, 3 or 1.5 (aromatic), as read from
            an SDF/MOL file; when present the featurizer uses it instead of perceiving bonds.
        atom_charges: optional per-atom formal charges matching `bonds` (SDF files).
        properties: free-form metadata (QM9 targets, Mulliken charges...).
    """

    elements: tuple[str, ...]
    positions: np.ndarray
    charge: int = 0
    multiplicity: int = 1
    name: str = ""
    source: str | None = None
    index: int | None = None
    smiles: str | None = None
    bonds: tuple[tuple[int, int, float], ...] | None = None
    atom_charges: tuple[int, ...] | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        pos = np.asarray(self.positions, dtype=np.float64)
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "elements", tuple(self.elements))
        n = len(self.elements)
        if n == 0:
            raise MoleculeError(self.source, self.index, "molecule has no atoms")
        if pos.shape != (n, 3):
            raise MoleculeError(
                self.source, self.index,
                f"positions have shape {pos.shape}, expected ({n}, 3) for {n} atoms",
            )
        if not np.all(np.isfinite(pos)):
            raise MoleculeError(self.source, self.index, "coordinates contain NaN or infinity")

    @property
    def n_atoms(self) -> int:
        return len(self.elements)

    @property
    def atomic_numbers(self) -> np.ndarray:
        return np.array([ATOMIC_NUMBER[e] for e in self.elements], dtype=np.int64)

    @property
    def formula(self) -> str:
        """Hill formula, e.g. 'C2H6O'."""
        counts: dict[str, int] = {}
        for e in self.elements:
            counts[e] = counts.get(e, 0) + 1
        first = [e for e in ("C", "H") if e in counts] if "C" in counts else []  # no H: C2N2 is 'C2N2'
        order = first + sorted(k for k in counts if k not in first)
        return "".join(f"{e}{counts[e] if counts[e] > 1 else ''}" for e in order)

    def where(self) -> tuple[str | None, int | None]:
        return self.source, self.index

    def error(self, problem: str) -> MoleculeError:
        """A MoleculeError located at this molecule (name included when it has one)."""
        return MoleculeError(self.source, self.index, f"{self.name}: {problem}" if self.name else problem)
