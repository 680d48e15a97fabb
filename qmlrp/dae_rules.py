"""LRP rules for the `dae` package's modules, registered with `lrp` through the
`qmlrp.lrp_rules` entry point (pyproject.toml), so that `dae` itself imports only torch.

- Standardize: (x - mean) / std per feature, element-wise -> relevance passes to x (Pass).
- TiedLinear: a linear map whose weight is another layer's transpose -> LRP-epsilon, like the
  Linear layers of the head (it exposes `weight` and `lrp_linear`, so any linear rule applies;
  map it with Composite.with_rules to choose another).
- NeighbourContext: [x_i, sum_j A_ij x_j] with A a constant of the molecule, linear in x ->
  the plain gradient (LRP-0 of a bias-free linear map: conserves, absorbs nothing).
"""
from lrp import rules

from dae import NeighbourContext, Standardize, TiedLinear

RULES = [
    (Standardize, rules.Pass()),
    (TiedLinear, rules.Epsilon()),
    (NeighbourContext, rules.Gradient()),
]
