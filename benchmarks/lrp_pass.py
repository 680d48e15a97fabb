"""Cost of a batched relevance pass relative to a plain forward + input-gradient pass.

    python benchmarks/lrp_pass.py [--repeats 20] [--threads N]

(a) MLP 5887-512-256-1 (the flat Molecular Graph input), batch 256, float32: lrp epsilon,
    gamma, alpha2-beta1, side by side with captum (epsilon, gamma) and zennit (epsilon, gamma,
    alpha2-beta1) in the same run where they are installed (zennit 0.5.1 is imported with
    stand-in torchvision modules; install it with `pip install --no-deps zennit==0.5.1`).
(b) the default gcnn.WeaveNet on a QM9 batch of 256 molecules (the largest ones, 27-29 atoms:
    atom (256, 29, 21) and pair (256, 29, 29, 13) inputs), with the rule on its linear layers
    and gcnn's own rules (entry point) on sums, masks and the Gaussian histogram.
Goals: epsilon <= 1.3x, gamma and alpha-beta <= 2x. Ratios are medians over repeats.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lrp  # noqa: E402
from lrp import rules as R  # noqa: E402


def timeit(fn, repeats):
    fn()
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def baseline(model, inputs):
    def run():
        xs = tuple(x.detach().requires_grad_(True) for x in inputs)
        out = model(*xs)
        torch.autograd.grad(out, xs, torch.ones_like(out))
    return run


def baseline3(model, inputs):
    """forward + gradient for the float inputs only (the atom mask is not differentiable)."""
    def run():
        xs = tuple(x.detach().requires_grad_(True) if x.is_floating_point() else x for x in inputs)
        out = model(*xs)
        torch.autograd.grad(out, [x for x in xs if x.requires_grad], torch.ones_like(out))
    return run


def ours(model, inputs, composite):
    return lambda: lrp.explain(model, inputs, composite)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"device: {cpu}, {args.threads} threads; torch {torch.__version__}")

    mlp = nn.Sequential(nn.Linear(5887, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 1))
    x = torch.rand(256, 5887)
    base = timeit(baseline(mlp, (x,)), args.repeats)
    print(f"\n(a) MLP 5887-512-256-1, batch 256: forward + input gradient {base * 1e3:.1f} ms")
    rows = []
    for name, comp in (("epsilon", lrp.Composite(layer_map=((nn.Linear, R.Epsilon(1e-6)),))),
                       ("gamma", lrp.Composite(layer_map=((nn.Linear, R.Gamma(0.25)),))),
                       ("alpha2-beta1", lrp.Composite(layer_map=((nn.Linear, R.AlphaBeta(2, 1)),)))):
        rows.append(("lrp", name, timeit(ours(mlp, x, comp), args.repeats)))
    try:
        import warnings

        warnings.filterwarnings("ignore")
        from captum.attr import LRP
        from captum.attr._utils.lrp_rules import EpsilonRule, GammaRule

        for name, rule in (("epsilon", lambda: EpsilonRule(1e-6)), ("gamma", lambda: GammaRule(0.25))):
            for m in mlp:
                if isinstance(m, nn.Linear):
                    m.rule = rule()
            attr = LRP(mlp)
            rows.append(("captum", name, timeit(lambda: attr.attribute(x.clone(), target=0), args.repeats)))
            for m in mlp:
                if hasattr(m, "rule"):
                    del m.rule
    except ImportError:
        print("captum not installed (pip install captum)")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "lrp"))
    try:
        from peers import import_zennit

        import_zennit()
        from zennit import rules as Z
        from zennit.attribution import Gradient
        from zennit.composites import LayerMapComposite

        for name, rule in (("epsilon", Z.Epsilon(1e-6)), ("gamma", Z.Gamma(0.25)), ("alpha2-beta1", Z.AlphaBeta(2, 1))):
            comp = LayerMapComposite([(nn.Linear, rule), (nn.ReLU, Z.Pass())])

            def run(comp=comp):
                xx = x.clone().requires_grad_(True)
                with Gradient(model=mlp, composite=comp) as at:
                    at(xx, lambda o: o)

            rows.append(("zennit", name, timeit(run, args.repeats)))
    except ImportError as exc:
        print(f"zennit not available ({exc}); pip install --no-deps zennit==0.5.1")
    goals = {"epsilon": 1.3, "gamma": 2.0, "alpha2-beta1": 2.0}
    print(f"{'engine':<8} {'rule':<13} {'ms':>8} {'ratio':>7}  goal")
    for engine, name, t in rows:
        goal = f"<= {goals[name]}x" if engine == "lrp" else ""
        print(f"{engine:<8} {name:<13} {t * 1e3:8.1f} {t / base:7.2f}  {goal}")

    import numpy as np

    import molgraph
    from gcnn import WeaveNet

    ds = molgraph.qm9.load(progress=False, log=lambda m: None)
    biggest = np.argsort(ds.n_atoms, kind="stable")[-256:]
    batch = molgraph.collate([ds[int(i)] for i in biggest])
    model = WeaveNet().eval()
    inputs = (batch.atom_features, batch.pair_features, batch.atom_mask)

    def composite_for(rule):
        return lrp.Composite(layer_map=((nn.Linear, rule),))

    base = timeit(baseline3(model, inputs), max(3, args.repeats // 4))
    print(f"\n(b) gcnn.WeaveNet (default), 256 QM9 molecules of {batch.atom_mask.sum(1).min()}-{batch.atom_mask.sum(1).max()} atoms: "
          f"forward + input gradient {base * 1e3:.1f} ms")
    for name, rule in (("epsilon", R.Epsilon(1e-6)), ("gamma", R.Gamma(0.25)), ("alpha2-beta1", R.AlphaBeta(2, 1))):
        t = timeit(ours(model, inputs, composite_for(rule)), max(3, args.repeats // 4))
        print(f"{'lrp':<8} {name:<13} {t * 1e3:8.1f} {t / base:7.2f}  <= {goals[name]}x")


if __name__ == "__main__":
    main()
