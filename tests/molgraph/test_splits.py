import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molgraph import splits


@settings(max_examples=40, deadline=None)
@given(n=st.integers(20, 400), k=st.integers(2, 12), seed=st.integers(0, 2**31), f=st.integers(0, 11))
def test_kfold_bins_are_uniform_disjoint_and_cover(n, k, seed, f):
    ids = np.arange(1, n + 1) * 3
    kf = splits.kfold(ids, k=k, seed=seed)
    sizes = [len(b) for b in kf.bins]
    assert max(sizes) - min(sizes) <= 1
    allids = np.concatenate(kf.bins)
    assert len(allids) == n and set(allids.tolist()) == set(ids.tolist())
    s = kf.fold(f % k)
    parts = [set(s.train.tolist()), set(s.val.tolist()), set(s.test.tolist())]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == set(ids.tolist())
    assert s.test.tolist() == sorted(kf.bins[f % k].tolist())


def test_kfold_is_seeded_and_reproducible():
    ids = range(1, 1001)
    a, b, c = splits.kfold(ids, seed=1), splits.kfold(ids, seed=1), splits.kfold(ids, seed=2)
    assert a.digest == b.digest != c.digest
    assert a.fold(3).digest == b.fold(3).digest


def test_split_files_round_trip_and_catch_edits(tmp_path):
    kf = splits.kfold(range(1, 101), k=10, seed=0, source="test")
    kf.save(tmp_path / "k.json")
    back = splits.load_split(tmp_path / "k.json")
    assert back.digest == kf.digest and back.meta == {"source": "test"}
    tvt = splits.train_val_test(range(1, 101), val=0.1, test=0.2, seed=3)
    assert (len(tvt.train), len(tvt.val), len(tvt.test)) == (70, 10, 20)
    tvt.save(tmp_path / "t.json")
    assert splits.load_split(tmp_path / "t.json").digest == tvt.digest
    data = json.loads((tmp_path / "k.json").read_text())
    data["bins"][0][0] = 10_000
    (tmp_path / "k.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="digest"):
        splits.load_split(tmp_path / "k.json")


def test_bad_arguments():
    with pytest.raises(ValueError, match="k must be"):
        splits.kfold(range(5), k=10)
    with pytest.raises(ValueError, match="fractions"):
        splits.train_val_test(range(5), val=0.6, test=0.5)
    with pytest.raises(IndexError):
        splits.kfold(range(20), k=4).fold(4)
