"""Where LRP's absorbed part goes, module by module: the mean absorbed relevance per molecule of
each module of a weave model (target units), over the first N test molecules of fold 0 (by id).

    python benchmarks/absorbed_by_module.py data/models/cv_alpha_bohr3 [--n 640] [--reference mean|empty]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict



def main(argv=None) -> int:
    import torch

    from molgraph import splits
    from qmlrp.explain import load_model, qm9_inputs
    from qmlrp.explain.relevance_pass import reference_pooled, relevance_batches

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cv_dir")
    p.add_argument("--n", type=int, default=640)
    p.add_argument("--reference", default="mean", choices=("mean", "empty"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    lm = load_model(f"{a.cv_dir}/fold_0")
    ids = list(splits.load_split(f"{a.cv_dir}/split.json").fold(0).test[:a.n])
    inp = qm9_inputs(ids, lm.target, log=lambda m: None, progress=False)
    tot, n, explained = defaultdict(float), 0, 0.0
    for idx, _, e in relevance_batches(lm.net, inp.graph, inp.n_atoms, "epsilon", None, None, 128,
                                       reference=reference_pooled(lm.net, a.reference)):
        for k, v in e.absorbed_by.items():
            tot[k] += float(v.double().sum()) * lm.std
        explained += float(e.explained.double().sum()) * lm.std
        n += len(idx)
    print(f"{a.cv_dir} fold 0, reference {a.reference}, {n} test molecules: mean explained {explained / n:.4g} {lm.unit}")
    print("| module | mean absorbed per molecule |\n|---|---:|")
    for k, v in sorted(tot.items(), key=lambda kv: -abs(kv[1])):
        if abs(v / n) >= 1e-4:
            print(f"| {k} | {v / n:.4g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
