"""Shared fixtures: a handful of real QM9 molecules (from the qm9pack CSVs) and a helper that
embeds hand-picked molecules in 3D with RDKit."""
from __future__ import annotations

import numpy as np
import pytest

# QM9 ids used across tests: small molecules, the frequency quirks (doubled rows: 29, 118;
# imaginary modes: 6620, 59818, 129158; linear: 4, 5), a bicyclobutane with a 1.88 A
# transannular contact (105), larger molecules.
QM9_IDS = (1, 2, 3, 4, 5, 6, 7, 23, 29, 105, 106, 118, 316, 1000, 6620, 20332, 59818, 100000, 129158, 133885)


@pytest.fixture(scope="session")
def qm9_rows():
    """{id: raw qm9pack row} for QM9_IDS plus the first zwitterion (charged SMILES)."""
    from molgraph.qm9_sources import iter_qm9pack_rows

    rows, zwitterion = {}, None
    for row in iter_qm9pack_rows():
        qid = int(row["Index"])
        if qid in QM9_IDS:
            rows[qid] = row
        elif zwitterion is None and "+" in row["SMILES"]:
            zwitterion = qid
            rows[qid] = row
    rows["zwitterion"] = zwitterion
    return rows


@pytest.fixture(scope="session")
def qm9_molecules(qm9_rows):
    from molgraph.qm9_sources import molecule_from_qm9pack_row

    return {k: molecule_from_qm9pack_row(r) for k, r in qm9_rows.items() if k != "zwitterion"}


def embed(smiles: str, seed: int = 7, with_template: bool = False):
    """3D Molecule (all H explicit) for a SMILES via RDKit ETKDG + MMFF."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from molgraph import Molecule

    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(m, randomSeed=seed) == 0
    AllChem.MMFFOptimizeMolecule(m)
    return Molecule(
        elements=tuple(a.GetSymbol() for a in m.GetAtoms()),
        positions=np.array(m.GetConformer().GetPositions()),
        name=smiles, smiles=smiles if with_template else None,
    )


def imports_outside(package_root, allowed=("torch", "__future__")) -> list[str]:
    """'file imports name' for every absolute import in a package's top-level .py files whose
    top module is neither in `allowed` nor in the standard library."""
    import ast
    import sys

    ok = set(allowed) | set(sys.stdlib_module_names)
    bad = []
    for path in sorted(package_root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            bad += [f"{path.name} imports {n}" for n in names if n.split(".")[0] not in ok]
    return bad


TINY = dict(atom_hidden=8, pair_hidden=8, readout_hidden=8, head_hidden=(8,))  # a weave net that trains in seconds


def train_tiny(out, train, val, target: str = "alpha_bohr3", epochs: int = 1, split=None):
    """A tiny WeaveNet trained on `train` (validation `val`) into `out`; with a split, its digest
    goes into the config and split.json next to it (what explain and additive read)."""
    import gcnn

    gcnn.Trainer(out, gcnn.WeaveConfig(**TINY), gcnn.TrainConfig(targets=(target,), epochs=epochs, batch_size=16, seed=0),
                 log=lambda m: None, progress=False).fit(
        train, val, split_meta=None if split is None else {"digest": split.digest, **split.meta})
    if split is not None:
        split.save(out / "split.json")
    return out


def tiny_qm9_model(root, n: int = 100, val: float = 0.2, test: float = 0.3, epochs: int = 1):
    """(dataset of QM9 ids 1..n cached under root/cache, its seeded split, a tiny alpha model on it
    in root/model with split.json): the fixture of the explain-level tests."""
    import torch

    from molgraph import qm9, splits

    torch.set_num_threads(1)
    ds = qm9.load(ids=range(1, n + 1), cache_root=root / "cache", workers=1, progress=False, log=lambda m: None)
    sp = splits.train_val_test(ds.ids, val=val, test=test, seed=0, source="qm9pack",
                               source_checksum=ds.manifest["source_checksum"])
    return ds, sp, train_tiny(root / "model", ds.subset(sp.train), ds.subset(sp.val), epochs=epochs, split=sp)
