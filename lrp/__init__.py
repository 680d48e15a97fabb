"""lrp: layer-wise relevance propagation for any torch nn.Module (imports only torch).

    import lrp
    e = lrp.explain(model, (atoms, pairs), composite="epsilon")
    e.relevance            # one tensor per input
    e.conservation_error() # |sum(relevance) + absorbed - explained| per sample

Rules: lrp.rules.{Zero, Epsilon, Gamma, AlphaBeta, ZPlus, ZBox, WSquare, Flat, Pass, Rescale,
Norm, Product, Gradient}. `lrp.difference_relevance(stack, x, x0)`: the exact split of
f(x) - f(x0) for a feed-forward stack (DeepLIFT rescale), the reference rule above a pooling.
Composites: lrp.Composite, lrp.preset(name), presets 'epsilon',
'epsilon-plus', 'epsilon-gamma-box', 'alpha2-beta1', 'weave', 'zero'.
"""
from . import rules
from .composites import ENTRY_POINT_GROUP, Composite, preset, presets
from .core import Explanation, attached, explain
from .difference import difference_relevance

__all__ = ["rules", "Composite", "preset", "presets", "explain", "Explanation", "attached", "ENTRY_POINT_GROUP",
           "difference_relevance"]
