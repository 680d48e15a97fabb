"""A small MLP on the flattened Molecular Graph (the proposal's 5,887-long vector), trained
and explained with `lrp` by the quickstart. It is the pipeline in miniature, not the weave
network of Faber et al. (that is `gcnn`): it shows the data -> model -> relevance -> feature
group path end to end in seconds on a CPU.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def flat_dataset(ds, ids, target: str, max_atoms: int = 29):
    """(X (M, flat), y (M,)) float32 for the given QM9 ids."""
    from molgraph import collate, flatten

    sub = ds.subset(ids).with_targets([target])
    xs, ys = [], []
    for start in range(0, len(sub), 256):
        batch = collate([sub[i] for i in range(start, min(start + 256, len(sub)))])
        xs.append(flatten(batch, max_atoms=max_atoms))
        ys.append(batch.targets[target].float())
    return torch.cat(xs), torch.cat(ys)


def make_mlp(n_in: int, hidden=(256, 64)) -> nn.Sequential:
    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def train(x, y, x_val, y_val, epochs=60, lr=1e-3, batch=64, seed=0, log=print):
    """Adam on standardized targets; returns (model, mean, std, best validation MAE)."""
    torch.manual_seed(seed)
    mean, std = float(y.mean()), float(y.std())
    scale = x.abs().amax(0).clamp(min=1.0)  # distances reach ~10 A; one-hots and unseen slots stay as they are
    model = nn.Sequential(Scale(scale), make_mlp(x.shape[1]))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    yt = (y - mean) / std
    best, best_state = float("inf"), None
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = nn.functional.mse_loss(model(x[idx])[:, 0], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            mae = float((model(x_val)[:, 0] * std + mean - y_val).abs().mean())
        if mae < best:
            best, best_state = mae, {k: v.clone() for k, v in model.state_dict().items()}
        if (epoch + 1) % 20 == 0:
            log(f"      epoch {epoch + 1}: validation MAE {mae:.3f}")
    model.load_state_dict(best_state)
    return model.eval(), mean, std, best


class Scale(nn.Module):
    """x / scale, a fixed per-feature normalization (a diagonal linear map, explained with LRP-0)."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x):
        return x / self.scale


def group_relevance(relevance: torch.Tensor, max_atoms: int = 29) -> dict[str, np.ndarray]:
    """Flat relevance (B, 21 n + 13 n(n-1)/2) -> {group: (B,) relevance summed over the group's
    features, all atoms or all atom pairs}."""
    from molgraph import FEATURE_GROUPS, atom_block_size

    b = relevance.shape[0]
    atoms = relevance[:, :atom_block_size(max_atoms)].reshape(b, max_atoms, -1).sum(1)  # (B, 21)
    pairs = relevance[:, atom_block_size(max_atoms):].reshape(b, -1, 13).sum(1)  # (B, 13)
    return {name: (atoms if g.kind == "atom" else pairs)[:, g.slice].sum(1).numpy() for name, g in FEATURE_GROUPS.items()}
