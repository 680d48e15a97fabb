"""QM9 targets with units in their names, computed from raw QM9 properties.

Conversions: 1 hartree = 27.211386245988 eV (CODATA 2018). Frequencies: QM9 stores harmonic
frequencies (cm^-1); 334 qm9pack rows hold the list twice back to back (the second copy is the
right one), 3 molecules have one imaginary mode stored as a negative number; `freqs_cm1`
keeps the real modes only, sorted ascending, and `n_imaginary` counts the others. QM9's ZPVE
is the unscaled harmonic value: 0.5 * sum(real frequencies), which `tests` check.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

HARTREE_EV = 27.211386245988
HARTREE_CM1 = 219474.6313632


@dataclass(frozen=True)
class Target:
    """name: with unit suffix; unit: printable unit; kind: 'scalar', 'vector' (variable
    length, padded with masks in batches), 'tensor' (fixed shape) or 'atom' (one per atom)."""

    name: str
    unit: str
    kind: str
    description: str
    source: str  # the raw QM9 property it comes from
    scale: float = 1.0


_T = [
    Target("alpha_bohr3", "bohr^3", "scalar", "isotropic static polarizability", "alpha_bohr3"),
    Target("zpve_ev", "eV", "scalar", "zero-point vibrational energy (unscaled harmonic)", "zpve_ha", HARTREE_EV),
    Target("omega1_cm1", "cm^-1", "scalar", "highest harmonic vibrational frequency", "freqs_raw_cm1"),
    Target("mu_debye", "D", "scalar", "dipole moment norm", "mu_debye"),
    Target("homo_ev", "eV", "scalar", "HOMO energy", "homo_ha", HARTREE_EV),
    Target("lumo_ev", "eV", "scalar", "LUMO energy", "lumo_ha", HARTREE_EV),
    Target("gap_ev", "eV", "scalar", "HOMO-LUMO gap", "gap_ha", HARTREE_EV),
    Target("r2_bohr2", "bohr^2", "scalar", "electronic spatial extent <R^2>", "r2_bohr2"),
    Target("u0_ev", "eV", "scalar", "internal energy at 0 K", "u0_ha", HARTREE_EV),
    Target("u298_ev", "eV", "scalar", "internal energy at 298.15 K", "u_ha", HARTREE_EV),
    Target("h298_ev", "eV", "scalar", "enthalpy at 298.15 K", "h_ha", HARTREE_EV),
    Target("g298_ev", "eV", "scalar", "free energy at 298.15 K", "g_ha", HARTREE_EV),
    Target("cv_cal_molk", "cal/(mol K)", "scalar", "heat capacity at 298.15 K", "cv_cal_molk"),
    Target("rot_a_ghz", "GHz", "scalar", "rotational constant A", "rot_a_ghz"),
    Target("rot_b_ghz", "GHz", "scalar", "rotational constant B", "rot_b_ghz"),
    Target("rot_c_ghz", "GHz", "scalar", "rotational constant C", "rot_c_ghz"),
    Target("n_imaginary", "count", "scalar", "number of imaginary harmonic modes", "freqs_raw_cm1"),
    Target("freqs_cm1", "cm^-1", "vector", "real harmonic frequencies, sorted ascending", "freqs_raw_cm1"),
    Target("alpha_tensor_bohr3", "bohr^3", "tensor", "static polarizability tensor (3, 3)", "alpha_tensor_bohr3"),
    Target("mulliken_e", "e", "atom", "Mulliken partial charges", "mulliken_e"),
    # not in QM9: joined from a QM label table (`molgraph.labels`, `qmlrp label collect`); NaN = no label
    Target("beta_par_au", "au", "scalar", "static first hyperpolarizability along the dipole, Taylor convention",
           "label:beta_par"),
    Target("beta_vec_au", "au", "scalar", "norm of the static first hyperpolarizability vector, Taylor convention",
           "label:beta_vec_norm"),
]
TARGETS: Mapping[str, Target] = MappingProxyType({t.name: t for t in _T})
# QM9's own scalars (stored in the cache); label targets come from a table at load time
SCALAR_TARGETS: tuple[str, ...] = tuple(t.name for t in _T if t.kind == "scalar" and not t.source.startswith("label:"))
LABEL_TARGETS: tuple[str, ...] = tuple(t.name for t in _T if t.source.startswith("label:"))


def clean_frequencies(raw, n_atoms: int) -> tuple[np.ndarray, int, bool]:
    """(real frequencies sorted, number of imaginary modes, whether the row was doubled)."""
    f = np.asarray(raw, dtype=np.float64)
    doubled = False
    max_modes = max(3 * n_atoms - 5, 0)
    if f.size > max_modes and f.size % 2 == 0:
        f = f[f.size // 2:]
        doubled = True
    imaginary = int((f < 0).sum())
    return np.sort(f[f >= 0]), imaginary, doubled


def compute_targets(properties: Mapping, n_atoms: int) -> dict[str, object]:
    """Raw QM9 properties -> {target name: float | ndarray}. Missing sources give NaN."""
    out: dict[str, object] = {}
    freqs, n_imag, _ = clean_frequencies(properties.get("freqs_raw_cm1", ()), n_atoms)
    for t in _T:
        if t.name in SCALAR_TARGETS and t.source != "freqs_raw_cm1":
            v = properties.get(t.source)
            out[t.name] = float(v) * t.scale if v is not None else float("nan")
    out["omega1_cm1"] = float(freqs[-1]) if freqs.size else float("nan")
    out["n_imaginary"] = float(n_imag)
    out["freqs_cm1"] = freqs
    tensor = properties.get("alpha_tensor_bohr3")
    out["alpha_tensor_bohr3"] = np.array(tensor, dtype=np.float64) if tensor is not None else np.full((3, 3), np.nan)
    mull = properties.get("mulliken_e")
    out["mulliken_e"] = np.array(mull, dtype=np.float64) if mull is not None else np.full(n_atoms, np.nan)
    return out


def n_harmonic_modes(positions) -> int:
    """Harmonic modes of a molecule from its (n, 3) positions: 3N-6, or 3N-5 when its atoms lie
    on a line (2 atoms: 1)."""
    p = np.asarray(positions, dtype=np.float64)
    n = len(p)
    if n < 3:
        return max(3 * n - 5, 0)
    sv = np.linalg.svd(p - p.mean(0), compute_uv=False)
    return 3 * n - 5 if sv[1] < 1e-3 else 3 * n - 6
