"""molgraph: molecules -> Molecular Graph tensors (Faber et al. 2017), QM9 and user data.

Public API:
    read_xyz, read_sdf, iter_xyz, iter_sdf, iter_molecules, write_xyz  -- readers
    Molecule, MoleculeError                                          -- plain data, errors
    MolecularGraphFeaturizer, MolGraph                               -- featurization
    collate, MolBatch, flatten, unflatten                            -- batching, flat vector
    ATOM_FEATURES, PAIR_FEATURES, FEATURE_GROUPS                     -- the feature layout
    TARGETS                                                          -- QM9 targets and units
    qm9.load, splits.kfold, splits.load_split                        -- dataset and splits
"""
from . import qm9, splits
from .batch import MolBatch, collate, flatten, unflatten
from .featurizer import FEATURIZER_VERSION, MolecularGraphFeaturizer, MolGraph
from .features import ATOM_FEATURES, FEATURE_GROUPS, FEATURE_KINDS, GROUP_NAMES, PAIR_FEATURES, FeatureGroup, flat_size
from .io import iter_molecules, iter_sdf, iter_xyz, read_sdf, read_xyz, write_xyz
from .molecule import Molecule, MoleculeError
from .targets import TARGETS

__all__ = [
    "ATOM_FEATURES", "PAIR_FEATURES", "FEATURE_GROUPS", "FEATURE_KINDS", "GROUP_NAMES", "FeatureGroup", "flat_size",
    "Molecule", "MoleculeError", "read_xyz", "read_sdf", "iter_xyz", "iter_sdf", "iter_molecules", "write_xyz",
    "MolecularGraphFeaturizer", "MolGraph", "FEATURIZER_VERSION", "collate", "MolBatch", "flatten", "unflatten",
    "TARGETS", "qm9", "splits",
]
__version__ = "0.1.0"
