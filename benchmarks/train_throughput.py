"""Training throughput of the default WeaveNet on QM9, before and after the CPU speed-up, in one run.

    python benchmarks/train_throughput.py [--steps 60] [--epoch] [--device cpu|cuda]

Each configuration runs in a fresh subprocess (the allocator setting is process-wide), on the same
size-bucketed batches of fold 0's training molecules (seeded 10-fold split of all of QM9):

    before   module-by-module histogram readout, per-molecule MolGraph + collate, glibc default
             allocator: the implementation up to this change (forced with a no-op forward hook on
             the histogram, which is what LRP's hooks do too)
    after    fused histogram readout (gcnn.layers.histogram_sum, memberships kept for backward),
             fused last pair update (summed_pair_update), vectorized QM9Dataset.batch,
             gcnn.tune_allocator(), fused Adam; at the batch size given and at 128

Prints, per configuration: (a) the training step alone (forward, loss, backward, Adam) on
pre-read batches, (b) end to end (reading + collating + step, as Trainer.fit does), the batch
reader alone, one epoch of fold 0's training set in seconds (measured with --epoch, else
extrapolated from (b)), and the subprocess's peak RSS; then the after/before ratios.
Goal (issue 11): >= 5,000 molecules/s end to end on 2 cores, >= 3x the step rate before.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def _worker(cfg: dict) -> dict:
    import molgraph
    from gcnn import WeaveNet, size_buckets, tune_allocator
    from molgraph import splits

    torch.set_num_threads(cfg["threads"])
    if cfg["fast"]:
        tune_allocator()
    dev = torch.device(cfg["device"])
    ds = molgraph.qm9.load(progress=False, log=lambda m: None)
    kf = splits.kfold(ds.ids, k=10, seed=0)
    train = ds.subset(kf.fold(0).train).with_targets(["alpha_bohr3"])
    rng = np.random.default_rng(0)
    all_batches = size_buckets(train.n_atoms, cfg["batch_size"], rng)
    batches = all_batches[: cfg["steps"]]
    torch.manual_seed(0)
    model = WeaveNet().to(dev)
    if not cfg["fast"]:  # a hook on the histogram selects the module-by-module readout
        model.histogram.register_forward_hook(lambda *a: None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=cfg["fast"])  # as Trainer.fit since session 16

    def read(idx):
        if cfg["fast"]:
            return train.batch(idx)
        return molgraph.collate([train[int(i)] for i in idx])

    def step(b):
        b = b.to(dev)
        pred = model(b.atom_features, b.pair_features, b.atom_mask)
        loss = torch.nn.functional.mse_loss(pred.float()[:, 0], b.targets["alpha_bohr3"].float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    pre = [read(idx) for idx in batches]
    t_read = time.perf_counter() - t0
    n = sum(len(b) for b in pre)
    for b in pre:  # warm-up: every batch shape once, the allocator at its working size
        step(b)
    sync()
    t0 = time.perf_counter()
    for b in pre:
        step(b)
    sync()
    t_step = time.perf_counter() - t0
    del pre

    def end_to_end(bs):
        t0 = time.perf_counter()
        for idx in bs:
            step(read(idx))
        sync()
        return time.perf_counter() - t0

    t_e2e = end_to_end(batches)
    out = {"step": n / t_step, "e2e": n / t_e2e, "read": n / t_read, "n": n, "n_train": len(train)}
    if cfg["epoch"]:
        out["epoch_s"] = end_to_end(all_batches)
        out["epoch_measured"] = True
    else:
        out["epoch_s"] = len(train) / out["e2e"]
        out["epoch_measured"] = False
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=60, help="batches timed per configuration")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--epoch", action="store_true", help="time one full epoch of fold 0's training set too")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return

    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"device: {name} ({args.device}, {args.threads} threads); torch {torch.__version__}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    configs = [("before", False, args.batch_size), ("after", True, args.batch_size)]
    if args.batch_size != 128:
        configs.append(("after", True, 128))
    results = []
    for label, fast, bs in configs:
        cfg = {"fast": fast, "batch_size": bs, "steps": max(1, args.steps * args.batch_size // bs), "device": args.device,
               "threads": args.threads, "epoch": args.epoch}
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{label} (batch {bs}) failed:\n{proc.stderr}")
        results.append((label, bs, json.loads(proc.stdout.strip().splitlines()[-1])))
    n_train = results[0][2]["n_train"]
    print(f"fold 0 of the seeded 10-fold split: {n_train} training molecules; size-bucketed batches\n")
    print(f"{'':8} {'batch':>5} {'(a) step':>10} {'(b) end to end':>15} {'reader':>9} {'epoch':>9} {'peak RSS':>9}")
    for label, bs, r in results:
        ep = f"{r['epoch_s']:.0f} s" + ("" if r["epoch_measured"] else "*")
        print(f"{label:8} {bs:5d} {r['step']:8.0f}/s {r['e2e']:13.0f}/s {r['read']:7.0f}/s {ep:>9} {r['rss_mib']:6.0f} MiB")
    print("(molecules per second; reader: one core; * extrapolated from (b); --epoch measures it)\n")
    base = results[0][2]
    for label, bs, r in results[1:]:
        print(f"{label} (batch {bs}) / before (batch {results[0][1]}): step {r['step'] / base['step']:.2f}x, "
              f"end to end {r['e2e'] / base['e2e']:.2f}x, epoch {base['epoch_s'] / r['epoch_s']:.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
