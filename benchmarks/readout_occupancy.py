"""How a weave network's Gaussian-histogram readout is used (docs/gcnn.md, issue 11).

The histogram's 11 Gaussians sit at the standard normal's quantiles (-1.645 ... 1.645, widths
0.11-0.28): DeepChem's WeaveModel feeds it tanh outputs that are batch-normalized, so that every
bin is used. This reads the per-atom values that reach the histogram (after the readout layer and
its activation) on a seeded sample of a model's test molecules and prints how many are exactly 0
(a dead ReLU), how many lie beyond the outer bins (where the membership saturates: the value's
size is lost), how many channels are dead on every atom, and the mean membership of each bin:

    python benchmarks/readout_occupancy.py MODEL_DIR [MODEL_DIR ...] [--molecules 500]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def readout_values(model_dir: Path, n_molecules: int, batch: int = 100):
    """(values (atoms, channels) that reach the histogram, the network) for a seeded sample of
    the model's test molecules."""
    import gcnn
    from gcnn.training import read_batch
    from qmlrp.explain.inputs import find_qm9, split_test_ids

    ids, _ = split_test_ids(model_dir, "test")
    ids = np.sort(np.random.default_rng(0).permutation(ids)[:n_molecules])
    ds = find_qm9(ids, progress=False).subset(ids)
    net = gcnn.load(model_dir).models[0].model  # the member without its target denormalization
    seen = []
    handle = net.readout_act.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    out = []
    try:
        for s in range(0, len(ds), batch):
            b = read_batch(ds, np.arange(s, min(s + batch, len(ds))))
            seen.clear()
            with torch.no_grad():
                net.pooled(b.atom_features, b.pair_features, b.atom_mask)
            out.append(seen[0][b.atom_mask.bool()])
    finally:
        handle.remove()
    return torch.cat(out), net


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="model directories (a fold of `qmlrp cv`, a `qmlrp train` run)")
    ap.add_argument("--molecules", type=int, default=500, help="seeded sample of each model's test molecules (500)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("| model | readout activation | values at 0 | beyond the outer bins (abs > 1.645) | dead channels | "
          "mean membership per bin, -1.645 ... 1.645 |")
    print("|---|---|---:|---:|---:|---|")
    for d in args.models:
        x, net = readout_values(d, args.molecules)
        m = net.histogram(x[None]).squeeze(0).mean((0, 1))  # (bins,)
        act = net.config.readout_activation or net.config.activation
        print(f"| {d} | {act} | {float((x == 0).float().mean()):.1%} | {float((x.abs() > 1.645).float().mean()):.1%} | "
              f"{int((x == 0).all(0).sum())} of {x.shape[1]} | {' '.join(f'{v:.2f}' for v in m.tolist())} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
