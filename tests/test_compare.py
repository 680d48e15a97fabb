"""`qmlrp compare` on hand-made explain directories whose answer is known, and on a real
`qmlrp explain` run of a tiny trained model (when that command is available)."""
import csv
import json
import struct

import numpy as np
import pytest

from molgraph import GROUP_NAMES
from qmlrp import compare as C
from qmlrp.cli import main

GI = {g: k for k, g in enumerate(GROUP_NAMES)}


def write_explain_dir(path, ids, relevance, target="alpha_bohr3", unit="bohr^3", rule="epsilon", summary=True):
    """A groups.csv in the format of `qmlrp explain` (relevance: (n, 12) in GROUP_NAMES order)."""
    path.mkdir(parents=True, exist_ok=True)
    relevance = np.asarray(relevance, dtype=float)
    with open(path / "groups.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(list(C.META_COLUMNS) + list(GROUP_NAMES))
        for i, r in zip(ids, relevance):
            explained = float(r.sum()) + 0.1
            w.writerow([f"qm9:{int(i)}", 18, explained, explained + 0.2, explained, 0.1, *(repr(float(v)) for v in r)])
    if summary:
        (path / "summary.json").write_text(json.dumps({"model": "runs/x", "target": target, "unit": unit, "rule": rule}))
    return path


def base_relevance(n, seed):
    """Positive and negative group relevances with every group present, as in a real run."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 1, (n, 12)) * rng.uniform(0.5, 2.0, 12)
    r[:, GI["chirality"]] *= rng.random(n) < 0.1  # mostly absent, like real chirality
    return r


def boosted(r, groups, factor):
    r = r.copy()
    for g in groups:
        r[:, GI[g]] *= factor
    return r


@pytest.fixture()
def runs(tmp_path):
    """alpha: electronic groups boosted; zpve: geometric groups boosted; 300 common molecules."""
    n = 300
    ids = np.arange(1, n + 1)
    alpha = boosted(base_relevance(n, 1), C.ELECTRONIC, 4.0)
    zpve = boosted(base_relevance(n, 2), C.GEOMETRIC, 4.0)
    a = write_explain_dir(tmp_path / "alpha" / "explain", ids, alpha)
    z = write_explain_dir(tmp_path / "zpve" / "explain", ids, zpve * 1e-3, target="zpve_ev", unit="eV")
    return a, z


def by_claim(result):
    return {c["claim"]: c for c in result["claims"]}


def test_a_clearly_larger_group_gives_a_small_p_and_the_right_verdict(runs, tmp_path):
    a, z = runs
    res = C.compare(a, z, n_boot=300)
    rows = {r["group"]: r for r in res["groups"]}
    assert res["n_compared"] == 300 and res["a"]["role"] == "alpha" and res["b"]["role"] == "zpve"
    # electronic groups larger in a (alpha), geometric ones in b (zpve), by construction
    for g in C.ELECTRONIC:
        assert rows[g]["share_a"] > rows[g]["share_b"] and rows[g]["p_holm"] < 1e-6 and rows[g]["significant"]
        assert rows[g]["rank_biserial"] > 0.3
    for g in C.GEOMETRIC:
        assert rows[g]["share_b"] > rows[g]["share_a"] and rows[g]["p_holm"] < 1e-6 and rows[g]["mean_diff"] < 0
    geo = rows["geometric"]
    assert geo["share_b"] > 0.55 > 0.3 > geo["share_a"]
    assert geo["share_b_lo"] <= geo["share_b"] <= geo["share_b_hi"]
    assert geo["mean_diff_lo"] <= geo["mean_diff"] <= geo["mean_diff_hi"] < 0
    cl = by_claim(res)
    assert cl["ZPVE relies more on the geometric groups than alpha does"]["verdict"] == "holds"
    assert cl["alpha relies more on the electronic groups than ZPVE does"]["verdict"] == "holds"
    assert cl["ZPVE relies mostly (> 50 %) on the geometric groups"]["verdict"] == "holds"
    assert cl["alpha relies mostly (> 50 %) on the electronic groups"]["verdict"] == "holds"
    assert cl["alpha relies more on partial charge than ZPVE does"]["verdict"] == "holds"
    # shares per molecule sum to one over the 12 groups and over the 3 sets
    sets = [rows[k]["share_a"] for k in C.GROUP_SETS]
    assert abs(sum(sets) - 1) < 1e-9 and abs(sum(rows[g]["share_a"] for g in GROUP_NAMES) - 1) < 1e-9


def test_the_order_of_the_directories_does_not_change_the_verdict(runs):
    a, z = runs
    fwd, rev = C.compare(a, z, n_boot=200), C.compare(z, a, n_boot=200)
    assert [c["verdict"] for c in fwd["claims"]] == [c["verdict"] for c in rev["claims"]]
    rf, rr = fwd["groups"][3], rev["groups"][3]
    assert rf["mean_diff"] == pytest.approx(-rr["mean_diff"]) and rf["p"] == pytest.approx(rr["p"])


def test_a_hypothesis_that_is_false_is_called_false(tmp_path):
    """Roles swapped in the data: alpha geometric, ZPVE electronic -> the opposite is significant."""
    n = 200
    ids = np.arange(10, 10 + n)
    a = write_explain_dir(tmp_path / "a", ids, boosted(base_relevance(n, 3), C.GEOMETRIC, 5.0))
    z = write_explain_dir(tmp_path / "z", ids, boosted(base_relevance(n, 4), C.ELECTRONIC, 5.0), target="zpve_ev")
    cl = by_claim(C.compare(a, z, n_boot=200))
    opposite = "does not hold: the opposite is significant"
    assert cl["ZPVE relies more on the geometric groups than alpha does"]["verdict"] == opposite
    assert cl["alpha relies mostly (> 50 %) on the electronic groups"]["verdict"] == "does not hold"
    assert not cl["alpha relies more on its electronic than on its geometric groups"]["holds"]


def test_identical_sets_give_no_significant_difference(tmp_path):
    n = 150
    r = base_relevance(n, 5)
    ids = np.arange(1, n + 1)
    a = write_explain_dir(tmp_path / "alpha", ids, r)
    z = write_explain_dir(tmp_path / "zpve", ids, r * 2.5, target="zpve_ev", unit="eV")  # other units, same shares
    res = C.compare(a, z, n_boot=200)
    for row in res["groups"]:
        assert row["p"] == 1.0 and not row["significant"] and row["mean_diff"] == pytest.approx(0, abs=1e-12)
        assert row["share_a"] == pytest.approx(row["share_b"])
    cl = by_claim(res)
    assert cl["ZPVE relies more on the geometric groups than alpha does"]["verdict"] == "does not hold: no significant difference"
    assert cl["alpha relies more on partial charge than ZPVE does"]["verdict"] == "does not hold: no significant difference"


def test_same_distribution_gives_no_significant_difference_mostly(tmp_path):
    """Independent noise from one distribution: the family-wise error stays near 5 % (Holm)."""
    n = 120
    ids = np.arange(1, n + 1)
    hits = 0
    for seed in range(20):
        a = write_explain_dir(tmp_path / f"alpha{seed}", ids, base_relevance(n, 100 + seed))
        rng = np.random.default_rng(500 + seed)
        z = write_explain_dir(tmp_path / f"zpve{seed}", ids, base_relevance(n, 100 + seed)[rng.permutation(n)],
                              target="zpve_ev")
        hits += any(r["significant"] for r in C.compare(a, z, n_boot=50)["groups"] if r["kind"] == "group")
    assert hits <= 4


def test_partial_overlap_is_reported_and_empty_overlap_is_a_clear_error(tmp_path, capsys):
    r = base_relevance(60, 6)
    a = write_explain_dir(tmp_path / "alpha", np.arange(1, 51), r[:50])
    z = write_explain_dir(tmp_path / "zpve", np.arange(41, 101), boosted(r, C.GEOMETRIC, 3)[:60], target="zpve_ev")
    res = C.compare(a, z, n_boot=100, warn=lambda m: None)
    assert res["n_common"] == 10 and res["a"]["n_only_here"] == 40 and res["b"]["n_only_here"] == 50
    assert any("40 molecule(s) only in" in w for w in res["warnings"])
    far = write_explain_dir(tmp_path / "far", np.arange(1000, 1010), r[:10], target="zpve_ev")
    with pytest.raises(ValueError, match="no molecule is in both") as exc:
        C.compare(a, far)
    assert str(a) in str(exc.value) and str(far) in str(exc.value)
    assert main(["compare", str(a), str(far), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no molecule is in both" in err and str(far) in err


def test_differing_rules_warn_and_bad_rows_are_skipped_and_named(tmp_path):
    n = 40
    ids = np.arange(1, n + 1)
    r = base_relevance(n, 7)
    a = write_explain_dir(tmp_path / "alpha", ids, r, rule="epsilon")
    z = write_explain_dir(tmp_path / "zpve", ids, r, target="zpve_ev", rule="alpha2-beta1")
    lines = (a / "groups.csv").read_text().splitlines()
    bad = lines[3].split(",")
    bad[8] = "nan"
    lines[3] = ",".join(bad)
    lines.append(lines[5])  # a repeated id
    lines.append("x12," + ",".join(["1"] * 16 + ["oops"]))
    lines.append("500,18,1.0,,1.0,0.1," + ",".join(["0.5"] * 12))  # no label, bare integer id: kept
    (a / "groups.csv").write_text("\n".join(lines) + "\n")
    seen = []
    res = C.compare(a, z, n_boot=100, warn=seen.append)
    assert any("different LRP rules" in w for w in seen)
    assert any("line 4 (id qm9:3): non-finite relevance in" in w for w in seen)
    assert any("id qm9:5 repeated" in w for w in seen)
    assert any("(id x12): could not convert string to float: 'oops'" in w for w in seen)
    assert res["a"]["n_molecules"] == n and res["n_compared"] == n - 1 and res["a"]["n_only_here"] == 1
    run = C.read_explain_dir(a)
    assert "qm9:500" in run.ids and np.isnan(run.meta["target"][list(run.ids).index("qm9:500")])


def test_wrong_header_and_missing_dir_name_the_file(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "groups.csv").write_text("id,n_atoms,prediction,target,explained,absorbed,atom_type\n1,2,3,4,5,6,7\n")
    with pytest.raises(ValueError, match=r"bad/groups.csv: header must be .*missing chirality"):
        C.read_explain_dir(d)
    with pytest.raises(FileNotFoundError, match="nowhere: no such directory"):
        C.read_explain_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="groups.csv: no such file"):
        C.read_explain_dir(tmp_path / "empty")


def test_holm_and_median_ci_against_hand_values():
    np.testing.assert_allclose(C.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(C.holm([0.5, 0.9]), [1.0, 1.0])
    np.testing.assert_allclose(C.holm([0.02, 0.9]), [0.04, 0.9])
    # n = 20: P(Bin(20, 1/2) <= 5) = 0.0207 <= 0.025 < P(<= 6), so the CI is [d_(6), d_(15)]
    d = np.arange(1, 21, dtype=float)
    assert C.median_ci(d) == (6.0, 15.0)
    assert C.rank_biserial(np.array([1.0, 2.0, -0.5])) == pytest.approx((5 - 1) / 6)
    assert C.rank_biserial(np.zeros(5)) == 0.0


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_cli_writes_every_file_and_prints_the_verdict(runs, tmp_path, capsys):
    a, z = runs
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(z), "--out", str(out), "--bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    assert "ZPVE relies more on the geometric groups than alpha does: holds" in printed
    for f in ("compare.json", "compare.csv", "compare.png", "compare.svg", "verdict.md", "compare.html"):
        assert (out / f).stat().st_size > 0, f
    res = json.loads((out / "compare.json").read_text())
    assert {"a", "b", "groups", "claims", "n_compared", "group_sets", "warnings"} <= set(res)
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert [r["group"] for r in rows] == list(GROUP_NAMES) + ["geometric", "electronic", "neither"]
    assert rows[0]["model_a"] == "alpha_bohr3" and rows[0]["model_b"] == "zpve_ev"
    w, h = _png_size(out / "compare.png")
    assert w > 500 and h > 300
    assert (out / "compare.svg").read_text().lstrip().startswith("<?xml")
    md = (out / "verdict.md").read_text()
    assert "**holds**" in md and "| partial_charge | electronic |" in md
    page = (out / "compare.html").read_text()
    for link in ("compare.png", "compare.json", "compare.csv", "verdict.md", "compare.svg"):
        assert f'"{link}"' in page and (out / link).exists()


def test_targets_other_than_alpha_and_zpve_are_compared_without_a_verdict(tmp_path):
    n = 30
    ids = np.arange(1, n + 1)
    a = write_explain_dir(tmp_path / "m1", ids, base_relevance(n, 8), target="homo_ev")
    b = write_explain_dir(tmp_path / "m2", ids, base_relevance(n, 9), target="lumo_ev")
    res = C.compare(a, b, n_boot=50)
    assert res["claims"][0]["verdict"] == "not evaluated" and len(res["groups"]) == 15


VERDICTS = {"holds", "holds, but the difference is negligible", "does not hold: the opposite is significant",
            "does not hold: no significant difference", "does not hold", "undecided: the 95 % CI contains 50 %"}


def test_end_to_end_on_real_explain_output(tmp_path, monkeypatch, capsys):
    """qmlrp train (alpha, ZPVE; 1 epoch on ~100 molecules) -> qmlrp explain -> qmlrp compare."""
    monkeypatch.setenv("QMLRP_CACHE", str(tmp_path / "cache"))
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(str(i) for i in range(1, 121)))
    for target, name in (("alpha_bohr3", "alpha"), ("zpve_ev", "zpve")):
        assert main(["train", "--ids", str(ids), "--target", target, "--epochs", "1", "--out", str(tmp_path / name)]) == 0
        assert main(["explain", "--model", str(tmp_path / name), "--out", str(tmp_path / name / "explain"),
                     "--heatmaps", "0", "--faithfulness", "0", "--bootstrap", "50", "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "alpha" / "explain"), str(tmp_path / "zpve" / "explain"),
                 "--out", str(out), "--bootstrap", "100"]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "compare.json").read_text())
    n_test = len(json.loads((tmp_path / "alpha" / "split.json").read_text())["test"])
    assert res["n_common"] == n_test and res["n_compared"] == n_test and not res["warnings"]
    assert res["a"]["target"] == "alpha_bohr3" and res["b"]["unit"] == "eV" and res["a"]["rule"] == "epsilon"
    assert len(res["claims"]) == 9 and all(c["verdict"] in VERDICTS for c in res["claims"])
    assert all(c["claim"] in printed for c in res["claims"])
    rows = {r["group"]: r for r in res["groups"]}
    assert sum(rows[g]["share_a"] for g in GROUP_NAMES) == pytest.approx(1.0)
    assert sum(rows[k]["share_b"] for k in C.GROUP_SETS) == pytest.approx(1.0)
    # the run's own group sums are what compare read
    run = C.read_explain_dir(tmp_path / "zpve" / "explain")
    assert len(run.ids) == n_test and all(i.startswith("qm9:") for i in run.ids)
    np.testing.assert_allclose(run.relevance.sum(1) + run.meta["absorbed"], run.meta["explained"], atol=1e-4)


def test_profile_similarity_is_one_and_zero_for_the_same_shares_and_the_literal_formula():
    rng = np.random.default_rng(0)
    s = rng.dirichlet(np.ones(12), size=80)
    same = C.profile_similarity(s, s, n_boot=50)
    assert same["spearman"] == pytest.approx(1.0) and same["total_variation"] == pytest.approx(0.0, abs=1e-15)
    t = rng.dirichlet(np.ones(12) * 3, size=80)
    p = C.profile_similarity(s, t, n_boot=200)
    assert p["total_variation"] == pytest.approx(0.5 * np.abs(s.mean(0) - t.mean(0)).sum())
    # two samples of one distribution: the true distance is 0 and the interval reaches it (a percentile
    # interval would not: the distance of two noisy means is biased up); clearly different ones exclude 0
    assert C.profile_similarity(s, rng.dirichlet(np.ones(12), size=80), n_boot=300)["total_variation_lo"] == 0.0
    w = np.ones(12); w[:3] = 10
    assert C.profile_similarity(s, rng.dirichlet(w, size=80), n_boot=300)["total_variation_lo"] > 0.1
    disjoint = np.zeros((5, 12)); disjoint[:, 0] = 1
    other = np.zeros((5, 12)); other[:, 1] = 1
    assert C.profile_similarity(disjoint, other, n_boot=10)["total_variation"] == pytest.approx(1.0)


def test_compare_reports_the_profile_similarity(runs):
    res = C.compare(*runs, n_boot=200)
    pr = res["profile"]
    assert -1 <= pr["spearman_lo"] <= pr["spearman"] <= pr["spearman_hi"] <= 1
    assert "How alike the two profiles are" in C.verdict_markdown(res)
