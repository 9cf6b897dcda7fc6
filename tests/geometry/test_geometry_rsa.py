"""RSA: RDMs and their comparison against slow references written from the definitions."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from geomxai.geometry import compare_rdms, rdm, rsa


def _slow_rdm(x, metric):
    n = len(x)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            a, b = list(x[i]), list(x[j])
            if metric == "euclidean":
                out[i, j] = math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b, strict=True)))
                continue
            if metric == "correlation":
                ma, mb = sum(a) / len(a), sum(b) / len(b)
                a, b = [p - ma for p in a], [q - mb for q in b]
            dot = sum(p * q for p, q in zip(a, b, strict=True))
            out[i, j] = 1.0 - dot / math.sqrt(sum(p * p for p in a) * sum(q * q for q in b))
    return out


def _slow_spearman_upper(m1, m2):
    n = len(m1)
    u = [m1[i][j] for i in range(n) for j in range(i + 1, n)]
    v = [m2[i][j] for i in range(n) for j in range(i + 1, n)]

    def ranks(values):  # average ranks of ties
        order = sorted(range(len(values)), key=values.__getitem__)
        r = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2 + 1
            i = j + 1
        return r

    ru, rv = ranks(u), ranks(v)
    mu, mv = sum(ru) / len(ru), sum(rv) / len(rv)
    num = sum((p - mu) * (q - mv) for p, q in zip(ru, rv, strict=True))
    return num / math.sqrt(sum((p - mu) ** 2 for p in ru) * sum((q - mv) ** 2 for q in rv))


@pytest.mark.parametrize("metric", ["correlation", "euclidean", "cosine"])
def test_rdm_matches_the_definition(metric):
    x = np.random.default_rng(0).normal(size=(9, 5)) + 2.0
    got = rdm(x, metric=metric)
    assert got.dims == ("sample", "sample_b") and got.attrs["metric"] == metric
    np.testing.assert_allclose(got.values, _slow_rdm(x, metric), atol=1e-12)


@pytest.mark.parametrize("metric", ["correlation", "euclidean", "cosine"])
def test_rsa_is_spearman_of_the_upper_triangles(metric):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(10, 4))
    b = np.tanh(a @ rng.normal(size=(4, 6))) + 0.2 * rng.normal(size=(10, 6))
    want = _slow_spearman_upper(_slow_rdm(a, metric), _slow_rdm(b, metric))
    assert rsa(a, b, metric=metric) == pytest.approx(want, abs=1e-12)


def test_compare_rdms_methods():
    rng = np.random.default_rng(2)
    m1, m2 = rdm(rng.normal(size=(8, 3))), rdm(rng.normal(size=(8, 3)))
    iu = np.triu_indices(8, k=1)
    u, v = m1.values[iu], m2.values[iu]
    assert compare_rdms(m1, m2, method="pearson") == pytest.approx(np.corrcoef(u, v)[0, 1])
    assert compare_rdms(m1, m2, method="kendall") == pytest.approx(stats.kendalltau(u, v)[0])


_sets = st.integers(0, 10_000).map(lambda s: np.random.default_rng(s).normal(size=(12, 5)))


@settings(max_examples=25, deadline=None)
@given(
    _sets,
    st.floats(0.1, 20.0),
    st.integers(0, 10_000),
    st.sampled_from(["correlation", "euclidean", "cosine"]),
)
def test_rsa_invariances(x, c, seed, metric):
    rng = np.random.default_rng(seed)
    y = np.tanh(x @ rng.normal(size=(5, 4))) + 0.1 * rng.normal(size=(12, 4))
    base = rsa(x, y, metric=metric)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    perm = rng.permutation(12)
    if metric != "correlation":  # correlation centres each sample over units: not rotation-free
        assert rsa(c * x @ q, y, metric=metric) == pytest.approx(base, abs=1e-9)
    assert rsa(c * x, y, metric=metric) == pytest.approx(base, abs=1e-9)
    assert rsa(x[perm], y[perm], metric=metric) == pytest.approx(base, abs=1e-9)


def test_rdm_refuses_undefined_dissimilarities():
    x = np.random.default_rng(3).normal(size=(5, 4))
    x[2] = 1.0
    with pytest.raises(ValueError, match=r"samples \[2\]"):
        rdm(x, metric="correlation")
    rdm(x, metric="euclidean")  # defined
    with pytest.raises(ValueError, match="metric"):
        rdm(x, metric="manhattan")
    with pytest.raises(ValueError, match="same number of samples"):
        rsa(x, x[:4], metric="euclidean")
