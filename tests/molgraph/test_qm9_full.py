"""All of QM9 (slow: builds the full cache, ~75 s on 2 cores). Run with `pytest -m slow`."""
import numpy as np
import pytest

from molgraph import qm9
from molgraph.targets import HARTREE_CM1, HARTREE_EV, SCALAR_TARGETS

from .test_featurizer import _laws

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return qm9.load(cache_root=tmp_path_factory.mktemp("full"), progress=False, log=lambda m: None)


def test_all_of_qm9_is_featurized_or_listed(full):
    r = full.report()
    assert r["n_molecules"] + r["n_failed"] == 130_831
    assert r["failed_fraction"] <= 0.005
    assert all(f["reason"] for f in r["failures"])
    assert r["perception"]["template"] + r["perception"]["geometry"] == r["n_molecules"]


def test_frequency_quirks_and_zpve_over_all_molecules(full):
    a = {k: np.load(full.path / f"{k}.npy") for k in ("freqs", "freq_offsets", "scalars", "n_atoms")}
    col = {k: i for i, k in enumerate(SCALAR_TARGETS)}
    sums = np.add.reduceat(a["freqs"], a["freq_offsets"][:-1])
    zpve_ha = a["scalars"][:, col["zpve_ev"]] / HARTREE_EV
    assert np.abs(0.5 * sums / HARTREE_CM1 - zpve_ha).max() < 1e-6
    n_modes = np.diff(a["freq_offsets"])
    n_imag = a["scalars"][:, col["n_imaginary"]]
    assert n_imag.sum() == 3
    full_set = n_modes + n_imag
    n = a["n_atoms"]
    assert np.all((full_set == 3 * n - 6) | (full_set == 3 * n - 5))
    assert int((full_set == 3 * n - 5).sum()) == 5  # the linear molecules
    assert n.max() == 29 and n_modes.max() == 81


def test_pair_laws_on_a_random_sample(full):
    for i in np.random.default_rng(0).choice(len(full), 200, replace=False):
        _laws(full[int(i)])
