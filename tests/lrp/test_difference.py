"""lrp.difference_relevance: exact conservation of f(x) - f(x0) (a law: hypothesis), the literal
formula on a hand-sized net, and refusal of what is not a feed-forward stack."""
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import lrp


def _mlp(seed, sizes=(6, 5, 4, 2), act=nn.ReLU):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers[:-1]).double()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([nn.ReLU, nn.Tanh, nn.Softplus, nn.SiLU]), st.booleans())
def test_the_relevance_sums_to_the_weighted_output_difference(seed, act, zero_reference):
    net = _mlp(seed % 97, act=act)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 6, generator=g, dtype=torch.float64)
    x0 = torch.zeros(6, dtype=torch.float64) if zero_reference else torch.randn(1, 6, generator=g, dtype=torch.float64)
    w = torch.randn(7, 2, generator=g, dtype=torch.float64)
    r = lrp.difference_relevance(net, x, x0, w)
    with torch.no_grad():
        want = (w * (net(x) - net(x0.expand_as(x)))).sum(1)
    torch.testing.assert_close(r.sum(1), want, rtol=1e-10, atol=1e-10)


def test_the_formula_on_one_hidden_unit_that_switches_on():
    lin1, lin2 = nn.Linear(2, 1).double(), nn.Linear(1, 1).double()
    with torch.no_grad():
        lin1.weight[:] = torch.tensor([[2.0, -1.0]]); lin1.bias[:] = -1.0
        lin2.weight[:] = 3.0; lin2.bias[:] = 0.5
    net = nn.Sequential(lin1, nn.ReLU(), lin2)
    x, x0 = torch.tensor([[2.0, 1.0]], dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64)
    # z = 2*2 - 1 - 1 = 2 (on), z0 = -1 (off): secant (2 - 0) / (2 - (-1)) = 2/3; m = 3 * 2/3 * (2, -1)
    r = lrp.difference_relevance(net, x, x0)
    torch.testing.assert_close(r, torch.tensor([[2.0 * 4.0, 1.0 * -2.0]], dtype=torch.float64))
    with torch.no_grad():
        assert float(r.sum()) == pytest.approx(float(net(x) - net(x0))) == 6.0  # 6.5 - 0.5


def test_equal_inputs_get_no_relevance_and_other_modules_are_refused():
    net = _mlp(0)
    x = torch.randn(3, 6, dtype=torch.float64)
    assert torch.equal(lrp.difference_relevance(net, x, x), torch.zeros_like(x))
    with pytest.raises(TypeError, match="neither nn.Linear nor element-wise"):
        lrp.difference_relevance(nn.Sequential(nn.Linear(6, 4), nn.Unflatten(1, (2, 2))).double(), x, x[:1])
