"""`qmlrp stability` on a tiny cross-validation directory: 2 fold models trained for one epoch
on 100 QM9 molecules."""
import json
import shutil
import struct

import numpy as np
import pytest

import gcnn
from molgraph import GROUP_NAMES, qm9
from qmlrp import stability as S
from qmlrp.cli import main

SMALL = dict(atom_hidden=8, pair_hidden=8, readout_hidden=8, head_hidden=(8,))


@pytest.fixture(scope="module")
def cv(tmp_path_factory):
    """(cache root, CV directory with fold_0 and fold_1, the 100 sample ids, all featurized ids)."""
    cache = tmp_path_factory.mktemp("cache")
    ds = qm9.load(ids=list(range(1, 141)), cache_root=cache, workers=1, progress=False, log=lambda m: None)
    sample = ds.ids[:100]
    out = tmp_path_factory.mktemp("cv") / "cv_alpha"
    cfg = gcnn.TrainConfig(targets=("alpha_bohr3",), epochs=1, batch_size=16, seed=1)
    gcnn.cross_validate(ds.subset(sample), out, cfg, k=2, model_config=gcnn.WeaveConfig(**SMALL),
                        log=lambda m: None, progress=False)
    return cache, out, np.asarray(sample), np.asarray(ds.ids)


@pytest.fixture()
def use_cache(cv, monkeypatch):
    monkeypatch.setenv("QMLRP_CACHE", str(cv[0]))
    return cv


def test_selection_outside_excludes_every_members_split_and_test_is_their_union(cv):
    _, out, sample, all_ids = cv
    splits_ = [S.member_split(d) for d in S.member_dirs(out)]
    assert [d.name for d in S.member_dirs(out)] == ["fold_0", "fold_1"]
    ids, desc = S.select_molecules(splits_, "outside", None, None, pool=all_ids)
    assert set(ids) == set(all_ids) - set(sample) and "no member's split" in desc
    ids, _ = S.select_molecules(splits_, "test", None, None)
    assert set(ids) == set(sample)
    seen = S.seen_counts(ids, splits_)
    assert (seen["test"] == 1).all() and (seen["train"] + seen["val"] == 1).all()  # 2 folds: seen by the other
    ids, desc = S.select_molecules(splits_, "outside", None, 7, seed=3, pool=all_ids)
    assert len(ids) == 7 and "seeded sample (seed 3) of 7" in desc
    with pytest.raises(ValueError, match="unknown --split 'train'"):
        S.select_molecules(splits_, "train", None, None)
    with pytest.raises(ValueError, match="records no split.*--ids"):
        S.select_molecules([None], "outside", None, None)


def test_cv_directory_gives_spreads_rank_agreement_and_rule_changes(use_cache, tmp_path):
    _, out, sample, all_ids = use_cache
    res, arrays = S.study(out, rules=("epsilon", "zero", "alpha2-beta1"), split="outside", max_molecules=25,
                          pool=all_ids, progress=False, log=lambda m: None)
    assert res["members"] == ["fold_0", "fold_1"] and res["target"] == "alpha_bohr3"
    mol = res["molecules"]
    assert mol["n_explained"] == 25 and mol["trained_on_by_members"] == {"0": 25}
    assert not set(arrays["ids"]) & set(sample)
    for rule in res["rules"]:
        fs = res["fold_spread"][rule]
        assert set(fs["groups"]) == set(GROUP_NAMES) | {"geometric", "electronic", "neither"}
        for g in fs["groups"].values():
            assert g["molecule_std_mean"] >= 0 and g["molecule_range_max"] >= g["molecule_range_mean"] >= 0
            assert g["dataset_min"] <= g["mean_share"] + 1e-12 and g["mean_share"] <= g["dataset_max"] + 1e-12
            assert len(g["dataset_share_by_member"]) == 2
        assert res["conservation"][rule]["max_abs_error"] < 1e-3, (rule, res["conservation"])
        ra = res["rank_agreement"][rule]
        assert ra["n_member_pairs"] == 1 and -1 <= ra["dataset_spearman"]["mean"] <= 1
        assert 0 <= ra["top_group_agreement"] <= 1
    # two independently trained members do not give identical pictures
    assert res["fold_spread"]["epsilon"]["overall"]["molecule_std_mean"] > 1e-4
    # epsilon (1e-6) and LRP-0 agree on a ReLU network; alpha2-beta1 changes the picture
    pairs = res["rule_comparison"]["pairs"]
    assert pairs["epsilon vs zero"]["dataset_total_variation"] < 1e-3
    assert pairs["epsilon vs alpha2-beta1"]["dataset_total_variation"] > 10 * pairs["epsilon vs zero"]["dataset_total_variation"]
    assert pairs["epsilon vs zero"]["dataset_spearman"] > 0.99
    # shares per molecule sum to one
    np.testing.assert_allclose(arrays["shares"].sum(-1), 1.0, atol=1e-9)


def test_identical_models_give_zero_spread(use_cache, tmp_path):
    _, out, _, all_ids = use_cache
    twin = tmp_path / "twin"
    shutil.copytree(out, twin)
    for f in ("weights.pt", "config.json", "checksums.json", "domain.npz"):
        shutil.copy(out / "fold_0" / f, twin / "fold_1" / f)
    res, _ = S.study(twin, rules=("epsilon", "weave"), split="outside", max_molecules=15, pool=all_ids,
                     progress=False, log=lambda m: None)
    for rule in ("epsilon", "weave"):
        o = res["fold_spread"][rule]["overall"]
        assert o["molecule_std_max"] == 0 and o["dataset_range_max"] == 0
        ra = res["rank_agreement"][rule]
        assert ra["top_group_agreement"] == 1.0 and ra["dataset_spearman"]["min"] == pytest.approx(1.0)


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_cli_writes_the_files_and_a_single_model_has_no_fold_spread(use_cache, tmp_path, capsys):
    _, out, sample, all_ids = use_cache
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(str(i) for i in list(sample[:6]) + [58]))  # 58: uncharacterized, not in QM9's caches
    dest = tmp_path / "st"
    assert main(["stability", "--models", str(out), "--rules", "epsilon,weave", "--ids", str(ids),
                 "--max-molecules", "50", "--out", str(dest)]) == 0
    printed = capsys.readouterr()
    assert "## (a) Across the 2 fold models (epsilon)" in printed.out and "FAILED qm9:58" in printed.err
    for f in ("stability.json", "stability.md", "stability.png", "stability.svg", "stability_molecules.csv"):
        assert (dest / f).stat().st_size > 0, f
    res = json.loads((dest / "stability.json").read_text())
    assert {"models", "members", "target", "rules", "molecules", "fold_spread", "rank_agreement",
            "rule_comparison", "conservation"} <= set(res)
    assert res["molecules"]["n_explained"] == 6 and res["molecules"]["failures"][0]["molecule"] == "qm9:58"
    # each sample molecule is one fold's test molecule and the other's training or validation molecule
    assert res["molecules"]["tested_on_by_members"] == {"1": 6}
    assert sum(res["molecules"]["trained_on_by_members"].values()) == 6
    assert set(res["molecules"]["trained_on_by_members"]) <= {"0", "1"}
    w, h = _png_size(dest / "stability.png")
    assert w > 500 and h > 500
    lines = (dest / "stability_molecules.csv").read_text().splitlines()
    assert lines[0].startswith("rule,id,group,share_mean,share_std") and len(lines) == 1 + 2 * 6 * 15
    md = (dest / "stability.md").read_text()
    assert "Command: `qmlrp stability --models" in md and "## (b) Across LRP rules" in md
    # one model directory: rules compared, no fold spread
    single = tmp_path / "single"
    assert main(["stability", "--models", str(out / "fold_0"), "--rules", "epsilon,alpha2-beta1", "--split", "test",
                 "--max-molecules", "5", "--out", str(single)]) == 0
    res = json.loads((single / "stability.json").read_text())
    assert res["fold_spread"] is None and res["rule_comparison"] is not None and len(res["members"]) == 1
    assert res["molecules"]["tested_on_by_members"] == {"1": 5}


def test_bad_input_gives_clear_errors(use_cache, tmp_path, capsys):
    _, out, _, _ = use_cache
    assert main(["stability", "--models", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert main(["stability", "--models", str(out), "--rules", "epsilon,magic", "--out", str(tmp_path / "o")]) == 2
    assert "unknown rule(s) magic; valid: epsilon" in capsys.readouterr().err


def test_spread_and_rank_statistics_on_hand_made_shares():
    a = np.zeros(12)
    a[[0, 3, 11]] = [0.5, 0.3, 0.2]
    b = np.zeros(12)
    b[[0, 3, 11]] = [0.2, 0.3, 0.5]
    # absent groups are not counted as agreeing ties: the three active groups are in reverse order
    sp, kt = S._rank_corr(a, b)
    assert sp == pytest.approx(-1.0) and kt == pytest.approx(-1.0)
    s = np.stack([a[None], b[None]])  # (F=2, M=1, 12)
    fs = S.fold_spread(s)
    g = fs["groups"]
    assert g["atom_type"]["molecule_std_mean"] == pytest.approx(0.15)  # |0.5 - 0.2| / 2
    assert g["atom_type"]["molecule_range_max"] == pytest.approx(0.3)
    assert g["partial_charge"]["molecule_std_max"] == 0 and g["chirality"]["mean_share"] == 0
    assert g["geometric"]["dataset_share_by_member"] == pytest.approx([0.2, 0.5])
    assert g["electronic"]["dataset_share_by_member"] == pytest.approx([0.8, 0.5])
    ra = S.rank_agreement(s)
    assert ra["top_group_agreement"] == 0.0 and ra["molecule_spearman"]["mean"] == pytest.approx(-1.0)
    rc = S.rule_comparison(np.stack([s, s[::-1]]), ["r1", "r2"])  # (R=2, F=2, M=1, 12): same members swapped
    assert rc["pairs"]["r1 vs r2"]["dataset_total_variation"] == pytest.approx(0.0)
    assert rc["pairs"]["r1 vs r2"]["molecule_total_variation_mean"] == pytest.approx(0.3)
