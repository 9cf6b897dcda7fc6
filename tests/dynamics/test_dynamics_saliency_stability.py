"""saliency_stability: closed forms, a per-sample reference, zero maps, containers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geomxai.dynamics import saliency_stability


def reference(a: np.ndarray, b: np.ndarray) -> list[float]:
    out = []
    for x, y in zip(a, b, strict=True):
        x, y = x.ravel(), y.ravel()
        out.append(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))))
    return out


def test_closed_forms(rng):
    maps = rng.random((5, 7, 7))
    s = saliency_stability(maps, maps)
    assert s.dims == ("sample",) and s.name == "saliency_stability"
    np.testing.assert_allclose(s.values, 1.0)
    np.testing.assert_allclose(saliency_stability(maps, -maps).values, -1.0)
    scales = np.array([1e-6, 0.5, 3.0, 1e6, 42.0])[:, None, None]
    np.testing.assert_allclose(saliency_stability(maps, scales * maps).values, 1.0)
    # Disjoint supports are orthogonal.
    left, right = maps.copy(), maps.copy()
    left[:, :, 4:] = 0.0
    right[:, :, :4] = 0.0
    np.testing.assert_allclose(saliency_stability(left, right).values, 0.0)
    assert s.attrs["n_undefined"] == 0


def test_matches_reference(rng):
    a, b = rng.normal(size=(2, 6, 3, 5, 5))  # (n, C, H, W) maps are flattened per sample too
    np.testing.assert_allclose(saliency_stability(a, b).values, reference(a, b), rtol=1e-12)


def test_zero_maps_are_nan_without_warnings(rng):
    maps = rng.random((400, 4, 4))
    zeros = maps.copy()
    zeros[::2] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = saliency_stability(maps, zeros)
        mean = float(s.mean())
    assert np.isnan(s.values[::2]).all()
    np.testing.assert_allclose(s.values[1::2], 1.0)
    assert mean == pytest.approx(1.0)
    assert s.attrs["n_undefined"] == 200


def test_tiny_and_huge_maps_do_not_underflow(rng):
    maps = rng.random((2, 6, 6))
    s = saliency_stability(maps * 1e-200, maps * 1e200)
    np.testing.assert_allclose(s.values, 1.0)


def test_containers(rng):
    maps = rng.random((3, 4, 4)).astype(np.float32)
    other = rng.random((3, 4, 4))
    expected = saliency_stability(maps, other).values
    tensor = torch.tensor(maps, requires_grad=True)
    da = xr.DataArray(
        other.transpose(1, 2, 0), dims=("y", "x", "sample"), coords={"sample": [7, 8, 9]}
    )
    got = saliency_stability(tensor, da)
    np.testing.assert_allclose(got.values, expected, rtol=1e-12)
    assert got.sample.values.tolist() == [7, 8, 9]
    assert saliency_stability(maps, other).sample.values.tolist() == [0, 1, 2]


def test_validation(rng):
    maps = rng.random((3, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        saliency_stability(maps, maps[:2])
    with pytest.raises(ValueError, match="one map per sample"):
        saliency_stability(maps[0, 0], maps[0, 0])
    bad = maps.copy()
    bad[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        saliency_stability(maps, bad)
    with pytest.raises(ValueError, match="no samples"):
        saliency_stability(maps[:0], maps[:0])


finite = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False)


@settings(max_examples=25, deadline=None)
@given(arrays(np.float64, (3, 4, 4), elements=finite), st.floats(1e-3, 1e3))
def test_symmetric_bounded_and_scale_invariant(maps, scale):
    other = np.abs(np.roll(maps, 1, axis=-1)) + 0.5  # never all zero
    s = saliency_stability(maps, other)
    np.testing.assert_array_equal(np.isnan(s.values), ~maps.reshape(3, -1).any(axis=1))
    defined = ~np.isnan(s.values)
    assert (np.abs(s.values[defined]) <= 1.0).all()
    np.testing.assert_allclose(saliency_stability(other, maps).values, s.values, atol=1e-12)
    np.testing.assert_allclose(saliency_stability(scale * maps, other).values, s.values, atol=1e-12)


class TestEmptyInput:
    """No samples, or maps of no pixel: a clear error, not numpy's zero-size reduction error."""

    @pytest.mark.parametrize("shape", [(3, 0, 0), (3, 0), (2, 4, 0)])
    def test_maps_of_no_pixel_are_refused(self, shape):
        with pytest.raises(ValueError, match="maps_a holds maps of no pixels"):
            saliency_stability(np.zeros(shape), np.zeros(shape))

    def test_no_samples_are_refused(self):
        with pytest.raises(ValueError, match="no samples"):
            saliency_stability(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)))
