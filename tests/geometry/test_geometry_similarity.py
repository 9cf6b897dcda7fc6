"""linear_cka and procrustes_distance against slow references, closed forms and metric axioms."""

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from _internals import geometry_similarity
from hypothesis import given, settings
from hypothesis import strategies as st

from geomxai.collect import FeatureMoments
from geomxai.geometry import linear_cka, procrustes_distance

# ---- slow references, straight from the definitions


def slow_hsic_biased(k, l_):
    """tr(K H L H) / (n-1)^2 with the centring matrix H = I - 11'/n."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l_ @ h) / (n - 1) ** 2


def slow_hsic_unbiased(k, l_):
    """Nguyen et al. (2021), unbiased HSIC, written with explicit loops over the index sets."""
    n = k.shape[0]
    kt = [[0.0 if i == j else k[i, j] for j in range(n)] for i in range(n)]
    lt = [[0.0 if i == j else l_[i, j] for j in range(n)] for i in range(n)]
    tr_kl = sum(kt[i][j] * lt[j][i] for i in range(n) for j in range(n))
    sum_k = sum(kt[i][j] for i in range(n) for j in range(n))
    sum_l = sum(lt[i][j] for i in range(n) for j in range(n))
    kl_1 = sum(kt[i][j] * lt[j][q] for i in range(n) for j in range(n) for q in range(n))
    return (tr_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - 2 / (n - 2) * kl_1) / (n * (n - 3))


def slow_hsic_quadruples(k, l_):
    """The U-statistic of Song et al. (2012): mean over distinct (i, j, q, r) of
    h = 1/4! sum over orderings (t, u, v, w) of k_tu l_tu + k_tu l_vw - 2 k_tu l_tv."""
    n = k.shape[0]
    total, count = 0.0, 0
    for quad in itertools.permutations(range(n), 4):
        h = 0.0
        for t, u, v, w in itertools.permutations(quad):
            h += k[t, u] * l_[t, u] + k[t, u] * l_[v, w] - 2 * k[t, u] * l_[t, v]
        total += h / 24
        count += 1
    return total / count


def slow_cka(x, y, hsic):
    k, l_ = x @ x.T, y @ y.T
    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


def random_orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def slow_procrustes(x, y):
    """Williams et al. (2021): centre, unit norm, pad, arccos of the best alignment."""
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    x = x / np.linalg.norm(x)
    y = y / np.linalg.norm(y)
    d = max(x.shape[1], y.shape[1])
    x = np.hstack([x, np.zeros((x.shape[0], d - x.shape[1]))])
    y = np.hstack([y, np.zeros((y.shape[0], d - y.shape[1]))])
    nuclear = np.linalg.svd(x.T @ y, compute_uv=False).sum()
    return math.acos(min(nuclear, 1.0)), math.sqrt(max(2 - 2 * nuclear, 0.0))


# ---- references agree with each other


def test_unbiased_formula_equals_quadruple_u_statistic(rng):
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    k, l_ = x @ x.T, y @ y.T
    assert slow_hsic_unbiased(k, l_) == pytest.approx(slow_hsic_quadruples(k, l_), rel=1e-10)


# ---- linear CKA


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("shape", [(30, 4, 6), (9, 20, 15), (12, 1, 3)])
def test_cka_matches_slow_reference(rng, unbiased, shape):
    n, d1, d2 = shape
    x = rng.normal(size=(n, d1)) + 3.0
    y = x[:, :1] * rng.normal(size=(1, d2)) + rng.normal(size=(n, d2))
    ref = slow_cka(
        x - x.mean(0), y - y.mean(0), slow_hsic_unbiased if unbiased else slow_hsic_biased
    )
    assert linear_cka(x, y, unbiased=unbiased) == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_unbiased_cka_is_translation_invariant_like_the_reference(rng):
    # The reference on the raw (uncentred) kernels: the U-statistic needs no centring.
    x, y = rng.normal(size=(10, 3)) + 5.0, rng.normal(size=(10, 4)) - 2.0
    assert linear_cka(x, y) == pytest.approx(slow_cka(x, y, slow_hsic_unbiased), rel=1e-8)


@pytest.mark.parametrize("unbiased", [True, False])
def test_feature_and_gram_forms_agree(rng, unbiased, monkeypatch):
    sim = geometry_similarity

    x, y = rng.normal(size=(40, 6)), rng.normal(size=(40, 5))
    y[:, 0] += x[:, 1]
    values = []
    for use in (True, False):
        monkeypatch.setattr(sim, "_use_gram", lambda n, d1, d2, use=use: use)
        values.append(linear_cka(x, y, unbiased=unbiased))
    assert values[0] == pytest.approx(values[1], rel=1e-12)


def test_form_choice():
    assert geometry_similarity._use_gram(10, 500, 500)  # few samples, wide layers
    assert not geometry_similarity._use_gram(10000, 16, 32)  # many samples, narrow layers


@pytest.mark.parametrize("unbiased", [True, False])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(6, 40), d=st.integers(1, 12))
@settings(max_examples=30, deadline=None)
def test_cka_rotation_scale_symmetry(unbiased, seed, n, d):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, d + 2))
    c = float(rng.uniform(0.01, 100.0)) * rng.choice([-1.0, 1.0])
    q = random_orthogonal(rng, d)
    assert linear_cka(x, x @ q, unbiased=unbiased) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, c * x, unbiased=unbiased) == pytest.approx(1.0, abs=1e-9)
    base = linear_cka(x, y, unbiased=unbiased)
    if math.isnan(base):
        return  # the unbiased self-similarity can be <= 0 on tiny n; covered elsewhere
    assert linear_cka(c * x, y, unbiased=unbiased) == pytest.approx(base, rel=1e-9, abs=1e-12)
    assert linear_cka(x @ q, y, unbiased=unbiased) == pytest.approx(base, rel=1e-9, abs=1e-12)
    assert linear_cka(y, x, unbiased=unbiased) == pytest.approx(base, rel=1e-12, abs=1e-15)


def test_biased_cka_is_in_unit_interval_and_unbiased_is_not_inflated(rng):
    u, v = rng.normal(size=(40, 400)), rng.normal(size=(40, 400))
    biased = linear_cka(u, v, unbiased=False)
    assert 0.8 < biased <= 1.0  # the width inflates the plain estimator
    assert abs(linear_cka(u, v)) < 0.05


def test_cka_not_invariant_to_anisotropic_scaling(rng):
    x = rng.normal(size=(200, 4))
    assert linear_cka(x, x * np.array([1.0, 1.0, 1.0, 30.0])) < 0.9


def test_cka_accepts_tensors_and_dataarrays(rng):
    x, y = rng.normal(size=(20, 3)), rng.normal(size=(20, 5))
    ref = linear_cka(x, y)
    assert linear_cka(torch.tensor(x, dtype=torch.float64), torch.tensor(y)) == pytest.approx(ref)
    da_x = xr.DataArray(x, dims=("sample", "unit_a"), coords={"sample": np.arange(20)})
    da_y = xr.DataArray(y.T, dims=("unit_b", "sample"), coords={"sample": np.arange(20)})
    assert linear_cka(da_x, da_y) == pytest.approx(ref)
    assert procrustes_distance(da_x, da_y) == pytest.approx(procrustes_distance(x, y))
    shuffled = da_y.assign_coords(sample=np.arange(20)[::-1])
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(da_x, shuffled)


def test_cka_input_errors(rng):
    x = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="same number of samples"):
        linear_cka(x, rng.normal(size=(9, 3)))
    with pytest.raises(ValueError, match="at least 4 samples"):
        linear_cka(x[:3], x[:3])
    assert linear_cka(x[:3], x[:3] * 2, unbiased=False) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        linear_cka(x[:1], x[:1], unbiased=False)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        linear_cka(bad, x)
    with pytest.raises(ValueError, match="zero variance"):
        linear_cka(np.ones((10, 3)), x)
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(x[:, 0], x)
    with pytest.raises(TypeError, match="FeatureMoments"):
        linear_cka(FeatureMoments.empty(3).update(x), x)
    with pytest.raises(TypeError, match="unbiased must be a bool"):
        linear_cka(x, x, unbiased="yes")


def test_unbiased_cka_nan_with_warning_when_self_similarity_not_positive():
    # All of the spread comes from one sample: the U-statistic self-similarity is exactly 0.
    x = np.array([[-2.0], [-2.0], [-2.0], [3.0], [-2.0], [-2.0]])
    k = x @ x.T
    assert slow_hsic_unbiased(k, k) == pytest.approx(0.0, abs=1e-12)
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert math.isnan(linear_cka(x, x))


# ---- Procrustes shape distance


@pytest.mark.parametrize("shape", [(30, 4, 6), (8, 20, 13), (25, 5, 5)])
def test_procrustes_matches_slow_reference(rng, shape):
    n, d1, d2 = shape
    x = rng.normal(size=(n, d1))
    y = x[:, :1] * rng.normal(size=(1, d2)) + 0.5 * rng.normal(size=(n, d2)) + 4.0
    angular, euclidean = slow_procrustes(x, y)
    assert procrustes_distance(x, y) == pytest.approx(angular, rel=1e-9)
    assert procrustes_distance(x, y, kind="euclidean") == pytest.approx(euclidean, rel=1e-9)


@pytest.mark.parametrize("kind", ["angular", "euclidean"])
def test_procrustes_zero_for_similarity_transform(rng, kind):
    x = rng.normal(size=(50, 6))
    q = random_orthogonal(rng, 6)
    assert procrustes_distance(x, -3.0 * x @ q + 7.0, kind=kind) == pytest.approx(0.0, abs=1e-12)
    # Padding: x embedded in a wider space by a rotation is the same shape.
    wide = np.hstack([x, np.zeros((50, 3))]) @ random_orthogonal(rng, 9)
    assert procrustes_distance(x, wide, kind=kind) == pytest.approx(0.0, abs=1e-12)
    # Wider than the sample count (the column reduction path).
    h = rng.normal(size=(6, 20))
    assert procrustes_distance(h, h @ random_orthogonal(rng, 20), kind=kind) < 1e-12


def test_procrustes_not_invariant_to_anisotropic_scaling(rng):
    x = rng.normal(size=(100, 3))
    assert procrustes_distance(x, x * np.array([1.0, 1.0, 10.0])) > 0.1


@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(3, 12),
    widths=st.tuples(st.integers(1, 15), st.integers(1, 15), st.integers(1, 15)),
    kind=st.sampled_from(["angular", "euclidean"]),
)
@settings(max_examples=60, deadline=None)
def test_procrustes_is_a_bounded_metric(seed, n, widths, kind):
    rng = np.random.default_rng(seed)
    a, b, c = (rng.normal(size=(n, w)) for w in widths)
    # Near-duplicates make the triangle inequality tight, where rounding would show.
    if seed % 3 == 0:
        w = widths[1]
        b = np.hstack([a, np.zeros((n, max(0, w - widths[0])))])[:, :w] + 1e-6 * b
    d_ab = procrustes_distance(a, b, kind=kind)
    d_bc = procrustes_distance(b, c, kind=kind)
    d_ac = procrustes_distance(a, c, kind=kind)
    bound = math.pi / 2 if kind == "angular" else math.sqrt(2)
    for d in (d_ab, d_bc, d_ac):
        assert 0.0 <= d <= bound + 1e-12
    assert d_ab == pytest.approx(procrustes_distance(b, a, kind=kind), abs=1e-12)
    assert d_ac <= d_ab + d_bc + 1e-10


def test_procrustes_orthogonal_subspaces_at_the_bound():
    # Two sets whose centred columns are orthogonal: no rotation aligns any of their mass.
    t = np.linspace(-1, 1, 8)
    a = np.stack([t, np.zeros(8)], 1)
    b = np.zeros((8, 2))
    b[:, 1] = [1, -1, 1, -1, -1, 1, -1, 1]  # orthogonal to t and to the constant
    assert abs(b[:, 1] @ t) < 1e-12
    assert procrustes_distance(a, b) == pytest.approx(math.pi / 2)
    assert procrustes_distance(a, b, kind="euclidean") == pytest.approx(math.sqrt(2))


def test_procrustes_errors(rng):
    x = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="kind must be one of"):
        procrustes_distance(x, x, kind="cosine")
    with pytest.raises(ValueError, match="same number of samples"):
        procrustes_distance(x, x[:5])
    with pytest.raises(ValueError, match="at least 2 samples"):
        procrustes_distance(x[:1], x[:1])
    with pytest.raises(ValueError, match="zero variance"):
        procrustes_distance(x, np.zeros((10, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert procrustes_distance(x.astype(np.float32), x) == pytest.approx(0.0, abs=1e-6)
