"""LRP rules for gcnn's modules, registered with `lrp` through the `qmlrp.lrp_rules` entry
point (pyproject.toml); gcnn itself never imports lrp.

- PairSum, AtomSum, BothOrders, Add: parameter-free linear maps -> proportional split (Norm).
- Mask: the mask is a constant 0/1 factor -> relevance passes element-wise to the masked tensor (Pass).
- GaussianHistogram: one-to-many map of a feature value x to its 11 memberships. Two rules,
  named in HISTOGRAM_RULES (qmlrp explain --histogram-rule):
  'pass': the memberships' relevance returns whole to x (Pass with expansion over the bins);
      it credits x with the memberships' presence against no membership at all, which a
      ReLU-dead feature x = 0 has too (the memberships sum to 1 whatever x is);
  'rescale': relative to the reference x0 = 0 (a ReLU-dead feature), x receives
      sum_k R_k (m_k(x) - m_k(0)) / m_k(x), the effect of its value; the rest,
      sum_k R_k m_k(0) / m_k(x), is absorbed (Rescale).
  DEFAULT_HISTOGRAM_RULE ('rescale') is the one RULES registers; 'pass' stays reachable
  (`qmlrp explain --histogram-rule pass`, or Composite.with_rules({GaussianHistogram:
  HISTOGRAM_RULES['pass']})).
- FlattenGraph (gcnn.flat): a selection of input entries -> the plain gradient (Gradient) returns
  each entry's relevance to it.
- PaddingSlots (gcnn.flat): the flat network's empty slots -> relevance of real slots passes to
  them, that of empty slots is absorbed (reported under the module's name, 'padding').
"""
from dataclasses import dataclass

import torch
from lrp import rules

from .flat import FlattenGraph, PaddingSlots
from .layers import Add, AtomSum, BothOrders, GaussianHistogram, Mask, PairSum


def _bins(x, y):
    return x.unsqueeze(-1).expand_as(y)


HISTOGRAM_RULES = {
    "pass": rules.Pass(expand=_bins),
    "rescale": rules.Rescale(reference=0.0, expand=_bins),
}
# 'rescale' since the faithfulness comparison in docs/explain.md (alpha model, 2,000 test
# molecules): removing features in its order moves the prediction the way its signs say
# (signed feature AOPC 1.6x random, 0.14x with 'pass')
DEFAULT_HISTOGRAM_RULE = "rescale"


def histogram_rule(name: str):
    """The GaussianHistogram rule called `name` (a key of HISTOGRAM_RULES)."""
    try:
        return HISTOGRAM_RULES[name]
    except KeyError:
        raise ValueError(f"unknown histogram rule {name!r}; valid: {', '.join(HISTOGRAM_RULES)}") from None


@dataclass(frozen=True, repr=False)
class Slots(rules.Rule):
    """y = where(slots, x, constant): R_x = R_y on the slots, 0 elsewhere; the relevance of the
    other entries (and of a slot where x = 0) is absorbed by the module."""

    def apply(self, module, inputs, output, ctx):
        x, slots = inputs[0], inputs[1]
        yd = output.detach()

        def back(g):
            r = g * yd
            keep = slots & (x.detach() != 0)
            gx = torch.where(keep, rules.safe_divide(r, x.detach()), torch.zeros_like(r))
            if ctx.track:
                ctx.add_absorbed(module, r.masked_fill(keep, 0.0).reshape(r.shape[0], -1).sum(1))
            return None, gx

        return rules.route(back, output, x)


RULES = [
    ((PairSum, AtomSum, BothOrders, Add), rules.Norm()),
    (Mask, rules.Pass()),
    (GaussianHistogram, HISTOGRAM_RULES[DEFAULT_HISTOGRAM_RULE]),
    (FlattenGraph, rules.Gradient()),
    (PaddingSlots, Slots()),
]
