"""Rescale (reference-based rule for element-wise and one-to-many non-linear maps): the
literal formula against a slow float64 loop, zero relevance at the reference, conservation on
a weave-like net with a normalized Gaussian histogram, and the ReLU special case."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lrp
from lrp import rules as R

from .nets import WEAVE_RULES, NormalizedGaussian, WeaveHist, bins, weave_inputs

SETTINGS = settings(max_examples=30, deadline=None)


class HistHead(nn.Module):
    """x (B, N, F) -> normalized memberships (B, N, F, M) -> one linear output without bias
    (LRP-0 there: R_k = w_k y_k exactly, the relevance arriving at membership k)."""

    def __init__(self, n, f, m, seed):
        super().__init__()
        self.hist = NormalizedGaussian(m)
        self.flat = nn.Flatten()
        self.out = nn.Linear(n * f * m, 1, bias=False).double()
        with torch.no_grad():
            self.out.weight.copy_(torch.randn(1, n * f * m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))

    def forward(self, x):
        return self.out(self.flat(self.hist(x)))


def memberships(v, mu, width):
    p = [math.exp(-0.5 * ((v - c) / width) ** 2) for c in mu]
    s = sum(p)
    return [q / s for q in p]


def literal(x, w, mu, width, ref):
    """Slow loop: R_x = sum_k R_k (y_k - y0_k) / y_k with R_k = w_k y_k; absorbed =
    sum_k R_k y0_k / y_k, plus R_x where x = 0 (x * grad cannot carry it)."""
    b, n, f = x.shape
    m = len(mu)
    rel = torch.zeros(b, n, f, dtype=torch.float64)
    absorbed = torch.zeros(b, dtype=torch.float64)
    for s in range(b):
        for i in range(n):
            for j in range(f):
                y = memberships(float(x[s, i, j]), mu, width)
                y0 = memberships(float(ref[s, i, j]), mu, width)
                rx = 0.0
                for k in range(m):
                    r_k = float(w[(i * f + j) * m + k].detach()) * y[k]
                    rx += r_k * (y[k] - y0[k]) / y[k]
                    absorbed[s] += r_k * y0[k] / y[k]
                if float(x[s, i, j]) == 0.0:
                    absorbed[s] += rx
                else:
                    rel[s, i, j] = rx
    return rel, absorbed


@SETTINGS
@given(b=st.integers(1, 3), n=st.integers(1, 4), f=st.integers(1, 3), m=st.integers(2, 7),
       seed=st.integers(0, 10_000), ref=st.sampled_from([0.0, 0.4, -1.1, "tensor"]))
def test_rescale_matches_the_literal_formula(b, n, f, m, seed, ref):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, f, generator=g, dtype=torch.float64) * 1.2
    x[x.abs() < 0.3] = 0.0  # some values exactly 0, like ReLU-dead features
    if ref == "tensor":
        ref = torch.randn(1, n, f, generator=g, dtype=torch.float64)
    x.view(-1)[0] = float(torch.as_tensor(ref, dtype=torch.float64).reshape(-1)[0])  # one value at its reference
    net = HistHead(n, f, m, seed)
    rule = R.Rescale(reference=ref, expand=bins)
    comp = lrp.Composite(layer_map=((NormalizedGaussian, rule), (nn.Linear, R.Zero())))
    e = lrp.explain(net, x, comp, track_absorbed=True)
    want, want_absorbed = literal(x, net.out.weight[0], net.hist.mu.tolist(), net.hist.width,
                                  torch.as_tensor(ref, dtype=torch.float64).expand_as(x))
    torch.testing.assert_close(e.relevance, want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(e.absorbed_by["hist"], want_absorbed, rtol=1e-9, atol=1e-9)
    assert float(e.conservation_error().max()) < 1e-9
    assert float(e.relevance.reshape(-1)[0]) == 0.0  # x = reference: nothing moved


def test_value_at_the_reference_gets_zero_relevance_and_everything_is_absorbed():
    x = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    net = HistHead(2, 2, 5, seed=3)
    comp = lrp.Composite(layer_map=((NormalizedGaussian, R.Rescale(0.0, expand=bins)), (nn.Linear, R.Zero())))
    e = lrp.explain(net, x, comp, track_absorbed=True)
    assert float(e.relevance.abs().max()) == 0.0
    torch.testing.assert_close(e.absorbed, e.explained)
    # a non-zero reference and the value equal to it: zero too
    x2 = torch.full((1, 2, 2), 0.7, dtype=torch.float64)
    comp2 = lrp.Composite(layer_map=((NormalizedGaussian, R.Rescale(0.7, expand=bins)), (nn.Linear, R.Zero())))
    e2 = lrp.explain(net, x2, comp2, track_absorbed=True)
    assert float(e2.relevance.abs().max()) == 0.0
    torch.testing.assert_close(e2.absorbed, e2.explained)


def test_pass_credits_the_reference_value_rescale_does_not():
    """The point of the rule: with Pass a value's relevance includes the memberships that any
    value has; with Rescale two molecules whose value differs only by sign get opposite-signed
    credit relative to 0 when the head is odd in the memberships."""
    net = HistHead(1, 1, 5, seed=0)
    with torch.no_grad():  # head weights odd around the middle bin: f(-x) = -f(x), f(0) = 0
        net.out.weight.copy_(torch.tensor([[-2.0, -1.0, 0.0, 1.0, 2.0]], dtype=torch.float64))
    x = torch.tensor([[[0.8]], [[-0.8]]], dtype=torch.float64)
    resc = lrp.Composite(layer_map=((NormalizedGaussian, R.Rescale(0.0, expand=bins)), (nn.Linear, R.Zero())))
    e = lrp.explain(net, x, resc, track_absorbed=True)
    out = e.output.reshape(-1)
    # f(0) = 0, so the reference part is empty and x gets the whole output
    torch.testing.assert_close(e.relevance.reshape(-1), out)
    assert float(out[0]) > 0 > float(out[1])


@pytest.mark.parametrize("rule", [R.Epsilon(1e-6), R.Gamma(0.25), R.Zero()])
def test_conservation_on_a_weave_net_with_a_histogram(rule):
    torch.manual_seed(0)
    net = WeaveHist().double()
    atoms, pairs = weave_inputs(b=4, n=5)
    comp = lrp.Composite(layer_map=((nn.Linear, rule),)).with_rules(
        {**WEAVE_RULES, NormalizedGaussian: R.Rescale(0.0, expand=bins)})
    tracked = lrp.explain(net, (atoms, pairs), comp, track_absorbed=True)
    untracked = lrp.explain(net, (atoms, pairs), comp)
    assert float(tracked.conservation_error().max()) < 1e-10
    torch.testing.assert_close(tracked.absorbed, untracked.absorbed, rtol=1e-9, atol=1e-10)
    assert tracked.absorbed_by["gauss"].abs().sum() > 0  # the reference part is reported
    with torch.no_grad():
        r = net.relu_r(net.readout_in(net.add_a(
            net.relu_a(net.add_a(net.aa(net.relu_a0(net.atom_in(atoms))), net.pa(net.pair_sum(net.relu_p0(net.pair_in(pairs)))))),
            net.pair_sum(net.relu_p(net.add_p(net.both(net.ap(net.relu_a0(net.atom_in(atoms)))), net.pp(net.relu_p0(net.pair_in(pairs)))))))))
    assert bool((r == 0).any()) and bool((r > 0).any())  # the net has dead and live readout features


def test_elementwise_relu_with_reference_zero_equals_pass():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    base = lrp.Composite(layer_map=((nn.Linear, R.Epsilon(0.01)),))
    e_pass = lrp.explain(net, x, base.with_rules({nn.ReLU: R.Pass()}), track_absorbed=True)
    e_resc = lrp.explain(net, x, base.with_rules({nn.ReLU: R.Rescale(0.0)}), track_absorbed=True)
    torch.testing.assert_close(e_resc.relevance, e_pass.relevance, rtol=1e-12, atol=1e-12)
    assert float(e_resc.absorbed_by["1"].abs().max()) == 0.0


def test_one_to_many_map_without_expand_is_a_clear_error():
    net = HistHead(2, 2, 3, seed=0)
    comp = lrp.Composite(layer_map=((NormalizedGaussian, R.Rescale(0.0)), (nn.Linear, R.Zero())))
    with pytest.raises(TypeError, match="expand"):
        lrp.explain(net, torch.randn(1, 2, 2, dtype=torch.float64), comp)
