"""Turn the containers the dynamics metrics accept into finite float64 numpy arrays.

numpy arrays, torch tensors (any device, any float dtype, with or without grad) and
``xr.DataArray`` objects are accepted everywhere. Everything is done in float64: overlaps of
nearly-degenerate eigenvectors and cosines of nearly-parallel maps are differences of numbers
close to 1, which float32 resolves only to about 1e-7.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
import xarray as xr


def as_float64(x, *, name: str) -> np.ndarray:
    """A float64 numpy view or copy of ``x``; the caller's object is never modified."""
    if isinstance(x, xr.DataArray):
        x = x.values
    if isinstance(x, torch.Tensor):
        # .to(float64) before .numpy(): numpy has no bfloat16, and grad-carrying tensors refuse.
        return x.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(x)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating)
        or np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.bool_)
    ):
        raise TypeError(
            f"{name} must hold real numbers (numpy array, torch tensor or DataArray); "
            f"got dtype {array.dtype}"
        )
    return array.astype(np.float64, copy=False)


def check_finite(array: np.ndarray, *, name: str) -> None:
    """Raise a ValueError that counts the NaN/inf entries of ``array``, if there are any."""
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise ValueError(
            f"{name} contains {bad} NaN or infinite value(s) out of {array.size}; expected finite "
            "values (a diverged checkpoint or an unfilled buffer upstream?)"
        )


def check_positive_int(value, *, name: str) -> int:
    """``value`` as a Python int >= 1; bools and floats are refused rather than truncated."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive integer; got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer; got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer; got {name}={value}")
    return value


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
