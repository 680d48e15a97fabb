"""Published models: they ship with the package, `qmlrp models` lists them, `qmlrp predict --model
NAME` works from the name alone, `qmlrp publish` builds one from a cv directory, and a published
model whose files were changed is refused."""
import json
import shutil
from pathlib import Path

import pytest
import torch

import gcnn
from molgraph import qm9
from qmlrp import published
from qmlrp.cli import main

DATA = Path(__file__).parent / "data"


def test_the_shipped_models_are_listed_and_predict_from_their_names(capsys):
    assert {"qm9-alpha", "qm9-zpve"} <= set(published.names())
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "qm9-alpha\talpha_bohr3" in out and "qm9-zpve\tzpve_ev" in out
    for name, target, truth, tol in (("qm9-alpha", "alpha_bohr3", 28.13, 3.0), ("qm9-zpve", "zpve_ev", 2.164, 0.1)):
        card = published.card(name)
        assert card["target"] == target and card["k"] == 10 and card["folds"] and card["split"]["kfold_digest"]
        assert (published.ROOT / name / "MODEL_CARD.md").read_text().startswith(f"# {name}")
        assert main(["predict", "--model", name, str(DATA / "ethanol.sdf"), "--json"]) == 0
        row = json.loads(capsys.readouterr().out)["predictions"][0]
        assert row["target"] == target and abs(row["prediction"] - truth) < tol  # QM9's ethanol (id 15)
        assert row["domain"] is not None and row["n_models"] == len(card["folds"])
    # the first beta model: trained on this project's labels, its level and skill on the card
    card = published.card("qm9-beta")
    assert card["target"] == "beta_par_au" and card["labels"]["basis"] == "6-31g(2df,p)" and card["labels"]["n_heavy"][1] <= 6
    assert card["against_mean"]["skill_ci95"][0] > 0  # published only once it beats the mean
    assert main(["predict", "--model", "qm9-beta", str(DATA / "ethanol.sdf"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["predictions"][0]
    assert row["target"] == "beta_par_au" and row["n_models"] == 10 and abs(row["prediction"]) < 500
    assert main(["predict", "--model", "qm9-nothing", str(DATA / "ethanol.sdf")]) == 2
    assert "not a published model" in capsys.readouterr().err


def test_publish_builds_a_model_with_its_card_and_changed_files_are_refused(tmp_path, capsys):
    torch.set_num_threads(1)
    ds = qm9.load(ids=range(1, 61), cache_root=tmp_path / "cache", workers=1, progress=False, log=lambda m: None)
    cfg = gcnn.TrainConfig(targets=("zpve_ev",), epochs=1, batch_size=16)
    gcnn.cross_validate(ds, tmp_path / "cv", cfg, k=3, folds=[0, 1], log=lambda m: None, progress=False,
                        model_config=gcnn.WeaveConfig(atom_hidden=8, pair_hidden=8, readout_hidden=8, head_hidden=(8,)))
    assert main(["publish", str(tmp_path / "cv"), "--name", "tiny", "--out", str(tmp_path / "pub")]) == 0
    card = json.loads((tmp_path / "pub" / "tiny" / "card.json").read_text())
    assert card["folds"] == [0, 1] and card["mae_std"] is not None and len(card["per_fold"]) == 2
    assert "2 of 3 fold models ship here" in (tmp_path / "pub" / "tiny" / "MODEL_CARD.md").read_text()
    assert len(gcnn.load(tmp_path / "pub" / "tiny").models) == 2
    w = tmp_path / "pub" / "tiny" / "fold_1" / "weights.pt"
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="checksum|weights"):
        gcnn.load(tmp_path / "pub" / "tiny")
    shutil.rmtree(tmp_path / "cv" / "fold_1")
    (tmp_path / "cv" / "fold_0" / "domain.npz").unlink()
    assert main(["publish", str(tmp_path / "cv"), "--name", "tiny", "--out", str(tmp_path / "pub")]) == 2
    assert "no applicability domain" in capsys.readouterr().err


def test_the_quickstart_reads_a_published_ensemble_out_of_fold(tmp_path, monkeypatch):
    """With two fold models shipped, each molecule in a shipped test bin is predicted by the member
    that never saw it (recomputed here from that member alone); the rest are the ensemble's, apart."""
    import numpy as np

    from molgraph import splits
    from qmlrp.quickstart import published_on

    torch.set_num_threads(1)
    ds = qm9.load(ids=range(1, 61), cache_root=tmp_path / "cache", workers=1, progress=False, log=lambda m: None)
    cfg = gcnn.TrainConfig(targets=("zpve_ev",), epochs=1, batch_size=16)
    gcnn.cross_validate(ds, tmp_path / "cv", cfg, k=3, folds=[0, 1], log=lambda m: None, progress=False,
                        model_config=gcnn.WeaveConfig(atom_hidden=8, pair_hidden=8, readout_hidden=8, head_hidden=(8,)))
    published.publish(tmp_path / "cv", "tiny", tmp_path / "pub")
    monkeypatch.setattr(published, "ROOT", tmp_path / "pub")
    (row,) = published_on(ds)
    kf = splits.load_split(tmp_path / "cv" / "split.json")
    bins = [set(int(i) for i in kf.bins[f]) for f in (0, 1)]
    ids = [int(i) for i in ds.ids]
    y = np.asarray(ds.target("zpve_ev"), dtype=np.float64)
    errs = []
    for f in (0, 1):
        own = gcnn.load(tmp_path / "pub" / "tiny" / f"fold_{f}").predict_graphs([ds[i] for i in range(len(ds))])[0][:, 0]
        errs += [abs(own[i] - y[i]) for i, q in enumerate(ids) if q in bins[f]]
    assert row["folds"] == 2 and row["n"] == len(ids) and row["n_unseen"] == len(bins[0]) + len(bins[1]) == len(errs)
    assert row["mae_unseen"] == pytest.approx(np.mean(errs), rel=1e-5)
    rest = [i for i, q in enumerate(ids) if q not in bins[0] | bins[1]]
    ens = gcnn.load(tmp_path / "pub" / "tiny").predict_graphs([ds[i] for i in rest])[0][:, 0]
    assert row["mae_seen"] == pytest.approx(np.abs(ens - y[rest]).mean(), rel=1e-5)


def test_a_label_model_is_published_with_its_level_and_warns_outside_its_heavy_atoms(tmp_path, monkeypatch, capsys):
    """A model trained on a QM label table: the card names the table, its level and the heavy-atom
    range of the training molecules, and `predict` flags a larger molecule as outside."""
    from molgraph.io import write_xyz

    from .conftest import embed

    labels = Path(__file__).parent.parent / "data" / "labels" / "beta-b3lyp-6-31g2dfp-pyscf"
    monkeypatch.setenv("QMLRP_CACHE", str(tmp_path / "cache"))
    cv = tmp_path / "cv"
    assert main(["cv", "--target", "beta_par_au", "--labels", str(labels / "table.csv"), "--ids", str(labels / "ids.txt"),
                 "--workers", "1", "--folds", "3", "--only-folds", "0", "--epochs", "1", "--batch-size", "32",
                 "--atom-hidden", "8", "--pair-hidden", "8", "--readout-hidden", "8", "--head-hidden", "8",
                 "--out", str(cv)]) == 0
    assert main(["publish", str(cv), "--name", "tiny-beta", "--out", str(tmp_path / "pub")]) == 0
    card = json.loads((tmp_path / "pub" / "tiny-beta" / "card.json").read_text())
    lab = card["labels"]
    n_ids = len((labels / "ids.txt").read_text().split())
    assert lab["n_molecules"] == n_ids and lab["xc"] == "b3lyp" and lab["basis"] == "6-31g(2df,p)" and len(lab["sha256"]) == 64
    assert lab["n_heavy"][0] >= 1 and lab["n_heavy"][1] <= 6
    text = (tmp_path / "pub" / "tiny-beta" / "MODEL_CARD.md").read_text()
    assert f"{n_ids} labelled molecules" in text and f"at most {lab['n_heavy'][1]} heavy atoms" in text
    assert "--labels" in card["command"]
    # against the mean, literally: the fold's test predictions and its training mean
    import numpy as np

    with np.load(cv / "fold_0" / "test_predictions.npz") as z:
        y, p = z["true"][:, 0].astype(float), z["pred"][:, 0].astype(float)
    mean = json.loads((cv / "fold_0" / "config.json").read_text())["mean"][0]
    am = card["against_mean"]
    assert am["n"] == len(y) and am["mae"] == pytest.approx(np.abs(p - y).mean(), rel=1e-9)
    assert am["skill"] == pytest.approx(1 - np.abs(p - y).mean() / np.abs(mean - y).mean(), rel=1e-9)
    assert am["skill_ci95"][0] <= am["skill"] <= am["skill_ci95"][1] and "skill 1 - MAE / baseline" in text
    big = tmp_path / "big.xyz"
    write_xyz([embed("CC(C)(C)C(C)(C)C")], big)  # 8 heavy atoms
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "pub" / "tiny-beta"), str(big)]) == 0
    assert "heavy atoms; the training molecules have" in capsys.readouterr().out


def test_a_frequency_set_model_card_states_its_flags_and_set_figures(tmp_path):
    torch.set_num_threads(1)
    ds = qm9.load(ids=range(1, 61), cache_root=tmp_path / "cache", workers=1, progress=False, log=lambda m: None)
    cfg = gcnn.TrainConfig(targets=("freqs_cm1",), epochs=1, batch_size=16, set_layout="hydrogen", lr=5e-4)
    gcnn.cross_validate(ds, tmp_path / "cv", cfg, k=3, folds=[0], log=lambda m: None, progress=False,
                        model_config=gcnn.WeaveConfig(atom_hidden=8, pair_hidden=8, readout_hidden=8, head_hidden=(16, 8),
                                                      n_outputs=81, xh_head=(8,), skeleton_head=(8,),
                                                      skeleton_residual=True))
    info = published.publish(tmp_path / "cv", "tiny-freqs", tmp_path / "pub")
    # the command a reader would rerun carries every setting that differs from the defaults
    for flag in ("--set-layout hydrogen", "--head-hidden 16,8", "--xh-head 8", "--atom-hidden 8", "--lr 0.0005", "--target freqs_cm1",
                 "--skeleton-head 8", "--skeleton-residual"):
        assert flag in info["command"], (flag, info["command"])
    assert "--layers" not in info["command"] and "--pair-cutoff" not in info["command"]
    assert "--skeleton-context" not in info["command"] and "True" not in info["command"]  # a default; a switch
    st = info["per_fold"][0]["set"]
    assert list(st["per_region"]) == ["below_1000", "1000_2000", "2000_2600", "above_2600"]
    card = (tmp_path / "pub" / "tiny-freqs" / "MODEL_CARD.md").read_text()
    assert "omega_1" in card and "ZPVE from the set" in card
    m = json.loads((tmp_path / "cv" / "fold_0" / "metrics.json").read_text())["targets"]["freqs_cm1"]
    assert f"{m['omega_1_mae']:.2f}" in card


def test_a_published_fold_knows_its_test_and_validation_molecules():
    """`qmlrp explain --model qm9-zpve --split test` needs the fold's molecules: rebuilt from the
    shipped bins, with the validation slice checked against the recorded split digest."""
    import numpy as np

    from qmlrp.explain.inputs import split_test_ids

    fold = published.ROOT / "qm9-zpve" / "fold_0"
    with np.load(published.ROOT / "qm9-zpve" / published.SPLIT_FILE, allow_pickle=False) as z:
        bin0 = np.sort(z["bin_0"])
    test, where = split_test_ids(fold, "test")
    assert np.array_equal(test, bin0) and "split_bins.npz" in where
    val, _ = split_test_ids(fold, "val")
    assert len(val) > 0 and not set(val.tolist()) & set(test.tolist())


def test_the_shipped_frequency_model_predicts_a_stick_spectrum(tmp_path, capsys):
    card = published.card("qm9-freqs")
    assert card["target"] == "freqs_cm1" and card["per_fold"][0]["set"]["omega_1_mae"] > 0
    assert "--set-layout hydrogen" in card["command"]
    assert main(["predict", "--model", "qm9-freqs", str(DATA / "ethanol.sdf"), "--json", "--plot", str(tmp_path)]) == 0
    row = json.loads(capsys.readouterr().out)["predictions"][0]
    modes = row["prediction"]
    assert len(modes) == 3 * 9 - 6 and modes == sorted(modes)  # ethanol: 9 atoms, 21 modes, sorted
    assert sum(m > 2600 for m in modes) == 6  # one X-H stretch per hydrogen
    assert (tmp_path / "ethanol_0.png").stat().st_size > 5000


def test_stability_takes_a_published_name_and_writes_outside_the_package(tmp_path, monkeypatch, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("15\n21\n22\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QMLRP_CACHE", str(tmp_path / "cache"))
    assert main(["stability", "--models", "qm9-beta", "--ids", str(ids), "--rules", "epsilon", "--max-molecules", "3"]) == 0
    res = json.loads((tmp_path / "runs" / "stability_qm9-beta" / "stability.json").read_text())
    assert res["molecules"]["n_explained"] == 3 and len(res["members"]) == 10
    assert not (published.ROOT / "qm9-beta" / "stability").exists()
    assert main(["stability", "--models", "qm9-nothing", "--ids", str(ids)]) == 2
    assert "not a published model" in capsys.readouterr().err


def test_the_readout_activation_is_a_stated_flag_and_reaches_the_model_config():
    from qmlrp.cli import _model_config, build_parser

    assert "--readout-activation tanh" in published._changed_settings({"readout_activation": "tanh"}, {})
    assert published._changed_settings({"readout_activation": None}, {}) == []  # the default: not stated
    args = build_parser().parse_args(["train", "--target", "alpha_bohr3", "--out", "x", "--readout-activation", "identity"])
    assert _model_config(args).readout_activation == "identity"
    args = build_parser().parse_args(["train", "--target", "alpha_bohr3", "--out", "x"])
    assert _model_config(args).readout_activation is None
