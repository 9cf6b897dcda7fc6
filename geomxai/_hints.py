"""Close-name hints for error messages: "did you mean 'sgt'?".

A leaf module: it imports nothing of geomxai, so any subpackage may use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["close_matches", "did_you_mean"]


def close_matches(value, choices: Iterable, *, n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The entries of ``choices`` closest to ``value`` (difflib's ratio), best first.

    Examples
    --------
    >>> close_matches("sgd", ["regular", "sgt", "dbn"])
    ['sgt']
    """
    return difflib.get_close_matches(str(value), [str(c) for c in choices], n=n, cutoff=cutoff)


def did_you_mean(value, choices: Iterable, *, n: int = 3, cutoff: float = 0.6) -> str:
    """``" (did you mean 'a', 'b'?)"`` for the close matches of ``value``, or ``""``.

    Examples
    --------
    >>> did_you_mean("sgd", ["regular", "sgt", "dbn"])
    " (did you mean 'sgt'?)"
    >>> did_you_mean("zzz", ["regular"])
    ''
    """
    close = close_matches(value, choices, n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
