"""How much of a target one size bucket sees (docs/gcnn.md, issue 11, round 5 of the alpha search).

Training batches are size buckets (molecules sorted by atom count, cut into batches), so one
optimizer step sees molecules of one or two atom counts. This prints, for each target, the share
of its variance over QM9 that the atom count explains, and the target's standard deviation
within one step's molecules (mean over an epoch's steps of fold 0's training bins) for
`--mix-sizes` K = 1 (the default) and larger K, against its standard deviation over QM9:

    python benchmarks/size_buckets.py [--targets alpha_bohr3,zpve_ev] [--mix 1,2,4,8]
"""
from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="alpha_bohr3,zpve_ev")
    ap.add_argument("--mix", default="1,2,4,8", help="values of K (--mix-sizes)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--split", default="data/models/cv_alpha_bohr3/split.json", help="the fold's training bins")
    args = ap.parse_args(argv)

    from gcnn.training import mixed_steps
    from molgraph import qm9, splits

    targets = args.targets.split(",")
    ds = qm9.load(progress=False, log=lambda m: None).with_targets(targets)
    train = splits.load_split(args.split).fold(0).train
    rows = np.asarray([ds.index_of(int(i)) for i in train])
    n = np.asarray(ds.n_atoms)[rows]
    print(f"fold 0's {len(rows):,} training molecules, batch {args.batch_size}")
    for t in targets:
        y = np.asarray(ds.target(t))[rows]
        within = np.concatenate([y[n == k] - y[n == k].mean() for k in np.unique(n)])
        line = [f"{t}: atom count explains {1 - within.var() / y.var():.1%} of the variance; std {y.std():.4g}",
                "within one step's molecules:"]
        for k in (int(v) for v in args.mix.split(",")):
            steps = mixed_steps(n, args.batch_size, k, np.random.default_rng(0))
            spread = np.mean([y[np.concatenate(s)].std() for s in steps])
            line.append(f"K = {k}: {spread:.4g}")
        print(" ".join(line[:2]), ", ".join(line[2:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
