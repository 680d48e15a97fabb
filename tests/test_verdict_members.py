"""benchmarks/verdict_members.py: the fold-by-fold alpha/ZPVE table read from two stability.json."""
import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("verdict_members", Path(__file__).parents[1] / "benchmarks" / "verdict_members.py")
vm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vm)


def _stability(tmp, name, members, geometric):
    groups = {}
    for g in ("atom_type", "hybridization", "graph_distance", "spatial_distance", "geometric", "electronic", "neither"):
        by = [geometric[i] if g == "geometric" else (1 - geometric[i] if g == "electronic" else 0.1 + 0.01 * i)
              for i in range(len(members))]
        groups[g] = {"dataset_share_by_member": by, "dataset_min": min(by), "dataset_max": max(by)}
    rank = {"dataset_spearman": {"mean": 0.9, "min": 0.8}, "top_group_agreement": 0.5}
    d = tmp / name
    d.mkdir()
    (d / "stability.json").write_text(json.dumps({"members": members, "molecules": {"n_explained": 7},
                                                  "fold_spread": {"epsilon": {"groups": groups}},
                                                  "rank_agreement": {"epsilon": rank}}))
    return d


def test_members_pair_by_name_and_the_sign_test_counts_folds(tmp_path, capsys):
    a = _stability(tmp_path, "a", ["fold_0", "fold_1", "fold_2", "fold_3"], [0.8, 0.7, 0.9, 0.6])
    z = _stability(tmp_path, "z", ["fold_0", "fold_1", "fold_3"], [0.6, 0.6, 0.7])
    sa, sz = vm.member_shares(vm.load(a, "epsilon"), "epsilon"), vm.member_shares(vm.load(z, "epsilon"), "epsilon")
    p = vm.paired(sa, sz, "geometric")
    assert p["members"] == ["fold_0", "fold_1", "fold_3"]  # fold_2 has no ZPVE partner
    assert p["diff"] == pytest.approx([0.2, 0.1, -0.1]) and (p["positive"], p["negative"]) == (2, 1)
    assert p["mean"] == pytest.approx(0.2 / 3) and p["sign_p"] == pytest.approx(1.0)  # 2 of 3: exact binomial p = 1
    lo, hi = p["ci"]
    assert lo < p["mean"] < hi
    assert vm.main([str(a), str(z), "--md", str(tmp_path / "t.md")]) == 0
    out = capsys.readouterr().out
    assert "| geometric | 80.0, 70.0, 90.0, 60.0 | 60.0, 60.0, 70.0 |" in out and "2 of 3" in out
    assert (tmp_path / "t.md").read_text().strip() == out.strip()


def test_a_rule_the_run_did_not_use_is_refused_with_the_file(tmp_path):
    a = _stability(tmp_path, "a", ["fold_0"], [0.5])
    with pytest.raises(SystemExit, match="stability.json: rule 'weave' not in the run"):
        vm.load(a, "weave")
