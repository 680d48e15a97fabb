"""Composites: which rule each module gets.

Resolution for a module (first hit wins):
1. `name_map`: exact module name, or a glob pattern (fnmatch) over the qualified name;
2. `layer_map`: ordered (module types, rule) pairs, first isinstance match;
3. plugins: rules that other packages register for their own module types through the
   `qmlrp.lrp_rules` entry-point group (each entry point loads a list of (types, rule) pairs,
   or a callable returning one);
4. the preset's defaults (activations -> Pass, pooling -> Norm / Gradient, ...).
A leaf module that gets no rule is an error when it has parameters or is not known to be safe
for the plain gradient (Identity, Dropout, Flatten...). Composites are immutable:
`with_rules` / `with_names` return new ones. Nothing global is mutated.
"""
from __future__ import annotations

import fnmatch
import importlib.metadata
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Mapping, Sequence

from torch import nn

from . import rules as R

ENTRY_POINT_GROUP = "qmlrp.lrp_rules"

LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Softplus, nn.Tanh,
               nn.Sigmoid, nn.Hardtanh, nn.ReLU6, nn.Mish)
SUM_POOLING = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
MAX_POOLING = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
# Leaf modules through which the plain gradient is exact LRP (identity-like reshapes, eval dropout).
GRADIENT_SAFE = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Flatten, nn.Unflatten)

LayerMap = Sequence[tuple[type | tuple[type, ...], R.Rule]]


def _base_defaults() -> list:
    return [(ACTIVATIONS, R.Pass()), (SUM_POOLING, R.Norm()), (MAX_POOLING, R.Gradient())]


@lru_cache(maxsize=1)
def plugin_rules() -> tuple:
    """(types, rule) pairs from the `qmlrp.lrp_rules` entry points, loaded once."""
    out = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break every explanation
            warnings.warn(f"lrp: skipping rule plugin {ep.name!r} ({ep.value}): {type(exc).__name__}: {exc}")
            continue
        pairs = obj() if callable(obj) else obj
        out.extend((tuple(t) if isinstance(t, (list, tuple)) else t, r) for t, r in pairs)
    return tuple(out)


@dataclass(frozen=True)
class Composite:
    """Maps modules to rules. See the module docstring for the resolution order.

    Args:
        layer_map: ordered (types, rule) pairs; first isinstance match wins.
        name_map: {name or glob pattern: rule}; wins over types.
        defaults: the fallback map (a preset's own choices); activations, pooling included.
        first_layer: optional rule for the first module with parameters (in module order),
            e.g. ZBox for bounded inputs; name_map still wins.
        plugins: consult the `qmlrp.lrp_rules` entry points.
        strict: a leaf module without a rule raises (default); otherwise it gets the plain
            gradient.
    """

    layer_map: tuple = ()
    name_map: Mapping[str, R.Rule] = field(default_factory=dict)
    defaults: tuple = field(default_factory=lambda: tuple(_base_defaults()))
    first_layer: R.Rule | None = None
    plugins: bool = True
    strict: bool = True
    name: str = "custom"

    def __post_init__(self):
        for types, rule in (*self.layer_map, *self.defaults):
            if not isinstance(rule, R.Rule):
                raise TypeError(f"layer_map entries must be (types, Rule), got rule {rule!r}")
            for t in types if isinstance(types, tuple) else (types,):
                if not (isinstance(t, type) and issubclass(t, nn.Module)):
                    raise TypeError(f"layer_map types must be nn.Module subclasses, got {t!r}")
        for key, rule in self.name_map.items():
            if not isinstance(rule, R.Rule):
                raise TypeError(f"name_map[{key!r}] must be a Rule, got {rule!r}")
        object.__setattr__(self, "layer_map", tuple(self.layer_map))
        object.__setattr__(self, "defaults", tuple(self.defaults))

    # immutable updates
    def with_rules(self, pairs: LayerMap | Mapping[type, R.Rule]) -> "Composite":
        """New composite whose layer_map starts with these (types, rule) pairs."""
        pairs = list(pairs.items()) if isinstance(pairs, Mapping) else list(pairs)
        return Composite(tuple(pairs) + self.layer_map, dict(self.name_map), self.defaults, self.first_layer,
                         self.plugins, self.strict, self.name)

    def with_names(self, names: Mapping[str, R.Rule]) -> "Composite":
        return Composite(self.layer_map, {**self.name_map, **names}, self.defaults, self.first_layer,
                         self.plugins, self.strict, self.name)

    # resolution
    def rule_for(self, name: str, module: nn.Module, first: bool = False) -> R.Rule | None:
        if name in self.name_map:
            return self.name_map[name]
        for pattern, rule in self.name_map.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern):
                return rule
        if first and self.first_layer is not None:
            return self.first_layer
        for types, rule in self.layer_map:
            if isinstance(module, types):
                return rule
        if self.plugins:
            for types, rule in plugin_rules():
                if isinstance(module, types):
                    return rule
        for types, rule in self.defaults:
            if isinstance(module, types):
                return rule
        return None

    def assign(self, model: nn.Module) -> dict[str, tuple[nn.Module, R.Rule | None]]:
        """{leaf name: (module, rule or None for plain-gradient-safe modules)}; raises on a
        module that cannot be handled (strict)."""
        out = {}
        first_done = False
        for name, module in model.named_modules():
            if any(True for _ in module.children()):
                if name in self.name_map:  # a rule attached to a container module
                    out[name] = (module, self.name_map[name])
                continue
            has_params = any(True for _ in module.parameters(recurse=False))
            is_first = has_params and not first_done
            first_done = first_done or has_params
            rule = self.rule_for(name, module, first=is_first)
            if rule is None:
                if isinstance(module, GRADIENT_SAFE):
                    continue
                if isinstance(module, nn.modules.batchnorm._NormBase):
                    raise TypeError(f"module '{name}' ({type(module).__name__}): fold batch normalization into the "
                                    "preceding linear layer before explaining")
                if self.strict:
                    what = "has parameters and no rule" if has_params else "has no rule and the engine cannot propagate through it"
                    raise TypeError(
                        f"module '{name}' ({type(module).__name__}) {what}; map its type with "
                        "Composite.with_rules({Type: rule}) or register it in the qmlrp.lrp_rules entry-point group"
                    )
                continue
            out[name] = (module, rule)
        return out


# --------------------------------------------------------------------------- presets
def _preset_epsilon(epsilon: float = 1e-6, **_):
    return Composite(layer_map=((LINEAR, R.Epsilon(epsilon)),), name="epsilon")


def _preset_epsilon_plus(epsilon: float = 1e-6, **_):
    return Composite(layer_map=((CONV, R.ZPlus()), (nn.Linear, R.Epsilon(epsilon))), name="epsilon-plus")


def _preset_epsilon_gamma_box(low=-3.0, high=3.0, epsilon: float = 1e-6, gamma: float = 0.25, **_):
    return Composite(layer_map=((CONV, R.Gamma(gamma)), (nn.Linear, R.Epsilon(epsilon))),
                     first_layer=R.ZBox(low, high), name="epsilon-gamma-box")


def _preset_alpha2_beta1(**_):
    return Composite(layer_map=((LINEAR, R.AlphaBeta(2.0, 1.0)),), name="alpha2-beta1")


def _preset_weave(epsilon: float = 1e-6, gamma: float = 0.1, **_):
    """For weave / graph networks (after GNN-LRP, Schnake et al. 2022): gamma in the graph
    layers, epsilon in the fully connected head (modules named '*head*'), plain proportional
    sums; the network's own modules come in through the plugin entry points."""
    return Composite(layer_map=((LINEAR, R.Gamma(gamma)),), name_map={"*head*": R.Epsilon(epsilon)}, name="weave")


def _preset_zero(**_):
    return Composite(layer_map=((LINEAR, R.Zero()),), name="zero")


PRESETS = {
    "epsilon": _preset_epsilon,
    "epsilon-plus": _preset_epsilon_plus,
    "epsilon-gamma-box": _preset_epsilon_gamma_box,
    "alpha2-beta1": _preset_alpha2_beta1,
    "weave": _preset_weave,
    "zero": _preset_zero,
}


def preset(name: str, **params) -> Composite:
    """A named composite: 'epsilon', 'epsilon-plus', 'epsilon-gamma-box' (low, high),
    'alpha2-beta1', 'weave', 'zero'."""
    try:
        return PRESETS[name](**params)
    except KeyError:
        raise ValueError(f"unknown composite preset {name!r}; valid: {', '.join(PRESETS)}") from None


def as_composite(composite: Composite | str | None) -> Composite:
    if composite is None:
        return preset("epsilon")
    if isinstance(composite, str):
        return preset(composite)
    if isinstance(composite, Composite):
        return composite
    raise TypeError(f"composite must be a Composite or a preset name, got {type(composite).__name__}")


def presets() -> Iterable[str]:
    return tuple(PRESETS)
