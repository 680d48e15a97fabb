"""`qmlrp explain` end to end on a tiny trained weave network: files, sums, pictures, report, failures."""
import csv
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

import gcnn
import lrp
from molgraph import GROUP_NAMES, collate, qm9, splits, write_xyz
from qmlrp import explain as ex
from qmlrp.explain.heatmaps import select_representative
from qmlrp.cli import main

SMALL = dict(atom_hidden=8, pair_hidden=8, readout_hidden=8, head_hidden=(8,))
DATA = Path(__file__).parent.parent / "data"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A weave network trained for 2 epochs on 110 of the first 160 QM9 molecules, with the
    split.json `qmlrp train` writes, and its explain directory (test molecules)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("explain")
    cache = root / "cache"
    ds = qm9.load(ids=range(1, 161), cache_root=cache, workers=1, progress=False, log=lambda m: None)
    sp = splits.train_val_test(ds.ids, val=0.15, test=0.25, seed=0, source="qm9pack",
                               source_checksum=ds.manifest["source_checksum"])
    model = root / "model"
    cfg = gcnn.TrainConfig(targets=("alpha_bohr3",), epochs=2, batch_size=16, seed=0)
    gcnn.Trainer(model, gcnn.WeaveConfig(**SMALL), cfg, log=lambda m: None, progress=False).fit(
        ds.subset(sp.train), ds.subset(sp.val), split_meta={"digest": sp.digest, **sp.meta})
    sp.save(model / "split.json")
    out = root / "out"
    rc = main(["explain", "--model", str(model), "--split", "test", "--rule", "epsilon", "--out", str(out),
               "--cache-dir", str(cache), "--heatmaps", "5", "--faithfulness", "10", "--random-orders", "2",
               "--bootstrap", "200", "--batch-size", "16", "--no-progress"])
    assert rc == 0
    return {"ds": ds, "split": sp, "model": model, "out": out, "cache": cache, "root": root}


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_files_written(trained):
    out = trained["out"]
    for name in ("relevance.npz", "groups.csv", "summary.json", "group_relevance.png", "group_relevance.svg",
                 "faithfulness.json", "faithfulness.png", "report.html"):
        assert (out / name).stat().st_size > 0, name
    rows = _csv(out / "groups.csv")
    assert rows[0] == ["id", "n_atoms", "prediction", "target", "explained", "absorbed", *GROUP_NAMES]
    assert len(rows) - 1 == len(trained["split"].test)
    assert {r[0] for r in rows[1:]} == {f"qm9:{i}" for i in trained["split"].test}
    s = json.loads((out / "summary.json").read_text())
    assert s["n_molecules"] == len(trained["split"].test) and s["failures"] == []
    assert s["target"] == "alpha_bohr3" and s["unit"] == "bohr^3" and s["rule"] == "epsilon"
    assert s["accuracy"]["n"] == len(trained["split"].test) and s["accuracy"]["mae"] > 0
    assert list(s["groups"]) == list(GROUP_NAMES)
    for g in s["groups"].values():
        for kind in ("raw", "normalized"):
            for k in ("mean", "mean_abs", "share", "signed_share"):
                lo, hi = g[kind][f"{k}_ci"]
                assert lo <= g[kind][k] + 1e-12 and g[kind][k] <= hi + 1e-12
    assert "largest absolute value" in s["normalization"]["definition"]
    assert s["amplification"]["quantiles"]["100"] >= s["amplification"]["quantiles"]["50"] > 0
    shares = np.array([g["raw"]["molecule_share"] for g in s["groups"].values()])
    assert np.isclose(shares.sum(), 1.0)
    assert len(list((out / "heatmaps").glob("*.png"))) == 5 == len(s["heatmaps"])


def test_csv_matches_labels_and_predictions(trained):
    ds, out = trained["ds"], trained["out"]
    rows = _csv(out / "groups.csv")[1:]
    ids = [int(r[0].removeprefix("qm9:")) for r in rows]
    target = np.array([float(r[3]) for r in rows])
    assert np.allclose(target, ds.subset(ids).target("alpha_bohr3"))
    pred = gcnn.load(trained["model"]).predict_dataset(ds.subset(ids))[:, 0]
    assert np.allclose([float(r[2]) for r in rows], pred, atol=1e-4)
    cfg = json.loads((trained["model"] / "config.json").read_text())
    assert np.allclose([float(r[4]) for r in rows], pred - cfg["mean"][0], atol=1e-4)  # explained = prediction - mean


def test_groups_sum_to_explained_minus_absorbed(trained):
    rows = _csv(trained["out"] / "groups.csv")[1:]
    for r in rows:
        explained, absorbed = float(r[4]), float(r[5])
        groups = np.array([float(x) for x in r[6:]])
        scale = np.abs(groups).sum() + abs(explained) + abs(absorbed)
        assert abs(groups.sum() - (explained - absorbed)) <= 1e-5 * scale + 1e-6, r[0]


def test_relevance_file_per_atom_sums_and_accessor(trained):
    rs = ex.load_relevance(trained["out"])
    assert len(rs) == len(trained["split"].test)
    assert rs.atom_relevance.dtype == np.float32 and rs.pair_relevance.dtype == np.float32
    assert rs.atom_relevance.shape == (rs.offsets[-1], 21) and rs.pair_relevance.shape == (rs.pair_offsets[-1], 13)
    assert np.array_equal(np.diff(rs.pair_offsets), rs.n_atoms ** 2)
    for m in range(len(rs)):
        mr = rs.molecule(m)
        assert mr.atom.shape == (mr.n_atoms, 21) and mr.pair.shape == (mr.n_atoms, mr.n_atoms, 13)
        assert np.isclose(mr.per_atom.sum(dtype=np.float64), mr.total, rtol=1e-4, atol=1e-5)
        assert np.isclose(mr.groups.sum(), mr.total, rtol=1e-4, atol=1e-5)
        assert np.all(mr.pair[np.arange(mr.n_atoms), np.arange(mr.n_atoms)] == 0)
    assert rs.molecule(str(rs.ids[3])).id == str(rs.ids[3])
    with pytest.raises(KeyError, match="qm9:999999"):
        rs.molecule("qm9:999999")


def test_stored_relevance_is_the_molecule_explained_alone(trained):
    """The ragged arrays put each molecule's relevance where its id says (size-sorted batches
    are undone): explaining one molecule on its own gives the stored numbers."""
    rs = ex.load_relevance(trained["out"])
    lm = ex.load_model(trained["model"])
    for key in (0, len(rs) // 2, len(rs) - 1):
        mr = rs.molecule(key)
        g = trained["ds"].by_id(int(mr.id.removeprefix("qm9:")))
        b = collate([g.with_targets({})])
        e = lrp.explain(lm.net, (b.atom_features, b.pair_features, b.atom_mask), "epsilon", track_absorbed=True)
        assert np.allclose(mr.atom, e.relevance[0][0].numpy() * lm.std, rtol=1e-4, atol=1e-5)
        assert np.allclose(mr.pair, e.relevance[1][0].numpy() * lm.std, rtol=1e-4, atol=1e-5)
        assert np.isclose(mr.absorbed, float(e.absorbed[0]) * lm.std, rtol=1e-4, atol=1e-5)
        assert mr.elements == g.elements


def test_heatmaps_are_valid_png_and_svg_with_every_atom_coloured(trained):
    out = trained["out"]
    s = json.loads((out / "summary.json").read_text())
    rs = ex.load_relevance(out)
    for h in s["heatmaps"]:
        assert (out / h["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        root = ET.parse(out / h["svg"]).getroot()
        assert root.tag.endswith("svg")
        atoms = {int(m.group(1)) for e in root.iter() if e.tag.endswith("ellipse")
                 for m in [re.match(r"atom-(\d+)$", e.get("class", ""))] if m}
        assert atoms == set(range(rs.molecule(h["id"]).n_atoms)), h["id"]
    whys = [h["why"] for h in s["heatmaps"]]
    assert whys[0] == "extreme: largest error" and any(w.startswith("typical") for w in whys)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href"):
                self.links.append(v)


def test_report_links_resolve(trained):
    out = trained["out"]
    p = _Links()
    p.feed((out / "report.html").read_text())
    assert len(p.links) >= 10
    for link in p.links:
        assert "://" not in link and not link.startswith("/"), link
        assert (out / link).is_file(), link
    text = (out / "report.html").read_text()
    assert "alpha_bohr3" in text and "epsilon" in text


def test_bad_file_among_good_ones_is_listed_and_the_rest_explained(trained, tmp_path):
    ds = trained["ds"]
    good1, good2 = tmp_path / "a.xyz", tmp_path / "b.xyz"
    write_xyz([ds.molecule(10), ds.molecule(20)], good1)
    write_xyz([ds.molecule(30)], good2)
    bad = DATA / "malformed" / "lonely_atom.xyz"
    out = tmp_path / "out"
    rc = main(["explain", "--model", str(trained["model"]), str(good1), str(bad), str(good2), "--out", str(out),
               "--heatmaps", "2", "--faithfulness", "2", "--random-orders", "1", "--bootstrap", "50", "--no-progress"])
    assert rc == 1  # some input failed
    s = json.loads((out / "summary.json").read_text())
    assert s["n_molecules"] == 3 and s["accuracy"] is None
    assert len(s["failures"]) == 1 and s["failures"][0]["source"].endswith("lonely_atom.xyz")
    assert "no neighbour" in s["failures"][0]["error"]
    rows = _csv(out / "groups.csv")[1:]
    assert [r[0] for r in rows] == ["a.xyz:0", "a.xyz:1", "b.xyz:0"]
    assert all(r[3] == "" for r in rows)  # no label in an XYZ file
    assert "lonely_atom.xyz" in (out / "report.html").read_text()
    p = _Links()
    p.feed((out / "report.html").read_text())
    assert all((out / link).is_file() for link in p.links)


def test_unknown_rule_and_conflicting_selection_are_refused(trained, tmp_path, capsys):
    rc = main(["explain", "--model", str(trained["model"]), "--rule", "nope", "--out", str(tmp_path / "o")])
    assert rc == 2 and "valid: " in capsys.readouterr().err
    ids = tmp_path / "ids.txt"
    ids.write_text("1 2")
    rc = main(["explain", "--model", str(trained["model"]), "--split", "test", "--ids", str(ids), "--out", str(tmp_path / "o")])
    assert rc == 2 and "one way" in capsys.readouterr().err


def test_ids_file_and_max_molecules(trained, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("qm9:5, 7\n9 11 13")
    out = tmp_path / "o"
    rc = main(["explain", "--model", str(trained["model"]), "--ids", str(ids), "--max-molecules", "3", "--out", str(out),
               "--cache-dir", str(trained["cache"]), "--heatmaps", "0", "--faithfulness", "0", "--bootstrap", "20",
               "--no-progress"])
    assert rc == 0
    got = [r[0] for r in _csv(out / "groups.csv")[1:]]
    assert len(got) == 3 and set(got) <= {"qm9:5", "qm9:7", "qm9:9", "qm9:11", "qm9:13"}
    assert json.loads((out / "summary.json").read_text())["faithfulness"] is None


def test_cv_directory_uses_the_first_fold_and_says_so(trained, tmp_path):
    cv = tmp_path / "cv"
    (cv / "fold_0").mkdir(parents=True)
    (cv / "fold_1").mkdir()
    for f in ("config.json", "weights.pt"):
        for d in ("fold_0", "fold_1"):
            (cv / d / f).write_bytes((trained["model"] / f).read_bytes())
    d, note = ex.resolve_model_dir(cv)
    assert d == cv / "fold_0" and "first" in note and "2 fold models" in note
    assert ex.resolve_model_dir(cv, 1)[0] == cv / "fold_1"
    with pytest.raises(FileNotFoundError, match="fold_7"):
        ex.resolve_model_dir(cv, 7)


def test_group_statistics_definitions():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(300, 12)) * np.arange(1, 13)
    s = ex.group_statistics(g, np.full(300, 10), resamples=300, seed=4)
    raw = np.array([s["groups"][n]["raw"]["share"] for n in GROUP_NAMES])
    assert np.isclose(raw.sum(), 1.0)
    assert np.allclose(raw, np.abs(g).sum(0) / np.abs(g).sum())
    assert np.allclose([s["groups"][n]["raw"]["mean"] for n in GROUP_NAMES], g.mean(0))
    assert np.allclose([s["groups"][n]["raw"]["mean_per_atom"] for n in GROUP_NAMES], g.mean(0) / 10)
    z = (g - g.mean(0)) / s["normalization"]["scale"]
    assert np.isclose(np.abs(z).max(), 1.0)
    assert np.allclose([s["groups"][n]["normalized"]["mean"] for n in GROUP_NAMES], 0, atol=1e-12)
    assert np.allclose([s["groups"][n]["normalized"]["mean_abs"] for n in GROUP_NAMES], np.abs(z).mean(0))
    again = ex.group_statistics(g, None, resamples=300, seed=4)
    assert again["groups"]["bond_type"]["raw"]["share_ci"] == s["groups"]["bond_type"]["raw"]["share_ci"]
    lo, hi = s["groups"]["spatial_distance"]["raw"]["mean_ci"]
    assert lo < g[:, 11].mean() < hi and hi - lo < 4 * 12 * 1.96 / np.sqrt(300)


def test_hydrogen_share_literal_values():
    """Molecule 1 (C, H, H): per-atom |R| 1, 1, 2 -> atoms share 3/4 on 2/3 of the atoms. Own
    relevance 1, 0, 1 and pair relevance 1 on C-H1 and H1-C (the rest 0): with_pairs share
    (0 + 1 + 2) / (1 + 0 + 1 + 2) = 3/4 against (2 atoms + 6 ordered pairs with an H) / (3 + 6) = 8/9.
    Molecule 2 has no hydrogen, molecule 3 no relevance: both left out."""
    n = np.array([3, 1, 2])
    off, poff = ex.offsets_of(n)
    atom = np.zeros((off[-1], 21))
    atom[0, 0], atom[2, 3], atom[3, 0] = 1.0, 1.0, 5.0
    pair = np.zeros((poff[-1], 13))
    pair[1, 2], pair[3, 0] = 1.0, 1.0  # molecule 1: pairs (0, 1) and (1, 0)
    rs = ex.RelevanceSet(np.array(["a", "b", "c"]), n, off, poff, atom, pair, np.array([1.0, -1.0, 2.0, 5.0, 0.0, 0.0]),
                         np.zeros((3, 12)), np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3),
                         np.array(["C", "H", "H", "C", "C", "H"]))
    h = ex.hydrogen_share(rs, n_boot=50)
    assert h["n"] == 1
    assert h["atoms"]["share"] == pytest.approx(0.75) and h["atoms"]["fraction"] == pytest.approx(2 / 3)
    assert h["atoms"]["excess"] == pytest.approx(0.75 - 2 / 3) and h["atoms"]["share_ci95"] == pytest.approx([0.75, 0.75])
    assert h["with_pairs"]["share"] == pytest.approx(0.75) and h["with_pairs"]["fraction"] == pytest.approx(8 / 9)


def test_representative_selection_without_labels():
    n = np.array([5, 9, 9, 12, 20, 9, 7])
    off, poff = ex.offsets_of(n)
    rs = ex.RelevanceSet(np.array([f"m{i}" for i in range(7)]), n, off, poff, np.zeros((off[-1], 21), np.float32),
                         np.zeros((poff[-1], 13), np.float32), np.arange(off[-1], dtype=np.float32) % 3,
                         np.zeros((7, 12)), np.array([1.0, 5, 2, 3, 9, 4, 0]), np.full(7, np.nan), np.zeros(7),
                         np.zeros(7), np.array(["C"] * off[-1]))
    chosen = select_representative(rs, 5)
    idx = [i for i, _ in chosen]
    assert len(set(idx)) == 5
    # molecule 4 has both the largest prediction and the largest total |relevance|: one picture, both reasons
    assert chosen[0] == (4, "extreme: largest prediction; largest total |relevance|")
    assert chosen[1] == (6, "extreme: smallest prediction")
    assert all("error" not in why for _, why in chosen)
    assert select_representative(rs, 0) == []
