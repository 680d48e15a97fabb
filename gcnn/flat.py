"""The proposal's literal combined network: the flattened Molecular Graph (`molgraph.flatten`'s
max_atoms x 21 atom block, then the i < j pairs x 13) read by a fully connected network, with a
flat autoencoder's encoder (`dae.TiedAutoencoder`, `qmlrp dae train --variant flat`) as its input
stage or without one.

It keeps the weave network's interface, `forward(atom_features (B,N,21), pair_features
(B,N,N,13), atom_mask (B,N)) -> (B, n_outputs)`, so training, prediction, CV and the relevance
pass take it as they take a WeaveNet. Unlike the weave network it is not invariant to the order
of the atoms (slot i is whatever atom the file lists i-th) and it reads the padding: the
standardized value of an empty slot's continuous features is -mean/std, not 0, so a molecule's
empty slots tell the network its size. `PaddingSlots` makes that visible to LRP: the relevance
that reaches empty slots is reported as absorbed by the module named 'padding' (gcnn.lrp_rules),
instead of vanishing into constants.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .model import ACTIVATIONS, config_of

ARCHITECTURE = "flat"


def flat_size(max_atoms: int, n_atom_features: int = 21, n_pair_features: int = 13) -> int:
    return max_atoms * n_atom_features + max_atoms * (max_atoms - 1) // 2 * n_pair_features


def tiled_standardization(atoms: torch.Tensor, pairs: torch.Tensor, max_atoms: int, continuous: torch.Tensor):
    """(mean, std) of the flat vector's standardization: each feature's mean and std over the real
    atom rows `atoms` (pair rows `pairs`), the same for every slot, for the flat entries marked
    `continuous` (std > 1e-8); mean 0 and std 1 elsewhere. Per-slot statistics would be estimated
    from the few molecules that fill the last slots, and a slot's tiny std blows held-out values up."""
    n_pairs = max_atoms * (max_atoms - 1) // 2
    mean = torch.cat([atoms.mean(0).repeat(max_atoms), pairs.mean(0).repeat(n_pairs)])
    std = torch.cat([atoms.std(0, unbiased=False).repeat(max_atoms), pairs.std(0, unbiased=False).repeat(n_pairs)])
    keep = continuous & (std > 1e-8)
    return torch.where(keep, mean, torch.zeros_like(mean)), torch.where(keep, std, torch.ones_like(std))


@dataclass(frozen=True)
class FlatConfig:
    """Everything needed to rebuild a FlatNet (config.json's 'model', with architecture 'flat')."""

    architecture: str = ARCHITECTURE
    max_atoms: int = 29
    n_atom_features: int = 21
    n_pair_features: int = 13
    head_hidden: tuple[int, ...] = (256, 128)
    n_outputs: int = 1
    activation: str = "relu"
    # a flat autoencoder's config (`dae.TiedAutoencoder.config()`); its encoder is the input stage
    input_stage: dict | None = None
    freeze_input_stage: bool = False

    def __post_init__(self):
        if self.architecture != ARCHITECTURE:
            raise ValueError(f"FlatConfig is architecture {ARCHITECTURE!r}, got {self.architecture!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}")
        for name in ("max_atoms", "n_atom_features", "n_pair_features", "n_outputs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "head_hidden", tuple(int(h) for h in self.head_hidden))
        if self.input_stage is not None:
            n_in = int(self.input_stage.get("sizes", [0])[0])
            if n_in != self.n_inputs:
                raise ValueError(f"input_stage reads {n_in} inputs; the flat vector of {self.max_atoms} atoms has "
                                 f"{self.n_inputs}")

    @property
    def n_inputs(self) -> int:
        return flat_size(self.max_atoms, self.n_atom_features, self.n_pair_features)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "FlatConfig":
        return config_of(cls, data)


class FlattenGraph(nn.Module):
    """(atoms (B, N, Fa), pairs (B, N, N, Fp), atom_mask (B, N)) -> flat (B, D): the atom rows of
    slots 0..max_atoms-1, then the pairs i < j row-major, zero padded (the order of
    `molgraph.flatten`). A selection of input entries, so the plain gradient (and with it LRP's
    relevance) returns to them unchanged; the pairs j > i get none (each pair is read once).
    `slots(atom_mask, Fa, Fp)` is the (B, D) mask of the entries of real atoms and pairs."""

    def __init__(self, max_atoms: int):
        super().__init__()
        self.max_atoms = max_atoms
        i, j = torch.triu_indices(max_atoms, max_atoms, 1)
        self.register_buffer("i", i, persistent=False)
        self.register_buffer("j", j, persistent=False)

    def _fit(self, mask):
        """The atom mask cropped or padded to max_atoms (an error for a molecule that is too large)."""
        m, n = self.max_atoms, mask.shape[1]
        if n > m and bool(mask[:, m:].any()):
            counts = mask.sum(1)
            k = int(torch.argmax(counts))
            raise ValueError(f"molecule {k} of the batch has {int(counts[k])} atoms; this flat network reads at "
                             f"most max_atoms={m}")
        return mask[:, :m] if n >= m else nn.functional.pad(mask, (0, m - n))

    def forward(self, atoms, pairs, atom_mask):
        b, n = atoms.shape[:2]
        m = self.max_atoms
        self._fit(atom_mask.bool())
        if n >= m:
            atoms, pairs = atoms[:, :m], pairs[:, :m, :m]
        else:  # zero padding up to max_atoms (a padded batch's extra rows are zero already)
            atoms = nn.functional.pad(atoms, (0, 0, 0, m - n))
            pairs = nn.functional.pad(pairs, (0, 0, 0, m - n, 0, m - n))
        return torch.cat([atoms.reshape(b, -1), pairs[:, self.i, self.j].reshape(b, -1)], dim=1)

    def slots(self, atom_mask, n_atom_features: int, n_pair_features: int):
        mask = self._fit(atom_mask.bool())
        b, m = mask.shape
        return torch.cat([mask[:, :, None].expand(b, m, n_atom_features).reshape(b, -1),
                          (mask[:, self.i] & mask[:, self.j])[:, :, None].expand(b, len(self.i), n_pair_features)
                          .reshape(b, -1)], 1)


class PaddingSlots(nn.Module):
    """x where the slot is a real atom or pair, the constant `value` (B, D broadcast) in empty
    slots: the standardized value of an empty slot (-mean/std of a continuous feature, 0 of the
    others). Numerically it changes nothing after the stage's Standardize; it is the module LRP
    books the empty slots' relevance to (gcnn.lrp_rules: absorbed as 'padding')."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("value", torch.zeros(n))

    def forward(self, x, slots):
        return torch.where(slots, x, self.value.to(x.dtype))


class FlatNet(nn.Module):
    """forward(atom_features, pair_features, atom_mask) -> (B, n_outputs): flatten, standardize
    (the input stage's Standardize; without a stage, per-feature statistics of the training data
    that the Trainer sets with `fit_input_standardization`), the empty slots' values
    (PaddingSlots), the stage's encoder layers (if any), then the fully connected head."""

    def __init__(self, config: FlatConfig | None = None, **kwargs):
        super().__init__()
        self.config = config or FlatConfig(**kwargs)
        c = self.config
        act = ACTIVATIONS[c.activation]
        self.flatten = FlattenGraph(c.max_atoms)
        width = c.n_inputs
        self.input_stage = None
        if c.input_stage is not None:
            import dae

            try:
                ae = dae.TiedAutoencoder.from_config(c.input_stage)
            except (TypeError, ValueError, KeyError) as exc:
                raise ValueError(f"input_stage: {exc}") from None
            self.input_stage = ae.encoder  # Standardize, then the encoder's Linear layers and activations
            if c.freeze_input_stage:
                self.input_stage.requires_grad_(False)
            width = ae.n_code
        else:
            from dae import Standardize

            self.standardize_raw = Standardize(width)  # set from training data: fit_input_standardization
        self.padding = PaddingSlots(c.n_inputs)
        head = []
        for h in c.head_hidden:
            head += [nn.Linear(width, h), act()]
            width = h
        head.append(nn.Linear(width, c.n_outputs))
        self.head = nn.Sequential(*head)

    @property
    def standardize(self) -> nn.Module:
        return self.input_stage[0] if self.input_stage is not None else self.standardize_raw

    def _encoder_layers(self):
        return self.input_stage[1:] if self.input_stage is not None else nn.Identity()

    @torch.no_grad()
    def sync_padding(self) -> None:
        """Empty slots' value = the standardization of 0 (call after changing the stage's statistics)."""
        s = self.standardize
        self.padding.value.copy_(-s.mean / s.std)

    @torch.no_grad()
    def fit_input_standardization(self, atom_features, pair_features, atom_mask) -> None:
        """Without an input stage: standardize each continuous feature (molgraph.FEATURE_KINDS)
        with its mean and std over the real atoms (pairs i != j) of a training batch, the same for
        every slot, as the flat autoencoder does (`qmlrp.autoencoder.set_flat_standardization`);
        the other features stay as they are. With a stage, the stage's standardization is kept."""
        if self.input_stage is not None:
            return
        from molgraph import FEATURE_GROUPS, FEATURE_KINDS

        c = self.config
        mask = atom_mask.bool()
        n = mask.shape[1]
        pm = mask[:, :, None] & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=mask.device)
        cont_a, cont_p = torch.zeros(c.n_atom_features, dtype=torch.bool), torch.zeros(c.n_pair_features, dtype=torch.bool)
        for g in FEATURE_GROUPS.values():
            if FEATURE_KINDS[g.name] == "continuous":
                (cont_a if g.kind == "atom" else cont_p)[list(g.indices)] = True
        n_pairs = c.max_atoms * (c.max_atoms - 1) // 2
        mean, std = tiled_standardization(atom_features[mask].double(), pair_features[pm].double(), c.max_atoms,
                                          torch.cat([cont_a.repeat(c.max_atoms), cont_p.repeat(n_pairs)]))
        s = self.standardize_raw
        s.mean.copy_(mean)
        s.std.copy_(std)
        self.sync_padding()

    def flat_inputs(self, atom_features, pair_features, atom_mask):
        """(B, D) what the first layer reads: the standardized flat vector, empty slots included."""
        c = self.config
        x = self.flatten(atom_features, pair_features, atom_mask)
        slots = self.flatten.slots(atom_mask, c.n_atom_features, c.n_pair_features)
        return self.padding(self.standardize(x), slots)

    def pooled(self, atom_features, pair_features, atom_mask):
        """(B, width) the vector the head reads (the code with an input stage, the standardized
        flat vector without): `forward` = head(pooled), as for WeaveNet.pooled."""
        return self._encoder_layers()(self.flat_inputs(atom_features, pair_features, atom_mask))

    def forward(self, atom_features, pair_features, atom_mask):
        return self.head(self.pooled(atom_features, pair_features, atom_mask))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.input_stage is not None and self.config.freeze_input_stage:
            self.input_stage.eval()
        return self


def build_model(config) -> nn.Module:
    """The network of a model config (a WeaveConfig or a FlatConfig)."""
    from .model import WeaveNet

    return FlatNet(config) if isinstance(config, FlatConfig) else WeaveNet(config)


def config_from_json(data: dict):
    """A model config from config.json's 'model' object: FlatConfig for architecture 'flat',
    WeaveConfig otherwise (weave configs carry no architecture key)."""
    from .model import WeaveConfig

    if data.get("architecture") == ARCHITECTURE:
        return FlatConfig.from_json(data)
    if "architecture" in data:
        raise ValueError(f"unknown architecture {data['architecture']!r}; valid: weave (no key), {ARCHITECTURE}")
    return WeaveConfig.from_json(data)
