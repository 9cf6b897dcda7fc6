"""correlation_spectrum, correlation_summary and spectrum_decay."""

import math

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from geomxai.collect import FeatureMoments
from geomxai.geometry import correlation_spectrum, correlation_summary, spectrum_decay


def slow_correlation(h, tol=1e-8):
    n, d = h.shape
    mean = [sum(h[k, i] for k in range(n)) / n for i in range(d)]
    var = [sum((h[k, i] - mean[i]) ** 2 for k in range(n)) / (n - 1) for i in range(d)]
    live = [i for i in range(d) if var[i] > tol * max(var)]
    r = np.empty((len(live), len(live)))
    for a, i in enumerate(live):
        for b, j in enumerate(live):
            cov = sum((h[k, i] - mean[i]) * (h[k, j] - mean[j]) for k in range(n)) / (n - 1)
            r[a, b] = cov / math.sqrt(var[i] * var[j])
    return r, d - len(live)


@pytest.fixture
def features():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
    h[:, 2] = 0.0  # a dead ReLU
    h[:, 4] = 7.0  # a constant unit
    return h


def test_spectrum_matches_slow_reference(features):
    spec = correlation_spectrum(features)
    r, n_dead = slow_correlation(features)
    expected = np.sort(np.linalg.eigvalsh(r))[::-1]
    np.testing.assert_allclose(spec.values, expected, atol=1e-10)
    assert spec.dims == ("component",)
    assert spec["component"].values.tolist() == [1, 2, 3, 4]
    assert spec.attrs["n_dead"] == n_dead == 2
    assert spec.attrs["n_live"] == 4
    assert np.all(np.isfinite(spec.values))
    assert spec.sum() == pytest.approx(4.0)


def test_summary_matches_slow_reference(features):
    s = correlation_summary(features)
    r, _ = slow_correlation(features)
    d = r.shape[0]
    off = [r[i, j] for i in range(d) for j in range(d) if i != j]
    assert s["mean_abs_offdiag"] == pytest.approx(sum(abs(v) for v in off) / (d * (d - 1)))
    assert s["offdiag_fro"] == pytest.approx(np.linalg.norm(r - np.eye(d)) / math.sqrt(d * (d - 1)))
    assert (s["n_live"], s["n_dead"]) == (4, 2)
    decay = spectrum_decay(correlation_spectrum(features))
    assert s["alpha"] == pytest.approx(decay["alpha"])
    assert s["alpha_r2"] == pytest.approx(decay["r2"])


def test_moments_and_gram_paths_agree(features):
    m = FeatureMoments.from_batch(features)
    np.testing.assert_allclose(
        correlation_spectrum(m).values, correlation_spectrum(features).values, atol=1e-9
    )
    assert correlation_summary(m)["offdiag_fro"] == pytest.approx(
        correlation_summary(features)["offdiag_fro"]
    )
    rng = np.random.default_rng(2)
    wide = rng.normal(size=(5, 30))
    spec = correlation_spectrum(wide)
    full = np.sort(np.linalg.eigvalsh(np.corrcoef(wide, rowvar=False)))[::-1].clip(0)
    np.testing.assert_allclose(spec.values, full, atol=1e-9)
    assert spec.sizes["component"] == 30


def test_identical_and_independent_units():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(1000, 1))
    same = correlation_summary(np.hstack([a, a, -a]))
    assert same["mean_abs_offdiag"] == pytest.approx(1.0)
    assert same["offdiag_fro"] == pytest.approx(1.0)
    indep = correlation_summary(rng.normal(size=(100_000, 4)))
    assert indep["offdiag_fro"] < 0.01


def test_all_dead_spectrum_is_empty_not_nan():
    spec = correlation_spectrum(np.zeros((10, 3)))
    assert spec.sizes["component"] == 0
    assert spec.attrs["n_dead"] == 3
    with pytest.raises(ValueError, match="at least 2 live units"):
        correlation_summary(np.zeros((10, 3)))


def test_decay_known_power_law_and_range_not_mutated():
    k = np.arange(1, 51)
    spectrum = xr.DataArray(2.0 * k**-0.8, dims="component", coords={"component": k})
    fit_range = [3, 40]
    first = spectrum_decay(spectrum, fit_range=fit_range)
    second = spectrum_decay(spectrum, fit_range=fit_range)
    assert fit_range == [3, 40]
    assert first == second
    assert first["alpha"] == pytest.approx(0.8)
    assert first["intercept"] == pytest.approx(math.log(2.0))
    assert (first["fit_lo"], first["fit_hi"], first["n_fit"]) == (3, 40, 38)
    assert spectrum_decay(spectrum) == spectrum_decay(spectrum)


def test_decay_drops_zeros_and_reports_r2():
    rng = np.random.default_rng(4)
    k = np.arange(1, 31)
    noisy = k**-1.0 * np.exp(rng.normal(scale=0.3, size=30))
    out = spectrum_decay(np.concatenate([noisy, np.zeros(5)]))
    assert out["n_fit"] == 30
    assert 0 < out["r2"] < 1


@pytest.mark.parametrize("fit_range", [(0, None), (5, 2), (1.5, None)])
def test_decay_rejects_bad_range(fit_range):
    with pytest.raises(ValueError, match="fit_range"):
        spectrum_decay(np.arange(10.0, 0, -1), fit_range=fit_range)


def test_decay_needs_two_points():
    with pytest.raises(ValueError, match="at least 2"):
        spectrum_decay(np.array([1.0, 0.0, 0.0]))


def test_bad_tol_and_nan():
    with pytest.raises(ValueError, match="tol"):
        correlation_spectrum(np.eye(3), tol=2.0)
    with pytest.raises(ValueError, match="NaN"):
        correlation_spectrum(np.array([[np.nan, 1.0], [1.0, 2.0]]))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(3, 15), d=st.integers(2, 10), seed=st.integers(0, 2**16))
def test_spectrum_permutation_invariance(n, d, seed):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d)
    spec = correlation_spectrum(h)
    shuffled = h[rng.permutation(n)][:, rng.permutation(d)]
    np.testing.assert_allclose(correlation_spectrum(shuffled).values, spec.values, atol=1e-9)
    # correlation is invariant to per-unit affine rescaling
    np.testing.assert_allclose(correlation_spectrum(h * 3.0 - 1.0).values, spec.values, atol=1e-9)
    assert spec.sum() == pytest.approx(spec.attrs["n_live"])
