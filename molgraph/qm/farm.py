"""A resumable task farm that labels molecules with `molgraph.qm.response_properties`.

    from molgraph.qm.farm import LabelSpec, qm9_molecules, run_farm
    mols, missing = qm9_molecules(max_heavy_atoms=4)
    summary = run_farm(mols, "labels/beta-b3lyp", LabelSpec(xc="b3lyp", basis="6-31g(2df,p)"), workers=2)

Work is spread over Dask distributed: a `LocalCluster` of worker processes (one thread each by
default, the QM code set to the same number of threads) or an existing cluster given by its
scheduler address. Each molecule is one task; the worker that computes it writes the result
itself, atomically (temp file + os.replace), so a killed farm (even kill -9) loses nothing
that finished, and a rerun skips it. Layout under `out/`:

    results/<key>/qm9_000123.json   one finished molecule (status "ok")
    failed/<key>/qm9_000123.json    one failure, with its error text (status "error")
    manifest.json                   every run, the counts, the list of failures
    key.json in each <key>/ folder   the full level of theory and code version the key stands for

`<key>` names the level of theory (xc, basis, method) and the code version, plus a short hash of
all of it: a new code version or another basis labels into another folder, never mixing results.
A failed molecule is not retried on a rerun unless `retry_failed=True` (`--retry-failed`).
Workers of a remote cluster must see `out/` at the same path (a shared filesystem).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..molecule import Molecule, MoleculeError
from ..storage import atomic_write_json

RESULT_FORMAT = "qmlrp-qm-label-1"
ORDERS = ("size", "id")


# ----------------------------------------------------------------------------- what is computed
@dataclass(frozen=True)
class LabelSpec:
    """The level of theory and how to run it.

    xc: 'hf' or a functional name PySCF knows ('b3lyp' is Gaussian's variant, as in QM9).
    basis: basis set name ('6-31g(2df,p)', '6-31g*', 'sto-3g').
    method: 'analytic' (coupled-perturbed response) or 'finite_field'.
    threads: threads the QM code uses in each task.
    options: extra keyword arguments passed to `response_properties` (recorded in the key).
    """

    xc: str = "b3lyp"
    basis: str = "6-31g(2df,p)"
    method: str = "analytic"
    threads: int = 1
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "xc", self.xc.strip().lower())
        object.__setattr__(self, "basis", self.basis.strip().lower())
        object.__setattr__(self, "method", self.method.strip().lower())
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        from .basis import default_basis_definition

        if "basis_definition" not in self.options and default_basis_definition(self.basis) == "gaussian":
            # Gaussian's exponents (QM9's basis): recorded in the options, so the result key of
            # these names differs from that of the PySCF-defined basis of engine 1.0, and labels
            # of every other basis keep their key
            object.__setattr__(self, "options", {**self.options, "basis_definition": "gaussian"})
        try:
            json.dumps(self.options, sort_keys=True)
        except TypeError as exc:
            raise ValueError(f"options must be JSON-serializable (they are part of the result key): {exc}") from None


def code_version() -> str:
    """Version of the code that computes a label: the engine's declared version and PySCF's,
    e.g. 'molgraph.qm.response 1.0; pyscf 2.14.0' (qmlrp's own version is left out: a release
    that does not touch the engine must not invalidate labels that cost core-hours)."""
    import pyscf

    from .response import ENGINE_VERSION

    return f"{ENGINE_VERSION}; pyscf {pyscf.__version__}"


def result_key(spec: LabelSpec, version: str | None = None) -> str:
    """Folder name for a level of theory and code version, e.g.
    'b3lyp_6-31g_2df_p_analytic_v1.0-2.14.0_1a2b3c4d': readable parts, then a hash of the
    exact xc, basis, method, version and engine options (so no two settings share a folder)."""
    version = version or code_version()
    slug = lambda s: re.sub(r"[^a-z0-9.+-]+", "_", s.lower()).strip("_")
    numbers = re.findall(r"\d+(?:\.\d+)*", version)  # engine version, PySCF version
    short = "v" + "-".join(numbers) if numbers else slug(version)
    full = json.dumps({"xc": spec.xc, "basis": spec.basis, "method": spec.method, "version": version,
                       "options": spec.options}, sort_keys=True)
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{slug(spec.xc)}_{slug(spec.basis)}_{slug(spec.method)}_{short}_{digest}"


def molecule_file_stem(mol: Molecule) -> str:
    """'qm9:123' -> 'qm9_000123'; another name -> its filesystem-safe form."""
    m = re.fullmatch(r"qm9:(\d+)", mol.name or "")
    if m:
        return f"qm9_{int(m.group(1)):06d}"
    stem = re.sub(r"[^A-Za-z0-9.+-]+", "_", mol.name or "").strip("_.")
    if not stem:
        raise mol.error("a molecule to label needs a name (it keys the result file)")
    return stem


def n_heavy(mol: Molecule) -> int:
    return sum(e != "H" for e in mol.elements)


# ----------------------------------------------------------------------------- QM9 molecules
def qm9_molecules(ids: Iterable[int] | None = None, max_heavy_atoms: int | None = None,
                  sample: int | None = None, seed: int = 0,
                  min_heavy_atoms: int | None = None) -> tuple[list[Molecule], list[dict]]:
    """QM9 molecules from the embedded qm9pack data, with exact coordinates and QM9's properties.

    Filters apply in turn: `ids` (QM9 ids), `min_heavy_atoms` / `max_heavy_atoms` (non-H atoms),
    then a seeded random `sample` of N of what is left (e.g. min 7, max 9, sample 150: the issue's
    sample of the molecules QM9 is made of). Returns (molecules in id order, requested ids that are not in
    the data, each {'id', 'reason'}).
    """
    from .. import qm9_sources as src

    wanted = None if ids is None else {int(i) for i in ids}
    mols: list[Molecule] = []
    seen: set[int] = set()
    last = max(wanted) if wanted else None
    for row in src.iter_qm9pack_rows():  # rows come in id order
        qid = int(row["Index"])
        if last is not None and qid > last:
            break
        if wanted is not None and qid not in wanted:
            continue
        seen.add(qid)
        if max_heavy_atoms is not None or min_heavy_atoms is not None:
            heavy = sum(s.strip(" '\"") not in ("H", "h") for s in row["Elements"].strip("[]").split(","))
            if (max_heavy_atoms is not None and heavy > max_heavy_atoms) or (
                    min_heavy_atoms is not None and heavy < min_heavy_atoms):
                continue
        mols.append(src.molecule_from_qm9pack_row(row))
    missing = []
    if wanted is not None:
        skip = src.uncharacterized_ids()
        missing = [{"id": q, "reason": "uncharacterized in QM9 (excluded from the data)" if q in skip else "not a QM9 id"}
                   for q in sorted(wanted - seen)]
    if sample is not None and sample < len(mols):
        pick = np.sort(np.random.default_rng(seed).choice(len(mols), size=sample, replace=False))
        mols = [mols[i] for i in pick]
    return mols, missing


def _reference(mol: Molecule) -> dict:
    """QM9's own dipole norm and polarizability for the molecule, when it has them."""
    p = mol.properties or {}
    ref = {}
    for k in ("mu_debye", "alpha_bohr3"):
        if p.get(k) is not None:
            ref[k] = float(p[k])
    if p.get("alpha_tensor_bohr3") is not None:
        ref["alpha_tensor_bohr3"] = np.asarray(p["alpha_tensor_bohr3"], dtype=float).tolist()
    return ref


# ----------------------------------------------------------------------------- the task (runs on a worker)
def _jsonable(x):
    """Engine output -> strict JSON values (arrays to lists, NaN/inf to None)."""
    if hasattr(x, "to_dict"):
        x = x.to_dict()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if x is None or isinstance(x, str):
        return x
    return str(x)


def _not_converged(result: dict) -> str | None:
    """The engine's own report that an SCF or response solver did not converge, if any."""
    meta = result.get("metadata") or {}
    for where in (result, meta):
        for k, v in where.items():
            if "converged" in str(k).lower() and v is False:
                return f"{k} is False"
    return None


def _header(task: dict) -> dict:
    return {"format": RESULT_FORMAT, "id": task["id"], "name": task["name"], "qm9_id": task.get("qm9_id"),
            "smiles": task.get("smiles"), "formula": task["formula"], "n_atoms": len(task["elements"]),
            "n_heavy": task["n_heavy"], "key": task["key"], "spec": task["spec"], "code_version": task["code_version"],
            "reference_qm9": task.get("reference", {}),
            "geometry": {"elements": task["elements"], "positions_angstrom": task["positions"],
                         "charge": task["charge"], "multiplicity": task["multiplicity"]}}


def compute_label(task: dict) -> dict:
    """Worker side: compute one molecule and write its result (or its error) file atomically.
    Returns a small summary: {'id', 'status', 'wall_s', 'error'?}."""
    t0 = time.time()
    spec = task["spec"]
    where = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        mol = Molecule(tuple(task["elements"]), np.asarray(task["positions"]), charge=task["charge"],
                       multiplicity=task["multiplicity"], name=task["name"], source=task.get("source"),
                       smiles=task.get("smiles"))
        from . import response_properties

        raw = response_properties(mol, xc=spec["xc"], basis=spec["basis"], method=spec["method"],
                                  threads=spec["threads"], **spec["options"])
        result = _jsonable(raw)
        bad = _not_converged(result)
        if bad:
            raise RuntimeError(f"{task['name']}: not converged ({bad})")
    except Exception as exc:  # every failure is recorded, then the farm goes on
        wall = time.time() - t0
        err = f"{type(exc).__name__}: {exc}"
        atomic_write_json(task["error_path"], {**_header(task), "status": "error", "error": err,
                                               "traceback": traceback.format_exc(), "wall_s": round(wall, 3),
                                               "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **where})
        return {"id": task["id"], "status": "error", "error": err, "wall_s": wall}
    wall = time.time() - t0
    atomic_write_json(task["path"], {**_header(task), "status": "ok", "result": result, "wall_s": round(wall, 3),
                                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **where})
    try:
        os.unlink(task["error_path"])  # a retried molecule that now worked is no longer a failure
    except FileNotFoundError:
        pass
    return {"id": task["id"], "status": "ok", "wall_s": wall}


# ----------------------------------------------------------------------------- the farm (client side)
@dataclass
class FarmSummary:
    """What one run did. `failures`: every failed molecule of this key, this run or earlier."""

    out: Path
    key: str
    n_selected: int
    n_skipped_done: int
    n_skipped_failed: int
    n_submitted: int
    n_ok: int
    n_failed: int
    n_left: int
    stopped_by_limit: bool
    seconds: float
    failures: list[dict]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def _existing(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.json") if not p.name.startswith(".") and p.name != "key.json"}


def _failure_list(failed_dir: Path, done: set[str]) -> list[dict]:
    out = []
    for p in sorted(failed_dir.glob("*.json")):
        if p.name.startswith(".") or p.name == "key.json" or p.stem in done:
            continue
        try:
            rec = json.loads(p.read_text())
            out.append({"id": p.stem, "name": rec.get("name"), "error": rec.get("error")})
        except (OSError, json.JSONDecodeError) as exc:
            out.append({"id": p.stem, "name": None, "error": f"unreadable error file {p}: {exc}"})
    return out


def _order(mols: Sequence[Molecule], order: str) -> list[Molecule]:
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; valid: {', '.join(ORDERS)}")
    qid = lambda m: (m.properties or {}).get("qm9_id", 0)
    if order == "id":
        return sorted(mols, key=lambda m: (qid(m), m.name))
    return sorted(mols, key=lambda m: (n_heavy(m), m.n_atoms, qid(m), m.name))  # cheapest first


def _make_task(mol: Molecule, stem: str, key: str, version: str, spec: LabelSpec, res_dir: Path, fail_dir: Path) -> dict:
    return {"id": stem, "name": mol.name, "qm9_id": (mol.properties or {}).get("qm9_id"), "smiles": mol.smiles,
            "formula": mol.formula, "n_heavy": n_heavy(mol), "elements": list(mol.elements),
            "positions": mol.positions.tolist(), "charge": mol.charge, "multiplicity": mol.multiplicity,
            "source": mol.source, "reference": _reference(mol), "key": key, "code_version": version,
            "spec": asdict(spec), "path": str(res_dir / f"{stem}.json"), "error_path": str(fail_dir / f"{stem}.json")}


def _client_error(task: dict, error: str, wall: float) -> dict:
    """A failure seen by the client (worker death, timeout): recorded like a worker's own."""
    atomic_write_json(task["error_path"], {**_header(task), "status": "error", "error": error, "traceback": None,
                                           "wall_s": round(wall, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                           "host": socket.gethostname(), "pid": None})
    return {"id": task["id"], "status": "error", "error": error, "wall_s": wall}


def _start_client(workers: int | None, threads: int, scheduler: str | None):
    """(client, cluster or None): a LocalCluster of processes, or a connection to `scheduler`."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    workers = workers or max(1, (os.cpu_count() or 1) // threads)
    env = {v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    # a task whose worker dies is a failure of that molecule at once (recorded), not retried 3 times
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=None,
                               env=env, silence_logs=logging.CRITICAL)
        client = Client(cluster)
    return client, cluster


def run_farm(molecules: Sequence[Molecule], out: str | os.PathLike, spec: LabelSpec | None = None, *,
             workers: int | None = None, scheduler: str | None = None, limit_minutes: float | None = None,
             task_timeout_minutes: float | None = None, retry_failed: bool = False, order: str = "size",
             progress: bool = True, log: Callable[[str], None] = print) -> FarmSummary:
    """Label `molecules` into `out` (see the module docstring for the layout); resumable.

    Args:
        workers: worker processes of the LocalCluster (default: cores // spec.threads).
        scheduler: address of a running Dask scheduler (tcp://host:8786) to use instead.
        limit_minutes: stop submitting new molecules after this long; the ones running finish,
            then the call returns (chunked runs: rerun to go on).
        task_timeout_minutes: a molecule still running after this long is recorded as failed
            and its worker restarted.
        retry_failed: compute again the molecules that failed before.
        order: 'size' (fewest heavy atoms first: a time-limited run covers the most molecules)
            or 'id'.
    """
    from distributed import wait
    from distributed.client import FIRST_COMPLETED

    spec = spec or LabelSpec()
    out = Path(out).resolve()
    t_start = time.time()
    version = code_version()
    key = result_key(spec, version)
    res_dir, fail_dir = out / "results" / key, out / "failed" / key
    res_dir.mkdir(parents=True, exist_ok=True)
    fail_dir.mkdir(parents=True, exist_ok=True)
    key_info = {"key": key, "spec": asdict(spec), "code_version": version, "format": RESULT_FORMAT}
    for d in (res_dir, fail_dir):
        if not (d / "key.json").exists():
            atomic_write_json(d / "key.json", key_info)

    stems: dict[str, Molecule] = {}
    for m in _order(molecules, order):
        s = molecule_file_stem(m)
        if s in stems:
            raise MoleculeError(m.source, m.index, f"{m.name}: two molecules map to the same result file {s}.json")
        stems[s] = m
    done, failed = _existing(res_dir), _existing(fail_dir) - _existing(res_dir)
    todo = [s for s in stems if s not in done and (retry_failed or s not in failed)]
    tasks, unprepared = {}, []
    for s in todo:  # a molecule that cannot even be described as a task is a failure of its own
        try:
            tasks[s] = _make_task(stems[s], s, key, version, spec, res_dir, fail_dir)
        except Exception as exc:
            m = stems[s]
            atomic_write_json(fail_dir / f"{s}.json", {
                "format": RESULT_FORMAT, "id": s, "name": m.name, "qm9_id": (m.properties or {}).get("qm9_id"),
                "key": key, "spec": asdict(spec), "code_version": version, "status": "error",
                "error": f"{type(exc).__name__}: {exc} (preparing the task)", "traceback": traceback.format_exc(),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            unprepared.append(s)
            log(f"FAILED {m.name}: {type(exc).__name__}: {exc} (preparing the task)")
    n_skip_done = sum(s in done for s in stems)
    n_skip_failed = sum(s in failed for s in stems) if not retry_failed else 0
    log(f"{len(stems)} molecules at {spec.xc}/{spec.basis} ({spec.method}), key {key}: {n_skip_done} done before, "
        + (f"{n_skip_failed} failed before and skipped (retry_failed / --retry-failed to retry), " if n_skip_failed else "")
        + f"{len(todo)} to do")
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run = {"run_id": f"{started}-{os.getpid()}", "started": started, "finished": None, "key": key,
           "n_selected": len(stems), "n_todo": len(todo), "workers": workers, "scheduler": scheduler, "limit_minutes": limit_minutes, "argv": sys.argv,
           "host": platform.node()}
    write_manifest(out, run)  # a killed run stays on record, with finished = null
    n_ok, n_failed, n_submitted = 0, len(unprepared), 0
    timed_out: set[str] = set()  # stems given up on; one may still finish before its worker restarts
    stopped = False
    deadline = t_start + 60 * limit_minutes if limit_minutes is not None else None
    if tasks and deadline is not None and time.time() >= deadline:
        stopped = True
        log(f"time limit of {limit_minutes} min reached before the first molecule: nothing submitted")
    if tasks and not stopped:
        from tqdm.auto import tqdm

        client, cluster = _start_client(workers, spec.threads, scheduler)
        old_term = None
        if threading.current_thread() is threading.main_thread():  # SIGTERM (a batch system's time limit) = Ctrl-C
            old_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
        bar = tqdm(total=len(tasks), unit="mol", desc=f"label {spec.xc}/{spec.basis}", disable=not progress, smoothing=0.1)
        inflight: dict = {}  # future -> (task, submit time)
        queue = iter(tasks)
        try:
            while True:
                # exactly one task per worker thread in flight: a task starts when it is submitted,
                # so the time since submission is its running time (for timeouts); asked each
                # round, since the workers of a cluster may come and go
                window = max(1, sum(client.nthreads().values()))
                run["threads_total"] = max(run.get("threads_total", 0), window)
                if deadline is not None and time.time() >= deadline and not stopped:
                    stopped = True
                    log(f"time limit of {limit_minutes} min reached: no new molecules; waiting for {len(inflight)} running")
                while not stopped and len(inflight) < window:
                    s = next(queue, None)
                    if s is None:
                        break
                    task = tasks[s]
                    fut = client.submit(compute_label, task, key=f"label-{key}-{s}", pure=False)
                    inflight[fut] = (task, time.time())
                    n_submitted += 1
                if not inflight:
                    break
                try:
                    finished, _ = wait(list(inflight), timeout=1.0, return_when=FIRST_COMPLETED)
                except TimeoutError:
                    finished = set()
                now = time.time()
                for fut in list(finished):
                    task, t_sub = inflight.pop(fut)
                    try:
                        r = fut.result()
                    except Exception as exc:  # worker died (KilledWorker), cancelled, ...
                        r = _client_error(task, f"{type(exc).__name__}: {exc} (the worker running {task['name']} "
                                                f"died or the task was lost)", now - t_sub)
                    fut.release()
                    n_ok += r["status"] == "ok"
                    n_failed += r["status"] != "ok"
                    if r["status"] != "ok":
                        bar.write(f"FAILED {task['name']}: {r['error']}")
                    bar.update(1)
                    bar.set_postfix(failed=n_failed)
                if task_timeout_minutes is not None:
                    for fut, (task, t_sub) in list(inflight.items()):
                        if now - t_sub > 60 * task_timeout_minutes and not fut.done():
                            r = _client_error(task, f"TimeoutError: {task['name']} still running after "
                                                    f"{task_timeout_minutes} min; its worker was restarted", now - t_sub)
                            busy = [w for w, keys in client.processing().items() if fut.key in keys]
                            inflight.pop(fut)
                            fut.cancel()
                            if busy:
                                try:
                                    client.restart_workers(busy)
                                except Exception as exc:  # the molecule is recorded either way
                                    log(f"could not restart worker {busy}: {exc}")
                            n_failed += 1
                            timed_out.add(task["id"])
                            bar.write(f"FAILED {task['name']}: {r['error']}")
                            bar.update(1)
                            bar.set_postfix(failed=n_failed)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what finished is on disk; the manifest says the run was cut short
            run["interrupted"] = True
            log(f"interrupted: {len(inflight)} running molecule(s) abandoned; rerun to go on")
        finally:
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            bar.close()
            client.close()
            if cluster is not None:
                cluster.close()
    done_now = _existing(res_dir)
    late = timed_out & set(done_now)  # finished in the moment between the timeout and the restart
    n_ok, n_failed = n_ok + len(late), n_failed - len(late)
    failures = _failure_list(fail_dir, done_now)
    n_left = len([s for s in todo if s not in done_now and s not in {f["id"] for f in failures}])
    summary = FarmSummary(out, key, len(stems), n_skip_done, n_skip_failed, n_submitted, n_ok, n_failed,
                          n_left, stopped, round(time.time() - t_start, 2), failures)
    run.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), n_submitted=n_submitted, n_ok=n_ok, n_failed=n_failed,
               n_left=summary.n_left, stopped_by_limit=stopped, seconds=summary.seconds)
    write_manifest(out, run)
    return summary


def write_manifest(out: Path, run: dict | None = None) -> dict:
    """Rewrite out/manifest.json from the files on disk (counts and failures of every key),
    adding `run` to the list of runs (or updating the record with its run_id)."""
    out = Path(out)
    path = out / "manifest.json"
    runs = []
    if path.exists():
        try:
            runs = json.loads(path.read_text()).get("runs", [])
        except (OSError, json.JSONDecodeError):
            runs = []  # derived data: rebuilt from the result files
    if run is not None:  # a run is recorded when it starts and updated when it ends
        runs = [r for r in runs if r.get("run_id") != run.get("run_id")] + [run]
    keys = {}
    for d in sorted((out / "results").glob("*/")):
        info = json.loads((d / "key.json").read_text()) if (d / "key.json").exists() else {}
        done = _existing(d)
        fails = _failure_list(out / "failed" / d.name, done)
        keys[d.name] = {**info, "n_done": len(done), "n_failed": len(fails), "failures": fails}
    manifest = {"format": "qmlrp-qm-labels-manifest-1", "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "keys": keys, "runs": runs}
    atomic_write_json(path, manifest)
    return manifest
