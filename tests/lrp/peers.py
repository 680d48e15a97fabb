"""Import helpers for the peer engines used only in tests and benchmarks.

zennit 0.5.1 (the newest for Python < 3.11.11) imports torchvision at top level, and no
torchvision wheel loads against the CPU torch here; minimal stand-in modules in sys.modules
are enough for zennit's core, rules and composites (the parts we compare)."""
import importlib
import sys
import types

from torch import nn


def import_zennit():
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in ("torchvision", "torchvision.ops", "torchvision.models", "torchvision.models.resnet"):
            sys.modules.pop(name, None)
            sys.modules[name] = types.ModuleType(name)
        sys.modules["torchvision.ops"].FrozenBatchNorm2d = type("FrozenBatchNorm2d", (nn.Module,), {})
        res = sys.modules["torchvision.models.resnet"]
        res.Bottleneck = type("Bottleneck", (nn.Module,), {})
        res.BasicBlock = type("BasicBlock", (nn.Module,), {})
        sys.modules["torchvision"].ops = sys.modules["torchvision.ops"]
        sys.modules["torchvision"].models = sys.modules["torchvision.models"]
        sys.modules["torchvision.models"].resnet = res
    return importlib.import_module("zennit")
