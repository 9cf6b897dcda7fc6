"""Whole-run summaries of the dynamics against slow references written from the definitions,
closed forms and invariances (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomxai.dynamics import SETTLED_OVERLAP, area_over_training, run_mean, settling_time

NAN = float("nan")
unit = st.floats(0.0, 1.0, allow_nan=False)


def slow_settling(overlap, times, threshold):
    """The first checkpoint t after which every consecutive pair (s, s+1), s >= t, is at or
    above the threshold; NaN if the last pair is not (or a pair is NaN)."""
    pairs = list(overlap[1:])
    if not pairs or any(math.isnan(p) for p in pairs):
        return NAN
    for t in range(len(times) - 1):
        if all(pairs[s] >= threshold for s in range(t, len(pairs))):
            return float(times[t])
    return NAN


def slow_area(values, times):
    total = 0.0
    span = times[-1] - times[0]
    for i in range(1, len(values)):
        width = (times[i] - times[i - 1]) / span
        total += width * (values[i] + values[i - 1]) / 2
    return total


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(unit, st.just(NAN)), min_size=1, max_size=12))
def test_run_mean_is_the_mean_of_the_defined_pairs(values):
    got = run_mean(values)
    finite = [v for v in values[1:] if not math.isnan(v)]
    if not finite:
        assert math.isnan(got)
    else:
        assert got == pytest.approx(sum(finite) / len(finite))
    # The first entry (no previous checkpoint) is never read.
    assert run_mean([0.123, *values[1:]]) == pytest.approx(got, nan_ok=True)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(unit, st.just(NAN)), min_size=1, max_size=10).map(lambda v: [NAN, *v]),
    st.floats(0.05, 1.0),
)
def test_settling_time_matches_the_definition(overlap, threshold):
    times = np.cumsum(np.arange(1, len(overlap) + 1)) * 7  # uneven spacing
    got = settling_time(overlap, times, threshold=threshold)
    assert got == pytest.approx(slow_settling(overlap, times, threshold), nan_ok=True)


def test_settling_time_cases():
    t = [0, 3, 4, 6, 8]
    assert settling_time([NAN, 0.95, 0.95, 0.95, 0.95], t) == 0  # settled from the start
    assert settling_time([NAN, 0.5, 0.95, 0.95, 0.95], t) == 3
    assert settling_time([NAN, 0.5, 0.95, 0.5, 0.95], t) == 6  # a relapse resets it
    assert math.isnan(settling_time([NAN, 0.95, 0.95, 0.95, 0.5], t))  # still moving at the end
    assert math.isnan(settling_time([NAN, 0.95, NAN, 0.95, 0.95], t))  # a pair unknown
    assert math.isnan(settling_time([NAN], [0]))
    assert settling_time([NAN, SETTLED_OVERLAP], [0, 1]) == 0  # "at or above"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(unit, min_size=2, max_size=12),
    st.floats(0.1, 1e4),
    st.floats(-1e3, 1e3),
)
def test_area_matches_the_trapezoid_and_ignores_the_time_unit(values, scale, shift):
    times = np.cumsum(np.linspace(1.0, 3.0, len(values)))
    got = area_over_training(values, times)
    assert got == pytest.approx(slow_area(values, times))
    # Steps or epochs (epochs = steps / steps per epoch), or any shift: the same area.
    assert area_over_training(values, times * scale + shift) == pytest.approx(got)
    assert 0.0 <= got <= 1.0 + 1e-12


def test_area_closed_forms_and_undefined_cases():
    assert area_over_training([0.4, 0.4, 0.4], [0, 5, 9]) == pytest.approx(0.4)
    assert area_over_training([0.0, 0.5, 1.0], [0, 1, 2]) == pytest.approx(0.5)
    # A representation that reached its final form at once: area 1.
    assert area_over_training([1.0, 1.0], [3, 30]) == 1.0
    assert math.isnan(area_over_training([0.5, NAN, 1.0], [0, 1, 2]))
    assert math.isnan(area_over_training([1.0], [0]))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: run_mean([[0.1, 0.2]]), "must be 1-D"),
        (lambda: run_mean([NAN, math.inf]), "infinite"),
        (lambda: settling_time([NAN, 0.9], [0]), "one entry per checkpoint"),
        (lambda: settling_time([NAN, 0.9], [1, 1]), "increase strictly"),
        (lambda: settling_time([NAN, 0.9], [0, NAN]), "must be finite"),
        (lambda: settling_time([NAN, 0.9], [0, 1], threshold=0), r"threshold must lie in \(0, 1\]"),
        (lambda: area_over_training([0.1, 0.2], [2, 1]), "increase strictly"),
    ],
)
def test_bad_inputs_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
