"""effective_rank and participation_ratio against slow references and closed forms."""

import math

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from geomxai.collect import FeatureMoments
from geomxai.geometry import effective_rank, participation_ratio


def slow_covariance(h):
    n, d = len(h), len(h[0])
    mean = [sum(h[k][i] for k in range(n)) / n for i in range(d)]
    return np.array(
        [
            [
                sum((h[k][i] - mean[i]) * (h[k][j] - mean[j]) for k in range(n)) / (n - 1)
                for j in range(d)
            ]
            for i in range(d)
        ]
    )


def slow_erank(h):
    eig = [max(v, 0.0) for v in np.linalg.eigvalsh(slow_covariance(h))]
    total = sum(eig)
    ent = 0.0
    for v in eig:
        p = v / total
        if p > 0:
            ent -= p * math.log(p)
    return math.exp(ent)


def slow_rankme(h, eps=1e-7):
    s = np.linalg.svd(np.asarray(h, dtype=float), compute_uv=False)
    total = sum(s)
    ent = 0.0
    for v in s:
        p = v / total + eps
        ent -= p * math.log(p)
    return math.exp(ent)


def slow_pr(h):
    eig = np.linalg.eigvalsh(slow_covariance(h))
    return sum(eig) ** 2 / sum(v * v for v in eig)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_matches_slow_reference(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    h = rng.normal(size=(30, 5)) @ rng.normal(size=(5, 5)) + 3.0
    assert effective_rank(h) == pytest.approx(slow_erank(h.tolist()), rel=1e-10)
    assert participation_ratio(h) == pytest.approx(slow_pr(h.tolist()), rel=1e-10)
    assert effective_rank(h, method="rankme") == pytest.approx(slow_rankme(h), rel=1e-10)


def test_n_smaller_than_d_uses_gram_with_same_answer(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    h = rng.normal(size=(6, 40))
    assert effective_rank(h) == pytest.approx(slow_erank(h.tolist()), rel=1e-9)
    assert participation_ratio(h) == pytest.approx(slow_pr(h.tolist()), rel=1e-9)
    assert effective_rank(h, method="rankme") == pytest.approx(slow_rankme(h), rel=1e-9)
    # at most n - 1 = 5 non-zero covariance eigenvalues
    assert effective_rank(h) <= 5 + 1e-9


def test_closed_forms(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    d = 8
    iso = rng.normal(size=(200_000, d))
    assert effective_rank(iso) == pytest.approx(d, rel=1e-3)
    assert participation_ratio(iso) == pytest.approx(d, rel=2e-2)
    rank1 = np.outer(rng.normal(size=500), rng.normal(size=d))
    assert effective_rank(rank1) == pytest.approx(1.0, abs=1e-9)
    assert participation_ratio(rank1) == pytest.approx(1.0, abs=1e-9)


def test_known_spectrum():
    # Orthogonal axes with variances 4, 1, 1: p = (2/3, 1/6, 1/6).
    lam = np.array([4.0, 1.0, 1.0])
    h = np.vstack([np.diag(np.sqrt(lam)), -np.diag(np.sqrt(lam))]) * np.sqrt(5 / 2)
    p = lam / lam.sum()
    assert effective_rank(h) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-12)
    assert participation_ratio(h) == pytest.approx(36 / 18, rel=1e-12)


def test_rankme_differs_from_covariance(rng):
    h = rng.normal(size=(500, 6)) * [3, 2, 1, 1, 0.5, 0.1] + 1.0
    assert abs(effective_rank(h, method="rankme") - effective_rank(h)) > 0.1


def test_containers_agree(rng):
    h = rng.normal(size=(50, 7)).astype(np.float32)
    ref = effective_rank(h)
    da = xr.DataArray(h.T, dims=("unit_body", "sample"))
    assert effective_rank(da) == pytest.approx(ref, rel=1e-10)
    assert effective_rank(torch.from_numpy(h)) == pytest.approx(ref, rel=1e-10)
    m = FeatureMoments.empty(7)
    for chunk in np.array_split(h, 4):
        m.update(chunk)
    for method in ("covariance", "rankme"):
        assert effective_rank(m, method=method) == pytest.approx(
            effective_rank(h, method=method), rel=1e-8
        )
    assert participation_ratio(m) == pytest.approx(participation_ratio(h), rel=1e-8)


def test_constant_features_have_rank_zero():
    h = np.ones((10, 4))
    assert effective_rank(h) == 0.0
    assert participation_ratio(h) == 0.0


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.array([[1.0, np.nan], [2.0, 3.0]]), "NaN"),
        (np.ones(5), "2-D"),
        (np.ones((1, 3)), "at least 2 samples"),
        (xr.DataArray(np.ones((3, 2)), dims=("a", "b")), "sample"),
    ],
)
def test_invalid_input_raises(bad, match):
    with pytest.raises(ValueError, match=match):
        effective_rank(bad)


def test_invalid_method_raises():
    with pytest.raises(ValueError, match="method must be one of"):
        effective_rank(np.eye(3), method="svd")


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(2, 12),
    d=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    scale=st.floats(1e-3, 1e3),
)
def test_invariances(n, d, seed, scale):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, d))
    perm_units, perm_samples = rng.permutation(d), rng.permutation(n)
    shuffled = h[perm_samples][:, perm_units]
    for f in (effective_rank, participation_ratio):
        v = f(h)
        assert f(shuffled) == pytest.approx(v, rel=1e-7, abs=1e-9)
        assert f(h * scale) == pytest.approx(v, rel=1e-7, abs=1e-9)
        assert f(h + 5.0) == pytest.approx(v, rel=1e-6, abs=1e-9)
        assert 0.0 <= v <= min(n - 1, d) + 1e-7
    r = effective_rank(h, method="rankme")
    assert effective_rank(shuffled, method="rankme") == pytest.approx(r, rel=1e-7)
