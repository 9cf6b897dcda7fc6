"""Saliency-gap metrics against pairwise references and hand-made maps."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from geomxai.attribution import gini, mask_auroc, mass_inside, pointing_game, topq_contrast


def slow_gini(a):
    p, total = len(a), sum(a)
    return sum(abs(u - v) for u in a for v in a) / (2 * p * total)


def slow_auroc(scores, labels):
    pos = [s for s, m in zip(scores, labels, strict=True) if m]
    neg = [s for s, m in zip(scores, labels, strict=True) if not m]
    wins = sum(1.0 if u > v else 0.5 if u == v else 0.0 for u in pos for v in neg)
    return wins / (len(pos) * len(neg))


def slow_topq(a, q):
    k = max(1, round(q * len(a)))
    ordered = sorted(a, reverse=True)
    top, rest = ordered[:k], ordered[k:]
    return (sum(top) / len(top) - sum(rest) / len(rest)) / (sum(a) / len(a))


@pytest.fixture
def maps_and_masks():
    rng = np.random.default_rng(0)
    s = rng.exponential(size=(5, 6, 7))
    s[1] = np.round(s[1])  # ties
    m = rng.random((5, 6, 7)) < 0.3
    return s, m


def test_against_slow_references(maps_and_masks):
    s, m = maps_and_masks
    g, auc, inside = gini(s), mask_auroc(s, m), mass_inside(s, m)
    tq = topq_contrast(s, q=0.2)
    for i in range(5):
        a, lab = s[i].ravel().tolist(), m[i].ravel().tolist()
        assert g[i] == pytest.approx(slow_gini(a))
        assert auc[i] == pytest.approx(slow_auroc(a, lab))
        assert auc[i] == pytest.approx(roc_auc_score(lab, a))
        assert inside[i] == pytest.approx(sum(x for x, k in zip(a, lab, strict=True) if k) / sum(a))
        assert tq[i] == pytest.approx(slow_topq(a, 0.2))
    assert g.dims == ("sample",) and g["sample"].values.tolist() == [0, 1, 2, 3, 4]


def test_closed_forms():
    flat = np.ones((1, 4, 4))
    peak = np.zeros((1, 4, 4))
    peak[0, 1, 2] = 3.0
    assert float(gini(flat)[0]) == 0.0
    assert float(gini(peak)[0]) == pytest.approx(1 - 1 / 16)
    assert float(topq_contrast(flat)[0]) == 0.0
    assert float(topq_contrast(peak, q=1 / 16)[0]) == pytest.approx(16.0)
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 1, 2] = True
    assert float(mask_auroc(peak, mask)[0]) == 1.0
    assert float(mass_inside(peak, mask)[0]) == 1.0
    assert float(pointing_game(peak, mask)[0]) == 1.0
    assert float(mask_auroc(flat, mask)[0]) == 0.5


def test_undefined_cases_are_nan_and_skipped_by_mean():
    s = np.zeros((2, 3, 3))
    s[1, 0, 0] = 1.0
    g = gini(s)
    assert np.isnan(g[0]) and g.mean() == pytest.approx(1 - 1 / 9)
    assert np.isnan(topq_contrast(s)[0]) and np.isnan(mass_inside(s, s > 0)[0])
    full = np.ones((2, 3, 3), dtype=bool)
    assert np.isnan(mask_auroc(s, full)).all()


def test_pointing_game_ties_and_tolerance():
    s = np.zeros((2, 5, 5))
    s[0, 0, 0] = s[0, 4, 4] = 1.0  # two maxima, one inside
    s[1, 0, 0] = 1.0  # maximum two pixels from the mask
    m = np.zeros((2, 5, 5), dtype=bool)
    m[0, 4, 4] = True
    m[1, 2, 0] = True
    assert pointing_game(s, m).values.tolist() == [0.5, 0.0]
    assert pointing_game(s, m, tolerance=2).values.tolist() == [0.5, 1.0]
    # an all-zero map scores the mask's area share
    assert float(pointing_game(np.zeros((1, 2, 2)), np.eye(2, dtype=bool)[None])[0]) == 0.5


def test_torch_input_and_validation():
    s = torch.rand(2, 3, 3)
    np.testing.assert_allclose(gini(s).values, gini(s.numpy()).values)
    with pytest.raises(ValueError, match="non-negative"):
        gini(-s)
    with pytest.raises(ValueError, match=r"per-position maps: \(n, h, w\) for images"):
        gini(s[0, 0])  # one row of one map: no sample axis
    with pytest.raises(ValueError, match="per-position maps"):
        gini(s[None, None])
    with pytest.raises(ValueError, match="shape"):
        mask_auroc(s, np.ones((2, 3, 4), dtype=bool))
    with pytest.raises(ValueError, match="only 0 and 1"):
        mass_inside(s, np.full((2, 3, 3), 2))
    with pytest.raises(ValueError, match="q must be"):
        topq_contrast(s, q=1.0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3))
def test_pixel_permutation_and_scale_invariance(seed, scale):
    rng = np.random.default_rng(seed)
    s = rng.exponential(size=(3, 4, 5))
    m = rng.random((3, 4, 5)) < 0.4
    m[:, 0, 0], m[:, 0, 1] = True, False
    perm = rng.permutation(20)
    sp = s.reshape(3, -1)[:, perm].reshape(3, 4, 5)
    mp = m.reshape(3, -1)[:, perm].reshape(3, 4, 5)
    for f in (gini, topq_contrast):
        np.testing.assert_allclose(f(sp).values, f(s).values, rtol=1e-9)
        np.testing.assert_allclose(f(s * scale).values, f(s).values, rtol=1e-9)
    for f in (mask_auroc, mass_inside, pointing_game):
        np.testing.assert_allclose(f(sp, mp).values, f(s, m).values, rtol=1e-9)
        np.testing.assert_allclose(f(s * scale, m).values, f(s, m).values, rtol=1e-9)
