"""Composites: resolution order, presets, strictness, hooks always removed."""
import pytest
import torch
from torch import nn

import lrp
from lrp import rules as R

from .nets import mlp


def test_names_win_over_types_and_first_type_match_wins():
    model = mlp()
    comp = lrp.Composite(layer_map=((nn.Linear, R.Epsilon(0.5)), (nn.Linear, R.Zero())), name_map={"2": R.ZPlus()})
    rules = {name: rule for name, (_, rule) in comp.assign(model).items()}
    assert rules["0"] == R.Epsilon(0.5) and rules["4"] == R.Epsilon(0.5)
    assert isinstance(rules["2"], R.ZPlus)
    assert isinstance(rules["1"], R.Pass)
    glob = comp.with_names({"[34]": R.Gamma(0.1)})
    assert glob.rule_for("4", model[4]) == R.Gamma(0.1)
    first = lrp.preset("epsilon-gamma-box", low=-1, high=1).assign(model)
    assert isinstance(first["0"][1], R.ZBox) and isinstance(first["2"][1], R.Epsilon)


def test_presets_and_unknown_names():
    assert set(lrp.presets()) >= {"epsilon", "epsilon-plus", "epsilon-gamma-box", "alpha2-beta1", "weave"}
    with pytest.raises(ValueError, match="valid: epsilon"):
        lrp.preset("eps")
    w = lrp.preset("weave")
    assert isinstance(w.rule_for("net.head.0", nn.Linear(2, 2)), R.Epsilon)
    assert isinstance(w.rule_for("net.layer1", nn.Linear(2, 2)), R.Gamma)


def test_strict_errors_name_the_module_and_hooks_are_removed():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(1, dtype=torch.float64))

        def forward(self, x):
            return x * self.s

    class Square(nn.Module):
        def forward(self, x):
            return x ** 2

    x = torch.randn(2, 12, dtype=torch.float64)
    for extra, msg in ((Scale(), "has parameters and no rule"), (Square(), "cannot propagate through it"),
                       (nn.BatchNorm1d(1).double(), "fold batch normalization")):
        model = nn.Sequential(mlp(), extra)
        with pytest.raises(TypeError, match=msg) as info:
            lrp.explain(model, x, "epsilon")
        assert "'1'" in str(info.value)
        assert all(not m._forward_hooks for m in model.modules())
    loose = lrp.Composite(layer_map=((nn.Linear, R.Zero()),), strict=False)
    lrp.explain(nn.Sequential(mlp(), Square()), x, loose)


def test_hooks_removed_after_an_error_inside_the_pass():
    model = mlp()
    with pytest.raises(IndexError):
        lrp.explain(model, torch.randn(2, 12, dtype=torch.float64), "epsilon", target=5)
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(TypeError, match="reads an explained input directly"):
        lrp.explain(nn.Sequential(nn.Tanh(), nn.Linear(3, 1).double()), torch.randn(2, 3, dtype=torch.float64),
                    lrp.Composite(layer_map=((nn.Linear, R.WSquare()),)))


def test_with_rules_is_immutable_and_validated():
    base = lrp.preset("epsilon")
    class M(nn.Module):
        def forward(self, x):
            return x
    new = base.with_rules({M: R.Pass()})
    assert base.rule_for("m", M()) is None and isinstance(new.rule_for("m", M()), R.Pass)
    with pytest.raises(TypeError, match="nn.Module subclasses"):
        lrp.Composite(layer_map=((int, R.Zero()),))
    with pytest.raises(TypeError, match="must be a Rule"):
        lrp.Composite(name_map={"x": "epsilon"})


def test_plugin_rules_come_from_the_entry_point_group(tmp_path, monkeypatch):
    """A package registers rules for its module types through `qmlrp.lrp_rules`, without
    touching any global state of lrp."""
    (tmp_path / "fake_plugin.py").write_text(
        "from torch import nn\nfrom lrp import rules\n"
        "class Doubler(nn.Module):\n    def forward(self, x):\n        return 2 * x\n"
        "RULES = [(Doubler, rules.Gradient())]\n"
    )
    dist = tmp_path / "fake_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{lrp.ENTRY_POINT_GROUP}]\nfake = fake_plugin:RULES\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from lrp.composites import plugin_rules

    plugin_rules.cache_clear()
    try:
        import fake_plugin

        model = nn.Sequential(nn.Linear(3, 2).double(), fake_plugin.Doubler())
        x = torch.randn(2, 3, dtype=torch.float64)
        e = lrp.explain(model, x, "zero")
        torch.testing.assert_close(e.total() + e.absorbed, e.explained)
        with pytest.raises(TypeError, match="Doubler"):
            lrp.explain(model, x, lrp.Composite(layer_map=((nn.Linear, R.Zero()),), plugins=False))
    finally:
        plugin_rules.cache_clear()
