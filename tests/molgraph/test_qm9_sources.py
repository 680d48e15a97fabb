"""Both QM9 sources give identical records; the quirks of the data are handled."""
import tarfile

import numpy as np
import pytest

from molgraph import MoleculeError, read_xyz
from molgraph.qm9_sources import (
    N_CHARACTERIZED, N_QM9, SCALAR_PROPERTIES, format_qm9_xyz, iter_original, uncharacterized_ids,
)
from molgraph.targets import HARTREE_CM1, HARTREE_EV, clean_frequencies, compute_targets

IDS = (1, 4, 29, 105, 1000, 6620, 20332, 133885)


def _mathematica(text: str) -> str:
    """Write one property the way some original files do, e.g. 2.1997*^-6."""
    head, rest = text.split("\n", 2)[1], text.split("\n", 2)[2]
    parts = head.split("\t")
    parts[5] = f"{float(parts[5]) * 1e6:.10g}*^-6"  # mu_debye
    return text.split("\n", 1)[0] + "\n" + "\t".join(parts) + "\n" + rest


def _same_record(a, b):
    assert a.elements == b.elements
    np.testing.assert_array_equal(a.positions, b.positions)
    assert a.smiles == b.smiles and a.name == b.name
    for key in (*SCALAR_PROPERTIES, "qm9_id", "inchi", "mulliken_e", "freqs_raw_cm1"):
        if key == "mu_debye":
            assert a.properties[key] == pytest.approx(b.properties[key], rel=1e-9)
        else:
            assert a.properties[key] == b.properties[key], key


def test_uncharacterized_list_is_the_published_3054_one_based_ids(qm9_rows):
    skip = uncharacterized_ids()
    assert len(skip) == 3054 == N_QM9 - N_CHARACTERIZED
    assert min(skip) >= 1 and max(skip) <= N_QM9
    assert not skip & {int(k) for k in qm9_rows if k != "zwitterion"}
    assert 58 in skip and 1 not in skip  # first uncharacterized id of the original list


def test_original_directory_and_archive_match_qm9pack(tmp_path, qm9_molecules):
    folder = tmp_path / "dsgdb9nsd"
    folder.mkdir()
    texts = {}
    for qid in IDS:
        texts[qid] = _mathematica(format_qm9_xyz(qm9_molecules[qid]))
        (folder / f"dsgdb9nsd_{qid:06d}.xyz").write_text(texts[qid])
    # an uncharacterized molecule present in the original distribution is skipped
    (folder / "dsgdb9nsd_000058.xyz").write_text(texts[1].replace("gdb 1\t", "gdb 58\t"))
    archive = tmp_path / "dsgdb9nsd.xyz.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        for p in sorted(folder.iterdir()):
            tar.add(p, arcname=p.name)
    for root in (folder, archive):
        got = [m for m in iter_original(root)]
        assert all(not isinstance(m, MoleculeError) for m in got), got
        assert [m.properties["qm9_id"] for m in got] == list(IDS)
        for m in got:
            _same_record(m, qm9_molecules[m.properties["qm9_id"]])
    # and the plain XYZ reader understands a QM9 file too
    (m,) = read_xyz(folder / "dsgdb9nsd_000004.xyz")
    _same_record(m, qm9_molecules[4])


def test_bad_original_file_is_reported_not_dropped(tmp_path, qm9_molecules):
    (tmp_path / "dsgdb9nsd_000001.xyz").write_text(format_qm9_xyz(qm9_molecules[1]))
    (tmp_path / "dsgdb9nsd_000004.xyz").write_text(format_qm9_xyz(qm9_molecules[4]).replace("-0.2845", "x0.2845"))
    got = list(iter_original(tmp_path))
    assert not isinstance(got[0], MoleculeError)
    assert isinstance(got[1], MoleculeError) and "dsgdb9nsd_000004.xyz" in str(got[1]) and "unparsable number" in str(got[1])


def test_doubled_frequency_rows_keep_the_second_half(qm9_molecules):
    for qid in (29, 118):
        m = qm9_molecules[qid]
        raw = m.properties["freqs_raw_cm1"]
        freqs, n_imag, doubled = clean_frequencies(raw, m.n_atoms)
        assert doubled and n_imag == 0 and len(raw) == 2 * len(freqs) == 2 * (3 * m.n_atoms - 6)
        np.testing.assert_allclose(0.5 * freqs.sum() / HARTREE_CM1, m.properties["zpve_ha"], atol=1e-6)


def test_imaginary_modes_are_counted_and_excluded(qm9_molecules):
    for qid in (6620, 59818, 129158):
        m = qm9_molecules[qid]
        t = compute_targets(m.properties, m.n_atoms)
        assert t["n_imaginary"] == 1
        assert (t["freqs_cm1"] > 0).all() and np.all(np.diff(t["freqs_cm1"]) >= 0)
        assert len(t["freqs_cm1"]) == 3 * m.n_atoms - 7
        assert t["omega1_cm1"] == t["freqs_cm1"][-1]


def test_linear_molecules_have_3n_minus_5_modes(qm9_molecules):
    for qid in (4, 5):
        m = qm9_molecules[qid]
        assert len(compute_targets(m.properties, m.n_atoms)["freqs_cm1"]) == 3 * m.n_atoms - 5


def test_targets_units_and_zpve_identity(qm9_molecules):
    m = qm9_molecules[1]  # methane: alpha 13.21 bohr^3, ZPVE 0.044749 Ha, HOMO -0.3877 Ha
    t = compute_targets(m.properties, m.n_atoms)
    assert t["alpha_bohr3"] == 13.21
    assert t["zpve_ev"] == pytest.approx(0.044749 * 27.211386245988)
    assert t["homo_ev"] == pytest.approx(-0.3877 * HARTREE_EV)
    assert t["cv_cal_molk"] == 6.469 and t["r2_bohr2"] == 35.3641 and t["mu_debye"] == 0.0
    np.testing.assert_allclose(t["alpha_tensor_bohr3"], np.eye(3) * 13.211)
    assert np.trace(t["alpha_tensor_bohr3"]) / 3 == pytest.approx(t["alpha_bohr3"], abs=2e-3)
    for qid, mol in qm9_molecules.items():
        tt = compute_targets(mol.properties, mol.n_atoms)
        assert 0.5 * tt["freqs_cm1"].sum() / HARTREE_CM1 == pytest.approx(mol.properties["zpve_ha"], abs=1e-6), qid
