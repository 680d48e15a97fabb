"""Every rule against a slow, literal implementation of its formula, in float64, on random
layers of random sizes (hypothesis)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lrp
from lrp import rules as R


def explain(*args, **kwargs):
    """lrp.explain with module-by-module absorbed relevance, so the identity is a real check."""
    return lrp.explain(*args, track_absorbed=True, **kwargs)

SETTINGS = settings(max_examples=30, deadline=None)


def literal(rule, a, w, b, r_out):
    """R_j for one sample from the textbook formulas with explicit loops over j and k.
    a (J,), w (K, J), b (K,), r_out (K,)."""
    J, K = a.shape[0], w.shape[0]
    out = torch.zeros(J, dtype=torch.float64)
    c = [[a[j] * w[k, j] for j in range(J)] for k in range(K)]
    for k in range(K):
        z = sum(c[k]) + b[k]
        for j in range(J):
            if isinstance(rule, R.Zero):
                m = c[k][j] / z
            elif isinstance(rule, R.Epsilon):
                m = c[k][j] / (z + rule.epsilon * (1 if z >= 0 else -1))
            elif isinstance(rule, R.Gamma):
                wg = [w[k, i] + rule.gamma * max(w[k, i], 0) for i in range(J)]
                m = a[j] * wg[j] / (sum(a[i] * wg[i] for i in range(J)) + b[k] + rule.gamma * max(b[k], 0))
            elif isinstance(rule, R.ZPlus):
                pos = [max(c[k][i], 0) for i in range(J)]
                m = pos[j] / sum(pos) if sum(pos) != 0 else 0
            elif isinstance(rule, R.AlphaBeta):
                pos = sum(max(c[k][i], 0) for i in range(J)) + max(b[k], 0)
                neg = sum(min(c[k][i], 0) for i in range(J)) + min(b[k], 0)
                m = (rule.alpha * max(c[k][j], 0) / pos if pos != 0 else 0) - (rule.beta * min(c[k][j], 0) / neg if neg != 0 else 0)
            elif isinstance(rule, R.ZBox):
                cb = [a[i] * w[k, i] - rule.low * max(w[k, i], 0) - rule.high * min(w[k, i], 0) for i in range(J)]
                m = cb[j] / (sum(cb) + b[k])
            elif isinstance(rule, R.WSquare):
                m = w[k, j] ** 2 / sum(w[k, i] ** 2 for i in range(J))
            elif isinstance(rule, R.Flat):
                m = 1.0 / J
            out[j] += m * r_out[k]
    return out


RULES = [R.Zero(), R.Epsilon(0.3), R.Gamma(0.25), R.ZPlus(), R.AlphaBeta(2, 1), R.AlphaBeta(1, 0),
         R.ZBox(-2.0, 3.0), R.WSquare(), R.Flat()]


@SETTINGS
@given(rule=st.sampled_from(RULES), j=st.integers(1, 7), k=st.integers(1, 6), b=st.integers(1, 3),
       seed=st.integers(0, 10_000), positive=st.booleans())
def test_linear_rules_match_their_formula(rule, j, k, b, seed, positive):
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(j, k).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(k, j, generator=g, dtype=torch.float64))
        layer.bias.copy_(torch.randn(k, generator=g, dtype=torch.float64))
    a = torch.randn(b, j, generator=g, dtype=torch.float64)
    if positive or isinstance(rule, R.Gamma):  # gamma is defined for a >= 0 (after ReLU)
        a = a.abs()
    r_out = torch.randn(b, k, generator=g, dtype=torch.float64)
    e = explain(layer, a, lrp.Composite(layer_map=((nn.Linear, rule),)), target=r_out)
    for s in range(b):
        ref = literal(rule, a[s], layer.weight.detach(), layer.bias.detach(), r_out[s])
        torch.testing.assert_close(e.relevance[s], ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(e.conservation_error(), torch.zeros(b, dtype=torch.float64), atol=1e-10, rtol=0)


def _dense(conv, shape):
    """The conv's weight as a dense (out, in) matrix and its bias per output position."""
    n = int(torch.tensor(shape).prod())
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    cols = conv._conv_forward(eye, conv.weight, None).reshape(n, -1)
    out_shape = conv(torch.zeros(1, *shape, dtype=torch.float64)).shape[1:]
    bias = conv.bias.detach()[:, None, None].expand(out_shape).reshape(-1)
    return cols.T.detach(), bias, out_shape


@settings(max_examples=15, deadline=None)
@given(rule=st.sampled_from([R.Zero(), R.Epsilon(0.1), R.Gamma(0.5), R.ZPlus(), R.AlphaBeta(2, 1), R.WSquare(), R.Flat()]),
       seed=st.integers(0, 10_000))
def test_conv_rules_match_the_formula_on_the_dense_equivalent(rule, seed):
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(2, 3, 2).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64))
        conv.bias.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    shape = (2, 3, 3)
    a = torch.rand(2, *shape, generator=g, dtype=torch.float64)
    w, bias, out_shape = _dense(conv, shape)
    r_out = torch.randn(2, *out_shape, generator=g, dtype=torch.float64)
    e = explain(conv, a, lrp.Composite(layer_map=((nn.Conv2d, rule),)), target=r_out)
    for s in range(2):
        ref = literal(rule, a[s].reshape(-1), w, bias, r_out[s].reshape(-1))
        if isinstance(rule, R.Flat):  # a conv output sees only its receptive field: 1 / n_k
            conn = (w != 0).double()
            ref = (conn / conn.sum(1, keepdim=True) * r_out[s].reshape(-1, 1)).sum(0)
        torch.testing.assert_close(e.relevance[s].reshape(-1), ref, rtol=1e-9, atol=1e-10)


def test_pass_norm_and_product_rules():
    class Mul(nn.Module):
        def forward(self, u, v):
            return u * v

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mul = Mul()

        def forward(self, u, v):
            return self.mul(u, v).sum(1, keepdim=True)

    u = torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
    v = torch.tensor([[0.5, 4.0, -1.0]], dtype=torch.float64)
    for mode, (fu, fv) in {"half": (0.5, 0.5), "first": (1.0, 0.0), "second": (0.0, 1.0)}.items():
        e = explain(Net(), (u, v), lrp.Composite().with_rules({Mul: R.Product(mode)}))
        torch.testing.assert_close(e.relevance[0], fu * u * v)
        torch.testing.assert_close(e.relevance[1], fv * u * v)
    # Pass through tanh: relevance unchanged element-wise
    x = torch.tensor([[0.5, -1.5, 2.0]], dtype=torch.float64)
    net = nn.Sequential(nn.Tanh())
    e = explain(net, x, "epsilon")
    torch.testing.assert_close(e.relevance, torch.tanh(x))
    # Norm with a stabilizer keeps eps-share, reported as absorbed
    class S(nn.Module):
        def forward(self, x):
            return x.sum(1, keepdim=True)

    e = explain(S(), x, lrp.Composite().with_rules({S: R.Norm(0.5)}))
    total = x.sum()
    torch.testing.assert_close(e.relevance, x / (total + 0.5) * total)
    torch.testing.assert_close(e.conservation_error(), torch.zeros(1, dtype=torch.float64))


@pytest.mark.parametrize("make, message", [
    (lambda: R.AlphaBeta(2, 2), "alpha - beta = 1"),
    (lambda: R.AlphaBeta(0.5, -0.5), "beta >= 0"),
    (lambda: R.Epsilon(-1), "epsilon >= 0"),
    (lambda: R.Gamma(-0.1), "gamma >= 0"),
    (lambda: R.ZBox(1, -1), "low <= high"),
    (lambda: R.Product("all"), "mode must be"),
])
def test_rule_parameters_are_validated(make, message):
    with pytest.raises(ValueError, match=message):
        make()
