"""qmlrp dae: training on QM9 (resumable, bit-identical), held-out reconstruction beats the
input-free baseline, refused tampering; weave networks with the autoencoder input stage keep
the network's laws (atom-order invariance, LRP conservation) and a frozen stage stays frozen."""
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gcnn
import lrp
from gcnn import WeaveConfig, WeaveNet
from molgraph import FEATURE_GROUPS, FEATURE_KINDS, collate, qm9
from qmlrp import autoencoder as A
from qmlrp.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dae")
    ds = qm9.load(ids=range(1, 401), cache_root=root / "cache", workers=1, progress=False, log=lambda m: None)
    return root, ds


@pytest.fixture(scope="module")
def trained(data):
    root, ds = data
    cfg = A.DAEConfig(epochs=4, batch_size=32, train_size=250)
    A.train(ds, root / "ae", cfg, progress=False, log=lambda m: None)
    return root / "ae", cfg


def test_feature_kinds_hold_over_the_data(data):
    _, ds = data
    a, p = A.graph_rows(ds.batch(np.arange(len(ds))))
    for g in FEATURE_GROUPS.values():
        v = (a if g.kind == "atom" else p)[:, g.slice]
        kind = FEATURE_KINDS[g.name]
        if kind == "categorical":
            assert torch.equal(v.sum(1), torch.ones(len(v))), g.name
        elif kind == "categorical_or_none":
            assert set(v.unique().tolist()) <= {0.0, 1.0} and float(v.sum(1).max()) <= 1, g.name
        elif kind == "binary":
            assert set(v.unique().tolist()) <= {0.0, 1.0}, g.name


def test_training_resumes_bit_identically(data, trained, tmp_path):
    import time

    root, ds = data
    out, cfg = trained
    cut = tmp_path / "cut"
    r = A.train(ds, cut, cfg, deadline=time.time() - 1, progress=False, log=lambda m: None)  # stops after epoch 1
    assert not r["finished"] and r["epoch"] == 1 and (cut / "checkpoint.pt").exists()
    r = A.train(ds, cut, cfg, progress=False, log=lambda m: None)
    assert r["finished"] and not (cut / "checkpoint.pt").exists()
    a, b = torch.load(out / "weights.pt", weights_only=True), torch.load(cut / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_held_out_reconstruction_beats_the_input_free_baseline(data, trained):
    root, ds = data
    variant, model, _ = A.load(trained[0])
    sp = A.fold0(ds)
    m = A.reconstruction_metrics(model, variant, ds.subset(sp.test), A.baselines(ds.subset(sp.train)))
    for g in ("atom_type", "hybridization", "bond_type"):
        assert m[g]["accuracy"] > m[g]["baseline_accuracy"] + 0.05, (g, m[g])
    assert m["spatial_distance"]["mae"] < 0.9 * m["spatial_distance"]["baseline_mae"]


def test_flat_variant_trains_and_reports(data, tmp_path):
    root, ds = data
    cfg = A.DAEConfig(variant="flat", flat_sizes=(5887, 32, 8), epochs=1, batch_size=64, train_size=100)
    assert A.train(ds, tmp_path / "flat", cfg, progress=False, log=lambda m: None)["finished"]
    variant, model, _ = A.load(tmp_path / "flat")
    m = A.reconstruction_metrics(model, variant, ds.subset(ds.ids[:20]), A.baselines(ds))
    assert set(m) == set(FEATURE_GROUPS) and all(v["n"] > 0 for v in m.values())


def test_flat_standardization_is_per_feature_not_per_slot(data):
    """Every slot of one feature gets that feature's statistics over all real atoms (pairs)."""
    _, ds = data
    model = A.DAEConfig(variant="flat", flat_sizes=(5887, 16, 4)).build()
    A.fit_standardization(model, "flat", ds, np.arange(len(ds)))
    a, p = A.graph_rows(ds.batch(np.arange(len(ds))))
    s = model.standardize
    dist = [g for g in FEATURE_GROUPS.values() if g.kind == "pair" and FEATURE_KINDS[g.name] == "continuous"][0]
    k = dist.indices[0]
    slots = 21 * 29 + 13 * np.arange(29 * 28 // 2) + k
    np.testing.assert_allclose(s.mean[slots].numpy(), float(p[:, k].mean()), rtol=1e-5)
    np.testing.assert_allclose(s.std[slots].numpy(), float(p[:, k].std(unbiased=False)), rtol=1e-5)
    onehot = [g for g in FEATURE_GROUPS.values() if g.kind == "atom" and FEATURE_KINDS[g.name] != "continuous"][0]
    assert float(s.mean[onehot.indices[0]]) == 0 and float(s.std[onehot.indices[0]]) == 1


def test_tampered_weights_are_refused(trained, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(trained[0], d)
    w = torch.load(d / "weights.pt", weights_only=True)
    next(iter(w.values())).add_(1)
    torch.save(w, d / "weights.pt")
    with pytest.raises(ValueError, match="does not match"):
        A.load(d)


def test_cli_inspect_and_combined_training(data, trained, tmp_path, capsys):
    root, ds = data
    args = ["--ids", str(tmp_path / "ids.txt"), "--cache-dir", str(root / "cache"), "--workers", "1"]
    (tmp_path / "ids.txt").write_text("\n".join(str(i) for i in range(1, 401)))
    assert main(["dae", "inspect", str(trained[0]), "--n-test", "30", *args]) == 0
    out = capsys.readouterr().out
    assert "atom_type" in out and "code units" in out and (trained[0] / "code_units.png").exists()
    doc = json.loads((trained[0] / "metrics.json").read_text())
    assert len(doc["code_units"]["atoms"]) == 8
    for mode in ("--freeze", "--fine-tune"):
        d = tmp_path / mode.strip("-")
        assert main(["train", "--target", "alpha_bohr3", "--epochs", "2", "--batch-size", "32", "--out", str(d),
                     "--input-stage", str(trained[0]), mode, *args]) == 0
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["inputs"]["input_stage"]["mode"] == ("frozen" if mode == "--freeze" else "fine-tuned")
        p = gcnn.load(d)
        enc = p.models[0].model.input_stage
        pre = A.load(trained[0])[1].encoder()
        same = all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), pre.state_dict().values()))
        assert same == (mode == "--freeze")
    assert main(["dae", "relevance", str(tmp_path / "freeze"), "--n-test", "20", *args]) == 0
    rel = json.loads((tmp_path / "freeze" / "code_relevance.json").read_text())
    assert len(rel["units"]) == 12 and rel["max_conservation_error"] < 1e-6
    assert abs(sum(u["share"] for u in rel["units"]) - 1) < 1e-9
    # qmlrp explain on the combined network reports the same code units (its own molecules)
    out = tmp_path / "explain"
    assert main(["explain", "--model", str(tmp_path / "freeze"), "--split", "test", "--cache-dir", str(root / "cache"),
                 "--out", str(out), "--heatmaps", "0", "--faithfulness", "0", "--bootstrap", "20", "--no-progress",
                 "--rule", "weave"]) == 0
    cu = json.loads((out / "summary.json").read_text())["code_units"]
    assert [u["unit"] for u in cu["units"]] == [u["unit"] for u in rel["units"]] and cu["max_conservation_error"] < 1e-6
    assert abs(sum(u["share"] for u in cu["units"]) - 1) < 1e-9
    assert main(["train", "--target", "alpha_bohr3", "--epochs", "1", "--out", str(tmp_path / "x"),
                 "--input-stage", str(tmp_path), *args]) == 2
    assert "not an autoencoder directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def combined(trained):
    _, model, _ = A.load(trained[0])
    torch.manual_seed(0)
    net = WeaveNet(WeaveConfig(atom_hidden=16, pair_hidden=8, readout_hidden=12, head_hidden=(16,),
                               input_stage=model.config()))
    net.input_stage.load_state_dict(model.encoder().state_dict())
    return net.double().eval()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_combined_network_is_invariant_to_atom_order(data, combined, seed):
    _, ds = data
    g = ds[int(seed % len(ds))]
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(g.n_atoms))
    b = collate([g])
    a, p = b.atom_features.double(), b.pair_features.double()
    y = combined(a, p, b.atom_mask)
    y2 = combined(a[:, perm], p[:, perm][:, :, perm], b.atom_mask)
    assert torch.allclose(y, y2, atol=1e-10)
    padded = collate([g], pad_to=g.n_atoms + 3)
    assert torch.allclose(combined(padded.atom_features.double(), padded.pair_features.double(), padded.atom_mask), y, atol=1e-10)


def test_lrp_through_the_input_stage_conserves(data, combined):
    _, ds = data
    b = ds.batch(np.arange(5))
    inputs = (b.atom_features.double(), b.pair_features.double(), b.atom_mask)
    for composite in ("epsilon", "weave"):
        e = lrp.explain(combined, inputs, composite, track_absorbed=True)
        assert float(e.conservation_error().max()) < 1e-8
        ra, rp, _ = e.relevance
        assert float(ra[~b.atom_mask].abs().sum()) == 0 and float(rp.abs().sum()) > 0


def test_configs_without_an_input_stage_are_unchanged():
    # checkpoints identify their run by the config's JSON: runs started before input stages resume
    assert "input_stage" not in WeaveConfig().to_json()
    assert WeaveConfig.from_json(WeaveConfig().to_json()) == WeaveConfig()


def test_code_relevance_conserves_and_matches_the_input_path(data, combined):
    _, ds = data
    b = ds.batch(np.arange(6))
    r = A.code_relevance(combined, b, "epsilon")
    e = r["explanation"]
    assert float(e.conservation_error().max()) < 1e-8
    # the same output is explained: code relevance + absorbed == input-feature relevance + absorbed
    full = lrp.explain(combined, (b.atom_features.double(), b.pair_features.double(), b.atom_mask), "epsilon")
    assert torch.allclose(e.explained, full.explained, atol=1e-10)
    assert r["atoms"].shape[-1] == 8 and r["pairs"].shape[-1] == 4
    assert float(r["atoms"][~b.atom_mask].abs().sum()) == 0


# ------------------------------------------------------------------------------ neighbourhood context
@pytest.fixture(scope="module")
def trained_context(data):
    root, ds = data
    cfg = A.DAEConfig(atom_sizes=(42, 32, 8), atom_context=True, epochs=4, batch_size=32, train_size=250)
    A.train(ds, root / "ae_ctx", cfg, progress=False, log=lambda m: None)
    return root / "ae_ctx", cfg


def test_context_rows_are_each_atom_with_the_sum_of_its_bonded_neighbours(data, trained_context):
    _, ds = data
    _, model, _ = A.load(trained_context[0])
    g = ds[int(np.argmax([ds[i].n_atoms for i in range(40)]))]
    a, _ = A.graph_rows(collate([g]), model)
    own, nbr = a[:, :21], a[:, 21:]
    assert torch.equal(own, g.atom_features)
    bonded = g.pair_features[..., A.adjacency_column()] > 0.5
    for i in range(g.n_atoms):  # literal: the neighbours' rows added up
        torch.testing.assert_close(nbr[i], g.atom_features[bonded[i]].sum(0))
    h = FEATURE_GROUPS["atom_type"].slice
    n_h = nbr[:, h][:, 0]  # hydrogen neighbours of each atom
    assert int(n_h.sum()) == int(bonded[:, g.atom_features[:, h][:, 0] > 0.5].sum())


def test_context_autoencoder_rebuilds_the_neighbourhood_and_round_trips(data, trained_context, tmp_path):
    root, ds = data
    variant, model, cfg = A.load(trained_context[0])
    assert cfg["autoencoder"]["context"] == {"adjacency_column": A.adjacency_column()}
    sp = A.fold0(ds)
    m = A.reconstruction_metrics(model, variant, ds.subset(sp.test), A.baselines(ds.subset(sp.train)))
    assert m["neighbour_sums"]["mae"] < 0.9 * m["neighbour_sums"]["baseline_mae"], m["neighbour_sums"]  # 4 epochs, 250 molecules
    assert m["atom_type"]["accuracy"] > m["atom_type"]["baseline_accuracy"] + 0.05
    with pytest.raises(ValueError, match="atom sizes start with 42"):
        A.DAEConfig(atom_context=True)
    with pytest.raises(ValueError, match="setting of the graph variant"):
        A.DAEConfig(variant="flat", atom_sizes=(42, 32, 8), atom_context=True)


def test_context_input_stage_keeps_invariance_and_conservation(data, trained_context):
    _, ds = data
    _, model, _ = A.load(trained_context[0])
    torch.manual_seed(0)
    net = WeaveNet(WeaveConfig(atom_hidden=16, pair_hidden=8, readout_hidden=12, head_hidden=(16,),
                               input_stage=model.config()))
    net.input_stage.load_state_dict(model.encoder().state_dict())
    net = net.double().eval()
    g = ds[7]
    b = collate([g])
    a, p = b.atom_features.double(), b.pair_features.double()
    perm = torch.from_numpy(np.random.default_rng(1).permutation(g.n_atoms))
    torch.testing.assert_close(net(a[:, perm], p[:, perm][:, :, perm], b.atom_mask), net(a, p, b.atom_mask),
                               rtol=1e-10, atol=1e-10)
    bb = ds.batch(np.arange(5))
    inputs = (bb.atom_features.double(), bb.pair_features.double(), bb.atom_mask)
    e = lrp.explain(net, inputs, "epsilon", track_absorbed=True)
    assert float(e.conservation_error().max()) < 1e-8
    r = A.code_relevance(net, bb, "epsilon")
    assert float(r["explanation"].conservation_error().max()) < 1e-8
    # the encoder's codes equal the autoencoder's own encoding of the context rows
    codes, _ = net.input_stage(inputs[0], inputs[1])
    torch.testing.assert_close(codes, model.double().encode(inputs[0], inputs[1])[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="input_stage"):
        bad = model.config()
        bad["atoms"] = {**bad["atoms"], "sizes": [21, 32, 8]}
        WeaveNet(WeaveConfig(input_stage=bad))
