"""top_eigvecs: against numpy's full eigendecomposition, across input containers and routes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from geomxai.collect import FeatureMoments
from geomxai.dynamics import top_eigvecs


def reference(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Straight from the definition: np.cov, full eigh, sort descending, largest entry positive."""
    vals, vecs = np.linalg.eigh(np.cov(x, rowvar=False))
    order = np.argsort(vals)[::-1][:k]
    vals, vecs = vals[order], vecs[:, order]
    for j in range(k):
        if vecs[np.argmax(np.abs(vecs[:, j])), j] < 0:
            vecs[:, j] *= -1
    return vals, vecs


def anisotropic(rng, n, d):
    return rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d) + 10.0


@pytest.mark.parametrize(("n", "d", "k"), [(300, 8, 3), (300, 8, 8), (12, 40, 5), (12, 40, 20)])
def test_matches_reference(rng, n, d, k):
    # (12, 40, 5) takes the Gram route, (12, 40, 20) asks beyond the rank and falls back.
    x = anisotropic(rng, n, d)
    vals, vecs = top_eigvecs(x, k)
    ref_vals, ref_vecs = reference(x, k)
    rank = min(n - 1, d)
    np.testing.assert_allclose(vals.values, np.maximum(ref_vals, 0), rtol=1e-9, atol=1e-9)
    # Eigenvectors are defined only for nonzero eigenvalues (beyond the rank: any basis).
    defined = slice(0, min(k, rank))
    np.testing.assert_allclose(vecs.values[:, defined], ref_vecs[:, defined], atol=1e-8)
    np.testing.assert_allclose(vecs.values.T @ vecs.values, np.eye(k), atol=1e-10)
    assert vals.dims == ("component",) and vecs.dims == ("unit", "component")
    assert vals.attrs["n_samples"] == n
    assert vals.attrs["total_variance"] == pytest.approx(np.trace(np.cov(x, rowvar=False)))


def test_containers_agree(rng):
    x = anisotropic(rng, 100, 6)
    vals, vecs = top_eigvecs(x, 3)
    units = [f"u{i}" for i in range(6)]
    da = xr.DataArray(x.T, dims=("unit_fc", "sample"), coords={"unit_fc": units})
    moments = FeatureMoments.empty(6)
    for chunk in np.array_split(x, 4):
        moments.update(chunk)
    for other in (torch.from_numpy(x), da, moments):
        got_vals, got_vecs = top_eigvecs(other, 3)
        np.testing.assert_allclose(got_vals.values, vals.values, rtol=1e-9)
        np.testing.assert_allclose(got_vecs.values, vecs.values, atol=1e-9)
    # The unit coordinate of a collector DataArray is carried over under the name `unit`.
    assert top_eigvecs(da, 3)[1].unit.values.tolist() == units


def test_sign_convention_is_deterministic(rng):
    x = anisotropic(rng, 80, 5)
    _, vecs = top_eigvecs(x, 5)
    _, vecs_neg = top_eigvecs(-x, 5)  # same covariance, eigensolver may pick other signs
    np.testing.assert_allclose(vecs.values, vecs_neg.values, atol=1e-10)
    v = vecs.values
    assert (v[np.abs(v).argmax(axis=0), np.arange(5)] > 0).all()


def test_validation(rng):
    x = anisotropic(rng, 20, 4)
    with pytest.raises(ValueError, match="at most"):
        top_eigvecs(x, 5)
    with pytest.raises(ValueError, match="positive"):
        top_eigvecs(x, 0)
    with pytest.raises(TypeError, match="positive integer"):
        top_eigvecs(x, 2.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        top_eigvecs(x[:1], 1)
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="1 NaN"):
        top_eigvecs(x, 2)
    with pytest.raises(ValueError, match="sample"):
        top_eigvecs(xr.DataArray(np.ones((3, 4)), dims=("a", "b")), 2)
