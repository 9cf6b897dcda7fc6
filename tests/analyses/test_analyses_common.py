"""The statistics behind the analyses' verdicts, checked against scipy's own Welch and t tests."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "analyses"))
from _common import compare, fmt, interval  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_interval_is_scipys_t_interval(rng):
    x = rng.normal(0.8, 0.05, size=5)
    mean, half = interval(x)
    lo, hi = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert mean == pytest.approx(x.mean())
    assert (mean - half, mean + half) == pytest.approx((lo, hi))


def test_welch_interval_is_scipys(rng):
    a, b = rng.normal(0.85, 0.02, size=3), rng.normal(0.80, 0.05, size=4)
    c = compare(a, b, higher_is_better=True)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (c.diff - c.half, c.diff + c.half) == pytest.approx((ci.low, ci.high))


@pytest.mark.parametrize(
    ("shift", "higher_is_better", "call"),
    [
        (0.5, True, "better"),
        (0.5, False, "worse"),
        (-0.5, True, "worse"),
        (-0.5, False, "better"),
        (0.0, True, "not distinguishable"),
    ],
)
def test_the_call_follows_the_sign_and_the_interval(shift, higher_is_better, call):
    base = np.array([0.70, 0.72, 0.71])
    assert compare(base + shift, base, higher_is_better=higher_is_better).call == call


def test_one_seed_gives_no_interval_and_says_so():
    c = compare(np.array([0.9]), np.array([0.8, 0.81]), higher_is_better=True)
    assert math.isnan(c.half) and c.call.startswith("one seed")
    assert fmt(np.array([0.9123]), digits=2) == "0.91"


def test_nan_seeds_are_left_out(rng):
    a = np.array([0.70, np.nan, 0.72, 0.71])
    assert interval(a) == pytest.approx(interval(a[np.isfinite(a)]), nan_ok=True)
    assert fmt(np.array([np.nan])) == "n/a"
