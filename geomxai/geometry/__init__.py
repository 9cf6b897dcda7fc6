"""Representation geometry: effective rank, participation ratio, correlation spectra.

Every function is pure: features in (numpy or torch (n, d), an ``xr.DataArray`` with dims
``sample`` and ``unit_*``, or :class:`~geomxai.collect.FeatureMoments`), a number, a dict of
numbers or a DataArray out. Formulas and conventions: ``docs/metrics.md``.
"""

from geomxai.geometry._rank import effective_rank, participation_ratio
from geomxai.geometry._spectrum import correlation_spectrum, correlation_summary, spectrum_decay

__all__ = [
    "correlation_spectrum",
    "correlation_summary",
    "effective_rank",
    "participation_ratio",
    "spectrum_decay",
]
