"""The weave graph-convolution network (Kearnes et al. 2016) as used for MG/GC by Faber et
al. 2017.

Defaults and the choices made where Faber et al. are not explicit:
- 2 weave modules with 50 atom and 50 pair channels (DeepChem's WeaveModel defaults, the
  implementation Faber et al. modified);
- ReLU activations, no normalization layers (batch normalization would have to be folded
  before LRP, and molecules of different sizes make its statistics depend on the batch);
- readout: a per-atom dense layer to 128 channels, the 11-bin Gaussian histogram, summed over
  atoms (128 x 11 = 1,408 features), then a head of one hidden layer of 128 and the outputs.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .layers import Add, AtomSum, BothOrders, GaussianHistogram, Mask, PairSum, histogram_sum, summed_pair_update

ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "silu": nn.SiLU}
READOUT_ACTIVATIONS = {**ACTIVATIONS, "identity": nn.Identity}  # the histogram is non-linear by itself


@dataclass(frozen=True)
class WeaveConfig:
    """Everything needed to rebuild a WeaveNet (saved as config.json next to the weights)."""

    n_atom_features: int = 21
    n_pair_features: int = 13
    atom_hidden: int = 50
    pair_hidden: int = 50
    n_layers: int = 2
    readout_hidden: int = 128
    n_gaussians: int = 11
    head_hidden: tuple[int, ...] = (128,)
    n_outputs: int = 1
    activation: str = "relu"
    # an autoencoder's encoders in front of the weave modules (`dae.GraphEncoder` config:
    # {"atoms": ..., "pairs": ...}); the network still reads raw features
    input_stage: dict | None = None
    freeze_input_stage: bool = False
    # Kearnes et al.'s "N2" setting: only pairs at most this many bonds apart exist for the network
    # (graph_distance_le_K of the input); None: all pairs (the Faber-like default)
    pair_cutoff: int | None = None
    # frequency sets in the hydrogen layout (gcnn.sets): hidden widths of a per-hydrogen head that
    # predicts one X-H stretch on each H atom from its own final atom vector; the values, sorted
    # highest first, fill the first `xh_slots` outputs (zeros beyond the molecule's hydrogens) and
    # the molecule-level head gives the other n_outputs - xh_slots. None: one head for all outputs
    xh_head: tuple[int, ...] | None = None
    xh_slots: int = 20
    # with xh_head, a per-atom head for the skeleton too (the other n_outputs - xh_slots outputs):
    # 3 values per heavy atom and 2 per hydrogen (3N - n_H in all; a molecule's n - n_H skeletal
    # modes are the highest 3N - n_H - 6 of them, 3N - n_H - 5 if linear), each from the atom's
    # final vector and a `skeleton_context`-wide projection of the pooled molecule vector (0: none),
    # sorted highest first. It replaces the molecule-level head (head_hidden is then unused), unless
    # `skeleton_residual`: then the molecule-level head's outputs are added to the sorted values
    # (a per-slot correction read from the pooled vector).
    skeleton_head: tuple[int, ...] | None = None
    skeleton_context: int = 64
    skeleton_residual: bool = False
    # the activation between the per-atom readout layer and the Gaussian histogram; None: the same
    # as `activation` (the Faber-like default, ReLU). The histogram's bins sit at the standard
    # normal's quantiles (-1.645..1.645), which DeepChem's WeaveModel feeds with tanh outputs,
    # batch-normalized; a ReLU leaves the bins below 0 empty and saturates the top one (docs/gcnn.md)
    readout_activation: str | None = None

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if self.readout_activation is not None and self.readout_activation not in READOUT_ACTIVATIONS:
            raise ValueError(f"unknown readout_activation {self.readout_activation!r}; valid: "
                             f"{', '.join(READOUT_ACTIVATIONS)}")
        for name in ("n_atom_features", "n_pair_features", "atom_hidden", "pair_hidden", "n_layers", "readout_hidden",
                     "n_gaussians", "n_outputs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "head_hidden", tuple(int(h) for h in self.head_hidden))
        if self.pair_cutoff is not None:
            from molgraph.features import MAX_GRAPH_DISTANCE, N_PAIR_FEATURES

            k = int(self.pair_cutoff)
            if not 1 <= k <= MAX_GRAPH_DISTANCE:
                raise ValueError(f"pair_cutoff must be a graph distance from 1 to {MAX_GRAPH_DISTANCE}, got {self.pair_cutoff}")
            if self.n_pair_features != N_PAIR_FEATURES:
                raise ValueError(f"pair_cutoff reads the Molecular Graph's graph-distance features; the network has "
                                 f"{self.n_pair_features} pair features, not {N_PAIR_FEATURES}")
            object.__setattr__(self, "pair_cutoff", k)
        if self.xh_head is not None:
            from molgraph.features import N_ATOM_FEATURES

            object.__setattr__(self, "xh_head", tuple(int(h) for h in self.xh_head))
            if any(h < 1 for h in self.xh_head):
                raise ValueError(f"xh_head widths must be >= 1, got {self.xh_head}")
            if not 0 < int(self.xh_slots) < self.n_outputs:
                raise ValueError(f"xh_head: xh_slots must be between 1 and n_outputs - 1 = {self.n_outputs - 1}, "
                                 f"got {self.xh_slots} (a per-hydrogen head is for a frequency set in the hydrogen layout)")
            if self.n_atom_features != N_ATOM_FEATURES:
                raise ValueError(f"xh_head finds the hydrogens in the Molecular Graph's atom-type feature; the network "
                                 f"has {self.n_atom_features} atom features, not {N_ATOM_FEATURES}")
            if self.input_stage is not None:
                raise ValueError("xh_head and an input stage do not combine yet: the per-hydrogen head reads the "
                                 "atom types from the raw features, which from_codes does not see")
            object.__setattr__(self, "xh_slots", int(self.xh_slots))
        if self.skeleton_head is not None:
            object.__setattr__(self, "skeleton_head", tuple(int(h) for h in self.skeleton_head))
            if self.xh_head is None:
                raise ValueError("skeleton_head predicts the skeleton block of the hydrogen layout next to the X-H "
                                 "block: it needs xh_head as well")
            if any(h < 1 for h in self.skeleton_head):
                raise ValueError(f"skeleton_head widths must be >= 1, got {self.skeleton_head}")
            if int(self.skeleton_context) < 0:
                raise ValueError(f"skeleton_context must be >= 0, got {self.skeleton_context}")
            object.__setattr__(self, "skeleton_context", int(self.skeleton_context))
        elif self.skeleton_residual:
            raise ValueError("skeleton_residual adds the molecule-level head to a per-atom skeleton head: it needs "
                             "skeleton_head")

    def to_json(self) -> dict:
        d = asdict(self)
        if self.input_stage is None:  # configs (and checkpoints) from before input stages stay as they were
            d.pop("input_stage"), d.pop("freeze_input_stage")
        if self.pair_cutoff is None:  # the same for configs from before the cutoff
            d.pop("pair_cutoff")
        if self.xh_head is None:  # and before the per-hydrogen head
            d.pop("xh_head"), d.pop("xh_slots")
        if self.skeleton_head is None:  # and before the per-atom skeleton head
            d.pop("skeleton_head"), d.pop("skeleton_context")
        if not self.skeleton_residual:  # and before the residual variant
            d.pop("skeleton_residual")
        if self.readout_activation is None:  # and before the readout activation
            d.pop("readout_activation")
        return d

    @classmethod
    def from_json(cls, data: dict) -> "WeaveConfig":
        return config_of(cls, data)


def config_of(cls, data: dict):
    """The config dataclass `cls` from a config.json object, refusing fields it does not have."""
    known = set(cls.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"config has unknown fields {sorted(unknown)}; valid: {sorted(known)}")
    return cls(**data)


class WeaveLayer(nn.Module):
    """One weave module: atoms from atoms (A->A) and from the sum of their pairs (P->A); pairs
    from both orders of their atom pair (A->P) and from pairs (P->P).

    Shapes: atoms (B, N, Fa), pairs (B, N, N, Fp), atom_mask (B, N), pair_mask (B, N, N) ->
    atoms (B, N, Ha), pairs (B, N, N, Hp) (None with update_pairs=False: the last module's pair
    output feeds nothing, so it is not computed)."""

    def __init__(self, fa: int, fp: int, ha: int, hp: int, activation: str = "relu", update_pairs: bool = True):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.aa, self.pa = nn.Linear(fa, ha), nn.Linear(fp, ha, bias=False)
        self.pair_sum, self.add_atoms, self.act_atoms, self.mask_atoms = PairSum(), Add(), act(), Mask()
        self.update_pairs = update_pairs
        if update_pairs:
            self.ap, self.pp = nn.Linear(fa, hp, bias=False), nn.Linear(fp, hp)
            self.both_orders, self.add_pairs, self.act_pairs, self.mask_pairs = BothOrders(), Add(), act(), Mask()

    def forward(self, atoms, pairs, atom_mask, pair_mask, summed_pairs=None, sum_output_pairs=False):
        """`summed_pairs` (B, N, Fp), when given, stands for PairSum(pairs) (pairs may then be None);
        `sum_output_pairs` returns PairSum of the pair output (B, N, Hp) instead of the pairs,
        computed fused (`summed_pair_update`): WeaveNet does both when the next module updates no
        pairs and no hook watches the modules involved."""
        s = self.pair_sum(pairs) if summed_pairs is None else summed_pairs
        a = self.add_atoms(self.aa(atoms), self.pa(s))  # (B, N, Ha)
        a = self.mask_atoms(self.act_atoms(a), atom_mask)
        if not self.update_pairs:
            return a, None
        if sum_output_pairs:
            return a, summed_pair_update(pairs, self.ap(atoms), self.pp, pair_mask)  # (B, N, Hp)
        p = self.add_pairs(self.both_orders(self.ap(atoms)), self.pp(pairs))  # (B, N, N, Hp)
        p = self.mask_pairs(self.act_pairs(p), pair_mask)
        return a, p

    def fusable(self) -> bool:
        """Whether the fused pair update computes this module's pairs: a ReLU module."""
        return self.update_pairs and isinstance(self.act_pairs, nn.ReLU)


class WeaveNet(nn.Module):
    """Weave network: `forward(atom_features (B,N,21), pair_features (B,N,N,13), atom_mask (B,N))
    -> (B, n_outputs)`. Padding never changes a result and the output is invariant to atom order."""

    def __init__(self, config: WeaveConfig | None = None, **kwargs):
        super().__init__()
        self.config = config or WeaveConfig(**kwargs)
        c = self.config
        act = ACTIVATIONS[c.activation]
        fa, fp = c.n_atom_features, c.n_pair_features
        self.input_stage = None
        self.cutoff_column = None
        if c.pair_cutoff is not None:
            from molgraph.features import PAIR_FEATURES

            self.cutoff_column = PAIR_FEATURES.index(f"graph_distance_le_{c.pair_cutoff}")
            self.mask_input_pairs = Mask()  # the pairs beyond the cutoff are zeroed before anything reads them
        if c.input_stage is not None:
            import dae

            try:
                self.input_stage = dae.GraphEncoder.from_config(c.input_stage)
            except (TypeError, ValueError, KeyError) as exc:
                raise ValueError(f"input_stage: {exc}") from None
            sa, sp = c.input_stage["atoms"]["sizes"], c.input_stage["pairs"]["sizes"]
            wide = 2 if c.input_stage.get("context") else 1  # an atom with its neighbour sums
            if (sa[0], sp[0]) != (fa * wide, fp):
                raise ValueError(f"input_stage reads {sa[0]} atom and {sp[0]} pair features; the network gets {fa}"
                                 f"{' (x 2 with the neighbourhood context)' if wide == 2 else ''} and {fp}")
            fa, fp = sa[-1], sp[-1]
            self.mask_atom_codes, self.mask_pair_codes = Mask(), Mask()  # codes of padding (and i = j) are 0, like raw features
            if c.freeze_input_stage:
                self.input_stage.requires_grad_(False)
        layers = []
        for k in range(c.n_layers):
            layers.append(WeaveLayer(fa, fp, c.atom_hidden, c.pair_hidden, c.activation, update_pairs=k < c.n_layers - 1))
            fa, fp = c.atom_hidden, c.pair_hidden
        self.layers = nn.ModuleList(layers)
        self.readout = nn.Linear(c.atom_hidden, c.readout_hidden)
        self.readout_act = READOUT_ACTIVATIONS[c.readout_activation or c.activation]()
        self.histogram = GaussianHistogram(c.n_gaussians)
        self.mask_histogram = Mask()
        self.atom_sum = AtomSum()
        self.flatten = nn.Flatten()
        head, width = [], c.readout_hidden * c.n_gaussians
        for h in c.head_hidden:
            head += [nn.Linear(width, h), act()]
            width = h
        self.xh = None
        if c.xh_head is not None:
            from molgraph.features import ATOM_FEATURES

            self.h_column = ATOM_FEATURES.index("atom_type_H")
            xh, w = [], c.atom_hidden
            for h in c.xh_head:
                xh += [nn.Linear(w, h), act()]
                w = h
            xh.append(nn.Linear(w, 1))
            self.xh = nn.Sequential(*xh)  # one value per atom; only the hydrogens' are read
        self.skeleton = self.context = self.head = None
        if c.skeleton_head is not None:  # per-atom values for the skeleton: no molecule-level head
            pooled = c.readout_hidden * c.n_gaussians
            if c.skeleton_context:
                self.context = nn.Sequential(nn.Linear(pooled, c.skeleton_context), act())
            sk, w = [], c.atom_hidden + c.skeleton_context
            for h in c.skeleton_head:
                sk += [nn.Linear(w, h), act()]
                w = h
            sk.append(nn.Linear(w, 3))
            self.skeleton = nn.Sequential(*sk)  # three values per atom; a hydrogen's third is not read
        if c.skeleton_head is None or c.skeleton_residual:
            head.append(nn.Linear(width, c.n_outputs - (c.xh_slots if c.xh_head is not None else 0)))
            self.head = nn.Sequential(*head)

    def forward(self, atom_features, pair_features, atom_mask):
        if self.xh is None:
            return self.head(self.pooled(atom_features, pair_features, atom_mask))  # (B, n_outputs)
        g, atoms = self.pooled(atom_features, pair_features, atom_mask, with_atoms=True)
        real = atom_mask.bool()
        is_h = (atom_features[..., self.h_column] > 0.5) & real
        xh = hydrogen_block(self.xh(atoms).squeeze(-1), is_h, self.config.xh_slots)
        if self.skeleton is None:
            return torch.cat([xh, self.head(g)], dim=1)  # (B, n_outputs)
        skeleton = self.skeleton_outputs(g, atoms, is_h, real)
        if self.head is not None:  # skeleton_residual: the molecule-level head's per-slot correction
            skeleton = skeleton + self.head(g)
        return torch.cat([xh, skeleton], dim=1)

    def skeleton_outputs(self, g, atoms, is_h, real):
        """(B, n_outputs - xh_slots): the per-atom skeleton values (3 per heavy atom, 2 per
        hydrogen), the highest 3N - n_H - 5 of them sorted highest first (enough for a linear
        molecule; a non-linear one reads one fewer), zeros beyond."""
        b, n, _ = atoms.shape
        x = atoms
        if self.context is not None:
            x = torch.cat([atoms, self.context(g)[:, None, :].expand(b, n, -1)], dim=-1)
        values = self.skeleton(x)  # (B, N, 3)
        member = real[..., None].expand(b, n, 3).clone()
        member[..., 2] &= ~is_h  # a hydrogen has two skeletal values (its bends), a heavy atom three
        keep = (member.sum((1, 2)) - 5).clamp(min=0)
        slots = self.config.n_outputs - self.config.xh_slots
        return sorted_block(values.reshape(b, 3 * n), member.reshape(b, 3 * n), slots, keep)

    def masks(self, atom_mask, pair_features=None):
        """(atom mask (B, N) bool, pair mask (B, N, N): both atoms real, i != j and, with a
        pair cutoff, the pair within it; the cutoff needs the raw `pair_features`)."""
        mask = atom_mask.bool()
        eye = torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
        pair_mask = mask[:, :, None] & mask[:, None, :] & ~eye
        if self.cutoff_column is not None:
            if pair_features is None:
                raise ValueError(f"a network with pair_cutoff={self.config.pair_cutoff} needs the raw pair features "
                                 f"for its pair mask")
            pair_mask = pair_mask & (pair_features[..., self.cutoff_column] > 0.5)
        return mask, pair_mask

    def from_codes(self, atoms, pairs, atom_mask, pair_mask=None):
        """The network after its input stage: the weave modules, readout and head on atom and
        pair inputs (raw features without an input stage, the stage's masked codes with one).
        A network with a pair cutoff needs `pair_mask` from `masks` (codes do not hold the
        graph distance)."""
        if pair_mask is None:
            if self.cutoff_column is not None and self.input_stage is not None:
                raise ValueError("from_codes of a network with a pair cutoff and an input stage needs its pair_mask")
            mask, pair_mask = self.masks(atom_mask, pairs)  # without an input stage the pairs are the raw features
        else:
            mask = atom_mask.bool()
        if self.input_stage is None and self.cutoff_column is not None:
            pairs = self.mask_input_pairs(pairs, pair_mask)
        return self._body(atoms, pairs, mask, pair_mask)

    def pooled(self, atom_features, pair_features, atom_mask, with_atoms: bool = False):
        """(B, readout_hidden x n_gaussians) the molecule vector the head reads: the atoms'
        histograms summed (`forward` = head(pooled) without a per-hydrogen head); the molecule
        with no atoms pools to 0. with_atoms: (pooled, the last weave module's atoms (B, N, Ha))."""
        mask, pair_mask = self.masks(atom_mask, pair_features)
        a, p = atom_features, pair_features
        if self.input_stage is not None:
            a, p = self.encode_inputs(a, p, mask, pair_mask)
        elif self.cutoff_column is not None:
            p = self.mask_input_pairs(p, pair_mask)
        return self._pooled(a, p, mask, pair_mask, with_atoms)

    def _body(self, atoms, pairs, mask, pair_mask):
        if self.xh is not None:  # excluded by the config (an input stage is what calls from_codes)
            raise ValueError("from_codes: a network with a per-hydrogen head needs the raw atom types; call it directly")
        return self.head(self._pooled(atoms, pairs, mask, pair_mask))  # (B, n_outputs)

    def _pooled(self, atoms, pairs, mask, pair_mask, with_atoms: bool = False):
        a, p, s = atoms, pairs, None
        layers = list(self.layers)
        for k, layer in enumerate(layers):
            nxt = layers[k + 1] if k + 1 < len(layers) else None
            fuse = (nxt is not None and not nxt.update_pairs and layer.fusable()
                    and not self._watched(layer.both_orders, layer.add_pairs, layer.act_pairs, layer.mask_pairs,
                                          layer.pp, layer.ap, nxt.pair_sum))
            a, out = layer(a, p, mask, pair_mask, summed_pairs=s, sum_output_pairs=fuse)
            p, s = (None, out) if fuse else (out, None)
        h = self.readout_act(self.readout(a))  # (B, N, R)
        if self._watched(self.histogram, self.mask_histogram, self.atom_sum):
            g = self.atom_sum(self.mask_histogram(self.histogram(h), mask))  # (B, R, n) via (B, N, R, n)
        else:
            g = histogram_sum(h, mask, self.histogram)  # the same (B, R, n), fused
        return (self.flatten(g), a) if with_atoms else self.flatten(g)  # (B, R * n)

    def encode_inputs(self, atom_features, pair_features, mask, pair_mask):
        """The input stage's atom and pair codes, padding zeroed (the raw features without one)."""
        if self.input_stage is None:
            return atom_features, pair_features
        a, p = self.input_stage(atom_features, pair_features)
        return self.mask_atom_codes(a, mask), self.mask_pair_codes(p, pair_mask)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.input_stage is not None and self.config.freeze_input_stage:
            self.input_stage.eval()  # a frozen stage stays as trained
        return self

    @staticmethod
    def _watched(*modules: nn.Module) -> bool:
        """True when a forward hook observes one of `modules` (LRP attaches its rules as hooks):
        then the module-by-module path runs so that each sees its own input and output."""
        from torch.nn.modules import module as base

        if base._global_forward_hooks or base._global_forward_pre_hooks:
            return True
        return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def sorted_block(values: torch.Tensor, member: torch.Tensor, slots: int, keep: torch.Tensor) -> torch.Tensor:
    """(B, slots): of each row's member values (values, member (B, M)), the highest `keep` (B,)
    sorted highest first, zeros beyond. Only a selection and a 0/1 mask: the gradient (and LRP's
    relevance) goes to each kept value unchanged, nothing to the others."""
    b, m = values.shape
    key = torch.where(member, values.detach(), torch.full_like(values, -torch.inf))
    k = min(slots, m)
    idx = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :k]
    n_kept = torch.minimum(keep.reshape(-1, 1), member.sum(1, keepdim=True))
    block = torch.gather(values, 1, idx) * (torch.arange(k, device=values.device).reshape(1, -1) < n_kept).to(values.dtype)
    if k < slots:
        block = torch.cat([block, block.new_zeros(b, slots - k)], dim=1)
    return block


def hydrogen_block(values: torch.Tensor, is_h: torch.Tensor, slots: int) -> torch.Tensor:
    """(B, slots): the hydrogens' values (B, N) sorted highest first, zeros beyond each molecule's
    hydrogens (the X-H block of the hydrogen layout, `gcnn.sets`)."""
    return sorted_block(values, is_h, slots, is_h.sum(1))


def config_json(config: WeaveConfig) -> str:
    return json.dumps(config.to_json(), indent=2)
