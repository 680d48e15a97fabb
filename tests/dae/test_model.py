"""dae laws: tied weights are one parameter (count, shared storage, gradient = sum of the
encoder and decoder uses); literal loss formulas per feature kind; corruption per kind;
standardization; LRP through the tied layers conserves (float64)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dae
import lrp
from dae import Layout, Segment

LAYOUT = Layout((Segment("type", 0, 3, "categorical"), Segment("hyb", 3, 5, "categorical_or_none"),
                 Segment("flags", 5, 7, "binary"), Segment("x", 7, 9, "continuous")))


def _rows(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.nn.functional.one_hot(torch.randint(0, 3, (n,), generator=g), 3).float()
    h = torch.nn.functional.one_hot(torch.randint(0, 3, (n,), generator=g), 3)[:, :2].float()  # class 2 = none
    f = (torch.rand(n, 2, generator=g) > 0.5).float()
    x = torch.randn(n, 2, generator=g) * 3 + 5
    return torch.cat([t, h, f, x], 1)


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=2, max_size=4), act=st.sampled_from(["relu", "tanh", "softplus"]))
def test_tied_weights_are_one_parameter_and_get_both_gradients(sizes, act):
    torch.manual_seed(0)
    ae = dae.TiedAutoencoder(sizes, activation=act).double()
    # count: encoder weights and biases + the decoder's own biases only
    expected = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])) + sum(sizes[:-1])
    assert sum(p.numel() for p in ae.parameters()) == expected
    for k, lin in enumerate(ae.decoder[::2]):
        enc = ae.encoder[2 * (len(sizes) - 1 - k) - 1]
        assert lin.weight.data_ptr() == enc.weight.data_ptr() and torch.equal(lin.weight, enc.weight.t())
    # gradient of the tied weight = encoder-use gradient + (decoder-use gradient)^T of an untied copy
    x = torch.randn(7, sizes[0], dtype=torch.double)
    ae.zero_grad()
    (ae(x) ** 2).sum().backward()
    enc_w = [ae.encoder[2 * i + 1].weight.detach().clone().requires_grad_() for i in range(len(sizes) - 1)]
    dec_w = [w.detach().clone().t().contiguous().requires_grad_() for w in enc_w]
    acts = {"relu": torch.relu, "tanh": torch.tanh, "softplus": torch.nn.functional.softplus}[act]
    h = x
    for i, w in enumerate(enc_w):
        h = h @ w.t() + ae.encoder[2 * i + 1].bias
        h = acts(h) if i < len(enc_w) - 1 else h
    for k, w in enumerate(reversed(dec_w)):
        h = h @ w.t() + ae.decoder[2 * k].bias
        h = acts(h) if k < len(dec_w) - 1 else h
    (h ** 2).sum().backward()
    for i in range(len(enc_w)):
        assert torch.allclose(ae.encoder[2 * i + 1].weight.grad, enc_w[i].grad + dec_w[i].grad.t(), atol=1e-10)


def test_an_optimizer_step_keeps_the_decoder_tied():
    ae = dae.TiedAutoencoder((9, 6, 3), LAYOUT)
    opt = torch.optim.Adam(ae.parameters(), lr=0.1)
    sum(ae.losses(_rows(32)).values()).backward()
    opt.step()
    assert torch.equal(ae.decoder[0].weight, ae.encoder[3].weight.t())
    assert torch.equal(ae.decoder[2].weight, ae.encoder[1].weight.t())


def test_segment_losses_are_the_literal_formulas():
    z = torch.tensor([[2.0, 0.0, -1.0, 1.0, 0.5, 3.0, -2.0, 0.3, -0.4]])
    t = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.1, 0.2]])  # hyb: none
    got = dae.segment_losses(z, t, LAYOUT)
    ce = -math.log(math.exp(0) / (math.exp(2) + math.exp(0) + math.exp(-1)))
    ce_none = -math.log(1 / (math.exp(1.0) + math.exp(0.5) + 1))  # implied logit 0 for "none"
    bce = math.log(1 + math.exp(-3)) + math.log(1 + math.exp(-2))
    se = (0.3 - 0.1) ** 2 + (-0.4 - 0.2) ** 2
    assert got["categorical"].item() == pytest.approx(ce, rel=1e-6)
    assert got["categorical_or_none"].item() == pytest.approx(ce_none, rel=1e-6)
    assert got["binary"].item() == pytest.approx(bce, rel=1e-6)
    assert got["continuous"].item() == pytest.approx(se, rel=1e-6)
    # row weights: a zero-weight row changes nothing
    two = dae.segment_losses(torch.cat([z, z * 5]), torch.cat([t, t]), LAYOUT, torch.tensor([1.0, 0.0]))
    assert all(two[k].item() == pytest.approx(got[k].item(), rel=1e-6) for k in got)


def test_corruption_per_kind():
    x = _rows(2000)
    assert torch.equal(dae.corrupt(x, LAYOUT, 0.0, 0.0), x)
    full = dae.corrupt(x, LAYOUT, 0.9999999, 0.0)
    assert float(full[:, :7].abs().sum()) == 0 and torch.equal(full[:, 7:], x[:, 7:])
    half = dae.corrupt(x, LAYOUT, 0.5, 0.0, generator=torch.Generator().manual_seed(1))
    kept = half[:, :3].sum(1)  # a one-hot segment is masked whole: each row all there or all gone
    assert set(kept.unique().tolist()) == {0.0, 1.0} and 0.4 < float(kept.mean()) < 0.6
    noisy = dae.corrupt(x, LAYOUT, 0.0, 0.5, continuous_std=torch.full((9,), 2.0), generator=torch.Generator().manual_seed(2))
    assert torch.equal(noisy[:, :7], x[:, :7])
    assert float((noisy[:, 7:] - x[:, 7:]).std()) == pytest.approx(1.0, rel=0.05)  # 0.5 sd of std 2


def test_standardization_and_reconstruction_in_feature_units():
    ae = dae.TiedAutoencoder((9, 6, 3), LAYOUT)
    x = _rows(500)
    ae.fit_standardization(x)
    s = ae.standardize(x)
    assert torch.equal(s[:, :7], x[:, :7])
    assert torch.allclose(s[:, 7:].mean(0), torch.zeros(2), atol=1e-5) and torch.allclose(s[:, 7:].std(0, unbiased=False), torch.ones(2), atol=1e-4)
    r = ae.reconstruct(x)
    assert torch.equal(r[:, :3].sum(1), torch.ones(500)) and set(r[:, 3:5].sum(1).unique().tolist()) <= {0.0, 1.0}


def test_layout_validation_and_tiling():
    with pytest.raises(ValueError, match="gaps"):
        Layout((Segment("a", 0, 2, "binary"), Segment("b", 3, 4, "binary")))
    with pytest.raises(ValueError, match="unknown kind"):
        Segment("a", 0, 2, "ordinal")
    tiled = LAYOUT.tile(29) + LAYOUT.tile(406)
    assert tiled.n_features == 9 * 435 and len(tiled.segments) == 4 * 435
    assert len(tiled.runs()) == 4  # one gather per (kind, width), however many slots
    assert Layout.from_json(LAYOUT.to_json()) == LAYOUT


def test_lrp_explains_the_reconstruction_of_a_group_and_conserves():
    torch.manual_seed(0)
    ae = dae.TiedAutoencoder((9, 6, 3), LAYOUT, activation="relu").double().eval()
    ae.fit_standardization(_rows(200).double())
    x = _rows(16, seed=3).double()
    target = torch.zeros(16, 9, dtype=torch.bool)
    target[:, 0:3] = True  # the atom-type logits: which inputs does the autoencoder rebuild them from?
    e = lrp.explain(ae, (x,), "epsilon", target=target, track_absorbed=True)
    assert float(e.conservation_error().max()) < 1e-9
    assert float(e.relevance[0].abs().sum()) > 0


def test_graph_autoencoder_config_round_trip():
    g = dae.GraphAutoencoder(dae.TiedAutoencoder((21, 8, 4)), dae.TiedAutoencoder((13, 6, 2)))
    again = dae.GraphAutoencoder.from_config(g.config())
    again.load_state_dict(g.state_dict())
    enc = g.encoder()
    a, p = torch.randn(3, 5, 21), torch.randn(3, 5, 5, 13)
    ca, cp = enc(a, p)
    assert ca.shape == (3, 5, 4) and cp.shape == (3, 5, 5, 2)
    assert torch.equal(ca, again.atoms.encode(a)) and torch.equal(cp, again.pairs.encode(p))
    with pytest.raises(ValueError, match="atoms"):
        dae.GraphAutoencoder.from_config({"atoms": {}})


def test_neighbour_context_is_the_literal_sum_and_round_trips():
    torch.manual_seed(0)
    a = torch.randn(2, 4, 3)
    adj = torch.tensor([[0, 1, 0, 0], [1, 0, 1, 1], [0, 1, 0, 0], [0, 1, 0, 0]], dtype=torch.float32).expand(2, 4, 4)
    y = dae.NeighbourContext()(a, adj)
    assert torch.equal(y[..., :3], a)
    torch.testing.assert_close(y[:, 1, 3:], a[:, 0] + a[:, 2] + a[:, 3])
    torch.testing.assert_close(y[:, 0, 3:], a[:, 1])
    g = dae.GraphAutoencoder(dae.TiedAutoencoder((42, 8, 4)), dae.TiedAutoencoder((13, 6, 2)), {"adjacency_column": 4})
    again = dae.GraphAutoencoder.from_config(g.config())
    again.load_state_dict(g.state_dict())
    atoms, pairs = torch.randn(3, 5, 21), (torch.rand(3, 5, 5, 13) > 0.5).float()
    ca, cp = g.encoder()(atoms, pairs)
    assert ca.shape == (3, 5, 4) and torch.equal(ca, again.encode(atoms, pairs)[0])
    enc = dae.GraphEncoder.from_config(g.config())
    enc.load_state_dict(g.encoder().state_dict())
    assert torch.equal(enc(atoms, pairs)[0], ca)
    for bad in ({"adjacency_column": -1}, {"column": 4}, 4):
        with pytest.raises(ValueError, match="context"):
            dae.GraphAutoencoder(dae.TiedAutoencoder((42, 8, 4)), dae.TiedAutoencoder((13, 6, 2)), bad)
