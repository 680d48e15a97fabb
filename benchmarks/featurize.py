"""Featurization speed, cache size and load time for all of QM9, side by side with DeepChem.

    python benchmarks/featurize.py [--workers N] [--step 10] [--keep DIR]

Prints: wall time to featurize all 130,831 molecules into a fresh cache (goal <= 90 s on
2 cores), cache size on disk (goal <= 2 GB), time to load it in a fresh process (goal <= 5 s),
random access rate; then single-core rates of our featurizer (3D perception, explicit H,
21 + 13 features) and DeepChem's WeaveFeaturizer (from SMILES, no H, no 3D) on the same
molecules (every `step`-th QM9 molecule), where deepchem is installed. Not a test.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--step", type=int, default=10, help="single-core comparison on every step-th molecule")
    ap.add_argument("--keep", help="build the cache here and keep it (default: a temp dir, removed)")
    ap.add_argument("--skip-full", action="store_true", help="only the single-core comparison")
    args = ap.parse_args()

    import molgraph
    from molgraph import qm9
    from molgraph.qm9_sources import iter_qm9pack_rows, molecule_from_qm9pack_row

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; python {platform.python_version()}; "
          f"rdkit {__import__('rdkit').__version__}; molgraph {molgraph.__version__}")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="qmlrp-bench-"))
    try:
        if not args.skip_full:
            t0 = time.perf_counter()
            ds = qm9.load(cache_root=root, workers=args.workers, progress=False, rebuild=True, log=lambda m: None)
            wall = time.perf_counter() - t0
            n = len(ds) + len(ds.failures)
            print(f"full QM9: {len(ds)} featurized, {len(ds.failures)} failed, in {wall:.1f} s wall "
                  f"with {args.workers} workers ({n / wall:.0f} molecules/s)   [goal <= 90 s]")
            size = du(ds.path)
            print(f"cache size: {size / 1e6:.0f} MB   [goal <= 2000 MB]")
            code = ("import time, sys; import molgraph; t = time.perf_counter(); "
                    f"ds = molgraph.qm9.load(cache_root={str(root)!r}, progress=False); "
                    "print(time.perf_counter() - t, len(ds))")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
            print(f"load in a fresh process: {float(out[0]):.2f} s for {out[1]} molecules (checksum of the source included)   [goal <= 5 s]")
            import numpy as np

            idx = np.random.default_rng(0).integers(0, len(ds), 5000)
            t0 = time.perf_counter()
            for i in idx:
                ds[int(i)]
            dt = time.perf_counter() - t0
            print(f"random access: {len(idx) / dt:.0f} MolGraphs/s (dense tensors with targets, one core)")

        rows = [r for k, r in enumerate(iter_qm9pack_rows()) if k % args.step == 0]
        mols = [molecule_from_qm9pack_row(r) for r in rows]
        f = molgraph.MolecularGraphFeaturizer()
        t0 = time.perf_counter()
        for m in mols:
            f.encode(m)
        ours = len(mols) / (time.perf_counter() - t0)
        print(f"\nsingle core, {len(mols)} QM9 molecules (every {args.step}th):")
        print(f"  molgraph MolecularGraphFeaturizer (3D, explicit H):  {ours:8.0f} molecules/s")
        try:
            import logging

            logging.disable(logging.WARNING)
            from deepchem.feat import WeaveFeaturizer
        except Exception as exc:  # deepchem is optional: pip install deepchem
            print(f"  deepchem WeaveFeaturizer: not installed ({type(exc).__name__}); pip install deepchem to compare")
            return
        smiles = [r["SMILES"] for r in rows]
        wf = WeaveFeaturizer()
        t0 = time.perf_counter()
        wf.featurize(smiles)
        theirs = len(smiles) / (time.perf_counter() - t0)
        import deepchem

        print(f"  deepchem {deepchem.__version__} WeaveFeaturizer (SMILES, no H):  {theirs:8.0f} molecules/s")
        print(f"  ratio molgraph / deepchem: {ours / theirs:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
