"""gcnn's GaussianHistogram rules on a WeaveNet: both named rules conserve (float64); 'rescale'
absorbs the reference part; the rule is selectable by name."""
import pytest
import torch

import lrp
from gcnn import WeaveConfig, WeaveNet
from gcnn.layers import GaussianHistogram
from gcnn.lrp_rules import DEFAULT_HISTOGRAM_RULE, HISTOGRAM_RULES, RULES, histogram_rule
from lrp import rules as R
from molgraph import MolecularGraphFeaturizer, collate

F = MolecularGraphFeaturizer()


@pytest.fixture(scope="module")
def setup(qm9_molecules):
    torch.manual_seed(0)
    net = WeaveNet(WeaveConfig(atom_hidden=16, pair_hidden=8, readout_hidden=12, head_hidden=(16,))).double().eval()
    graphs = [F(m) for m in list(qm9_molecules.values())[:4]]
    b = collate(graphs)
    return net, (b.atom_features.double(), b.pair_features.double(), b.atom_mask)


def _histogram_input(net, inputs):
    seen = {}

    def keep(module, inp, out):
        seen["x"] = inp[0].detach()

    h = net.histogram.register_forward_hook(keep)
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        h.remove()
    return seen["x"]


@pytest.mark.parametrize("name", sorted(HISTOGRAM_RULES))
@pytest.mark.parametrize("preset", ["epsilon", "weave"])
def test_histogram_rules_conserve(setup, name, preset):
    net, inputs = setup
    comp = lrp.preset(preset).with_rules({GaussianHistogram: histogram_rule(name)})
    e = lrp.explain(net, inputs, comp, track_absorbed=True)
    assert float(e.conservation_error().max()) < 1e-9
    assert float(e.relevance[0].abs().sum()) > 0 and float(e.relevance[1].abs().sum()) > 0


def test_rescale_moves_the_reference_part_into_the_absorbed_relevance(setup):
    """The batch has dead (0) and live readout features. Pass credits a live value with all its
    memberships' relevance; Rescale absorbs the part its memberships at 0 would carry
    (sum over bins of R_k m_k(0) / m_k(x), for every value), so the two differ in the input
    relevance and in what the histogram absorbs."""
    net, inputs = setup
    x = _histogram_input(net, inputs)
    assert bool((x == 0).any()) and bool((x > 0).any())
    e = {n: lrp.explain(net, inputs, lrp.preset("epsilon").with_rules({GaussianHistogram: histogram_rule(n)}),
                        track_absorbed=True) for n in ("pass", "rescale")}
    assert not torch.allclose(e["rescale"].relevance[0], e["pass"].relevance[0])
    assert float((e["rescale"].absorbed_by["histogram"] - e["pass"].absorbed_by["histogram"]).abs().min()) > 1e-6


def test_the_registered_rule_is_the_default_and_names_are_checked():
    hist = [r for t, r in RULES if t is GaussianHistogram]
    assert hist == [HISTOGRAM_RULES[DEFAULT_HISTOGRAM_RULE]]
    assert isinstance(HISTOGRAM_RULES["rescale"], R.Rescale) and HISTOGRAM_RULES["rescale"].reference == 0.0
    assert isinstance(HISTOGRAM_RULES["pass"], R.Pass)
    with pytest.raises(ValueError, match="unknown histogram rule 'nope'"):
        histogram_rule("nope")
