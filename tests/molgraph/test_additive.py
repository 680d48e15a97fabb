"""Additive models: typing of hand-checked molecules, the fit recovers known contributions, the
model's attribution is exact, the fast dataset typing equals the per-molecule one."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molgraph import MolecularGraphFeaturizer, qm9
from molgraph import additive as am

from ..conftest import embed


def _typed(smiles):
    g = MolecularGraphFeaturizer()(embed(smiles))
    feats, orders = g.atom_features.numpy(), am.bond_orders(g.pair_features.numpy())
    return sorted(am.units("atoms", feats, orders)), sorted(am.units("bonds", feats, orders))


@pytest.mark.parametrize("smiles, atoms, bonds", [
    ("CC#N", ["C_sp", "C_sp3", "H", "H", "H", "N_sp"], ["C#N", "C-C", "C-H", "C-H", "C-H"]),
    ("C=O", ["C_sp2", "H", "H", "O_sp2"], ["C-H", "C-H", "C=O"]),
    ("CO", ["C_sp3", "H", "H", "H", "H", "O_sp3"], ["C-H", "C-H", "C-H", "C-O", "O-H"]),
    ("c1ccncc1", ["C_ar"] * 5 + ["H"] * 5 + ["N_ar"], ["C-H"] * 5 + ["C:C"] * 4 + ["C:N"] * 2),
    ("FC#C", ["C_sp", "C_sp", "F_sp3", "H"], ["C#C", "C-F", "C-H"]),
])
def test_hand_checked_molecules_are_typed_by_hybridization_and_bond_order(smiles, atoms, bonds):
    got_atoms, got_bonds = _typed(smiles)
    assert got_atoms == sorted(atoms)
    assert got_bonds == sorted(bonds)


def test_the_fit_recovers_known_contributions_and_marks_absent_types():
    rng = np.random.default_rng(0)
    types = ("H", "C_sp3", "O_sp2", "N_ar", "never")
    truth = np.array([1.9, 7.4, 4.1, 6.3, 0.0])
    counts = rng.integers(0, 8, size=(400, 5)).astype(float)
    counts[:, 4] = 0  # a type that no molecule has
    y = 3.0 + counts @ truth + rng.normal(0, 1e-3, 400)
    model = am.fit(counts, y, types, "atoms")
    np.testing.assert_allclose(model.coefficients[:4], truth[:4], atol=1e-3)
    assert model.intercept == pytest.approx(3.0, abs=1e-2)
    assert np.isnan(model.coefficients[4]) and model.r2 > 0.999999 and model.mae < 2e-3
    assert np.all(model.standard_errors[:4] < 1e-3)
    # a molecule without the absent type is predicted; its NaN coefficient does not leak
    assert np.isfinite(model.predict(counts[:3])).all()
    with pytest.raises(ValueError, match="too few"):
        am.fit(counts[:5], y[:5], types)
    with pytest.raises(ValueError, match="do not match"):
        am.fit(counts, y[:10], types)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 6), min_size=3, max_size=3), min_size=1, max_size=6),
       st.lists(st.floats(0, 6), min_size=3, max_size=3))
def test_the_attribution_splits_the_difference_to_any_reference_exactly(rows, ref):
    model = am.AdditiveModel("atoms", ("a", "b", "c"), 2.5, np.array([1.5, -0.25, 7.0]), np.zeros(3), 10,
                             0.0, 0.0, 1.0, np.zeros(3))
    c, r = np.array(rows, float), np.array(ref)
    np.testing.assert_allclose(model.attribution(c, r).sum(1), model.predict(c) - model.predict(r[None])[0],
                               rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(model.attribution(c).sum(1), model.predict(c) - model.intercept, atol=1e-9)


def test_rare_types_are_pooled_into_other_and_unknown_types_need_it():
    labels = [["C-H", "C-C"], ["C-H", "C=O"], ["C-H", "C-C"], ["C-H"]]
    vocab = am.vocabulary(labels, min_molecules=2)
    assert vocab == ("C-H", "C-C", am.OTHER)
    np.testing.assert_array_equal(am.count_matrix(labels, vocab), [[1, 1, 0], [1, 0, 1], [1, 1, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        am.count_matrix([["N#N"]], ("C-H",))
    with pytest.raises(ValueError, match="unknown additive scheme"):
        am.units("rings", np.zeros((0, 21)), np.zeros((0, 0)))


def test_dataset_typing_equals_per_molecule_typing(tmp_path):
    ds = qm9.load(ids=range(1, 61), cache_root=tmp_path, workers=1, progress=False, log=lambda m: None)
    sub = ds.subset([int(i) for i in ds.ids[::-1][:40]])  # a reordered subset: rows are followed
    for scheme in am.SCHEMES:
        fast = am.dataset_units(sub, scheme)
        assert len(fast) == len(sub)
        for k in range(len(sub)):
            e = sub.encoded(k)
            slow = am.units(scheme, e.atom_features, e.bond)
            assert list(fast[k]) == list(slow), (scheme, sub.ids[k])
    assert list(am.dataset_units(ds.subset([1]), "bonds")[0]) == ["C-H"] * 4  # methane
