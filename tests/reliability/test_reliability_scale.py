"""Issue 24 item 11: the scale-free metrics give their true value for inputs at any finite scale.

Maps at 1e308 and features at 1e200 overflowed a sum or a covariance (NaN, "Eigenvalues did not
converge", "0 live of 6"); these metrics are computed on inputs divided by a power of two near
their largest magnitude, which is exact, so every scale gives the value of scale 1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomxai.attribution import gini, topq_contrast
from geomxai.geometry import (
    correlation_spectrum,
    correlation_summary,
    effective_rank,
    linear_cka,
    participation_ratio,
)
from geomxai.moments import FeatureMoments
from geomxai.whitening import decorrelation_loss

RTOL = 1e-9
_RNG = np.random.default_rng(11)
MAPS = _RNG.random((3, 6, 6)) * (_RNG.random((3, 6, 6)) < 0.5)
X = _RNG.normal(size=(60, 6)) @ _RNG.normal(size=(6, 6))
Y = X[:, :4] @ _RNG.normal(size=(4, 5)) + _RNG.normal(size=(60, 5))
WIDE = _RNG.normal(size=(8, 20))  # n < d: the Gram route


def _feature_metrics(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    summary = correlation_summary(x)
    return {
        "participation_ratio": participation_ratio(x),
        "effective_rank": effective_rank(x),
        "effective_rank_rankme": effective_rank(x, method="rankme"),
        "linear_cka": linear_cka(x, y),
        "linear_cka_biased": linear_cka(x, y, unbiased=False),
        "mean_abs_offdiag": summary["mean_abs_offdiag"],
        "offdiag_fro": summary["offdiag_fro"],
        "alpha": summary["alpha"],
        "n_live": summary["n_live"],
    }


def _map_metrics(maps: np.ndarray) -> np.ndarray:
    return np.concatenate([gini(maps).values, topq_contrast(maps, q=0.2).values])


SCALES = st.integers(-200, 200).map(lambda e: 10.0**e)


class TestMetricsAtExtremeScales:
    def test_maps_at_1e308(self):
        np.testing.assert_allclose(_map_metrics(MAPS * 1e308), _map_metrics(MAPS), rtol=RTOL)
        assert np.isfinite(_map_metrics(MAPS * 1e308)).all()

    @settings(max_examples=30, deadline=None)
    @given(SCALES)
    def test_maps_at_any_scale(self, c):
        np.testing.assert_allclose(_map_metrics(MAPS * c), _map_metrics(MAPS), rtol=RTOL)

    def test_features_at_1e200(self):
        got, want = _feature_metrics(X * 1e200, Y * 1e200), _feature_metrics(X, Y)
        assert got == pytest.approx(want, rel=RTOL)
        assert effective_rank(WIDE * 1e200) == pytest.approx(effective_rank(WIDE), rel=RTOL)
        assert participation_ratio(WIDE * 1e200) == pytest.approx(
            participation_ratio(WIDE), rel=RTOL
        )

    @settings(max_examples=20, deadline=None)
    @given(SCALES, SCALES)
    def test_features_at_any_scale(self, c, d):
        got, want = _feature_metrics(X * c, Y * d), _feature_metrics(X, Y)
        assert got == pytest.approx(want, rel=RTOL)

    def test_moments_at_a_scale_whose_covariance_squares_overflow(self):
        for metric in (participation_ratio, effective_rank):
            assert metric(FeatureMoments.from_batch(X * 1e150)) == pytest.approx(
                metric(FeatureMoments.from_batch(X)), rel=RTOL
            )

    def test_raw_spectra_keep_their_scale(self):
        # The correlation spectrum is scale-free by definition; a covariance spectrum is not and
        # is not rescaled (alpha-ReQ's fit uses it, and its slope is scale-free).
        np.testing.assert_allclose(
            correlation_spectrum(X * 1e100).values, correlation_spectrum(X).values, rtol=1e-9
        )

    def test_decorrelation_loss_at_1e200(self):
        h = torch.from_numpy(X)
        # At 1e200 eps is negligible next to every variance: the value is that of eps -> 0.
        want = decorrelation_loss(h, group_size=3, eps=1e-300)
        got = decorrelation_loss(h * 1e200, group_size=3)
        assert torch.isfinite(got) and float(got) == pytest.approx(float(want), rel=RTOL)
        g = (h * 1e200).requires_grad_(True)
        decorrelation_loss(g, group_size=3).backward()
        assert torch.isfinite(g.grad).all()

    @settings(max_examples=30, deadline=None)
    @given(st.integers(-150, 150).map(lambda e: 10.0**e))
    def test_decorrelation_loss_is_scale_free_with_its_eps(self, c):
        # Scaling features by c and eps by c^2 changes nothing: eps is a variance.
        h = torch.from_numpy(X)
        got = decorrelation_loss(h * c, group_size=4, eps=1e-5)
        want = decorrelation_loss(h, group_size=4, eps=1e-5 / c**2)
        assert float(got) == pytest.approx(float(want), rel=RTOL, abs=1e-300)
