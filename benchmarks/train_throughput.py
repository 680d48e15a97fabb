"""Training throughput of the default WeaveNet on QM9 batches.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--batch-size 64] [--steps 50]

Prints molecules per second for (a) the training step alone (forward, loss, backward, Adam) on
pre-collated size-bucketed batches and (b) end to end, including reading molecules from the
memory-mapped cache and collating them; and the peak memory (process RSS on CPU, allocated
GPU memory on CUDA). Goals: >= 1,000 molecules/s on 2 CPU cores, >= 50,000 on one H100.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA)")
    args = ap.parse_args()

    import molgraph
    from gcnn import WeaveNet, size_buckets

    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"device: {name} ({args.device}, {torch.get_num_threads()} threads); torch {torch.__version__}")
    ds = molgraph.qm9.load(progress=False, log=lambda m: None).with_targets(["alpha_bohr3"])
    rng = np.random.default_rng(0)
    batches = size_buckets(ds.n_atoms, args.batch_size, rng)[: args.steps]
    model = WeaveNet().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(b):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.amp):
            pred = model(b.atom_features, b.pair_features, b.atom_mask)
        loss = torch.nn.functional.mse_loss(pred.float()[:, 0], b.targets["alpha_bohr3"].float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    collated = [molgraph.collate([ds[int(i)] for i in idx]) for idx in batches]
    t_collate = time.perf_counter() - t0
    collated = [b.to(dev) for b in collated]
    n = sum(len(b) for b in collated)
    for b in collated[:3]:
        step(b)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for b in collated:
        step(b)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_step = time.perf_counter() - t0
    print(f"batches of {args.batch_size}, size-bucketed, {len(collated)} steps, {n} molecules")
    print(f"(a) training step only:      {n / t_step:9.0f} molecules/s")
    print(f"(b) with cache read+collate: {n / (t_step + t_collate):9.0f} molecules/s "
          f"(collate alone {n / t_collate:.0f} molecules/s on one core)")
    if dev.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB")
    print(f"peak process RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
