"""LRP rules as small classes with validated parameters.

Notation for a linear layer (nn.Linear, nn.Conv1d/2d/3d) z_k = sum_j a_j w_jk + b_k, with
relevance R_k arriving at its output and R_j leaving to its input. w+ = max(w, 0),
w- = min(w, 0), likewise a+, a-, b+, b-.

Every rule is applied as a *modified gradient* that keeps the forward value: the hook routes
the layer output z through `route`, whose forward returns z unchanged and whose backward sends
the arriving gradient g_k = R_k / z_k (relevance is carried as R = x * grad) on as
g_k z_k / zmod_k, through z itself or through a modified map zmod (gamma's w + gamma w+,
alpha-beta's positive and negative parts), so that a_j * d zmod_k / d a_j * R_k / zmod_k is the
rule's message. What a rule sends to no input
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
    out = num / den
    return out.masked_fill_(den == 0, 0.0) if out.numel() else out


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


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd)


def _bias(module: nn.Module, z: torch.Tensor) -> torch.Tensor | None:
    """The bias shaped to broadcast against the output (dim 1 for conv, last dim otherwise)."""
    b = getattr(module, "bias", None)
    if b is None:
        return None
    b = b.detach()
    return b.view((1, -1) + (1,) * (z.dim() - 2)) if _is_conv(module) else b


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1)


def _dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """per-sample sum(u * v)."""
    return (u * v).reshape(u.shape[0], -1).sum(1)


def _bias_dot(module: nn.Module, t: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """per sample sum_k t_k b_k with the bias broadcast: reduce t to (B, channels) first."""
    if b is None:
        return torch.zeros(t.shape[0], dtype=t.dtype, device=t.device)
    if _is_conv(module):
        return t.flatten(2).sum(2) @ b.reshape(-1)
    return t.reshape(t.shape[0], -1, t.shape[-1]).sum(1) @ b


class _Route(torch.autograd.Function):
    """Forward: returns `z` unchanged. Backward: `back(grad)` gives the gradients for
    (z, *parts); z's own graph and the parts' graphs carry them on to the inputs. This is the
    modified gradient of every rule, computed only in the backward pass."""

    @staticmethod
    def forward(ctx, back, z, *parts):
        ctx.back = back
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad):
        return (None, *ctx.back(grad))


def route(back, z, *parts) -> torch.Tensor:
    return _Route.apply(back, z, *parts)


# --------------------------------------------------------------------------- base classes
class Rule:
    """Base class. `apply(module, inputs, output, ctx) -> output tensor with the rule's
    modified gradient`; absorbed relevance is reported with `ctx.add_absorbed(module, (B,))`
    from the backward pass."""

    direct = False  # input-layer rule computing input relevance itself

    def apply(self, module, inputs, output, ctx) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


# --------------------------------------------------------------------------- linear rules
@dataclass(frozen=True, repr=False)
class Zero(Rule):
    """LRP-0 (Bach et al. 2015): R_j = sum_k a_j w_jk / z_k R_k. Equals gradient x input; the
    bias keeps R_k b_k / z_k."""

    def apply(self, module, inputs, z, ctx):
        b = _bias(module, z)

        def back(g):
            if ctx.track:
                ctx.add_absorbed(module, _bias_dot(module, g, b))  # R_k b_k / z_k = g_k b_k
            return (g,)

        return route(back, z)


@dataclass(frozen=True, repr=False)
class Epsilon(Rule):
    """LRP-epsilon: R_j = sum_k a_j w_jk / (z_k + eps sign(z_k)) R_k (Bach et al. 2015;
    Montavon et al. 2019). eps >= 0; bias and stabilizer keep R_k (b_k + eps sign z_k) / zmod_k."""

    epsilon: float = 1e-6

    def __post_init__(self):
        if not self.epsilon >= 0:
            raise ValueError(f"Epsilon needs epsilon >= 0, got {self.epsilon}")

    def apply(self, module, inputs, z, ctx):
        if self.epsilon == 0:
            return Zero().apply(module, inputs, z, ctx)
        b, eps, zd = _bias(module, z), self.epsilon, z.detach()

        def back(g):
            # z / (z + eps sign z) = |z| / (|z| + eps): no sign tensor needed
            az = zd.abs()
            gz = g * (az / (az + eps))
            # R_k (b_k + eps sign z_k) / zmod_k = R_k - gz_k (z_k - b_k): kept by bias and stabilizer
            if ctx.track:
                ctx.add_absorbed(module, _dot(g - gz, zd) + _bias_dot(module, gz, b))
            return (gz,)

        return route(back, z)


@dataclass(frozen=True, repr=False)
class Gamma(Rule):
    """LRP-gamma (Montavon et al. 2019): R_j = sum_k a_j (w_jk + gamma w+_jk) /
    (sum_j a_j (w_jk + gamma w+_jk) + b_k + gamma b+_k) R_k. Meant for a >= 0 (after ReLU)."""

    gamma: float = 0.25

    def __post_init__(self):
        if not self.gamma >= 0:
            raise ValueError(f"Gamma needs gamma >= 0, got {self.gamma}")

    def apply(self, module, inputs, z, ctx):
        a, zd, gamma = inputs[0], z.detach(), self.gamma
        w, b = module.weight.detach(), _bias(module, z)
        bmod = None if b is None else b + gamma * b.clamp(min=0)
        # one matmul with the modified weights; the gradient flows through it alone (not z)
        zmod = linear_fn(module)(a, w + gamma * w.clamp(min=0), None)
        if bmod is not None:
            zmod = zmod + bmod

        def back(g):
            zm = zmod.detach()
            gz = safe_divide(g * zd, zm)
            if ctx.track:
                lost = _per_sample((g * zd).masked_fill_(zm != 0, 0.0))
                ctx.add_absorbed(module, _bias_dot(module, gz, bmod) + lost)
            return None, gz

        return route(back, z, zmod)


@dataclass(frozen=True, repr=False)
class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015), with alpha - beta = 1 and beta >= 0:
    R_j = sum_k (alpha (a_j w_jk)+ / z+_k - beta (a_j w_jk)- / z-_k) R_k, where
    z+_k = sum_j (a_j w_jk)+ + b+_k and z-_k = sum_j (a_j w_jk)- + b-_k. Sign convention:
    beta weighs the negative contributions and is subtracted (AlphaBeta(2, 1) is 'alpha2-beta1').
    `bias=False` drops the bias from z+ and z- (nothing is absorbed but where z+ or z- is 0)."""

    alpha: float = 2.0
    beta: float = 1.0
    bias: bool = True

    def __post_init__(self):
        if abs(self.alpha - self.beta - 1.0) > 1e-9 or self.beta < 0:
            raise ValueError(f"AlphaBeta needs alpha - beta = 1 and beta >= 0, got alpha={self.alpha}, beta={self.beta}")

    def apply(self, module, inputs, z, ctx):
        a, zd = inputs[0], z.detach()
        f = linear_fn(module)
        w = module.weight.detach()
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        ap = a.clamp(min=0)
        # z- is computed, not taken as z - z+: round-off there turns an exact 0 into 1e-16
        zp, zn = f(ap, wp, None), (f(ap, wn, None) if self.beta else None)
        if bool((a < 0).any()):
            an = a.clamp(max=0)
            zp = zp + f(an, wn, None)
            zn = zn + f(an, wp, None) if self.beta else None
        b = _bias(module, z) if self.bias else None
        alpha, beta = self.alpha, self.beta

        def back(g):
            r = g * zd
            den_p = zp.detach() if b is None else zp.detach() + b.clamp(min=0)
            gp = safe_divide(alpha * r, den_p)
            passed = gp * zp.detach() if ctx.track else None
            grads = [None, gp]
            if beta:
                den_n = zn.detach() if b is None else zn.detach() + b.clamp(max=0)
                gn = safe_divide(-beta * r, den_n)
                passed = passed + gn * zn.detach() if ctx.track else None
                grads.append(gn)
            if ctx.track:
                ctx.add_absorbed(module, _per_sample(r - passed))
            return tuple(grads)

        return route(back, z, zp, *( (zn,) if beta else ()))


class ZPlus(AlphaBeta):
    """z+ rule (Montavon et al. 2017): R_j = sum_k (a_j w_jk)+ / sum_j (a_j w_jk)+ R_k
    (alpha = 1, beta = 0, biases ignored: nothing is absorbed but where no contribution is positive)."""

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

    def apply(self, module, inputs, output, ctx):
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
                if ctx.track:
                    ctx.add_absorbed(module, lost)
                return torch.zeros_like(a), None

        return _Fn.apply(a, output.detach())


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
        bias = torch.zeros((), dtype=z.dtype, device=z.device) if bias is None else bias
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

    def apply(self, module, inputs, output, ctx):
        if self.expand is None and type(module) is nn.ReLU:
            return output  # relu(x) / x is the ReLU derivative: the plain gradient is exact
        x = inputs[0]
        xb = x if self.expand is None else self.expand(x, output)
        yd = output.detach()

        def back(g):
            r = g * yd
            gx = safe_divide(r, xb.detach())
            if ctx.track:
                ctx.add_absorbed(module, _per_sample(r.masked_fill_(xb.detach() != 0, 0.0)))
            return None, gx

        return route(back, output, xb)


@dataclass(frozen=True, repr=False)
class Rescale(Rule):
    """Reference-based rule for an element-wise or one-to-many non-linear map y = f(x)
    (DeepLIFT's rescale rule, Shrikumar et al. 2017, in relevance form). With the reference
    x0 (a number or a tensor broadcastable to x) and y0 = f(x0), output k splits its relevance
    R_k into the input's departure from the reference and an absorbed part:

        R_x = sum_k R_k (y_k - y_k(x0)) / y_k,    absorbed = sum_k R_k y_k(x0) / y_k.

    Carried as a modified gradient (R_k = y_k g_k), R_k / y_k is the arriving gradient g_k,
    so the message is R_x = sum_k g_k (y_k - y0_k) and the rule never divides by y_k. That is
    the stabilization where y_k ~ 0: where a membership underflows to exactly 0, R_k = 0 but
    its multiplier g_k (set by the rules above) still counts, so moving x away from a
    reference bin it leaves empty is credited to x (the limit of the formula as y_k -> 0).
    x = x0 gives R_x = 0 exactly; for ReLU with reference 0 the rule equals Pass. The input
    carries R_x as x * grad, so where x = 0 but R_x != 0 (a non-zero reference) R_x is
    absorbed too. `expand(x, y)` broadcasts the input (and the reference) to the output's
    shape for one-to-many maps (default: element-wise). y0 is computed with the module's own
    forward (hooks bypassed) on the reference expanded to x's shape."""

    reference: float | torch.Tensor = 0.0
    expand: object = None

    def apply(self, module, inputs, output, ctx):
        x = inputs[0]
        with torch.no_grad():
            x0 = torch.as_tensor(self.reference, dtype=x.dtype, device=x.device).expand_as(x).contiguous()
            y0 = module.forward(x0).detach()  # .forward: the hooks must not see the reference
        if y0.shape != output.shape:
            raise ValueError(f"Rescale: {type(module).__name__} maps the reference to shape {tuple(y0.shape)}, "
                             f"the input to {tuple(output.shape)}")
        if self.expand is None and output.shape != x.shape:
            raise TypeError(f"Rescale on {type(module).__name__}: output shape {tuple(output.shape)} differs from the "
                            f"input's {tuple(x.shape)}; give expand(x, y) for a one-to-many map")
        xb = x if self.expand is None else self.expand(x, output)
        dy = output.detach() - y0

        def back(g):
            xd = xb.detach()
            moved = g * dy  # R_k (y_k - y0_k) / y_k
            gx = safe_divide(moved, xd)
            if ctx.track:
                lost = moved.masked_fill_(xd != 0, 0.0)  # x = 0 cannot carry x * grad
                ctx.add_absorbed(module, _dot(g, y0) + _per_sample(lost))
            return None, gx

        return route(back, output, xb)


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

    def apply(self, module, inputs, output, ctx):
        if self.epsilon == 0:
            return output
        eps, zd = self.epsilon, output.detach()

        def back(g):
            az = zd.abs()
            gz = g * (az / (az + eps))
            if ctx.track:
                ctx.add_absorbed(module, _dot(g - gz, zd))
            return (gz,)

        return route(back, output)


@dataclass(frozen=True, repr=False)
class Product(Rule):
    """Element-wise product y = u * v of a module's two inputs. mode 'half': R_u = R_v = R / 2;
    'first' / 'second': all relevance to that factor, the other treated as constant (as for
    gates, AttnLRP, Ali et al. 2022)."""

    mode: str = "half"

    def __post_init__(self):
        if self.mode not in ("half", "first", "second"):
            raise ValueError(f"Product mode must be 'half', 'first' or 'second', got {self.mode!r}")

    def apply(self, module, inputs, output, ctx):
        if len(inputs) != 2:
            raise TypeError(f"Product rule needs a module with two inputs, {type(module).__name__} got {len(inputs)}")
        u, v = inputs
        if self.mode == "first":
            out = u * v.detach()
        elif self.mode == "second":
            out = u.detach() * v
        else:
            out = 0.5 * (u * v.detach() + u.detach() * v)
        return out + (output - out).detach()


@dataclass(frozen=True, repr=False)
class Gradient(Rule):
    """The plain gradient (no modification): right for max pooling (winner takes all) and for
    any op where gradient x input is the intended message."""

    def apply(self, module, inputs, output, ctx):
        return output
