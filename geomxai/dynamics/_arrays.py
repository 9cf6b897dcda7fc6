"""The dynamics metrics' own argument checks: counts, eigenvector matrices, eigenvalue vectors.

Containers are converted by the shared normaliser, :mod:`geomxai._features` (numpy arrays, torch
tensors on any device and of any float dtype, ``xr.DataArray``), always to float64: overlaps of
nearly-degenerate eigenvectors and cosines of nearly-parallel maps are differences of numbers
close to 1, which float32 resolves only to about 1e-7.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import xarray as xr

from geomxai._checks import Interval, check
from geomxai._features import as_float64, check_finite


def check_positive_int(value, *, name: str) -> int:
    """``value`` as a Python int >= 1; bools and floats are refused rather than truncated."""
    return int(check(value, name, Interval(Integral, 1, None)))


def eigvecs_matrix(eigvecs, *, name: str) -> np.ndarray:
    """A finite float64 (d, k) matrix of column vectors from any accepted container.

    A DataArray is put in (unit, component) order when it has a ``component`` dim, whatever the
    name of its unit dim (``unit`` or the collector's ``unit_<layer>``).
    """
    if isinstance(eigvecs, xr.DataArray):
        if eigvecs.ndim != 2:
            raise ValueError(
                f"{name} as a DataArray must be 2-D with dims (unit, component); "
                f"got dims {eigvecs.dims}"
            )
        if "component" in eigvecs.dims:
            unit_dim = next(d for d in eigvecs.dims if d != "component")
            eigvecs = eigvecs.transpose(unit_dim, "component")
    array = as_float64(eigvecs, name=name)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (d units, k components), one eigenvector per column; "
            f"got shape {array.shape}"
        )
    check_finite(array, name=name)
    return array


def eigvals_vector(eigvals, *, k: int, name: str) -> np.ndarray:
    """A finite float64 (k,) vector of eigenvalues."""
    array = as_float64(eigvals, name=name)
    if array.ndim != 1 or array.shape[0] != k:
        raise ValueError(
            f"{name} must be 1-D with one eigenvalue per eigenvector column (k={k}); "
            f"got shape {array.shape}"
        )
    check_finite(array, name=name)
    return array
