"""The `qmlrp` command line, end to end on small QM9 selections."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qmlrp.cli import main

DATA = Path(__file__).parent / "data"


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QMLRP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_featurize_reports_counts_and_writes_json(tmp_path, cache, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("1, 2, 3\n4\n58\n")  # 58 is uncharacterized: not in the embedded QM9
    rc = main(["featurize", "--ids", str(ids), "--workers", "1", "--report", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "featurized 4 of 4 molecules; 0 failed" in out
    assert "1 requested id(s) are not in the source" in out and "qm9:58: uncharacterized" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["n_molecules"] == 4 and rep["manifest"]["featurizer_version"] == "mg-1"


def test_featurize_unknown_root_is_a_clear_error(tmp_path, cache, capsys):
    rc = main(["featurize", "--source", "xyz", "--root", str(tmp_path / "missing")])
    assert rc == 2 and "no such file or directory" in capsys.readouterr().err


def test_inspect_goes_on_past_bad_files(tmp_path, capsys):
    rc = main(["inspect", str(DATA / "ethanol.sdf"), str(DATA / "malformed" / "charged.xyz"),
               str(DATA / "malformed" / "second_molecule_bad.xyz"), "--json", str(tmp_path / "f.json")])
    captured = capsys.readouterr()
    assert rc == 1
    assert "C2H6O" in captured.out and "H2O" in captured.out  # ethanol and the good water
    assert "charged species" in captured.err and "molecule 1" in captured.err
    assert "2 molecule(s) featurized, 2 failed" in captured.err
    data = json.loads((tmp_path / "f.json").read_text())
    assert len(data["molecules"]) == 2 and len(data["failures"]) == 2


def test_split_writes_a_loadable_kfold(tmp_path, cache, capsys):
    from molgraph.splits import load_split

    ids = tmp_path / "ids.txt"
    ids.write_text(" ".join(str(i) for i in range(1, 61)))
    out = tmp_path / "split.json"
    assert main(["split", "--ids", str(ids), "--workers", "1", "--k", "4", "--out", str(out)]) == 0
    kf = load_split(out)
    assert kf.k == 4 and sum(len(b) for b in kf.bins) == 59  # 58 is uncharacterized
    assert kf.meta["source"] == "qm9pack"


def test_quickstart_writes_a_report(tmp_path, cache):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--sample", "60", "--workers", "1", "--epochs", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_molecules"] + summary["n_failed"] == 60
    assert set(summary["feature_groups"]) >= {"atom_type", "spatial_distance"}
    page = (out / "report.html").read_text()
    model = summary["model"]
    assert model["n_train"] + model["n_val"] + model["n_test"] == summary["n_molecules"]
    assert model["max_conservation_error"] < 1e-3 and set(model["groups"]) == set(summary["feature_groups"])  # float32
    assert (out / "model_alpha" / "weights.pt").exists() and model["epochs"] == 3
    assert (out / "model_alpha" / "domain.npz").exists()
    assert abs(sum(g["share"] for g in model["groups"].values()) - 1) < 1e-6
    for link in ("feature_groups.png", "targets.png", "group_relevance.png", "split_10fold.json", "summary.json",
                 "model_alpha/config.json", "explain/report.html"):
        assert f'"{link}"' in page and (out / link).exists()
    assert (out / "feature_groups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pub = {r["name"]: r for r in model["published"]}
    assert {"qm9-alpha", "qm9-zpve"} <= set(pub) and "The published models on the same molecules" in page
    for r in pub.values():
        assert r["n"] == model["n_test"] and 0 <= r["n_unseen"] <= r["n"]
        assert (r["mae_unseen"] is None) == (r["n_unseen"] == 0)
    explained = json.loads((out / "explain" / "summary.json").read_text())
    assert explained["n_molecules"] == model["n_test"] and list((out / "explain" / "heatmaps").glob("*.svg"))


def test_console_script_is_installed():
    r = subprocess.run([sys.executable, "-m", "qmlrp.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "quickstart" in r.stdout
    r = subprocess.run([sys.executable, "-m", "qmlrp.cli", "featurize", "--source", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice" in r.stderr and "qm9pack" in r.stderr


def test_featurize_original_files_with_root(tmp_path, cache, capsys, qm9_molecules):
    from molgraph.qm9_sources import format_qm9_xyz

    root = tmp_path / "dsgdb9nsd"
    root.mkdir()
    for qid in (1, 4, 1000):
        (root / f"dsgdb9nsd_{qid:06d}.xyz").write_text(format_qm9_xyz(qm9_molecules[qid]))
    (root / "dsgdb9nsd_000002.xyz").write_text("5\ngdb 2\n")
    assert main(["featurize", "--root", str(root), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "featurized 3 of 4 molecules; 1 failed" in out and "failed qm9:2:" in out
    assert main(["featurize", "--source", "qm9pack", "--root", str(root)]) == 2
    assert "the embedded QM9 needs none" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no such ids file"):
        main(["featurize", "--ids", str(tmp_path / "none.txt")])
