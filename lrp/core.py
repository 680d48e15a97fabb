"""explain(): one batched relevance pass over any nn.Module with any number of inputs."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .composites import Composite, as_composite
from .rules import safe_divide


@dataclass
class Explanation:
    """Result of `explain`.

    relevance: one tensor per input (same shapes), or a single tensor for a single input;
        None for inputs that are not floating point (masks, indices).
    output: the model output, detached.
    explained: (B,) the quantity distributed: sum of the start relevance per sample.
    absorbed: (B,) relevance kept by biases, stabilizers and zero-valued nodes.
    absorbed_by: {module name: (B,)} the same, per module ('<output>' for a zero output);
        filled with explain(..., track_absorbed=True).
    Identity: relevance summed per sample + absorbed == explained (to round-off).
    """

    relevance: torch.Tensor | tuple[torch.Tensor, ...]
    output: torch.Tensor
    explained: torch.Tensor
    absorbed_by: dict = field(default_factory=dict)
    tracked_absorbed: torch.Tensor | None = None

    @property
    def absorbed(self) -> torch.Tensor:
        """(B,) tracked module by module, or explained - sum(relevance) when not tracked."""
        if self.tracked_absorbed is None:
            self.tracked_absorbed = self.explained - self.total()
        return self.tracked_absorbed

    @property
    def relevances(self) -> tuple[torch.Tensor, ...]:
        return self.relevance if isinstance(self.relevance, tuple) else (self.relevance,)

    def total(self) -> torch.Tensor:
        """(B,) relevance summed over every input feature."""
        return sum(r.reshape(r.shape[0], -1).sum(1) for r in self.relevances if r is not None)

    def conservation_error(self) -> torch.Tensor:
        """(B,) |sum(relevance) + absorbed - explained|."""
        return (self.total() + self.absorbed - self.explained).abs()


class _Context:
    """State of one relevance pass: explained inputs, direct input relevance, absorbed parts."""

    def __init__(self, inputs: Sequence[torch.Tensor], track: bool = False):
        self.inputs = list(inputs)
        self.track = track
        self.direct: dict[int, torch.Tensor] = {}
        self.absorbed: dict[str, list] = {}
        self.names: dict[int, str] = {}

    def add_absorbed(self, module: nn.Module, value: torch.Tensor) -> None:
        self.absorbed.setdefault(self.names.get(id(module), type(module).__name__), []).append(value)

    def input_key(self, tensor: torch.Tensor, module: nn.Module) -> int:
        for k, x in enumerate(self.inputs):
            if tensor is x:
                return k
        raise TypeError(f"{type(module).__name__}: input-layer rules (ZBox, WSquare, Flat) must sit on a module "
                        "that reads an explained input directly")

    def add_direct(self, key: int, relevance: torch.Tensor) -> None:
        self.direct[key] = self.direct.get(key, 0) + relevance


@contextmanager
def attached(model: nn.Module, composite: Composite | str | None, ctx: _Context):
    """Attach the composite's rules as forward hooks; always removed on exit, even on error."""
    composite = as_composite(composite)
    handles = []
    try:
        for name, (module, rule) in composite.assign(model).items():
            ctx.names[id(module)] = name
            def hook(mod, inputs, output, _rule=rule, _name=name):
                if not isinstance(output, torch.Tensor):
                    raise TypeError(f"module '{_name}' ({type(mod).__name__}) returns {type(output).__name__}; "
                                    "LRP rules need modules that return one tensor")
                return _rule.apply(mod, inputs, output, ctx)

            handles.append(module.register_forward_hook(hook))
        yield composite
    finally:
        for h in handles:
            h.remove()


def _start_relevance(out: torch.Tensor, target, ref_out):
    base = out if ref_out is None else out - ref_out
    if target is None:
        return base
    if isinstance(target, int):
        if out.dim() < 2 or not -out.shape[1] <= target < out.shape[1]:
            raise IndexError(f"target {target} out of range for outputs of shape {tuple(out.shape)}")
        mask = torch.zeros_like(out)
        mask[:, target] = 1
        return base * mask
    t = torch.as_tensor(target, device=out.device)
    if t.dtype == torch.bool:
        return base * t.to(out.dtype).expand_as(out)
    if t.shape != out.shape:
        raise ValueError(f"a start relevance tensor must have the output's shape {tuple(out.shape)}, got {tuple(t.shape)}")
    return t.to(out.dtype)


def explain(model: nn.Module, inputs, composite: Composite | str | None = "epsilon", target=None,
            reference=None, track_absorbed: bool = False) -> Explanation:
    """Layer-wise relevance propagation in one batched modified-gradient pass.

    Args:
        model: any nn.Module; every leaf module must get a rule from the composite (strict).
        inputs: a tensor or a tuple of tensors (dim 0 = batch); every input receives relevance.
        composite: a Composite or a preset name (default 'epsilon').
        target: None explains the output value itself (regression); an int selects an output
            column; a bool mask selects outputs; a float tensor of the output's shape is the
            start relevance.
        reference: inputs (same structure) of a reference: explain f(x) - f(x_ref) instead of
            f(x) (Letzgus et al. 2022); the start relevance is that difference.
        track_absorbed: measure, module by module, what biases, stabilizers and zero-valued
            nodes keep (`absorbed_by`; costs a few element-wise passes per layer). Without it,
            `absorbed` is explained - sum(relevance), the same quantity by the engine's
            construction (the tests check the two agree).
    Returns an Explanation.
    """
    single = isinstance(inputs, torch.Tensor)
    xs = (inputs,) if single else tuple(inputs)
    # float inputs receive relevance (detach shares storage: the caller's tensor is untouched);
    # others (a bool atom mask, integer indices) pass through and get None
    xs = tuple(x.detach().requires_grad_(True) if x.is_floating_point() else x for x in xs)
    wanted = [x for x in xs if x.requires_grad]
    ref_out = None
    if reference is not None:
        refs = (reference,) if isinstance(reference, torch.Tensor) else tuple(reference)
        with torch.no_grad():
            ref_out = model(*refs).detach()
    ctx = _Context(xs, track=track_absorbed)
    with attached(model, composite, ctx):
        with torch.enable_grad():
            out = model(*xs)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"model returns {type(out).__name__}; explain needs one output tensor")
            r0 = _start_relevance(out.detach(), target, ref_out)
            grad_out = safe_divide(r0, out.detach())
            lost_at_output = ((out.detach() == 0) & (r0 != 0)).to(r0.dtype) * r0 if track_absorbed else None
            grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
            grads = [next(grads) if x.requires_grad else None for x in xs]
    relevance = []
    for k, (x, g) in enumerate(zip(xs, grads)):
        if not x.is_floating_point():
            relevance.append(None)
            continue
        if g is None:
            r = torch.zeros_like(x)
        elif g.is_contiguous() and g.shape == x.shape:
            r = g.mul_(x.detach())  # the gradient buffer is ours: multiply in place
        else:
            r = g * x.detach()
        if k in ctx.direct:
            r = r + ctx.direct[k]
        relevance.append(r.detach())
    batch = out.shape[0]
    explained = r0.reshape(batch, -1).sum(1)
    per, absorbed = {}, None
    if track_absorbed:
        per = {name: sum(v).detach() for name, v in ctx.absorbed.items() if v}
        lost = lost_at_output.reshape(batch, -1).sum(1)
        if bool(lost.any()):
            per["<output>"] = lost
        absorbed = sum(per.values()) if per else torch.zeros(batch, dtype=out.dtype, device=out.device)
    return Explanation(
        relevance=relevance[0] if single else tuple(relevance), output=out.detach(),
        explained=explained, absorbed_by=per, tracked_absorbed=absorbed,
    )
