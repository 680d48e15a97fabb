"""Weave building blocks. Every sum, product and readout is a module of its own so that an
LRP rule can be attached to it (see gcnn/lrp_rules.py); no functional op hides in a forward.

Shapes: B molecules, N atoms (padded), F features.
"""
from __future__ import annotations

import torch
from torch import nn


class PairSum(nn.Module):
    """Sum of a pair tensor over the second atom: P -> A.

    Shapes: (B, N, N, F) -> (B, N, F)."""

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return pairs.sum(2)  # (B, N, F)


class BothOrders(nn.Module):
    """A -> P, invariant to the order of the pair: out[i, j] = x[i] + x[j]. With x = W h this is
    Kearnes et al.'s W [h_i, h_j] + W [h_j, h_i] with the two halves of W tied.

    Shapes: (B, N, F) -> (B, N, N, F)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, None, :] + x[:, None, :, :]  # (B, N, N, F)


class Add(nn.Module):
    """Element-wise sum of two tensors of one shape (combining two messages)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class Mask(nn.Module):
    """Zero the padding: x * mask, the mask broadcast over trailing feature axes.

    Shapes: x (B, N, ...) with mask (B, N), or x (B, N, N, ...) with mask (B, N, N)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(x.dtype)
        while m.dim() < x.dim():
            m = m.unsqueeze(-1)
        return x * m


class GaussianHistogram(nn.Module):
    """Fuzzy histogram readout of Kearnes et al. 2016: each feature value x gets its
    membership in `n` Gaussians (means and widths fixed to the standard-normal quantiles used
    by DeepChem's WeaveGather), normalized to sum to one over the `n` bins.

    Shapes: (B, N, F) -> (B, N, F, n)."""

    def __init__(self, n: int = 11):
        super().__init__()
        if n != 11:
            mu = torch.linspace(-1.645, 1.645, n)
            sigma = torch.full((n,), float(mu[1] - mu[0]) if n > 1 else 1.0)
        else:
            mu = torch.tensor([-1.645, -1.080, -0.739, -0.468, -0.228, 0.0, 0.228, 0.468, 0.739, 1.080, 1.645])
            sigma = torch.tensor([0.283, 0.170, 0.134, 0.118, 0.114, 0.114, 0.114, 0.118, 0.134, 0.170, 0.283])
        self.register_buffer("mu", mu)
        self.register_buffer("sigma", sigma)
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x[..., None] - self.mu) / self.sigma  # (B, N, F, n)
        logp = -0.5 * z * z - torch.log(self.sigma)
        logp = logp - logp.max(-1, keepdim=True).values  # stable normalization
        p = torch.exp(logp)
        return p / p.sum(-1, keepdim=True)


class AtomSum(nn.Module):
    """Readout: sum over atoms. Shapes: (B, N, ...) -> (B, ...)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(1)
