"""WeaveNet with a per-hydrogen head (frequency sets, hydrogen layout): each X-H stretch is
predicted on its own hydrogen and the values, highest first, fill the X-H outputs. Laws: the X-H
block is literally the hydrogens' head values sorted, zeros beyond the molecule's hydrogens;
non-hydrogen atoms' head values never matter; invariance to atom order and batch independence
keep holding; LRP through the whole network conserves; the trainer gives every X-H output one
scale (sorting the standardized values sorts the frequencies)."""
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gcnn
import lrp
from gcnn import WeaveConfig, WeaveNet
from gcnn.model import hydrogen_block
from molgraph import MolecularGraphFeaturizer, collate, qm9

from ..conftest import QM9_IDS

F = MolecularGraphFeaturizer()
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SMALL = dict(atom_hidden=12, pair_hidden=8, readout_hidden=10, head_hidden=(16,), n_outputs=81)


@pytest.fixture(scope="module")
def graphs(qm9_molecules):
    return {q: F(m) for q, m in qm9_molecules.items()}


def _net(seed=0, xh=(8, 4)):
    torch.manual_seed(seed)
    net = WeaveNet(WeaveConfig(xh_head=xh, **SMALL)).double().eval()
    with torch.no_grad():  # spread the per-hydrogen values so that their order is not decided by round-off
        net.xh[-1].weight.mul_(50)
    return net


def _run(net, batch):
    return net(batch.atom_features.double(), batch.pair_features.double(), batch.atom_mask)


def test_hydrogen_block_literal_values():
    v = torch.tensor([[1.0, 5.0, 3.0, 9.0, 2.0], [4.0, 7.0, 0.5, 0.0, 0.0]])
    is_h = torch.tensor([[True, False, True, False, True], [False, True, True, False, False]])
    block = hydrogen_block(v, is_h, 4)
    assert block.tolist() == [[3.0, 2.0, 1.0, 0.0], [7.0, 0.5, 0.0, 0.0]]
    assert hydrogen_block(v, is_h, 7).shape == (2, 7)  # more slots than atoms: zero padded
    assert hydrogen_block(v, torch.zeros_like(is_h), 3).abs().sum() == 0  # no hydrogen: nothing
    # the gradient goes to each hydrogen's own value unchanged, nothing to the others
    x = v.clone().requires_grad_(True)
    (hydrogen_block(x, is_h, 4) * torch.arange(1.0, 5.0)).sum().backward()
    assert x.grad.tolist() == [[3.0, 0.0, 1.0, 0.0, 2.0], [0.0, 1.0, 2.0, 0.0, 0.0]]


def test_the_xh_block_is_the_hydrogens_head_values_sorted(graphs):
    batch = collate([graphs[q] for q in (1, 5, 23, 1000, 133885)])
    net = _net()
    out = _run(net, batch)
    assert out.shape == (5, 81)
    _, atoms = net.pooled(batch.atom_features.double(), batch.pair_features.double(), batch.atom_mask, with_atoms=True)
    per_atom = net.xh(atoms).squeeze(-1)
    for i, q in enumerate((1, 5, 23, 1000, 133885)):
        h = [k for k, e in enumerate(graphs[q].elements) if e == "H"]
        expect = np.sort(per_atom[i, h].detach().numpy())[::-1]
        np.testing.assert_allclose(out[i, : len(h)].detach().numpy(), expect, rtol=0, atol=1e-12)
        assert (out[i, len(h):20] == 0).all()
    # the other outputs are the molecule-level head's
    g = net.pooled(batch.atom_features.double(), batch.pair_features.double(), batch.atom_mask)
    torch.testing.assert_close(out[:, 20:], net.head(g), rtol=0, atol=0)


@SETTINGS
@given(q=st.sampled_from(QM9_IDS), seed=st.integers(0, 2 ** 16))
def test_invariant_to_atom_order(graphs, q, seed):
    g = graphs[q]
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(g.n_atoms))
    b = collate([g])
    a, p, m = b.atom_features.double(), b.pair_features.double(), b.atom_mask
    net = _net(seed % 7)
    ref = net(a, p, m)
    permuted = net(a[:, perm], p[:, perm][:, :, perm], m[:, perm])
    torch.testing.assert_close(permuted, ref, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(ids=st.lists(st.sampled_from(QM9_IDS), min_size=2, max_size=5))
def test_batch_independence(graphs, ids):
    net = _net(1)
    together = _run(net, collate([graphs[q] for q in ids]))
    for i, q in enumerate(ids):
        torch.testing.assert_close(together[i], _run(net, collate([graphs[q]]))[0], rtol=1e-10, atol=1e-10)


def test_non_hydrogen_head_values_never_matter(graphs):
    """Whatever the per-atom head gives a heavy atom, no output changes."""
    batch = collate([graphs[q] for q in (23, 1000, 59818)])
    net = _net(2)
    base = _run(net, batch)
    heavy = (batch.atom_features[..., 0] < 0.5) & batch.atom_mask.bool()  # atom_type_H is column 0
    assert heavy.any()

    def shift(mod, inp, out):
        return out + 1e3 * heavy[..., None].to(out.dtype)

    h = net.xh.register_forward_hook(shift)
    try:
        torch.testing.assert_close(_run(net, batch), base, rtol=0, atol=0)
    finally:
        h.remove()


def test_lrp_through_both_branches_conserves(graphs):
    from molgraph.features import ATOM_FEATURES

    assert ATOM_FEATURES.index("atom_type_H") == 0
    batch = collate([graphs[q] for q in (5, 23, 1000)])
    net = _net(3)
    x = (batch.atom_features.double(), batch.pair_features.double(), batch.atom_mask)
    out = net(*x).detach()
    for w in (torch.ones_like(out), (torch.arange(81) < 20).double().expand_as(out), (torch.arange(81) == 0).double().expand_as(out)):
        e = lrp.explain(net, x, "epsilon", target=out * w, track_absorbed=True)
        assert float(e.conservation_error().max()) < 1e-8
        assert float(e.explained.abs().min()) > 0
    # padding atoms get nothing
    e = lrp.explain(net, x, "epsilon", target=out * (torch.arange(81) == 0).double(), track_absorbed=True)
    pad = ~batch.atom_mask.bool()
    assert float(e.relevance[0][pad].abs().sum()) == 0


def test_config_round_trip_and_refusals():
    c = WeaveConfig(xh_head=(32,), n_outputs=81)
    assert WeaveConfig.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert "xh_head" not in WeaveConfig(n_outputs=81).to_json()  # configs from before stay as they were
    with pytest.raises(ValueError, match="xh_slots"):
        WeaveConfig(xh_head=(8,), n_outputs=1)
    with pytest.raises(ValueError, match="widths"):
        WeaveConfig(xh_head=(0,), n_outputs=81)
    with pytest.raises(ValueError, match="hydrogen layout"):
        gcnn.Trainer("unused", WeaveConfig(xh_head=(8,), n_outputs=81),
                     gcnn.TrainConfig(targets=("freqs_cm1",), set_layout="descending"), log=lambda m: None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    ds = qm9.load(ids=list(range(1, 101)), cache_root=tmp_path_factory.mktemp("c"), workers=1, progress=False,
                  log=lambda m: None)
    ids = ds.ids
    return ds.subset(ids[:60]), ds.subset(ids[60:80]), ds.subset(ids[80:])


def test_training_shares_one_scale_over_the_xh_outputs_and_predicts_sets(tmp_path, data):
    train, val, test = data
    cfg = gcnn.TrainConfig(targets=("freqs_cm1",), epochs=2, batch_size=16, seed=0, set_layout="hydrogen")
    mc = WeaveConfig(**{**SMALL, "xh_head": (8,)})
    tr = gcnn.Trainer(tmp_path / "f", mc, cfg, log=lambda m: None, progress=False).fit(train, val)
    saved = json.loads((tmp_path / "f" / "config.json").read_text())
    mean, std = np.array(saved["mean"]), np.array(saved["std"])
    assert np.ptp(mean[:20]) == 0 and np.ptp(std[:20]) == 0 and 2600 < mean[0] < 3800
    assert np.ptp(mean[20:]) > 100  # the skeleton outputs keep their own scales
    assert saved["model"]["xh_head"] == [8]
    p = gcnn.load(tmp_path / "f")
    sets, _ = p.predict_sets([test[i] for i in range(len(test))])
    true = [np.sort(test[i].targets["freqs_cm1"].numpy()) for i in range(len(test))]
    assert all(len(s) == len(t) and (np.diff(s) >= 0).all() for s, t in zip(sets, true))
    m = tr.evaluate(test)["targets"]["freqs_cm1"]
    assert m["mae"] == pytest.approx(np.concatenate([np.abs(s - t) for s, t in zip(sets, true)]).mean(), rel=1e-5)
