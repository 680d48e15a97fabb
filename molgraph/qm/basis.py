"""QM9-compatible basis sets: Gaussian's exponents and Cartesian d (6D) with pure f (7F), as
Gaussian 09 ran QM9.

Exponents. Pople's multiple-polarization sets are not defined alike everywhere. For
6-31G(2df,p) (QM9's basis) PySCF, from the Basis Set Exchange, takes the doubled d shell as 2x and
0.5x the 6-311G* d exponent of each element (C 1.252/0.313, N 1.826/0.4565, O 2.584/0.646, F
3.5/0.875); Gaussian takes 2x and 0.5x the 6-31G* exponent (0.8 for C, N, O, F: 1.6/0.4).
`gaussian_basis` builds Gaussian's version: with it the isotropic alpha of methane, ammonia and
water comes out at QM9's values to 0.003 bohr^3 (13.210, 9.460, 6.313 vs 13.21, 9.46, 6.31), with
PySCF's 13.660, 9.246, 5.565 (benchmarks/qm_basis_variants.py; docs/qm.md). The f shell and H's p
shell are the same in both. Only the doubled d shell of the 6-31G family is emulated (names
6-31G(2d), 6-31G(2df), with ,p and + / ++); other multiple-polarization names ((3df), (2d,2p)...)
are PySCF's, which may differ from Gaussian's in the same way.

Cartesian d.

Gaussian's 6-31G-family basis sets default to Cartesian d shells (six functions, including the
s-like x^2+y^2+z^2 combination) while the f shells of 6-31G(2df,p) are pure (seven functions).
PySCF is either all-spherical (`mol.cart=False`, 5D/7F) or all-Cartesian (`mol.cart=True`,
6D/10F). We get 6D/7F by building the molecule with `cart=True` and restricting the
variational space to

    X = blockdiag( 1 for s, p, d shells ;  c2s_f for every f shell ),

where `c2s_f` (10 x 7) is PySCF's Cartesian-to-real-solid-harmonic map for l = 3. All
integrals, Coulomb/exchange builds and XC quadrature stay in the Cartesian AO basis; only the
molecular orbitals are confined to span(X). The SCF does this through PySCF's own hook for
linear-dependency removal (`check_linear_dependency` returns an orthonormal basis of span(X),
which `eig` and the DIIS error vector then use), so the MO coefficient matrix is
(n_cartesian_ao, n_basis) with n_basis = the Gaussian 6D/7F count. Everything downstream
(response, densities) is written in terms of MOs and needs no further change.

For every basis without f functions this reduces to a plain `cart=True` calculation; a basis
whose name says nothing of Cartesian shells (cc-pVXZ, def2) should be run spherical, which is
what `basis_convention="spherical"` gives.
"""
from __future__ import annotations

import re

import numpy as np

# 6-31G-family names with a doubled heavy-atom d shell and at most one p shell on H
_DOUBLED_D = re.compile(r"^6-31\+{0,2}g\(2df?(,p)?\)$")
BASIS_DEFINITIONS = ("gaussian", "pyscf")


def default_basis_definition(basis: str) -> str:
    """'gaussian' where Gaussian's exponents differ from PySCF's and are emulated here (the
    6-31G(2d...) names), else 'pyscf' (the two agree, or the name is not emulated)."""
    return "gaussian" if _DOUBLED_D.match(basis.strip().lower().replace(" ", "")) else "pyscf"


def gaussian_basis(basis: str, elements) -> dict:
    """{element: PySCF basis} of `basis` as Gaussian defines it: each heavy element's two d shells
    of a 6-31G(2d...) basis are 2x and 0.5x that element's 6-31G* d exponent (PySCF's 6-31G* d
    exponents are Gaussian's: 0.8 for C, N, O, F). H and every other shell as PySCF has them."""
    from pyscf import gto

    name = basis.strip().lower().replace(" ", "")
    if not _DOUBLED_D.match(name):
        raise ValueError(f"{basis!r}: Gaussian's exponents are emulated only for 6-31G(2d), 6-31G(2df) with ,p and +/++")
    out = {}
    for el in sorted(set(elements)):
        shells = gto.basis.load(name, el)
        if el != "H":
            d = [k for k, sh in enumerate(shells) if sh[0] == 2]
            single = [sh for sh in gto.basis.load("6-31g*", el) if sh[0] == 2]
            if len(d) != 2 or any(len(shells[k]) != 2 for k in d) or len(single) != 1 or len(single[0]) != 2:
                raise ValueError(f"{basis!r} for {el}: not two single-primitive d shells over one 6-31G* d shell")
            e = float(single[0][1][0])
            shells = [sh for sh in shells if sh[0] != 2] + [[2, [2 * e, 1.0]], [2, [0.5 * e, 1.0]]]
        out[el] = shells
    return out

# Pople basis sets for which Gaussian uses 6D by default (10F would only arise for f shells of
# basis sets we do not emulate, so pure f is the right choice for all of them).
_POPLE_PREFIXES = ("6-31", "3-21", "4-31", "6-21", "sto-")


def gaussian_default_convention(basis: str) -> str:
    """'6d7f' for the Pople basis sets (Gaussian's 6D default), 'spherical' otherwise."""
    b = basis.strip().lower()
    if b.startswith("6-311"):
        return "spherical"  # Gaussian treats 6-311G-family basis sets as 5D/7F
    return "6d7f" if b.startswith(_POPLE_PREFIXES) else "spherical"


def mixed_projector(mol, pure_from: int = 3) -> np.ndarray:
    """(n_cart_ao, n_basis) matrix whose columns span the basis with Cartesian shells below
    angular momentum `pure_from` and real solid harmonics from `pure_from` up.

    `mol` must be built with `cart=True`. Columns are ordered shell by shell as the AOs are.
    """
    from pyscf import gto

    if not mol.cart:
        raise ValueError("mixed_projector needs a molecule built with cart=True")
    blocks = []
    for ib in range(mol.nbas):
        l = mol.bas_angular(ib)
        nctr = mol.bas_nctr(ib)
        ncart = (l + 1) * (l + 2) // 2
        if l >= pure_from:
            c2s = gto.cart2sph(l, normalized="sp")  # (ncart, 2l+1)
            blocks.append(np.kron(np.eye(nctr), c2s))
        else:
            blocks.append(np.eye(nctr * ncart))
    nrow = sum(b.shape[0] for b in blocks)
    ncol = sum(b.shape[1] for b in blocks)
    x = np.zeros((nrow, ncol))
    r = c = 0
    for b in blocks:
        x[r:r + b.shape[0], c:c + b.shape[1]] = b
        r += b.shape[0]
        c += b.shape[1]
    if nrow != mol.nao_nr():
        raise AssertionError(f"projector has {nrow} rows for {mol.nao_nr()} Cartesian AOs")
    return x


def restrict_scf_to_span(mf, x: np.ndarray):
    """Confine the MOs of the PySCF mean-field object `mf` to span(x) (in place; returns mf).

    The orthonormal basis of the subspace is x S_x^{-1/2} with S_x = x^T S x.
    """
    s = mf.get_ovlp()
    sx = x.T @ s @ x
    w, v = np.linalg.eigh(sx)
    if w.min() < 1e-10:
        raise ValueError(f"restricted basis is (nearly) linearly dependent: smallest overlap eigenvalue {w.min():.2e}")
    x_orth = x @ (v / np.sqrt(w)) @ v.T

    def check_linear_dependency(s1e=None, log=None):
        return x_orth

    eigh_full = mf._eigh

    def _eigh(h, s1e, overwrite=False, x=None):
        return eigh_full(h, s1e, overwrite, x_orth if x is None else x)

    mf.check_linear_dependency = check_linear_dependency
    mf._eigh = _eigh
    mf._qm9_x_orth = x_orth
    return mf
