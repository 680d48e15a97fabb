"""WeaveNet with per-atom heads for the whole frequency set (hydrogen layout): the X-H block from
the per-hydrogen head, the skeleton block from a per-atom head of 3 values per heavy atom and 2
per hydrogen. Laws: the skeleton block is literally the highest 3N - n_H - 5 of those values
sorted, zeros beyond; a hydrogen's third value never matters; invariance to atom order and
batch independence hold; LRP through the whole network (context projection included) conserves;
the trainer gives the skeleton outputs one scale."""
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gcnn
import lrp
from gcnn import WeaveConfig, WeaveNet
from gcnn.model import sorted_block
from molgraph import MolecularGraphFeaturizer, collate, qm9

from ..conftest import QM9_IDS

F = MolecularGraphFeaturizer()
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SMALL = dict(atom_hidden=12, pair_hidden=8, readout_hidden=10, head_hidden=(16,), n_outputs=81, xh_head=(8,))


@pytest.fixture(scope="module")
def graphs(qm9_molecules):
    return {q: F(m) for q, m in qm9_molecules.items()}


def _net(seed=0, context=6, residual=False):
    torch.manual_seed(seed)
    net = WeaveNet(WeaveConfig(skeleton_head=(8, 4), skeleton_context=context, skeleton_residual=residual,
                               **SMALL)).double().eval()
    with torch.no_grad():  # spread the per-atom values so that their order is not decided by round-off
        net.xh[-1].weight.mul_(50)
        net.skeleton[-1].weight.mul_(50)
    return net


def _x(batch):
    return batch.atom_features.double(), batch.pair_features.double(), batch.atom_mask


def test_sorted_block_literal_values():
    v = torch.tensor([[1.0, 5.0, 3.0, 9.0, 2.0], [4.0, 7.0, 0.5, 0.0, 0.0]])
    member = torch.tensor([[True, True, True, False, True], [True, True, True, False, False]])
    block = sorted_block(v, member, 4, torch.tensor([3, 5]))
    assert block.tolist() == [[5.0, 3.0, 2.0, 0.0], [7.0, 4.0, 0.5, 0.0]]  # keep is capped at the members
    assert sorted_block(v, member, 2, torch.tensor([3, 3])).tolist() == [[5.0, 3.0], [7.0, 4.0]]  # slots cut
    x = v.clone().requires_grad_(True)
    (sorted_block(x, member, 4, torch.tensor([2, 1])) * torch.arange(1.0, 5.0)).sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 2.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]]


def test_the_skeleton_block_is_the_atoms_values_sorted(graphs):
    ids = (1, 5, 23, 1000, 133885)
    batch = collate([graphs[q] for q in ids])
    net = _net()
    x = _x(batch)
    out = net(*x)
    assert out.shape == (5, 81) and net.head is None
    g, atoms = net.pooled(*x, with_atoms=True)
    ctx = net.context(g)
    for i, q in enumerate(ids):
        el = graphs[q].elements
        n = len(el)
        a = torch.cat([atoms[i, :n], ctx[i].expand(n, -1)], dim=-1)
        v = net.skeleton(a).detach().numpy()
        vals = np.concatenate([v[k, :2] if e == "H" else v[k] for k, e in enumerate(el)])
        n_h = el.count("H")
        assert len(vals) == 3 * n - n_h
        expect = np.sort(vals)[::-1][: 3 * n - n_h - 5]
        np.testing.assert_allclose(out[i, 20:20 + len(expect)].detach().numpy(), expect, rtol=0, atol=1e-12)
        assert (out[i, 20 + len(expect):] == 0).all()
        # a non-linear molecule's n - n_H skeletal modes are the highest 3N - n_H - 6 of them
        assert 3 * n - 6 - n_h == len(expect) - 1
    # the residual variant adds the molecule-level head's outputs to the same sorted values
    res = _net(residual=True)
    with torch.no_grad():
        for a, b in zip(res.parameters(), net.parameters()):
            if a.shape == b.shape:
                a.copy_(b)
    assert res.head is not None
    torch.testing.assert_close(res(*x)[:, 20:], out[:, 20:] + res.head(g), rtol=0, atol=1e-12)


def test_a_hydrogens_third_value_never_matters(graphs):
    batch = collate([graphs[q] for q in (23, 1000, 59818)])
    net = _net(2)
    base = net(*_x(batch))
    is_h = (batch.atom_features[..., 0] > 0.5) & batch.atom_mask.bool()

    def shift(mod, inp, out):
        bump = torch.zeros_like(out)
        bump[..., 2] = 1e3 * is_h.to(out.dtype)
        return out + bump

    h = net.skeleton.register_forward_hook(shift)
    try:
        torch.testing.assert_close(net(*_x(batch)), base, rtol=0, atol=0)
    finally:
        h.remove()


@SETTINGS
@given(q=st.sampled_from(QM9_IDS), seed=st.integers(0, 2 ** 16))
def test_invariant_to_atom_order(graphs, q, seed):
    g = graphs[q]
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(g.n_atoms))
    a, p, m = _x(collate([g]))
    net = _net(seed % 5)
    torch.testing.assert_close(net(a[:, perm], p[:, perm][:, :, perm], m[:, perm]), net(a, p, m), rtol=1e-10, atol=1e-10)


@SETTINGS
@given(ids=st.lists(st.sampled_from(QM9_IDS), min_size=2, max_size=5), context=st.sampled_from([0, 6]))
def test_batch_independence(graphs, ids, context):
    net = _net(1, context)
    together = net(*_x(collate([graphs[q] for q in ids])))
    for i, q in enumerate(ids):
        torch.testing.assert_close(together[i], net(*_x(collate([graphs[q]])))[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("context,residual", [(0, False), (6, False), (6, True)])
def test_lrp_through_the_per_atom_heads_conserves(graphs, context, residual):
    batch = collate([graphs[q] for q in (5, 23, 1000)])
    net = _net(3, context, residual)
    x = _x(batch)
    out = net(*x).detach()
    for w in (torch.ones_like(out), (torch.arange(81) >= 20).double().expand_as(out),
              (torch.arange(81) == 20).double().expand_as(out)):
        e = lrp.explain(net, x, "epsilon", target=out * w, track_absorbed=True)
        assert float(e.conservation_error().max()) < 1e-8
        assert float(e.explained.abs().min()) > 0
        assert float(e.relevance[0][~batch.atom_mask.bool()].abs().sum()) == 0  # padding atoms get nothing


def test_config_round_trip_and_refusals():
    c = WeaveConfig(xh_head=(8,), skeleton_head=(32, 16), skeleton_context=0, n_outputs=81)
    assert WeaveConfig.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert "skeleton_head" not in WeaveConfig(xh_head=(8,), n_outputs=81).to_json()
    with pytest.raises(ValueError, match="needs xh_head"):
        WeaveConfig(skeleton_head=(8,), n_outputs=81)
    with pytest.raises(ValueError, match="widths"):
        WeaveConfig(xh_head=(8,), skeleton_head=(0,), n_outputs=81)
    with pytest.raises(ValueError, match="needs skeleton_head"):
        WeaveConfig(xh_head=(8,), skeleton_residual=True, n_outputs=81)
    assert "skeleton_residual" not in c.to_json()
    r = WeaveConfig(xh_head=(8,), skeleton_head=(8,), skeleton_residual=True, n_outputs=81)
    assert WeaveConfig.from_json(json.loads(json.dumps(r.to_json()))) == r
    with pytest.raises(ValueError, match="skeleton_context"):
        WeaveConfig(xh_head=(8,), skeleton_head=(8,), skeleton_context=-1, n_outputs=81)
    with pytest.raises(ValueError, match="per-atom heads only"):
        gcnn.training.transfer_state(WeaveNet(c))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    ds = qm9.load(ids=list(range(1, 101)), cache_root=tmp_path_factory.mktemp("c"), workers=1, progress=False,
                  log=lambda m: None)
    ids = ds.ids
    return ds.subset(ids[:60]), ds.subset(ids[60:80]), ds.subset(ids[80:])


def test_training_shares_one_scale_per_block_and_predicts_sets(tmp_path, data, capsys):
    from qmlrp.cli import main

    train, val, test = data
    cfg = gcnn.TrainConfig(targets=("freqs_cm1",), epochs=2, batch_size=16, seed=0, set_layout="hydrogen")
    mc = WeaveConfig(**{**SMALL, "skeleton_head": (8,), "skeleton_context": 4})
    tr = gcnn.Trainer(tmp_path / "f", mc, cfg, log=lambda m: None, progress=False).fit(train, val)
    saved = json.loads((tmp_path / "f" / "config.json").read_text())
    mean, std = np.array(saved["mean"]), np.array(saved["std"])
    assert np.ptp(mean[:20]) == 0 and np.ptp(std[:20]) == 0 and 2600 < mean[0] < 3800
    assert np.ptp(mean[20:]) == 0 and np.ptp(std[20:]) == 0 and 500 < mean[20] < 2000
    assert saved["model"]["skeleton_head"] == [8] and saved["model"]["skeleton_context"] == 4
    p = gcnn.load(tmp_path / "f")
    sets, _ = p.predict_sets([test[i] for i in range(len(test))])
    true = [np.sort(test[i].targets["freqs_cm1"].numpy()) for i in range(len(test))]
    assert all(len(s) == len(t) and (np.diff(s) >= 0).all() for s, t in zip(sets, true))
    m = tr.evaluate(test)["targets"]["freqs_cm1"]
    assert m["mae"] == pytest.approx(np.concatenate([np.abs(s - t) for s, t in zip(sets, true)]).mean(), rel=1e-5)
    assert main(["train", "--target", "freqs_cm1", "--set-layout", "hydrogen", "--skeleton-head", "8", "--out",
                 str(tmp_path / "g")]) != 0
    assert "add --xh-head" in capsys.readouterr().err
