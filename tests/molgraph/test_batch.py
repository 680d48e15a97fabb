"""collate / flatten / unflatten: a molecule is the same alone and in a batch; flattening is
exactly invertible."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molgraph import MolecularGraphFeaturizer, collate, flat_size, flatten, unflatten

from ..conftest import QM9_IDS

F = MolecularGraphFeaturizer()
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def graphs(qm9_molecules):
    from molgraph.targets import compute_targets

    out = {}
    for qid, m in qm9_molecules.items():
        t = compute_targets(m.properties, m.n_atoms)
        out[qid] = F(m).with_targets({"alpha_bohr3": torch.tensor(t["alpha_bohr3"]),
                                      "freqs_cm1": torch.from_numpy(t["freqs_cm1"])})
    return out


@SETTINGS
@given(ids=st.lists(st.sampled_from(QM9_IDS), min_size=1, max_size=6), pick=st.integers(0, 5))
def test_features_are_the_same_alone_and_in_a_batch(graphs, ids, pick):
    batch = collate([graphs[i] for i in ids])
    k = pick % len(ids)
    g = graphs[ids[k]]
    n = g.n_atoms
    assert batch.atom_mask[k].sum() == n and batch.n_atoms[k] == n
    torch.testing.assert_close(batch.atom_features[k, :n], g.atom_features, rtol=0, atol=0)
    torch.testing.assert_close(batch.pair_features[k, :n, :n], g.pair_features, rtol=0, atol=0)
    assert (batch.atom_features[k, n:] == 0).all() and (batch.pair_features[k, n:] == 0).all()
    assert (batch.pair_features[k, :, n:] == 0).all() and not batch.atom_mask[k, n:].any()
    assert batch.targets["alpha_bohr3"][k] == g.targets["alpha_bohr3"]
    f = g.targets["freqs_cm1"]
    torch.testing.assert_close(batch.targets["freqs_cm1"][k, : f.shape[0]], f)
    assert batch.target_masks["freqs_cm1"][k].sum() == f.shape[0]
    assert torch.isnan(batch.targets["freqs_cm1"][k, f.shape[0]:]).all()
    single = flatten(g)
    torch.testing.assert_close(flatten(batch)[k], single, rtol=0, atol=0)


@SETTINGS
@given(qid=st.sampled_from(QM9_IDS), extra=st.integers(0, 6))
def test_flatten_unflatten_round_trip(graphs, qid, extra):
    g = graphs[qid]
    m = max(g.n_atoms, 2) + extra
    v = flatten(g, max_atoms=m)
    assert v.shape == (flat_size(m),)
    x, p = unflatten(v, n_atoms=g.n_atoms, max_atoms=m)
    torch.testing.assert_close(x, g.atom_features, rtol=0, atol=0)
    torch.testing.assert_close(p, g.pair_features, rtol=0, atol=0)
    xf, pf = unflatten(v, max_atoms=m)
    assert (xf[g.n_atoms:] == 0).all() and (pf[g.n_atoms:] == 0).all()
    torch.testing.assert_close(flatten(collate([g]), max_atoms=m)[0], v)


def test_flat_layout_is_atoms_then_upper_triangle(graphs):
    g = graphs[20332]
    v = flatten(g)
    assert v.shape == (5887,)
    torch.testing.assert_close(v[:21], g.atom_features[0])
    torch.testing.assert_close(v[29 * 21: 29 * 21 + 13], g.pair_features[0, 1])  # first pair (0, 1)
    torch.testing.assert_close(v[29 * 21 + 13: 29 * 21 + 26], g.pair_features[0, 2])


def test_flatten_refuses_molecules_larger_than_max_atoms(graphs):
    with pytest.raises(ValueError, match="more than max_atoms=3"):
        flatten(graphs[1000], max_atoms=3)
    with pytest.raises(ValueError, match="expected a last dimension of 5887"):
        unflatten(torch.zeros(10))


def test_collate_checks_its_input(graphs):
    with pytest.raises(ValueError, match="at least one"):
        collate([])
    with pytest.raises(ValueError, match="pad_to=2"):
        collate([graphs[1]], pad_to=2)
    g = graphs[1].with_targets({})
    with pytest.raises(ValueError, match="different targets"):
        collate([graphs[2], g])
    b = collate([graphs[1], graphs[2]], pad_to=29)
    assert b.atom_features.shape == (2, 29, 21) and b.pair_mask.shape == (2, 29, 29)
    assert b.pair_mask[0].sum() == 5 * 4
