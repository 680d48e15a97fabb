"""WeaveNet with a pair cutoff (Kearnes et al.'s "N2" setting): pairs more than K bonds apart do
not exist for the network. Laws: what those pairs hold never changes the output; a cutoff beyond
every molecule's diameter is the uncut network (same weights); invariance to atom order and batch
independence keep holding; LRP conserves and gives the cut pairs nothing."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lrp
from gcnn import WeaveConfig, WeaveNet
from molgraph import MolecularGraphFeaturizer, collate
from molgraph.features import MAX_GRAPH_DISTANCE, PAIR_FEATURES

from ..conftest import QM9_IDS

F = MolecularGraphFeaturizer()
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SMALL = dict(atom_hidden=16, pair_hidden=8, readout_hidden=12, head_hidden=(16,))


@pytest.fixture(scope="module")
def graphs(qm9_molecules):
    return {q: F(m) for q, m in qm9_molecules.items()}


def _net(cutoff, n_layers=2, seed=0):
    torch.manual_seed(seed)
    return WeaveNet(WeaveConfig(pair_cutoff=cutoff, n_layers=n_layers, **SMALL)).double().eval()


def _run(net, batch, pairs=None):
    p = batch.pair_features.double() if pairs is None else pairs
    return net(batch.atom_features.double(), p, batch.atom_mask)


def _far(batch, k):
    """(B, N, N) bool: real pairs i != j more than k bonds apart."""
    col = PAIR_FEATURES.index(f"graph_distance_le_{k}")
    m = batch.atom_mask.bool()
    eye = torch.eye(m.shape[1], dtype=torch.bool)
    return m[:, :, None] & m[:, None, :] & ~eye & (batch.pair_features[..., col] < 0.5)


@SETTINGS
@given(ids=st.lists(st.sampled_from(QM9_IDS), min_size=1, max_size=4), k=st.integers(1, 3),
       seed=st.integers(0, 2 ** 16), n_layers=st.integers(2, 3))
def test_pairs_beyond_the_cutoff_never_change_the_output(graphs, ids, k, seed, n_layers):
    batch = collate([graphs[i] for i in ids])
    far = _far(batch, k)
    net = _net(k, n_layers)
    noise = torch.from_numpy(np.random.default_rng(seed).normal(0, 3, batch.pair_features.shape))
    # anything in the far pairs except their (zero) distance flags up to k, which define them as far
    keep = torch.zeros(len(PAIR_FEATURES), dtype=torch.bool)
    keep[[PAIR_FEATURES.index(f"graph_distance_le_{j}") for j in range(1, k + 1)]] = True
    changed = torch.where(far[..., None] & ~keep, noise, batch.pair_features.double())
    torch.testing.assert_close(_run(net, batch, changed), _run(net, batch), rtol=1e-10, atol=1e-10)


def test_the_uncut_network_reads_the_far_pairs(graphs):
    """The law above is not trivial: the same change moves the uncut network's outputs."""
    batch = collate([graphs[q] for q in QM9_IDS])
    far = _far(batch, 2)
    noise = torch.from_numpy(np.random.default_rng(0).normal(0, 3, batch.pair_features.shape))
    changed = torch.where(far[..., None], noise, batch.pair_features.double())
    moved = (_run(_net(None), batch, changed) - _run(_net(None), batch)).abs()[:, 0]
    has_far = far.flatten(1).any(1)
    assert has_far.sum() >= 10 and bool((moved[has_far] > 1e-6).all())


def test_a_cutoff_beyond_every_graph_distance_is_the_uncut_network(graphs):
    batch = collate([graphs[q] for q in QM9_IDS])
    d_max = MAX_GRAPH_DISTANCE
    small = [q for q in QM9_IDS if not _far(collate([graphs[q]]), d_max).any()]
    assert len(small) >= 3
    b = collate([graphs[q] for q in small])
    cut, uncut = _net(d_max), _net(None)
    uncut.load_state_dict(cut.state_dict())  # the cutoff adds no parameters
    torch.testing.assert_close(_run(cut, b), _run(uncut, b), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(_run(_net(1), batch), _run(uncut, batch))  # a real cutoff is another function


@SETTINGS
@given(qid=st.sampled_from(QM9_IDS), data=st.data(), ids=st.lists(st.sampled_from(QM9_IDS), min_size=1, max_size=4),
       pad=st.integers(0, 3))
def test_cut_network_is_invariant_to_atom_order_and_batch(graphs, qid, data, ids, pad):
    net = _net(2)
    g = graphs[qid]
    perm = data.draw(st.permutations(range(g.n_atoms)))
    torch.testing.assert_close(_run(net, collate([g])), _run(net, collate([g.permute(perm)])), rtol=1e-10, atol=1e-10)
    gs = [graphs[i] for i in ids] + [g]
    together = _run(net, collate(gs, pad_to=max(x.n_atoms for x in gs) + pad))
    torch.testing.assert_close(together[-1:], _run(net, collate([g])), rtol=1e-10, atol=1e-10)


def test_lrp_conserves_and_gives_cut_pairs_nothing(graphs):
    batch = collate([graphs[q] for q in (1000, 20332, 133885)])
    net = _net(2)
    inputs = (batch.atom_features.double(), batch.pair_features.double(), batch.atom_mask)
    far = _far(batch, 2)
    assert far.any()
    for composite in ("epsilon", "weave"):
        e = lrp.explain(net, inputs, composite, track_absorbed=True)
        ra, rp, _ = e.relevance
        assert float(e.conservation_error().max()) < 1e-9
        assert float(rp[far].abs().sum()) == 0 and float(rp[~far].abs().sum()) > 0


def test_config_round_trip_and_validation():
    assert "pair_cutoff" not in WeaveConfig().to_json()  # older configs and their checksums stay as they were
    c = WeaveConfig(pair_cutoff=2)
    assert c.to_json()["pair_cutoff"] == 2 and WeaveConfig.from_json(c.to_json()) == c
    for bad in (0, MAX_GRAPH_DISTANCE + 1):
        with pytest.raises(ValueError, match="pair_cutoff must be a graph distance"):
            WeaveConfig(pair_cutoff=bad)
    with pytest.raises(ValueError, match="graph-distance features"):
        WeaveConfig(pair_cutoff=2, n_pair_features=5)


def test_cutoff_with_an_input_stage_masks_the_codes_and_explains_through_them(graphs):
    import dae
    from qmlrp.autoencoder import atom_layout, code_relevance, pair_layout

    torch.manual_seed(0)
    ae = dae.GraphAutoencoder(dae.TiedAutoencoder([21, 8, 4], atom_layout()), dae.TiedAutoencoder([13, 6, 3], pair_layout()))
    cfg = WeaveConfig(pair_cutoff=2, input_stage=ae.config(), **SMALL)
    net = WeaveNet(cfg).double().eval()
    batch = collate([graphs[q] for q in (1000, 20332, 133885)])
    far = _far(batch, 2)
    changed = torch.where(far[..., None], torch.full_like(batch.pair_features.double(), 2.5), batch.pair_features.double())
    changed[..., PAIR_FEATURES.index("graph_distance_le_2")] = batch.pair_features[..., PAIR_FEATURES.index("graph_distance_le_2")].double()
    torch.testing.assert_close(_run(net, batch, changed), _run(net, batch), rtol=1e-10, atol=1e-10)
    out = code_relevance(net, batch)
    assert float(out["explanation"].conservation_error().max()) < 1e-8
    assert float(out["pairs"][far].abs().sum()) == 0
    with pytest.raises(ValueError, match="needs its pair_mask"):
        net.from_codes(batch.atom_features.double(), batch.pair_features.double(), batch.atom_mask)
