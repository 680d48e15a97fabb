"""The featurized QM9 cache: contents, both sources, failures listed, resume after a kill,
stale caches refused."""
import json

import numpy as np
import pytest
import torch

from molgraph import MolecularGraphFeaturizer, qm9
from molgraph.qm9_sources import format_qm9_xyz
from molgraph.targets import compute_targets

from ..conftest import QM9_IDS

IDS = list(QM9_IDS)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    return qm9.load(ids=IDS, cache_root=root, workers=1, progress=False, log=lambda m: None)


def test_dataset_holds_the_featurizer_output_and_targets(small, qm9_molecules):
    assert len(small) == len(IDS) and small.ids.tolist() == sorted(IDS)
    assert small.manifest["n_failed"] == 0 and small.manifest["featurizer_version"] == "mg-1"
    f = MolecularGraphFeaturizer()
    for qid in IDS:
        g, ref = small.by_id(qid), f(qm9_molecules[qid])
        assert g.name == f"qm9:{qid}" and g.elements == ref.elements
        torch.testing.assert_close(g.atom_features, ref.atom_features, rtol=0, atol=0)
        torch.testing.assert_close(g.pair_features, ref.pair_features, rtol=0, atol=0)
        t = compute_targets(qm9_molecules[qid].properties, ref.n_atoms)
        assert float(g.targets["alpha_bohr3"]) == t["alpha_bohr3"]
        assert float(g.targets["zpve_ev"]) == t["zpve_ev"]
        np.testing.assert_array_equal(g.targets["freqs_cm1"].numpy(), t["freqs_cm1"])
        np.testing.assert_array_equal(g.targets["alpha_tensor_bohr3"].numpy(), t["alpha_tensor_bohr3"])
    col = small.target("alpha_bohr3")
    assert col.shape == (len(IDS),) and col[0] == 13.21
    assert small.molecule(0).smiles == "C"


def test_subsets_targets_and_errors(small):
    sub = small.subset([4, 1])
    assert sub.ids.tolist() == [4, 1] and len(sub) == 2
    assert sub[0].name == "qm9:4" and sub[-1].name == "qm9:1"
    only = small.with_targets(["mulliken_e"])
    assert set(only[0].targets) == {"mulliken_e"} and only[0].targets["mulliken_e"].shape == (5,)
    with pytest.raises(KeyError, match="not in this dataset"):
        small.index_of(2000)
    with pytest.raises(KeyError, match="valid:"):
        small.with_targets(["alpha"])
    with pytest.raises(KeyError, match="not a scalar target"):
        small.target("freqs_cm1")
    with pytest.raises(IndexError):
        small[len(small)]


def test_parallel_build_equals_serial_build(tmp_path, small, monkeypatch):
    monkeypatch.setattr(qm9, "CHUNK", 6)
    par = qm9.load(ids=IDS, cache_root=tmp_path, workers=2, progress=False, log=lambda m: None)
    for name in ("ids", "atom_features", "bond", "path", "ring", "scalars", "freqs", "pair_offsets"):
        np.testing.assert_array_equal(np.load(par.path / f"{name}.npy"), np.load(small.path / f"{name}.npy"), err_msg=name)


def test_killed_build_resumes_and_never_loads_as_complete(tmp_path, small, monkeypatch):
    monkeypatch.setattr(qm9, "CHUNK", 4)
    real = qm9._featurize_chunk
    calls = []

    def dies_on_third(args):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(args)

    monkeypatch.setattr(qm9, "_featurize_chunk", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        qm9.load(ids=IDS, cache_root=tmp_path, workers=1, progress=False, log=lambda m: None)
    (partial,) = tmp_path.glob("*.partial")
    assert len(list(partial.glob("chunk_*.npz"))) == 2
    final = partial.with_name(partial.name[: -len(".partial")])
    assert not final.exists()
    with pytest.raises(FileNotFoundError, match="not a complete QM9 cache"):
        qm9.QM9Dataset(final)
    calls.clear()
    monkeypatch.setattr(qm9, "_featurize_chunk", lambda args: (calls.append(args[0]), real(args))[1])
    ds = qm9.load(ids=IDS, cache_root=tmp_path, workers=1, progress=False, log=lambda m: None)
    assert calls == [2, 3, 4]  # the two finished chunks were not redone
    assert not partial.exists()
    np.testing.assert_array_equal(np.load(ds.path / "atom_features.npy"), np.load(small.path / "atom_features.npy"))
    np.testing.assert_array_equal(np.load(ds.path / "scalars.npy"), np.load(small.path / "scalars.npy"))


def test_stale_cache_is_refused_with_the_fix(tmp_path):
    ds = qm9.load(ids=[1, 2], cache_root=tmp_path, workers=1, progress=False, log=lambda m: None)
    manifest = json.loads((ds.path / "manifest.json").read_text())
    manifest["source_checksum"] = "0" * 64
    (ds.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="delete it or pass rebuild=True"):
        qm9.load(ids=[1, 2], cache_root=tmp_path, workers=1, progress=False, log=lambda m: None)
    again = qm9.load(ids=[1, 2], cache_root=tmp_path, workers=1, progress=False, rebuild=True, log=lambda m: None)
    assert len(again) == 2
    other = MolecularGraphFeaturizer(version="mg-test")
    moved = qm9.load(ids=[1, 2], cache_root=tmp_path, workers=1, progress=False, featurizer=other, log=lambda m: None)
    assert moved.path != again.path  # another featurizer version is another cache


def test_original_source_gives_the_same_dataset_and_lists_failures(tmp_path, small, qm9_molecules):
    root = tmp_path / "qm9"
    root.mkdir()
    for qid in IDS:
        (root / f"dsgdb9nsd_{qid:06d}.xyz").write_text(format_qm9_xyz(qm9_molecules[qid]))
    # two broken molecules: an H pulled 6 A away, and an unparsable number
    m = qm9_molecules[1000]
    text = format_qm9_xyz(m).splitlines()
    parts = text[2 + m.n_atoms - 1].split("\t")
    parts[1] = str(float(parts[1]) + 6.0)
    text[2 + m.n_atoms - 1] = "\t".join(parts)
    (root / "dsgdb9nsd_001000.xyz").write_text("\n".join(text) + "\n")
    (root / "dsgdb9nsd_000007.xyz").write_text(format_qm9_xyz(qm9_molecules[7]).replace("\t", "\tx", 3))
    ds = qm9.load(source="xyz", root=root, cache_root=tmp_path / "c", workers=1, progress=False, log=lambda m: None)
    failed = {f["id"]: f["reason"] for f in ds.failures}
    assert 1000 in failed and "no neighbour within bonding distance" in failed[1000]
    assert 7 in failed and "dsgdb9nsd_000007.xyz" in failed[7] and "unparsable number" in failed[7]
    assert len(ds) == len(IDS) - 2
    with pytest.raises(KeyError, match="failed featurization"):
        ds.index_of(1000)
    same = small.subset(ds.ids)
    for i in range(len(ds)):
        a, b = ds[i], same[i]
        torch.testing.assert_close(a.pair_features, b.pair_features, rtol=0, atol=0)
        torch.testing.assert_close(a.atom_features, b.atom_features, rtol=0, atol=0)
        for k in ("alpha_bohr3", "zpve_ev", "freqs_cm1", "u0_ev"):
            torch.testing.assert_close(a.targets[k], b.targets[k], rtol=0, atol=0)
    assert ds.report()["failed_fraction"] == pytest.approx(2 / len(IDS))


def test_batch_reads_exactly_what_collate_of_the_molecules_gives(small):
    from molgraph import collate

    rng = np.random.default_rng(0)
    for targets in (None, ["alpha_bohr3", "zpve_ev"], []):
        ds = small if targets is None else small.with_targets(targets)
        for _ in range(4):
            idx = rng.choice(len(ds), size=int(rng.integers(1, len(ds))), replace=False)
            a, b = collate([ds[int(i)] for i in idx]), ds.batch(idx)
            for f in ("atom_features", "pair_features", "atom_mask", "positions", "n_atoms"):
                x, y = getattr(a, f), getattr(b, f)
                assert x.dtype == y.dtype and torch.equal(x, y), f
            assert list(a.targets) == list(b.targets) and list(a.target_masks) == list(b.target_masks)
            for k in a.targets:
                assert a.targets[k].dtype == b.targets[k].dtype
                assert torch.equal(torch.nan_to_num(a.targets[k], nan=-7.0), torch.nan_to_num(b.targets[k], nan=-7.0)), k
            for k in a.target_masks:
                assert torch.equal(a.target_masks[k], b.target_masks[k])
            assert a.names == b.names
    assert torch.equal(small.batch([-1]).atom_features, small.batch([len(small) - 1]).atom_features)
    with pytest.raises(IndexError):
        small.batch([len(small)])
    with pytest.raises(ValueError, match="at least one"):
        small.batch([])


@pytest.mark.slow
def test_featurize_workers_die_with_a_killed_parent(tmp_path):
    """kill -9 of `qmlrp featurize` leaves no pool workers behind (they used to run on as orphans)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "qmlrp.cli", "featurize", "--sample", "20000", "--workers", "2",
                             "--cache-dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children():
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    deadline = time.time() + 60
    while len(children()) < 2 and time.time() < deadline:
        time.sleep(0.2)
    kids = children()
    assert len(kids) >= 2, "the pool did not start"
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    alive = kids
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [k for k in kids if os.path.exists(f"/proc/{k}") and "Z" not in open(f"/proc/{k}/stat").read().split()[2]]
    assert not alive, f"orphaned workers still running: {alive}"


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os

    from molgraph.storage import atomic_write_json

    atomic_write_json(tmp_path / "a.json", {"x": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
