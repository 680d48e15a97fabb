"""The explanation package's shared parts: one relevance pass for explain and stability, one
fold-folder lister (numeric order), one id reader, and models trained on a QM label table."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import gcnn
from molgraph.splits import read_ids
from qmlrp import stability
from qmlrp.cli import main
from qmlrp.explain import load_model, load_relevance, member_dirs, resolve_model_dir

from ..conftest import tiny_qm9_model

SMALL = dict(atom_hidden=8, pair_hidden=8, readout_hidden=8, head_hidden=(8,))
LABELS = Path(__file__).parent.parent.parent / "data" / "labels" / "beta-b3lyp-6-31g2dfp-pyscf"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("pkg")
    ds, sp, out = tiny_qm9_model(root)
    return {"root": root, "ds": ds, "split": sp, "model": out}


def test_explain_and_stability_use_one_relevance_pass(model, tmp_path):
    """Same model, molecules, rule and histogram rule: the group relevance of `qmlrp explain` and of
    the stability study is the same (it differed when stability skipped the histogram rule)."""
    ds, test_ids = model["ds"], model["split"].test
    for hist in ("pass", "rescale"):
        out = tmp_path / f"explain_{hist}"
        rc = main(["explain", "--model", str(model["model"]), "--split", "test", "--histogram-rule", hist,
                   "--cache-dir", str(model["root"] / "cache"), "--out", str(out), "--heatmaps", "0",
                   "--faithfulness", "0", "--bootstrap", "20", "--no-progress"])
        assert rc == 0
        rs = load_relevance(out)
        lm = load_model(model["model"])
        sub = ds.subset([int(i.split(":")[1]) for i in rs.ids])
        res = stability.explain_groups(lm.net, lm.std, sub, "epsilon", histogram_rule=hist)
        np.testing.assert_allclose(res["groups"], rs.groups, rtol=1e-6, atol=1e-6)
    a = load_relevance(tmp_path / "explain_pass").groups
    b = load_relevance(tmp_path / "explain_rescale").groups
    assert np.abs(a - b).max() > 1e-4  # the histogram rule is applied, not ignored
    assert sorted(int(i.split(":")[1]) for i in load_relevance(tmp_path / "explain_pass").ids) == sorted(test_ids)


def test_a_fold_folder_of_12_members_is_listed_and_loaded_in_numeric_order(model, tmp_path):
    cv = tmp_path / "cv"
    for f in range(12):
        shutil.copytree(model["model"], cv / f"fold_{f}")
    (cv / "fold_extra").mkdir()  # not a model: no config.json
    names = [p.name for p in member_dirs(cv)]
    assert names == [f"fold_{f}" for f in range(12)]
    assert [p.name for p in gcnn.model_dirs(cv)] == names
    assert len(gcnn.load(cv).models) == 12
    chosen, note = resolve_model_dir(cv)
    assert chosen.name == "fold_0" and "12 fold models" in note
    assert resolve_model_dir(cv, fold=10)[0].name == "fold_10"
    assert member_dirs(model["model"]) == [model["model"]]
    with pytest.raises(FileNotFoundError, match="no fold_"):
        member_dirs(tmp_path / "empty")


def test_one_id_reader_takes_plain_and_qm9_prefixed_ids_and_comments(tmp_path):
    p = tmp_path / "ids.txt"
    p.write_text("# the ids groups.csv writes, and plain ones\nqm9:12, 13\n  14 qm9:7  # seven\n")
    assert read_ids(p) == [12, 13, 14, 7]
    p.write_text("12 thirteen")
    with pytest.raises(ValueError, match="thirteen"):
        read_ids(p)
    with pytest.raises(FileNotFoundError, match="no such ids file"):
        read_ids(tmp_path / "missing.txt")


def test_a_model_trained_on_a_label_table_is_explained_with_its_labels(tmp_path, monkeypatch):
    """config.json records the label table (path and SHA-256); explain rejoins it for the targets."""
    table = tmp_path / "table.csv"
    shutil.copy(LABELS / "table.csv", table)
    ids = read_ids(LABELS / "ids.txt")
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    out = tmp_path / "beta"
    rc = main(["train", "--target", "beta_par_au", "--labels", "table.csv", "--ids", str(LABELS / "ids.txt"),
               "--epochs", "1", "--batch-size", "16", "--out", str(out), "--cache-dir", str(cache)])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["inputs"]["labels"]["table"] == "table.csv" and len(cfg["inputs"]["labels"]["sha256"]) == 64
    ex = tmp_path / "explain"
    rc = main(["explain", "--model", str(out), "--split", "test", "--cache-dir", str(cache), "--out", str(ex),
               "--heatmaps", "1", "--faithfulness", "0", "--bootstrap", "20", "--no-progress"])
    assert rc == 0
    with open(ex / "groups.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(np.isfinite(float(r["target"])) for r in rows)  # beta_par from the table
    assert {int(r["id"].split(":")[1]) for r in rows} <= set(ids)
    summary = json.loads((ex / "summary.json").read_text())
    assert summary["target"] == "beta_par_au" and summary["accuracy"]["n"] == len(rows)
    table.write_text(table.read_text().replace("\n", "\n", 1) + "\n")  # edited after training
    rc = main(["explain", "--model", str(out), "--split", "test", "--cache-dir", str(cache), "--out", str(ex),
               "--heatmaps", "0", "--faithfulness", "0", "--no-progress"])
    assert rc == 2  # refused: the table is not the one the model was trained on


@pytest.mark.parametrize("xh_head", [None, (8,)])
def test_a_vector_model_is_explained_on_a_selected_output_range(model, tmp_path, xh_head):
    """A frequency-set model: the explained quantity is the sum over the selected modes of
    (prediction - training mean); relevance conserves it; scalar-only options are refused. The
    same with a per-hydrogen head (X-H outputs from the atoms, the rest from the pooled vector)."""
    ds, sp = model["ds"], model["split"]
    out = tmp_path / "freqs"
    cfg = gcnn.TrainConfig(targets=("freqs_cm1",), epochs=1, batch_size=16, seed=0, set_layout="hydrogen")
    mc = gcnn.WeaveConfig(**{**SMALL, "n_outputs": 81, "xh_head": xh_head})
    gcnn.Trainer(out, mc, cfg, log=lambda m: None, progress=False).fit(
        ds.subset(sp.train), ds.subset(sp.val), split_meta={"digest": sp.digest, **sp.meta})
    sp.save(out / "split.json")
    lm = load_model(out, output="above:2600")
    pred_all = gcnn.load(out).predict_dataset(ds.subset(sp.test))  # (M, 81), cm^-1, in the layout's order
    results = {}
    for spec in ("sum", "above:2600", "mode:1"):
        ex = tmp_path / spec.replace(":", "_")
        rc = main(["explain", "--model", str(out), "--split", "test", "--output", spec, "--cache-dir",
                   str(model["root"] / "cache"), "--out", str(ex), "--heatmaps", "1", "--bootstrap", "20",
                   "--no-progress"])
        assert rc == 0
        rs = load_relevance(ex)
        s = json.loads((ex / "summary.json").read_text())
        assert s["output"] == spec and s["max_conservation_error"] < 1e-2 * max(1.0, float(np.abs(rs.explained).max()))
        np.testing.assert_allclose(rs.groups.sum(1) + rs.absorbed, rs.explained, rtol=1e-4, atol=1e-2)
        results[spec] = rs
    order = {f"qm9:{int(q)}": k for k, q in enumerate(sp.test)}
    for spec, rs in results.items():
        for k, mid in enumerate(rs.ids):
            p = pred_all[order[str(mid)]]
            g = ds.by_id(int(str(mid).split(":")[1]))
            true = np.sort(g.targets["freqs_cm1"].numpy())
            n, h = len(true), sum(e == "H" for e in g.elements)
            # the hydrogen layout, literally: the h highest modes on outputs 0.., the rest on 20.., highest first
            laid = np.zeros(81)
            laid[:h] = true[::-1][:h]
            laid[20:20 + n - h] = true[::-1][h:]
            sel = np.zeros(81, bool)
            sel[:h] = sel[20:20 + n - h] = True
            if spec == "above:2600":
                sel &= p > 2600
            elif spec == "mode:1":  # the lowest member of the predicted set
                sel = np.arange(81) == np.flatnonzero(sel)[np.argmin(p[sel])]
            assert rs.prediction[k] == pytest.approx(p[sel].sum(), rel=1e-4, abs=1e-2)
            assert rs.prediction[k] - rs.explained[k] == pytest.approx(lm.means[sel].sum(), rel=1e-4, abs=1e-1)
            assert rs.target[k] == pytest.approx(laid[sel].sum(), rel=1e-6)
    if xh_head is not None:  # the X-H outputs are not a function of the pooled vector the references are taken at
        rc = main(["explain", "--model", str(out), "--split", "test", "--output", "sum", "--reference", "empty",
                   "--cache-dir", str(model["root"] / "cache"), "--out", str(tmp_path / "ref"), "--heatmaps", "0",
                   "--faithfulness", "0", "--no-progress"])
        assert rc == 2
    with pytest.raises(ValueError, match="unknown output selection"):
        load_model(out, output="modes")
    with pytest.raises(ValueError, match="--output is for vector"):
        load_model(model["model"], output="sum")


def test_references_mean_empty_and_a_molecule(model, tmp_path):
    """explained = prediction - the model's prediction for the reference, conserved by the
    relevance (to float32 round-off: the pipeline runs in float32); the empty molecule is the all-padding input; a reference molecule
    explained against itself has nothing to explain."""
    from molgraph import write_xyz
    from qmlrp.explain import explain_inputs, qm9_inputs
    from qmlrp.explain.relevance_pass import reference_graph, reference_output

    lm = load_model(model["model"])
    ids = list(model["split"].test[:12])
    inputs = qm9_inputs(ids, "alpha_bohr3", cache_root=model["root"] / "cache", log=lambda m: None, progress=False)
    empty = float(reference_output(lm.net, "empty")[0, 0])
    padded = lm.net(torch.zeros(3, 5, 21), torch.zeros(3, 5, 5, 13), torch.zeros(3, 5, dtype=torch.bool))
    assert torch.allclose(padded.double(), torch.full((3, 1), empty, dtype=torch.float64), rtol=0, atol=1e-6)
    mean_rs = explain_inputs(lm, inputs, "epsilon", progress=False)
    empty_rs = explain_inputs(lm, inputs, "epsilon", progress=False, reference="empty")
    np.testing.assert_allclose(empty_rs.prediction, mean_rs.prediction, rtol=1e-6)
    np.testing.assert_allclose(empty_rs.explained, empty_rs.prediction - (empty * lm.std + lm.mean), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(mean_rs.explained, mean_rs.prediction - lm.mean, rtol=1e-5, atol=1e-3)
    assert np.abs(empty_rs.explained - mean_rs.explained).max() > 1e-2  # a different quantity is explained
    for rs in (mean_rs, empty_rs):
        np.testing.assert_allclose(rs.groups.sum(1) + rs.absorbed, rs.explained, rtol=1e-5, atol=1e-4)
    assert empty_rs.meta["reference"] == "empty"
    st = stability.explain_groups(lm.net, lm.std, model["ds"].subset(ids), "epsilon", reference="empty")
    np.testing.assert_allclose(st["groups"], empty_rs.groups, rtol=1e-6, atol=1e-6)  # stability: the same pass
    assert empty_rs.meta["reference_prediction"] == pytest.approx(empty * lm.std + lm.mean)
    # a reference molecule: the first test molecule against itself explains 0
    ref_file = tmp_path / "ref.xyz"
    write_xyz([model["ds"].molecule(model["ds"].index_of(ids[0]))], ref_file)
    ref = reference_graph(str(ref_file))
    mol_rs = explain_inputs(lm, inputs, "epsilon", progress=False, reference=ref)
    k = list(mol_rs.ids).index(f"qm9:{ids[0]}")
    # the output bias holds the reference, so the molecule's output is float32 round-off (~1e-7) and
    # epsilon lets only the share g / (g + eps) of its contributions through: tiny, not exactly 0
    assert abs(mol_rs.explained[k]) < 1e-5 and np.abs(mol_rs.groups[k]).max() < 1e-2
    assert np.abs(mol_rs.groups[k]).max() < 1e-2 * np.abs(mean_rs.groups).mean()
    with pytest.raises(FileNotFoundError, match="no such molecule file"):
        reference_graph(str(tmp_path / "none.xyz"))
    # the command: the reference and the cancellation figure are in summary.json
    out = tmp_path / "cli"
    assert main(["explain", "--model", str(model["model"]), "--ids", str(_ids_file(tmp_path, ids)), "--reference",
                 "empty", "--cache-dir", str(model["root"] / "cache"), "--out", str(out), "--heatmaps", "0",
                 "--faithfulness", "0", "--bootstrap", "20", "--no-progress"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["reference"]["kind"] == "empty" and "reference (empty)" in s["reference"]["explained"]
    assert s["cancellation"]["pooled"] >= 1 and s["cancellation"]["per_molecule_quantiles"]["50"] >= 1
    for part in ("atoms", "with_pairs"):
        hs = s["hydrogen_share"][part]
        assert 0 <= hs["share_ci95"][0] <= hs["share"] <= hs["share_ci95"][1] <= 1 and 0 < hs["fraction"] < 1
    report = (out / "report.html").read_text()
    assert "molecule with no atoms" in report and "Hydrogens hold" in report


def _ids_file(tmp_path, ids):
    p = tmp_path / "ids.txt"
    p.write_text(" ".join(f"qm9:{i}" for i in ids))
    return p


def test_a_molecule_at_the_training_mean_keeps_a_finite_relevance_against_the_empty_molecule(model):
    """Against a reference the head is explained by the exact difference rule, so relevance does
    not depend on where f(x) crosses the training mean. (Starting the whole network from
    f(x) - f(ref) scaled every relevance by (f(x) - f(ref)) / f(x): about 1e6 times too large here.)"""
    from qmlrp.explain import explain_inputs, qm9_inputs

    lm = load_model(model["model"])
    ids = list(model["split"].test[:8])
    inputs = qm9_inputs(ids, "alpha_bohr3", cache_root=model["root"] / "cache", log=lambda m: None, progress=False)
    before = explain_inputs(lm, inputs, "epsilon", progress=False)
    with torch.no_grad():  # move the training mean onto the first molecule's prediction (1e-6 off)
        lm.net.head[-1].bias -= float((before.prediction[0] - lm.mean) / lm.std) - 1e-6
    at_mean = explain_inputs(lm, inputs, "epsilon", progress=False)
    assert abs(at_mean.explained[0]) < 1e-4  # the mean reference has (almost) nothing to explain
    empty = explain_inputs(lm, inputs, "epsilon", progress=False, reference="empty")
    scale = np.abs(empty.groups[1:]).max()
    assert np.abs(empty.groups[0]).max() < 10 * scale
    np.testing.assert_allclose(empty.groups.sum(1) + empty.absorbed, empty.explained, rtol=1e-5, atol=1e-3)


def test_against_a_reference_the_atom_contributions_add_up_to_the_difference_exactly(model, tmp_path):
    """float64: the head's difference rule splits f(x) - f(ref) over the pooled vector with
    nothing absorbed, and the atoms' shares of it add up to the same; the pipeline (float32)
    stores them per atom."""
    import copy

    import lrp
    from molgraph import collate
    from qmlrp.explain import explain_inputs, qm9_inputs

    lm = load_model(model["model"])
    ds, ids = model["ds"], list(model["split"].test[:10])
    net = copy.deepcopy(lm.net).double()
    b = collate([ds[ds.index_of(i)].with_targets({}) for i in ids])
    x = (b.atom_features.double(), b.pair_features.double(), b.atom_mask)
    ref = ds[ds.index_of(ids[-1])]
    rb = collate([ref.with_targets({})])
    xr = (rb.atom_features.double(), rb.pair_features.double(), rb.atom_mask)
    with torch.no_grad():
        g, g_ref, out = net.pooled(*x), net.pooled(*xr), net(*x)
        f_empty = net(torch.zeros(1, 1, 21, dtype=torch.float64), torch.zeros(1, 1, 1, 13, dtype=torch.float64),
                      torch.zeros(1, 1, dtype=torch.bool))
    for g0, f0 in ((torch.zeros_like(g[:1]), f_empty), (g_ref, net(*xr).detach())):
        r = lrp.difference_relevance(net.head, g, g0)
        torch.testing.assert_close(r.sum(1), (out - f0)[:, 0], rtol=1e-10, atol=1e-10)
    inputs = qm9_inputs(ids, "alpha_bohr3", cache_root=model["root"] / "cache", log=lambda m: None, progress=False)
    for reference in ("empty", "mean"):
        rs = explain_inputs(lm, inputs, "epsilon", progress=False, reference=reference)
        sums = np.array([rs.molecule(k).contribution.sum(dtype=np.float64) for k in range(len(rs))])
        if reference == "empty":  # nothing absorbed above the pooling
            np.testing.assert_allclose(sums, rs.explained, rtol=1e-4, atol=1e-4)
        assert np.abs(sums - rs.explained).max() < np.abs(rs.absorbed).max() + 1e-3
    from qmlrp.explain.store import load_relevance, save_relevance

    save_relevance(tmp_path / "r.npz", rs)
    np.testing.assert_allclose(load_relevance(tmp_path / "r.npz").atom_contribution, rs.atom_contribution)
