"""Batching and the flat 5,887-long vector of the proposal.

`collate` pads molecules to the largest in the batch (or `pad_to`); padded atoms have
`atom_mask` False and all-zero features, padded pairs are zero. Variable-length targets
(`freqs_cm1`) are padded with NaN and come with a mask in `target_masks`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from .featurizer import MolGraph
from .features import N_ATOM_FEATURES, N_PAIR_FEATURES, flat_size


@dataclass(frozen=True, eq=False)
class MolBatch:
    """A padded batch of B molecules with at most N atoms.

    Fields:
        atom_features: (B, N, 21) float32.
        pair_features: (B, N, N, 13) float32.
        atom_mask: (B, N) bool, True for real atoms.
        positions: (B, N, 3) float32, Angstrom (zeros for padding).
        n_atoms: (B,) int64.
        targets: name -> (B,) for scalars, (B, K) for vectors (NaN-padded), (B, 3, 3) for tensors.
        target_masks: name -> (B, K) bool, for vector targets only.
        names: molecule labels.
    """

    atom_features: torch.Tensor
    pair_features: torch.Tensor
    atom_mask: torch.Tensor
    positions: torch.Tensor
    n_atoms: torch.Tensor
    targets: Mapping[str, torch.Tensor] = field(default_factory=dict)
    target_masks: Mapping[str, torch.Tensor] = field(default_factory=dict)
    names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.atom_features.shape[0]

    def to(self, device, non_blocking: bool = False) -> "MolBatch":
        mv = lambda t: t.to(device, non_blocking=non_blocking)
        return MolBatch(
            mv(self.atom_features), mv(self.pair_features), mv(self.atom_mask), mv(self.positions), mv(self.n_atoms),
            {k: mv(v) for k, v in self.targets.items()}, {k: mv(v) for k, v in self.target_masks.items()}, self.names,
        )

    @property
    def pair_mask(self) -> torch.Tensor:
        """(B, N, N) bool: both atoms real and distinct."""
        m = self.atom_mask[:, :, None] & self.atom_mask[:, None, :]
        eye = torch.eye(m.shape[1], dtype=torch.bool, device=m.device)
        return m & ~eye


def collate(graphs: Sequence[MolGraph], pad_to: int | None = None) -> MolBatch:
    """list[MolGraph] -> MolBatch (a pure function; usable as a DataLoader collate_fn)."""
    if not graphs:
        raise ValueError("collate needs at least one graph")
    sizes = [g.n_atoms for g in graphs]
    n = max(sizes) if pad_to is None else pad_to
    if n < max(sizes):
        raise ValueError(f"pad_to={pad_to} is smaller than the largest molecule ({max(sizes)} atoms)")
    b = len(graphs)
    x = torch.zeros(b, n, N_ATOM_FEATURES)
    p = torch.zeros(b, n, n, N_PAIR_FEATURES)
    pos = torch.zeros(b, n, 3)
    mask = torch.zeros(b, n, dtype=torch.bool)
    for i, g in enumerate(graphs):
        k = g.n_atoms
        x[i, :k] = g.atom_features
        p[i, :k, :k] = g.pair_features
        pos[i, :k] = g.positions
        mask[i, :k] = True
    targets, masks = collate_targets([g.targets for g in graphs], [g.name for g in graphs])
    return MolBatch(x, p, mask, pos, torch.tensor(sizes), targets, masks, tuple(g.name for g in graphs))


def collate_targets(per_molecule: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str] = ()
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-molecule target dicts -> (targets, target_masks) of a batch: scalars stacked to (B,),
    variable-length vectors NaN-padded to (B, K) with a (B, K) mask, fixed-size ones stacked."""
    targets, masks = {}, {}
    b = len(per_molecule)
    keys = set(per_molecule[0]) if per_molecule else set()
    for k, t in enumerate(per_molecule[1:], 1):
        if set(t) != keys:
            raise ValueError(f"graphs carry different targets: {sorted(keys)} vs {sorted(t)} "
                             f"({names[k] if k < len(names) else k})")
    for name in (per_molecule[0] if per_molecule else ()):
        vals = [t[name] for t in per_molecule]
        if vals[0].dim() == 1 and any(v.shape != vals[0].shape for v in vals):
            k = max(v.shape[0] for v in vals)
            t = torch.full((b, k), float("nan"), dtype=vals[0].dtype)
            m = torch.zeros(b, k, dtype=torch.bool)
            for i, v in enumerate(vals):
                t[i, : v.shape[0]] = v
                m[i, : v.shape[0]] = True
            targets[name], masks[name] = t, m
        elif vals[0].dim() == 1:
            targets[name] = torch.stack(vals)
            masks[name] = torch.ones(b, vals[0].shape[0], dtype=torch.bool)
        else:
            targets[name] = torch.stack(vals)
    return targets, masks


def _triu(n: int, device=None):
    return torch.triu_indices(n, n, 1, device=device)


def flatten(graph: MolGraph | MolBatch, max_atoms: int = 29) -> torch.Tensor:
    """The proposal's flat input: atom block (max_atoms x 21, row-major), then the upper-triangle
    pairs (i < j, row-major, x 13), zero padded: (5887,) for one graph with max_atoms=29, or
    (B, 5887) for a batch."""
    if isinstance(graph, MolGraph):
        if graph.n_atoms > max_atoms:
            raise ValueError(f"{graph.name or 'molecule'} has {graph.n_atoms} atoms, more than max_atoms={max_atoms}")
        return flatten(collate([graph], pad_to=max_atoms), max_atoms)[0]
    b, n = graph.atom_features.shape[:2]
    if n > max_atoms:
        if bool(graph.atom_mask[:, max_atoms:].any()):
            raise ValueError(f"a molecule has {int(graph.n_atoms.max())} atoms, more than max_atoms={max_atoms}")
        n = max_atoms
    x = torch.zeros(b, max_atoms, N_ATOM_FEATURES, dtype=graph.atom_features.dtype, device=graph.atom_features.device)
    x[:, :n] = graph.atom_features[:, :n]
    p = torch.zeros(b, max_atoms, max_atoms, N_PAIR_FEATURES, dtype=x.dtype, device=x.device)
    p[:, :n, :n] = graph.pair_features[:, :n, :n]
    i, j = _triu(max_atoms, x.device)
    return torch.cat([x.reshape(b, -1), p[:, i, j].reshape(b, -1)], dim=1)


def unflatten(vector: torch.Tensor, n_atoms: int | None = None, max_atoms: int = 29) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `flatten`: (..., flat_size) -> atom (..., n, 21) and symmetric pair (..., n, n, 13)
    features, cropped to `n_atoms` (default: max_atoms)."""
    size = flat_size(max_atoms)
    if vector.shape[-1] != size:
        raise ValueError(f"expected a last dimension of {size} for max_atoms={max_atoms}, got {vector.shape[-1]}")
    lead = vector.shape[:-1]
    na = max_atoms * N_ATOM_FEATURES
    x = vector[..., :na].reshape(*lead, max_atoms, N_ATOM_FEATURES)
    flat_pairs = vector[..., na:].reshape(*lead, -1, N_PAIR_FEATURES)
    p = torch.zeros(*lead, max_atoms, max_atoms, N_PAIR_FEATURES, dtype=vector.dtype, device=vector.device)
    i, j = _triu(max_atoms, vector.device)
    p[..., i, j, :] = flat_pairs
    p[..., j, i, :] = flat_pairs
    n = max_atoms if n_atoms is None else n_atoms
    return x[..., :n, :], p[..., :n, :n, :]
