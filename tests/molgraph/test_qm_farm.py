"""The QM label farm (Dask LocalCluster, 2 workers, HF/STO-3G on the smallest QM9 molecules):
results written atomically and skipped on rerun, failures recorded and retried only when asked,
time limit and task timeout, a farm killed with SIGKILL loses nothing finished, collected tables."""
import json
from pathlib import Path
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("pyscf")
pytest.importorskip("distributed")

from molgraph import Molecule  # noqa: E402
from molgraph.qm.collect import COLUMNS, collect, compare, read_table, write_id_lists, write_table  # noqa: E402
from molgraph.qm.farm import (  # noqa: E402
    LabelSpec, _order, code_version, molecule_file_stem, qm9_molecules, result_key, run_farm)

HF = LabelSpec(xc="hf", basis="sto-3g")


@pytest.fixture(scope="module")
def scheduler():
    """One LocalCluster (2 worker processes, 1 thread each) that the farm runs connect to by
    address, as they would to a cluster's scheduler (and without a cluster start per run)."""
    import logging

    from distributed import LocalCluster

    env = {v: "1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=env,
                      silence_logs=logging.CRITICAL) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def QUIET(scheduler):
    return dict(scheduler=scheduler, progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def small():
    """{id: Molecule} of QM9 1-3 (CH4, NH3, H2O) with QM9's reference values."""
    mols, missing = qm9_molecules(ids=[1, 2, 3])
    assert missing == []
    return {int(m.name.split(":")[1]): m for m in mols}


@pytest.fixture(scope="module")
def radical(small):
    """CH3: an odd electron count, which the closed-shell engine refuses."""
    ch4 = small[1]
    return Molecule(ch4.elements[:4], ch4.positions[:4], name="ch3-radical", source="test")


@pytest.fixture(scope="module")
def farm(tmp_path_factory, small, radical, QUIET):
    """One run over CH4, NH3 and the radical: (out folder, summary)."""
    out = tmp_path_factory.mktemp("labels")
    summary = run_farm([small[1], small[2], radical], out, HF, **QUIET)
    return out, summary


def _dirs(out, spec=HF):
    key = result_key(spec)
    return out / "results" / key, out / "failed" / key


def test_selection_of_qm9_molecules():
    mols, missing = qm9_molecules(ids=[1, 2, 1000, 3, 999999, 21725], max_heavy_atoms=1)
    assert [m.name for m in mols] == ["qm9:1", "qm9:2", "qm9:3"]  # 1000 has more heavy atoms
    reasons = {m["id"]: m["reason"] for m in missing}
    assert reasons == {21725: "uncharacterized in QM9 (excluded from the data)", 999999: "not a QM9 id"}
    assert mols[2].properties["mu_debye"] == pytest.approx(1.8511)
    few, _ = qm9_molecules(max_heavy_atoms=2)
    assert len(few) == 8 and max(sum(e != "H" for e in m.elements) for m in few) == 2
    two, _ = qm9_molecules(min_heavy_atoms=2, max_heavy_atoms=2)  # the two filters combine
    assert len(two) == 5 and {sum(e != "H" for e in m.elements) for m in two} == {2}
    big, _ = qm9_molecules(ids=range(1, 3000), min_heavy_atoms=7, sample=4, seed=0)
    assert len(big) == 4 and min(sum(e != "H" for e in m.elements) for m in big) >= 7
    a, _ = qm9_molecules(ids=range(1, 40), sample=5, seed=1)
    b, _ = qm9_molecules(ids=range(1, 40), sample=5, seed=1)
    assert [m.name for m in a] == [m.name for m in b] and len(a) == 5
    assert [m.name for m in _order(few, "size")][:3] == ["qm9:3", "qm9:2", "qm9:1"]  # H2O, NH3, CH4: fewest atoms first
    assert [m.name for m in _order(list(reversed(few)), "id")][:3] == ["qm9:1", "qm9:2", "qm9:3"]
    assert molecule_file_stem(mols[0]) == "qm9_000001"
    cyanogen, _ = qm9_molecules(ids=[25])  # no hydrogen: its Hill formula once crashed the farm
    assert cyanogen[0].formula == "C2N2"


def test_key_names_level_of_theory_and_code_version():
    key = result_key(LabelSpec(xc="B3LYP", basis="6-31G(2df,p)"))
    assert key.startswith("b3lyp_6-31g_2df_p_analytic_v")
    assert key != result_key(LabelSpec(xc="b3lyp", basis="6-31g(2df,p)"), version="another engine 2.0")
    assert key != result_key(LabelSpec(xc="b3lyp", basis="6-31g(2df,p)", options={"density_fit": False}))
    assert "pyscf" in code_version()


def test_gaussians_exponents_change_the_key_of_qm9s_basis_only():
    """QM9's 6-31G(2df,p) is run with Gaussian's doubled d shell, recorded in the options (so its
    labels never mix with those of PySCF's exponents); a basis both define alike keeps the key its
    labels were made under (the committed 6-31G* set's folder name)."""
    full = LabelSpec(basis="6-31g(2df,p)")
    assert full.options == {"basis_definition": "gaussian"}
    assert result_key(full) != result_key(LabelSpec(basis="6-31g(2df,p)", options={"basis_definition": "pyscf"}))
    small = LabelSpec(basis="6-31g*")
    assert small.options == {}
    committed = Path(__file__).parents[2] / "data" / "labels" / "beta-b3lyp-6-31gs" / "results"
    if committed.is_dir() and "2.14.0" in code_version():
        assert [p.name for p in committed.iterdir()] == [result_key(small)]


def test_results_written_and_skipped_on_rerun(farm, small, radical, QUIET):
    out, s = farm
    res, fail = _dirs(out)
    assert (s.n_selected, s.n_submitted, s.n_ok, s.n_failed, s.n_left) == (3, 3, 2, 1, 0)
    assert sorted(p.name for p in res.glob("qm9_*.json")) == ["qm9_000001.json", "qm9_000002.json"]
    rec = json.loads((res / "qm9_000002.json").read_text())
    assert rec["status"] == "ok" and rec["name"] == "qm9:2" and rec["code_version"] == code_version()
    assert np.array(rec["result"]["beta"]).shape == (3, 3, 3)
    assert rec["reference_qm9"]["mu_debye"] == pytest.approx(small[2].properties["mu_debye"])
    np.testing.assert_allclose(rec["geometry"]["positions_angstrom"], small[2].positions)
    assert not list(res.glob(".*.tmp"))  # no temp file left behind
    before = {p.name: p.stat().st_mtime_ns for p in res.glob("qm9_*.json")}
    again = run_farm([small[1], small[2], radical], out, HF, **QUIET)
    assert (again.n_submitted, again.n_skipped_done, again.n_skipped_failed) == (0, 2, 1)
    assert {p.name: p.stat().st_mtime_ns for p in res.glob("qm9_*.json")} == before


def test_failures_recorded_listed_and_retried_only_when_asked(farm, small, radical, QUIET):
    out, s = farm
    res, fail = _dirs(out)
    assert [f["id"] for f in s.failures] == ["ch3-radical"]
    err = json.loads((fail / "ch3-radical.json").read_text())
    assert err["status"] == "error" and err["error"].startswith("QMInputError: ch3-radical")
    assert "Traceback" in err["traceback"]
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["keys"][result_key(HF)]
    assert entry["n_done"] == 2 and [f["id"] for f in entry["failures"]] == ["ch3-radical"]
    assert manifest["runs"][0]["finished"] is not None and manifest["runs"][0]["n_failed"] == 1
    # a molecule that failed earlier (here: an error file planted for H2O) is skipped ...
    planted = {**err, "id": "qm9_000003", "name": "qm9:3", "error": "RuntimeError: planted"}
    (fail / "qm9_000003.json").write_text(json.dumps(planted))
    skip = run_farm([small[3], radical], out, HF, **QUIET)
    assert (skip.n_submitted, skip.n_skipped_failed, skip.n_left) == (0, 2, 0)
    # ... and computed again only with retry_failed: H2O now works (its error file goes), CH3 fails again
    retry = run_farm([small[3], radical], out, HF, retry_failed=True, **QUIET)
    assert (retry.n_submitted, retry.n_ok, retry.n_failed) == (2, 1, 1)
    assert (res / "qm9_000003.json").exists() and not (fail / "qm9_000003.json").exists()
    assert [f["id"] for f in retry.failures] == ["ch3-radical"]


def test_time_limit_stops_submitting_and_a_rerun_goes_on(tmp_path, small, QUIET):
    s = run_farm([small[1], small[3]], tmp_path, HF, limit_minutes=0, **QUIET)
    assert s.stopped_by_limit and (s.n_submitted, s.n_left) == (0, 2)
    assert json.loads((tmp_path / "manifest.json").read_text())["runs"][-1]["stopped_by_limit"] is True
    s = run_farm([small[1], small[3]], tmp_path, HF, **QUIET)
    assert (s.n_ok, s.n_left) == (2, 0)


@pytest.mark.slow
def test_task_timeout_is_recorded_and_the_worker_restarted(tmp_path):
    # 15- and 17-atom molecules: a minute or more each at B3LYP/6-31G*, so neither can finish in the second or two
    # between the 0.3 s timeout and its worker's restart (with HCOOH/C2H6, a few seconds each, a
    # quiet machine sometimes finished the molecule first and it was then rightly not a failure)
    mols, _ = qm9_molecules(ids=[1000, 2000])
    spec = LabelSpec(xc="b3lyp", basis="6-31g*")
    s = run_farm(mols, tmp_path, spec, task_timeout_minutes=0.005, workers=2, progress=False, log=lambda m: None)
    assert s.n_failed == 2 and s.n_ok == 0 and len(s.failures) == 2
    for f in s.failures:
        assert f["error"].startswith("TimeoutError") and "restarted" in f["error"]


def _farm_cmd(out, heavy=2):
    return [sys.executable, "-m", "qmlrp.cli", "label", "beta", "--max-heavy-atoms", str(heavy), "--xc", "hf",
            "--basis", "6-31g", "--out", str(out), "--workers", "2", "--no-progress"]


@pytest.mark.slow
def test_killed_farm_loses_nothing_finished(tmp_path):
    """SIGKILL the farm once two molecules are done; every finished result is intact and kept
    by the rerun, which computes only the rest."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen(_farm_cmd(tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    res = tmp_path / "results"
    try:
        deadline = time.time() + 120
        while len(list(res.glob("*/qm9_*.json"))) < 2:
            assert proc.poll() is None, "the farm ended before it could be killed"
            assert time.time() < deadline, "no results within 120 s"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        time.sleep(2)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # worker processes of the killed farm, if any are left
        except ProcessLookupError:
            pass
    done = {p.name: p.read_bytes() for p in res.glob("*/qm9_*.json")}
    assert len(done) >= 2
    for blob in done.values():
        assert json.loads(blob)["status"] == "ok"  # complete JSON: written atomically
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["runs"][-1]["finished"] is None  # the killed run is on record as unfinished
    rerun = subprocess.run(_farm_cmd(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(done)} were done before" in rerun.stdout
    after = {p.name: p.read_bytes() for p in res.glob("*/qm9_*.json")}
    assert len(after) == 8 and all(after[k] == v for k, v in done.items())


def test_collect_table_contents(farm, tmp_path):
    out, _ = farm
    c = collect(out)
    by = {r["id"]: r for r in c.rows}
    assert {"qm9_000001", "qm9_000002"} <= set(by)
    assert [f["id"] for f in c.failures] == ["ch3-radical"]
    rec = json.loads((out / "results" / c.key / "qm9_000002.json").read_text())["result"]
    nh3 = by["qm9_000002"]
    assert nh3["beta_xyz"] == pytest.approx(rec["beta"][0][1][2]) and nh3["beta_zzz"] == pytest.approx(rec["beta"][2][2][2])
    assert nh3["alpha_iso"] == pytest.approx(np.trace(rec["polarizability"]) / 3)
    assert nh3["beta_par"] == pytest.approx(rec["beta_parallel"]) and nh3["beta_vec_norm"] == pytest.approx(rec["beta_vector_norm"])
    assert nh3["mu_debye"] == pytest.approx(np.linalg.norm(rec["dipole"]) * 2.541746473)
    assert nh3["qm9_mu_debye"] == pytest.approx(1.6256) and (nh3["xc"], nh3["basis"]) == ("hf", "sto-3g")
    assert math.isnan(by["qm9_000001"]["beta_par"])  # methane: no dipole, beta_par undefined
    summary = c.summary()
    assert summary["n_done"] == len(c.rows) and summary["n_failed"] == 1 and summary["n_beta_par_undefined"] >= 1
    assert summary["vs_qm9"]["mu_debye"]["n"] == len(c.rows)
    written = write_table(c.rows, tmp_path / "t.csv")
    assert written[0] == tmp_path / "t.csv"
    header = (tmp_path / "t.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == COLUMNS and len([h for h in header if h[:5] == "beta_" and set(h[5:]) <= set("xyz") and len(h) == 8]) == 27
    back = {r["id"]: r for r in read_table(tmp_path / "t.csv")}
    assert back["qm9_000002"]["beta_zzz"] == pytest.approx(nh3["beta_zzz"], rel=1e-12)
    assert math.isnan(back["qm9_000001"]["beta_par"])
    lists = write_id_lists(c.rows, tmp_path)
    with_par = [int(x) for x in lists["ids.txt"].read_text().split()]
    every = [int(x) for x in lists["ids_all.txt"].read_text().split()]
    assert 2 in with_par and 1 not in with_par and {1, 2} <= set(every)  # methane has no dipole: no beta_par
    assert every == sorted(r["qm9_id"] for r in c.rows) and with_par == sorted(with_par)


def test_compare_two_tables(farm, tmp_path):
    out, _ = farm
    rows = collect(out).rows
    write_table(rows, tmp_path / "a.csv")
    scaled = [{**r, "beta_par": 1.1 * r["beta_par"], "beta_vec_norm": r["beta_vec_norm"] + 2.0} for r in rows]
    write_table(scaled[1:], tmp_path / "b.csv")  # B lacks the first molecule
    r = compare(tmp_path / "a.csv", tmp_path / "b.csv")
    common = rows[1:]
    polar = [x for x in common if math.isfinite(x["beta_par"])]
    assert r["n_overlap"] == len(common) and r["columns"]["beta_vec_norm"]["n"] == len(common)
    assert r["columns"]["beta_vec_norm"]["mae"] == pytest.approx(2.0)
    assert r["columns"]["beta_par"]["n"] == len(polar)
    assert r["columns"]["beta_par"]["mae"] == pytest.approx(np.mean([0.1 * abs(x["beta_par"]) for x in polar]))
    assert r["columns"]["alpha_iso"]["mae"] == pytest.approx(0.0)
    assert r["level_a"] == ["hf/sto-3g (analytic)"]


def test_scf_non_convergence_is_a_recorded_failure(tmp_path, small, QUIET):
    spec = LabelSpec(xc="hf", basis="sto-3g", options={"max_cycle": 1})  # one SCF cycle (two on the retry)
    s = run_farm([small[3]], tmp_path, spec, **QUIET)
    assert (s.n_ok, s.n_failed) == (0, 1)
    err = json.loads((_dirs(tmp_path, spec)[1] / "qm9_000003.json").read_text())
    assert err["error"].startswith("SCFNotConverged") and "qm9:3" in err["error"]
    assert err["spec"]["options"] == {"max_cycle": 1}
