"""Heatmaps of a representative set of molecules: which ones, and drawing them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .inputs import Inputs
from .store import RelevanceSet


def select_representative(rs: RelevanceSet, k: int) -> list[tuple[int, str]]:
    """Up to k (position, why) pairs: extremes first (largest |error|, largest and smallest
    prediction, largest total |relevance|), then typical molecules (|error| - or, without labels,
    the prediction - and size both near their medians)."""
    m = len(rs)
    if k <= 0 or m == 0:
        return []
    has_labels = bool(np.isfinite(rs.target).any())
    err = np.abs(rs.prediction - rs.target) if has_labels else None
    abs_rel = np.array([np.abs(rs.per_atom[rs.offsets[i]:rs.offsets[i + 1]]).sum() for i in range(m)])
    chosen: list[tuple[int, str]] = []

    def add(i, why):
        for j, (c, w) in enumerate(chosen):
            if c == i:  # one molecule, several reasons: say them all
                if why.startswith("extreme") and w.startswith("extreme"):
                    chosen[j] = (c, f"{w}; {why.removeprefix('extreme: ')}")
                return
        if len(chosen) < k:
            chosen.append((int(i), why))

    extremes = []
    if has_labels:
        e = np.where(np.isfinite(err), err, -np.inf)
        extremes.append((int(np.argmax(e)), "extreme: largest error"))
    extremes += [(int(np.argmax(rs.prediction)), "extreme: largest prediction"),
                 (int(np.argmin(rs.prediction)), "extreme: smallest prediction"),
                 (int(np.argmax(abs_rel)), "extreme: largest total |relevance|")]
    n_ext = min(len(extremes), (k + 1) // 2)
    for i, why in extremes[:n_ext]:
        add(i, why)

    def pct_rank(v):
        r = np.empty(len(v))
        r[np.argsort(v, kind="stable")] = np.arange(len(v))
        return r / max(len(v) - 1, 1)

    basis = err if has_labels else rs.prediction
    basis = np.where(np.isfinite(basis), basis, np.nanmedian(basis))
    closeness = np.abs(pct_rank(basis) - 0.5) + np.abs(pct_rank(rs.n_atoms.astype(float)) - 0.5)
    what = "error" if has_labels else "prediction"
    for i in np.argsort(closeness, kind="stable"):
        if len(chosen) >= k:
            break
        add(i, f"typical: {what} and size near the median")
    return chosen


def heatmap_stem(mol_id: str) -> str:
    """File name (without extension) of a molecule's heatmap: its id, with characters other
    than letters, digits, '.', '_' and '-' replaced by '_' ('qm9:176' -> 'qm9_176'; a ':' is not
    allowed in Windows file names and reads as a URL scheme in a bare link)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in mol_id)


def draw_heatmaps(rs: RelevanceSet, inputs: Inputs, chosen: list[tuple[int, str]], out: Path, unit: str,
                  failures: list[dict]) -> list[dict]:
    import torch

    from molgraph import FEATURE_GROUPS
    from molgraph.relevance import per_pair

    from .depict import draw_heatmap, perceived, smiles_of

    made = []
    bt = FEATURE_GROUPS["bond_type"].slice
    for i, why in chosen:
        mr = rs.molecule(i)
        try:
            g = inputs.graph(i)
            bonded = (g.pair_features[..., bt].sum(-1) > 0).numpy()
            mol = perceived(inputs.molecule(i), g.elements, bonded)
            smi = smiles_of(mol)
            pv = per_pair(torch.from_numpy(mr.pair[None].astype(np.float64)))[0].numpy()
            tgt = f"target {mr.target:.4g} {unit}" if np.isfinite(mr.target) else "no target"
            title = [f"{mr.id}   {smi}", f"prediction {mr.prediction:.4g} {unit},  {tgt}"]
            h = draw_heatmap(mol, mr.per_atom, pv, out / "heatmaps" / heatmap_stem(mr.id), title, unit)
        except Exception as exc:  # a depiction problem must not cost the whole run
            failures.append({"source": "heatmap", "molecule": mr.id, "error": f"{type(exc).__name__}: {exc}"})
            continue
        made.append({"id": mr.id, "why": why, "smiles": smi, "png": str(h.png.relative_to(out)),
                     "svg": str(h.svg.relative_to(out)), "prediction": mr.prediction,
                     "target": mr.target if np.isfinite(mr.target) else None, "n_atoms": mr.n_atoms,
                     "colour_scale": h.scale})
    return made


