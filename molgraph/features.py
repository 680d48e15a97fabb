"""The Molecular Graph feature layout (Faber et al. 2017, tables 1 and 2; the proposal's
tables 1 and 2) as data: ordered feature names and the 12 named groups.

Nothing outside this module should hard-code an index range; use `FEATURE_GROUPS[name]`.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

ATOM_TYPES = ("H", "C", "N", "O", "F")
RING_SIZES = (3, 4, 5, 6, 7, 8)
MAX_GRAPH_DISTANCE = 7

_ATOM_LAYOUT = (
    ("atom_type", tuple(f"atom_type_{e}" for e in ATOM_TYPES)),
    ("chirality", ("chirality_R", "chirality_S")),
    ("formal_charge", ("formal_charge",)),
    ("partial_charge", ("partial_charge_gasteiger",)),
    ("ring_sizes", tuple(f"ring_size_{k}" for k in RING_SIZES)),
    ("hybridization", ("hybridization_sp", "hybridization_sp2", "hybridization_sp3")),
    ("hydrogen_bonding", ("hbond_donor", "hbond_acceptor")),
    ("aromaticity", ("aromatic",)),
)
_PAIR_LAYOUT = (
    ("bond_type", ("bond_single", "bond_double", "bond_triple", "bond_aromatic")),
    ("graph_distance", tuple(f"graph_distance_le_{k}" for k in range(1, MAX_GRAPH_DISTANCE + 1))),
    ("same_ring", ("same_ring",)),
    ("spatial_distance", ("distance_angstrom",)),
)

ATOM_FEATURES: tuple[str, ...] = tuple(n for _, names in _ATOM_LAYOUT for n in names)
PAIR_FEATURES: tuple[str, ...] = tuple(n for _, names in _PAIR_LAYOUT for n in names)
N_ATOM_FEATURES = len(ATOM_FEATURES)  # 21
N_PAIR_FEATURES = len(PAIR_FEATURES)  # 13


@dataclass(frozen=True)
class FeatureGroup:
    """One of the 12 Molecular Graph groups.

    kind: 'atom' (indices into the last axis of atom_features) or 'pair' (of pair_features).
    indices: positions of the group's features, contiguous.
    names: the feature names at those positions.
    """

    name: str
    kind: str
    indices: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def slice(self) -> slice:
        return slice(self.indices[0], self.indices[-1] + 1)


def _groups():
    out = {}
    for kind, layout in (("atom", _ATOM_LAYOUT), ("pair", _PAIR_LAYOUT)):
        start = 0
        for name, names in layout:
            out[name] = FeatureGroup(name, kind, tuple(range(start, start + len(names))), names)
            start += len(names)
    return MappingProxyType(out)


FEATURE_GROUPS = _groups()
GROUP_NAMES: tuple[str, ...] = tuple(FEATURE_GROUPS)

assert N_ATOM_FEATURES == 21 and N_PAIR_FEATURES == 13 and len(FEATURE_GROUPS) == 12


def flat_size(max_atoms: int) -> int:
    """Length of the flattened Molecular Graph: 21 n + 13 n(n-1)/2 (5,887 for n = 29)."""
    return N_ATOM_FEATURES * max_atoms + N_PAIR_FEATURES * max_atoms * (max_atoms - 1) // 2

# What each group's values are (checked over QM9 in tests/molgraph): which loss and which
# corruption an autoencoder should use for it (see dae.layout).
FEATURE_KINDS = MappingProxyType({
    "atom_type": "categorical",            # exactly one of H, C, N, O, F
    "chirality": "categorical_or_none",    # R, S or neither
    "formal_charge": "continuous",         # -1, 0, +1
    "partial_charge": "continuous",        # Gasteiger charge
    "ring_sizes": "continuous",            # counts of rings of each size the atom is in (0-5)
    "hybridization": "categorical_or_none",  # sp, sp2, sp3 or none (H, F)
    "hydrogen_bonding": "binary",          # donor, acceptor: independent flags
    "aromaticity": "binary",
    "bond_type": "categorical_or_none",    # single, double, triple, aromatic or no bond
    "graph_distance": "binary",            # thermometer: distance <= k for k = 1..7
    "same_ring": "binary",
    "spatial_distance": "continuous",      # Angstrom
})
assert set(FEATURE_KINDS) == set(FEATURE_GROUPS)
