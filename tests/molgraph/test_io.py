"""Readers and the malformed-input corpus in tests/data/malformed: every error path raises a
MoleculeError (a ValueError) that names the file, the molecule index and the problem."""
from pathlib import Path

import numpy as np
import pytest

from molgraph import MolecularGraphFeaturizer, MoleculeError, iter_xyz, read_sdf, read_xyz, write_xyz
from molgraph.io import iter_molecules

DATA = Path(__file__).parent.parent / "data"
BAD = DATA / "malformed"

# file -> (raised by: 'read' or 'featurize', molecule index in the message, fragment of the problem)
CORPUS = {
    "empty.xyz": ("read", None, "empty input"),
    "count_too_small.xyz": ("read", 0, "wrong atom count"),
    "count_too_large.xyz": ("read", 0, "wrong atom count"),
    "bad_count.xyz": ("read", 0, "expected the atom count"),
    "bad_number.xyz": ("read", 0, "unparsable coordinates"),
    "nan_coordinate.xyz": ("read", 0, "NaN"),
    "unknown_element.xyz": ("read", 0, "unknown element 'Xx'"),
    "qm9_truncated.xyz": ("read", 0, "header says 5 atoms but 2 coordinate lines follow"),
    "second_molecule_bad.xyz": ("read", 1, "expected 'element x y z'"),
    "unsupported_element.xyz": ("featurize", 0, "unsupported element(s) Cl"),
    "charged.xyz": ("featurize", 0, "charged species (net charge +1)"),
    "open_shell.xyz": ("featurize", 0, "open-shell"),
    "lonely_atom.xyz": ("featurize", 0, "no neighbour within bonding distance"),
    "overlapping_atoms.xyz": ("featurize", 0, "overlapping atoms"),
    "unparsable.sdf": ("read", 0, "unparsable MOL record"),
    "implicit_hydrogens.sdf": ("read", 0, "implicit hydrogens"),
    "flat_2d.sdf": ("read", 0, "2D"),
    "o2_triplet.xyz": ("featurize", 0, "ground state is a triplet"),
    "no_comment_line.xyz": ("read", 0, "the comment line is missing"),
    "query_atom_second.sdf": ("featurize", 1, "unsupported element(s) *"),
}


def test_corpus_covers_every_file():
    assert set(CORPUS) == {p.name for p in BAD.iterdir()}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_malformed_input_raises_a_located_error(name):
    stage, index, fragment = CORPUS[name]
    path = BAD / name
    read = read_sdf if name.endswith(".sdf") else read_xyz
    with pytest.raises(MoleculeError) as info:
        mols = read(path)
        assert stage == "featurize", f"{name} should have failed while reading"
        for m in mols:
            MolecularGraphFeaturizer()(m)
    err = info.value
    assert isinstance(err, ValueError)
    assert str(path) in str(err) and err.source == str(path)
    assert err.index == index
    assert fragment in str(err), str(err)
    if index is not None:
        assert f"molecule {index}" in str(err)


def test_missing_file_is_named():
    with pytest.raises(MoleculeError, match="nope.xyz: file not found"):
        read_xyz("nope.xyz")
    with pytest.raises(MoleculeError, match="file not found"):
        read_sdf(DATA / "nope.sdf")


def test_batch_goes_on_after_a_bad_molecule():
    items = list(iter_xyz(BAD / "second_molecule_bad.xyz"))
    assert len(items) == 2
    assert items[0].elements == ("O", "H", "H") and items[0].index == 0
    assert isinstance(items[1], MoleculeError) and items[1].index == 1


def test_multi_molecule_text_charge_and_mathematica_numbers():
    text = ("3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"
            "\n"
            "2\nhydroxide? charge=-1 multiplicity=1\nO 0 0 0\nH 9.7*^-1 0 0 extra columns\n")
    mols = read_xyz(text)
    assert [m.n_atoms for m in mols] == [3, 2]
    assert mols[0].source == "<text>" and mols[1].index == 1
    assert mols[1].charge == -1 and mols[1].positions[1, 0] == pytest.approx(0.97)
    assert mols[0].formula == "H2O"


def test_write_xyz_round_trip(tmp_path):
    mols = read_xyz("3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 1e-05\n")
    path = tmp_path / "w.xyz"
    write_xyz(mols + mols, path)
    back = read_xyz(path)
    assert len(back) == 2
    np.testing.assert_allclose(back[1].positions, mols[0].positions, atol=1e-10)
    assert "e-" not in path.read_text()  # fixed decimals: RDKit's XYZ reader rejects 1e-05


def test_sdf_reader_keeps_bonds_and_featurizes():
    (mol,) = read_sdf(DATA / "ethanol.sdf")
    assert mol.name == "ethanol" and mol.n_atoms == 9 and mol.bonds is not None and len(mol.bonds) == 8
    g = MolecularGraphFeaturizer()(mol)
    assert g.atom_features.shape == (9, 21)
    items = list(iter_molecules(DATA / "ethanol.sdf"))
    assert len(items) == 1 and not isinstance(items[0], MoleculeError)


def test_unknown_extension_is_reported(tmp_path):
    p = tmp_path / "mol.pdb"
    p.write_text("ATOM")
    (item,) = list(iter_molecules(p))
    assert isinstance(item, MoleculeError) and "unknown file type '.pdb'" in str(item)


def test_xyz_with_a_byte_order_mark_or_a_latin1_comment_is_read(tmp_path):
    from molgraph import read_xyz

    body = "3\n{comment}\nO 0.0 0.0 0.117\nH 0.0 0.757 -0.467\nH 0.0 -0.757 -0.467\n"
    bom = tmp_path / "bom.xyz"
    bom.write_bytes(b"\xef\xbb\xbf" + body.format(comment="water").encode())
    latin = tmp_path / "latin.xyz"
    latin.write_bytes(body.format(comment="Wasser, 25 \xb0C").encode("latin-1"))
    for path in (bom, latin):
        (mol,) = read_xyz(path)
        assert mol.elements == ("O", "H", "H")
    binary = tmp_path / "binary.xyz"
    binary.write_bytes(b"3\n\x00\x01\x02")
    import pytest

    from molgraph import MoleculeError

    with pytest.raises(MoleculeError, match="not a text file"):
        read_xyz(binary)


def test_a_radical_is_described_by_its_odd_electron_count_not_as_multiplicity_1():
    import pytest

    from molgraph import MolecularGraphFeaturizer, MoleculeError, read_xyz

    (ch3,) = read_xyz("4\nmethyl\nC 0 0 0\nH 1.08 0 0\nH -0.54 0.935 0\nH -0.54 -0.935 0\n")
    with pytest.raises(MoleculeError, match=r"odd number of electrons \(9\): a radical") as info:
        MolecularGraphFeaturizer()(ch3)
    assert "multiplicity 1" not in str(info.value)
