"""The ``saliency_method`` option: checked, bound to the model measured, and named where it
is defined (for the cache key)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch


def _check_saliency_method(method) -> str:
    """The kind of ``saliency_method`` (a factory among them), by the attribution package's check."""
    from geomxai.attribution import check_saliency_method

    return check_saliency_method(method, argument="saliency_method", factories=True)


_NAMED_KWARGS = ("n_samples", "noise_level", "n_steps", "baseline")
"""Keyword arguments of :func:`geomxai.attribution.saliency` that ``saliency_kwargs`` may set
for a named method."""


def _check_saliency_kwargs(kwargs, method) -> tuple[tuple[str, object], ...] | None:
    """``saliency_kwargs`` as sorted ``(name, value)`` pairs, checked against the method."""
    if kwargs is None:
        return None
    if isinstance(kwargs, tuple) and all(isinstance(kv, tuple) and len(kv) == 2 for kv in kwargs):
        kwargs = dict(kwargs)
    if not isinstance(kwargs, Mapping):
        raise TypeError(
            f"saliency_kwargs must be a mapping of keyword arguments; got {type(kwargs).__name__}"
        )
    bad = [k for k in kwargs if not isinstance(k, str)]
    if bad:
        raise TypeError(f"saliency_kwargs must have string keys; got {bad}")
    if isinstance(method, str):
        unknown = sorted(set(kwargs) - set(_NAMED_KWARGS))
        if unknown:
            raise ValueError(
                f"saliency_kwargs for the named method {method!r} must be among "
                f"{_NAMED_KWARGS}; got {unknown} (a Captum instance, a factory or a callable "
                "takes its own attribute keyword arguments)"
            )
    return tuple(sorted(kwargs.items()))


def _saliency_arguments(method, saliency_kwargs) -> dict:
    """``saliency_kwargs`` as :func:`geomxai.attribution.saliency` takes them for ``method``."""
    if not saliency_kwargs:
        return {}
    if isinstance(method, str):
        return dict(saliency_kwargs)
    return {"attribute_kwargs": dict(saliency_kwargs)}


def _bound_method(method, model: torch.nn.Module):
    """The saliency method to use on ``model``: a factory's instance for it, else ``method``."""
    if _check_saliency_method(method) != "factory":
        return method
    from captum.attr import Attribution

    try:
        built = method(model)
    except TypeError as err:
        if isinstance(method, type):
            raise TypeError(
                f"saliency_method {method.__name__} needs more than the model to be built "
                f"({err}); give a factory, e.g. lambda model: {method.__name__}(model, ...)"
            ) from err
        raise
    if not isinstance(built, Attribution):
        raise TypeError(
            "saliency_method is a factory model -> Attribution (one positional parameter), "
            f"but it returned {type(built).__name__}; return a Captum Attribution built on the "
            "model, or take (model, x, target) and return attributions"
        )
    return built


def _callable_origin(method) -> str | dict | None:
    """Where a callable or factory method is defined, for the cache key; None for a name or a
    Captum instance (whose name says what it is)."""
    from captum.attr import Attribution

    if isinstance(method, (str, Attribution)):
        return None
    if isinstance(method, functools.partial):
        return {
            "func": _callable_origin(method.func),
            "args": list(method.args),
            "keywords": dict(method.keywords),
        }
    owner = method if hasattr(method, "__qualname__") else type(method)
    return f"{getattr(owner, '__module__', '?')}.{owner.__qualname__}"


def _check_per_checkpoint_method(method) -> None:
    """Refuse a Captum instance where every checkpoint is a new model, naming the factory fix."""
    from captum.attr import Attribution

    if isinstance(method, Attribution):
        from geomxai.attribution import method_name

        name = type(method).__name__
        raise ValueError(
            f"saliency_method is a Captum {method_name(method)} instance, bound to one model, "
            "but every checkpoint of a run is a new model; give a factory model -> Attribution "
            f"instead: saliency_method={name} (the class) or lambda model: {name}(model, ...)"
        )
