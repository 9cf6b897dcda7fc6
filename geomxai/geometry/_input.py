"""One place that turns every accepted feature container into float64 numbers.

Geometry functions accept a numpy array or torch tensor of shape (n, d), an ``xr.DataArray`` with
dims ``sample`` and one unit dim (as :func:`geomxai.collect.collect_features` returns them), or
the collector's streaming :class:`~geomxai.collect.FeatureMoments`. Arrays are turned into the
centred float64 data matrix; moments into their covariance. Everything downstream works in
float64 because eigendecompositions of float32 covariances lose the small eigenvalues that the
entropy and decay metrics are sensitive to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from geomxai.collect._moments import FeatureMoments


@dataclass(frozen=True)
class Features:
    """Features reduced to what the metrics need.

    Exactly one of ``centred`` (n, d) and ``covariance`` (d, d) is set; ``mean`` (d,) and
    ``count`` are always known. ``covariance`` uses ``count - 1`` in the denominator.
    """

    count: int
    mean: np.ndarray
    centred: np.ndarray | None = None
    covariance: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def unit_variances(self) -> np.ndarray:
        if self.centred is not None:
            return np.einsum("ij,ij->j", self.centred, self.centred) / (self.count - 1)
        return np.diag(self.covariance).copy()


def as_matrix(features, *, name: str = "features") -> np.ndarray:
    """A finite float64 array (n, d) from a numpy array, tensor or DataArray (sample, unit)."""
    if isinstance(features, xr.DataArray):
        if features.ndim != 2 or "sample" not in features.dims:
            raise ValueError(
                f"{name} as a DataArray must have dims ('sample', <unit dim>); "
                f"got dims {features.dims}"
            )
        unit_dim = next(d for d in features.dims if d != "sample")
        array = np.asarray(features.transpose("sample", unit_dim).values, dtype=np.float64)
    elif isinstance(features, torch.Tensor):
        array = features.detach().to("cpu", torch.float64).numpy()
    else:
        array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_units); got an array of shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(f"{name} contain {bad} NaN or infinite value(s); expected finite values")
    return array


def as_features(features, *, name: str = "features") -> Features:
    """Validate and reduce any accepted container to :class:`Features`."""
    if isinstance(features, FeatureMoments):
        if features.count < 2:
            raise ValueError(
                f"{name} need at least 2 samples for a covariance; got count={features.count}"
            )
        cov = np.asarray(features.covariance(ddof=1), dtype=np.float64)
        if not np.all(np.isfinite(cov)):
            raise ValueError(f"{name} (FeatureMoments) contain NaN or infinite moments")
        return Features(count=features.count, mean=np.asarray(features.mean), covariance=cov)
    array = as_matrix(features, name=name)
    n, d = array.shape
    if n < 2:
        raise ValueError(f"{name} need at least 2 samples; got shape {array.shape}")
    if d < 1:
        raise ValueError(f"{name} need at least 1 unit; got shape {array.shape}")
    mean = array.mean(axis=0)
    return Features(count=n, mean=mean, centred=array - mean)


def gram_matrix(feats: Features) -> np.ndarray:
    """The covariance, or with n < d the n x n Gram matrix of the centred data over n - 1.

    Both have the same non-zero eigenvalues (and the same trace and Frobenius norm), so every
    spectral metric can use the smaller one.
    """
    if feats.covariance is not None:
        return feats.covariance
    c = feats.centred
    n, d = c.shape
    return (c @ c.T if n < d else c.T @ c) / (n - 1)


def covariance_eigenvalues(feats: Features) -> np.ndarray:
    """Non-zero-capable covariance eigenvalues, descending, clipped at 0.

    With n < d the d x d covariance has at most n - 1 non-zero eigenvalues, all shared with the
    n x n Gram matrix of the centred data, which is cheaper to decompose; the zeros it leaves out
    contribute nothing to any metric here.
    """
    gram = gram_matrix(feats)
    # eigvalsh can return tiny negative values for a positive semi-definite matrix; they are
    # rounding noise, and a negative "variance" would break the entropy.
    eig = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
    return eig[::-1]
