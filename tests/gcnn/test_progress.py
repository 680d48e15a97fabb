"""gcnn.progress and `qmlrp progress`: rows read from the files resumable runs leave."""
import json

import pytest

from gcnn.progress import history_summary, progress_table, run_progress
from gcnn.protocol import _history_summary
from qmlrp.cli import main


def _run(d, epochs_done, seconds, limit=10, metrics=None, checkpoint=False, val=None):
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"train": {"epochs": limit}, "targets": ["alpha_bohr3"],
                                               "units": {"alpha_bohr3": "bohr^3"}, "n_train": 100}))
    rows = ["epoch,train_loss,val_mae,lr,seconds,molecules_per_s"]
    for e in range(1, epochs_done + 1):
        v = val[e - 1] if val else 1.0 / e
        rows.append(f"{e},0.1,{v},0.001,{seconds[e - 1] if isinstance(seconds, list) else seconds},100")
    (d / "history.csv").write_text("\n".join(rows) + "\n")
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps({"targets": {"alpha_bohr3": {"mae": metrics, "unit": "bohr^3"}}}))
    if checkpoint:
        (d / "checkpoint.pt").write_bytes(b"x")


def _cv(tmp_path, k=3):
    cv = tmp_path / "cv"
    _run(cv / "fold_0", 10, 2.0, metrics=0.5)
    _run(cv / "fold_1", 4, [6.0, 6.0, 3.0, 3.0], checkpoint=True, val=[2.0, 0.7, 0.9, 0.8])
    (cv / "split.json").write_text(json.dumps({"kind": "kfold", "k": k, "seed": 0}))
    return cv


def test_cv_rows_done_in_progress_and_not_started(tmp_path):
    rows = run_progress(_cv(tmp_path))
    assert [r["state"] for r in rows] == ["done", "in progress", "not started"]
    done, running, todo = rows
    assert done["test_mae"] == 0.5 and done["left_min"] == 0.0 and done["minutes"] == round(20 / 60, 1)
    assert running["epochs"] == 4 and running["best_val_mae"] == 0.7 and running["best_epoch"] == 2
    assert running["s_per_epoch"] == 4.5  # the median of its epochs' seconds
    assert running["left_min"] == round(6 * 4.5 / 60, 1) and running["resumable"]
    assert todo["run"] == "cv/fold_2" and todo["left_min"] == round(10 * 4.5 / 60, 1)  # the running fold's speed
    table = progress_table(rows)
    assert "1 of 3 done" in table and "0.5 bohr^3" in table


def test_history_summary_is_the_one_reading_of_history_csv_for_progress_and_cv_tables(tmp_path):
    assert history_summary(tmp_path)["epochs"] is None and _history_summary(tmp_path)["minutes"] is None  # no file
    _run(tmp_path / "r", 4, [30.0, 30.0, 60.0, 60.0], val=[2.0, 0.7, 0.9, 0.7])
    h = history_summary(tmp_path / "r")
    assert h == {"epochs": 4, "best_epoch": 2, "best_val_mae": 0.7, "minutes": 3.0, "s_per_epoch": 45.0}  # first of a tie
    assert _history_summary(tmp_path / "r") == {"epochs": 4, "best_epoch": 2, "minutes": 3.0}
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "history.csv").write_text("epoch,train_loss,val_mae,lr,seconds,molecules_per_s\n")
    assert _history_summary(tmp_path / "e") == {"epochs": 0, "best_epoch": None, "minutes": 0.0}


def test_a_single_run_and_a_learning_curve_list_only_what_exists(tmp_path):
    _run(tmp_path / "one", 3, 1.0, limit=5)
    (row,) = run_progress(tmp_path / "one")
    assert row["state"] == "in progress" and row["left_min"] == round(2 * 1.0 / 60, 1)
    lc = tmp_path / "lc"
    _run(lc / "n_2000", 5, 1.0, limit=5, metrics=1.0)
    _run(lc / "n_1000", 5, 1.0, limit=5, metrics=1.2)
    (lc / "split.json").write_text(json.dumps({"kind": "kfold", "k": 10}))
    assert [r["run"] for r in run_progress(lc)] == ["lc/n_1000", "lc/n_2000"]  # numeric order, no phantom folds


def test_cli_reports_and_refuses_what_is_not_a_run(tmp_path, capsys):
    cv = _cv(tmp_path)
    assert main(["progress", str(cv)]) == 0
    assert "cv/fold_2 | not started" in capsys.readouterr().out
    assert main(["progress", str(cv), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    (tmp_path / "empty").mkdir()
    assert main(["progress", str(tmp_path / "empty")]) == 2
    assert "neither a training run" in capsys.readouterr().err
    assert main(["progress", str(cv), str(tmp_path / "missing")]) == 1  # the rest is still reported
    with pytest.raises(FileNotFoundError, match="no such directory"):
        run_progress(tmp_path / "missing")
