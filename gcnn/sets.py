"""How a set of values (a molecule's harmonic frequencies) is laid out on a network's outputs.

A frequency set has as many values as the molecule has modes (3N-6, 3N-5 if linear), known from
the input, so a network with a fixed number of outputs predicts it through a *layout*: which
output stands for which member of the sorted set. The loss compares each output with the value
assigned to it; reading the prediction back (`decode`) gathers the molecule's own outputs and
sorts them, so the predicted set is compared with the true one by the masked L1 of sorted sets
(the 1-D optimal-transport distance between stick spectra).

Layouts (values are sorted ascending, v_0 <= ... <= v_{n-1}):
- ``ascending``: output j is v_j (the lowest mode first). Output j means a different kind of
  mode in a 5-atom and in a 25-atom molecule, and the highest mode omega_1 moves with n.
- ``descending``: output j is v_{n-1-j}: output 0 is always omega_1.
- ``hydrogen``: the n_H highest values (the X-H stretches: in 99.98 % of QM9 the modes above
  2,600 cm^-1 are exactly as many as the hydrogens) on the first `h_slots` outputs, highest
  first, and the other n - n_H values (the skeleton) on the rest, highest first. Each output then
  always means one kind of mode: "the k-th X-H stretch", "the k-th skeletal mode from the top".
  n_H is read from the input (the atom-type feature), so nothing is learned that is known.

Everything here works on torch tensors (training batches) and through `numpy` arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

LAYOUTS = ("ascending", "descending", "hydrogen")


@dataclass(frozen=True)
class SetLayout:
    name: str = "ascending"
    length: int = 81  # outputs (81: the most modes in QM9)
    h_slots: int = 20  # hydrogen layout: outputs for the X-H block (20: the most H atoms in QM9)

    def __post_init__(self):
        if self.name not in LAYOUTS:
            raise ValueError(f"unknown set layout {self.name!r}; valid: {', '.join(LAYOUTS)}")
        if not 0 < self.h_slots < self.length:
            raise ValueError(f"h_slots must be between 1 and length - 1 = {self.length - 1}, got {self.h_slots}")

    def check(self, n_values, n_h, names=None) -> None:
        """A clear error for a molecule whose set does not fit the outputs."""
        n_values, n_h = np.asarray(n_values).reshape(-1), np.asarray(n_h).reshape(-1)
        name = (lambda i: names[i]) if names is not None else (lambda i: f"molecule {i}")
        for i in np.flatnonzero(n_values > self.length):
            raise ValueError(f"{name(i)}: {int(n_values[i])} values, more than the model's {self.length} outputs")
        if self.name == "hydrogen":
            for i in np.flatnonzero((n_h > self.h_slots) | (n_values - np.minimum(n_h, n_values) > self.length - self.h_slots)):
                raise ValueError(f"{name(i)}: {int(n_h[i])} hydrogens and {int(n_values[i])} values do not fit the "
                                 f"hydrogen layout ({self.h_slots} X-H outputs, {self.length - self.h_slots} others)")

    def slots(self, n_values: torch.Tensor, n_h: torch.Tensor, width: int) -> torch.Tensor:
        """(B, width) int64: the output of each ascending position j < n_values; -1 beyond."""
        n = n_values.long().reshape(-1, 1)
        j = torch.arange(width, device=n.device).reshape(1, -1)
        if self.name == "ascending":
            s = j.expand(n.shape[0], -1).clone()
        elif self.name == "descending":
            s = n - 1 - j
        else:
            h = torch.minimum(n_h.long().reshape(-1, 1), n)
            top = j >= n - h  # the h highest values
            s = torch.where(top, n - 1 - j, self.h_slots + (n - h - 1 - j))
        return torch.where(j < n, s, torch.full_like(s, -1))

    def encode(self, values: torch.Tensor, mask: torch.Tensor, n_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted values (B, K) ascending with mask (B, K) (the first n of each row) ->
        (outputs' targets (B, length), mask (B, length))."""
        b, k = values.shape
        if k > self.length:
            raise ValueError(f"{k} values, more than the layout's {self.length} outputs")
        n = mask.sum(1)
        s = self.slots(n, n_h, k)
        y = torch.zeros(b, self.length + 1, dtype=values.dtype, device=values.device)  # column -1 -> a spare
        m = torch.zeros(b, self.length + 1, dtype=torch.bool, device=values.device)
        idx = torch.where(s >= 0, s, torch.full_like(s, self.length))
        y.scatter_(1, idx, torch.where(mask, values, torch.zeros_like(values)))
        m.scatter_(1, idx, mask)
        return y[:, : self.length], m[:, : self.length]

    def own(self, n_values: torch.Tensor, n_h: torch.Tensor) -> torch.Tensor:
        """(B, length) bool: the outputs that hold a value of each molecule."""
        s = self.slots(n_values, n_h, self.length)
        m = torch.zeros(s.shape[0], self.length + 1, dtype=torch.bool, device=s.device)
        m.scatter_(1, torch.where(s >= 0, s, torch.full_like(s, self.length)), s >= 0)
        return m[:, : self.length]

    def decode(self, outputs: torch.Tensor, n_values: torch.Tensor, n_h: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs (B, length) -> (the predicted sets sorted ascending (B, length), NaN beyond
        each molecule's n values; the output each sorted value came from (B, length), -1 beyond)."""
        own = self.own(n_values, n_h)
        big = torch.where(own, outputs, torch.full_like(outputs, float("inf")))
        v, order = torch.sort(big, dim=1, stable=True)
        keep = torch.arange(self.length, device=outputs.device).reshape(1, -1) < n_values.long().reshape(-1, 1)
        return (torch.where(keep, v, torch.full_like(v, float("nan"))),
                torch.where(keep, order, torch.full_like(order, -1)))

    # numpy conveniences
    def decode_np(self, outputs: np.ndarray, n_values: np.ndarray, n_h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v, o = self.decode(torch.from_numpy(np.asarray(outputs, dtype=np.float64)),
                           torch.from_numpy(np.asarray(n_values)), torch.from_numpy(np.asarray(n_h)))
        return v.numpy(), o.numpy()

    def encode_np(self, values: np.ndarray, mask: np.ndarray, n_h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y, m = self.encode(torch.from_numpy(np.asarray(values, dtype=np.float64)), torch.from_numpy(np.asarray(mask)),
                           torch.from_numpy(np.asarray(n_h)))
        return y.numpy(), m.numpy()

    def own_np(self, n_values: np.ndarray, n_h: np.ndarray) -> np.ndarray:
        return self.own(torch.from_numpy(np.asarray(n_values)), torch.from_numpy(np.asarray(n_h))).numpy()


def hydrogen_counts(atom_features: torch.Tensor, atom_mask: torch.Tensor) -> torch.Tensor:
    """(B,) number of H atoms of each molecule of a batch, from the atom-type feature."""
    from molgraph.features import ATOM_FEATURES

    col = ATOM_FEATURES.index("atom_type_H")
    return (atom_features[..., col] * atom_mask.to(atom_features.dtype)).sum(1).round().long()


def regions_of(values: np.ndarray, edges=(1000.0, 2000.0, 2600.0)) -> np.ndarray:
    """Region index (0: below 1,000, 1: 1,000-2,000, 2: 2,000-2,600, 3: above 2,600 cm^-1) of each value."""
    return np.searchsorted(np.asarray(edges), values, side="right")


REGION_NAMES = ("below_1000", "1000_2000", "2000_2600", "above_2600")
