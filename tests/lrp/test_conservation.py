"""Conservation (hypothesis, float64): bias-free ReLU networks conserve relevance exactly under
LRP-0, z+, alpha-beta and gamma; with biases and stabilizers the accounting identity
sum(relevance) + absorbed = explained holds exactly. LRP-0 equals gradient x input."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lrp
from lrp import rules as R


def explain(*args, **kwargs):
    """lrp.explain with module-by-module absorbed relevance, so the identity is a real check."""
    return lrp.explain(*args, track_absorbed=True, **kwargs)

from .nets import cnn, mlp, weave_composite, weave_inputs, WeaveLike

SETTINGS = settings(max_examples=20, deadline=None)
CONSERVING = [R.Zero(), R.ZPlus(), R.AlphaBeta(2, 1), R.AlphaBeta(1, 0), R.Gamma(0.25), R.Gamma(1.0)]
ALL = CONSERVING + [R.Epsilon(0.1), R.Epsilon(1e-6)]


def _seeded(model, seed):
    torch.manual_seed(seed)
    for p in model.parameters():
        with torch.no_grad():
            p.copy_(torch.randn_like(p) * 0.5)
    return model


def degenerate(model, inputs, rule) -> bool:
    """True when some layer has a neuron z_k != 0 whose rule denominator vanishes: no positive
    contributions (z+, alpha-beta) or, for beta > 0, no negative ones. LRP cannot conserve
    there (the share is reported as absorbed); exact conservation is claimed elsewhere."""
    if not isinstance(rule, R.AlphaBeta):
        return False
    bad = []

    def hook(mod, inp, out):
        a = inp[0]
        f = R.linear_fn(mod)
        zp = f(a.clamp(min=0), mod.weight.clamp(min=0), None) + f(a.clamp(max=0), mod.weight.clamp(max=0), None)
        zn = f(a.clamp(min=0), mod.weight.clamp(max=0), None) + f(a.clamp(max=0), mod.weight.clamp(min=0), None)
        live = out != 0
        bad.append(bool(((zp == 0) & live).any()) or (rule.beta > 0 and bool(((zn == 0) & live).any())))

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in hs:
            h.remove()
    return any(bad)


def _composite(rule, types=(nn.Linear, nn.Conv2d)):
    return lrp.Composite(layer_map=((types, rule),))


@SETTINGS
@given(rule=st.sampled_from(CONSERVING), seed=st.integers(0, 10_000),
       sizes=st.lists(st.integers(1, 12), min_size=2, max_size=4))
def test_bias_free_mlp_conserves(rule, seed, sizes):
    model = _seeded(mlp((7, *sizes, 1), bias=False), seed)
    x = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    e = explain(model, x, _composite(rule))
    torch.testing.assert_close(e.total() + e.absorbed, e.output[:, 0], rtol=1e-9, atol=1e-12)
    if not degenerate(model, (x,), rule):
        torch.testing.assert_close(e.total(), e.output[:, 0], rtol=1e-9, atol=1e-12)
        assert float(e.absorbed.abs().max()) < 1e-12


@SETTINGS
@given(rule=st.sampled_from(CONSERVING), seed=st.integers(0, 10_000))
def test_bias_free_cnn_conserves(rule, seed):
    model = _seeded(cnn(bias=False), seed)
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    e = explain(model, x, _composite(rule))
    torch.testing.assert_close(e.total() + e.absorbed, e.output[:, 0], rtol=1e-9, atol=1e-12)
    if not degenerate(model, (x,), rule):
        torch.testing.assert_close(e.total(), e.output[:, 0], rtol=1e-9, atol=1e-12)


@SETTINGS
@given(rule=st.sampled_from(CONSERVING), seed=st.integers(0, 10_000), n=st.integers(2, 6))
def test_bias_free_weave_like_network_conserves_over_both_inputs(rule, seed, n):
    model = _seeded(WeaveLike(bias=False).double(), seed)
    atoms, pairs = weave_inputs(n=n, seed=seed)
    e = explain(model, (atoms, pairs), weave_composite(rule))
    ra, rp = e.relevance
    assert ra.shape == atoms.shape and rp.shape == pairs.shape
    torch.testing.assert_close(e.total() + e.absorbed, e.output[:, 0], rtol=1e-8, atol=1e-10)
    if not degenerate(model, (atoms, pairs), rule):
        torch.testing.assert_close(e.total(), e.output[:, 0], rtol=1e-8, atol=1e-10)
        assert float(ra.abs().sum()) > 0 and float(rp.abs().sum()) > 0  # both inputs receive relevance


@SETTINGS
@given(rule=st.sampled_from(ALL), seed=st.integers(0, 10_000), net=st.sampled_from(["mlp", "cnn", "weave"]))
def test_accounting_identity_with_biases(rule, seed, net):
    g = torch.Generator().manual_seed(seed)
    if net == "mlp":
        model, x, comp = _seeded(mlp(), seed), (torch.randn(4, 12, dtype=torch.float64, generator=g),), _composite(rule)
    elif net == "cnn":
        model, x, comp = _seeded(cnn(), seed), (torch.randn(4, 2, 6, 6, dtype=torch.float64, generator=g),), _composite(rule)
    else:
        model, x, comp = _seeded(WeaveLike().double(), seed), weave_inputs(seed=seed), weave_composite(rule)
    e = explain(model, x, comp)
    torch.testing.assert_close(e.explained, e.output[:, 0])
    scale = 1 + float(e.explained.abs().max())
    assert float(e.conservation_error().max()) < 1e-10 * scale
    # the per-module parts add up to the total
    torch.testing.assert_close(sum(e.absorbed_by.values()), e.absorbed)


def test_box_and_input_layer_rules_keep_the_identity():
    model = _seeded(mlp(), 3)
    x = torch.rand(6, 12, dtype=torch.float64) * 4 - 2
    for first in (R.ZBox(-2.0, 2.0), R.WSquare(), R.Flat()):
        comp = lrp.Composite(layer_map=((nn.Linear, R.Epsilon(0.01)),), first_layer=first)
        e = explain(model, x, comp)
        assert float(e.conservation_error().max()) < 1e-10
    e = explain(model, x, lrp.preset("epsilon-gamma-box", low=-2.0, high=2.0))
    assert float(e.conservation_error().max()) < 1e-10


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), net=st.sampled_from(["mlp", "cnn"]))
def test_lrp0_is_gradient_times_input_on_relu_networks(seed, net):
    model = _seeded(mlp() if net == "mlp" else cnn(), seed)
    shape = (4, 12) if net == "mlp" else (4, 2, 6, 6)
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    e = explain(model, x, "zero")
    torch.testing.assert_close(e.relevance, (x * grad).detach(), rtol=1e-12, atol=1e-14)


def test_target_reference_and_batch_independence():
    model = _seeded(mlp((12, 8, 3)), 1)
    x = torch.randn(5, 12, dtype=torch.float64)
    e1 = explain(model, x, "epsilon", target=1)
    torch.testing.assert_close(e1.explained, e1.output[:, 1])
    mask = torch.tensor([True, False, True])
    e2 = explain(model, x, "epsilon", target=mask)
    torch.testing.assert_close(e2.explained, e2.output[:, 0] + e2.output[:, 2])
    ref = torch.zeros_like(x)
    e3 = explain(model, x, "epsilon", target=0, reference=ref)
    torch.testing.assert_close(e3.explained, e3.output[:, 0] - model(ref).detach()[:, 0])
    assert float(e3.conservation_error().max()) < 1e-10
    alone = explain(model, x[2:3], "alpha2-beta1", target=1)
    batch = explain(model, x, "alpha2-beta1", target=1)
    torch.testing.assert_close(alone.relevance[0], batch.relevance[2])


def test_untracked_absorbed_equals_the_tracked_sum():
    model = _seeded(WeaveLike().double(), 5)
    inputs = weave_inputs(seed=5)
    for rule in ALL:
        fast = lrp.explain(model, inputs, weave_composite(rule))
        slow = explain(model, inputs, weave_composite(rule))
        torch.testing.assert_close(fast.absorbed, slow.absorbed, rtol=1e-9, atol=1e-10)
        for a, b in zip(fast.relevance, slow.relevance):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert fast.absorbed_by == {} and slow.absorbed_by
