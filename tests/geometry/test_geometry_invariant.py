"""Function-invariant geometry: slow references, and invariance under maps folded into the head."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomxai.collect import FeatureMoments, collect_features
from geomxai.geometry import (
    effective_rank,
    gradient_metric_geometry,
    gradient_metric_spectrum,
    head_covariance,
    head_geometry,
    head_projection,
    participation_ratio,
)
from geomxai.models import cnn2


def well_conditioned(rng: np.random.Generator, d: int, cond: float) -> np.ndarray:
    """A random invertible d x d map U diag(s) V^T with singular values in [1, cond]."""
    u, _ = np.linalg.qr(rng.normal(size=(d, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s = np.exp(rng.uniform(0.0, math.log(cond), size=d))
    return (u * s) @ v.T


def correlated(rng, n, d):
    """Features with a spread spectrum and correlated units."""
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)


def entropy_rank(eig):
    p = np.asarray(eig, float) / np.sum(eig)
    p = p[p > 0]
    return math.exp(-(p * np.log(p)).sum())


# ---- slow references


def test_head_covariance_is_w_sigma_wt():
    rng = np.random.default_rng(0)
    h, w = correlated(rng, 60, 5), rng.normal(size=(3, 5))
    expected = w @ np.cov(h, rowvar=False) @ w.T
    np.testing.assert_allclose(head_covariance(h, w), expected, rtol=1e-12)
    moments = FeatureMoments.from_batch(h)
    np.testing.assert_allclose(head_covariance(moments, w), expected, rtol=1e-10)


def test_head_geometry_against_definitions():
    rng = np.random.default_rng(1)
    h, w = correlated(rng, 80, 6), rng.normal(size=(4, 6))
    u = (h - h.mean(0)) @ w.T
    g = head_geometry(h, w)
    assert g["effective_rank"] == pytest.approx(effective_rank(u), rel=1e-10)
    assert g["participation_ratio"] == pytest.approx(participation_ratio(u), rel=1e-10)
    r = np.corrcoef(u, rowvar=False)
    off = [abs(r[i, j]) for i in range(4) for j in range(4) if i != j]
    assert g["mean_abs_corr"] == pytest.approx(np.mean(off), rel=1e-10)
    assert (g["n_outputs"], g["n_live_outputs"]) == (4, 4)


def test_per_sample_jacobians_equal_to_the_weight_give_the_weight_projection():
    rng = np.random.default_rng(2)
    h, w = correlated(rng, 30, 4), rng.normal(size=(3, 4))
    jac = np.broadcast_to(w, (30, 3, 4))
    np.testing.assert_allclose(head_projection(h, jac), head_projection(h, w), rtol=1e-12)


@pytest.mark.parametrize(("n", "d"), [(50, 6), (5, 12)])
def test_gradient_spectrum_is_the_spectrum_of_sigma_g(n, d):
    rng = np.random.default_rng(3)
    h, g = correlated(rng, n, d), rng.normal(size=(n, d))
    sigma = np.cov(h, rowvar=False)
    second = g.T @ g / n
    # Sigma G is not symmetric: its eigenvalues from the general solver are the reference.
    slow = np.sort(np.linalg.eigvals(sigma @ second).real)[::-1]
    fast = gradient_metric_spectrum(h, g)
    k = min(len(fast), len(slow))
    np.testing.assert_allclose(fast[:k], slow[:k], rtol=1e-8, atol=1e-10 * slow[0])
    assert np.all(slow[k:] < 1e-9 * slow[0])
    geo = gradient_metric_geometry(h, g)
    assert geo["total"] == pytest.approx(np.trace(sigma @ second), rel=1e-10)
    assert geo["effective_rank"] == pytest.approx(entropy_rank(np.clip(slow, 0, None)), rel=1e-7)


def test_dead_units_enter_none_of_them():
    rng = np.random.default_rng(4)
    h, w, g = correlated(rng, 40, 5), rng.normal(size=(3, 5)), rng.normal(size=(40, 5))
    # A constant unit, read by the head and carrying gradient: it changes nothing.
    h_dead = np.hstack([h, np.full((40, 1), 3.0)])
    w_dead = np.hstack([w, rng.normal(size=(3, 1))])
    g_dead = np.hstack([g, rng.normal(size=(40, 1))])
    a, b = head_geometry(h, w), head_geometry(h_dead, w_dead)
    assert all(a[k] == pytest.approx(b[k], rel=1e-10) for k in a)
    a, b = gradient_metric_geometry(h, g), gradient_metric_geometry(h_dead, g_dead)
    assert all(a[k] == pytest.approx(b[k], rel=1e-9) for k in a)


def test_bad_shapes_are_refused():
    h = np.zeros((10, 3)) + np.arange(10)[:, None]
    with pytest.raises(ValueError, match=r"head must be the head's weight \(C, 3\)"):
        head_geometry(h, np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"grads must be per-sample gradients \(m, 3\)"):
        gradient_metric_geometry(h, np.ones((10, 2)))
    with pytest.raises(ValueError, match="NaN"):
        head_geometry(h, np.full((2, 3), np.nan))


def test_one_output_head_has_no_correlation():
    rng = np.random.default_rng(5)
    g = head_geometry(correlated(rng, 20, 3), rng.normal(size=(1, 3)))
    assert g["effective_rank"] == pytest.approx(1.0)
    assert math.isnan(g["mean_abs_corr"])


# ---- invariance: random well-conditioned maps folded into the head


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(3, 60),
    d=st.integers(2, 9),
    c=st.integers(1, 5),
    cond=st.floats(1.0, 30.0),
)
def test_invariant_under_folded_maps(seed, n, d, c, cond):
    rng = np.random.default_rng(seed)
    h, w = correlated(rng, n, d), rng.normal(size=(c, d))
    g = rng.normal(size=(n, d))
    a = well_conditioned(rng, d, cond)
    shift = rng.normal(size=d) * 10
    h2, w2, g2 = h @ a.T + shift, w @ np.linalg.inv(a), g @ np.linalg.inv(a)
    np.testing.assert_allclose(
        head_projection(h2, w2), head_projection(h, w), rtol=1e-8, atol=1e-8 * np.abs(h).max()
    )
    before, after = head_geometry(h, w), head_geometry(h2, w2)
    for key in ("effective_rank", "participation_ratio", "n_live_outputs"):
        assert after[key] == pytest.approx(before[key], rel=1e-6, abs=1e-9), key
    if math.isfinite(before["mean_abs_corr"]):
        assert after["mean_abs_corr"] == pytest.approx(before["mean_abs_corr"], abs=1e-6)
    before, after = gradient_metric_geometry(h, g), gradient_metric_geometry(h2, g2)
    for key in before:
        assert after[key] == pytest.approx(before[key], rel=1e-6, abs=1e-9), key


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cond=st.floats(2.0, 30.0))
def test_ordinary_geometry_moves_under_the_same_maps(seed, cond):
    """The control the invariant metrics pass is not vacuous: the layer's own geometry moves."""
    rng = np.random.default_rng(seed)
    h = correlated(rng, 200, 6)
    a = well_conditioned(rng, 6, cond) @ np.diag([1, 1, 1, 1, 1, 3.0])
    assert abs(effective_rank(h @ a.T) - effective_rank(h)) > 1e-4


@pytest.fixture(scope="module")
def small_cnn():
    torch.manual_seed(0)
    model = cnn2(num_classes=10, in_channels=1).eval()
    x = torch.rand(64, 1, 28, 28)
    return model, x


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cond=st.floats(1.0, 10.0))
def test_invariant_on_a_real_model_with_the_map_folded_into_its_head(small_cnn, seed, cond):
    """cnn2's feature layer and its head: the folded network computes the same logits, and the
    head-projected geometry of its features is that of the original."""
    model, x = small_cnn
    with torch.no_grad():
        h = collect_features(model, x, ["body"])["body"].values.astype(np.float64)
        w = model.head.weight.detach().double().numpy()
        b = model.head.bias.detach().double().numpy()
    rng = np.random.default_rng(seed)
    a = well_conditioned(rng, h.shape[1], cond)
    h2, w2 = h @ a.T, w @ np.linalg.inv(a)
    # The fold preserves the function (logits from the folded head equal the model's own).
    logits = model(x).detach().double().numpy()
    np.testing.assert_allclose(h2 @ w2.T + b, logits, rtol=1e-4, atol=1e-4)
    before, after = head_geometry(h, w), head_geometry(h2, w2)
    for key in before:
        assert after[key] == pytest.approx(before[key], rel=1e-6), key
    grads = np.broadcast_to(w[0], h.shape)  # d logit_0 / d h of a linear head
    before = gradient_metric_geometry(h, grads)
    after = gradient_metric_geometry(h2, grads @ np.linalg.inv(a))
    for key in before:
        assert after[key] == pytest.approx(before[key], rel=1e-6), key
