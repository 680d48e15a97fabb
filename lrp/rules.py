"""LRP rules as small classes with validated parameters.

Notation for a linear layer (nn.Linear, nn.Conv1d/2d/3d) z_k = sum_j a_j w_jk + b_k, with
relevance R_k arriving at its output and R_j leaving to its input. w+ = max(w, 0),
w- = min(w, 0), likewise a+, a-, b+, b-.

Every rule is applied as a *modified gradient* that keeps the forward value: the hook replaces
the layer output z by  zmod * (z / zmod).detach()  (value z, gradient through zmod). With the
relevance carried as R = x * grad, the gradient arriving at z is R_k / z_k, and
a_j * d/da_j [zmod_k] * R_k / zmod_k is the rule's message. What a rule sends to no input
(biases, stabilizers) is accounted as *absorbed* and reported per sample, so that
sum(input relevance) + absorbed = explained quantity holds exactly.

Rules whose message does not have the form a_j * d zmod_k / d a_j (ZBox, WSquare, Flat) are
input-layer rules: they compute the input relevance directly and must sit on a module that
reads an explained input.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, and 0 where den == 0."""
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, torch.ones_like(den), den))


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z + eps * sign(z), with sign(0) = +1."""
    return z + eps * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))


# --------------------------------------------------------------------------- linear maps
def linear_fn(module: nn.Module):
    """The affine map a module computes as f(x, weight, bias), for the types the linear rules
    understand. Custom modules may define `lrp_linear(x, weight, bias)`."""
    if hasattr(module, "lrp_linear"):
        return module.lrp_linear
    if isinstance(module, nn.Linear):
        return F.linear
    if isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.modules.conv._ConvTransposeNd):
        return module._conv_forward
    raise TypeError(
        f"{type(module).__name__}: linear LRP rules need an nn.Linear / nn.ConvNd or a module with "
        "lrp_linear(x, weight, bias)"
    )


def _bias_shape(module: nn.Module, z: torch.Tensor) -> tuple[int, ...]:
    """How the bias broadcasts against the output: last dim for Linear, dim 1 for Conv."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return (1, -1) + (1,) * (z.dim() - 2)
    return (-1,)


def _bias(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    b = getattr(module, "bias", None)
    if b is None:
        return torch.zeros((), dtype=z.dtype, device=z.device)
    return b.view(_bias_shape(module, z))


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1) if t.dim() else t.reshape(1)


class Hooked:
    """What a rule returns from `apply`: the modified output, and a function of the gradient
    arriving at the output that gives the per-sample relevance absorbed there."""

    __slots__ = ("output", "absorbed")

    def __init__(self, output: torch.Tensor, absorbed=None):
        self.output = output
        self.absorbed = absorbed


# --------------------------------------------------------------------------- base classes
class Rule:
    """Base class. `apply(module, inputs, output, ctx) -> Hooked`."""

    direct = False  # input-layer rule computing input relevance itself

    def apply(self, module, inputs, output, ctx) -> Hooked:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class _Ratio(Rule):
    """Rules of the form zmod = z + extra(a): output zmod * (z / zmod).detach()."""

    def terms(self, module, a, z) -> tuple[torch.Tensor, torch.Tensor]:
        """(zmod, bmod): the modified pre-activation and its input-independent part."""
        raise NotImplementedError

    def apply(self, module, inputs, output, ctx) -> Hooked:
        a, z = inputs[0], output
        zmod, bmod = self.terms(module, a, z)
        ratio = safe_divide(z, zmod).detach()
        out = zmod * ratio
        frac = safe_divide(bmod, zmod).detach()
        # lost where zmod == 0 but z != 0: the whole R_k
        lost = ((zmod == 0) & (z != 0)).to(z.dtype).detach()

        def absorbed(grad):
            r = grad * z.detach()
            return _per_sample(r * frac + r * lost)

        return Hooked(out, absorbed)


# --------------------------------------------------------------------------- linear rules
@dataclass(frozen=True, repr=False)
class Zero(_Ratio):
    """LRP-0 (Bach et al. 2015): R_j = sum_k a_j w_jk / z_k R_k. Equals gradient x input."""

    def terms(self, module, a, z):
        return z, _bias(module, z).expand_as(z)


@dataclass(frozen=True, repr=False)
class Epsilon(_Ratio):
    """LRP-epsilon: R_j = sum_k a_j w_jk / (z_k + eps sign(z_k)) R_k (Bach et al. 2015;
    Montavon et al. 2019). eps >= 0; the stabilizer absorbs what is not passed on."""

    epsilon: float = 1e-6

    def __post_init__(self):
        if not self.epsilon >= 0:
            raise ValueError(f"Epsilon needs epsilon >= 0, got {self.epsilon}")

    def terms(self, module, a, z):
        zmod = stabilize(z, self.epsilon)
        return zmod, _bias(module, z) + (zmod - z)


@dataclass(frozen=True, repr=False)
class Gamma(_Ratio):
    """LRP-gamma (Montavon et al. 2019): R_j = sum_k a_j (w_jk + gamma w+_jk) /
    sum_j a_j (w_jk + gamma w+_jk) + b_k + gamma b+_k) R_k. Meant for a >= 0 (after ReLU)."""

    gamma: float = 0.25

    def __post_init__(self):
        if not self.gamma >= 0:
            raise ValueError(f"Gamma needs gamma >= 0, got {self.gamma}")

    def terms(self, module, a, z):
        f = linear_fn(module)
        b = getattr(module, "bias", None)
        extra = f(a, module.weight.clamp(min=0), None)
        bias = _bias(module, z)
        bmod = bias + self.gamma * bias.clamp(min=0) if b is not None else torch.zeros_like(z)
        zmod = z + self.gamma * extra + (self.gamma * bias.clamp(min=0) if b is not None else 0)
        return zmod, bmod.expand_as(z)


@dataclass(frozen=True, repr=False)
class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015), with alpha - beta = 1 and beta >= 0:
    R_j = sum_k (alpha (a_j w_jk)+ / z+_k - beta (a_j w_jk)- / z-_k) R_k, where
    z+_k = sum_j (a_j w_jk)+ + b+_k and z-_k = sum_j (a_j w_jk)- + b-_k. Sign convention:
    beta weighs the negative contributions and is subtracted (AlphaBeta(2, 1) is 'alpha2-beta1').
    `bias=False` drops the bias from z+ and z- (then nothing is absorbed)."""

    alpha: float = 2.0
    beta: float = 1.0
    bias: bool = True

    def __post_init__(self):
        if abs(self.alpha - self.beta - 1.0) > 1e-9 or self.beta < 0:
            raise ValueError(f"AlphaBeta needs alpha - beta = 1 and beta >= 0, got alpha={self.alpha}, beta={self.beta}")

    def apply(self, module, inputs, output, ctx) -> Hooked:
        a, z = inputs[0], output
        f = linear_fn(module)
        wp, wn = module.weight.clamp(min=0), module.weight.clamp(max=0)
        ap, an = a.clamp(min=0), a.clamp(max=0)
        zp, zn = f(ap, wp, None), f(ap, wn, None)
        if bool((a < 0).any()):
            zp, zn = zp + f(an, wn, None), zn + f(an, wp, None)
        bias = _bias(module, z) if self.bias else torch.zeros((), dtype=z.dtype, device=z.device)
        # zn is computed, not taken as z - zp: round-off there turns an exact 0 into 1e-16
        bp, bn = bias.clamp(min=0), bias.clamp(max=0)
        zp, zn = zp + bp, zn + bn
        rp, rn = safe_divide(z, zp).detach(), safe_divide(z, zn).detach()
        out = self.alpha * zp * rp - self.beta * zn * rn
        # forward value: alpha z - beta z = z wherever both parts are non-zero; keep z exactly
        out = out + (z - out).detach()
        passed = (self.alpha * safe_divide(zp - bp, zp) - self.beta * safe_divide(zn - bn, zn)).detach()

        def absorbed(grad):
            r = grad * z.detach()
            return _per_sample(r * (1 - passed))

        return Hooked(out, absorbed)


class ZPlus(AlphaBeta):
    """z+ rule (Montavon et al. 2017): R_j = sum_k (a_j w_jk)+ / sum_j (a_j w_jk)+ R_k
    (alpha = 1, beta = 0, biases ignored, so nothing is absorbed)."""

    def __init__(self):
        super().__init__(alpha=1.0, beta=0.0, bias=False)

    def __repr__(self):
        return "ZPlus()"


# --------------------------------------------------------------------------- input-layer rules
class _Direct(Rule):
    """Input-layer rules: compute R_j explicitly in the backward pass."""

    direct = True

    def input_relevance(self, module, a, z, r_out) -> tuple[torch.Tensor, torch.Tensor]:
        """(R_in with a's shape, absorbed per sample)."""
        raise NotImplementedError

    def apply(self, module, inputs, output, ctx) -> Hooked:
        a = inputs[0]
        key = ctx.input_key(a, module)
        rule = self

        class _Fn(torch.autograd.Function):
            @staticmethod
            def forward(fctx, a_, z_):
                return z_.clone()

            @staticmethod
            def backward(fctx, grad):
                r_out = grad * output.detach()
                with torch.enable_grad():
                    r_in, lost = rule.input_relevance(module, a.detach(), output.detach(), r_out)
                ctx.add_direct(key, r_in)
                ctx.add_absorbed(module, lost)
                return torch.zeros_like(a), None

        return Hooked(_Fn.apply(a, output.detach()), None)


def _grad_of(fn, leaves, grad_out):
    leaves = [t.detach().requires_grad_(True) for t in leaves]
    out = fn(*leaves)
    return torch.autograd.grad(out, leaves, grad_out)


@dataclass(frozen=True, repr=False)
class ZBox(_Direct):
    """z^B rule for inputs bounded by low <= x <= high (Montavon et al. 2017):
    R_j = sum_k (a_j w_jk - l_j w+_jk - h_j w-_jk) / sum_j (...) + b_k) R_k. `low`/`high`
    are numbers or tensors broadcastable to the input."""

    low: float | torch.Tensor = -1.0
    high: float | torch.Tensor = 1.0

    def __post_init__(self):
        if not bool(torch.all(torch.as_tensor(self.low) <= torch.as_tensor(self.high))):
            raise ValueError("ZBox needs low <= high")

    def input_relevance(self, module, a, z, r_out):
        f = linear_fn(module)
        low = torch.as_tensor(self.low, dtype=a.dtype, device=a.device).expand_as(a)
        high = torch.as_tensor(self.high, dtype=a.dtype, device=a.device).expand_as(a)
        w, wp, wn = module.weight, module.weight.clamp(min=0), module.weight.clamp(max=0)
        bias = _bias(module, z)
        zmod = z - f(low, wp, None) - f(high, wn, None)
        s = safe_divide(r_out, zmod)
        ga, gl, gh = (torch.autograd.grad(f(x, wt, None), x, s)[0] for x, wt in
                      ((a.requires_grad_(True), w), (low.clone().requires_grad_(True), wp), (high.clone().requires_grad_(True), wn)))
        r_in = a * ga - low * gl - high * gh
        return r_in, _per_sample(s * bias.expand_as(z) + r_out * ((zmod == 0) & (z != 0)))


@dataclass(frozen=True, repr=False)
class WSquare(_Direct):
    """w^2 rule (Montavon et al. 2017): R_j = sum_k w_jk^2 / sum_j w_jk^2 R_k (input-independent)."""

    def input_relevance(self, module, a, z, r_out):
        f = linear_fn(module)
        ones = torch.ones_like(a).requires_grad_(True)
        den = f(ones, module.weight ** 2, None)
        (g,) = torch.autograd.grad(den, ones, safe_divide(r_out, den))
        return g, _per_sample(r_out * (den == 0))


@dataclass(frozen=True, repr=False)
class Flat(_Direct):
    """Flat rule (Lapuschkin et al. 2019): R_j = sum_k 1 / n_k R_k, uniform over the n_k inputs
    connected to output k."""

    def input_relevance(self, module, a, z, r_out):
        f = linear_fn(module)
        ones = torch.ones_like(a).requires_grad_(True)
        den = f(ones, torch.ones_like(module.weight), None)
        (g,) = torch.autograd.grad(den, ones, safe_divide(r_out, den))
        return g, _per_sample(r_out * (den == 0))


# --------------------------------------------------------------------------- parameter-free ops
@dataclass(frozen=True, repr=False)
class Pass(Rule):
    """Relevance passes unchanged through an element-wise (or one-to-many) map y = f(x):
    R_x = R_y (summed over the outputs of one input). For ReLU this is the plain gradient. Where
    x = 0 but f(0) != 0 (e.g. a Gaussian membership) nothing can be carried by x * grad: that
    relevance is reported as absorbed. `expand(x, y)` broadcasts the input to the output's shape
    (default: x itself, for element-wise maps)."""

    expand: object = None

    def apply(self, module, inputs, output, ctx) -> Hooked:
        x = inputs[0]
        if self.expand is None and type(module) is nn.ReLU:
            return Hooked(output, None)  # relu(x) / x is the ReLU derivative: the plain gradient is exact
        xb = x if self.expand is None else self.expand(x, output)
        ratio = safe_divide(output, xb).detach()
        out = xb * ratio
        lost = ((xb == 0) & (output != 0)).to(output.dtype).detach()
        return Hooked(out, lambda grad: _per_sample(grad * output.detach() * lost))


@dataclass(frozen=True, repr=False)
class Norm(Rule):
    """Proportional split for parameter-free linear ops (sums, sum/average pooling, residual
    adds): R_i = x_i / sum(x) R, stabilized by epsilon (what it keeps is absorbed). This is
    LRP-0 / LRP-epsilon for a bias-free linear map, taken by the plain gradient through the
    module's own forward; with several inputs each receives its share."""

    epsilon: float = 0.0

    def __post_init__(self):
        if not self.epsilon >= 0:
            raise ValueError(f"Norm needs epsilon >= 0, got {self.epsilon}")

    def apply(self, module, inputs, output, ctx) -> Hooked:
        if self.epsilon == 0:
            return Hooked(output, None)
        zmod = stabilize(output, self.epsilon)
        out = zmod * safe_divide(output, zmod).detach()
        frac = safe_divide(zmod - output, zmod).detach()
        return Hooked(out, lambda grad: _per_sample(grad * output.detach() * frac))


@dataclass(frozen=True, repr=False)
class Product(Rule):
    """Element-wise product y = u * v of a module's two inputs. mode 'half': R_u = R_v = R / 2;
    'first' / 'second': all relevance to that factor, the other treated as constant (as for
    gates, AttnLRP, Ali et al. 2022)."""

    mode: str = "half"

    def __post_init__(self):
        if self.mode not in ("half", "first", "second"):
            raise ValueError(f"Product mode must be 'half', 'first' or 'second', got {self.mode!r}")

    def apply(self, module, inputs, output, ctx) -> Hooked:
        if len(inputs) != 2:
            raise TypeError(f"Product rule needs a module with two inputs, {type(module).__name__} got {len(inputs)}")
        u, v = inputs
        if self.mode == "first":
            out = u * v.detach()
        elif self.mode == "second":
            out = u.detach() * v
        else:
            out = 0.5 * (u * v.detach() + u.detach() * v)
        return Hooked(out + (output - out).detach(), None)


@dataclass(frozen=True, repr=False)
class Gradient(Rule):
    """The plain gradient (no modification): right for max pooling (winner takes all) and for
    any op where gradient x input is the intended message."""

    def apply(self, module, inputs, output, ctx) -> Hooked:
        return Hooked(output, None)
