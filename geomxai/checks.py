"""The declarative argument checks every public function applies (scikit-learn's
``validate_params`` and ``Interval(Integral, 1, None)``, as geomxai states them once).

A wrong argument anywhere in geomxai raises :class:`InvalidParameterError` (a ``ValueError``
and a ``TypeError``), naming the argument, what was expected and what came; catch it by this
name. :class:`Interval`, :class:`Options`, :class:`Boolean`, :func:`check` and
:func:`validate_params` state a constraint the same way for code built on geomxai, so its
messages read like geomxai's own: a bool is not a number, a float is not a count, a real number
is finite unless the constraint says otherwise, a choice is one of the listed values.

Examples
--------
>>> from numbers import Integral
>>> from geomxai.checks import Interval, InvalidParameterError, check
>>> try:
...     check(0, "n_boot", Interval(Integral, 1, None))
... except InvalidParameterError as e:
...     print(e)
n_boot must be a positive integer; got n_boot=0
"""

from geomxai._checks import (
    Boolean,
    Interval,
    InvalidParameterError,
    Options,
    check,
    validate_params,
)

__all__ = [
    "Boolean",
    "InvalidParameterError",
    "Interval",
    "Options",
    "check",
    "validate_params",
]
