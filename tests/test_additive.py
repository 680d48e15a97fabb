"""`qmlrp additive`: per-unit relevance is conserved, an exactly additive relevance is read back
as the additive model, and the command runs on a finished explain directory."""
import json

import numpy as np
import pytest

from molgraph import additive as am
from qmlrp.additive import compare_additive, unit_relevance
from qmlrp.cli import main

from .conftest import tiny_qm9_model


def test_bond_relevance_splits_each_atom_over_its_bonds_and_keeps_the_total():
    # H-C(-H)=O plus a lone atom 4 with no bond
    i, j = np.array([0, 1, 1]), np.array([1, 2, 3])
    labels = np.array(["C-H", "C-H", "C=O"], dtype=object)
    r = np.array([1.0, 3.0, 2.0, 5.0, 0.5])
    lab, rel = unit_relevance("bonds", r, np.array(["H", "C_sp2", "H", "O_sp2", "F_sp3"], object), (i, j, labels))
    assert list(lab) == ["C-H", "C-H", "C=O", "unbonded F_sp3"]
    np.testing.assert_allclose(rel, [1.0 + 1.0, 1.0 + 2.0, 1.0 + 5.0, 0.5])
    assert rel.sum() == pytest.approx(r.sum())


def test_an_exactly_additive_relevance_is_read_back_as_the_additive_model():
    rng = np.random.default_rng(1)
    types = ("H", "C_sp3", "O_sp3")
    a = np.array([2.0, 7.0, 4.0])
    labels = [np.array(list(rng.choice(types, size=rng.integers(3, 9))), dtype=object) for _ in range(60)]
    counts = am.count_matrix(labels, types)
    y = 1.0 + counts @ a
    model = am.fit(counts, y + rng.normal(0, 1e-6, len(y)), types, "atoms")
    col = {t: k for k, t in enumerate(types)}
    rel = [np.array([a[col[t]] for t in lab]) for lab in labels]  # each unit carries its a_t
    c = compare_additive(model, labels, rel, y, y, None, resamples=50, seed=0)
    np.testing.assert_allclose([t["implied"] for t in c["types"]], a, rtol=1e-9)
    assert c["r_types"] == pytest.approx(1.0) and c["r_units"] == pytest.approx(1.0)
    assert c["r_totals"] == pytest.approx(1.0) and c["mae_totals"] < 1e-4
    assert all(t["implied_ci"][0] <= t["implied"] <= t["implied_ci"][1] for t in c["types"])
    assert c["r_implied_vs_network_fit"] == pytest.approx(1.0)
    # one unit less per unit: the implied contributions move with it (they are read, not assumed)
    c2 = compare_additive(model, labels, [r - 1.0 for r in rel], y, y, None, resamples=20, seed=0)
    np.testing.assert_allclose([t["implied"] for t in c2["types"]], a - 1.0, rtol=1e-9)


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    root = tmp_path_factory.mktemp("add")
    _, _, model = tiny_qm9_model(root, n=120, val=0.15, test=0.25, epochs=2)
    out = root / "explain"
    assert main(["explain", "--model", str(model), "--split", "test", "--reference", "empty",
                 "--cache-dir", str(root / "cache"), "--out", str(out), "--heatmaps", "0",
                 "--faithfulness", "0", "--bootstrap", "20", "--no-progress"]) == 0
    return root, out


def test_the_command_compares_an_explain_run_with_both_schemes(explained, capsys):
    root, run = explained
    assert main(["additive", str(run), "--scheme", "atoms", "--scheme", "bonds", "--min-molecules", "3",
                 "--bootstrap", "30", "--cache-dir", str(root / "cache"), "--no-progress"]) == 0
    res = json.loads((run / "additive" / "additive.json").read_text())
    assert res["reference"] == "empty" and res["target"] == "alpha_bohr3" and set(res["schemes"]) == {"atoms", "bonds"}
    from qmlrp.explain import load_relevance

    for scheme, c in res["schemes"].items():
        assert (run / "additive" / f"{scheme}.csv").is_file() and (run / "additive" / c["figure"]).is_file()
        assert c["n_molecules"] == len(load_relevance(run)) > 0
        assert c["additive_model"]["r2"] > 0.8  # alpha is close to additive even on 70 molecules
        types = [t["type"] for t in c["types"]]
        assert ("C_sp3" in types) if scheme == "atoms" else ("C-H" in types)
        assert -1 <= c["r_types"] <= 1
    # every atom of every explained molecule is one unit of the atoms scheme
    rs = load_relevance(run)
    atoms = res["schemes"]["atoms"]
    assert sum(t["n_units"] for t in atoms["types"]) == sum(len(rs.molecule(k).per_atom) for k in range(len(rs)))
    md = (run / "additive" / "additive.md").read_text()
    assert "reference empty" in md and "| C_sp3 |" in md


def test_the_command_refuses_what_it_cannot_check(explained, tmp_path, capsys):
    root, run = explained
    assert main(["additive", str(tmp_path), "--no-progress"]) == 2
    assert "no summary.json" in capsys.readouterr().err
