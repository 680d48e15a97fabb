"""What each input feature is, so that corruption and loss fit it (imports only torch).

A `Layout` is an ordered list of `Segment`s over the last axis of the input. Kinds:

- 'categorical': exactly one of the segment's features is 1 (one-hot, e.g. the atom type);
  loss: cross-entropy over the segment's outputs; corruption: the whole segment is masked.
- 'categorical_or_none': at most one is 1 (hybridization, bond type, chirality); the "none"
  class has an implied logit 0, so P(k) = e^z_k / (1 + sum_j e^z_j); loss and corruption as
  for 'categorical'.
- 'binary': independent 0/1 flags (hydrogen-bond donor, graph distance <= k); loss: binary
  cross-entropy per flag; corruption: each flag masked on its own.
- 'continuous': real values (partial charge, distance, ring counts), standardized by the
  model; loss: squared error on the standardized value; corruption: additive Gaussian noise.

Masking noise sets a feature to 0 (Vincent et al. 2010); for one-hot segments it removes the
whole segment, so the network cannot read the answer off the other members of the group.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

KINDS = ("categorical", "categorical_or_none", "binary", "continuous")


@dataclass(frozen=True)
class Segment:
    name: str
    start: int
    stop: int
    kind: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"segment {self.name!r}: unknown kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if not 0 <= self.start < self.stop:
            raise ValueError(f"segment {self.name!r}: empty or negative range {self.start}..{self.stop}")

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def width(self) -> int:
        return self.stop - self.start

    def to_json(self) -> list:
        return [self.name, self.start, self.stop, self.kind]


@dataclass(frozen=True)
class Layout:
    segments: tuple[Segment, ...]

    def __post_init__(self):
        segs = tuple(self.segments)
        object.__setattr__(self, "segments", segs)
        if not segs:
            raise ValueError("a layout needs at least one segment")
        pos = 0
        for s in segs:
            if s.start != pos:
                raise ValueError(f"segment {s.name!r} starts at {s.start}, expected {pos}: segments must tile the "
                                 f"features in order without gaps")
            pos = s.stop
        groups: dict[tuple[str, int], list[int]] = {}
        for s in segs:
            groups.setdefault((s.kind, s.width), []).append(s.start)
        # not a field: eq, hash and repr stay those of the segments
        object.__setattr__(self, "_runs", [(kind, torch.tensor(starts)[:, None] + torch.arange(width)[None, :])
                                           for (kind, width), starts in groups.items()])

    @property
    def n_features(self) -> int:
        return self.segments[-1].stop

    def continuous(self) -> torch.Tensor:
        """(n_features,) bool: which features are continuous (standardized, Gaussian noise)."""
        out = torch.zeros(self.n_features, dtype=torch.bool)
        for s in self.segments:
            if s.kind == "continuous":
                out[s.slice] = True
        return out

    def tile(self, copies: int, prefix: str = "") -> "Layout":
        """`copies` consecutive copies (the flat Molecular Graph: one per atom or pair slot);
        segment names get a '{prefix}{copy}.' prefix."""
        n, segs = self.n_features, []
        for c in range(copies):
            segs += [Segment(f"{prefix}{c}.{s.name}", s.start + c * n, s.stop + c * n, s.kind) for s in self.segments]
        return Layout(tuple(segs))

    def __add__(self, other: "Layout") -> "Layout":
        n = self.n_features
        return Layout(self.segments + tuple(Segment(s.name, s.start + n, s.stop + n, s.kind) for s in other.segments))

    def to_json(self) -> list:
        return [s.to_json() for s in self.segments]

    @classmethod
    def from_json(cls, data) -> "Layout":
        try:
            return cls(tuple(Segment(str(n), int(a), int(b), str(k)) for n, a, b, k in data))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a feature layout ([[name, start, stop, kind], ...]): {exc}") from None

    def runs(self) -> list[tuple[str, torch.Tensor]]:
        """The segments grouped by (kind, width): [(kind, index (count, width))], so that a tiled
        layout (the flat input: 29 atom slots and 406 pair slots of the same segments) is
        handled in a few gathers instead of thousands of slices (computed once, with the layout)."""
        return self._runs


def _blocks(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return x[..., idx.to(x.device)]


def _with_none(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([z, torch.zeros_like(z[..., :1])], dim=-1)


def corrupt(x: torch.Tensor, layout: Layout, masking: float, noise: float, continuous_std: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising corruption: each one-hot segment zeroed with probability `masking`, each binary
    flag zeroed with probability `masking`, Gaussian noise of `noise` standard deviations
    (`continuous_std`, per feature; 1 if None) added to continuous features."""
    if masking == 0 and noise == 0:
        return x
    keep = torch.ones_like(x)
    add = torch.zeros_like(x)
    for kind, idx in layout.runs():
        shape = (*x.shape[:-1], *idx.shape)
        if kind in ("categorical", "categorical_or_none"):
            k = torch.rand(shape[:-1], generator=generator, device=x.device) >= masking
            keep[..., idx] = k.unsqueeze(-1).expand(shape).to(x.dtype)
        elif kind == "binary":
            keep[..., idx] = (torch.rand(shape, generator=generator, device=x.device) >= masking).to(x.dtype)
        elif noise > 0:
            scale = 1.0 if continuous_std is None else _blocks(continuous_std, idx)
            add[..., idx] = noise * scale * torch.randn(shape, generator=generator, device=x.device)
    return x * keep + add


def segment_losses(output: torch.Tensor, target: torch.Tensor, layout: Layout,
                   weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Reconstruction loss per segment *kind*.

    output: the decoder's raw output (logits for one-hot and binary segments, the standardized
    value for continuous ones); target: the clean input, standardized the same way (one-hot
    and binary features are left as they are by standardization). weight: None, a (...,) row
    weight (padding atoms: 0), or a (..., n_features) weight per feature (the flat input's
    padded slots: 0; a segment counts when its first feature's weight is 1). Returns
    {kind: loss summed over segments, averaged over rows (row weights) or leading rows}; the
    training loss is the sum over kinds."""
    lead = output.shape[:-1]
    if weight is None:
        weight = torch.ones(lead, dtype=output.dtype, device=output.device)
    weight = weight.to(output.dtype)
    per_feature = weight.dim() == output.dim()
    rows = torch.tensor(float(max(lead.numel(), 1))) if per_feature else weight.sum().clamp_min(1.0)
    out: dict[str, torch.Tensor] = {}
    for kind, idx in layout.runs():
        z, t = _blocks(output, idx), _blocks(target, idx)
        w = _blocks(weight, idx)[..., 0] if per_feature else weight.unsqueeze(-1)
        if kind == "categorical":
            loss = -(F.log_softmax(z, -1) * t).sum(-1)
        elif kind == "categorical_or_none":
            tt = torch.cat([t, (1 - t.sum(-1, keepdim=True)).clamp_min(0)], -1)
            loss = -(F.log_softmax(_with_none(z), -1) * tt).sum(-1)
        elif kind == "binary":
            loss = F.binary_cross_entropy_with_logits(z, t, reduction="none").sum(-1)
        else:
            loss = ((z - t) ** 2).sum(-1)
        out[kind] = out.get(kind, 0) + (loss * w).sum() / rows
    return out


def to_features(output: torch.Tensor, layout: Layout, continuous_mean: torch.Tensor | None = None,
                continuous_std: torch.Tensor | None = None) -> torch.Tensor:
    """The decoder's raw output as a reconstruction in feature units: one-hot segments as the
    most probable class (all zeros for 'none'), flags thresholded at 0.5, continuous values
    de-standardized."""
    out = torch.zeros_like(output)
    for kind, idx in layout.runs():
        z, width = _blocks(output, idx), idx.shape[1]
        if kind == "categorical":
            o = F.one_hot(z.argmax(-1), width).to(z.dtype)
        elif kind == "categorical_or_none":
            o = F.one_hot(_with_none(z).argmax(-1), width + 1)[..., :width].to(z.dtype)
        elif kind == "binary":
            o = (z > 0).to(z.dtype)
        else:
            std = 1.0 if continuous_std is None else _blocks(continuous_std, idx)
            mean = 0.0 if continuous_mean is None else _blocks(continuous_mean, idx)
            o = z * std + mean
        out[..., idx] = o
    return out
