"""Set layouts (gcnn.sets): which output holds which member of a sorted frequency set."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gcnn.sets import LAYOUTS, SetLayout, hydrogen_counts, regions_of


@st.composite
def sets(draw):
    """A batch of ascending sets that fit 81 outputs, with hydrogen counts that fit 20 X-H slots."""
    b = draw(st.integers(1, 5))
    n_h = np.array([draw(st.integers(0, 20)) for _ in range(b)])
    n = np.array([draw(st.integers(max(int(h), 1), min(81, int(h) + 61))) for h in n_h])
    k = int(n.max())
    vals = np.full((b, k), 0.0)
    for i in range(b):
        vals[i, : n[i]] = np.sort(np.array(draw(st.lists(st.floats(-50, 4000), min_size=int(n[i]), max_size=int(n[i])))))
    mask = np.arange(k)[None] < n[:, None]
    return vals, mask, n_h


@settings(max_examples=60, deadline=None)
@given(sets(), st.sampled_from(LAYOUTS))
def test_decoding_an_encoded_set_gives_it_back_sorted_and_names_the_output_of_each_value(batch, name):
    vals, mask, n_h = batch
    lay = SetLayout(name)
    y, m = lay.encode_np(vals, mask, n_h)
    n = mask.sum(1)
    assert (m.sum(1) == n).all() and (m == lay.own_np(n, n_h)).all()  # one output per value, and only those
    back, order = lay.decode_np(y, n, n_h)
    for i in range(len(n)):
        np.testing.assert_array_equal(back[i, : n[i]], vals[i, : n[i]])
        assert np.isnan(back[i, n[i]:]).all() and (order[i, n[i]:] == -1).all()
        np.testing.assert_array_equal(y[i, order[i, : n[i]]], back[i, : n[i]])  # the output each value came from
        assert len(set(order[i, : n[i]].tolist())) == n[i]


def test_layouts_literally():
    """A 4-atom molecule with 2 H atoms and 6 modes, v = 100 < 200 < ... < 600."""
    v = np.array([[100.0, 200, 300, 400, 500, 600]])
    mask = np.ones_like(v, dtype=bool)
    y, _ = SetLayout("ascending").encode_np(v, mask, np.array([2]))
    assert y[0, :6].tolist() == [100, 200, 300, 400, 500, 600]
    y, _ = SetLayout("descending").encode_np(v, mask, np.array([2]))
    assert y[0, :6].tolist() == [600, 500, 400, 300, 200, 100]
    y, m = SetLayout("hydrogen").encode_np(v, mask, np.array([2]))
    assert y[0, :2].tolist() == [600, 500] and y[0, 20:24].tolist() == [400, 300, 200, 100]  # X-H block, skeleton block
    assert np.flatnonzero(m[0]).tolist() == [0, 1, 20, 21, 22, 23]
    # no hydrogen: everything in the skeleton block; as many H as values: everything in the X-H block
    _, m = SetLayout("hydrogen").encode_np(v, mask, np.array([0]))
    assert np.flatnonzero(m[0]).tolist() == list(range(20, 26))
    y, m = SetLayout("hydrogen").encode_np(v[:, :3], mask[:, :3], np.array([3]))
    assert y[0, :3].tolist() == [300, 200, 100] and m[0].sum() == 3


def test_sets_that_do_not_fit_are_refused_with_the_molecule_named():
    lay = SetLayout("hydrogen")
    with pytest.raises(ValueError, match="qm9:7: 21 hydrogens"):
        lay.check([60], [21], ["qm9:7"])
    with pytest.raises(ValueError, match="more than the model's 81 outputs"):
        SetLayout("ascending").check([82], [0], ["big"])
    lay.check([81], [20], ["C9H20"])  # QM9's largest fits exactly
    with pytest.raises(ValueError, match="unknown set layout"):
        SetLayout("random")


def test_hydrogen_counts_and_regions():
    a = torch.zeros(2, 3, 21)
    a[0, :2, 0] = 1  # two H
    a[1, :, 0] = 1  # three H, one of them padding
    mask = torch.tensor([[True, True, True], [True, True, False]])
    assert hydrogen_counts(a, mask).tolist() == [2, 2]
    assert regions_of(np.array([999.0, 1000.0, 1999.0, 2600.0, 3100.0])).tolist() == [0, 1, 1, 3, 3]
