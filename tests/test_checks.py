"""The declarative argument checks (geomxai.checks) against a slow, obvious reference."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geomxai.checks import (
    Boolean,
    Interval,
    InvalidParameterError,
    Options,
    check,
    validate_params,
)

# Values of every kind a caller might pass where a number is wanted.
values = st.one_of(
    st.integers(-5, 5),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 2.0, -1.0, 0.5]),
    st.booleans(),
    st.integers(-5, 5).map(np.int64),
    st.integers(-5, 5).map(np.int8),
    st.floats(-5, 5).map(np.float32),
    st.sampled_from([np.bool_(True), "1", None, [1], 1j]),
)
bounds = st.one_of(st.none(), st.integers(-3, 3))
closeds = st.sampled_from(["both", "left", "right", "neither"])


def reference(kind, low, high, closed, finite, value) -> bool:
    """Straight from the definition, one case at a time."""
    if type(value) is bool or isinstance(value, np.bool_):
        return False
    is_int = type(value) is int or isinstance(value, np.integer)
    is_float = type(value) is float or isinstance(value, np.floating)
    if kind is Integral and not is_int:
        return False
    if kind is Real and not (is_int or is_float):
        return False
    x = float(value) if is_float else int(value)
    if is_float and math.isnan(x):
        return False
    if is_float and finite and math.isinf(x):
        return False
    if low is not None:
        if closed in ("both", "left") and not x >= low:
            return False
        if closed in ("right", "neither") and not x > low:
            return False
    if high is not None:
        if closed in ("both", "right") and not x <= high:
            return False
        if closed in ("left", "neither") and not x < high:
            return False
    return True


@given(
    kind=st.sampled_from([Integral, Real]),
    low=bounds,
    high=bounds,
    closed=closeds,
    finite=st.booleans(),
    value=values,
)
def test_interval_matches_the_reference(kind, low, high, closed, finite, value):
    constraint = Interval(kind, low, high, closed=closed, finite=finite)
    expected = reference(kind, low, high, closed, finite, value)
    if expected:
        assert check(value, "x", constraint) is value
    else:
        with pytest.raises(InvalidParameterError) as info:
            check(value, "x", constraint)
        message = str(info.value)
        assert message.startswith("x must be ") and "; got " in message
        assert repr(value) in message


@pytest.mark.parametrize(
    "value, got",
    [
        (True, "got True (bool)"),
        (2.0, "got 2.0 (float)"),
        ("3", "got '3' (str)"),
        (0, "got n=0"),
        (-4, "got n=-4"),
    ],
)
def test_a_bool_a_float_or_a_string_is_not_a_count(value, got):
    with pytest.raises(InvalidParameterError) as info:
        check(value, "n", Interval(Integral, 1, None))
    assert str(info.value) == f"n must be a positive integer; {got}"


@pytest.mark.parametrize(
    "constraint, text",
    [
        (Interval(Integral, 1, None), "a positive integer"),
        (Interval(Integral, 0, None), "a non-negative integer"),
        (Interval(Integral, 2, None), "an integer >= 2"),
        (Interval(Integral, 0, 2**32 - 1), "an integer from 0 to 4294967295"),
        (Interval(Real, 0, None, closed="neither"), "a positive finite number"),
        (Interval(Real, 0, None), "a non-negative finite number"),
        (Interval(Real, 0, 1, closed="neither"), "a finite number in (0, 1)"),
        (Interval(Real, 0, 1, closed="right"), "a finite number in (0, 1]"),
        (Interval(Real, None, None), "a finite number"),
        (Interval(Real, 0, None, finite=False), "a non-negative number"),
    ],
)
def test_descriptions(constraint, text):
    assert constraint.describe() == text


def test_a_huge_int_is_a_finite_real():
    assert check(10**400, "x", Interval(Real, 0, None)) == 10**400


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_a_real_is_finite_unless_said_otherwise(value):
    with pytest.raises(InvalidParameterError, match="must be a finite number"):
        check(value, "baseline", Interval(Real, None, None))
    if not math.isnan(value):
        assert check(value, "x", Interval(Real, None, None, finite=False)) is value


def test_errors_are_both_value_and_type_errors():
    # Code that caught either before the checks were declared keeps working.
    for bad in (True, 0):
        with pytest.raises(ValueError):
            check(bad, "n", Interval(Integral, 1, None))
        with pytest.raises(TypeError):
            check(bad, "n", Interval(Integral, 1, None))


def test_unions_with_none_and_their_message():
    assert check(None, "limit", None, Interval(Integral, 1, None)) is None
    with pytest.raises(InvalidParameterError) as info:
        check(0, "limit", None, Interval(Integral, 1, None))
    assert str(info.value) == "limit must be None or a positive integer; got limit=0"


def test_options_name_close_matches_and_refuse_a_bool_for_one():
    assert check("sgt", "regime", Options(["regular", "sgt", "dbn"])) == "sgt"
    with pytest.raises(InvalidParameterError) as info:
        check("sgd", "regime", Options(["regular", "sgt", "dbn"]))
    assert str(info.value) == (
        "regime must be one of 'regular', 'sgt', 'dbn'; got regime='sgd' (did you mean 'sgt'?)"
    )
    with pytest.raises(InvalidParameterError, match=r"got True \(bool\)"):
        check(True, "k", Options([1, 2]))


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_boolean_accepts_bools(value):
    assert check(value, "flag", Boolean()) is value
    assert check(value, "flag", bool) is value


@pytest.mark.parametrize("value", [0, 1, "yes", None, 1.0])
def test_boolean_refuses_what_only_reads_as_one(value):
    with pytest.raises(InvalidParameterError, match="flag must be True or False"):
        check(value, "flag", Boolean())


def test_validate_params_checks_named_arguments_however_passed():
    @validate_params({"n": [Interval(Integral, 1, None)], "mode": [Options(["a", "b"])]})
    def f(x, n=2, *, mode="a"):
        return x, n, mode

    assert f(1) == (1, 2, "a")
    assert f(1, 3, mode="b") == (1, 3, "b")
    with pytest.raises(InvalidParameterError, match="n must be a positive integer; got True"):
        f(1, True)
    with pytest.raises(InvalidParameterError, match="mode must be one of 'a', 'b'"):
        f(1, mode="c")
    assert f.__name__ == "f"


def test_constraints_are_checked_when_declared():
    with pytest.raises(TypeError, match="has no argument"):
        validate_params({"m": [None]})(lambda n: n)
    with pytest.raises(TypeError, match="not a constraint"):
        check(1, "x", int)
    with pytest.raises(TypeError, match="kind must be"):
        Interval(int, 0, None)
