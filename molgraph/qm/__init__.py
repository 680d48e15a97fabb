"""Quantum-chemistry labels: static dipole, polarizability and first hyperpolarizability
(PySCF; optional extra `qmlrp[qm]`). See `molgraph.qm.response` for conventions and formulas."""
from .response import (
    DIPOLE_THRESHOLD_AU,
    ENGINE_VERSION,
    METHODS,
    QMError,
    QMInputError,
    ResponseResult,
    SCFNotConverged,
    beta_parallel,
    beta_vector,
    build_mole,
    resolve_xc,
    response_properties,
)

__all__ = [
    "DIPOLE_THRESHOLD_AU", "ENGINE_VERSION", "METHODS", "QMError", "QMInputError", "ResponseResult",
    "SCFNotConverged", "beta_parallel", "beta_vector", "build_mole", "resolve_xc", "response_properties",
]
