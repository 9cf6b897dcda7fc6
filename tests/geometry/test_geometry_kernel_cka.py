"""Kernel (RBF) CKA and CKA matrices against slow references written from the definitions."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomxai.geometry import cka_matrix, kernel_cka, linear_cka


def _slow_rbf(x, sigma=None, scale=1.0):
    """K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2)), sigma = scale * median pairwise distance."""
    n = len(x)
    dist = [
        [math.sqrt(sum((x[i][k] - x[j][k]) ** 2 for k in range(len(x[i])))) for j in range(n)]
        for i in range(n)
    ]
    if sigma is None:
        sigma = scale * float(np.median([dist[i][j] for i in range(n) for j in range(i + 1, n)]))
    return [[math.exp(-(dist[i][j] ** 2) / (2 * sigma**2)) for j in range(n)] for i in range(n)]


def _slow_hsic_biased(k, l_):
    """tr(K H L H) / (n - 1)^2 with H = I - 11'/n, by explicit loops."""
    n = len(k)
    h = [[(1.0 if i == j else 0.0) - 1.0 / n for j in range(n)] for i in range(n)]

    def mul(a, b):
        return [[sum(a[i][t] * b[t][j] for t in range(n)) for j in range(n)] for i in range(n)]

    m = mul(mul(mul(k, h), l_), h)
    return sum(m[i][i] for i in range(n)) / (n - 1) ** 2


def _slow_hsic_unbiased(k, l_):
    """Song et al. (2012), eq. 5, with explicit sums over the zero-diagonal kernels."""
    n = len(k)
    kt = [[0.0 if i == j else k[i][j] for j in range(n)] for i in range(n)]
    lt = [[0.0 if i == j else l_[i][j] for j in range(n)] for i in range(n)]
    tr = sum(kt[i][j] * lt[j][i] for i in range(n) for j in range(n))
    sk = sum(map(sum, kt))
    sl = sum(map(sum, lt))
    kl1 = sum(sum(kt[i][t] for t in range(n)) * sum(lt[i][t] for t in range(n)) for i in range(n))
    return (tr + sk * sl / ((n - 1) * (n - 2)) - 2.0 * kl1 / (n - 2)) / (n * (n - 3))


def _slow_kernel_cka(a, b, unbiased, sigma=None, scale=1.0):
    k, l_ = _slow_rbf(a.tolist(), sigma, scale), _slow_rbf(b.tolist(), sigma, scale)
    hsic = _slow_hsic_unbiased if unbiased else _slow_hsic_biased
    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_kernel_cka_matches_the_definition(unbiased, scale):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(14, 5))
    b = np.tanh(a @ rng.normal(size=(5, 3))) + 0.3 * rng.normal(size=(14, 3))
    got = kernel_cka(a, b, unbiased=unbiased, median_scale=scale)
    assert got == pytest.approx(_slow_kernel_cka(a, b, unbiased, scale=scale), rel=1e-9)


def test_kernel_cka_with_a_fixed_bandwidth_matches_the_definition():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(12, 4)), rng.normal(size=(12, 6))
    got = kernel_cka(a, b, sigma=1.7, unbiased=False)
    assert got == pytest.approx(_slow_kernel_cka(a, b, False, sigma=1.7), rel=1e-9)


def test_kernel_cka_separates_related_from_unrelated():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 4))
    related = kernel_cka(x, np.sin(x) + 0.05 * rng.normal(size=x.shape))
    unrelated = kernel_cka(x, rng.normal(size=(200, 4)))
    assert related > 0.5 and abs(unrelated) < 0.05


_matrices = st.integers(0, 10_000).map(lambda s: np.random.default_rng(s).normal(size=(20, 4)))


@settings(max_examples=25, deadline=None)
@given(_matrices, st.floats(0.1, 50.0), st.integers(0, 10_000), st.booleans())
def test_kernel_cka_invariances(x, c, seed, unbiased):
    """Isotropic scaling, orthogonal rotation, translation (median heuristic) and a sample
    permutation of both sets leave the value unchanged."""
    rng = np.random.default_rng(seed)
    y = np.tanh(x @ rng.normal(size=(4, 3)))
    base = kernel_cka(x, y, unbiased=unbiased)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    perm = rng.permutation(len(x))
    assert kernel_cka(c * x @ q + 3.0, y, unbiased=unbiased) == pytest.approx(base, abs=1e-9)
    assert kernel_cka(x[perm], y[perm], unbiased=unbiased) == pytest.approx(base, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(_matrices, st.floats(0.1, 50.0), st.integers(0, 10_000))
def test_linear_cka_invariances(x, c, seed):
    rng = np.random.default_rng(seed)
    y = x @ rng.normal(size=(4, 6)) + rng.normal(size=(20, 6))
    base = linear_cka(x, y)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    perm = rng.permutation(len(x))
    assert linear_cka(c * x @ q, y) == pytest.approx(base, abs=1e-9)
    assert linear_cka(x[perm], y[perm]) == pytest.approx(base, abs=1e-9)


def test_kernel_cka_refuses_bad_bandwidths():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="sigma"):
        kernel_cka(x, x, sigma=0.0)
    with pytest.raises(ValueError, match="median_scale"):
        kernel_cka(x, x, median_scale=-1)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_matrix_is_the_pairwise_cka(kernel):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 5))
    feats = {
        "conv": x,
        "pool": np.maximum(x, 0) @ rng.normal(size=(5, 7)),
        "fc": rng.normal(size=(30, 2)),
    }
    m = cka_matrix(feats, kernel=kernel)
    fn = linear_cka if kernel == "linear" else kernel_cka
    assert m.dims == ("layer", "layer_b")
    assert list(m["layer"].values) == list(feats)
    for i in feats:
        for j in feats:
            assert float(m.sel(layer=i, layer_b=j)) == pytest.approx(
                fn(feats[i], feats[j]), abs=1e-12
            )
    np.testing.assert_allclose(m.values, m.values.T)
    np.testing.assert_allclose(np.diag(m.values), 1.0)


def test_cka_matrix_over_checkpoints_labels_a_sequence_and_says_why_nan():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(12, 3))
    m = cka_matrix([x, 2 * x, np.ones((12, 3))], dim="epoch")
    assert m.dims == ("epoch", "epoch_b") and list(m["epoch"].values) == [0, 1, 2]
    assert float(m[0, 1]) == pytest.approx(1.0)
    assert np.isnan(m[2]).all() and "zero variance" in m.attrs["nan_reason"]
    with pytest.raises(ValueError, match="kernel"):
        cka_matrix([x], kernel="poly")
