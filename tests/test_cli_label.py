"""`qmlrp label beta / collect / compare` end to end on the three one-heavy-atom QM9 molecules
(HF/STO-3G, 2 workers), and the collected table joined to QM9 through `--labels`."""
import json
import math

import numpy as np
import pytest

pytest.importorskip("pyscf")
pytest.importorskip("distributed")

from qmlrp.cli import _load, build_parser, main  # noqa: E402

HF = ["--xc", "hf", "--basis", "sto-3g", "--no-progress"]


@pytest.fixture(scope="module")
def BETA(tmp_path_factory):
    ids = tmp_path_factory.mktemp("ids") / "ids.txt"
    ids.write_text("1\n2\n3\n")  # CH4, NH3, H2O
    return ["label", "beta", "--ids", str(ids), *HF]


@pytest.fixture(scope="module")
def scheduler():
    """A running LocalCluster that `--scheduler ADDRESS` connects to."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}, silence_logs=logging.CRITICAL) as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, BETA):
    """`qmlrp label beta` on a LocalCluster of its own (--workers 2), then `qmlrp label collect`."""
    out = tmp_path_factory.mktemp("labels")
    assert main([*BETA, "--out", str(out), "--workers", "2"]) == 0
    assert main(["label", "collect", str(out)]) == 0
    return out


def test_beta_then_collect(labelled, BETA, capsys):
    files = sorted(p.name for p in labelled.glob("results/*/qm9_*.json"))
    assert files == ["qm9_000001.json", "qm9_000002.json", "qm9_000003.json"]
    capsys.readouterr()
    assert main([*BETA, "--out", str(labelled), "--workers", "2"]) == 0  # rerun: nothing to do
    out = capsys.readouterr().out
    assert "0 labelled, 0 failed in this run" in out and "3 were done before" in out
    table = (labelled / "table.csv").read_text().splitlines()
    assert len(table) == 4 and table[0].startswith("qm9_id,id,name,smiles,formula,n_atoms,n_heavy,n_basis,xc,basis")
    summary = json.loads((labelled / "table.summary.json").read_text())
    assert (summary["n_done"], summary["n_failed"], summary["n_beta_par_undefined"]) == (3, 0, 1)  # CH4 has no dipole
    assert main(["label", "collect", str(labelled), "--out", str(labelled / "t2.csv")]) == 0
    out = capsys.readouterr().out
    assert "3 done, 0 failed" in out and "vs QM9 mu_debye: MAE" in out and "vs QM9 alpha_iso_bohr3: MAE" in out


def test_compare_writes_json(labelled, tmp_path, capsys):
    a = labelled / "table.csv"
    assert main(["label", "compare", str(a), str(a), "--out", str(tmp_path / "c.json")]) == 0
    r = json.loads((tmp_path / "c.json").read_text())
    assert r["n_overlap"] == 3 and r["columns"]["beta_vec_norm"]["mae"] == 0.0
    assert r["columns"]["beta_par"]["n"] == 2  # NH3 and H2O: beta_par defined
    assert "beta_par" in capsys.readouterr().out


def test_failures_are_listed_and_retried_only_when_asked(tmp_path, BETA, scheduler, capsys):
    args = [*BETA, "--out", str(tmp_path), "--scheduler", scheduler, "--engine-option", "basis_convention=\"bogus\""]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "3 molecule(s) failed" in out and "qm9:2: QMInputError" in out and "unknown basis_convention 'bogus'" in out
    assert len(list(tmp_path.glob("failed/*/qm9_*.json"))) == 3
    assert main(args) == 1  # rerun: the failures are skipped (and listed again)
    assert "0 labelled, 0 failed in this run" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["runs"]) == 2 and sum(r["n_submitted"] for r in manifest["runs"]) == 3
    assert main([*args, "--retry-failed"]) == 1
    assert "0 labelled, 3 failed in this run" in capsys.readouterr().out
    assert main(["label", "collect", str(tmp_path)]) == 0
    assert "0 done, 3 failed" in capsys.readouterr().out


def test_bad_input_is_refused_with_the_reason(tmp_path, BETA, capsys):
    assert main([*BETA, "--out", str(tmp_path), "--ids", str(tmp_path / "none.txt")]) == 2
    assert "none.txt: no such ids file" in capsys.readouterr().err
    assert main([*BETA, "--out", str(tmp_path), "--engine-option", "no-equals-sign"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["label", "collect", str(tmp_path / "nothing")]) == 2
    assert "no results/ folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["label", "beta", "--out", str(tmp_path), "--order", "random"])
    assert "invalid choice" in capsys.readouterr().err


def test_labels_join_qm9_from_the_command_line(labelled, tmp_path):
    (tmp_path / "ids.txt").write_text("1 2 3 4\n")
    args = build_parser().parse_args(["split", "--ids", str(tmp_path / "ids.txt"), "--cache-dir", str(tmp_path / "c"),
                                      "--workers", "1", "--labels", str(labelled / "table.csv"), "--out", "unused"])
    ds = _load(args, progress=False)
    rows = {int(float(r.split(",")[0])): r.split(",") for r in (labelled / "table.csv").read_text().splitlines()[1:]}
    header = (labelled / "table.csv").read_text().splitlines()[0].split(",")
    vec = ds.target("beta_vec_au")
    for k, q in enumerate(ds.ids.tolist()):
        if q in rows:
            assert vec[k] == pytest.approx(float(rows[q][header.index("beta_vec_norm")]))
        else:
            assert math.isnan(vec[k])  # qm9:4 was not labelled
    np.testing.assert_array_equal(ds.label_mask("beta_par_au"), [False, True, True, False])
