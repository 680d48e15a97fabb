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


class _HistogramSum(torch.autograd.Function):
    """AtomSum(Mask(GaussianHistogram(x), mask)) in one pass: the (n, B, N, F) memberships are
    computed chunk by chunk, so that their element-wise passes stay in the CPU's cache, and when x
    needs a gradient the finished (masked) chunks are kept for the backward pass: keeping them costs
    less than computing them again, since exp dominates (benchmarks/train_throughput.py). Same
    function as the three modules (tests compare the two in float64); used for training and plain
    prediction, never under LRP (see `histogram_sum`)."""

    @staticmethod
    def _memberships(x, mu4, inv4, logs4):
        # (n, b, N, F), the bins first so that every element-wise pass runs over long contiguous rows
        z = (x.unsqueeze(0) - mu4).mul_(inv4)
        logp = torch.addcmul(-logs4, z, z, value=-0.5)  # -z^2 / 2 - log sigma
        logp.sub_(logp.amax(0, keepdim=True))  # stable normalization, as GaussianHistogram
        # memberships below e^-80 of the largest become e^-80 (< 2e-35, so the sum and the result
        # move by less than that): exp of an underflowing argument takes a slow path ~15x slower
        p = logp.clamp_(min=-80.0).exp_()
        return p.div_(p.sum(0, keepdim=True))

    @staticmethod
    def _chunks(x, chunk_bytes):
        b, n_atoms, f = x.shape
        per_molecule = max(1, n_atoms * f * x.element_size())
        return max(1, chunk_bytes // (per_molecule * 11))

    @staticmethod
    def forward(ctx, x, mask, mu, sigma, chunk_bytes):
        n = mu.shape[0]
        shape = (n, 1, 1, 1)
        mu4, inv4, logs4 = mu.view(shape), (1 / sigma).view(shape), torch.log(sigma).view(shape)
        m = mask.to(x.dtype)
        out = x.new_empty(x.shape[0], x.shape[2], n)  # (B, F, n)
        keep = ctx.needs_input_grad[0]
        kept = []  # (n, b, N, F) per chunk, padding zeroed
        step = _HistogramSum._chunks(x, chunk_bytes)
        for s in range(0, x.shape[0], step):
            p = _HistogramSum._memberships(x[s:s + step], mu4, inv4, logs4)
            p.mul_(m[None, s:s + step, :, None])
            out[s:s + step] = p.sum(2).permute(1, 2, 0)
            if keep:
                kept.append(p)
        ctx.save_for_backward(x, mu, sigma)
        ctx.kept, ctx.step = kept, step  # intermediates, not inputs or outputs: held on ctx
        return out

    @staticmethod
    def backward(ctx, grad):
        # d/dx sum_k g_k p_k = sum_k p_k (g_k - gbar) a_k with gbar = sum_j p_j g_j and
        # a_k = (mu_k - x) / sigma_k^2 (the softmax form: the differences are taken on g, not on a);
        # the sums over bins weighted by mu_k / sigma_k^2 and 1 / sigma_k^2 are one matrix product.
        # The kept memberships are zero on padding, so the gradient is zero there too.
        x, mu, sigma = ctx.saved_tensors
        n = mu.shape[0]
        inv2 = 1 / (sigma * sigma)
        w = torch.stack([mu * inv2, inv2])  # (2, n)
        dx = torch.empty_like(x)
        step = ctx.step
        for c, s in enumerate(range(0, x.shape[0], step)):
            xc = x[s:s + step]
            p = ctx.kept[c]  # (n, b, N, F), read only (a retained graph may run backward again)
            g = grad[s:s + step].permute(2, 0, 1).unsqueeze(2)  # (n, b, 1, F)
            t = p * g
            q = t.addcmul_(p, t.sum(0, keepdim=True), value=-1)  # p_k (g_k - gbar)
            qw = (w @ q.view(n, -1)).view(2, *xc.shape)
            dx[s:s + step] = qw[0].addcmul_(xc, qw[1], value=-1)
        return dx, None, None, None, None


def histogram_sum(x: torch.Tensor, mask: torch.Tensor, histogram: GaussianHistogram,
                  chunk_bytes: int = 1 << 20) -> torch.Tensor:
    """sum over atoms of mask * histogram(x): (B, N, F), (B, N) -> (B, F, n), fused (see
    _HistogramSum). `chunk_bytes` sizes the pieces of the (n, b, N, F) memberships, about one
    core's L2 cache."""
    return _HistogramSum.apply(x, mask, histogram.mu.to(x.dtype), histogram.sigma.to(x.dtype), chunk_bytes)


class _SummedPairUpdate(torch.autograd.Function):
    """sum_j mask_ij relu(pairs_ij W^T + b + u_i + u_j): a weave module's pair update (pp, both
    orders of u = ap(atoms), ReLU, pair mask) followed by the next module's PairSum, chunk by
    chunk, so that the element-wise passes over the (B, N, N, H) pair tensor stay in the CPU's
    cache; for training, each finished chunk is kept for the backward pass (its sign is the ReLU
    and mask gate), which is cheaper than computing it again. Same function as the modules (tests
    compare the two in float64)."""

    @staticmethod
    def _pre(pairs, u, weight, bias):
        b, n, _, f = pairs.shape
        z = torch.mm(pairs.reshape(-1, f), weight.t()).view(b, n, n, -1)
        return z.add_((u + bias)[:, :, None, :]).add_(u[:, None, :, :])  # the bias rides on the small u

    @staticmethod
    def _step(pairs, weight, chunk_bytes):
        b, n = pairs.shape[:2]
        return max(1, chunk_bytes // max(1, n * n * weight.shape[0] * pairs.element_size()))

    @staticmethod
    def forward(ctx, pairs, u, weight, bias, pair_mask, chunk_bytes):
        m = pair_mask.to(pairs.dtype)
        out = u.new_empty(u.shape)
        keep = any(ctx.needs_input_grad[:4])
        kept = []  # the masked ReLU outputs (b, N, N, H) per chunk: their sign is the gradient's gate
        step = _SummedPairUpdate._step(pairs, weight, chunk_bytes)
        for s in range(0, pairs.shape[0], step):
            z = _SummedPairUpdate._pre(pairs[s:s + step], u[s:s + step], weight, bias).relu_()
            out[s:s + step] = z.mul_(m[s:s + step, :, :, None]).sum(2)
            if keep:
                kept.append(z)
        ctx.save_for_backward(pairs, weight)
        ctx.kept, ctx.step = kept, step  # intermediates, not inputs or outputs: held on ctx
        return out

    @staticmethod
    def backward(ctx, grad):
        pairs, weight = ctx.saved_tensors
        need_pairs = ctx.needs_input_grad[0]
        d_pairs = torch.empty_like(pairs) if need_pairs else None
        d_u = grad.new_empty(grad.shape)
        d_w = torch.zeros_like(weight)
        d_b = weight.new_zeros(weight.shape[0])
        f = pairs.shape[-1]
        step = ctx.step
        for c, s in enumerate(range(0, pairs.shape[0], step)):
            pc = pairs[s:s + step]
            # (b, N, N, H): the kept output is > 0 exactly where the ReLU passes and the pair is
            # real; read only (a retained graph may run backward again)
            g = ctx.kept[c].sign().mul_(grad[s:s + step, :, None, :])  # sign: 1 or 0 (the kept values are >= 0)
            d_u[s:s + step] = g.sum(2) + g.sum(1)
            g2 = g.view(-1, g.shape[-1])
            d_w.addmm_(g2.t(), pc.reshape(-1, f))
            d_b.add_(g2.sum(0))
            if need_pairs:
                d_pairs[s:s + step] = (g2 @ weight).view(pc.shape)
        return d_pairs, d_u, d_w, d_b, None, None


def summed_pair_update(pairs: torch.Tensor, u: torch.Tensor, linear: nn.Linear, pair_mask: torch.Tensor,
                       chunk_bytes: int = 1 << 20) -> torch.Tensor:
    """(B, N, N, Fp) pairs, (B, N, H) u = ap(atoms), the pp Linear, (B, N, N) pair mask ->
    (B, N, H): PairSum(Mask(ReLU(BothOrders(u) + pp(pairs)))), fused (see _SummedPairUpdate)."""
    return _SummedPairUpdate.apply(pairs, u, linear.weight, linear.bias, pair_mask, chunk_bytes)
