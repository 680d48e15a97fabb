"""Training, resuming and loading model directories; the predict CLI."""
import json

import numpy as np
import pytest
import torch

import gcnn
from molgraph import qm9
from qmlrp.cli import main


SMALL = dict(atom_hidden=8, pair_hidden=8, readout_hidden=8, head_hidden=(8,))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    ids = list(range(1, 121))
    ds = qm9.load(ids=ids, cache_root=tmp_path_factory.mktemp("c"), workers=1, progress=False, log=lambda m: None)
    ids = ds.ids
    return ds, ds.subset(ids[:80]), ds.subset(ids[80:100]), ds.subset(ids[100:])


def _trainer(out, epochs):
    cfg = gcnn.TrainConfig(targets=("alpha_bohr3",), epochs=epochs, batch_size=16, seed=3)
    return gcnn.Trainer(out, gcnn.WeaveConfig(**SMALL), cfg, log=lambda m: None, progress=False)


def test_resumed_training_gives_the_same_weights(tmp_path, data):
    _, train, val, test = data
    _trainer(tmp_path / "a", 4).fit(train, val)
    _trainer(tmp_path / "b", 4).fit(train, val, stop_after=2)  # killed after two epochs
    assert len((tmp_path / "b" / "history.csv").read_text().splitlines()) == 3
    _trainer(tmp_path / "b", 4).fit(train, val)  # the same command again resumes
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    hist = (tmp_path / "b" / "history.csv").read_text().splitlines()
    assert len(hist) == 5 and hist[0].startswith("epoch,train_loss,val_mae")
    metrics = _trainer(tmp_path / "a", 4).evaluate(test)
    m = metrics["targets"]["alpha_bohr3"]
    assert m["unit"] == "bohr^3" and m["mae"] > 0 and metrics["n_test"] == len(test)
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == metrics


def test_a_checkpoint_of_another_run_is_refused(tmp_path, data):
    _, train, val, _ = data
    _trainer(tmp_path, 1).fit(train, val)
    other = gcnn.Trainer(tmp_path, gcnn.WeaveConfig(**{**SMALL, "atom_hidden": 9}),
                         gcnn.TrainConfig(epochs=2, batch_size=16, seed=3), log=lambda m: None, progress=False)
    with pytest.raises(ValueError, match="belongs to another run"):
        other.fit(train, val)


def test_load_predicts_in_units_and_refuses_tampered_configs(tmp_path, data):
    ds, train, val, test = data
    _trainer(tmp_path / "m", 2).fit(train, val)
    p = gcnn.load(tmp_path / "m")
    pred = p.predict_dataset(test)
    assert pred.shape == (len(test), 1) and np.isfinite(pred).all()
    mean, spread = p.predict_graphs([test[0], test[1]])
    np.testing.assert_allclose(mean, pred[:2], rtol=1e-5)
    assert (spread == 0).all()
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["atom_hidden"] = 12
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match the .* recorded in .*checksums.json"):
        gcnn.load(tmp_path / "m")  # any change after training is caught by the checksums first
    (tmp_path / "m" / "checksums.json").unlink()  # a hand-made directory: the content checks still hold
    with pytest.raises(ValueError, match="does not match"):
        gcnn.load(tmp_path / "m")
    cfg["format"] = "pickle"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown model format"):
        gcnn.load(tmp_path / "m")
    cfg_path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        gcnn.load(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="not a model directory|no config.json"):
        gcnn.load(tmp_path / "nothing")


def test_damaged_or_implausible_model_files_are_refused_with_the_file_and_key(tmp_path, data):
    import pickle
    import shutil

    _, train, val, _ = data
    _trainer(tmp_path / "m", 1).fit(train, val)
    assert json.loads((tmp_path / "m" / "checksums.json").read_text())["sha256"].keys() == {"config.json", "weights.pt"}

    def variant(name, edit_cfg=None, weights=None):
        d = tmp_path / name
        shutil.copytree(tmp_path / "m", d)
        (d / "checksums.json").unlink()
        if edit_cfg:
            cfg = json.loads((d / "config.json").read_text())
            edit_cfg(cfg)
            (d / "config.json").write_text(json.dumps(cfg))
        if weights is not None:
            (d / "weights.pt").write_bytes(weights)
        return d

    cases = [
        (variant("std0", lambda c: c.update(std=[0.0])), "'std' must be positive"),
        (variant("stdnan", lambda c: c.update(std=[float("nan")])), "not finite"),
        (variant("nomodel", lambda c: c.pop("model")), "missing key.*model"),
        (variant("nounits", lambda c: c.pop("units")), "missing key.*units"),
        (variant("badtype", lambda c: c["model"].update(atom_hidden="eight")), "config.json: key 'model'"),
        (variant("empty", weights=b""), "weights.pt: not readable as model weights"),
        (variant("truncated", weights=(tmp_path / "m" / "weights.pt").read_bytes()[:500]), "not readable as model weights"),
        (variant("pickle", weights=pickle.dumps({"a": 1})), "not readable as model weights"),
    ]
    for d, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            gcnn.load(d)
        assert "weights_only=False" not in str(info.value)


def test_ensemble_of_fold_models_gives_mean_and_spread(tmp_path, data):
    _, train, val, test = data
    for k in range(2):
        cfg = gcnn.TrainConfig(targets=("alpha_bohr3",), epochs=1, batch_size=16, seed=k)
        gcnn.Trainer(tmp_path / f"fold_{k}", gcnn.WeaveConfig(**SMALL), cfg, log=lambda m: None, progress=False).fit(train, val)
    p = gcnn.load(tmp_path)
    assert len(p.models) == 2
    mean, spread = p.predict_graphs([test[0]])
    singles = [gcnn.load(tmp_path / f"fold_{k}").predict_graphs([test[0]])[0] for k in range(2)]
    np.testing.assert_allclose(mean, np.mean(singles, 0), rtol=1e-5)
    np.testing.assert_allclose(spread, np.std(singles, 0), rtol=1e-4, atol=1e-6)
    assert spread[0, 0] > 0


def test_train_and_predict_cli(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    monkeypatch.setenv("QMLRP_CACHE", str(tmp_path / "cache"))
    ids = tmp_path / "ids.txt"
    ids.write_text(" ".join(map(str, range(1, 61))))
    out = tmp_path / "model"
    assert main(["train", "--ids", str(ids), "--workers", "1", "--target", "zpve_ev", "--out", str(out),
                 "--epochs", "1", "--batch-size", "16"]) == 0
    assert "zpve_ev: test MAE" in capsys.readouterr().out
    assert {"config.json", "weights.pt", "metrics.json", "history.csv", "split.json", "checkpoint.pt"} <= {p.name for p in out.iterdir()}
    data = Path(__file__).parent.parent / "data"
    rc = main(["predict", "--model", str(out), str(data / "ethanol.sdf"), str(data / "malformed" / "open_shell.xyz"), "--json"])
    captured = capsys.readouterr()
    assert rc == 1 and "open-shell" in captured.err
    rows = json.loads(captured.out)["predictions"]
    assert len(rows) == 1 and rows[0]["unit"] == "eV" and rows[0]["formula"] == "C2H6O"
    assert rows[0]["n_models"] == 1 and rows[0]["uncertainty"] is None  # no ensemble: no spread, not 0
    assert main(["train", "--target", "alpha", "--out", str(out)]) == 2
    # a damaged checkpoint: one line that says what to do, no traceback
    (out / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes()[:100])
    rc = main(["train", "--ids", str(ids), "--workers", "1", "--target", "zpve_ev", "--out", str(out),
               "--epochs", "2", "--batch-size", "16"])
    err = capsys.readouterr().err
    assert rc == 2 and "not readable as a training checkpoint" in err and "delete it" in err
    assert "Traceback" not in err
    assert main(["predict", "--model", str(tmp_path / "none"), str(data / "ethanol.sdf")]) == 2


def test_a_run_started_from_another_targets_model_keeps_all_but_the_output_layer(tmp_path, data):
    """transfer_state: every weight but the head's last Linear; a run started from it (here with a
    learning rate too small to move anything) holds those weights, and the start is part of the
    checkpoint's identity."""
    _, train, val, _ = data
    _trainer(tmp_path / "alpha", 1).fit(train, val)
    source = gcnn.load(tmp_path / "alpha").models[0].model
    state, dropped = gcnn.transfer_state(source)
    last = len(source.head) - 1
    assert dropped == [f"head.{last}.weight", f"head.{last}.bias"] and set(state) | set(dropped) == set(source.state_dict())
    cfg = gcnn.TrainConfig(targets=("zpve_ev",), epochs=1, batch_size=16, seed=5, lr=1e-12)
    rec = {"model": "alpha"}
    gcnn.Trainer(tmp_path / "zpve", source.config, cfg, log=lambda m: None, progress=False, init_state=state,
                 init_record=rec).fit(train, val)
    new = gcnn.load(tmp_path / "zpve").models[0].model.state_dict()
    for k, v in state.items():
        torch.testing.assert_close(new[k], v, rtol=0, atol=1e-9)
    assert not torch.allclose(new[f"head.{last}.weight"], source.state_dict()[f"head.{last}.weight"])
    assert json.loads((tmp_path / "zpve" / "config.json").read_text())["init_from"] == rec
    scratch = gcnn.Trainer(tmp_path / "zpve", source.config, gcnn.TrainConfig(targets=("zpve_ev",), epochs=2, batch_size=16,
                           seed=5, lr=1e-12), log=lambda m: None, progress=False)
    with pytest.raises(ValueError, match="belongs to another run"):  # same folder, but not started from alpha
        scratch.fit(train, val)


def test_init_from_cli_takes_the_source_architecture_and_refuses_other_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QMLRP_CACHE", str(tmp_path / "cache"))
    ids = tmp_path / "ids.txt"
    ids.write_text(" ".join(map(str, range(1, 61))))
    common = ["train", "--ids", str(ids), "--workers", "1", "--epochs", "1", "--batch-size", "16"]
    assert main([*common, "--target", "alpha_bohr3", "--atom-hidden", "8", "--pair-hidden", "8", "--readout-hidden", "8",
                 "--head-hidden", "8", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--target", "zpve_ev", "--init-from", str(tmp_path / "a"), "--out", str(tmp_path / "z")]) == 0
    cfg = json.loads((tmp_path / "z" / "config.json").read_text())
    assert cfg["model"]["atom_hidden"] == 8 and cfg["init_from"]["targets"] == ["alpha_bohr3"]
    assert len(cfg["init_from"]["weights_sha256"]) == 64
    capsys.readouterr()
    rc = main([*common, "--target", "zpve_ev", "--init-from", str(tmp_path / "a"), "--atom-hidden", "16",
               "--out", str(tmp_path / "z2")])
    assert rc == 2 and "atom_hidden" in capsys.readouterr().err
    assert main([*common, "--target", "zpve_ev", "--init-from", str(tmp_path / "nothing"), "--out", str(tmp_path / "z3")]) == 2
    lc = ["learning-curve", "--ids", str(ids), "--workers", "1", "--epochs", "1", "--batch-size", "16", "--target", "zpve_ev",
          "--sizes", "20", "--init-from", str(tmp_path / "a"), "--out", str(tmp_path / "lc")]
    assert main(lc) == 0  # the learning curve passes the start on to every size
    assert json.loads((tmp_path / "lc" / "n_20" / "config.json").read_text())["init_from"]["targets"] == ["alpha_bohr3"]


def test_cross_validation_resumes_fold_by_fold_and_learning_curve(tmp_path, data):
    ds = data[0]
    cfg = gcnn.TrainConfig(targets=("zpve_ev",), epochs=1, batch_size=16, seed=0)
    logs = []
    summary = gcnn.cross_validate(ds, tmp_path / "cv", cfg, k=3, model_config=gcnn.WeaveConfig(**SMALL),
                                  log=logs.append, progress=False)
    assert [r["fold"] for r in summary["folds"]] == [0, 1, 2]
    assert sum(r["n_test"] for r in summary["folds"]) == len(ds)
    maes = [r["mae"] for r in summary["folds"]]
    assert summary["targets"]["zpve_ev"]["mae_mean"] == pytest.approx(np.mean(maes))
    assert all(r["epochs"] == 1 and r["best_epoch"] == 1 and r["minutes"] >= 0 for r in summary["folds"])
    table = (tmp_path / "cv" / "cv.md").read_text()
    assert "| fold | MAE |" in table and table.count("| 1 (1) |") == 3 and "mean MAE" in table
    (tmp_path / "cv" / "fold_1" / "metrics.json").unlink()
    logs.clear()
    again = gcnn.cross_validate(ds, tmp_path / "cv", cfg, k=3, model_config=gcnn.WeaveConfig(**SMALL),
                                log=logs.append, progress=False)
    assert [m for m in logs if m.startswith("fold ")] == [logs[0]] and logs[0].startswith("fold 2/3")
    assert again["targets"] == summary["targets"]
    with pytest.raises(ValueError, match="holds another split"):
        gcnn.cross_validate(ds, tmp_path / "cv", cfg, k=3, seed=1, model_config=gcnn.WeaveConfig(**SMALL), log=logs.append)
    assert len(gcnn.load(tmp_path / "cv").models) == 3
    # out-of-sample members: a fold's test bin was trained on by every other fold model
    from molgraph import splits
    from qmlrp.spectra import unseen_members

    kf = splits.load_split(tmp_path / "cv" / "split.json")
    for f in range(3):
        assert unseen_members(tmp_path / "cv", kf.fold(f).test) == [tmp_path / "cv" / f"fold_{f}"]
        assert unseen_members(tmp_path / "cv", kf.fold(f).val) == [tmp_path / "cv" / f"fold_{f}"]  # val: only chose the epoch
    assert len(unseen_members(tmp_path / "cv", [10**7])) == 3  # a molecule none of them saw
    with pytest.raises(ValueError, match="every member trained on some of these 2 molecules"):
        unseen_members(tmp_path / "cv", [kf.fold(0).test[0], kf.fold(1).test[0]])
    one = gcnn.load(tmp_path / "cv", members=[tmp_path / "cv" / "fold_1"])
    np.testing.assert_allclose(one.predict_dataset(ds), gcnn.load(tmp_path / "cv" / "fold_1").predict_dataset(ds))
    with pytest.raises(ValueError, match="not one of its model directories"):
        gcnn.load(tmp_path / "cv", members=[tmp_path / "elsewhere"])
    # the folds' test predictions together are every molecule's out-of-fold prediction, once
    from gcnn.protocol import out_of_fold

    oof = out_of_fold(tmp_path / "cv", "zpve_ev")
    assert sorted(oof["ids"].tolist()) == sorted(ds.ids.tolist())
    qm9_value = dict(zip(ds.ids.tolist(), ds.with_targets(["zpve_ev"]).target("zpve_ev").tolist()))
    np.testing.assert_allclose(oof["true"], [qm9_value[int(q)] for q in oof["ids"]], rtol=1e-6)
    for r in summary["folds"]:
        sel = oof["fold"] == r["fold"]
        assert np.abs(oof["pred"][sel] - oof["true"][sel]).mean() == pytest.approx(r["mae"], rel=1e-5)
    assert (tmp_path / "cv" / "cv.png").read_bytes()[:4] == b"\x89PNG"
    # folds finished before the predictions were kept get them from the same evaluation again
    kept = (tmp_path / "cv" / "fold_0" / "test_predictions.npz").read_bytes()
    (tmp_path / "cv" / "fold_0" / "test_predictions.npz").unlink()
    gcnn.cross_validate(ds, tmp_path / "cv", cfg, k=3, model_config=gcnn.WeaveConfig(**SMALL), log=logs.append,
                        progress=False)
    with np.load(tmp_path / "cv" / "fold_0" / "test_predictions.npz") as z, np.load(__import__("io").BytesIO(kept)) as y:
        for key in ("ids", "true", "pred"):
            np.testing.assert_array_equal(z[key], y[key])
    rows = gcnn.learning_curve(ds, tmp_path / "lc", cfg, [20, 40, 10_000], model_config=gcnn.WeaveConfig(**SMALL),
                               log=logs.append, progress=False)
    assert [r["n_train"] for r in rows] == [20, 40]
    assert (tmp_path / "lc" / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "lc" / "learning_curve.csv").read_text().startswith("n_train,target,unit,mae,rmse")


@pytest.mark.parametrize("mix", [1, 3])
def test_distributed_training_with_torchrun_on_cpu(tmp_path, mix):
    """Two ranks (gloo) train one model: one history, one set of files, loadable weights; with
    steps over several size buckets too (each backward pass all-reduces: the ranks must agree on
    the number of buckets per step, or they hang)."""
    import os
    import subprocess
    import sys

    ids = tmp_path / "ids.txt"
    ids.write_text(" ".join(map(str, range(1, 61))))
    out = tmp_path / "ddp"
    env = {**os.environ, "QMLRP_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "qmlrp.cli",
           "train", "--ids", str(ids), "--workers", "1", "--target", "alpha_bohr3", "--out", str(out),
           "--epochs", "2", "--batch-size", "8", "--mix-sizes", str(mix)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("alpha_bohr3: test MAE") == 1
    assert len((out / "history.csv").read_text().splitlines()) == 3
    assert gcnn.load(out).predict_graphs([qm9.QM9Dataset(next((tmp_path / "cache").glob("qm9-*")))[0]])[0].shape == (1, 1)


def test_masked_loss_ignores_padding():
    pred = torch.tensor([[1.0, 2.0, 99.0], [0.0, -5.0, 7.0]])
    y = torch.tensor([[1.5, 2.0, 0.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert float(gcnn.training.masked_mse(pred, y, mask)) == pytest.approx((0.25 + 0 + 1) / 3)


@pytest.mark.parametrize("layout,loss", [("ascending", "mse"), ("hydrogen", "l1")])
def test_vector_target_frequency_sets(tmp_path, data, capsys, layout, loss, qm9_molecules):
    from pathlib import Path

    from gcnn.training import CM1_TO_EV

    _, train, val, test = data
    cfg = gcnn.TrainConfig(targets=("freqs_cm1",), epochs=2, batch_size=16, seed=0, set_layout=layout, loss=loss)
    assert cfg.is_vector and cfg.n_outputs == 81 and cfg.layout.name == layout
    tr = gcnn.Trainer(tmp_path / "f", gcnn.WeaveConfig(**{**SMALL, "n_outputs": 81}), cfg, log=lambda m: None, progress=False)
    tr.fit(train, val)
    m = tr.evaluate(test)["targets"]["freqs_cm1"]
    true = [np.sort(test[i].targets["freqs_cm1"].numpy()) for i in range(len(test))]
    assert m["unit"] == "cm^-1" and m["n_values"] == sum(len(t) for t in true) and np.isfinite(m["mae"])
    p = gcnn.load(tmp_path / "f")
    assert p.is_vector and p.layout.name == layout and p.predict_dataset(test).shape == (len(test), 81)
    # the metrics are those of the predicted sets read back through the layout and sorted
    graphs = [test[i] for i in range(len(test))]
    pred, spread = p.predict_sets(graphs)
    assert all(len(s) == len(t) and (np.diff(s) >= 0).all() for s, t in zip(pred, true)) and not np.any(np.concatenate(spread))
    err = np.concatenate([np.abs(s - t) for s, t in zip(pred, true)])
    assert m["mae"] == pytest.approx(err.mean(), rel=1e-5)
    assert m["omega_1_mae"] == pytest.approx(np.mean([abs(s[-1] - t[-1]) for s, t in zip(pred, true)]), rel=1e-5)
    assert sum(r["n_values"] for r in m["per_region"].values()) == m["n_values"]
    zpve = np.array([g.targets["zpve_ev"] for g in (test.with_targets(["zpve_ev"])[i] for i in range(len(test)))])
    assert m["zpve_from_set_mae_ev"] == pytest.approx(np.mean(np.abs([0.5 * s.sum() * CM1_TO_EV for s in pred] - zpve)), rel=1e-4)
    assert m["zpve_from_true_set_mae_ev"] < 1e-3  # QM9's ZPVE is half the sum of its harmonic set
    ethanol = Path(__file__).parent.parent / "data" / "ethanol.sdf"
    assert main(["predict", "--model", str(tmp_path / "f"), str(ethanol), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["predictions"][0]
    assert len(row["prediction"]) == 3 * 9 - 6 and row["unit"] == "cm^-1" and row["prediction"] == sorted(row["prediction"])
    if layout != "hydrogen":
        return
    # a QM9-format file: its own frequencies are drawn under the predicted sticks
    from molgraph import splits
    from molgraph.qm9_sources import format_qm9_xyz

    f = tmp_path / "dsgdb9nsd_000029.xyz"
    f.write_text(format_qm9_xyz(qm9_molecules[29]))
    assert main(["predict", "--model", str(tmp_path / "f"), str(f), "--plot", str(tmp_path / "plots"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["predictions"][0]
    assert Path(row["plot"]).name == "dsgdb9nsd_000029_0.png" and Path(row["plot"]).stat().st_size > 5000
    assert len(row["reference"]) == len(row["prediction"]) == 3 * 10 - 6  # C4H6; QM9's doubled row read once
    # the report of the model on its split: the same figures as metrics.json, and the baselines
    splits.TrainValTest(train.ids, val.ids, test.ids, meta={}).save(tmp_path / "f" / "split.json")
    assert main(["spectra", str(tmp_path / "f"), "--cache-dir", str(Path(test.path).parent), "--no-progress"]) == 0
    rep = json.loads((tmp_path / "f" / "spectra" / "report.json").read_text())
    assert rep["mae"] == pytest.approx(m["mae"], rel=1e-6) and rep["omega_1_mae"] == pytest.approx(m["omega_1_mae"], rel=1e-6)
    base = rep["baselines"]
    assert set(base) == {"mean_per_mode_count", "mean_per_stoichiometry"} and all(b["mae"] > 0 for b in base.values())
    assert (tmp_path / "f" / "spectra" / "parity.png").stat().st_size > 5000
    assert "mean per stoichiometry" in (tmp_path / "f" / "spectra" / "report.md").read_text()
    with pytest.raises(ValueError, match="one vector target"):
        gcnn.TrainConfig(targets=("freqs_cm1", "zpve_ev"))
    with pytest.raises(ValueError, match="unknown target"):
        gcnn.TrainConfig(targets=("freqs",))


def test_a_time_limit_stops_at_an_epoch_boundary_and_the_run_resumes_to_the_same_weights(tmp_path, data):
    import time

    ds, train, val, _ = data
    _trainer(tmp_path / "a", 4).fit(train, val)
    t = _trainer(tmp_path / "b", 4).fit(train, val, stop_after=1)
    assert not t.finished
    # the previous epoch's duration says the next one cannot finish before the deadline
    t = _trainer(tmp_path / "b", 4).fit(train, val, deadline=time.time() + 1e-3)
    assert t.stopped_for_time and not t.finished and t.state_["epoch"] == 1
    t = _trainer(tmp_path / "b", 4).fit(train, val, deadline=time.time() + 3600)
    assert t.finished and not t.stopped_for_time
    a = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # cross-validation under a deadline: unfinished folds are neither tested nor summarized
    cfg = gcnn.TrainConfig(targets=("zpve_ev",), epochs=2, batch_size=16, seed=0)
    kw = dict(k=3, model_config=gcnn.WeaveConfig(**SMALL), log=lambda m: None, progress=False)
    part = gcnn.cross_validate(ds, tmp_path / "cv", cfg, folds=[0], **kw)
    assert part["folds_done"] == [0] and not part["complete"] and not (tmp_path / "cv" / "fold_1").exists()
    part = gcnn.cross_validate(ds, tmp_path / "cv", cfg, deadline=time.time() - 1, **kw)
    assert part["folds_done"] == [0] and not part["complete"]
    assert not (tmp_path / "cv" / "fold_1" / "metrics.json").exists()
    full = gcnn.cross_validate(ds, tmp_path / "cv", cfg, **kw)
    assert full["complete"] and full["folds_done"] == [0, 1, 2]
    # finished folds keep no optimizer state (what goes into git stays small)
    assert not list((tmp_path / "cv").glob("fold_*/checkpoint.pt"))
    assert all((tmp_path / "cv" / f"fold_{f}" / "weights.pt").exists() for f in range(3))


def test_tune_allocator_is_idempotent():
    assert gcnn.tune_allocator() in (True, False)
    assert gcnn.tune_allocator() == gcnn.tune_allocator()


def test_gradient_clipping_is_inactive_above_every_norm_and_changes_training_below(tmp_path, data):
    _, train, val, _ = data

    def weights(name, clip):
        cfg = gcnn.TrainConfig(targets=("alpha_bohr3",), epochs=2, batch_size=16, seed=3, clip_grad_norm=clip)
        gcnn.Trainer(tmp_path / name, gcnn.WeaveConfig(**SMALL), cfg, log=lambda m: None, progress=False).fit(train, val)
        return torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["model"]

    plain, loose, tight = weights("plain", None), weights("loose", 1e9), weights("tight", 1e-3)
    assert all(torch.equal(plain[k], loose[k]) for k in plain)  # a bound no gradient reaches changes nothing
    assert any(not torch.allclose(plain[k], tight[k]) for k in plain)
    cfg = json.loads((tmp_path / "tight" / "config.json").read_text())
    assert cfg["train"]["clip_grad_norm"] == 1e-3
    assert "clip_grad_norm" not in json.loads((tmp_path / "plain" / "config.json").read_text())["train"]
    with pytest.raises(ValueError, match="clip_grad_norm must be > 0"):
        gcnn.TrainConfig(clip_grad_norm=0)


def test_learning_curve_reads_its_full_size_point_from_the_finished_cv_fold(tmp_path, data):
    """--full-from: the full-size point is fold 0 of a `qmlrp cv` run on the same split with the
    same settings (not trained again); another split or other settings are refused, naming them."""
    from molgraph import splits

    ds = data[0]
    cfg = gcnn.TrainConfig(targets=("zpve_ev",), epochs=1, batch_size=16, seed=0)
    gcnn.cross_validate(ds, tmp_path / "cv", cfg, k=10, folds=[0], model_config=gcnn.WeaveConfig(**SMALL),
                        log=lambda m: None, progress=False)
    full = len(splits.kfold(ds.ids, k=10, seed=0).fold(0).train)
    fold0 = tmp_path / "cv" / "fold_0"
    rows = gcnn.learning_curve(ds, tmp_path / "lc", cfg, [20, full], model_config=gcnn.WeaveConfig(**SMALL),
                               log=lambda m: None, progress=False, full_from=fold0)
    assert [r["n_train"] for r in rows] == [20, full] and rows[1]["model"] == str(fold0) and rows[1]["epochs"] == 1
    assert rows[1]["mae"] == json.loads((fold0 / "metrics.json").read_text())["targets"]["zpve_ev"]["mae"]
    assert not (tmp_path / "lc" / f"n_{full}").exists()  # nothing trained for it
    other = gcnn.TrainConfig(targets=("zpve_ev",), epochs=1, batch_size=16, seed=0, lr=5e-4)
    with pytest.raises(ValueError, match="lr=0.001, here 0.0005"):
        gcnn.learning_curve(ds, tmp_path / "lc2", other, [full], model_config=gcnn.WeaveConfig(**SMALL),
                            log=lambda m: None, progress=False, full_from=fold0)
    with pytest.raises(ValueError, match="another split"):
        gcnn.learning_curve(ds, tmp_path / "lc3", cfg, [full], seed=1, model_config=gcnn.WeaveConfig(**SMALL),
                            log=lambda m: None, progress=False, full_from=fold0)


def test_cosine_schedule_literal_rates_and_resume(tmp_path, data):
    """--schedule cosine: after epoch k of T the rate is floor + (lr - floor)(1 + cos(pi k / T)) / 2
    with floor = lr / 100 (history.csv); a run cut after two epochs resumes to the same weights."""
    import math

    _, train, val, _ = data

    def trainer(name):
        cfg = gcnn.TrainConfig(targets=("alpha_bohr3",), epochs=4, batch_size=16, seed=3, lr=2e-3, schedule="cosine")
        return gcnn.Trainer(tmp_path / name, gcnn.WeaveConfig(**SMALL), cfg, log=lambda m: None, progress=False)

    trainer("a").fit(train, val)
    rows = (tmp_path / "a" / "history.csv").read_text().splitlines()
    lrs = [float(r.split(",")[rows[0].split(",").index("lr")]) for r in rows[1:]]
    floor = 2e-3 * 1e-2
    assert lrs == pytest.approx([floor + (2e-3 - floor) * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(1, 5)], rel=1e-9)
    trainer("b").fit(train, val, stop_after=2)
    trainer("b").fit(train, val)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["schedule"] == "cosine"
    with pytest.raises(ValueError, match="unknown schedule"):
        gcnn.TrainConfig(schedule="step")


def test_cv_with_a_training_set_size_is_a_learning_curve_point_tested_on_every_molecule(tmp_path, data):
    """`qmlrp cv --train-size N`: every fold trains on a seeded subsample of N of its training
    molecules, nested across sizes, with the fold's own validation slice and test bin; the CV's
    out-of-fold predictions still cover every molecule once, and a directory of one size refuses
    another."""
    from gcnn.protocol import fold_train_ids, out_of_fold
    from molgraph import splits

    ds = data[0]
    cfg = gcnn.TrainConfig(targets=("zpve_ev",), epochs=1, batch_size=16, seed=0)
    summary = gcnn.cross_validate(ds, tmp_path / "n30", cfg, k=3, model_config=gcnn.WeaveConfig(**SMALL),
                                  log=lambda m: None, progress=False, train_size=30)
    assert summary["train_size"] == 30 and all(r["n_train"] == 30 for r in summary["folds"])
    kf = splits.load_split(tmp_path / "n30" / "split.json")
    for f in range(3):
        sp = kf.fold(f)
        small, large = fold_train_ids(sp, f, 0, 30), fold_train_ids(sp, f, 0, 50)
        assert len(small) == 30 and set(small) <= set(large) <= set(sp.train)  # nested, inside the fold's own
        assert not set(small) & (set(sp.val) | set(sp.test))
        np.testing.assert_array_equal(fold_train_ids(sp, f, 0, None), sp.train)
        split = json.loads((tmp_path / "n30" / f"fold_{f}" / "config.json").read_text())["split"]
        assert split["train_size"] == 30 and split["train_seed"] == 0
    assert not np.array_equal(fold_train_ids(kf.fold(0), 0, 0, 30), fold_train_ids(kf.fold(0), 0, 1, 30))
    assert sorted(out_of_fold(tmp_path / "n30", "zpve_ev")["ids"].tolist()) == sorted(ds.ids.tolist())
    with pytest.raises(ValueError, match="trained on 30 molecules per fold, not all"):
        gcnn.cross_validate(ds, tmp_path / "n30", cfg, k=3, model_config=gcnn.WeaveConfig(**SMALL), log=lambda m: None,
                            progress=False)
    with pytest.raises(ValueError, match="outside 1.."):
        fold_train_ids(kf.fold(0), 0, 0, 10**6)
    # cv-compare's baseline is the mean of what each fold model trained on
    from qmlrp.cvcompare import out_of_fold as compare_rows

    rows = compare_rows(tmp_path / "n30", ds)
    y = dict(zip(ds.ids.tolist(), ds.with_targets(["zpve_ev"]).target("zpve_ev").tolist()))
    for f in range(3):
        want = np.mean([y[int(q)] for q in fold_train_ids(kf.fold(f), f, 0, 30)])
        assert rows["baseline"][rows["fold"] == f][0] == pytest.approx(want, rel=1e-6)
    # a model card states the size, so the command it prints makes the same models
    from qmlrp import published

    info = published.publish(tmp_path / "n30", "tiny-lc", tmp_path / "pub")
    assert "--train-size 30" in info["command"], info["command"]


def test_mixed_steps_cover_every_molecule_once_and_one_bucket_per_step_is_the_old_batching():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from gcnn.training import mixed_steps, size_buckets

    @settings(max_examples=30, deadline=None)
    @given(n=st.lists(st.integers(3, 29), min_size=1, max_size=300), batch=st.integers(1, 64), mix=st.integers(1, 8),
           seed=st.integers(0, 5))
    def law(n, batch, mix, seed):
        n_atoms = np.asarray(n)
        mix = min(mix, batch)
        steps = mixed_steps(n_atoms, batch, mix, np.random.default_rng(seed))
        flat = np.concatenate([b for s in steps for b in s])
        assert sorted(flat.tolist()) == list(range(len(n)))  # every molecule once per epoch
        assert all(1 <= len(s) <= mix for s in steps) and all(sum(map(len, s)) <= batch + mix for s in steps)
        if mix == 1:  # the same draws and batches as before mixing existed: runs resume unchanged
            old = size_buckets(n_atoms, batch, np.random.default_rng(seed))
            assert len(old) == len(steps) and all(np.array_equal(o, s[0]) for o, s in zip(old, steps))

    law()


def test_a_step_over_several_buckets_has_the_gradient_of_one_batch_of_their_molecules(data):
    from gcnn.training import backward_step

    _, train, _, _ = data
    cfg = gcnn.TrainConfig(targets=("alpha_bohr3",), batch_size=30, mix_sizes=3)
    torch.manual_seed(0)
    net = gcnn.WeaveNet(gcnn.WeaveConfig(**SMALL))
    order = np.argsort(train.n_atoms, kind="stable")
    buckets = [order[:7], order[30:40], order[-13:]]  # three sizes, unequal counts
    mean, std = torch.tensor([75.0]), torch.tensor([8.0])
    grads = []
    for parts in ([train.batch(b) for b in buckets], [train.batch(np.concatenate(buckets))]):
        net.zero_grad()
        out = backward_step(net, parts, cfg, mean, std)
        assert sum(n for _, n in out) == 30
        grads.append([p.grad.clone() for p in net.parameters()])
    for g_mixed, g_one in zip(*grads):
        torch.testing.assert_close(g_mixed, g_one, rtol=1e-4, atol=1e-6 * max(1.0, float(g_one.abs().max())))


def test_mix_sizes_is_validated_and_recorded_only_when_set():
    assert "mix_sizes" not in gcnn.TrainConfig(targets=("alpha_bohr3",)).to_json()
    assert gcnn.TrainConfig(targets=("alpha_bohr3",), mix_sizes=4).to_json()["mix_sizes"] == 4
    with pytest.raises(ValueError, match="mix_sizes must be between 1 and batch_size = 16"):
        gcnn.TrainConfig(targets=("alpha_bohr3",), batch_size=16, mix_sizes=17)
    with pytest.raises(ValueError, match="mix_sizes must be between 1"):
        gcnn.TrainConfig(targets=("alpha_bohr3",), mix_sizes=0)


def test_training_with_mixed_steps_resumes_to_the_same_weights(tmp_path, data):
    _, train, val, _ = data

    def trainer(out):
        cfg = gcnn.TrainConfig(targets=("alpha_bohr3",), epochs=3, batch_size=16, seed=3, mix_sizes=4)
        return gcnn.Trainer(out, gcnn.WeaveConfig(**SMALL), cfg, log=lambda m: None, progress=False)

    trainer(tmp_path / "a").fit(train, val)
    trainer(tmp_path / "b").fit(train, val, stop_after=1)
    trainer(tmp_path / "b").fit(train, val)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["mix_sizes"] == 4
