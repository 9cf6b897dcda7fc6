"""What an analysis measures: :class:`AnalysisOptions`, its checks, and its cache key."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from numbers import Integral

import numpy as np
import torch

from geomxai._checks import Interval
from geomxai.study._saliency_method import (
    _callable_origin,
    _check_saliency_kwargs,
    _check_saliency_method,
)


@dataclass(frozen=True)
class AnalysisOptions:
    """What to measure on every checkpoint. Part of the cache key.

    Attributes
    ----------
    probe_size : int
        The first ``probe_size`` test images form the fixed probe set.
    layers : tuple of str or None
        Layers whose geometry is measured; ``None`` = the model's feature layer.
    fractions : int
        Number of masked fractions, evenly spaced in [0, 1].
    saliency_method : str, captum.attr.Attribution, callable or factory
        Method of :func:`geomxai.attribution.saliency` used for every saliency metric, one of:

        - a name (``"abs_gradient"``, ``"integrated_gradients"``, ...);
        - a callable ``(model, x, target) -> attributions`` (three positional parameters);
        - a **factory** ``model -> Attribution``: a Captum class that takes the model alone
          (``IntegratedGradients``, ``DeepLift``, ...) or a callable of one positional
          parameter (``lambda model: LayerGradCam(model, model.body[-1])``), called once per
          model measured;
        - a Captum ``Attribution`` instance, bound to one model: it fits :func:`measure` and
          :func:`~geomxai.study.analyze_model` on that model only. Every checkpoint of a run is
          a new model, so :func:`analyze_run` refuses an instance: give a factory.

        With ``workers > 1`` it must pickle (a module-level function or class). The results'
        ``saliency_method`` attr is :func:`geomxai.attribution.method_name` of the method used
        (for a factory, of the instance it built); the cache key holds that name and, for a
        callable or factory, its ``__module__`` and ``__qualname__`` (give two different
        callables different names).
    saliency_kwargs : mapping or None
        Extra keyword arguments of the saliency method: for a name, those
        :func:`~geomxai.attribution.saliency` takes for it (``n_samples``, ``noise_level``,
        ``n_steps``, ``baseline``); for a Captum instance, a factory or a callable, its
        ``attribute_kwargs`` (``{"sliding_window_shapes": (1, 3, 3)}`` for ``Occlusion``).
        Stored as a tuple of ``(name, value)`` pairs sorted by name, so the options stay
        frozen; part of the cache key (tensors by their shape, dtype and a digest).
    fill : str
        Fill of the masking curves.
    top_k : int
        Eigenvectors tracked for axis swapping.
    n_examples : int
        Saliency maps kept per checkpoint for figures and the stability metric's probe.
    seed : int
        Seed of random-order masking and uniform fills.
    batch_size : int
        Batch size of every forward and backward pass.
    entanglement : bool
        Compute gradient entanglement.
    reduce : str, int or mapping
        How a layer's output becomes one vector per sample (the ``reduce`` of
        :func:`geomxai.collect.collect_features`): ``"auto"`` (default: mean over space for conv maps, token 0 of a token
        sequence, (n, d) as is), ``"mean"``, ``"max"``, ``"flatten"``, ``"cls"``,
        ``"token_mean"``, an int (that token of an (n, tokens, d) sequence; ``-1`` the last), or
        a mapping of layer name to one of those. The reduction applied to each layer is
        recorded in the results' ``attrs["reduction"]``. Stored as sorted ``(layer, value)``
        pairs when a mapping.
    entanglement_layer : str or None
        The layer gradient entanglement is measured at; ``None`` = the model's feature layer.
    saliency_methods : tuple of str or None
        Several named saliency methods measured in one analysis (``("abs_gradient",
        "integrated_gradients", "smoothgrad")``); ``saliency_method`` becomes the first (a
        non-default ``saliency_method`` not among them is refused). With more than one,
        the saliency metrics gain a ``saliency_method`` dim: the masking variables, deletion
        and insertion, Gini, top-q contrast and localisation; the example maps and the saliency
        stability use the first method. One method is the same as ``saliency_method``.
    fills : tuple of str or None
        Several masking fills (``("uniform", "zero", "road")``); ``fill`` becomes the first.
        With more than one, the masking variables (MoRF, LeRF and random-order curves, their
        areas, ``fidelity_gap``) gain a ``fill`` dim (the random-order curve is computed once
        per fill and shared by the methods). Deletion and insertion keep RISE's own fills.
    """

    probe_size: int = 512
    layers: tuple[str, ...] | None = None
    fractions: int = 11
    saliency_method: object = "abs_gradient"
    fill: str = "uniform"
    top_k: int = 16
    n_examples: int = 8
    seed: int = 0
    batch_size: int = 256
    entanglement: bool = True
    saliency_kwargs: tuple[tuple[str, object], ...] | None = None
    reduce: object = "auto"
    entanglement_layer: str | None = None
    saliency_methods: tuple[str, ...] | None = None
    fills: tuple[str, ...] | None = None

    def __post_init__(self):
        # Each count must be an int (2.5 probes or NaN fractions fail deep inside otherwise;
        # True is not a count), at least its minimum.
        for name, least in _OPTION_COUNTS.items():
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
                raise TypeError(
                    f"{name} must be an integer >= {least}; got {name}={value!r} "
                    f"({type(value).__name__})"
                )
            if value < least:
                raise ValueError(f"{name} must be at least {least}; got {name}={value}")
            if value > 2**63 - 1:
                raise ValueError(f"{name} must be at most 2**63 - 1; got {name}={value}")
            object.__setattr__(self, name, int(value))
        if not isinstance(self.entanglement, (bool, np.bool_)):
            raise TypeError(
                f"entanglement must be True or False; got entanglement={self.entanglement!r}"
            )
        object.__setattr__(self, "entanglement", bool(self.entanglement))
        if self.layers is not None and not isinstance(self.layers, tuple):
            object.__setattr__(self, "layers", tuple(self.layers))
        _check_variants(self)
        _check_saliency_method(self.saliency_method)
        kwargs = _check_saliency_kwargs(self.saliency_kwargs, self.saliency_method)
        object.__setattr__(self, "saliency_kwargs", kwargs)
        object.__setattr__(self, "reduce", _check_reduce_option(self.reduce))
        if self.entanglement_layer is not None and (
            not isinstance(self.entanglement_layer, str) or not self.entanglement_layer
        ):
            raise TypeError(
                "entanglement_layer must be None (the feature layer) or a layer name; got "
                f"{self.entanglement_layer!r}"
            )

    def as_dict(self) -> dict:
        """The fields by name, values as they are (``dataclasses.asdict`` would deep-copy a
        Captum instance and the model it holds)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def key(self) -> str:
        """The options as JSON (the cache key): the saliency method by its readable name, plus
        where a callable or factory is defined (``saliency_callable``); ``saliency_kwargs`` as
        an object, tensors and arrays in it by shape, dtype and digest."""
        from geomxai.attribution import method_name

        fields_ = {**self.as_dict(), "saliency_method": method_name(self.saliency_method)}
        fields_["saliency_kwargs"] = (
            None if self.saliency_kwargs is None else dict(self.saliency_kwargs)
        )
        origin = _callable_origin(self.saliency_method)
        if origin is not None:
            fields_["saliency_callable"] = origin
        # Fields added after cache version 6 enter the key only when set, so the cache entries
        # of analyses that do not use them stay valid.
        defaults = (
            ("reduce", "auto"),
            ("entanglement_layer", None),
            ("saliency_methods", None),
            ("fills", None),
        )
        for name, default in defaults:
            if fields_[name] == default:
                del fields_[name]
            elif name == "reduce" and isinstance(fields_[name], tuple):
                fields_[name] = dict(fields_[name])
        return json.dumps(fields_, sort_keys=True, default=_key_value)

    @property
    def method_variants(self) -> tuple:
        """The saliency methods measured: ``saliency_methods``, else ``(saliency_method,)``."""
        return self.saliency_methods or (self.saliency_method,)

    @property
    def fill_variants(self) -> tuple[str, ...]:
        """The masking fills measured: ``fills``, else ``(fill,)``."""
        return self.fills or (self.fill,)

    @property
    def variants(self) -> bool:
        """True when more than one saliency method or fill is measured (the variant layout)."""
        return len(self.method_variants) > 1 or len(self.fill_variants) > 1


_OPTION_COUNTS = {
    "probe_size": 2,
    "fractions": 2,
    "top_k": 1,
    "n_examples": 0,
    "seed": 0,
    "batch_size": 1,
}
"""The integer fields of :class:`AnalysisOptions` and the least value each takes."""


_SINGLE = {"saliency_methods": ("saliency_method", "abs_gradient"), "fills": ("fill", "uniform")}
"""Each list option, the single option it sets to its first entry, and that option's default."""


def _check_variants(options: AnalysisOptions) -> None:
    """``saliency_methods`` and ``fills`` checked (names, no repeats) and normalised: a tuple of
    two or more, else None with the one given set as ``saliency_method`` / ``fill``."""
    from geomxai._fill import FILLS
    from geomxai._hints import did_you_mean
    from geomxai.attribution import SALIENCY_METHODS

    for name, known in (("saliency_methods", SALIENCY_METHODS), ("fills", FILLS)):
        single, default = _SINGLE[name]
        given = getattr(options, name)
        if given is None:
            continue
        if isinstance(given, str) or not isinstance(given, (tuple, list)):
            raise TypeError(
                f"{name} must be a list of names (e.g. {list(known[:2])}); got {given!r}"
            )
        bad = [v for v in given if not isinstance(v, str) or v not in known]
        if bad:
            raise ValueError(
                f"{name} must name entries of {known}; got {bad[0]!r}"
                + (did_you_mean(bad[0], known) if isinstance(bad[0], str) else "")
                + (
                    " (a Captum method, factory or callable goes in saliency_method, one per "
                    "analysis)"
                    if name == "saliency_methods"
                    else ""
                )
            )
        if len(set(given)) != len(given):
            raise ValueError(f"{name} lists a name twice: {list(given)}")
        given = tuple(given)
        current = getattr(options, single)
        if given and not (isinstance(current, str) and current in (default, *given)):
            raise ValueError(
                f"{single}={current!r} and {name}={list(given)}: {single} becomes the first "
                f"of {name}; give {name} alone, or list {current!r} in it"
            )
        if given:
            object.__setattr__(options, single, given[0])
        object.__setattr__(options, name, given if len(given) > 1 else None)


def _check_reduce_option(reduce):
    """``reduce`` checked: a reduction name, a token index, or sorted ``(layer, value)`` pairs."""
    from geomxai.collect import REDUCTIONS

    def one(value, where):
        if isinstance(value, str) and value in REDUCTIONS:
            return value
        if Interval(Integral, None, None).accepts(value):
            return int(value)
        raise ValueError(
            f"{where} must be one of {', '.join(REDUCTIONS)} or a token index (int); got {value!r}"
        )

    if isinstance(reduce, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in reduce):
        reduce = dict(reduce)
    if isinstance(reduce, Mapping):
        if not reduce:
            return "auto"
        return tuple(sorted((str(k), one(v, f"reduce[{k!r}]")) for k, v in reduce.items()))
    return one(reduce, "reduce")


def _key_value(value):
    """JSON for what ``json`` cannot write in the cache key: arrays and tensors by shape,
    dtype and content digest (their repr would be cut short), anything else by its type."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return {
            "shape": list(data.shape),
            "dtype": str(data.dtype),
            "sha256": hashlib.sha256(data.tobytes()).hexdigest()[:16],
        }
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    origin = _callable_origin(value) if callable(value) else None
    return origin if origin is not None else f"<{type(value).__qualname__}>"
