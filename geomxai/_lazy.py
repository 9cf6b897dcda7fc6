"""Lazy re-exports for a subpackage ``__init__`` (Scientific Python SPEC 1, as SciPy does).

A package lists which private module each public name lives in; the module is imported the first
time one of its names is read, so importing the package (or one leaf module under it) loads
nothing it does not use: ``geomxai layers cnn2`` needs neither xarray nor SciPy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence

from geomxai._hints import did_you_mean


def attach(
    package: str, origins: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package`` from ``{module: names}``.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    origins : mapping of str to sequence of str
        Each private module (relative, like ``"._runs"``, or absolute) and the public names
        it defines.

    Examples
    --------
    >>> getattr_, dir_, all_ = attach("geomxai.collect", {"._reduce": ["REDUCTIONS"]})
    >>> all_, "mean" in getattr_("REDUCTIONS")
    (['REDUCTIONS'], True)
    """
    where = {name: module for module, names in origins.items() for name in names}
    if len(where) != sum(len(names) for names in origins.values()):
        raise ValueError(f"{package}: a name is listed under two modules")
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        if name in where:
            value = getattr(importlib.import_module(where[name], package), name)
            namespace[name] = value  # later look-ups skip this function
            return value
        raise AttributeError(
            f"module {package!r} has no attribute {name!r}" + did_you_mean(name, list(where))
        )

    def __dir__() -> list[str]:
        return sorted({*where, *namespace})

    return __getattr__, __dir__, sorted(where)
