"""Relevance of a difference f(x) - f(x0) for a feed-forward stack (DeepLIFT's rescale rule,
Shrikumar et al. 2017): the exact split over the input features of how far the output moves
from a reference input to x.

For y = f_L(...f_1(x)) with linear maps (nn.Linear) and element-wise activations, every layer is
linearized on the secant between the reference and x instead of at x: a linear map moves its
output by W (a - a0) exactly, an activation by s (z - z0) with the secant slope
s = (phi(z) - phi(z0)) / (z - z0) (the local derivative where z = z0). The product of these
multipliers m gives

    R_i = (x_i - x0_i) m_i,    sum_i R_i = sum_k w_k (f_k(x) - f_k(x0))   (exactly),

so biases cancel in the difference and nothing is absorbed. Against a reference where a
ReLU unit is off on both sides the unit passes nothing, like LRP-0; where it switches, it passes
the secant share. This is the reference rule for the part of a network above a sum pooling
(a molecule's readout: reference = the pooled vector of the reference molecule, or 0 for the
molecule with no atoms); below the pooling the LRP rules take over from R.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _secant(module: nn.Module, z: torch.Tensor, z0: torch.Tensor, tiny: float) -> torch.Tensor:
    with torch.no_grad():
        dz = z - z0
        dy = module(z) - module(z0)
        secant = dy / torch.where(dz.abs() > tiny, dz, torch.ones_like(dz))
    near = dz.abs() <= tiny
    if bool(near.any()):  # the local derivative where the two sides (nearly) coincide
        zz = z.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (local,) = torch.autograd.grad(module(zz).sum(), zz)
        secant = torch.where(near, local, secant)
    return secant


def difference_relevance(stack: nn.Module, x: torch.Tensor, x0: torch.Tensor, weights: torch.Tensor | None = None,
                         tiny: float = 1e-9) -> torch.Tensor:
    """(B, F) relevance of sum_k w_k (stack(x)_k - stack(x0)_k) over x's features.

    stack: an nn.Sequential (or a single module) of nn.Linear, nn.Identity and element-wise
        modules (activations: their output has their input's shape, element by element);
    x: (B, F) inputs; x0: (F,), (1, F) or (B, F) reference inputs;
    weights: (B, outputs) or (outputs,), default all ones: which combination of outputs is
        explained (a one-hot column, a selection times output scales).
    """
    mods = list(stack) if isinstance(stack, nn.Sequential) else [stack]
    x0 = torch.as_tensor(x0, dtype=x.dtype, device=x.device).expand_as(x)
    acts, refs = [x.detach()], [x0.detach()]
    with torch.no_grad():
        for m in mods:
            acts.append(m(acts[-1]))
            refs.append(m(refs[-1]))
    out = acts[-1]
    w = torch.ones_like(out) if weights is None else torch.as_tensor(weights, dtype=out.dtype, device=out.device).expand_as(out)
    g = w
    for k in range(len(mods) - 1, -1, -1):
        m, a, a0 = mods[k], acts[k], refs[k]
        if isinstance(m, nn.Linear):
            g = g @ m.weight.to(g.dtype)
        elif isinstance(m, nn.Identity):
            pass
        elif acts[k + 1].shape == a.shape:
            g = g * _secant(m, a, a0, tiny)
        else:
            raise TypeError(f"difference_relevance: {type(m).__name__} is neither nn.Linear nor element-wise "
                            f"(output {tuple(acts[k + 1].shape)} from input {tuple(a.shape)})")
    return (x.detach() - x0) * g
