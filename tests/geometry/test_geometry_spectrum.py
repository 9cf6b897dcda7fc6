"""correlation_spectrum, correlation_summary, spectrum_decay, alpha_req; the dead-unit threshold."""

import math

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from geomxai.collect import FeatureMoments
from geomxai.geometry import alpha_req, correlation_spectrum, correlation_summary, spectrum_decay


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


# ----------------------------------------------------------------------------------- alpha-ReQ


def _standardised(n, d, seed):
    """(n, d) columns with mean 0, variance 1 and no sample correlation, exactly."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, d + 1)))
    # Orthonormal columns orthogonal to the constant vector: centred and uncorrelated.
    ones = np.ones((n, 1)) / math.sqrt(n)
    q = q - ones @ (ones.T @ q)
    q, _ = np.linalg.qr(q)
    return q[:, :d] * math.sqrt(n - 1)


def reference_alpha_req(h):
    """The alpha-ReQ fit written from its definition and the public implementation's steps.

    PCA explained-variance ratios of the centred features (every component), the 0-based
    window 5..99 (ranks 6..100) and weighted least squares on (-log k, 1) with weights 1/k,
    solved through the normal equations.
    """
    centred = h - h.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    ratio = s**2 / np.sum(s**2)
    index = np.arange(5, 100)
    k = (index + 1).astype(np.float64)
    y = np.log(ratio[index])
    x = np.stack([-np.log(k), np.ones_like(k)], axis=1)
    w = (1.0 / k)[:, None]
    b = np.linalg.solve(x.T @ (x * w), (w * x).T @ y)
    return float(b[0])


class TestAlphaReq:
    """alpha-ReQ under its own name: the covariance spectrum, ranks 6..100, weights 1/k."""

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_matches_the_reference_fit(self, seed):
        rng = np.random.default_rng(seed)
        h = rng.normal(size=(500, 160)) @ rng.normal(size=(160, 160)) + 3.0
        out = alpha_req(h)
        assert out["alpha"] == pytest.approx(reference_alpha_req(h), abs=1e-10)
        assert (out["fit_lo"], out["fit_hi"], out["n_fit"]) == (6, 100, 95)

    def test_a_planted_power_law_is_recovered_exactly(self):
        d = 150
        h = _standardised(2000, d, seed=3) * np.arange(1, d + 1) ** (-1.3 / 2)
        out = alpha_req(h)
        assert out["alpha"] == pytest.approx(1.3, abs=1e-9)
        assert out["r2"] == pytest.approx(1.0, abs=1e-12)
        assert out["intercept"] == pytest.approx(0.0, abs=1e-9)

    def test_the_window_is_never_modified_and_repeat_calls_agree(self):
        h = np.random.default_rng(4).normal(size=(300, 120)) * np.arange(1, 121) ** -0.6
        window = np.array([6, 100])
        as_list = [6, 100]
        first = alpha_req(h, ranks=window)
        assert alpha_req(h, ranks=window) == first
        assert alpha_req(h, ranks=as_list) == first
        assert window.tolist() == [6, 100] and as_list == [6, 100]
        assert alpha_req(h) == alpha_req(h) == first  # the default does not drift either
        from geomxai.geometry import ALPHA_REQ_RANKS

        assert ALPHA_REQ_RANKS == (6, 100)

    def test_it_is_the_weighted_fit_of_the_covariance_spectrum(self):
        rng = np.random.default_rng(5)
        k = np.arange(1, 121)
        # Not a pure power law: the weighting and the window both matter.
        h = _standardised(600, 120, seed=5) * np.sqrt(k**-1.0 + 0.02 * np.exp(-k / 30.0))
        h = h @ np.linalg.qr(rng.normal(size=(120, 120)))[0]  # rotate: units are mixed
        cov = np.sort(np.linalg.eigvalsh(np.cov(h, rowvar=False)))[::-1]
        out = alpha_req(h)
        weighted = spectrum_decay(cov, fit_range=(6, 100), weighting="inverse_rank")
        uniform = spectrum_decay(cov, fit_range=(6, 100))
        assert out["alpha"] == pytest.approx(weighted["alpha"], rel=1e-9)
        assert out["r2"] == pytest.approx(weighted["r2"], rel=1e-9)
        assert abs(out["alpha"] - uniform["alpha"]) > 1e-3

    def test_it_differs_from_the_correlation_spectrum_decay(self):
        # Independent units with a decaying variance: the covariance spectrum decays (alpha-ReQ
        # about 1), the correlation spectrum is flat (every correlation 0, alpha 0).
        d = 120
        h = _standardised(3000, d, seed=6) * np.arange(1, d + 1) ** -0.5
        s = correlation_summary(h)
        assert s["alpha_req"] == pytest.approx(1.0, abs=1e-9)
        assert abs(s["alpha"]) < 1e-6
        assert s["alpha_req"] == alpha_req(h)["alpha"]
        assert s["alpha_req_r2"] == alpha_req(h)["r2"]

    def test_moments_gram_and_tensor_inputs_agree(self):
        import torch

        rng = np.random.default_rng(7)
        tall = rng.normal(size=(400, 110)) * np.arange(1, 111) ** -0.4
        expected = alpha_req(tall)["alpha"]
        assert alpha_req(FeatureMoments.from_batch(tall))["alpha"] == pytest.approx(expected)
        assert alpha_req(torch.from_numpy(tall))["alpha"] == pytest.approx(expected)
        wide = rng.normal(size=(60, 300)) * np.arange(1, 301) ** -0.4  # n < d: Gram matrix
        cov = np.sort(np.linalg.eigvalsh(np.cov(wide, rowvar=False)))[::-1]
        out = alpha_req(wide)
        assert out["fit_hi"] == 59  # rank n - 1 = 59 is the last non-zero eigenvalue
        ref = spectrum_decay(cov, fit_range=(6, 100), weighting="inverse_rank", rtol=1e-9)
        assert out["alpha"] == pytest.approx(ref["alpha"], rel=1e-8)

    def test_a_window_beyond_the_spectrum_is_cut_or_refused(self):
        rng = np.random.default_rng(8)
        narrow = rng.normal(size=(200, 30)) * np.arange(1, 31) ** -0.7
        out = alpha_req(narrow)
        assert (out["fit_lo"], out["fit_hi"], out["n_fit"]) == (6, 30, 25)
        with pytest.raises(ValueError, match=r"alpha_req needs at least 2 .* ranks 6\.\.100"):
            alpha_req(rng.normal(size=(200, 6)))
        assert math.isnan(correlation_summary(rng.normal(size=(200, 6)))["alpha_req"])
        whole = alpha_req(narrow, ranks=(1, None))
        assert (whole["fit_lo"], whole["fit_hi"]) == (1, 30)

    @pytest.mark.parametrize("ranks", [(0, 10), (8, 3), (1.5, 10), (True, 10), 6, "6-100"])
    def test_bad_windows_are_refused_by_name(self, ranks):
        with pytest.raises(ValueError, match="ranks"):
            alpha_req(np.random.default_rng(9).normal(size=(50, 20)), ranks=ranks)

    def test_weighting_is_validated(self):
        with pytest.raises(ValueError, match="weighting must be one of"):
            spectrum_decay(np.arange(10.0, 0, -1), weighting="1/k")


# ----------------------------------------------------------------------------------- dead units


class TestDeadUnits:
    """One threshold, one place: geometry and entanglement agree on which units are dead."""

    def test_both_metrics_use_the_one_threshold(self):
        import inspect

        from geomxai.geometry import DEAD_UNIT_TOL

        assert DEAD_UNIT_TOL == 1e-8
        for fn in (correlation_spectrum, correlation_summary):
            assert inspect.signature(fn).parameters["tol"].default is DEAD_UNIT_TOL

    # Variance ratios to the largest unit: live above 1e-8, dead at or below. The old
    # entanglement rule (std ratio 1e-12, i.e. variance ratio 1e-24) called 1e-9..1e-20 live.
    RATIOS = (1.0, 0.3, 1e-6, 2e-8, 1e-9, 1e-14, 1e-20, 0.0)

    def test_entanglement_and_the_correlation_spectrum_agree(self):
        from _internals import entanglement_correlation as _correlation

        h = _standardised(400, len(self.RATIOS), seed=10) * np.sqrt(self.RATIOS) + 5.0
        h[:, 1] += 0.5 * h[:, 0]  # correlated live units, so "live" shows in R
        expected_dead = [r <= 1e-8 for r in self.RATIOS]
        spec = correlation_spectrum(h)
        assert spec.attrs["n_dead"] == sum(expected_dead) == 4
        r = _correlation(h)
        off = np.abs(r - np.diag(np.diag(r)))
        dead_in_entanglement = [
            bool(np.all(off[i] == 0) and np.all(off[:, i] == 0)) for i in range(h.shape[1])
        ]
        assert dead_in_entanglement == expected_dead

    @settings(max_examples=40, deadline=None)
    @given(
        log_ratios=st.lists(st.floats(-30, 0), min_size=2, max_size=8),
        seed=st.integers(0, 2**16),
    )
    def test_agreement_holds_for_any_variances(self, log_ratios, seed):
        from _internals import entanglement_correlation as _correlation

        from geomxai.geometry import DEAD_UNIT_TOL

        ratios = np.array([1.0, *(10.0**lr for lr in log_ratios)])
        d = ratios.size
        z = _standardised(3 * d + 5, d, seed=seed)
        z = z @ np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0]  # correlated
        h = z * np.sqrt(ratios)
        centred = h - h.mean(axis=0)
        var = np.einsum("ij,ij->j", centred, centred)
        # Live: variance above DEAD_UNIT_TOL times the largest (none when all are 0).
        live = var > DEAD_UNIT_TOL * var.max() if var.max() > 0 else np.zeros(d, dtype=bool)
        assert correlation_spectrum(h).attrs["n_live"] == int(live.sum())
        r = _correlation(h)
        for i in np.flatnonzero(~live):
            assert np.all(np.delete(r[i], i) == 0)
