"""Perturbation curves: the mechanics (neutral values, start and end points, seeded random
orders, AOPC), on a small untrained weave network - whether LRP beats random on a real model
is measured by `qmlrp explain`, not asserted here."""
import numpy as np
import pytest
import torch

import gcnn
import lrp
from molgraph import MolecularGraphFeaturizer, collate
from qmlrp.explain import faithfulness as fa

from ..conftest import embed

SMALL = dict(atom_hidden=8, pair_hidden=8, readout_hidden=8, head_hidden=(8,))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = gcnn.WeaveNet(gcnn.WeaveConfig(**SMALL)).eval()
    f = MolecularGraphFeaturizer()
    graphs = [f(embed(s)) for s in ("CCO", "c1ccccc1O", "CC(=O)N", "FC(F)C#N")]
    rel = []
    for g in graphs:
        b = collate([g])
        e = lrp.explain(net, (b.atom_features, b.pair_features, b.atom_mask), "epsilon")
        rel.append((e.relevance[0][0].double().numpy(), e.relevance[1][0].double().numpy()))
    return net, graphs, rel


def _out(net, g):
    b = collate([g])
    with torch.no_grad():
        return float(net(b.atom_features, b.pair_features, b.atom_mask)[0, 0])


def test_masking_an_atom_is_deleting_it(setup):
    net, graphs, _ = setup
    g = graphs[1]
    keep = [k for k in range(g.n_atoms) if k not in (0, 3, 7)]
    b = collate([g])
    removed = torch.zeros_like(b.atom_mask)
    removed[0, [0, 3, 7]] = True
    with torch.no_grad():
        masked = float(net(*fa.remove_atoms(b.atom_features, b.pair_features, b.atom_mask, removed))[0, 0])
    assert np.isclose(masked, _out(net, g.permute(keep)), atol=1e-5)


def test_curves_start_at_zero_and_end_at_the_empty_molecule(setup):
    net, graphs, rel = setup
    res = fa.evaluate(net, graphs, rel, std=2.0, random_orders=3, seed=1, batch_size=3)
    raw = res["_raw"]
    base = np.array([_out(net, g) for g in graphs])
    empty = fa.empty_output(net)
    assert np.isclose(res["empty_output"], 2.0 * empty)
    for name, c in raw["atoms"].items():
        assert c.shape == (len(graphs), len(fa.FRACTIONS))
        assert np.all(c[:, 0] == 0), name  # nothing removed: no change
        expect = 2.0 * (base - empty)  # everything removed: the empty molecule
        assert np.allclose(c[:, -1], expect if name.endswith("signed") else np.abs(expect), atol=1e-5), name
    # all non-zero features at 0 is the molecule with all-zero features (atoms still present)
    zero_out = []
    for g in graphs:
        b = collate([g])
        with torch.no_grad():
            zero_out.append(float(net(torch.zeros_like(b.atom_features), torch.zeros_like(b.pair_features), b.atom_mask)[0, 0]))
    for name, c in raw["features"].items():
        assert np.all(c[:, 0] == 0), name
        expect = 2.0 * (base - np.array(zero_out))
        assert np.allclose(c[:, -1], expect if name.endswith("signed") else np.abs(expect), atol=1e-5), name
    a = res["aopc"]["atoms"]["signed"]
    assert np.isclose(a["lrp"], raw["atoms"]["lrp_signed"].mean())
    assert np.isclose(a["random_mean"], np.mean([raw["atoms"][f"random_{r}_signed"].mean() for r in range(3)]))
    assert np.isclose(a["lrp_over_random"], a["lrp"] / a["random_mean"])


def test_random_orders_are_seeded(setup):
    net, graphs, rel = setup
    r1 = fa.evaluate(net, graphs, rel, random_orders=2, seed=5)["_raw"]
    r2 = fa.evaluate(net, graphs, rel, random_orders=2, seed=5)["_raw"]
    r3 = fa.evaluate(net, graphs, rel, random_orders=2, seed=6)["_raw"]
    for kind in ("atoms", "features"):
        assert np.array_equal(r1[kind]["random_0_signed"], r2[kind]["random_0_signed"])
    assert not np.array_equal(r1["features"]["random_0_signed"], r3["features"]["random_0_signed"])
    assert not np.array_equal(r1["features"]["random_0_signed"], r1["features"]["random_1_signed"])


def test_order_follows_the_scores(setup):
    """Removing atoms in a given order removes exactly those atoms: one step on a 3-atom
    order equals masking the first atom of that order."""
    net, graphs, _ = setup
    g = graphs[0]
    order = np.array([4, 0, 2, 1, 3, 5, 6, 7, 8])[: g.n_atoms]
    q = 1.0 / g.n_atoms
    got = fa.atom_curves(net, [g], [order], fractions=(0.0, q))
    keep = [k for k in range(g.n_atoms) if k != order[0]]
    assert np.isclose(got[0, 1], _out(net, g.permute(keep)), atol=1e-5)


def test_feature_units_and_scores_pair_both_orders(setup):
    _, graphs, rel = setup
    g = graphs[2]
    u = fa.feature_units(g)
    a, p = g.atom_features.numpy(), g.pair_features.numpy()
    assert len(u["kind"]) == int((a != 0).sum() + (p != 0).sum() // 2)  # each unordered pair feature once
    assert np.all(u["i"][u["kind"] == 1] < u["j"][u["kind"] == 1])
    ra, rp = rel[2]
    s = fa.unit_scores(u, ra, rp)
    k = int(np.flatnonzero(u["kind"] == 1)[0])
    i, j, f = u["i"][k], u["j"][k], u["f"][k]
    assert np.isclose(s[k], rp[i, j, f] + rp[j, i, f])
    k = int(np.flatnonzero(u["kind"] == 0)[0])
    assert np.isclose(s[k], ra[u["i"][k], u["f"][k]])
    assert np.isclose(fa.atom_scores(ra, rp).sum(), ra.sum() + rp.sum())


def test_gradient_x_input_is_input_times_gradient_per_molecule(setup):
    """The baseline's gradient x input, batched and unpadded, is x * df/dx of the molecule alone."""
    net, graphs, _ = setup
    g = graphs[3]
    (ga, gp), = fa.gradient_x_input(net, [g])
    b = collate([g])
    a = b.atom_features.clone().requires_grad_(True)
    p = b.pair_features.clone().requires_grad_(True)
    net(a, p, b.atom_mask)[0, 0].backward()
    assert np.allclose(ga, (a.grad * a)[0].detach().numpy(), atol=1e-6)
    assert np.allclose(gp, (p.grad * p)[0].detach().numpy(), atol=1e-6)
