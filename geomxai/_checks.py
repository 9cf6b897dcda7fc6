"""Declarative checks of typed arguments: say once what a value may be, get one message shape.

In the spirit of scikit-learn's ``validate_params`` and ``Interval(Integral, 1, None)``: a
constraint states a type and a range (or a set of choices), and :func:`check` (or the
:func:`validate_params` decorator) raises :class:`InvalidParameterError` naming the argument,
what was expected and what came. This is the one place that says

- a bool is not a number (``True`` is refused where an int or a float is wanted, although
  Python counts it as ``1``);
- a float is not an int (``2.0`` is refused where a count is wanted, never truncated);
- a real number is finite unless the constraint says otherwise (``nan`` and ``inf`` are refused);
- a choice is one of the listed values, with the close matches named.

A leaf module: it imports nothing of geomxai but the close-name hints. The public names are
:mod:`geomxai.checks`.

Examples
--------
>>> from numbers import Integral, Real
>>> check(3, "n_boot", Interval(Integral, 1, None))
3
>>> check(True, "n_boot", Interval(Integral, 1, None))
Traceback (most recent call last):
...
geomxai.checks.InvalidParameterError: n_boot must be a positive integer; got True (bool)
>>> check(float("nan"), "eps", Interval(Real, 0, None, closed="neither"))
Traceback (most recent call last):
...
geomxai.checks.InvalidParameterError: eps must be a positive finite number; got eps=nan
>>> check(None, "limit", None, Interval(Integral, 1, None)) is None
True
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable
from numbers import Integral, Real

from geomxai._hints import did_you_mean

__all__ = [
    "Boolean",
    "InvalidParameterError",
    "Interval",
    "Options",
    "check",
    "validate_params",
]


class InvalidParameterError(ValueError, TypeError):
    """An argument is not what its constraint allows.

    Both a ``ValueError`` and a ``TypeError`` (as scikit-learn's is): a wrong type and a value
    out of range are one kind of mistake to the caller, and code that caught either before the
    checks were declared keeps working.
    """


# Named by its public home (geomxai.checks), the module a caller imports it from and a traceback
# should point at.
InvalidParameterError.__module__ = "geomxai.checks"


class _Constraint:
    def accepts(self, value) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def type_ok(self, value) -> bool:
        """Whether ``value`` has the right type (so a refusal is about its value)."""
        return self.accepts(value)


class Interval(_Constraint):
    """A number of a kind (``numbers.Integral`` or ``numbers.Real``) within bounds.

    Parameters
    ----------
    kind : numbers.Integral or numbers.Real
        ``Integral``: Python and NumPy integers (never a bool, never a float such as ``2.0``).
        ``Real``: those and Python and NumPy floats (never a bool).
    low, high : number or None
        The bounds; ``None`` for none on that side.
    closed : {"both", "left", "right", "neither"}
        Which bounds belong to the interval.
    finite : bool
        For ``Real``: refuse ``nan`` and ``inf`` (the default). ``nan`` is refused always.
    """

    def __init__(self, kind, low, high, *, closed: str = "both", finite: bool = True):
        if kind not in (Integral, Real):
            raise TypeError(f"kind must be numbers.Integral or numbers.Real; got {kind!r}")
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be 'both', 'left', 'right' or 'neither'; got {closed!r}")
        self.kind, self.low, self.high, self.closed, self.finite = kind, low, high, closed, finite

    def type_ok(self, value) -> bool:
        return isinstance(value, self.kind) and not isinstance(value, bool)

    def accepts(self, value) -> bool:
        if not self.type_ok(value):
            return False
        if self.kind is Real and not isinstance(value, Integral):  # an int is finite
            if math.isnan(value) or (self.finite and math.isinf(value)):
                return False
        left_in = self.closed in ("both", "left")
        right_in = self.closed in ("both", "right")
        if self.low is not None and (value < self.low if left_in else value <= self.low):
            return False
        if self.high is not None and (value > self.high if right_in else value >= self.high):
            return False
        return True

    def describe(self) -> str:
        integer = self.kind is Integral
        noun = "integer" if integer else ("finite number" if self.finite else "number")
        low, high = self.low, self.high
        left_in, right_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if high is None:
            if low is None:
                return f"an {noun}" if integer else f"a {noun}"
            if (low == 0 and not left_in) or (integer and low == 1 and left_in):
                return f"a positive {noun}"
            if low == 0 and left_in:
                return f"a non-negative {noun}"
            return f"{'an' if integer else 'a'} {noun} {'>=' if left_in else '>'} {low}"
        if low is None:
            return f"{'an' if integer else 'a'} {noun} {'<=' if right_in else '<'} {high}"
        if integer and left_in and right_in:
            return f"an integer from {low} to {high}"
        return (
            f"{'an' if integer else 'a'} {noun} in "
            f"{'[' if left_in else '('}{low}, {high}{']' if right_in else ')'}"
        )


class Options(_Constraint):
    """One of the given values (strings, most often); the message lists them and names the
    close matches of what came."""

    def __init__(self, choices: Iterable):
        self.choices = tuple(choices)

    def type_ok(self, value) -> bool:
        return any(type(value) is type(c) for c in self.choices)

    def accepts(self, value) -> bool:
        # A bool is not an option of 0/1 (``True in (1, 2)`` is true in Python).
        return any(type(value) is type(c) and value == c for c in self.choices)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


class Boolean(_Constraint):
    """``True`` or ``False`` (a NumPy bool too), never ``0``, ``1`` or a string."""

    def accepts(self, value) -> bool:
        kind = type(value)  # NumPy's bool without importing NumPy (named bool_, or bool in 2.x)
        return kind is bool or (kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"))

    def describe(self) -> str:
        return "True or False"


class _IsNone(_Constraint):
    def accepts(self, value) -> bool:
        return value is None

    def describe(self) -> str:
        return "None"


def _constraint(c) -> _Constraint:
    if c is None:
        return _IsNone()
    if isinstance(c, _Constraint):
        return c
    if c is bool:
        return Boolean()
    raise TypeError(f"not a constraint: {c!r}; use Interval, Options, Boolean or None")


def _got(value, name: str, type_ok: bool) -> str:
    if type_ok or value is None:
        return f"{name}={value!r}"
    return f"{value!r} ({type(value).__name__})"


def check(value, name: str, *constraints):
    """``value`` if one of ``constraints`` accepts it, else :class:`InvalidParameterError`.

    Parameters
    ----------
    value
        What came.
    name : str
        How the message names it: the argument's name (``"n_boot"``), or a path to it
        (``"[analysis] probe_size"``).
    *constraints : Interval, Options, Boolean, bool or None
        What is allowed; ``None`` allows ``None``, ``bool`` is :class:`Boolean`.

    Returns
    -------
    ``value``, unchanged.

    Raises
    ------
    InvalidParameterError
        "NAME must be EXPECTED; got VALUE", where VALUE says the type when the type was wrong
        (``got True (bool)``) and ``NAME=VALUE`` when the value was (``got n_boot=0``).
    """
    parts = [_constraint(c) for c in constraints]
    if any(p.accepts(value) for p in parts):
        return value
    expected = " or ".join(p.describe() for p in parts)
    type_ok = any(p.type_ok(value) for p in parts)
    hint = ""
    options = [c for p in parts if isinstance(p, Options) for c in p.choices]
    if options and isinstance(value, str):
        hint = did_you_mean(value, [c for c in options if isinstance(c, str)])
    raise InvalidParameterError(
        f"{name} must be {expected}; got {_got(value, name, type_ok)}{hint}"
    )


def validate_params(constraints: dict[str, list]) -> Callable:
    """A decorator that checks the named arguments of each call with :func:`check`.

    Parameters
    ----------
    constraints : dict of str to list
        Argument name to its allowed constraints (as :func:`check` takes them). Arguments not
        named are not checked; a name the function does not have is refused at decoration.

    Examples
    --------
    >>> from numbers import Integral
    >>> @validate_params({"n": [Interval(Integral, 1, None)]})
    ... def repeat(text, n=2):
    ...     return text * n
    >>> repeat("ab", n=3)
    'ababab'
    >>> repeat("ab", n=0)
    Traceback (most recent call last):
    ...
    geomxai.checks.InvalidParameterError: n must be a positive integer; got n=0
    """

    def decorate(func: Callable) -> Callable:
        signature = inspect.signature(func)
        unknown = set(constraints) - set(signature.parameters)
        if unknown:
            raise TypeError(f"{func.__qualname__} has no argument(s) {sorted(unknown)}")
        parsed = {name: [_constraint(c) for c in cs] for name, cs in constraints.items()}

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            for name, parts in parsed.items():
                if name in bound.arguments:
                    check(bound.arguments[name], name, *parts)
            return func(*args, **kwargs)

        return wrapper

    return decorate
