"""The Molecular Graph featurizer: Molecule -> MolGraph (21 atom, 13 pair features).

Definitions (one per feature group, see `molgraph.features` for names and order):
- atom_type: one-hot over H, C, N, O, F.
- chirality: one-hot R / S from CIP labels (RDKit's new CIP labeller, IUPAC 2013 rules)
  of stereocentres assigned from the 3D geometry; zeros for non-stereocentres.
- formal_charge: integer formal charge of the atom in the perceived structure.
- partial_charge: Gasteiger-Marsili partial charge (RDKit, 12 iterations, explicit H).
- ring_sizes: for k = 3..8, the number of rings of size k that contain the atom, counted over
  RDKit's ring information (the symmetrized smallest set of smallest rings: bicyclo[1.1.1]-
  pentane has three four-membered rings, norbornane two five-membered ones).
- hybridization: one-hot sp / sp2 / sp3 from RDKit; zeros otherwise (H atoms, s).
- hydrogen_bonding: donor, acceptor flags: the atom matches RDKit's `BaseFeatures.fdef`
  `Donor` / `Acceptor` family patterns (as written there: e.g. nitrile N and sp3 amine N are
  not acceptors, pyrrole-type NH is a donor).
- aromaticity: RDKit aromatic flag (RDKit aromaticity model).
- bond_type: one-hot single / double / triple / aromatic; zeros for non-bonded pairs.
- graph_distance: bit k (k = 1..7) set when the shortest bond path between the atoms is at
  most k bonds; zero on the diagonal and for atoms in different fragments.
- same_ring: 1 when some ring (of the ring information above) contains both atoms.
- spatial_distance: Euclidean distance in Angstrom.
Pair features are symmetric with a zero diagonal.

For storage the featurizer first produces a compact `EncodedGraph` (atom features plus three
small integer codes per pair, distances recomputed from positions); `decode` expands it into
the dense `MolGraph`. Both paths give bit-identical tensors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping

import numpy as np
import torch

from .features import ATOM_TYPES, FEATURE_GROUPS, MAX_GRAPH_DISTANCE, N_ATOM_FEATURES, N_PAIR_FEATURES, RING_SIZES
from .molecule import ELEMENTS, Molecule

FEATURIZER_VERSION = "mg-1"
NO_PATH = 127  # graph distance code for atoms in different fragments

_G = FEATURE_GROUPS
_ATOM_TYPE_COL = {e: _G["atom_type"].indices[k] for k, e in enumerate(ATOM_TYPES)}
_RING_COL = {k: _G["ring_sizes"].indices[i] for i, k in enumerate(RING_SIZES)}


@dataclass(frozen=True, eq=False)
class MolGraph:
    """One molecule as Molecular Graph tensors.

    Fields:
        atom_features: (n, 21) float32, layout `molgraph.ATOM_FEATURES`.
        pair_features: (n, n, 13) float32, layout `molgraph.PAIR_FEATURES`; symmetric, zero diagonal.
        positions: (n, 3) float32, Angstrom.
        elements: n element symbols.
        targets: name -> tensor; scalars () float64, vectors (k,) float64 (e.g. `freqs_cm1`),
            tensors (3, 3) (`alpha_tensor_bohr3`). Units are in the names.
        name: label of the molecule (e.g. 'qm9:1234').
    """

    atom_features: torch.Tensor
    pair_features: torch.Tensor
    positions: torch.Tensor
    elements: tuple[str, ...]
    targets: Mapping[str, torch.Tensor] = field(default_factory=dict)
    name: str = ""

    @property
    def n_atoms(self) -> int:
        return len(self.elements)

    def with_targets(self, targets: Mapping[str, torch.Tensor]) -> "MolGraph":
        return MolGraph(self.atom_features, self.pair_features, self.positions, self.elements, dict(targets), self.name)

    def permute(self, perm) -> "MolGraph":
        """Atoms reordered so that new atom k is old atom perm[k]."""
        p = torch.as_tensor(perm, dtype=torch.long)
        return MolGraph(
            self.atom_features[p], self.pair_features[p][:, p], self.positions[p],
            tuple(self.elements[int(i)] for i in p), self.targets, self.name,
        )


@dataclass(frozen=True, eq=False)
class EncodedGraph:
    """Compact form of a MolGraph, the unit stored in the dataset cache.

    atom_features (n, 21) float32; positions (n, 3) float32 (Angstrom); atomic_numbers (n,)
    uint8; bond (n, n) int8 code 0 none / 1 single / 2 double / 3 triple / 4 aromatic;
    path (n, n) int8 shortest-path length in bonds (NO_PATH if disconnected); ring (n, n) bool
    same-ring flag; method: how the bonds were perceived.
    """

    atom_features: np.ndarray
    positions: np.ndarray
    atomic_numbers: np.ndarray
    bond: np.ndarray
    path: np.ndarray
    ring: np.ndarray
    method: str = ""


def pair_distances(positions: np.ndarray) -> np.ndarray:
    """(n, 3) float32 -> (n, n) float32 Euclidean distances, computed in float64 and rounded
    once, with an exact zero diagonal. Used by both encode and decode paths."""
    p = positions.astype(np.float64)
    d = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, 0.0)
    return d.astype(np.float32)


def decode(enc: EncodedGraph, targets: Mapping[str, torch.Tensor] | None = None, name: str = "") -> MolGraph:
    """EncodedGraph -> dense MolGraph."""
    n = enc.atom_features.shape[0]
    pair = np.zeros((n, n, N_PAIR_FEATURES), dtype=np.float32)
    bt = _G["bond_type"].indices
    for code in range(1, 5):
        pair[..., bt[code - 1]] = enc.bond == code
    path = enc.path.astype(np.int16)
    for k, col in zip(range(1, MAX_GRAPH_DISTANCE + 1), _G["graph_distance"].indices):
        pair[..., col] = (path >= 1) & (path <= k)
    pair[..., _G["same_ring"].indices[0]] = enc.ring
    pair[..., _G["spatial_distance"].indices[0]] = pair_distances(enc.positions)
    idx = np.arange(n)
    pair[idx, idx, :] = 0.0
    elements = tuple(ELEMENTS[int(z) - 1] for z in enc.atomic_numbers)
    return MolGraph(
        torch.from_numpy(np.array(enc.atom_features, dtype=np.float32)), torch.from_numpy(pair),
        torch.from_numpy(np.array(enc.positions, dtype=np.float32)), elements, dict(targets or {}), name,
    )


@lru_cache(maxsize=1)
def _hbond_patterns():
    """Donor and acceptor SMARTS of RDKit's BaseFeatures.fdef, compiled once per process.
    Matching them is what ChemicalFeatures' factory does for these single-atom families,
    without building feature objects (tests check the two agree)."""
    from rdkit import Chem, RDConfig
    from rdkit.Chem import ChemicalFeatures

    factory = ChemicalFeatures.BuildFeatureFactory(os.path.join(RDConfig.RDDataDir, "BaseFeatures.fdef"))
    out = {"Donor": [], "Acceptor": []}
    for key, smarts in factory.GetFeatureDefs().items():
        family = key.split(".")[0]
        if family in out:
            out[family].append(Chem.MolFromSmarts(smarts))
    return out


_BOND_CODE = {"SINGLE": 1, "DOUBLE": 2, "TRIPLE": 3, "AROMATIC": 4}


@dataclass(frozen=True)
class MolecularGraphFeaturizer:
    """Configured callable: `featurizer(molecule) -> MolGraph`.

    Args:
        elements: elements accepted (the Molecular Graph one-hot covers H, C, N, O, F; others
            are refused with a message that says so).
        allow_charged / allow_open_shell: refuse (default) or featurize such species.
        use_template: take bond orders from `molecule.smiles` when present (QM9 route).
    """

    elements: tuple[str, ...] = ATOM_TYPES
    allow_charged: bool = False
    allow_open_shell: bool = False
    use_template: bool = True
    version: str = FEATURIZER_VERSION

    def __post_init__(self):
        unknown = [e for e in self.elements if e not in ATOM_TYPES]
        if unknown:
            raise ValueError(f"the Molecular Graph atom-type one-hot covers {ATOM_TYPES}; cannot accept {unknown}")

    def __call__(self, molecule: Molecule) -> MolGraph:
        return decode(self.encode(molecule), name=molecule.name)

    def encode(self, molecule: Molecule) -> EncodedGraph:
        """Molecule -> EncodedGraph; raises MoleculeError naming the molecule on failure."""
        from rdkit import Chem
        from rdkit.Chem import rdCIPLabeler, rdPartialCharges

        from .perception import to_rdkit

        m, method = to_rdkit(
            molecule, supported=self.elements, allow_charged=self.allow_charged,
            allow_open_shell=self.allow_open_shell, use_template=self.use_template,
        )
        n = m.GetNumAtoms()
        x = np.zeros((n, N_ATOM_FEATURES), dtype=np.float32)
        try:
            rdPartialCharges.ComputeGasteigerCharges(m, nIter=12, throwOnParamFailure=True)
        except Exception as exc:
            raise molecule.error(f"Gasteiger charges failed ({exc})") from None
        atoms = [m.GetAtomWithIdx(i) for i in range(n)]
        if any(a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED for a in atoms):
            rdCIPLabeler.AssignCIPLabels(m)
        col_fc = _G["formal_charge"].indices[0]
        col_pc = _G["partial_charge"].indices[0]
        hyb_cols = dict(zip(("SP", "SP2", "SP3"), _G["hybridization"].indices))
        chir_cols = dict(zip("RS", _G["chirality"].indices))
        col_arom = _G["aromaticity"].indices[0]
        for i, a in enumerate(atoms):
            x[i, _ATOM_TYPE_COL[a.GetSymbol()]] = 1.0
            if a.HasProp("_CIPCode"):
                col = chir_cols.get(a.GetProp("_CIPCode"))
                if col is not None:
                    x[i, col] = 1.0
            x[i, col_fc] = a.GetFormalCharge()
            q = a.GetDoubleProp("_GasteigerCharge")
            if not np.isfinite(q):
                raise molecule.error(f"Gasteiger charge of atom {i + 1} is not finite")
            x[i, col_pc] = q
            col = hyb_cols.get(str(a.GetHybridization()))
            if col is not None:
                x[i, col] = 1.0
            x[i, col_arom] = float(a.GetIsAromatic())
        rings = m.GetRingInfo().AtomRings()
        ring = np.zeros((n, n), dtype=bool)
        for r in rings:
            size = len(r)
            r = list(r)
            if size in _RING_COL:
                x[r, _RING_COL[size]] += 1.0
            ring[np.ix_(r, r)] = True
        np.fill_diagonal(ring, False)
        for family, col in zip(("Donor", "Acceptor"), _G["hydrogen_bonding"].indices):
            for patt in _hbond_patterns()[family]:
                for match in m.GetSubstructMatches(patt, uniquify=True):
                    x[match[0], col] = 1.0
        bond = np.zeros((n, n), dtype=np.int8)
        for k in range(m.GetNumBonds()):
            b = m.GetBondWithIdx(k)
            code = _BOND_CODE.get(str(b.GetBondType()))
            if code is None:
                raise molecule.error(f"unsupported bond type {b.GetBondType()}")
            i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
            bond[i, j] = bond[j, i] = code
        dist = Chem.GetDistanceMatrix(m)
        path = np.where(dist > NO_PATH - 1, NO_PATH, dist).astype(np.int8)
        pos = np.asarray(m.GetConformer().GetPositions(), dtype=np.float32)
        z = np.array([a.GetAtomicNum() for a in atoms], dtype=np.uint8)
        return EncodedGraph(x, pos, z, bond, path, ring, method)
