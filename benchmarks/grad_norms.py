"""Step gradient norms of the default alpha weave network (the scale for --clip-grad-norm):
Adam at lr 3e-4 on a seeded 20,000 molecules of QM9, batch 128 size-bucketed as in training,
the global L2 norm of every step's gradient (standardized MSE loss), percentiles over steps
0-20, 20-100 and 100-300.

    python benchmarks/grad_norms.py [--steps 300] [--lr 3e-4]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import gcnn
from gcnn import read_batch, size_buckets
from molgraph import qm9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=3e-4)
    a = p.parse_args(argv)
    ds = qm9.load(progress=False, log=lambda m: None)
    rng = np.random.default_rng(0)
    sub = ds.subset(np.sort(rng.choice(np.asarray(ds.ids), 20000, replace=False)))
    torch.manual_seed(0)
    net = gcnn.WeaveNet()
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    norms = []
    mean = std = None
    batches = []
    while len(batches) < a.steps:  # epochs of size-bucketed batches, as in training
        batches += size_buckets(sub.n_atoms, 128, rng)
    for idx in batches[: a.steps]:
        b = read_batch(sub, np.sort(idx))
        y = b.targets["alpha_bohr3"].float()
        if mean is None:  # the first batch's statistics stand in for the training set's
            mean, std = float(y.mean()), float(y.std())
        loss = torch.nn.functional.mse_loss(net(b.atom_features, b.pair_features, b.atom_mask)[:, 0], (y - mean) / std)
        opt.zero_grad()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(net.parameters(), float("inf"))))
        opt.step()
    n = np.asarray(norms)
    print(f"step gradient norm, default WeaveNet, alpha, lr {a.lr:g}, batch 128 (percentiles 10/50/90/99)")
    for lo, hi in ((0, 20), (20, 100), (100, len(n))):
        if hi > lo:
            q = np.percentile(n[lo:hi], [10, 50, 90, 99])
            print(f"steps {lo:>4}-{hi:<4} " + " ".join(f"{v:8.1f}" for v in q))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
