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
    with pytest.raises(ValueError, match="unknown readout_activation 'gelu2'"):
        WeaveConfig(readout_activation="gelu2")


def test_readout_activation_is_recorded_only_when_set_and_builds_that_module():
    assert "readout_activation" not in WeaveConfig().to_json()  # configs from before it stay as they were
    assert isinstance(WeaveNet(WeaveConfig()).readout_act, torch.nn.ReLU)  # None: the network's activation
    for name, kind in (("tanh", torch.nn.Tanh), ("identity", torch.nn.Identity)):
        c = WeaveConfig(readout_activation=name)
        assert WeaveConfig.from_json(c.to_json()) == c and c.to_json()["readout_activation"] == name
        assert isinstance(WeaveNet(c).readout_act, kind)


@pytest.mark.parametrize("readout", ["tanh", "identity"])
def test_lrp_conserves_with_a_readout_that_feeds_the_histogram_negative_values(graphs, readout):
    torch.manual_seed(0)
    net = WeaveNet(WeaveConfig(atom_hidden=16, pair_hidden=8, readout_hidden=12, head_hidden=(16,),
                               readout_activation=readout)).double().eval()
    batch = collate([graphs[q] for q in (1000, 20332, 133885)])
    inputs = (batch.atom_features.double(), batch.pair_features.double(), batch.atom_mask)
    h = net.readout_act(net.readout(net._pooled(*inputs[:2], *net.masks(batch.atom_mask), with_atoms=True)[1]))
    assert float((h[batch.atom_mask.bool()] < 0).float().mean()) > 0.2  # the bins below 0 are reached
    for composite in ("epsilon", "weave", "alpha2-beta1"):
        e = lrp.explain(net, inputs, composite, track_absorbed=True)
        assert float(e.conservation_error().max()) < 1e-9
        assert float(e.relevance[0].abs().sum()) > 0 and float(e.relevance[1].abs().sum()) > 0


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


class _module_path:
    """No-op forward hooks on the histogram and on the last pair update select the module-by-module
    path (LRP's hooks do the same)."""

    def __init__(self, net):
        self.handles = [net.histogram.register_forward_hook(lambda *a: None),
                        net.layers[-2].pp.register_forward_hook(lambda *a: None)]

    def remove(self):
        for h in self.handles:
            h.remove()


@SETTINGS
@given(ids=st.lists(st.sampled_from(QM9_IDS), min_size=1, max_size=8), pad=st.integers(0, 3),
       scale=st.floats(0.1, 30.0), n_layers=st.integers(2, 3), readout=st.sampled_from([None, "identity"]))
def test_fused_readout_and_pair_update_are_the_module_path_in_value_and_gradient(graphs, ids, pad, scale, n_layers,
                                                                                  readout):
    # scale widens the readout's values: large ones push memberships below e^-80 (the clamp);
    # without an activation the histogram gets negative values too
    torch.manual_seed(1)
    net = WeaveNet(n_layers=n_layers, readout_activation=readout).double()
    with torch.no_grad():
        net.readout.weight.mul_(scale)
    gs = [graphs[i] for i in ids]
    b = collate(gs, pad_to=max(g.n_atoms for g in gs) + pad)
    results = []
    for module_path in (False, True):
        hooks = _module_path(net) if module_path else None
        a = b.atom_features.double().requires_grad_()
        p = b.pair_features.double().requires_grad_()
        y = net(a, p, b.atom_mask)
        weights = torch.linspace(-1, 2, y.numel(), dtype=y.dtype).view_as(y)
        grads = torch.autograd.grad((y * weights).sum(), (a, p, *net.parameters()))
        results.append((y.detach(), *grads))
        if hooks:
            hooks.remove()
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-10)  # the outputs
    for fused, modules in zip(results[0][1:], results[1][1:]):  # gradients: sums of many terms, to their scale
        torch.testing.assert_close(fused, modules, rtol=1e-10, atol=1e-10 * max(1.0, float(modules.abs().max())))


def test_fused_paths_keep_their_chunks_read_only_and_skip_them_without_gradients(graphs):
    # the fused functions keep their forward chunks for backward: a retained graph must give the
    # same gradient twice, and under no_grad the output must not change
    torch.manual_seed(3)
    net = WeaveNet().double()
    gs = [graphs[i] for i in QM9_IDS[:5]]
    b = collate(gs, pad_to=max(g.n_atoms for g in gs) + 2)
    a = b.atom_features.double().requires_grad_()
    y = net(a, b.pair_features.double(), b.atom_mask)
    first = torch.autograd.grad(y.sum(), (a, *net.parameters()), retain_graph=True)
    second = torch.autograd.grad(y.sum(), (a, *net.parameters()))
    for g1, g2 in zip(first, second):
        torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(net(b.atom_features.double(), b.pair_features.double(), b.atom_mask), y.detach(),
                                   rtol=0, atol=0)


def test_fused_readout_matches_on_qm9_batches_and_trains_the_same_weights(tmp_path):
    from molgraph import qm9

    ds = qm9.load(ids=range(1, 301), cache_root=tmp_path, workers=1, progress=False, log=lambda m: None)
    torch.manual_seed(2)
    nets = [WeaveNet().double() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    hook = _module_path(nets[1])
    opts = [torch.optim.SGD(n.parameters(), lr=1e-3) for n in nets]
    for start in range(0, len(ds), 100):
        b = ds.batch(range(start, min(start + 100, len(ds))))
        for n, o in zip(nets, opts):
            y = n(b.atom_features.double(), b.pair_features.double(), b.atom_mask)
            o.zero_grad()
            ((y[:, 0] - b.targets["alpha_bohr3"]) ** 2).mean().backward()
            o.step()
    hook.remove()
    for (k, v0), v1 in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        torch.testing.assert_close(v0, v1, rtol=1e-10, atol=1e-10, msg=k)


def test_lrp_sees_every_readout_module(graphs):
    """Under LRP the hooks select the module path: the histogram's rule is applied (it absorbs)."""
    torch.manual_seed(0)
    net = WeaveNet().double().eval()
    b = collate([graphs[q] for q in QM9_IDS[:6]])
    e = lrp.explain(net, (b.atom_features.double(), b.pair_features.double(), b.atom_mask), composite="epsilon",
                    track_absorbed=True)
    assert "histogram" in e.absorbed_by
    assert float(e.conservation_error().max()) < 1e-8
