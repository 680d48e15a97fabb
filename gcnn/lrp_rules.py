"""LRP rules for gcnn's modules, registered with `lrp` through the `qmlrp.lrp_rules` entry
point (pyproject.toml); gcnn itself never imports lrp.

- PairSum, AtomSum, BothOrders, Add: parameter-free linear maps -> proportional split (Norm).
- Mask: the mask is a constant 0/1 factor -> relevance passes element-wise to the masked tensor (Pass).
- GaussianHistogram: one-to-many map of a feature value to its 11 memberships -> the
  memberships' relevance returns to the value (Pass with expansion over the bins).
"""
from lrp import rules

from .layers import Add, AtomSum, BothOrders, GaussianHistogram, Mask, PairSum


def _bins(x, y):
    return x.unsqueeze(-1).expand_as(y)


RULES = [
    ((PairSum, AtomSum, BothOrders, Add), rules.Norm()),
    (Mask, rules.Pass()),
    (GaussianHistogram, rules.Pass(expand=_bins)),
]
