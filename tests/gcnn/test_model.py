"""WeaveNet laws: invariance to atom order, padding never changes a result; overfitting 32
molecules; LRP through the network conserves (float64) with both inputs receiving relevance."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lrp
from gcnn import WeaveConfig, WeaveNet
from molgraph import MolecularGraphFeaturizer, collate

from ..conftest import QM9_IDS

F = MolecularGraphFeaturizer()
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def graphs(qm9_molecules):
    return {q: F(m) for q, m in qm9_molecules.items()}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return WeaveNet(WeaveConfig(atom_hidden=16, pair_hidden=8, readout_hidden=12, head_hidden=(16,))).double().eval()


def _run(net, batch):
    return net(batch.atom_features.double(), batch.pair_features.double(), batch.atom_mask)


@SETTINGS
@given(qid=st.sampled_from(QM9_IDS), data=st.data())
def test_output_is_invariant_to_atom_order(net, graphs, qid, data):
    g = graphs[qid]
    perm = data.draw(st.permutations(range(g.n_atoms)))
    a, b = _run(net, collate([g])), _run(net, collate([g.permute(perm)]))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(ids=st.lists(st.sampled_from(QM9_IDS), min_size=1, max_size=5), pad=st.integers(0, 4), k=st.integers(0, 4))
def test_a_molecule_gives_the_same_output_alone_or_in_any_batch(net, graphs, ids, pad, k):
    k = k % len(ids)
    gs = [graphs[i] for i in ids]
    alone = _run(net, collate([gs[k]]))
    together = _run(net, collate(gs, pad_to=max(g.n_atoms for g in gs) + pad))
    torch.testing.assert_close(together[k:k + 1], alone, rtol=1e-10, atol=1e-10)


def test_config_is_validated():
    with pytest.raises(ValueError, match="unknown activation"):
        WeaveConfig(activation="gelu2")
    with pytest.raises(ValueError, match="n_layers must be >= 1"):
        WeaveConfig(n_layers=0)
    with pytest.raises(ValueError, match="unknown fields"):
        WeaveConfig.from_json({"atom_hiden": 3})


def test_overfits_32_molecules(qm9_molecules):
    from molgraph.qm9_sources import iter_qm9pack_rows, molecule_from_qm9pack_row
    from molgraph.targets import compute_targets

    rows = [r for _, r in zip(range(32), iter_qm9pack_rows())]
    mols = [molecule_from_qm9pack_row(r) for r in rows]
    batch = collate([F(m) for m in mols])
    y = torch.tensor([compute_targets(m.properties, m.n_atoms)["alpha_bohr3"] for m in mols], dtype=torch.float32)
    yn = (y - y.mean()) / y.std()
    torch.manual_seed(0)
    net = WeaveNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 300)
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(net(batch.atom_features, batch.pair_features, batch.atom_mask)[:, 0], yn)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        mae = float((net(batch.atom_features, batch.pair_features, batch.atom_mask)[:, 0] * y.std() + y.mean() - y).abs().mean())
    assert mae < 0.01 * float((y - y.mean()).abs().mean()), mae  # near zero: under 1 % of the spread (0.2 % seen)


def test_lrp_through_weavenet_conserves_and_reaches_both_inputs(net, graphs):
    batch = collate([graphs[q] for q in (1000, 20332, 133885)])
    inputs = (batch.atom_features.double(), batch.pair_features.double(), batch.atom_mask)
    for composite in ("epsilon", "weave", "alpha2-beta1", "zero"):
        e = lrp.explain(net, inputs, composite, track_absorbed=True)
        ra, rp, rm = e.relevance
        assert rm is None and ra.shape == inputs[0].shape and rp.shape == inputs[1].shape
        assert float(e.conservation_error().max()) < 1e-9
        assert float(ra.abs().sum()) > 0 and float(rp.abs().sum()) > 0
        # padding receives no relevance
        pad = ~batch.atom_mask
        assert float(ra[pad].abs().sum()) == 0 and float(rp[pad].abs().sum()) == 0
