"""qmlrp cv-compare: out-of-fold pooling of CV runs and their side-by-side figures."""
import json

import numpy as np
import pytest

from qmlrp import cvcompare
from qmlrp.cli import main


def _run(true, pred, baseline, target="beta_par_au", unit="au", ids=None):
    n = len(true)
    return {"ids": np.arange(1, n + 1) if ids is None else np.asarray(ids), "fold": np.zeros(n, int),
            "true": np.asarray(true, float), "pred": np.asarray(pred, float), "baseline": np.asarray(baseline, float),
            "target": target, "unit": unit, "folds": [0], "k": 10, "split_digest": "x"}


def test_literal_figures_on_a_hand_checked_pair_of_runs():
    true = [10.0, -20.0, 30.0, 40.0]
    a = _run(true, [12.0, -20.0, 27.0, 40.0], [15.0] * 4)  # errors 2, 0, 3, 0
    b = _run(true, [10.0, -21.0, 30.0, 44.0], [15.0] * 4, ids=[1, 2, 3, 4])  # errors 0, 1, 0, 4
    res = cvcompare.compare({"a": a, "b": b}, n_boot=200)
    ra, rb = res["runs"]
    assert ra["mae"] == pytest.approx(1.25) and rb["mae"] == pytest.approx(1.25)
    assert ra["mean_abs_target"] == pytest.approx(25.0) and ra["relative_mae"] == pytest.approx(0.05)
    assert ra["baseline_mae"] == pytest.approx((5 + 35 + 15 + 25) / 4)
    assert ra["skill"] == pytest.approx(1 - 1.25 / 20)
    assert ra["rmse"] == pytest.approx(np.sqrt(13 / 4))
    assert rb["vs_reference"]["measure"].startswith("mae") and rb["vs_reference"]["value"] == pytest.approx(0.0)
    lo, hi = ra["mae_ci95"]
    assert 0 <= lo <= 1.25 <= hi <= 3


def test_a_run_against_itself_differs_by_exactly_zero_and_other_targets_compare_relative_errors():
    rng = np.random.default_rng(1)
    true = rng.normal(30, 10, 40)
    a = _run(true, true + rng.normal(0, 3, 40), np.full(40, 30.0))
    alpha = _run(true / 10 + 30, true / 10 + 30 + rng.normal(0, 0.1, 40), np.full(40, 33.0), target="alpha_bohr3",
                 unit="bohr^3")
    res = cvcompare.compare({"a": a, "again": a, "alpha": alpha}, n_boot=300)
    same = res["runs"][1]["vs_reference"]
    assert same["value"] == 0 and same["ci95"] == (0.0, 0.0)  # the same resamples for both: paired
    other = res["runs"][2]["vs_reference"]
    assert other["measure"].startswith("relative")
    assert other["value"] == pytest.approx(res["runs"][2]["relative_mae"] - res["runs"][0]["relative_mae"])
    assert other["ci95"][0] <= other["value"] <= other["ci95"][1]


def test_only_shared_molecules_are_compared_and_names_must_be_unique():
    a = _run([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], [2.0] * 3, ids=[5, 6, 7])
    b = _run([2.0, 3.0, 9.0], [2.0, 3.0, 9.0], [2.0] * 3, ids=[6, 7, 8])
    res = cvcompare.compare({"a": a, "b": b}, n_boot=50)
    assert res["ids"] == [6, 7] and res["runs"][0]["mae"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="given twice"):
        cvcompare.parse_runs(["x=d1", "x=d2"])
    assert list(cvcompare.parse_runs(["runs/one", "two=runs/b"])) == ["one", "two"]
    with pytest.raises(ValueError, match="share 0"):
        cvcompare.compare({"a": a, "c": _run([1.0], [1.0], [1.0], ids=[99])})


def test_cv_compare_cli_pools_the_fold_models_out_of_fold(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QMLRP_CACHE", str(tmp_path / "cache"))
    ids = tmp_path / "ids.txt"
    ids.write_text(" ".join(map(str, range(1, 41))))
    cv = tmp_path / "cv"
    assert main(["cv", "--ids", str(ids), "--workers", "1", "--target", "zpve_ev", "--folds", "4", "--only-folds", "0,1",
                 "--epochs", "1", "--batch-size", "16", "--atom-hidden", "8", "--pair-hidden", "8",
                 "--readout-hidden", "8", "--head-hidden", "8", "--out", str(cv)]) == 0
    out = tmp_path / "cmp"
    capsys.readouterr()
    assert main(["cv-compare", f"first={cv}", str(cv), "--ids", str(ids), "--workers", "1", "--bootstrap", "100",
                 "--out", str(out)]) == 0
    res = json.loads((out / "compare.json").read_text())
    assert res["n_common"] == 20 and res["runs"][0]["folds"] == 2  # two of four bins of 10 molecules
    folds = json.loads((cv / "cv.json").read_text())["folds"]
    pooled = np.mean([f["mae"] for f in folds])  # equal bins: the pooled MAE is the mean of the fold MAEs
    assert res["runs"][0]["mae"] == pytest.approx(pooled, rel=1e-5)
    rows = (out / "out_of_fold.csv").read_text().splitlines()
    assert len(rows) == 21 and rows[0].startswith("qm9_id,first:fold,first:true,first:pred")
    assert (out / "parity.png").stat().st_size > 0 and "| first |" in capsys.readouterr().out
    # the weights of a finished study may stay out of git: the folds' own test-bin records suffice
    for f in (0, 1):
        (cv / f"fold_{f}" / "weights.pt").unlink()
    out2 = tmp_path / "cmp2"
    assert main(["cv-compare", str(cv), "--ids", str(ids), "--workers", "1", "--bootstrap", "100",
                 "--out", str(out2)]) == 0
    again = json.loads((out2 / "compare.json").read_text())["runs"][0]
    assert again["mae"] == pytest.approx(res["runs"][0]["mae"], rel=1e-6)
    rec = cv / "fold_0" / "test_predictions.npz"
    with np.load(rec) as z:
        kept = {k: z[k] for k in z.files}
    kept["true"] = kept["true"] + 1.0  # a record made against other labels is refused, not mixed in
    np.savez_compressed(rec, **kept)
    capsys.readouterr()
    assert main(["cv-compare", str(cv), "--ids", str(ids), "--workers", "1", "--out", str(out2)]) == 2
    assert "differ from the given labels" in capsys.readouterr().err
    few = tmp_path / "few.txt"
    few.write_text("1 2 3")
    assert main(["cv-compare", str(cv), "--ids", str(few), "--workers", "1", "--out", str(out)]) == 2
    assert "not in the given data set" in capsys.readouterr().err
