"""How often the applicability-domain flag fires, and how the error grows with its score.

For a model directory (or fold folder) with a recorded domain: every molecule of fold 0's test
bin (by reason, and the MAE inside / outside and by score bin), then a set of deliberately odd
molecules built with RDKit (too large, disconnected, unseen elements, outside QM9's chemistry).

    python benchmarks/domain_rates.py data/models/cv_alpha_bohr3 [--target alpha_bohr3]
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np

ODD = [  # (label, SMILES or a list of them: disconnected)
    ("water (in QM9, 3 atoms)", "O"), ("methane (in QM9)", "C"), ("benzene (in QM9)", "c1ccccc1"),
    ("acetic acid (in QM9)", "CC(=O)O"), ("octane (8 heavy atoms)", "CCCCCCCC"),
    ("naphthalene (10 heavy atoms)", "c1ccc2ccccc2c1"), ("cyclododecane (12)", "C1CCCCCCCCCCC1"),
    ("C30 alkane (92 atoms)", "C" * 30), ("hexafluoroethane", "FC(F)(F)C(F)(F)F"),
    ("O2 as a closed-shell singlet", "O=O"), ("two ethanols in one record", "CCO.CCO"),
    ("water and methane 8 A apart", "O.C"), ("nitromethane (zwitterionic N)", "C[N+](=O)[O-]"),
    ("chloromethane (Cl: not a QM9 element)", "CCl"),
]


def _embed(smiles, seed=1):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from molgraph import Molecule

    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if AllChem.EmbedMolecule(m, randomSeed=seed) != 0:
        raise ValueError(f"{smiles}: RDKit could not embed it")
    AllChem.MMFFOptimizeMolecule(m)
    pos = np.array(m.GetConformer().GetPositions())
    frags = Chem.GetMolFrags(m)
    if len(frags) > 1:  # move the fragments apart: 8 A between consecutive ones
        for k, f in enumerate(frags):
            pos[list(f)] += [8.0 * k, 0, 0]
    return Molecule(tuple(a.GetSymbol() for a in m.GetAtoms()), pos, name=smiles,
                    charge=Chem.GetFormalCharge(m))


def main(argv=None) -> int:
    import torch

    import gcnn
    from molgraph import MolecularGraphFeaturizer, MoleculeError, qm9, splits

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--target", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    pred = gcnn.load(a.model)
    if not pred.has_domain:
        print(f"{a.model}: no recorded domain (qmlrp domain {a.model})", file=sys.stderr)
        return 2
    target = a.target or pred.targets[0]
    split = splits.load_split(f"{a.model}/split.json")
    test = split.fold(0).test if isinstance(split, splits.KFold) else split.test
    ds = qm9.load(ids=test, progress=False, log=lambda m: None)
    y = np.asarray(ds.target(target), dtype=np.float64)
    n = len(ds)
    verdicts, preds = [], []
    for s in range(0, n, 256):
        gs = [ds[i] for i in range(s, min(n, s + 256))]
        verdicts += pred.check_domain(gs)
        preds.append(pred.predict_graphs(gs)[0][:, 0])
    yhat = np.concatenate(preds)
    err = np.abs(yhat - y)
    inside = np.array([v.inside for v in verdicts])
    score = np.array([v.score for v in verdicts])
    unit = pred.units[target]
    print(f"## {a.model}: fold-0 test bin, {n} molecules, target {target}")
    print(f"outside: {int((~inside).sum())} ({100 * (~inside).mean():.2f} %); MAE inside {err[inside].mean():.4g}, "
          f"outside {err[~inside].mean() if (~inside).any() else float('nan'):.4g} {unit}")
    reasons = Counter(r.split(" (score")[0].split(" = ")[0].split(";")[0] for v in verdicts for r in v.reasons)
    for r, c in reasons.most_common(8):
        print(f"  {c:6d}  {r}")
    edges = np.percentile(score, [0, 50, 90, 99, 99.9, 100])
    print("| score range (percentiles of the test bin) | molecules | MAE | 95th percentile of |error| |")
    print("|---|---:|---:|---:|")
    names = ["0-50", "50-90", "90-99", "99-99.9", "99.9-100"]
    for k in range(5):
        sel = (score >= edges[k]) & (score <= edges[k + 1] if k == 4 else score < edges[k + 1])
        print(f"| {names[k]} % ({edges[k]:.2f}-{edges[k + 1]:.2f}) | {int(sel.sum())} | {err[sel].mean():.4g} | "
              f"{np.percentile(err[sel], 95):.4g} |")
    print(f"Spearman(score, |error|) = {_spearman(score, err):.3f}")
    print("\n| odd molecule | prediction | verdict |\n|---|---:|---|")
    f = MolecularGraphFeaturizer()
    for label, smi in ODD:
        try:
            g = f(_embed(smi))
        except (MoleculeError, ValueError) as exc:
            print(f"| {label} | refused | {str(exc).splitlines()[0][:120]} |")
            continue
        v = pred.check_domain([g])[0]
        value = pred.predict_graphs([g])[0][0, 0]
        print(f"| {label} | {value:.4g} {unit} | {v.text()[:300]} |")
    return 0


def _spearman(x, y):
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


if __name__ == "__main__":
    sys.exit(main())
