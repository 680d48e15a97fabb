"""Agreement with captum and zennit on the layers and rules they support, within 1e-5
relative (float64). zennit is imported with stand-in torchvision modules (see peers.py):
no torchvision wheel loads against the CPU torch on these machines."""
import pytest
import torch
from torch import nn

import lrp
from lrp import rules as R

from .nets import mlp


def _model(bias):
    torch.manual_seed(0)
    return mlp((20, 16, 8, 1), bias=bias)


X = torch.randn(6, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("bias", [True, False])
def test_epsilon_and_gamma_agree_with_captum(bias):
    captum_attr = pytest.importorskip("captum.attr")
    from captum.attr._utils.lrp_rules import EpsilonRule, GammaRule

    for ours, theirs in ((R.Epsilon(1e-9), lambda: EpsilonRule(epsilon=1e-9)), (R.Gamma(0.25), lambda: GammaRule(gamma=0.25))):
        if isinstance(ours, R.Gamma) and bias:
            continue  # captum's GammaRule leaves the bias unchanged; ours adds gamma * b+ (Montavon et al. 2019)
        model = _model(bias)
        for m in model:
            if isinstance(m, nn.Linear):
                m.rule = theirs()
        ref = captum_attr.LRP(model).attribute(X.clone(), target=0)
        for m in model:
            if hasattr(m, "rule"):
                del m.rule
        e = lrp.explain(model, X, lrp.Composite(layer_map=((nn.Linear, ours),)))
        torch.testing.assert_close(e.relevance, ref.detach(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("which", ["epsilon", "zplus", "alpha2beta1", "gamma"])
def test_rules_agree_with_zennit(which):
    try:
        from .peers import import_zennit

        zennit = import_zennit()
    except Exception as exc:  # pragma: no cover - zennit not installed
        pytest.skip(f"zennit unavailable: {exc}")
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit import rules as Z

    ours, theirs = {
        "epsilon": (R.Epsilon(1e-6), Z.Epsilon(epsilon=1e-6)),
        # zennit stabilizes every denominator with 1e-6; ours only where the rule says so
        "zplus": (R.ZPlus(), Z.ZPlus(stabilizer=1e-30)),
        "alpha2beta1": (R.AlphaBeta(2, 1, bias=False), Z.AlphaBeta(alpha=2, beta=1, stabilizer=1e-30)),
        "gamma": (R.Gamma(0.25), Z.Gamma(gamma=0.25, stabilizer=1e-30)),
    }[which]
    model = _model(bias=False)
    comp = LayerMapComposite([(nn.Linear, theirs), (nn.ReLU, Z.Pass())])
    # z+, alpha-beta and gamma are defined for non-negative inputs (Montavon et al. 2019); the
    # engines extend them differently to negative first-layer inputs, so compare where they agree
    inputs = X if which == "epsilon" else X.abs()
    x = inputs.clone().requires_grad_(True)
    with Gradient(model=model, composite=comp) as attributor:
        out, ref = attributor(x, lambda output: output)  # zennit's start relevance is given directly
    e = lrp.explain(model, inputs, lrp.Composite(layer_map=((nn.Linear, ours),)))
    assert float(ref.abs().sum()) > 0
    torch.testing.assert_close(e.relevance, ref.detach(), rtol=1e-5, atol=1e-9)
