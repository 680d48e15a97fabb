"""Relevance on the Molecular Graph, summed the ways the analysis needs (tensors only).

An explanation of a batch gives one relevance per input feature: atoms (B, N, 21) and ordered
atom pairs (B, N, N, 13), laid out as `molgraph.ATOM_FEATURES` / `PAIR_FEATURES`. These
functions sum it

- per feature group (`group_sums`): the 12 groups of `FEATURE_GROUPS`, each summed over its
  features and over all atoms (atom groups) or all ordered pairs (i, j) and (j, i) (pair groups);
- per atom (`per_atom`): an atom's own features plus half of every pair it belongs to, both
  orders: R_i = sum_f A_if + 1/2 sum_j sum_f (P_ijf + P_jif). Every pair is shared equally by
  its two atoms, so the atoms of a molecule sum to its total relevance;
- per unordered pair (`per_pair`): S_ij = sum_f (P_ijf + P_jif), symmetric, e.g. the relevance
  of a bond.

Padding (atoms beyond a molecule's size) must carry zero relevance; these sums then need no mask.
"""
from __future__ import annotations

import torch

from .features import FEATURE_GROUPS, GROUP_NAMES


def group_sums(atom_relevance: torch.Tensor, pair_relevance: torch.Tensor) -> torch.Tensor:
    """(B, N, 21), (B, N, N, 13) -> (B, 12): relevance per group, in `GROUP_NAMES` order."""
    a = atom_relevance.sum(1)  # (B, 21)
    p = pair_relevance.sum((1, 2))  # (B, 13)
    cols = []
    for name in GROUP_NAMES:
        g = FEATURE_GROUPS[name]
        cols.append((a if g.kind == "atom" else p)[:, g.slice].sum(1))  # (B,)
    return torch.stack(cols, dim=1)


def per_atom(atom_relevance: torch.Tensor, pair_relevance: torch.Tensor) -> torch.Tensor:
    """(B, N, 21), (B, N, N, 13) -> (B, N): own features + half of each pair, both orders."""
    s = pair_relevance.sum(-1)  # (B, N, N) relevance of ordered pair (i, j)
    return atom_relevance.sum(-1) + 0.5 * (s.sum(2) + s.sum(1))


def per_pair(pair_relevance: torch.Tensor) -> torch.Tensor:
    """(B, N, N, 13) -> (B, N, N) symmetric: relevance of the unordered pair, both orders."""
    s = pair_relevance.sum(-1)  # (B, N, N)
    return s + s.transpose(1, 2)
