"""Molecule (plain data) -> sanitized RDKit molecule with bonds, aromaticity and 3D stereo.

Routes, tried in order:
1. `bonds` given (SDF/MOL): used as they are.
2. Connectivity from the geometry (RDKit `DetermineConnectivity`, covalent radii x 1.3) with
   bond orders and formal charges copied from a SMILES template (QM9 ships one per molecule)
   by an isomorphism of the two graphs with every bond taken as single. This avoids the
   ~5 % failures of pure geometric perception on QM9.
3. Bond orders from the geometry alone (RDKit `DetermineBondOrders`, Kim & Kim's algorithm),
   for molecules without a template or whose template does not fit the geometry (the
   molecule rearranged during QM9's optimization).
If none works, `MoleculeError` says why. RDKit objects never leave `molgraph`.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import rdDetermineBonds

from .molecule import ATOMIC_NUMBER, Molecule

RDLogger.DisableLog("rdApp.*")

_BOND_TYPES = {1.0: Chem.BondType.SINGLE, 2.0: Chem.BondType.DOUBLE, 3.0: Chem.BondType.TRIPLE, 1.5: Chem.BondType.AROMATIC}

# How a molecule's bonds were found; recorded per molecule in dataset reports.
METHOD_GIVEN, METHOD_TEMPLATE, METHOD_GEOMETRY = "given", "template", "geometry"


def check_species(mol: Molecule, supported: tuple[str, ...], allow_charged: bool, allow_open_shell: bool) -> None:
    """Refuse what the featurizer cannot represent, with a message that says so."""
    bad = sorted({e for e in mol.elements if e not in supported}, key=lambda e: (ATOMIC_NUMBER.get(e, 999), e))
    if bad:
        raise mol.error(
            f"unsupported element(s) {', '.join(bad)}: the Molecular Graph featurizer handles "
            f"only {', '.join(supported)}"
        )
    electrons = int(mol.atomic_numbers.sum()) - mol.charge
    if not allow_charged and mol.charge != 0:
        raise mol.error(f"charged species (net charge {mol.charge:+d}) unsupported: the featurizer handles neutral molecules")
    if not allow_open_shell and (mol.multiplicity != 1 or electrons % 2):
        why = (f"an odd number of electrons ({electrons}): a radical, multiplicity at least 2"
               if electrons % 2 else f"{electrons} electrons with multiplicity {mol.multiplicity} (given)")
        raise mol.error(f"open-shell species ({why}) unsupported: the featurizer handles closed-shell molecules")
    if not allow_open_shell and sorted(mol.elements) == ["O", "O"] and mol.charge == 0:
        # even-electron and given as a singlet, but its ground state is the triplet X 3Sigma_g- (two
        # unpaired electrons in the pi* orbitals); a Lewis structure O=O would pass every other check
        raise mol.error("O2: its ground state is a triplet (X 3Sigma_g-, two unpaired electrons), an open-shell "
                        "molecule, unsupported: the featurizer handles closed-shell molecules (singlet O2 is an "
                        "excited state)")


def _skeleton(mol: Molecule) -> Chem.RWMol:
    rw = Chem.RWMol()
    for e in mol.elements:
        atom = Chem.Atom(ATOMIC_NUMBER[e])
        atom.SetNoImplicit(True)
        rw.AddAtom(atom)
    conf = Chem.Conformer(mol.n_atoms)
    conf.SetPositions(np.ascontiguousarray(mol.positions, dtype=np.float64))
    conf.Set3D(True)
    rw.AddConformer(conf, assignId=True)
    return rw


@lru_cache(maxsize=4096)
def _template(smiles: str):
    """(query with all bonds single and no charges, kekulized template) for a SMILES, or None."""
    t = Chem.MolFromSmiles(smiles)
    if t is None:
        return None
    t = Chem.AddHs(t)
    Chem.Kekulize(t, clearAromaticFlags=True)
    q = Chem.RWMol(t)
    for b in q.GetBonds():
        b.SetBondType(Chem.BondType.SINGLE)
        b.SetIsAromatic(False)
    for a in q.GetAtoms():
        a.SetFormalCharge(0)
        a.SetIsAromatic(False)
        a.SetNoImplicit(True)
        a.SetNumExplicitHs(0)
    q = q.GetMol()
    q.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(q)
    return q, t


def _apply_template(geo: Chem.RWMol, smiles: str, positions: np.ndarray) -> str | None:
    """Copy bond orders and charges from the SMILES onto `geo` (single bonds only).

    Every template bond must be a geometric contact. Extra geometric contacts (e.g. the
    1.8-1.9 A transannular C...C of bicyclobutanes, within 1.3x the covalent radii) are
    dropped; when there are such extras, the mapping whose bonds are shortest overall wins.
    Returns None on success, else the reason it does not fit."""
    pair = _template(smiles)
    if pair is None:
        return f"SMILES template {smiles!r} does not parse"
    query, tmpl = pair
    if query.GetNumAtoms() != geo.GetNumAtoms():
        return f"SMILES template has {query.GetNumAtoms()} atoms, geometry {geo.GetNumAtoms()}"
    extra = geo.GetNumBonds() - query.GetNumBonds()
    if extra < 0:
        return f"SMILES template has {query.GetNumBonds()} bonds, geometry only {geo.GetNumBonds()}"
    if extra == 0:
        match = geo.GetSubstructMatch(query)
    else:
        candidates = geo.GetSubstructMatches(query, uniquify=False, maxMatches=2000)
        if candidates:
            pt = Chem.GetPeriodicTable()
            radius = np.array([pt.GetRcovalent(a.GetAtomicNum()) for a in geo.GetAtoms()])
            ends = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in query.GetBonds()])
            cand = np.array(candidates)  # (k, n) template atom -> geometry atom
            i, j = cand[:, ends[:, 0]], cand[:, ends[:, 1]]  # (k, bonds)
            stretch = (np.linalg.norm(positions[i] - positions[j], axis=-1) / (radius[i] + radius[j])).sum(1)
            match = candidates[int(np.argmin(stretch))]
        else:
            match = ()
    if not match:
        return "the connectivity of the geometry differs from the SMILES template"
    if extra:
        keep = {frozenset((match[b.GetBeginAtomIdx()], match[b.GetEndAtomIdx()])) for b in query.GetBonds()}
        for b in list(geo.GetBonds()):
            i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
            if frozenset((i, j)) not in keep:
                geo.RemoveBond(i, j)
    # index loops: RDKit's GetAtoms()/GetBonds() sequence wrappers cost more than the work here
    for k in range(tmpl.GetNumAtoms()):
        q = tmpl.GetAtomWithIdx(k).GetFormalCharge()
        if q:
            geo.GetAtomWithIdx(match[k]).SetFormalCharge(q)
    for k in range(tmpl.GetNumBonds()):
        b = tmpl.GetBondWithIdx(k)
        geo.GetBondBetweenAtoms(match[b.GetBeginAtomIdx()], match[b.GetEndAtomIdx()]).SetBondType(b.GetBondType())
    return None


def to_rdkit(mol: Molecule, *, supported: tuple[str, ...] = ("H", "C", "N", "O", "F"),
             allow_charged: bool = False, allow_open_shell: bool = False,
             use_template: bool = True) -> tuple[Chem.Mol, str]:
    """Sanitized RDKit molecule (explicit hydrogens, aromaticity, stereo and CIP labels from 3D)
    and the perception route used (`given`, `template` or `geometry`)."""
    check_species(mol, supported, allow_charged, allow_open_shell)
    rw = _skeleton(mol)
    if mol.bonds is not None:
        method = METHOD_GIVEN
        for i, j, order in mol.bonds:
            if not (0 <= i < mol.n_atoms and 0 <= j < mol.n_atoms) or i == j:
                raise mol.error(f"bond ({i}, {j}) refers to a missing atom")
            rw.AddBond(int(i), int(j), _BOND_TYPES[float(order)])
        for atom, q in zip(rw.GetAtoms(), mol.atom_charges or ()):
            atom.SetFormalCharge(int(q))
    else:
        n = mol.n_atoms
        if n > 1:
            d = np.linalg.norm(mol.positions[:, None] - mol.positions[None], axis=-1)
            close = np.argwhere(np.triu(d < 0.5, 1))
            if len(close):
                i, j = close[0]
                raise mol.error(f"bonds cannot be perceived: atoms {i + 1} and {j + 1} are {d[i, j]:.3f} A apart (overlapping atoms)")
        rdDetermineBonds.DetermineConnectivity(rw, charge=mol.charge)
        if n > 1:
            lonely = [i + 1 for i in range(n) if rw.GetAtomWithIdx(i).GetDegree() == 0]
            if lonely:
                raise mol.error(f"bonds cannot be perceived: atom(s) {lonely[:5]} have no neighbour within bonding distance")
        reason = None
        method = METHOD_TEMPLATE
        if use_template and mol.smiles:
            reason = _apply_template(rw, mol.smiles, mol.positions)
        if not (use_template and mol.smiles) or reason:
            method = METHOD_GEOMETRY
            try:
                rdDetermineBonds.DetermineBondOrders(rw, charge=mol.charge, allowChargedFragments=True)
            except Exception as exc:
                why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                prefix = f"{reason}; " if reason else ""
                raise mol.error(f"bonds cannot be perceived: {prefix}bond orders from the geometry failed ({why})") from None
    m = rw.GetMol()
    try:
        Chem.SanitizeMol(m)
    except Exception as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise mol.error(f"bonds cannot be perceived: RDKit rejects the structure ({why})") from None
    if mol.bonds is None and Chem.GetFormalCharge(m) != mol.charge:
        raise mol.error("bonds cannot be perceived: the assigned formal charges do not sum to the net charge")
    Chem.AssignStereochemistryFrom3D(m)
    return m, method
