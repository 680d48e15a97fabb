"""qmlrp spectra's omega_1 reading: what a molecule's highest mode is (hand-checked molecules), and
the per-class omega_1 errors as the literal formula."""
import numpy as np

from molgraph import MolecularGraphFeaturizer
from qmlrp.spectra import omega_1_by_class, xh_class

from .conftest import embed

F = MolecularGraphFeaturizer()


def test_xh_class_of_hand_checked_molecules(qm9_molecules):
    assert xh_class(F(qm9_molecules[1])) == "C-H only"  # methane
    assert xh_class(F(qm9_molecules[2])) == "N-H"  # ammonia
    assert xh_class(F(qm9_molecules[3])) == "O-H"  # water
    for smiles, cls in (("NCCO", "O-H"), ("CC(=O)N", "N-H"), ("C#N", "C-H only"), ("O=C=O", "no H"), ("FC(F)(F)F", "no H")):
        assert xh_class(F(embed(smiles))) == cls, smiles


def test_omega_1_by_class_is_the_highest_modes_error():
    true = np.array([[100.0, 3000.0, 0.0], [200.0, 3500.0, 3700.0], [300.0, 3650.0, 3800.0]])
    pred = np.array([[110.0, 3010.0, 0.0], [190.0, 3490.0, 3680.0], [300.0, 3660.0, 3830.0]])
    mask = np.array([[True, True, False], [True, True, True], [True, True, True]])
    out = omega_1_by_class(pred, true, mask, ["C-H only", "O-H", "O-H"])
    assert out["C-H only"] == {"n_molecules": 1, "mae": 10.0, "mean_error": 10.0, "true_mean": 3000.0}
    assert out["O-H"]["n_molecules"] == 2 and out["O-H"]["mae"] == 25.0 and out["O-H"]["mean_error"] == 5.0
    assert "N-H" not in out
