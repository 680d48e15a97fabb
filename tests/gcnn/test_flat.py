"""gcnn.FlatNet: the flattened Molecular Graph read by a fully connected network, with or without
a flat autoencoder's encoder in front. It keeps the weave network's interface; its flattening is
molgraph.flatten's; padding a batch changes nothing; LRP conserves relevance with the empty
slots' share booked to 'padding'; it trains, loads and is explained through the CLI."""
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gcnn
import lrp
from molgraph import collate, qm9
from molgraph.batch import flatten
from qmlrp import autoencoder as A
from qmlrp.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("flat")
    ds = qm9.load(ids=range(1, 301), cache_root=root / "cache", workers=1, progress=False, log=lambda m: None)
    return root, ds


@pytest.fixture(scope="module")
def staged(data):
    """A flat network (float64) with a flat autoencoder's encoder (standardization fitted on QM9,
    random weights) in front."""
    _, ds = data
    torch.manual_seed(0)
    ae = A.DAEConfig(variant="flat", flat_sizes=(5887, 24, 6)).build()
    x, w = A.flat_rows(ds.batch(np.arange(200)))
    ae.fit_standardization(x, w)
    net = gcnn.FlatNet(gcnn.FlatConfig(input_stage=ae.config(), head_hidden=(16,)))
    net.input_stage.load_state_dict(ae.encoder.state_dict())
    net.double().sync_padding()
    return ae.double(), net.eval()


def _batch(ds, idx):
    b = collate([ds[int(i)].with_targets({}) for i in idx])
    return b, (b.atom_features.double(), b.pair_features.double(), b.atom_mask)


def test_flattening_is_molgraph_flatten_and_the_code_is_the_autoencoders(data, staged):
    _, ds = data
    ae, net = staged
    b, x = _batch(ds, range(40, 80))
    flat = net.flatten(*x)
    assert torch.equal(flat, flatten(b).double())
    _, w = A.flat_rows(b)
    assert torch.equal(net.flatten.slots(x[2], 21, 13), w.bool())
    with torch.no_grad():
        np.testing.assert_allclose(net.pooled(*x).numpy(), ae.encode(flat).numpy(), atol=1e-12)
        # empty slots read as the standardization of 0, as the autoencoder saw them in training
        s = ae.standardize
        np.testing.assert_allclose(net.flat_inputs(*x).numpy(), s(flat).numpy(), atol=1e-12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_a_molecule_predicts_the_same_alone_or_in_any_batch(data, staged, seed):
    _, ds = data
    _, net = staged
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds), size=6, replace=False)
    _, x = _batch(ds, idx)
    with torch.no_grad():
        together = net(*x)
        alone = torch.cat([net(*_batch(ds, [i])[1]) for i in idx])
    np.testing.assert_allclose(together.numpy(), alone.numpy(), atol=1e-12)


def test_slot_i_is_the_files_i_th_atom_so_renumbering_moves_the_output(data, staged):
    """The flat design's known weakness (docs/dae.md): not invariant to atom order."""
    _, ds = data
    _, net = staged
    g = ds[250]
    perm = torch.as_tensor(np.random.default_rng(0).permutation(g.n_atoms))
    a, p = g.atom_features[perm], g.pair_features[perm][:, perm]
    m = torch.ones(1, g.n_atoms, dtype=torch.bool)
    with torch.no_grad():
        y0 = net(g.atom_features[None].double(), g.pair_features[None].double(), m)
        y1 = net(a[None].double(), p[None].double(), m)
    assert abs(float(y1 - y0)) > 1e-6


@pytest.mark.parametrize("composite", ["epsilon", "weave"])
def test_lrp_conserves_with_the_empty_slots_booked_to_padding(data, staged, composite):
    _, ds = data
    _, net = staged
    _, x = _batch(ds, range(100, 132))
    e = lrp.explain(net, x, composite, track_absorbed=True)
    assert float(e.conservation_error().max()) < 1e-9
    assert "padding" in e.absorbed_by
    # independently: relevance at the flat level (the network above its flat input), summed over empty slots
    above = torch.nn.Sequential()  # the same module names, so that the composite assigns the same rules
    above.add_module("input_stage", torch.nn.Sequential(*net.input_stage[1:]))
    above.add_module("head", net.head)
    flat_in = net.flat_inputs(*x).detach()
    r = lrp.explain(above, flat_in, composite).relevance
    empty = ~net.flatten.slots(x[2], 21, 13)
    np.testing.assert_allclose(e.absorbed_by["padding"].numpy(), (r * empty).sum(1).numpy(), atol=1e-9)
    # the real slots' share reaches the atom and pair inputs: pairs once (i < j), padding rows none
    ra, rp = e.relevance[0], e.relevance[1]
    assert float(torch.tril(rp.abs().sum(-1)).sum()) == 0.0
    assert float(ra[~x[2]].abs().sum()) == 0.0


def test_without_a_stage_the_inputs_are_standardized_as_the_flat_autoencoder_does(data):
    _, ds = data
    b = ds.batch(np.arange(200))
    net = gcnn.FlatNet(gcnn.FlatConfig(head_hidden=(8,)))
    net.fit_input_standardization(b.atom_features, b.pair_features, b.atom_mask)
    ae = A.DAEConfig(variant="flat", flat_sizes=(5887, 8, 2)).build()
    A.set_flat_standardization(ae, *A.graph_rows(b))
    np.testing.assert_allclose(net.standardize.mean.numpy(), ae.standardize.mean.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(net.standardize.std.numpy(), ae.standardize.std.numpy(), rtol=1e-5)
    assert float(net.standardize.mean.abs().max()) > 0  # the continuous features are centred
    np.testing.assert_allclose(net.padding.value.numpy(), (-net.standardize.mean / net.standardize.std).numpy())


def test_too_many_atoms_is_a_clear_error():
    net = gcnn.FlatNet(gcnn.FlatConfig(max_atoms=4, head_hidden=(8,)))
    with pytest.raises(ValueError, match="5 atoms; this flat network reads at most max_atoms=4"):
        net(torch.zeros(1, 5, 21), torch.zeros(1, 5, 5, 13), torch.ones(1, 5, dtype=torch.bool))


def test_configs_round_trip_and_weave_configs_have_no_architecture_key():
    c = gcnn.FlatConfig(head_hidden=(32, 8), n_outputs=2)
    assert gcnn.config_from_json(json.loads(json.dumps(c.to_json()))) == c
    w = gcnn.WeaveConfig()
    assert "architecture" not in w.to_json() and gcnn.config_from_json(w.to_json()) == w
    with pytest.raises(ValueError, match="unknown architecture"):
        gcnn.config_from_json({"architecture": "mlp"})
    with pytest.raises(ValueError, match="input_stage reads 21 inputs"):
        gcnn.FlatConfig(input_stage={"sizes": [21, 8, 4]})


@pytest.mark.slow  # ~2 min: an autoencoder and three networks trained, an explain run
def test_cli_trains_loads_and_explains_flat_networks(data, tmp_path, capsys):
    root, ds = data
    args = ["--ids", str(tmp_path / "ids.txt"), "--cache-dir", str(root / "cache"), "--workers", "1"]
    (tmp_path / "ids.txt").write_text("\n".join(str(i) for i in range(1, 301)))
    ae_dir = tmp_path / "ae"
    cfg = A.DAEConfig(variant="flat", flat_sizes=(5887, 24, 6), epochs=1, batch_size=64, train_size=150)
    A.train(ds, ae_dir, cfg, progress=False, log=lambda m: None)
    plain = tmp_path / "plain"
    assert main(["train", "--target", "alpha_bohr3", "--architecture", "flat", "--head-hidden", "16", "--epochs", "2",
                 "--batch-size", "32", "--out", str(plain), *args]) == 0
    net = gcnn.load(plain).models[0].model
    assert isinstance(net, gcnn.FlatNet) and net.input_stage is None
    assert float(net.padding.value.abs().max()) > 0  # standardized from the training data, saved with the weights
    for mode in ("--freeze", "--fine-tune"):
        d = tmp_path / mode.strip("-")
        assert main(["train", "--target", "alpha_bohr3", "--input-stage", str(ae_dir), mode, "--head-hidden", "16",
                     "--epochs", "2", "--batch-size", "32", "--out", str(d), *args]) == 0
        loaded = gcnn.load(d).models[0].model
        pre = A.load(ae_dir)[1].encoder
        same = all(torch.equal(a, b) for a, b in zip(loaded.input_stage.state_dict().values(), pre.state_dict().values()))
        assert same == (mode == "--freeze")
        np.testing.assert_allclose(loaded.padding.value.numpy(), (-pre[0].mean / pre[0].std).numpy())
    out = tmp_path / "explain"
    assert main(["explain", "--model", str(tmp_path / "freeze"), "--split", "test", "--cache-dir", str(root / "cache"),
                 "--out", str(out), "--heatmaps", "1", "--faithfulness", "0", "--bootstrap", "20", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_molecules"] > 0 and "padding" in summary["absorbed_by"]
    # the modules' absorbed parts add up to the absorbed total
    assert sum(v["mean"] for v in summary["absorbed_by"].values()) == pytest.approx(summary["absorbed_mean"], abs=1e-5)
    assert "empty atom and pair slots" in (out / "report.html").read_text()
    cu = summary["code_units"]
    assert [u["unit"] for u in cu["units"]] == [f"code {k}" for k in range(6)] and cu["max_conservation_error"] < 1e-6
    assert "Code units of the input stage" in (out / "report.html").read_text()
    assert main(["dae", "relevance", str(tmp_path / "freeze"), "--n-test", "20", *args]) == 0
    rel = json.loads((tmp_path / "freeze" / "code_relevance.json").read_text())
    assert [u["unit"] for u in rel["units"]] == [f"code {k}" for k in range(6)] and rel["max_conservation_error"] < 1e-6
    assert abs(sum(u["share"] for u in rel["units"]) - 1) < 1e-9
    assert all(u["share_ci"][0] <= u["share"] <= u["share_ci"][1] for u in rel["units"])
    capsys.readouterr()
    assert main(["train", "--target", "alpha_bohr3", "--input-stage", str(ae_dir), "--architecture", "weave",
                 "--epochs", "1", "--out", str(tmp_path / "x"), *args]) == 2
    assert "'flat' autoencoder codes whole molecules" in capsys.readouterr().err
    assert main(["train", "--target", "alpha_bohr3", "--architecture", "flat", "--layers", "3",
                 "--epochs", "1", "--out", str(tmp_path / "y"), *args]) == 2
    assert "weave network setting" in capsys.readouterr().err
