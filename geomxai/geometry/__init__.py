"""Representation geometry: effective rank, participation ratio, correlation spectra, decay,
and the function-invariant geometry of a layer seen through its head (``head_geometry``,
``gradient_metric_geometry``).

Every function is pure: features in (numpy or torch (n, d), an ``xr.DataArray`` with dims
``sample`` and ``unit_*``, or :class:`~geomxai.collect.FeatureMoments`), a number, a dict of
numbers or a DataArray out. Formulas and conventions: ``docs/metrics.md``. A unit whose
variance is at most ``DEAD_UNIT_TOL`` times the largest is dead, for every metric here and for
entanglement alike.
"""

from geomxai._finite import DEAD_UNIT_TOL
from geomxai.geometry._invariant import (
    gradient_metric_geometry,
    gradient_metric_spectrum,
    head_covariance,
    head_geometry,
    head_projection,
)
from geomxai.geometry._rank import effective_rank, participation_ratio
from geomxai.geometry._rsa import compare_rdms, rdm, rsa
from geomxai.geometry._similarity import cka_matrix, kernel_cka, linear_cka, procrustes_distance
from geomxai.geometry._spectrum import (
    ALPHA_REQ_RANKS,
    alpha_req,
    correlation_spectrum,
    correlation_summary,
    spectrum_decay,
)

__all__ = [
    "ALPHA_REQ_RANKS",
    "DEAD_UNIT_TOL",
    "alpha_req",
    "cka_matrix",
    "compare_rdms",
    "correlation_spectrum",
    "correlation_summary",
    "effective_rank",
    "gradient_metric_geometry",
    "gradient_metric_spectrum",
    "head_covariance",
    "head_geometry",
    "head_projection",
    "kernel_cka",
    "linear_cka",
    "participation_ratio",
    "procrustes_distance",
    "rdm",
    "rsa",
    "spectrum_decay",
]
