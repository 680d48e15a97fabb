"""Tied-weight denoising autoencoders over the Molecular Graph (imports only torch).

`TiedAutoencoder(sizes=(n_in, n_hidden, n_code))` is the proposal's symmetric network: an
encoder input -> hidden -> code, and a decoder code -> hidden -> input whose linear maps are
the transposes of the encoder's (only the decoder's biases are its own parameters).
Continuous features are standardized inside the model (`Standardize`), so the encoder reads
features in their own units and the combined networks keep the raw-feature interface.

`GraphAutoencoder` holds one autoencoder for atom rows (21 features) and one for pair rows
(13): codes per atom and per pair, which can replace the weave network's input. The flat
variant is a single `TiedAutoencoder` over `molgraph.flatten`'s 5,887-long vector.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layout import Layout, Segment, corrupt, segment_losses, to_features

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "identity": nn.Identity}


class Standardize(nn.Module):
    """x -> (x - mean) / std per feature (mean 0, std 1 for features left as they are).
    Element-wise, so LRP passes relevance straight through it."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))

    def forward(self, x):
        return (x - self.mean) / self.std


class TiedLinear(nn.Module):
    """The transpose of another nn.Linear: y = x W^T^T + b = x W + b, with W the tied layer's
    weight (not a parameter of this module) and b this module's own bias.

    The tied layer is held outside the module tree, so the weight is one parameter, counted and
    updated once, and this module stays a leaf (LRP rules attach to it like to a Linear:
    `weight` and `lrp_linear` are what the linear rules read)."""

    def __init__(self, tied: nn.Linear):
        super().__init__()
        object.__setattr__(self, "_tied", tied)
        self.bias = nn.Parameter(torch.zeros(tied.in_features))

    @property
    def weight(self) -> torch.Tensor:
        return self._tied.weight.t()

    @staticmethod
    def lrp_linear(x, weight, bias):
        return F.linear(x, weight, bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self._tied.out_features}, out_features={self._tied.in_features}, tied"


class TiedAutoencoder(nn.Module):
    """encode(x) -> code, decode(code) -> raw output (logits / standardized values, see
    `dae.layout`), forward(x) = decode(encode(x)), reconstruct(x) in feature units.

    sizes: (n_in, hidden..., n_code), at least two entries; activation: between layers;
    code_activation: on the code (default identity: a linear bottleneck)."""

    def __init__(self, sizes=(21, 32, 8), layout: Layout | None = None, activation: str = "relu",
                 code_activation: str = "identity"):
        super().__init__()
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must be (n_in, hidden..., n_code) of positive ints, got {sizes}")
        for a in (activation, code_activation):
            if a not in ACTIVATIONS:
                raise ValueError(f"unknown activation {a!r}; valid: {', '.join(ACTIVATIONS)}")
        if layout is not None and layout.n_features != sizes[0]:
            raise ValueError(f"layout covers {layout.n_features} features, sizes[0] is {sizes[0]}")
        self.sizes, self.activation, self.code_activation = sizes, activation, code_activation
        self.layout = layout  # as given (None: every feature continuous), for config()
        self._kinds = layout if layout is not None else Layout((Segment("x", 0, sizes[0], "continuous"),))
        act = ACTIVATIONS[activation]
        enc: list[nn.Module] = [Standardize(sizes[0])]
        linears = []
        for k in range(len(sizes) - 1):
            lin = nn.Linear(sizes[k], sizes[k + 1])
            linears.append(lin)
            enc += [lin, act() if k < len(sizes) - 2 else ACTIVATIONS[code_activation]()]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = []
        for k, lin in enumerate(reversed(linears)):
            dec.append(TiedLinear(lin))  # the decoder's weights ARE the encoder's, transposed
            if k < len(linears) - 1:
                dec.append(act())
        self.decoder = nn.Sequential(*dec)

    # ---------------------------------------------------------------- config
    def config(self) -> dict:
        return {"sizes": list(self.sizes), "activation": self.activation, "code_activation": self.code_activation,
                "layout": self.layout.to_json() if self.layout is not None else None}

    @classmethod
    def from_config(cls, cfg: dict) -> "TiedAutoencoder":
        if not isinstance(cfg, dict):
            raise ValueError(f"autoencoder config must be an object, got {type(cfg).__name__}")
        known = {"sizes", "activation", "code_activation", "layout"}
        if set(cfg) - known or "sizes" not in cfg:
            raise ValueError(f"autoencoder config needs 'sizes' and takes only {sorted(known)}; got {sorted(cfg)}")
        layout = Layout.from_json(cfg["layout"]) if cfg.get("layout") is not None else None
        return cls(cfg["sizes"], layout, cfg.get("activation", "relu"), cfg.get("code_activation", "identity"))

    @property
    def standardize(self) -> Standardize:
        return self.encoder[0]

    @property
    def n_code(self) -> int:
        return self.sizes[-1]

    # ---------------------------------------------------------------- maps
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction in feature units (classes decided, flags thresholded)."""
        s = self.standardize
        return to_features(self(x), self._kinds, s.mean, s.std)

    # ---------------------------------------------------------------- training
    @torch.no_grad()
    def fit_standardization(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Set the continuous features' mean and std from data x (rows, n_in); weight: (rows,)
        or (rows, n_in) 0/1 (padding excluded)."""
        cont = self._kinds.continuous()
        w = torch.ones_like(x) if weight is None else (weight.unsqueeze(-1).expand_as(x) if weight.dim() == 1 else weight)
        w = w.to(x.dtype)
        n = w.sum(0).clamp_min(1)
        mean = (x * w).sum(0) / n
        std = (((x - mean) ** 2 * w).sum(0) / n).sqrt()
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        s = self.standardize
        s.mean.copy_(torch.where(cont, mean, torch.zeros_like(mean)))
        s.std.copy_(torch.where(cont, std, torch.ones_like(std)))

    def losses(self, x: torch.Tensor, weight: torch.Tensor | None = None, masking: float = 0.0, noise: float = 0.0,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Denoising reconstruction losses per feature kind: the input is corrupted (`masking`
        probability for one-hot segments and flags, `noise` standard deviations for continuous
        features), the clean input is the target; `weight` as in `dae.layout.segment_losses`."""
        s, layout = self.standardize, self._kinds
        noisy = corrupt(x, layout, masking, noise, s.std, generator) if self.training else x
        return segment_losses(self(noisy), s(x), layout, weight)


class NeighbourContext(nn.Module):
    """Each atom's features next to the sum of its bonded neighbours' features:
    forward(atoms (B, N, F), adjacency (B, N, N) 0/1) -> (B, N, 2F), [x_i, sum_j A_ij x_j].

    The adjacency is a constant of the molecule (detached), so the map is linear in the atoms
    and LRP takes its plain gradient: a neighbour's share of the relevance goes back to that
    neighbour's own features, and nothing is absorbed."""

    def forward(self, atoms: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        a = adjacency.detach().to(atoms.dtype)
        return torch.cat([atoms, a @ atoms], dim=-1)


class _AtomContext(nn.Module):
    """What the atom encoder of a graph autoencoder (or of its input stage) reads: the atom
    features, or, with `context={'adjacency_column': k}`, each atom with its bonded neighbourhood
    (`NeighbourContext`, bonded where pair feature k is 1)."""

    def _set_context(self, context: dict | None) -> None:
        if context is not None and (not isinstance(context, dict) or set(context) != {"adjacency_column"}
                                    or not isinstance(context["adjacency_column"], int) or context["adjacency_column"] < 0):
            raise ValueError(f"'context' must be {{'adjacency_column': a pair-feature index >= 0}}, got {context!r:.80}")
        self.context_column = None if context is None else context["adjacency_column"]
        self.context = None if context is None else NeighbourContext()

    def context_config(self) -> dict | None:
        return None if self.context_column is None else {"adjacency_column": self.context_column}

    def atom_inputs(self, atom_features, pair_features):
        """The atom features, with their neighbourhood when there is a context."""
        if self.context is None:
            return atom_features
        return self.context(atom_features, pair_features[..., self.context_column])


class GraphAutoencoder(_AtomContext):
    """Codes per atom and per pair: `atoms` (a TiedAutoencoder over the 21 atom features) and
    `pairs` (over the 13 pair features). encode(atom_features (..., 21), pair_features
    (..., 13)) -> (atom codes, pair codes); the caller masks padding.

    With `context={'adjacency_column': k}` the atom autoencoder reads (and rebuilds) each atom
    with its neighbourhood, [x_i, sum of x_j over the atoms j bonded to i] (`NeighbourContext`,
    bonded where pair feature k is 1), so an atom's code can say what it is bonded to; `encode`
    then needs whole molecules (B, N, 21) and (B, N, N, 13)."""

    def __init__(self, atoms: TiedAutoencoder, pairs: TiedAutoencoder, context: dict | None = None):
        super().__init__()
        self.atoms, self.pairs = atoms, pairs
        self._set_context(context)

    def config(self) -> dict:
        cfg = {"atoms": self.atoms.config(), "pairs": self.pairs.config()}
        if self.context_column is not None:
            cfg["context"] = self.context_config()
        return cfg

    @classmethod
    def from_config(cls, cfg: dict) -> "GraphAutoencoder":
        if not isinstance(cfg, dict) or not {"atoms", "pairs"} <= set(cfg) <= {"atoms", "pairs", "context"}:
            raise ValueError(f"graph autoencoder config needs 'atoms' and 'pairs' (and optionally 'context'), got {cfg!r:.80}")
        return cls(TiedAutoencoder.from_config(cfg["atoms"]), TiedAutoencoder.from_config(cfg["pairs"]), cfg.get("context"))

    def encode(self, atom_features, pair_features):
        return self.atoms.encode(self.atom_inputs(atom_features, pair_features)), self.pairs.encode(pair_features)

    def encoder(self) -> "GraphEncoder":
        """The input stage for a supervised network: the two encoders (copies) as one module."""
        import copy

        return GraphEncoder(copy.deepcopy(self.atoms.encoder), copy.deepcopy(self.pairs.encoder), self.context_config())


class GraphEncoder(_AtomContext):
    """forward(atom_features, pair_features) -> (atom codes, pair codes), row by row: the
    encoder halves of a GraphAutoencoder, as the input stage of a weave network (with the
    autoencoder's neighbourhood context in front of the atom encoder when it has one)."""

    def __init__(self, atoms: nn.Sequential, pairs: nn.Sequential, context: dict | None = None):
        super().__init__()
        self.atoms, self.pairs = atoms, pairs
        self._set_context(context)

    @classmethod
    def from_config(cls, cfg: dict) -> "GraphEncoder":
        g = GraphAutoencoder.from_config(cfg)
        return cls(g.atoms.encoder, g.pairs.encoder, cfg.get("context"))

    def forward(self, atom_features, pair_features):
        return self.atoms(self.atom_inputs(atom_features, pair_features)), self.pairs(pair_features)
