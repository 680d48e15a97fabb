"""Does the per-hydrogen head lose where hydrogens share a heavy atom? (docs/spectra.md, issue 14)

A per-hydrogen head gives each hydrogen one value. Hydrogens on the same heavy atom (CH2, CH3, NH2)
have nearly the same inputs, while their stretches couple into symmetric and antisymmetric modes
that lie 50-100 cm^-1 apart, so such groups could be a floor for the X-H block. This prints the
X-H block MAE (the highest n_H modes of each molecule, predicted against QM9, both sorted), the
within-molecule spread of the X-H modes (QM9 and predicted) and the omega_1 error, grouped by the
largest number of hydrogens on one heavy atom of the molecule, on the model's own test bin:

    python benchmarks/freqs_xh_groups.py [--model qm9-freqs] [--max-molecules N]
"""
from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qm9-freqs", help="a frequency-set model (published name or directory)")
    ap.add_argument("--max-molecules", type=int, default=None, help="a seeded sample of the test bin")
    args = ap.parse_args(argv)

    import gcnn
    from gcnn.training import sorted_sets
    from molgraph import FEATURE_GROUPS, PAIR_FEATURES
    from molgraph.features import ATOM_TYPES
    from qmlrp.explain.inputs import find_qm9, split_test_ids
    from qmlrp.explain.models import resolve_model_dir
    from qmlrp.published import resolve
    from qmlrp.spectra import unseen_members

    root = resolve(args.model)
    first, _ = resolve_model_dir(root, 0 if gcnn.model_dirs(root) != [root] else None)
    ids, where = split_test_ids(first, "test")
    if args.max_molecules is not None and len(ids) > args.max_molecules:
        ids = np.sort(np.random.default_rng(0).permutation(ids)[:args.max_molecules])
    ds = find_qm9(ids, progress=False).subset(ids)
    members = unseen_members(root, ids)
    pred = gcnn.load(root, members=members)
    target = pred.targets[0]
    sets, _, mask = pred.predict_dataset_sets(ds.with_targets([target]))
    true, _ = sorted_sets(ds, target, pred.n_outputs)
    h_col = FEATURE_GROUPS["atom_type"].slice.start + ATOM_TYPES.index("H")
    bond = PAIR_FEATURES.index("graph_distance_le_1")
    rows = []  # (largest H count on one heavy atom, X-H MAE, QM9 spread, predicted spread, omega_1 error)
    for i in range(len(ds)):
        g = ds[i]
        h = (g.atom_features[:, h_col] > 0.5).numpy()
        n_h, n = int(h.sum()), int(mask[i].sum())
        if n_h == 0:
            continue
        bonded = (g.pair_features[..., bond] > 0.5).numpy()
        per_heavy = (bonded[h] & ~h).sum(0)  # hydrogens bonded to each heavy atom
        p, q = np.sort(sets[i, :n])[-n_h:], np.sort(true[i, :n])[-n_h:]
        rows.append((int(per_heavy.max()), np.abs(p - q).mean(), q.std(), p.std(), p[-1] - q[-1]))
    r = np.array(rows)
    print(f"{args.model} ({', '.join(d.name for d in members)}), {len(r)} molecules with hydrogens of {where}")
    print("| most H on one heavy atom | molecules | X-H block MAE | X-H spread, QM9 / predicted | omega_1 MAE | omega_1 mean error |")
    print("|---:|---:|---:|---|---:|---:|")
    for k in range(1, 5):
        s = r[r[:, 0] == k]
        if len(s):
            print(f"| {k} | {len(s):,} | {s[:, 1].mean():.1f} | {s[:, 2].mean():.0f} / {s[:, 3].mean():.0f} | "
                  f"{np.abs(s[:, 4]).mean():.1f} | {s[:, 4].mean():+.1f} |")
    print(f"| all | {len(r):,} | {r[:, 1].mean():.1f} | {r[:, 2].mean():.0f} / {r[:, 3].mean():.0f} | "
          f"{np.abs(r[:, 4]).mean():.1f} | {r[:, 4].mean():+.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
