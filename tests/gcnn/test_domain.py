"""Applicability domain: recorded from the training set, one verdict with reasons per molecule,
flags what lies outside (size, elements, fragments, feature ranges, distance in the pooled
representation), round-trips through its file, and reaches `qmlrp predict`."""
import json

import numpy as np
import pytest
import torch

import gcnn
from gcnn.domain import DOMAIN_FILE, Domain
from molgraph import MolecularGraphFeaturizer, Molecule, qm9
from qmlrp.cli import main

from ..conftest import embed, train_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("dom")
    ds = qm9.load(ids=range(1, 161), cache_root=root / "cache", workers=1, progress=False, log=lambda m: None)
    no_f = [int(i) for i in ds.ids if "F" not in ds[ds.index_of(int(i))].elements]
    train = ds.subset(no_f[:120])
    out = train_tiny(root / "model", train, ds.subset(no_f[120:140]))
    gcnn.domain.record(out, train)
    return out, train


def _verdicts(model_dir, graphs):
    return gcnn.load(model_dir).check_domain(graphs)


def test_the_training_molecules_are_inside_but_for_the_top_percent(trained):
    out, train = trained
    d = Domain.load(out)
    assert d.n_train == len(train) and d.elements == ("C", "H", "N", "O") and d.n_atoms[0] >= 3
    v = _verdicts(out, [train[i] for i in range(len(train))])
    flagged = [x for x in v if not x.inside]
    assert 1 <= len(flagged) <= 2  # the 99th percentile of 120 scores: one or two above it
    assert all("far from the training data" in r for x in flagged for r in x.reasons)
    assert d.train_quantiles["50"] == pytest.approx(np.median([x.score for x in v]), rel=1e-4)


def test_size_elements_and_fragments_are_named_reasons(trained):
    out, train = trained
    f = MolecularGraphFeaturizer()
    water = Molecule(("O", "H", "H"), np.array([[0, 0, 0], [0.9572, 0, 0], [-0.24, 0.9266, 0]]))
    two = Molecule(("O", "H", "H", "O", "H", "H"), np.vstack([water.positions, water.positions + [10.0, 0, 0]]))
    big = embed("C" * 14)
    fluoro = embed("FC(F)F")
    v = _verdicts(out, [f(two), f(big), f(fluoro)])
    assert not v[0].inside and any("2 disconnected fragments" in r for r in v[0].reasons)
    assert not v[1].inside and any(f"{big.n_atoms} atoms; the training molecules have" in r for r in v[1].reasons)
    assert not v[2].inside and any("element(s) F never seen" in r for r in v[2].reasons)
    assert any("outside the training range" in r for r in v[1].reasons + v[2].reasons)


def test_more_heavy_atoms_than_in_training_is_a_named_reason(trained):
    """A model trained on small molecules (the beta models) says so for a larger one, even when
    its atom count lies inside the training range; domains recorded before heavy atoms were
    counted (n_heavy None) do not invent the reason."""
    out, train = trained
    d = Domain.load(out)
    heavy = [sum(e != "H" for e in train[i].elements) for i in range(len(train))]
    assert d.n_heavy == (min(heavy), max(heavy))
    long = MolecularGraphFeaturizer()(embed("N#CC#CC#CC#N"))  # 8 heavy atoms, 8 atoms
    assert d.n_atoms[0] <= long.n_atoms <= d.n_atoms[1] and 8 > d.n_heavy[1]
    pooled = gcnn.load(out).models[0].model.pooled(long.atom_features[None], long.pair_features[None],
                                                   torch.ones(1, long.n_atoms)).detach().double().numpy()
    reasons = d.check([long], pooled)[0].reasons
    assert f"8 heavy atoms; the training molecules have {d.n_heavy[0]}-{d.n_heavy[1]}" in reasons
    d.n_heavy = None
    assert not any("heavy atoms" in r for r in d.check([long], pooled)[0].reasons)


def test_the_file_round_trips_is_checksummed_and_a_damaged_one_is_refused(trained, tmp_path):
    import shutil

    out, _ = trained
    copy = tmp_path / "m"
    shutil.copytree(out, copy)
    a, b = Domain.load(out), Domain.load(copy)
    np.testing.assert_array_equal(a.components, b.components)
    assert a.threshold == b.threshold and a.elements == b.elements
    assert DOMAIN_FILE in json.loads((copy / "checksums.json").read_text())["sha256"]
    (copy / DOMAIN_FILE).write_bytes((copy / DOMAIN_FILE).read_bytes()[:200])
    with pytest.raises(ValueError, match="checksum|domain"):
        gcnn.load(copy)
    (copy / DOMAIN_FILE).unlink()
    with pytest.raises(ValueError, match="domain.npz is listed in checksums.json but missing"):
        gcnn.load(copy)
    gcnn.training.write_checksums(copy)  # a model without a domain (as before domains were recorded)
    assert gcnn.load(copy).check_domain([]) is None and not gcnn.load(copy).has_domain


def test_predict_reports_the_verdict_per_molecule(trained, tmp_path, capsys):
    out, _ = trained
    xyz = tmp_path / "odd.xyz"
    xyz.write_text("6\ntwo waters\nO 0 0 0\nH 0.9572 0 0\nH -0.24 0.9266 0\nO 10 0 0\nH 10.9572 0 0\nH 9.76 0.9266 0\n")
    assert main(["predict", "--model", str(out), str(xyz), "--json"]) == 0
    cap = capsys.readouterr()
    row = json.loads(cap.out)["predictions"][0]
    assert row["domain"]["inside"] is False and row["uncertainty"] is None
    assert any("disconnected" in r for r in row["domain"]["reasons"]) and row["domain"]["threshold"] > 0
    assert "outside the model's applicability domain" in cap.err
    assert main(["predict", "--model", str(out), str(xyz)]) == 0
    assert "OUTSIDE the domain: 2 disconnected fragments" in capsys.readouterr().out
