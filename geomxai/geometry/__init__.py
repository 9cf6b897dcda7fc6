"""Representation geometry: effective rank, participation ratio, correlation spectra, decay.

Every function is pure: features in (numpy or torch (n, d), an ``xr.DataArray`` with dims
``sample`` and ``unit_*``, or :class:`~geomxai.collect.FeatureMoments`), a number, a dict of
numbers or a DataArray out. Formulas and conventions: ``docs/metrics.md``.
"""

from geomxai.geometry._rank import effective_rank, participation_ratio
from geomxai.geometry._similarity import linear_cka, procrustes_distance
from geomxai.geometry._spectrum import (
    alpha_req,
    correlation_spectrum,
    correlation_summary,
    spectrum_decay,
)

__all__ = [
    "alpha_req",
    "correlation_spectrum",
    "correlation_summary",
    "effective_rank",
    "linear_cka",
    "participation_ratio",
    "procrustes_distance",
    "spectrum_decay",
]
