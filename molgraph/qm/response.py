r"""Static electric response of closed-shell molecules: dipole, polarizability, first
hyperpolarizability (RHF and RKS with any LDA/GGA/hybrid functional PySCF knows).

Conventions
-----------
All quantities are in atomic units, in the frame of the input coordinates (no reorientation),
with the origin at (0, 0, 0) (this matters only for the dipole of a charged molecule). A uniform
static field F adds V = -mu.F = +sum_k F_k r_k (per electron) to the one-electron Hamiltonian,
so with the energy E(F):

    mu_i = -dE/dF_i,   alpha_ij = -d2E/dF_i dF_j,   beta_ijk = -d3E/dF_i dF_j dF_k,

i.e. mu_i(F) = mu_i + alpha_ij F_j + 1/2 beta_ijk F_j F_k: the Taylor ("B") convention in which
DALTON prints quadratic response (beta = <<mu; mu, mu>>). The perturbation-series ("T")
convention is half of it. Derived quantities:

    beta_vec_i = 1/3 sum_j (beta_ijj + beta_jij + beta_jji),
    beta_par   = 3/5 beta_vec . mu / |mu|     (undefined when |mu| is ~0: returned as NaN with
                                               `beta_parallel_defined = False`).

Analytic response (method="analytic")
-------------------------------------
Closed-shell SCF, real orbitals, MO basis {C} (orthonormal), occupations D0 = diag(n),
n_i = 2 (occupied) / 0 (virtual), canonical Fock matrix F0 = diag(eps). A unitary orbital
rotation with antisymmetric kappa (only virtual-occupied blocks) gives the density

    D(kappa) = e^kappa D0 e^-kappa = D0 + [k,D0] + 1/2 [k,[k,D0]] + 1/6 [k,[k,[k,D0]]] + ...

and the field-dependent energy functional

    W(kappa, F) = Tr(h D) + 1/2 Tr(D G[D]) + E_xc[rho_D] + sum_k F_k Tr(r_k D),

with G[D] = J[D] - c_x/2 K[D] (c_x = fraction of exact exchange, range-separated parts
included by PySCF). W is stationary in kappa at every F. Wigner's 2n+1 rule: inserting the
first-order rotation kappa(F) = sum_x F_x k_x (the error is O(F^2), the energy error O(F^4))
gives the exact third derivative. Write D = D0 + D1 + D2 + D3 by order in F (D1 = sum_x F_x
D^x, D^x = [k_x, D0]), expand E_xc to third order in the density change,

    E_xc[rho0 + d] = E_xc[rho0] + int v_xc d + 1/2 int f_xc d d + 1/6 int g_xc d d d + ...,

and collect the third-order terms; everything that is linear in D collapses into the
unperturbed Fock matrix F0 (G is linear, so it has no third-order term of its own):

    W3 = Tr(F0 D3) + Tr(F1 D2) + 1/6 int g_xc rho1 rho1 rho1,
    F1 = sum_x F_x F^x,  F^x = r_x + G[D^x] + int f_xc rho^x    (first-order Fock matrix).

With D2 = 1/2 sum F_y F_z [k_y,[k_z,D0]] and D3 = 1/6 sum F_x F_y F_z [k_x,[k_y,[k_z,D0]]],
differentiating three times (sum over the 6 permutations s of (x, y, z)):

    d3E/dF_x dF_y dF_z = sum_s { 1/6 Tr(F0 [k_s1,[k_s2,[k_s3,D0]]])
                               + 1/2 Tr(F^s1 [k_s2,[k_s3,D0]]) }
                         + sum_grid w g_abc(rho0) rho^x_a rho^y_b rho^z_c,

where, for the XC kernel derivative, a, b, c run over PySCF's "effective" variables of the
functional: (rho) for LDA, (rho, d rho/dx, d rho/dy, d rho/dz) for GGA (plus tau for
meta-GGA), g_abc = d3 e_xc / da db dc from `numint.eval_xc_eff(xc, rho0, deriv=3)`, and
rho^x_a the same variables of the first-order density D^x. beta_xyz = minus that number.
For HF the last term is absent; for Kohn-Sham it is the term that the RHF formula (and the
`pyscf-properties` hyperpolarizability code) misses.

The first-order rotations solve the static coupled-perturbed HF/KS equations (PySCF's
response function `mf.gen_response`, solved by preconditioned conjugate gradients),

    (eps_a - eps_i) U^x_ai + [G[D^x] + f_xc rho^x]_ai = -(r_x)_ai,   k_x[a,i] = U^x_ai,
    k_x[i,a] = -U^x_ai,  D^x = [k_x, D0]  (AO: 2 (C_v U C_o^T + C_o U^T C_v^T)),

and alpha_xy = -Tr(r_x D^y). Cost: one SCF, three CPHF solutions (~10-20 Fock builds of 3
densities) and one pass over the grid with third derivatives of the functional.

Finite field (method="finite_field")
------------------------------------
An independent check: SCF (tight convergence) under fields 0, +-h e_j, and +-h e_j +-h e_k
added to the core Hamiltonian; alpha and beta are central differences of the dipole:

    alpha_ij  = [mu_i(+h e_j) - mu_i(-h e_j)] / 2h,
    beta_ijj  = [mu_i(+h e_j) - 2 mu_i(0) + mu_i(-h e_j)] / h^2,
    beta_ijk  = [mu_i(h,h) - mu_i(h,-h) - mu_i(-h,h) + mu_i(-h,-h)] / 4h^2   (j != k).

19 SCF calculations; the truncation error is O(h^2 gamma).
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..molecule import Molecule
from .basis import (BASIS_DEFINITIONS, default_basis_definition, gaussian_basis, gaussian_default_convention,
                    mixed_projector, restrict_scf_to_span)

ENGINE_VERSION = "molgraph.qm.response 1.0"
BOHR_PER_ANGSTROM = 1.0 / 0.52917721092
# |mu| below which beta_parallel is undefined (au; 1e-3 au = 0.0025 D, well below any real
# QM9 dipole and well above the numerical noise of a symmetric molecule's dipole).
DIPOLE_THRESHOLD_AU = 1e-3

# Names resolved to an explicit libxc code so that a PySCF configuration switch
# (B3LYP_WITH_VWN5) cannot change them: Gaussian's B3LYP uses VWN(RPA) = libxc
# HYB_GGA_XC_B3LYP (id 402); DALTON's B3LYP uses VWN5 = libxc HYB_GGA_XC_B3LYP5 (id 475).
XC_ALIASES = {
    "b3lyp": "HYB_GGA_XC_B3LYP",
    "b3lyp-g": "HYB_GGA_XC_B3LYP",
    "b3lypg": "HYB_GGA_XC_B3LYP",
    "b3lyp5": "HYB_GGA_XC_B3LYP5",
}
METHODS = ("analytic", "finite_field")


class QMError(RuntimeError):
    """A quantum-chemistry calculation failed; names the molecule and the problem."""

    def __init__(self, molecule: str, problem: str):
        self.molecule = molecule
        self.problem = problem
        super().__init__(f"{molecule}: {problem}")

    def __reduce__(self):  # survive pickling across process boundaries (Dask workers)
        return (type(self), (self.molecule, self.problem))


class QMInputError(QMError, ValueError):
    """The molecule or the options cannot be computed (open shell, odd electron count, ...)."""


class SCFNotConverged(QMError):
    """The SCF (or the coupled-perturbed equations) did not converge."""


@dataclass(frozen=True)
class ResponseResult:
    """Static response properties of one molecule (atomic units, input frame).

    Fields:
        name: the molecule's name (e.g. 'qm9:23').
        energy: total SCF energy at zero field (Eh).
        dipole: (3,) dipole moment, origin at (0,0,0) (e a0).
        polarizability: (3, 3) static alpha (e^2 a0^2 / Eh).
        alpha_iso: trace(alpha) / 3.
        beta: (3, 3, 3) static first hyperpolarizability, Taylor/"B" convention (e^3 a0^3 / Eh^2).
        beta_vector: (3,) beta_vec_i = 1/3 sum_j (beta_ijj + beta_jij + beta_jji).
        beta_vector_norm: |beta_vector|.
        beta_parallel: 3/5 beta_vector . mu_hat; NaN when `beta_parallel_defined` is False.
        beta_parallel_defined: False for |mu| < dipole_threshold (no permanent dipole).
        xc, xc_resolved: requested functional and what PySCF was given ('hf' for RHF).
        basis, basis_convention: basis name and '6d7f' (Gaussian/QM9) or 'spherical'/'cartesian'.
        basis_definition: whose exponents the name stands for: 'gaussian' (Gaussian's doubled
            d shell of 6-31G(2d...), as QM9 was run; `molgraph.qm.basis`) or 'pyscf'.
        method: 'analytic' or 'finite_field' (field_step set for the latter).
        charge, n_atoms, n_electrons, n_basis: system size (n_basis counts the functions of
            the basis convention, e.g. 6D/7F).
        density_fit, grids_level, conv_tol: numerical settings.
        scf_converged, scf_cycles: SCF status (a result only exists if it converged).
        pyscf_version, engine_version: code versions.
        wall_time_s, timings: total wall time and a breakdown (scf, cphf, beta, ...).
    """

    name: str
    energy: float
    dipole: np.ndarray
    polarizability: np.ndarray
    alpha_iso: float
    beta: np.ndarray
    beta_vector: np.ndarray
    beta_vector_norm: float
    beta_parallel: float
    beta_parallel_defined: bool
    dipole_norm: float
    xc: str
    xc_resolved: str
    basis: str
    basis_convention: str
    method: str
    charge: int
    n_atoms: int
    n_electrons: int
    n_basis: int
    density_fit: bool
    grids_level: int | None
    conv_tol: float
    field_step: float | None
    scf_converged: bool
    scf_cycles: int | None
    pyscf_version: str
    engine_version: str
    wall_time_s: float
    timings: dict = field(default_factory=dict)
    basis_definition: str = "pyscf"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (arrays become nested lists, NaN becomes None)."""
        out = {}
        for k, v in asdict(self).items():
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, float) and not np.isfinite(v):
                v = None
            out[k] = v
        return out


# --------------------------------------------------------------------------- derived quantities
def beta_vector(beta: np.ndarray) -> np.ndarray:
    """(3,) beta_vec_i = 1/3 sum_j (beta_ijj + beta_jij + beta_jji)."""
    b = np.asarray(beta)
    return (np.einsum("ijj->i", b) + np.einsum("jij->i", b) + np.einsum("jji->i", b)) / 3.0


def beta_parallel(beta: np.ndarray, dipole: np.ndarray, threshold: float = DIPOLE_THRESHOLD_AU) -> float:
    """3/5 beta_vec . mu/|mu|; NaN when |mu| < threshold (undefined without a dipole)."""
    mu = np.asarray(dipole, dtype=float)
    norm = float(np.linalg.norm(mu))
    if norm < threshold:
        return float("nan")
    return float(0.6 * beta_vector(beta) @ mu / norm)


# --------------------------------------------------------------------------- setup
def _molecule_label(molecule) -> str:
    name = getattr(molecule, "name", None) or "<unnamed>"
    src = getattr(molecule, "source", None)
    return name if not src or src in name else f"{name} ({src})"


def resolve_xc(xc: str) -> str:
    """'hf' -> 'hf'; Gaussian-style aliases (b3lyp) -> explicit libxc names; else unchanged."""
    key = xc.strip().lower()
    if key in ("hf", "rhf"):
        return "hf"
    return XC_ALIASES.get(key, xc.strip())


def build_mole(molecule: Molecule, basis: str, *, charge: int | None = None,
               basis_convention: str | None = None, max_memory: int = 4000, verbose: int = 0,
               basis_definition: str | None = None):
    """PySCF Mole for `molecule` (coordinates taken in Angstrom, no reorientation) and the
    projector onto the 6D/7F space (None unless basis_convention == '6d7f').

    basis_convention: '6d7f' (Gaussian's Cartesian d / pure f), 'spherical', 'cartesian', or
    None = Gaussian's default for that basis name (6D/7F for Pople basis sets).
    basis_definition: 'gaussian' (Gaussian's exponents where they differ from PySCF's: the
    doubled d shell of 6-31G(2d...)), 'pyscf', or None = 'gaussian' where it applies.
    """
    from pyscf import gto

    label = _molecule_label(molecule)
    conv = basis_convention or gaussian_default_convention(basis)
    definition = basis_definition or default_basis_definition(basis)
    if definition not in BASIS_DEFINITIONS:
        raise QMInputError(label, f"unknown basis_definition {definition!r}; choose {' or '.join(BASIS_DEFINITIONS)}")
    if definition == "gaussian" and default_basis_definition(basis) != "gaussian":
        raise QMInputError(label, f"basis_definition 'gaussian' is emulated only for 6-31G(2d...) names, not {basis!r}")
    if conv not in ("6d7f", "spherical", "cartesian"):
        raise QMInputError(label, f"unknown basis_convention {conv!r}; choose '6d7f', 'spherical' or 'cartesian'")
    elements = tuple(getattr(molecule, "elements", ()))
    pos = np.asarray(getattr(molecule, "positions", np.zeros((0, 3))), dtype=float)
    if len(elements) == 0:
        raise QMInputError(label, "molecule has no atoms")
    if pos.shape != (len(elements), 3) or not np.all(np.isfinite(pos)):
        raise QMInputError(label, f"positions must be a finite ({len(elements)}, 3) array, got shape {pos.shape}")
    if len(elements) > 1:
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(elements)) * 1e9
        i, j = np.unravel_index(np.argmin(d), d.shape)
        if d[i, j] < 0.3:
            raise QMInputError(label, f"atoms {i} ({elements[i]}) and {j} ({elements[j]}) are {d[i, j]:.3f} A apart")
    mult = int(getattr(molecule, "multiplicity", 1) or 1)
    if mult != 1:
        raise QMInputError(label, f"multiplicity {mult}: only closed-shell (singlet) molecules are supported")
    q = int(getattr(molecule, "charge", 0) if charge is None else charge)
    from ..molecule import ATOMIC_NUMBER

    n_el = sum(ATOMIC_NUMBER.get(el, 0) for el in elements) - q
    if n_el % 2:
        raise QMInputError(label, f"{n_el} electrons (charge {q}): a closed shell needs an even number")
    try:
        mol = gto.Mole()
        mol.atom = [(el, tuple(p)) for el, p in zip(elements, pos)]
        mol.unit = "Angstrom"
        mol.basis = gaussian_basis(basis, elements) if definition == "gaussian" else basis
        mol.charge = q
        mol.spin = 0
        mol.cart = conv in ("6d7f", "cartesian")
        mol.symmetry = False
        mol.verbose = verbose
        mol.max_memory = max_memory
        mol.output = os.devnull if verbose == 0 else None
        mol.build(parse_arg=False, dump_input=False)
    except Exception as exc:  # unknown basis for an element, odd electron count...
        raise QMInputError(label, f"cannot build the molecule in basis {basis!r}: {exc}") from exc
    x = mixed_projector(mol) if conv == "6d7f" else None
    mol.qmlrp_basis_definition = definition
    return mol, x, conv


def _make_scf(mol, x, xc, *, density_fit, grids_level, conv_tol, conv_tol_grad, max_cycle=100):
    from pyscf import dft, scf

    if xc == "hf":
        mf = scf.RHF(mol)
    else:
        mf = dft.RKS(mol)
        mf.xc = xc
        if grids_level is not None:
            mf.grids.level = grids_level
        if getattr(mf, "nlc", "") or mf._numint.libxc.is_nlc(xc):
            raise ValueError(f"functional {xc!r} has a non-local (VV10) part, whose third derivative is not implemented")
    if density_fit:
        mf = mf.density_fit()
    mf.conv_tol = conv_tol
    # orbital-gradient tolerance: the dipole error is of the order of the gradient, and finite
    # differences divide it by h^2
    mf.conv_tol_grad = conv_tol_grad
    mf.max_cycle = max_cycle
    mf.verbose = mol.verbose
    if x is not None:
        restrict_scf_to_span(mf, x)
    return mf


def _run_scf(mf, label, dm0=None, h1=None):
    """Run the SCF (optionally with a modified core Hamiltonian h1); one retry with a level
    shift and damping; raises SCFNotConverged."""
    if h1 is not None:
        mf.get_hcore = lambda *a, **k: h1
    mf.kernel(dm0=dm0)
    if not mf.converged:
        dm = mf.make_rdm1()
        mf.level_shift = 0.3
        mf.damp = 0.3
        mf.diis_start_cycle = 4
        mf.max_cycle = 2 * mf.max_cycle
        mf.kernel(dm0=dm)
        mf.level_shift = 0
        mf.damp = 0
    if not mf.converged:
        raise SCFNotConverged(label, f"SCF did not converge (conv_tol={mf.conv_tol:g}, xc={getattr(mf, 'xc', 'hf')})")
    return mf


def _nuclear_dipole(mol) -> np.ndarray:
    return np.einsum("i,ix->x", mol.atom_charges(), mol.atom_coords())


def _dipole(mol, dm, r_ao) -> np.ndarray:
    return _nuclear_dipole(mol) - np.einsum("xij,ji->x", r_ao, dm)


# --------------------------------------------------------------------------- analytic response
def _solve_cphf(fvind, e_ai, h1, tol, max_cycle=200):
    """Preconditioned conjugate gradients for (e_ai + A) U = -h1, all right-hand sides at once
    (one response build of the batch per iteration). A (the orbital Hessian minus its diagonal
    part) is symmetric and e_ai + A is positive definite for a stable closed-shell SCF.
    Returns U and the max-norm of the final residual."""
    u = -h1 / e_ai
    r = -h1 - (e_ai * u + fvind(u))
    z = r / e_ai
    p = z.copy()
    rz = np.einsum("kai,kai->k", r, z)
    for _ in range(max_cycle):
        res = float(np.abs(r).max())
        if res < tol:
            return u, res
        ap = e_ai * p + fvind(p)
        step = rz / np.einsum("kai,kai->k", p, ap)
        u = u + step[:, None, None] * p
        r = r - step[:, None, None] * ap
        z = r / e_ai
        rz_new = np.einsum("kai,kai->k", r, z)
        p = z + (rz_new / np.where(rz == 0, 1, rz))[:, None, None] * p
        rz = rz_new
    return u, float(np.abs(r).max())


def _jk_response(mf):
    """dms (k, nao, nao) symmetric -> the Coulomb/exact-exchange part of PySCF's CPHF
    response (`mf.gen_response(hermi=1)` without the XC kernel): J - c_x/2 K, with the same
    range-separated branches (DF tensors reused by `mf.get_jk`)."""
    from pyscf.scf import hf

    mol = mf.mol
    if not isinstance(mf, hf.KohnShamDFT):
        def jk(dms):
            vj, vk = mf.get_jk(mol, dms, hermi=1)
            return vj - 0.5 * vk
        return jk
    ni = mf._numint
    omega, alpha, hyb = ni.rsh_and_hybrid_coeff(mf.xc, mol.spin)
    if not ni.libxc.is_hybrid_xc(mf.xc):
        return lambda dms: mf.get_j(mol, dms, hermi=1)

    def jk(dms):
        if omega == 0:
            vj, vk = mf.get_jk(mol, dms, hermi=1)
            vk *= hyb
        elif alpha == 0:  # short-range exchange only
            vj = mf.get_j(mol, dms, hermi=1)
            vk = mf.get_k(mol, dms, hermi=1, omega=-omega) * hyb
        elif hyb == 0:  # long-range exchange only
            vj = mf.get_j(mol, dms, hermi=1)
            vk = mf.get_k(mol, dms, hermi=1, omega=omega) * alpha
        else:
            vj, vk = mf.get_jk(mol, dms, hermi=1)
            vk *= hyb
            vk += mf.get_k(mol, dms, hermi=1, omega=omega) * (alpha - hyb)
        return vj - 0.5 * vk
    return jk


class _MOGridKernel:
    """XC kernel part of the CPHF response, evaluated directly in the virtual-occupied MO
    block: the MO values (and gradients for GGA) on the grid are computed once and kept
    (blocks beyond the memory budget are recomputed at each use), and the ground-state
    kernel f_xc (times the grid weights) is computed once. For U (k, nvir, nocc),

        rho^k = 4 sum_ai U_ai phi_a phi_i,   grad rho^k = 4 sum_ai U_ai grad(phi_a phi_i),
        V^k_ai = sum_g w f_xc rho^k . (phi_a phi_i, grad(phi_a phi_i)),

    which is C_v^T [int f_xc rho^k] C_o, the quantity PySCF's `nr_rks_fxc` gives in the AO
    basis, at ~nvir nocc instead of ~nao^2 operations per grid point."""

    def __init__(self, mf, cv, co, max_memory):
        from pyscf import lib
        from pyscf.dft.numint import BLKSIZE

        ni, mol, grids = mf._numint, mf.mol, mf.grids
        if grids.coords is None:
            grids.build(with_non0tab=True)
        self.mf, self.ni, self.mol, self.grids = mf, ni, mol, grids
        self.xctype = ni._xc_type(mf.xc)
        self.deriv = 0 if self.xctype == "LDA" else 1
        self.ncomp = 1 if self.xctype == "LDA" else 4
        self.cvo = np.hstack([cv, co])
        self.nvir = cv.shape[1]
        nao, nmo = mol.nao_nr(), self.cvo.shape[1]
        ngrids = grids.coords.shape[0]
        comp = self.ncomp
        blk = int(max(200.0, max_memory * 0.1) * 1e6 / ((comp + 1) * nao * 8 * BLKSIZE))
        blk = max(4, min(blk, ngrids // BLKSIZE + 1, 1200)) * BLKSIZE
        self.blocks = list(lib.prange(0, ngrids, blk))
        budget = max(0.0, max_memory - lib.current_memory()[0]) * 0.7e6  # bytes
        self.cache = []
        used = 0
        rho0 = np.empty((comp, ngrids))  # ground-state density (and gradient) from the MOs
        for p0, p1 in self.blocks:
            mv, mocc = self._mo_values(p0, p1)
            rho0[0, p0:p1] = 2.0 * np.einsum("gi,gi->g", mocc[0], mocc[0])
            for c in range(1, comp):
                rho0[c, p0:p1] = 4.0 * np.einsum("gi,gi->g", mocc[0], mocc[c])
            size = comp * (p1 - p0) * nmo * 8
            if used + size <= budget:
                self.cache.append((mv, mocc))
                used += size
            else:
                self.cache.append(None)
        # f_xc (CPHF) and g_xc (third-order term of beta) at rho0, times the grid weights
        xc = ni.eval_xc_eff(mf.xc, rho0[0] if comp == 1 else rho0, deriv=3, xctype=self.xctype)
        self.wfxc = xc[2].reshape(comp, comp, ngrids) * grids.weights
        self.wkxc = xc[3].reshape(comp, comp, comp, ngrids) * grids.weights

    def _mo_values(self, p0, p1):
        from pyscf.dft.numint import BLKSIZE

        g = self.grids
        ao = self.ni.eval_ao(self.mol, g.coords[p0:p1], deriv=self.deriv,
                             non0tab=g.non0tab[p0 // BLKSIZE:], cutoff=g.cutoff)
        ao = ao.reshape(-1, ao.shape[-1])  # (comp * ng, nao)
        mo = (ao @ self.cvo).reshape(self.ncomp, p1 - p0, -1)
        return np.ascontiguousarray(mo[:, :, :self.nvir]), np.ascontiguousarray(mo[:, :, self.nvir:])

    def _chunks(self):
        """(start, stop, MO values of the virtuals, of the occupied) over the grid in chunks of
        at most 2,048 points (small enough to keep the temporaries in cache), from the cached
        blocks or recomputed for the blocks beyond the memory budget."""
        for (p0, p1), mo_blk in zip(self.blocks, self.cache):
            mv, mocc = self._mo_values(p0, p1) if mo_blk is None else mo_blk
            for q0 in range(0, p1 - p0, 2048):
                q1 = min(q0 + 2048, p1 - p0)
                yield p0 + q0, p0 + q1, mv[:, q0:q1], mocc[:, q0:q1]

    def __call__(self, u):
        k, nvir, nocc = u.shape
        out = np.zeros((nvir, k * nocc))
        ut = u.transpose(1, 0, 2).reshape(nvir, k * nocc)
        for g0, g1, mv, mocc in self._chunks():
            out += self._block(mv, mocc, ut, k, g0, g1)
        return out.reshape(nvir, k, nocc).transpose(1, 0, 2)

    def _block(self, mv, mocc, ut, k, p0, p1):
        """V_ai contribution of grid points p0:p1 (nvir, k * nocc)."""
        comp, nocc, ng = self.ncomp, mocc.shape[2], p1 - p0
        wv = self._wv(mv, mocc, ut, k, p0, p1)
        # gmat[c, g, k, i]: the occupied-side factors of V = sum_c (d_c phi_v)^T gmat[c]
        o = mocc[:, :, None, :]  # (comp, ng, 1, nocc)
        w = wv[:, :, :, None]  # (comp, ng, k, 1)
        gmat = np.empty((comp, ng, k, nocc))
        gmat[0] = w[0] * o[0]
        for c in range(1, comp):
            gmat[0] += w[c] * o[c]
            gmat[c] = w[c] * o[0]
        return mv.reshape(comp * ng, -1).T @ gmat.reshape(comp * ng, k * nocc)

    def _wv(self, mv, mocc, ut, k, p0, p1):
        """w f_xc rho^k on grid points p0:p1 (comp, ng, k) for ut = U as (nvir, k * nocc)."""
        comp, ng = self.ncomp, p1 - p0
        rho1 = self._rho1(mv, mocc, ut, k)
        wf = self.wfxc[:, :, p0:p1]
        wv = np.empty((comp, ng, k))
        for a in range(comp):
            wv[a] = wf[a, 0][:, None] * rho1[0]
            for b in range(1, comp):
                wv[a] += wf[a, b][:, None] * rho1[b]
        return wv

    def _rho1(self, mv, mocc, ut, k):
        """rho^k (and its gradient) on a block (comp, ng, k)."""
        comp, nvir, nocc, ng = self.ncomp, self.nvir, mocc.shape[2], mocc.shape[1]
        # t[c, g, k, i] = sum_a U^k_ai d_c phi_a(g)
        t = (mv.reshape(comp * ng, nvir) @ ut).reshape(comp, ng, k, nocc)
        rho1 = np.empty((comp, ng, k))
        rho1[0] = np.einsum("gki,gi->gk", t[0], mocc[0])
        for c in range(1, comp):
            rho1[c] = np.einsum("gki,gi->gk", t[c], mocc[0]) + np.einsum("gki,gi->gk", t[0], mocc[c])
        rho1 *= 4.0
        return rho1

    def third_order(self, u):
        """g[x,y,z] = sum_grid w g_abc(rho0) rho^x_a rho^y_b rho^z_c (3, 3, 3) for U (3, nvir, nocc)."""
        k, nvir, nocc = u.shape
        out = np.zeros((k, k, k))
        ut = u.transpose(1, 0, 2).reshape(nvir, k * nocc)
        for g0, g1, mv, mocc in self._chunks():
            r = self._rho1(mv, mocc, ut, k).transpose(2, 0, 1)  # (k, comp, ng)
            t = np.einsum("abcg,xag->xbcg", self.wkxc[..., g0:g1], r)
            t = np.einsum("xbcg,ybg->xycg", t, r)
            out += np.einsum("xycg,zcg->xyz", t, r)
        return out

    def full(self, u):
        """The kernel's full MO matrices (k, nmo, nmo) for U, MOs in the order of
        [C_v, C_o] (C^T [int f_xc rho^k] C, all blocks)."""
        k, nvir, nocc = u.shape
        comp, nmo = self.ncomp, nvir + nocc
        out = np.zeros((k, nmo, nmo))
        ut = u.transpose(1, 0, 2).reshape(nvir, k * nocc)
        for g0, g1, mv, mocc in self._chunks():
            a = np.concatenate([mv, mocc], axis=2)  # (comp, ng, nmo)
            wv = self._wv(mv, mocc, ut, k, g0, g1)
            for j in range(k):
                b = np.empty_like(a)
                b[0] = wv[0, :, j, None] * a[0]
                for c in range(1, comp):
                    b[0] += wv[c, :, j, None] * a[c]
                    b[c] = wv[c, :, j, None] * a[0]
                out[j] += a.reshape(-1, nmo).T @ b.reshape(-1, nmo)
        return out


def _cphf(mf, r_ao, tol, max_memory=4000):
    """First-order rotations U (3, nvir, nocc), AO first-order densities (3, nao, nao), the
    full first-order Fock matrices in the MO basis (3, nmo, nmo), the final residual and the
    _MOGridKernel (None for HF and MGGA).

    The response operator is PySCF's (`mf.gen_response(hermi=1)`: J - c_x/2 K + f_xc),
    assembled here so that the XC kernel part runs in the MO basis on cached MO grid values
    (`_MOGridKernel`); for MGGA functionals PySCF's operator is used as is."""
    from pyscf.scf import hf

    c, occ, eps = mf.mo_coeff, mf.mo_occ, mf.mo_energy
    co, cv = c[:, occ > 0], c[:, occ == 0]

    def dm_of(u):  # (k, nvir, nocc) -> symmetric AO densities (k, nao, nao)
        d = 2.0 * np.einsum("pa,kai,qi->kpq", cv, u, co)
        return d + d.transpose(0, 2, 1)

    xctype = mf._numint._xc_type(mf.xc) if isinstance(mf, hf.KohnShamDFT) else "HF"
    kernel = None
    if xctype not in ("HF", "LDA", "GGA"):  # MGGA: PySCF's response operator as it is
        vresp = mf.gen_response(c, occ, hermi=1)

        def fvind(u):
            return np.einsum("pa,kpq,qi->kai", cv, vresp(dm_of(u)), co)
    else:
        jk = _jk_response(mf)
        if xctype != "HF":
            mf._numint.libxc.test_deriv_order(mf.xc, 2, raise_error=True)
            kernel = _MOGridKernel(mf, cv, co, max_memory)

        if getattr(mf, "with_df", None) is not None:
            # density fitting: D = 2 (X Y^T + Y X^T) with X = C_v U, Y = C_o is written as
            # (X+Y)(X+Y)^T - (X-Y)(X-Y)^T; PySCF's exchange for densities tagged with their
            # orbitals then costs ~naux nao^2 nocc per factor instead of ~naux nao^3
            from pyscf import lib

            def jk_vo(u):
                k, nocc = u.shape[0], co.shape[1]
                x = np.einsum("pa,kai->kpi", cv, u)
                orbs = np.concatenate([x + co, x - co])  # (2k, nao, nocc)
                dms = np.einsum("kpi,kqi->kpq", orbs, orbs)
                v = jk(lib.tag_array(dms, mo_coeff=orbs, mo_occ=np.ones((2 * k, nocc))))
                return np.einsum("pa,kpq,qi->kai", cv, v[:k] - v[k:], co)
        else:
            def jk_vo(u):
                return np.einsum("pa,kpq,qi->kai", cv, jk(dm_of(u)), co)

        def fvind(u):
            return jk_vo(u) if kernel is None else jk_vo(u) + kernel(u)

    h1 = np.einsum("pa,kpq,qi->kai", cv, r_ao, co)
    e_ai = eps[occ == 0][:, None] - eps[occ > 0][None, :]
    if e_ai.min() <= 0:
        raise ValueError(f"no HOMO-LUMO gap (min e_a - e_i = {e_ai.min():.3g} Eh)")
    u, resid = _solve_cphf(fvind, e_ai, h1, tol)
    dms = dm_of(u)
    if xctype not in ("HF", "LDA", "GGA"):
        f1 = np.einsum("pm,kpq,qn->kmn", c, r_ao + vresp(dms), c)
    else:
        f1 = np.einsum("pm,kpq,qn->kmn", c, r_ao + jk(dms), c)
    if kernel is not None:
        order = np.concatenate([np.where(occ == 0)[0], np.where(occ > 0)[0]])
        f1[np.ix_(np.arange(3), order, order)] += kernel.full(u)
    return u, dms, f1, resid, kernel


def _xc_third_order(mf, dm0, dms, max_memory):
    """g[x,y,z] = sum_grid w g_abc(rho0) rho^x_a rho^y_b rho^z_c (3, 3, 3); zeros for HF."""
    out = np.zeros((3, 3, 3))
    if not hasattr(mf, "_numint"):
        return out
    ni, mol, grids = mf._numint, mf.mol, mf.grids
    if grids.coords is None:
        grids.build(with_non0tab=True)
    xctype = ni._xc_type(mf.xc)
    if xctype == "HF":
        return out
    if xctype not in ("LDA", "GGA", "MGGA"):
        raise ValueError(f"third-order kernel not available for functional type {xctype!r}")
    ao_deriv = 0 if xctype == "LDA" else 1
    nao = mol.nao_nr()
    for ao, mask, weight, _ in ni.block_loop(mol, grids, nao, ao_deriv, max_memory):
        rho0 = ni.eval_rho(mol, ao, dm0, mask, xctype, hermi=1, with_lapl=False)
        kxc = ni.eval_xc_eff(mf.xc, rho0, deriv=3, xctype=xctype)[3]
        rho1 = np.array([ni.eval_rho(mol, ao, d, mask, xctype, hermi=1, with_lapl=False) for d in dms])
        if xctype == "LDA":
            kxc = kxc.reshape(1, 1, 1, -1)
            rho1 = rho1.reshape(3, 1, -1)
        t = np.einsum("abcg,xag->xbcg", kxc, rho1 * weight)
        t = np.einsum("xbcg,ybg->xycg", t, rho1)
        out += np.einsum("xycg,zcg->xyz", t, rho1)
    return out


def _beta_from_first_order(mf, u, f1, g3):
    """d3E/dF^3 from the 2n+1 expression in the module docstring -> beta (= minus it)."""
    occ, eps = mf.mo_occ, mf.mo_energy
    oi, vi = np.where(occ > 0)[0], np.where(occ == 0)[0]
    nmo = len(occ)
    d0 = np.diag(occ)
    f0 = np.diag(eps)
    kap = np.zeros((3, nmo, nmo))
    for x in range(3):
        kap[x][np.ix_(vi, oi)] = u[x]
        kap[x][np.ix_(oi, vi)] = -u[x].T

    def comm(a, b):
        return a @ b - b @ a

    d1 = [comm(kap[x], d0) for x in range(3)]
    d2 = [[comm(kap[y], d1[z]) for z in range(3)] for y in range(3)]
    t = np.zeros((3, 3, 3))
    for a, b, c in itertools.product(range(3), repeat=3):
        d3 = comm(kap[a], d2[b][c])
        t[a, b, c] = np.sum(f0 * d3) / 6.0 + 0.5 * np.sum(f1[a] * d2[b][c])
    e3 = sum(t.transpose(p) for p in itertools.permutations(range(3))) + g3
    return -e3


def _analytic(mf, r_ao, label, cphf_tol, max_memory, timings):
    t0 = time.perf_counter()
    u, dms, f1, resid, kernel = _cphf(mf, r_ao, cphf_tol, max_memory)
    timings["cphf_s"] = time.perf_counter() - t0
    if not np.isfinite(resid) or resid > cphf_tol:
        raise SCFNotConverged(label, f"coupled-perturbed equations did not converge (max residual {resid:.2e})")
    alpha = -np.einsum("xij,yji->xy", r_ao, dms)
    t0 = time.perf_counter()
    if kernel is not None:  # LDA/GGA: from the MO grid values kept by the CPHF step
        g3 = kernel.third_order(u)
    else:  # HF (zeros) and MGGA
        g3 = _xc_third_order(mf, mf.make_rdm1(), dms, max_memory)
    beta = _beta_from_first_order(mf, u, f1, g3)
    timings["beta_s"] = time.perf_counter() - t0
    return 0.5 * (alpha + alpha.T), beta


def _finite_field(mf, r_ao, label, h, timings):
    t0 = time.perf_counter()
    h0 = mf.get_hcore()
    dm_ref = mf.make_rdm1()
    mol = mf.mol
    cache = {}

    def mu(f):
        key = tuple(np.round(f / h).astype(int))
        if key not in cache:
            if not any(key):
                cache[key] = _dipole(mol, dm_ref, r_ao)
            else:
                m = mf.copy()
                _run_scf(m, f"{label} (field {np.array2string(f, precision=4)})", dm0=dm_ref,
                         h1=h0 + np.einsum("x,xij->ij", f, r_ao))
                cache[key] = _dipole(mol, m.make_rdm1(), r_ao)
        return cache[key]

    e = np.eye(3) * h
    alpha = np.zeros((3, 3))
    beta = np.zeros((3, 3, 3))
    mu0 = mu(np.zeros(3))
    for j in range(3):
        mp, mm = mu(e[j]), mu(-e[j])
        alpha[:, j] = (mp - mm) / (2 * h)
        beta[:, j, j] = (mp - 2 * mu0 + mm) / h ** 2
    for j, k in itertools.combinations(range(3), 2):
        v = (mu(e[j] + e[k]) - mu(e[j] - e[k]) - mu(-e[j] + e[k]) + mu(-e[j] - e[k])) / (4 * h ** 2)
        beta[:, j, k] = beta[:, k, j] = v
    timings["finite_field_s"] = time.perf_counter() - t0
    timings["finite_field_scf_runs"] = len(cache) - 1
    return 0.5 * (alpha + alpha.T), beta


# --------------------------------------------------------------------------- public entry point
def response_properties(
    molecule: Molecule,
    xc: str = "b3lyp",
    basis: str = "6-31g(2df,p)",
    method: str = "analytic",
    *,
    charge: int | None = None,
    basis_convention: str | None = None,
    conv_tol: float | None = None,
    cphf_tol: float = 1e-8,
    grids_level: int = 3,
    density_fit: bool = True,
    max_memory: int = 4000,
    threads: int | None = None,
    field_step: float = 0.002,
    max_cycle: int = 100,
    dipole_threshold: float = DIPOLE_THRESHOLD_AU,
    verbose: int = 0,
    basis_definition: str | None = None,
) -> ResponseResult:
    """Dipole, static polarizability and first hyperpolarizability of a closed-shell molecule.

    Args:
        molecule: a `molgraph.Molecule` (elements, positions in Angstrom, name, charge).
        xc: 'hf' for RHF, otherwise any PySCF functional string ('lda,vwn', 'pbe', 'b3lyp',
            'cam-b3lyp'...). 'b3lyp' is Gaussian's (and QM9's) B3LYP with VWN(RPA) correlation,
            pinned to libxc HYB_GGA_XC_B3LYP; 'b3lyp5' is the VWN5 variant DALTON calls B3LYP.
        basis: any basis PySCF knows.
        method: 'analytic' (coupled-perturbed, default) or 'finite_field' (independent check).
        charge: net charge; None takes `molecule.charge` (0 for QM9).
        basis_convention: '6d7f' (Cartesian d, pure f as Gaussian 09 ran QM9), 'spherical'
            (5D/7F), 'cartesian' (6D/10F), or None = Gaussian's default for the basis name
            (6D/7F for Pople basis sets such as 6-31G(2df,p) and 6-31G*).
        conv_tol: SCF energy tolerance; default 1e-10 (analytic) / 1e-12 (finite field). The
            orbital-gradient tolerance is min(sqrt(conv_tol), 1e-6) (analytic) / 1e-9 (finite field).
        cphf_tol: max-norm residual of the coupled-perturbed equations (au).
        grids_level: PySCF DFT grid level (3 ~ Gaussian's FineGrid).
        density_fit: density-fitted Coulomb/exchange (PySCF's default JK-fit auxiliary basis)
            for the SCF and the response; False for exact four-centre integrals.
        max_memory: MB that PySCF may use.
        threads: PySCF/OpenMP threads for this call (restored afterwards); None leaves them.
        field_step: h (au) for method='finite_field'.
        max_cycle: SCF iterations before the one retry (level shift 0.3, damping 0.3, twice
            as many iterations from the last density).
        dipole_threshold: |mu| (au) below which beta_parallel is reported undefined (NaN).
        basis_definition: 'gaussian' (Gaussian's exponents where they differ from PySCF's: the
            doubled d shell of 6-31G(2d...), QM9's basis; see `molgraph.qm.basis`), 'pyscf', or
            None = 'gaussian' where it applies, else 'pyscf'.

    Returns:
        ResponseResult (see its docstring); `.to_dict()` gives a JSON-ready dict.

    Raises:
        QMInputError: open shell, odd electron count, overlapping atoms, unknown basis/option.
        SCFNotConverged: SCF or CPHF not converged (after one retry with level shift + damping).
        QMError: any other failure of the calculation; all name the molecule.
    """
    import pyscf
    from pyscf import lib

    t_start = time.perf_counter()
    label = _molecule_label(molecule)
    if method not in METHODS:
        raise QMInputError(label, f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    xc_resolved = resolve_xc(xc)
    if conv_tol is None:
        conv_tol = 1e-10 if method == "analytic" else 1e-12
    # finite differences divide the dipole error (~ the orbital gradient) by h^2
    conv_tol_grad = min(float(np.sqrt(conv_tol)), 1e-6) if method == "analytic" else 1e-9
    old_threads = lib.num_threads()
    if threads is not None:
        lib.num_threads(int(threads))
    timings: dict[str, float] = {}
    try:
        mol, x, conv = build_mole(molecule, basis, charge=charge, basis_convention=basis_convention,
                                  max_memory=max_memory, verbose=verbose, basis_definition=basis_definition)
        try:
            mf = _make_scf(mol, x, xc_resolved, density_fit=density_fit, grids_level=grids_level,
                           conv_tol=conv_tol, conv_tol_grad=conv_tol_grad, max_cycle=max_cycle)
        except (KeyError, ValueError) as exc:
            raise QMInputError(label, f"functional {xc!r}: {exc}") from exc
        t0 = time.perf_counter()
        _run_scf(mf, label)
        timings["scf_s"] = time.perf_counter() - t0
        with mol.with_common_orig((0.0, 0.0, 0.0)):
            r_ao = mol.intor_symmetric("int1e_r", comp=3)
        dipole = _dipole(mol, mf.make_rdm1(), r_ao)
        if method == "analytic":
            alpha, beta = _analytic(mf, r_ao, label, cphf_tol, max_memory, timings)
        else:
            alpha, beta = _finite_field(mf, r_ao, label, field_step, timings)
    except QMError:
        raise
    except MemoryError as exc:
        raise QMError(label, f"out of memory (max_memory={max_memory} MB): {exc}") from exc
    except Exception as exc:
        raise QMError(label, f"{type(exc).__name__}: {exc}") from exc
    finally:
        if threads is not None:
            lib.num_threads(old_threads)

    bvec = beta_vector(beta)
    bpar = beta_parallel(beta, dipole, dipole_threshold)
    return ResponseResult(
        name=getattr(molecule, "name", "") or "",
        energy=float(mf.e_tot),
        dipole=dipole,
        polarizability=alpha,
        alpha_iso=float(np.trace(alpha) / 3.0),
        beta=beta,
        beta_vector=bvec,
        beta_vector_norm=float(np.linalg.norm(bvec)),
        beta_parallel=bpar,
        beta_parallel_defined=bool(np.isfinite(bpar)),
        dipole_norm=float(np.linalg.norm(dipole)),
        xc=xc,
        xc_resolved=xc_resolved,
        basis=basis,
        basis_convention=conv,
        basis_definition=mol.qmlrp_basis_definition,
        method=method,
        charge=int(mol.charge),
        n_atoms=int(mol.natm),
        n_electrons=int(mol.nelectron),
        n_basis=int(mf.mo_coeff.shape[1]),
        density_fit=bool(density_fit),
        grids_level=grids_level if xc_resolved != "hf" else None,
        conv_tol=float(conv_tol),
        field_step=field_step if method == "finite_field" else None,
        scf_converged=bool(mf.converged),
        scf_cycles=getattr(mf, "cycles", None),
        pyscf_version=pyscf.__version__,
        engine_version=ENGINE_VERSION,
        wall_time_s=time.perf_counter() - t_start,
        timings=timings,
    )
