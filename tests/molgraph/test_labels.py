"""QM label tables joined to QM9 as targets beta_par_au / beta_vec_au: NaN and masks for the
molecules without a label, carried through subsets, and the gcnn trainer learns only from the
labelled molecules."""
import csv
import json
import math

import numpy as np
import pytest

import gcnn
from molgraph import TARGETS, collate, qm9
from molgraph.labels import LABEL_COLUMNS, read_label_table
from molgraph.targets import LABEL_TARGETS, SCALAR_TARGETS

IDS = list(range(1, 61))


def _table(path, values: dict[int, tuple[float, float]]):
    """A label table as `qmlrp label collect` writes it (only the columns the join reads, plus id)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["qm9_id", "id", "beta_par", "beta_vec_norm"])
        for q, (par, vec) in values.items():
            w.writerow([q, f"qm9_{q:06d}", "" if math.isnan(par) else repr(float(par)), repr(float(vec))])
    return path


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return qm9.load(ids=IDS, cache_root=tmp_path_factory.mktemp("c"), workers=1, progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def labels(tmp_path_factory, ds):
    """Labels for 40 of the 60 molecules (beta_par undefined for one of them), and one id that is
    not in the dataset; values tied to alpha so that a model can learn them."""
    alpha = dict(zip(ds.ids.tolist(), ds.target("alpha_bohr3")))
    vals = {q: (2.0 * alpha[q] - 30.0, alpha[q] + 1.0) for q in IDS[:40]}
    vals[7] = (float("nan"), vals[7][1])
    vals[99999] = (1.0, 1.0)
    return _table(tmp_path_factory.mktemp("l") / "table.csv", vals), vals


def test_label_targets_are_scalars_outside_the_qm9_cache():
    assert set(LABEL_TARGETS) == {"beta_par_au", "beta_vec_au"} and not set(LABEL_TARGETS) & set(SCALAR_TARGETS)
    assert TARGETS["beta_par_au"].kind == "scalar" and LABEL_COLUMNS["beta_vec_au"] == "beta_vec_norm"


def test_join_by_id_with_nan_and_mask(ds, labels):
    path, vals = labels
    lab = ds.with_labels(path)
    par, vec = lab.target("beta_par_au"), lab.target("beta_vec_au")
    for k, q in enumerate(lab.ids.tolist()):
        if q in vals:
            np.testing.assert_equal(par[k], vals[q][0])  # NaN for qm9:7 (no beta_par)
            assert vec[k] == vals[q][1]
        else:
            assert math.isnan(par[k]) and math.isnan(vec[k])
    assert lab.label_mask("beta_vec_au").sum() == 40 and lab.label_mask("beta_par_au").sum() == 39
    # the same through qm9.load(labels=...), a subset, and the MolGraphs of a batch
    again = qm9.load(ids=IDS, cache_root=ds.path.parent, progress=False, log=lambda m: None, labels=path)
    np.testing.assert_array_equal(again.target("beta_vec_au"), vec)
    sub = lab.subset([50, 3, 7]).with_targets(["beta_par_au", "alpha_bohr3"])
    np.testing.assert_equal(sub.target("beta_par_au"), [np.nan, vals[3][0], np.nan])
    b = collate([sub[i] for i in range(3)])
    np.testing.assert_equal(b.targets["beta_par_au"].numpy(), [np.nan, vals[3][0], np.nan])
    assert "beta_par_au" in lab[0].targets and "beta_par_au" not in ds[0].targets


def test_label_targets_without_a_table_say_how_to_get_one(ds):
    with pytest.raises(KeyError, match="label table"):
        ds.target("beta_par_au")
    with pytest.raises(KeyError, match="label table"):
        ds.with_targets(["beta_vec_au"])


def test_bad_tables_are_refused_with_file_and_line(tmp_path):
    (tmp_path / "a.csv").write_text("qm9_id,beta_par\n1,2.0\n")
    with pytest.raises(ValueError, match=r"a\.csv: not a label table: columns \['beta_vec_norm'\] missing"):
        read_label_table(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("qm9_id,beta_par,beta_vec_norm\n1,2.0,3.0\n1,2.0,3.0\n")
    with pytest.raises(ValueError, match=r"b\.csv, line 3: qm9:1 appears twice"):
        read_label_table(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("qm9_id,beta_par,beta_vec_norm\n1,big,3.0\n")
    with pytest.raises(ValueError, match=r"c\.csv, line 2, qm9:1: beta_par 'big' is not a number"):
        read_label_table(tmp_path / "c.csv")
    with pytest.raises(FileNotFoundError, match="qmlrp label collect"):
        read_label_table(tmp_path)  # a folder without table.csv


def test_trainer_learns_only_from_labelled_molecules(tmp_path, ds, labels):
    path, vals = labels
    lab = ds.with_labels(path)
    ids = lab.ids.tolist()  # the 60 minus the uncharacterized ones
    train, val = lab.subset(ids[:45]), lab.subset(ids[45:] + ids[30:40])
    cfg = gcnn.TrainConfig(targets=("beta_par_au",), epochs=2, batch_size=16, seed=0)
    small = gcnn.WeaveConfig(atom_hidden=8, pair_hidden=8, readout_hidden=8, head_hidden=(8,))
    trainer = gcnn.Trainer(tmp_path, small, cfg, log=lambda m: None, progress=False).fit(train, val)
    saved = json.loads((tmp_path / "config.json").read_text())
    labelled = [vals[q][0] for q in ids[:45] if q in vals and not math.isnan(vals[q][0])]
    assert saved["mean"][0] == pytest.approx(np.mean(labelled)) and saved["std"][0] == pytest.approx(np.std(labelled))
    hist = (tmp_path / "history.csv").read_text().splitlines()
    assert len(hist) == 3 and all(math.isfinite(float(r.split(",")[2])) for r in hist[1:])  # val MAE over labelled only
    m = trainer.evaluate(val)["targets"]["beta_par_au"]
    assert math.isfinite(m["mae"]) and m["unit"] == "au"
