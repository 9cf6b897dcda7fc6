"""One place that turns every accepted feature container into finite float64 numbers.

The geometry and dynamics metrics (and the attribution metrics' matrix inputs) accept a numpy
array or torch tensor (any device, any float dtype, with or without grad), an ``xr.DataArray``
(features with dims ``sample`` and one unit dim, as :func:`geomxai.collect.collect_features`
returns them), or the collector's streaming :class:`~geomxai.collect.FeatureMoments`.
:func:`as_float64` converts any of the arrays; :func:`as_matrix` checks a (sample, unit) matrix;
:func:`as_features` reduces features to :class:`Features`, the centred float64 data matrix or,
for moments, their covariance; :func:`gram_matrix` is the smaller of the covariance and the
Gram matrix, which share their non-zero eigenvalues.

Everything is float64: eigendecompositions of float32 covariances lose the small eigenvalues the
entropy and decay metrics are sensitive to, and overlaps of nearly-degenerate eigenvectors are
differences of numbers close to 1, which float32 resolves only to about 1e-7.

The finite check every boundary shares (:func:`check_finite`) and the dead-unit threshold
(:data:`DEAD_UNIT_TOL`, :func:`live_units`) live in the lighter leaf :mod:`geomxai._finite` and
are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

# check_finite is used here; the threshold and live_units are re-exported for the metrics.
from geomxai._finite import DEAD_UNIT_TOL as DEAD_UNIT_TOL
from geomxai._finite import check_finite
from geomxai._finite import live_units as live_units
from geomxai.moments import FeatureMoments


def as_float64(x, *, name: str) -> np.ndarray:
    """A float64 numpy view or copy of ``x`` (any shape); the caller's object is never modified.

    A DataArray gives its values in its own dim order.

    Raises
    ------
    TypeError
        ``x`` does not hold real numbers (strings, objects, complex).
    """
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


def _unit_dim(features: xr.DataArray, name: str) -> str:
    if features.ndim != 2 or "sample" not in features.dims:
        raise ValueError(
            f"{name} as a DataArray must have dims ('sample', <unit dim>); got dims {features.dims}"
        )
    return next(d for d in features.dims if d != "sample")


def as_matrix(features, *, name: str = "features") -> np.ndarray:
    """A finite float64 array (n, d) from an array, tensor or DataArray (sample, unit).

    Examples
    --------
    >>> da = xr.DataArray(np.arange(6).reshape(3, 2), dims=("unit_body", "sample"))
    >>> as_matrix(da).shape  # samples first, whatever the DataArray's order
    (2, 3)
    """
    if isinstance(features, xr.DataArray):
        features = features.transpose("sample", _unit_dim(features, name))
    array = as_float64(features, name=name)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_units); got an array of shape {array.shape}"
        )
    check_finite(array, name=name)
    return array


@dataclass(frozen=True)
class Features:
    """Features reduced to what the metrics need.

    Exactly one of ``centred`` (n, d) and ``covariance`` (d, d) is set; ``mean`` (d,) and
    ``count`` are always known. ``covariance`` uses ``count - 1`` in the denominator.
    ``unit_coord`` (d,) is the unit coordinate of a DataArray input, None otherwise. ``scale``
    is the power of two the input was divided by (``as_features(..., rescale=True)``; 1.0
    otherwise): a covariance eigenvalue of the input is ``scale**2`` times one of these.
    """

    count: int
    mean: np.ndarray
    centred: np.ndarray | None = None
    covariance: np.ndarray | None = None
    unit_coord: np.ndarray | None = None
    scale: float = 1.0

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def unit_variances(self) -> np.ndarray:
        if self.centred is not None:
            return np.einsum("ij,ij->j", self.centred, self.centred) / (self.count - 1)
        return np.diag(self.covariance).copy()

    def covariance_matrix(self) -> np.ndarray:
        """The (d, d) covariance, formed from the centred data when that is what is held."""
        if self.covariance is not None:
            return self.covariance
        return self.centred.T @ self.centred / (self.count - 1)


def power_of_two_scale(largest: float) -> int:
    """The exponent ``k`` with ``largest / 2**k`` in [0.5, 1) (0 for 0): dividing by ``2**k``
    is exact in floating point (barring underflow), so a scale-free quantity computed on the
    rescaled numbers is the one of the originals, while their squares and products stay finite
    for any finite input (a covariance of features at 1e200 would be inf)."""
    return int(np.frexp(largest)[1]) if largest > 0 else 0


def rescaled(array: np.ndarray) -> tuple[np.ndarray, float]:
    """``array / 2**k`` with its largest magnitude in [0.5, 1), and ``2**k`` (see
    :func:`power_of_two_scale`); ``array`` must be finite.

    Examples
    --------
    >>> x, scale = rescaled(np.array([3e200, -1e200]))
    >>> x.tolist() == [3e200 / scale, -1e200 / scale], bool(0.5 <= x.max() < 1)
    (True, True)
    """
    k = power_of_two_scale(float(np.max(np.abs(array)))) if array.size else 0
    return np.ldexp(array, -k), float(np.ldexp(1.0, k))


def as_features(features, *, name: str = "features", rescale: bool = False) -> Features:
    """Validate and reduce any accepted container to :class:`Features`.

    With ``rescale=True`` the features are divided by a power of two near their largest
    magnitude (``Features.scale``; for ``FeatureMoments`` the covariance by its square), exact
    in floating point: for the scale-free metrics, which then give their true finite value for
    features at any finite scale (at 1e200 a covariance overflows) and the same value as before
    at ordinary scales. A metric that reports raw eigenvalues or variances keeps the default, or
    multiplies them back by ``scale**2``.

    Raises
    ------
    ValueError
        Fewer than 2 samples, no units, NaN/inf entries, a DataArray without a ``sample`` dim.
    TypeError
        Entries that are not real numbers.

    Examples
    --------
    >>> f = as_features(np.array([[1.0, 2.0], [3.0, 6.0]]))
    >>> f.count, f.mean.tolist(), f.centred.tolist()
    (2, [2.0, 4.0], [[-1.0, -2.0], [1.0, 2.0]])
    """
    if isinstance(features, FeatureMoments):
        if features.count < 2:
            raise ValueError(
                f"{name} need at least 2 samples for a covariance; got count={features.count}"
            )
        cov = np.asarray(features.covariance(ddof=1), dtype=np.float64)
        check_finite(cov, name=f"{name} (FeatureMoments covariance)")
        mean = np.asarray(features.mean)
        if not rescale:
            return Features(count=int(features.count), mean=mean, covariance=cov)
        # The covariance by an even power of two, the mean by its square root: both exact.
        k = -(-power_of_two_scale(float(np.max(np.abs(cov)))) // 2)
        return Features(
            count=int(features.count),
            mean=np.ldexp(mean, -k),
            covariance=np.ldexp(cov, -2 * k),
            scale=float(np.ldexp(1.0, k)),
        )
    unit_coord = None
    if isinstance(features, xr.DataArray):
        unit_dim = _unit_dim(features, name)
        if unit_dim in features.indexes:
            unit_coord = features.indexes[unit_dim].values
    array = as_matrix(features, name=name)
    n, d = array.shape
    if n < 2:
        raise ValueError(
            f"{name} need at least 2 samples for a covariance; got shape {array.shape}"
        )
    if d < 1:
        raise ValueError(f"{name} need at least 1 unit; got shape {array.shape}")
    scale = 1.0
    if rescale:
        array, scale = rescaled(array)
    # Centre in float64 first: x^T x - n m m^T cancels catastrophically for features with a
    # large mean and a small spread (post-ReLU units).
    mean = array.mean(axis=0)
    return Features(count=n, mean=mean, centred=array - mean, unit_coord=unit_coord, scale=scale)


def gram_matrix(feats: Features) -> np.ndarray:
    """The covariance, or with n < d the n x n Gram matrix of the centred data over n - 1.

    Both have the same non-zero eigenvalues (and the same trace and Frobenius norm), so every
    spectral metric can use the smaller one.

    Examples
    --------
    >>> f = as_features(np.random.default_rng(0).normal(size=(3, 5)))
    >>> g = gram_matrix(f)
    >>> g.shape
    (3, 3)
    >>> bool(np.isclose(np.trace(g), np.trace(f.covariance_matrix())))
    True
    """
    if feats.covariance is not None:
        return feats.covariance
    n, d = feats.centred.shape
    if n < d:
        return feats.centred @ feats.centred.T / (n - 1)
    return feats.covariance_matrix()
