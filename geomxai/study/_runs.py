"""Analyse checkpoints: load, collect features, measure geometry and attribution, one Dataset."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from geomxai import schema
from geomxai._fs import (
    check_nonempty_path,
    check_writable,
    remove_stale_temps,
    write_bytes_atomic,
)
from geomxai.data import dataset_tensors, load_dataset
from geomxai.models import FEATURE_LAYER
from geomxai.rundir import list_checkpoints, read_run

log = logging.getLogger(__name__)

CACHE_VERSION = 7  # 4: NaN reasons on the variables, schema attrs, entanglement's layer
# 5: probe_size, n_units and probe_features (the run's similarity), probe minimums (issue 16)
# 6: the faithfulness_probability block (deletion and insertion curves), saliency_kwargs
# 7: live-unit counts, entanglement on live units, the invariant geometry, warnings (issue 23)


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
    from geomxai.collect._reduce import REDUCTIONS

    def one(value, where):
        if isinstance(value, str) and value in REDUCTIONS:
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
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


class _TokenAt:
    """The reduction ``output (n, tokens, d) -> output[:, index]`` (a picklable callable)."""

    def __init__(self, index: int):
        self.index = index
        self.__qualname__ = f"token[{index}]"

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.ndim != 3:
            raise ValueError(
                f"reduce={self.index} takes token {self.index} of a token sequence (n, tokens, "
                f"d); the layer gave shape {tuple(output.shape)}"
            )
        return output[:, self.index]


def _collect_reduce(reduce, layers: list[str]):
    """``AnalysisOptions.reduce`` as :func:`geomxai.collect.collect_features` takes it."""

    def one(value):
        return _TokenAt(value) if isinstance(value, int) else value

    if isinstance(reduce, tuple):
        return {name: one(value) for name, value in reduce if name in layers}
    return one(reduce)


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


@dataclass
class Probe:
    """The fixed probe set: inputs, labels and (for ``blocks``) ground-truth masks.

    ``images`` are the model's inputs: image batches (n, c, h, w), sequences (n, c, t) or
    tabular rows (n, d). ``labels=None`` is an unlabelled probe: :func:`measure` then measures
    the geometry only (accuracy, saliency and fidelity are NaN and say why).
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    masks: torch.Tensor | None = None
    dataset: str = ""
    extra: dict = field(default_factory=dict)


def make_probe(dataset: str, size: int, **dataset_options) -> Probe:
    """The first ``size`` test images of a dataset: the same images at every checkpoint."""
    bundle = load_dataset(dataset, **dataset_options)
    images, labels = dataset_tensors(bundle.test)
    n = min(size, len(labels))
    masks = None if bundle.test_masks is None else bundle.test_masks[:n].clone()
    # Copies, not views: a view pickles (and is scattered to every dask worker) with the whole
    # test set behind it.
    images = images[:n].to(torch.float32, copy=True)
    return Probe(images, labels[:n].to(torch.long, copy=True), masks, dataset)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _probe_digest(probe: Probe) -> str:
    """A digest of the probe's contents, so a cache entry never answers for other images."""
    h = hashlib.sha256()
    for t in (probe.images, probe.labels, probe.masks):
        if t is not None:
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


def _scalar(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


# ---- measure: one xr.Dataset per analysis block (geomxai.schema names the blocks and their
# variables), merged. A NaN's reason is written in one way only: on the variable, as
# attrs["nan_reason"], where it travels with the values through every merge.

_FIRST_EPOCH = "no previous checkpoint at the first epoch"
# The start of geomxai.geometry.effective_rank's warning about too few samples.
_RANK_WARNING = r"effective_rank (of|on) "
_LAYER_SCALARS = tuple(n for n in schema.names("geometry") if schema.variable(n).dims == ("layer",))
# Result variable -> key of geomxai.geometry.correlation_summary.
_SUMMARY_KEYS = {
    "mean_abs_corr": "mean_abs_offdiag",
    "corr_offdiag_fro": "offdiag_fro",
    "spectrum_alpha": "alpha",
    "spectrum_r2": "alpha_r2",
    "spectrum_alpha_req": "alpha_req",
    "spectrum_alpha_req_r2": "alpha_req_r2",
}


def _with_reason(da: xr.DataArray, reason: str | None) -> xr.DataArray:
    """``da`` with ``attrs["nan_reason"] = reason`` when it holds a NaN and a reason is known."""
    if reason and bool(np.isnan(np.asarray(da.values, dtype=float)).any()):
        da.attrs["nan_reason"] = reason
    return da


def _feature_layer(model: torch.nn.Module, options: AnalysisOptions) -> str:
    """The model's own feature layer (``model.feature_layer``, else geomxai's ``body``).

    Geometry measures it when no layers are named, and entanglement always does; a model without
    it needs ``layers`` (and then has NaN entanglement).
    """
    layer = getattr(model, "feature_layer", None) or FEATURE_LAYER
    if options.layers is None and layer not in dict(model.named_modules()):
        top = [name for name, _ in model.named_children()][:10]
        raise ValueError(
            f"{type(model).__name__} has no feature layer named {layer!r} (geomxai's models "
            "have one); name the layers to measure with layers=[...] (--layers on the command "
            f"line). Top-level modules: {', '.join(top) or '(none)'}"
        )
    return layer


class _LayerGeometry(NamedTuple):
    scalars: dict[str, float]
    spectrum: np.ndarray  # live-unit correlation eigenvalues; empty when undefined
    eigvals: np.ndarray  # (k,)
    eigvecs: np.ndarray  # (d, k)
    reason: str | None  # why the correlation summaries are NaN, if they are


def _layer_geometry(h: xr.DataArray, top_k: int) -> _LayerGeometry:
    from geomxai.dynamics import top_eigvecs
    from geomxai.geometry import (
        correlation_spectrum,
        correlation_summary,
        effective_rank,
        participation_ratio,
    )

    with warnings.catch_warnings():
        # The study says what a small probe cannot measure itself (geomxai.study._probe), once
        # per analysis and with NaN where it applies; the pure function's own warning would
        # repeat it per layer and checkpoint.
        warnings.filterwarnings("ignore", message=_RANK_WARNING)
        scalars = {
            "effective_rank": _scalar(effective_rank(h)),
            "participation_ratio": _scalar(participation_ratio(h)),
            "n_units": float(h.shape[1]),
        }
    # Live-unit accounting: the one threshold (geomxai._finite.DEAD_UNIT_TOL) and definition
    # the correlation spectrum and entanglement use, counted for every layer.
    from geomxai._finite import live_units

    live = live_units(np.var(np.asarray(h.values, dtype=np.float64), axis=0))
    scalars["n_live_units"] = float(live.sum())
    scalars["n_dead_units"] = float(live.size - live.sum())
    reason = None
    try:
        summary = correlation_summary(h)
        spectrum = np.asarray(correlation_spectrum(h).values, dtype=float)
        scalars.update({name: float(summary[key]) for name, key in _SUMMARY_KEYS.items()})
    except ValueError as err:  # fewer than 2 live units
        scalars.update(dict.fromkeys(_SUMMARY_KEYS, math.nan))
        spectrum, reason = np.array([]), str(err)
    vals, vecs = top_eigvecs(h, min(top_k, h.shape[1]))
    return _LayerGeometry(scalars, spectrum, np.asarray(vals), np.asarray(vecs), reason)


def _pad_stack(arrays: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Arrays stacked along a new first axis, each NaN-padded at the end to ``shape``."""
    return np.stack(
        [
            np.pad(
                a, [(0, s - n) for s, n in zip(shape, a.shape, strict=True)], constant_values=np.nan
            )
            for a in arrays
        ]
    )


def _geometry_block(model, probe: Probe, layers: list[str], options: AnalysisOptions) -> xr.Dataset:
    """Geometry of each layer: the scalars over ``layer``, the spectra and top eigenpairs padded."""
    from geomxai.collect import collect_features

    feats = collect_features(
        model,
        probe.images,
        layers,
        batch_size=options.batch_size,
        reduce=_collect_reduce(options.reduce, layers),
    )
    layer_names = [v for v in feats.data_vars if v in layers] or list(feats.data_vars)
    rows = [_layer_geometry(feats[name], options.top_k) for name in layer_names]
    failed = [(name, row.reason) for name, row in zip(layer_names, rows, strict=True) if row.reason]
    reason = None
    if failed:
        reason = (
            failed[0][1]
            if len(layer_names) == 1
            else "; ".join(f"layer {n!r}: {r}" for n, r in failed)
        )
    ds = xr.Dataset()
    for name in _LAYER_SCALARS:
        values = xr.DataArray(np.asarray([row.scalars[name] for row in rows], float), dims="layer")
        ds[name] = _with_reason(values, reason if name in _SUMMARY_KEYS else None)
    # Spectra are padded to the layer's width, not the live-unit count, so checkpoints whose
    # number of dead units differs still line up along ``component`` (NaN past the live ones).
    width = max(int(feats[name].shape[1]) for name in layer_names)
    kmax = max(row.eigvecs.shape[1] for row in rows)
    dmax = max(row.eigvecs.shape[0] for row in rows)
    padding = "padding past a layer's width or its top_k axes"
    ds["corr_spectrum"] = xr.DataArray(
        _pad_stack([row.spectrum for row in rows], (width,)),
        dims=("layer", "component"),
        attrs={"nan_reason": "components past the number of live units"},
    )
    if reason:
        ds["corr_spectrum"].attrs["nan_reason"] += f"; the whole spectrum where {reason}"
    ds["top_eigvals"] = xr.DataArray(
        _pad_stack([row.eigvals for row in rows], (kmax,)),
        dims=("layer", "axis"),
        attrs={"nan_reason": padding},
    )
    ds["top_eigvecs"] = xr.DataArray(
        _pad_stack([row.eigvecs for row in rows], (dmax, kmax)),
        dims=("layer", "unit", "axis"),
        attrs={"nan_reason": padding},
    )
    # Kept for the similarity of checkpoints (analyze_run drops them once it is computed).
    ds["probe_features"] = xr.DataArray(
        _pad_stack(
            [np.asarray(feats[name].values, dtype=np.float32) for name in layer_names],
            (len(probe.images), dmax),
        ),
        dims=("layer", "sample", "unit"),
        attrs={"nan_reason": "padding past a layer's width"},
    )
    ds["probe_size"] = xr.DataArray(len(probe.images))
    # What each layer's output was reduced by ("mean" where "auto" chose it), for the attrs.
    ds.attrs["reduction"] = json.dumps(
        {name: str(feats[name].attrs.get("reduction", "")) for name in layer_names}
    )
    return ds.assign_coords(
        layer=layer_names,
        component=np.arange(1, width + 1),
        axis=np.arange(1, kmax + 1),
        unit=np.arange(dmax),
    )


def _accuracy_block(model, probe: Probe, options: AnalysisOptions) -> xr.Dataset:
    from geomxai._model_state import module_device, module_dtype

    device = module_device(model, fallback=probe.images.device)
    dtype = module_dtype(model, fallback=probe.images.dtype)
    with torch.no_grad():
        logits = torch.cat(
            [model(xb.to(device, dtype)).cpu() for xb in probe.images.split(options.batch_size)]
        )
    return xr.Dataset({"probe_acc": float((logits.argmax(1) == probe.labels).float().mean())})


def _unmeasured(blocks: tuple[str, ...], reason: str, options: AnalysisOptions) -> xr.Dataset:
    """NaN for the scalar and per-fraction variables of ``blocks``, each saying ``reason``."""
    fractions = np.linspace(0.0, 1.0, options.fractions)
    ds = xr.Dataset()
    for block in blocks:
        for name in schema.names(block):
            dims = schema.variable(name).dims
            if not schema.variable(name).per_checkpoint or not set(dims) <= {"fraction"}:
                continue
            shape = tuple(fractions.size for _ in dims)
            ds[name] = xr.DataArray(np.full(shape, np.nan), dims=dims, attrs={"nan_reason": reason})
    return ds.assign_coords(fraction=fractions) if "fraction" in ds.dims else ds


def _masking_block(
    model,
    probe: Probe,
    sal: torch.Tensor,
    options: AnalysisOptions,
    *,
    fill: str | None = None,
    random_curves: dict | None = None,
) -> xr.Dataset:
    """MoRF, LeRF and random-order masking curves of the saliency maps, their areas, the gap.

    ``fill`` (default ``options.fill``) replaces masked positions. The random-order curve does
    not depend on the maps' values, only their shape: with ``random_curves`` (fill -> curve)
    it is computed once per fill and reused."""
    from geomxai.attribution import masking_auc, masking_curve

    fill = options.fill if fill is None else fill
    fractions = np.linspace(0.0, 1.0, options.fractions)
    ds = xr.Dataset(coords={"fraction": fractions})
    for order in ("morf", "lerf", "random"):
        if order == "random" and random_curves is not None and fill in random_curves:
            curve = random_curves[fill]
        else:
            curve = masking_curve(
                model,
                probe.images,
                probe.labels,
                sal,
                fractions=fractions,
                order=order,
                fill=fill,
                batch_size=options.batch_size,
                seed=options.seed,
            )
        if order == "random" and random_curves is not None:
            random_curves[fill] = curve
        ds[f"{order}_curve"] = ("fraction", np.asarray(curve.values, float))
        ds[f"{order}_auc"] = float(masking_auc(curve))
        ds[f"{order}_auc_paper"] = float(masking_auc(curve, scale="paper"))
    ds["fidelity_gap"] = ds["lerf_auc"] - ds["morf_auc"]
    return ds


def _faithfulness_block(
    model, probe: Probe, sal: torch.Tensor, options: AnalysisOptions
) -> xr.Dataset:
    """RISE's deletion and insertion curves of the target's softmax probability: the probe
    means over ``fraction``, the mean areas, and each sample's area (over ``sample``)."""
    from geomxai.attribution import deletion_curve, insertion_curve

    fractions = np.linspace(0.0, 1.0, options.fractions)
    ds = xr.Dataset(coords={"fraction": fractions})
    why = "the target's probability is not finite for any probe sample"
    for mode, curve_of in (("deletion", deletion_curve), ("insertion", insertion_curve)):
        # The fills are RISE's (zero for deletion; a blur, or the mean, to insert into), not
        # options.fill: these curves follow the reference they are compared with.
        curves = curve_of(
            model,
            probe.images,
            probe.labels,
            sal,
            fractions=fractions,
            batch_size=options.batch_size,
            seed=options.seed,
        )
        probability = np.asarray(curves["probability"].values, dtype=float)
        mean_curve = (
            np.nanmean(probability, axis=0)
            if np.isfinite(probability).any(axis=0).all()
            else np.full(fractions.size, np.nan)
        )
        ds[f"{mode}_curve"] = _with_reason(xr.DataArray(mean_curve, dims="fraction"), why)
        per_sample = np.asarray(curves["auc"].values, dtype=float)
        ds[f"{mode}_auc"] = _sample_mean(per_sample, f"{mode}_auc", why)
        ds[f"{mode}_auc_per_sample"] = _with_reason(xr.DataArray(per_sample, dims="sample"), why)
    return ds


def _sample_mean(per_sample, name: str, why: str) -> xr.DataArray:
    """The mean over probe samples of a per-sample metric (NaN samples skipped)."""
    values = np.asarray(per_sample, dtype=float)
    mean = _scalar(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    return _with_reason(xr.DataArray(mean), f"{name} is NaN for every probe sample ({why})")


def _saliency_block(sal: torch.Tensor) -> xr.Dataset:
    """Saliency quality without ground truth: top-q contrast and Gini, averaged over the probe."""
    from geomxai.attribution import gini, topq_contrast

    return xr.Dataset(
        {
            "topq_contrast": _sample_mean(topq_contrast(sal), "topq_contrast", "all-zero maps"),
            "gini": _sample_mean(gini(sal), "gini", "all-zero maps"),
        }
    )


def _localisation_block(sal: torch.Tensor, masks: torch.Tensor | None) -> xr.Dataset:
    """Saliency against ground-truth masks; empty for data without masks."""
    if masks is None:
        return xr.Dataset()
    from geomxai.attribution import mask_auroc, mass_inside, pointing_game

    why = "all-zero maps, or masks that are all foreground or all background"
    return xr.Dataset(
        {
            "mask_auroc": _sample_mean(mask_auroc(sal, masks), "mask_auroc", why),
            "mass_inside": _sample_mean(mass_inside(sal, masks), "mass_inside", why),
            "pointing_game": _sample_mean(pointing_game(sal, masks), "pointing_game", why),
        }
    )


_JACOBIAN_ENTRIES = 2**25
"""Largest probe x outputs x units for which the head-projected geometry keeps the per-sample
Jacobians (float64: 256 MiB); above it those metrics are NaN saying so."""


def _entanglement_block(model, probe: Probe, layer: str, options: AnalysisOptions) -> xr.Dataset:
    """At the model's feature layer (or ``entanglement_layer``): gradient entanglement on live
    units and on all units, and the function-invariant geometry (geomxai.geometry's
    ``head_geometry`` of the head-projected features, ``gradient_metric_geometry`` of the
    feature gradients), all from one pass of :func:`geomxai.attribution.layer_gradients`."""
    names = schema.names("entanglement")
    values = dict.fromkeys(names, math.nan)
    reasons = dict.fromkeys(names, "")
    if not options.entanglement:
        reasons = dict.fromkeys(names, "the analysis ran with entanglement=False")
    elif layer not in dict(model.named_modules()):
        kind = "layer" if options.entanglement_layer else "feature layer"
        reasons = dict.fromkeys(names, f"the model has no {kind} named {layer!r}")
    else:
        from geomxai.attribution import entanglement_of, layer_gradients
        from geomxai.geometry import gradient_metric_geometry, head_geometry

        # One sample first: the layer's width and the number of outputs size the Jacobians.
        one = layer_gradients(model, probe.images[:1], probe.labels[:1], layer=layer)
        n, n_out, d = len(probe.images), one.logits.shape[1], one.features.shape[1]
        full = n * n_out * d <= _JACOBIAN_ENTRIES
        grads = layer_gradients(
            model,
            probe.images,
            probe.labels,
            layer=layer,
            outputs="all" if full else "target",
            batch_size=options.batch_size,
        )
        none = f"no probe sample has two or more non-zero gradients on the live units of {layer!r}"
        values["entanglement"] = _scalar(entanglement_of(grads.features, grads.gradients))
        reasons["entanglement"] = none
        values["entanglement_all_units"] = _scalar(
            entanglement_of(grads.features, grads.gradients, units="all")
        )
        reasons["entanglement_all_units"] = none.replace("the live units", "the units")
        gm = gradient_metric_geometry(grads.features, grads.gradients)
        values["grad_metric_effective_rank"] = gm["effective_rank"]
        values["grad_metric_participation_ratio"] = gm["participation_ratio"]
        if grads.jacobians is not None:
            hg = head_geometry(grads.features, grads.jacobians)
            values.update({f"head_{k}": hg[k] for k in ("effective_rank", "participation_ratio")})
            values["head_mean_abs_corr"] = hg["mean_abs_corr"]
            reasons["head_mean_abs_corr"] = "fewer than 2 live head outputs"
        else:
            why = (
                f"the per-sample Jacobians ({n} samples x {n_out} outputs x the layer's units) "
                f"exceed {_JACOBIAN_ENTRIES} entries; use a smaller probe"
            )
            for k in ("head_effective_rank", "head_participation_ratio", "head_mean_abs_corr"):
                reasons[k] = why
    ds = xr.Dataset()
    for name in names:
        ds[name] = _with_reason(xr.DataArray(_scalar(values[name])), reasons[name])
        ds[name].attrs["layer"] = layer
    ds["entanglement"].attrs["units"] = "live"
    ds["entanglement_all_units"].attrs["units"] = "all"
    return ds


def _examples_block(sal: torch.Tensor, options: AnalysisOptions) -> xr.Dataset:
    """A few saliency maps for figures, and every probe map for the stability metric.

    Per-step (n, t) and per-feature (n, d) maps are stored as one row, (n, 1, t) or (n, 1, d),
    so every input kind shares the schema's ``(height, width)`` dims.
    """
    maps = sal.detach().cpu().numpy().astype(np.float32)
    if maps.ndim == 2:
        maps = maps[:, None, :]
    n_ex = min(options.n_examples, len(maps))
    return xr.Dataset(
        {
            "saliency_maps": (("example", "height", "width"), maps[:n_ex].copy()),
            "probe_saliency": (("sample", "height", "width"), maps),
        }
    )


def measure(
    model: torch.nn.Module, probe: Probe, options: AnalysisOptions, *, device=None
) -> xr.Dataset:
    """Every geometry and attribution metric of one model on the probe set.

    One block per analysis (:data:`geomxai.schema.BLOCKS`): geometry of each layer, accuracy,
    masking fidelity, probabilistic faithfulness (RISE's deletion and insertion curves of the
    target's softmax probability, :func:`geomxai.attribution.deletion_curve` and
    :func:`~geomxai.attribution.insertion_curve`, on the same saliency maps and fractions as
    the masking curves; means over the probe, and each sample's area over ``sample``),
    saliency quality, localisation (probes with ground-truth masks only), entanglement at the
    model's feature layer, example maps; their Datasets are merged.

    The model runs in eval mode and gets every submodule's own train/eval flag back afterwards
    (:func:`geomxai._model_state.evaluating`); with ``device`` it runs there and is moved back.

    Parameters
    ----------
    model : nn.Module
        Maps ``probe.images`` to logits (n, k).
    probe : Probe
        Image batches (n, c, h, w), sequences (n, c, t) or tabular rows (n, d). With
        ``probe.labels=None`` only the geometry is measured: accuracy, masking, saliency
        quality and entanglement are NaN saying so, and no saliency maps are kept.
    options : AnalysisOptions
    device : str or torch.device, optional
        Where the passes run; default the model's own device.

    Returns
    -------
    xr.Dataset
        The variables of :mod:`geomxai.schema` with those blocks, without ``epoch``, ``regime`` or
        ``seed`` dims (:func:`analyze_run` adds them), annotated by
        :func:`geomxai.schema.annotate`. A variable that cannot be computed is NaN and says why
        in its ``attrs["nan_reason"]``; so is every variable whose minimum probe size
        (:func:`geomxai.schema.min_samples`) the probe is below, with a
        :class:`~geomxai.study.ProbeSizeWarning` (also for a layer with more units than half the
        probe). ``probe_size`` is the number of probe samples used, ``n_units`` each layer's
        width, ``probe_features`` each layer's features (for :func:`analyze_run`'s similarity;
        the run drops them). ``attrs["saliency_method"]`` names the saliency method every
        saliency metric used (:func:`geomxai.attribution.method_name`; for a factory, of the
        instance it built for ``model``).
    """
    from geomxai._model_state import evaluating, placed_on
    from geomxai.attribution import method_name, saliency
    from geomxai.study._probe import apply_minimums, warn_probe

    layer = _feature_layer(model, options)
    tangle_layer = options.entanglement_layer or layer
    n = len(probe.images)
    labelled = probe.labels is not None
    method = options.saliency_method
    variants = xr.Dataset()
    with evaluating(model), placed_on(model, device):
        # The blocks run in this order (saliency after the geometry and accuracy passes), as
        # before the split, so a method that draws random numbers sees the same generator state.
        parts = [_geometry_block(model, probe, list(options.layers or (layer,)), options)]
        if not labelled:
            why = (
                "the probe has no labels (labels=False, or unlabelled data): only the geometry "
                "is measured; accuracy, saliency and fidelity need a class per sample"
            )
            blocks = ("accuracy", "masking", "faithfulness_probability", "saliency", "entanglement")
            parts.append(_unmeasured(blocks, why, options))
        else:
            if n < schema.MIN_ACCURACY_SAMPLES:
                # NaN below their minimum whatever they give (apply_minimums): not computed.
                blocks = ("accuracy",) if options.variants else ("accuracy", "masking")
                parts.append(_unmeasured(blocks, "", options))
            else:
                parts.append(_accuracy_block(model, probe, options))
            method = _bound_method(method, model)
            if options.variants:
                variants, sal = _variant_blocks(model, probe, options, parts[-1])
                parts.append(variants)
            else:
                sal = saliency(
                    model,
                    probe.images,
                    probe.labels,
                    method=method,
                    batch_size=options.batch_size,
                    **_saliency_arguments(method, options.saliency_kwargs),
                )
                if n >= schema.MIN_ACCURACY_SAMPLES:
                    parts.append(_masking_block(model, probe, sal, options))
                parts += [
                    _faithfulness_block(model, probe, sal, options),
                    _saliency_block(sal),
                    _localisation_block(sal, probe.masks),
                ]
            parts += [
                _entanglement_block(model, probe, tangle_layer, options),
                _examples_block(sal, options),
            ]
    ds = xr.merge(parts, compat="no_conflicts", join="outer", combine_attrs="drop_conflicts")
    unmeasured = () if labelled else set(parts[1].data_vars)
    ds = apply_minimums(ds, n, skip=unmeasured)
    widths = dict(zip(map(str, ds["layer"].values), ds["n_units"].values.astype(int), strict=True))
    warn_probe(n, widths, labelled=labelled)
    ds.attrs = {
        "saliency_method": method_name(method),
        "reduction": parts[0].attrs["reduction"],
        "entanglement_layer": tangle_layer,
    }
    from geomxai.study._degeneracy import add_degeneracy_warnings

    # After the attrs are set: the warnings go on the variables and on the Dataset itself.
    if options.variants and labelled:
        # Each (method, fill) slice was checked before stacking (_variant_blocks); here the
        # rest: the live units and the model at chance on the other variables.
        rest = ds.drop_vars([*_VARIANT_NAMES, "probe_saliency"], errors="ignore")
        _add_checked(ds, rest, probe.labels, options)
        from geomxai.study._degeneracy import add_warning, warnings_of

        for message in warnings_of(variants):
            add_warning(ds, message)
        ds.attrs["saliency_methods"] = json.dumps([method_name(m) for m in options.method_variants])
        ds.attrs["fills"] = json.dumps(list(options.fill_variants))
    else:
        add_degeneracy_warnings(ds, labels=probe.labels, fill=options.fill)
    return schema.annotate(ds)


_VARIANT_NAMES = (
    *schema.names("masking"),
    *schema.names("faithfulness_probability"),
    *schema.names("saliency"),
    *schema.names("localisation"),
)
"""The variables measured per saliency method (every one) and per fill (the masking ones)."""


def _add_checked(ds: xr.Dataset, view: xr.Dataset, labels, options: AnalysisOptions) -> None:
    """:func:`~geomxai.study._degeneracy.add_degeneracy_warnings` of ``view`` (a copy of some
    of ``ds``'s variables), its warnings written onto ``ds``'s variables and ``ds`` itself."""
    from geomxai.study._degeneracy import add_degeneracy_warnings, add_warning, warnings_of

    view = view.copy()
    for name in view.data_vars:
        view[name].attrs = dict(view[name].attrs)
    view.attrs = {}
    add_degeneracy_warnings(view, labels=labels, fill=options.fill)
    for name in view.data_vars:
        for message in warnings_of(view[name]):
            add_warning(ds[name], message)
    for message in warnings_of(view):
        add_warning(ds, message)


def _variant_blocks(
    model, probe: Probe, options: AnalysisOptions, accuracy: xr.Dataset
) -> tuple[xr.Dataset, torch.Tensor]:
    """The saliency metrics of every method in ``options.saliency_methods`` and the masking
    metrics of every (method, fill) pair, stacked along ``saliency_method`` and ``fill`` (each
    dim only where more than one is measured), and the first method's maps.

    Each method's maps are what :func:`measure` of that method alone computes (the named
    methods run under their own seeded generator), and every block after them draws from its
    own seeded generator, so each slice equals the single-method, single-fill analysis. The
    degeneracy warnings are checked on each slice, with ``accuracy`` (``probe_acc``) beside it,
    before the slices are stacked; a warning that not every slice has is labelled by its
    slice."""
    from geomxai.attribution import method_name, saliency
    from geomxai.study._degeneracy import add_degeneracy_warnings, warnings_of
    from geomxai.study._probe import apply_minimums

    n = len(probe.images)
    methods, fills = options.method_variants, options.fill_variants
    names = [method_name(m) for m in methods]
    random_curves: dict = {}
    grid, first = [], None
    for method in methods:
        sal = saliency(
            model,
            probe.images,
            probe.labels,
            method=method,
            batch_size=options.batch_size,
            **_saliency_arguments(method, options.saliency_kwargs),
        )
        first = sal if first is None else first
        per_method = xr.merge(
            [
                _faithfulness_block(model, probe, sal, options),
                _saliency_block(sal),
                _localisation_block(sal, probe.masks),
            ],
            combine_attrs="drop_conflicts",
        )
        maps = _examples_block(sal, options)[["probe_saliency"]]
        row = []
        for fill in fills:
            if n >= schema.MIN_ACCURACY_SAMPLES:
                masking = _masking_block(
                    model, probe, sal, options, fill=fill, random_curves=random_curves
                )
            else:
                masking = _unmeasured(("masking",), "", options)
            part = xr.merge([per_method, masking], combine_attrs="drop_conflicts")
            part = apply_minimums(part, n)
            checked = xr.merge([part, accuracy, maps], combine_attrs="drop_conflicts")
            for name in checked.data_vars:
                checked[name].attrs = dict(checked[name].attrs)
            add_degeneracy_warnings(checked, labels=probe.labels, fill=fill)
            for name in part.data_vars:
                part[name].attrs = dict(checked[name].attrs)
            part.attrs = {"warnings": checked.attrs.get("warnings", "[]")}
            row.append(part)
        grid.append(row)
    several_m, several_f = len(methods) > 1, len(fills) > 1
    slices = _Slices(names, fills)
    out = xr.Dataset()
    for name in grid[0][0].data_vars:
        per_fill = name in schema.names("masking")
        # Every slice a value came from, a per-method one too: its warnings may be one fill's.
        tagged = [
            ((i, j), grid[i][j][name]) for i in range(len(methods)) for j in range(len(fills))
        ]
        stacked = []
        for i in range(len(methods)):
            if per_fill and several_f:
                das = [_bare(grid[i][j][name]) for j in range(len(fills))]
                stacked.append(xr.concat(das, dim=_new_dim("fill", fills)))
            else:
                stacked.append(_bare(grid[i][0][name]))
        da = xr.concat(stacked, dim=_new_dim("saliency_method", names)) if several_m else stacked[0]
        da.attrs = slices.attrs(tagged)
        out[name] = da
    said = [
        ((i, j), w)
        for i in range(len(methods))
        for j in range(len(fills))
        for w in warnings_of(grid[i][j])
    ]
    messages = slices.labelled(
        said, {(i, j) for i in range(len(methods)) for j in range(len(fills))}
    )
    if messages:
        out.attrs["warnings"] = json.dumps(messages)
    return out, first


class _Slices:
    """Labels of the (method, fill) slices of a variant analysis, for the messages (NaN
    reasons, degeneracy warnings) of the slices a stacked variable is made of. A slice is a
    pair ``(i, j)`` of indices into the methods and fills."""

    def __init__(self, methods: list[str], fills: tuple[str, ...]):
        self.methods, self.fills = methods, fills

    def label(self, i: int | None, j: int | None) -> str:
        said = [] if i is None or len(self.methods) < 2 else [self.methods[i]]
        said += [] if j is None or len(self.fills) < 2 else [f"fill {self.fills[j]!r}"]
        return ", ".join(said)

    def labelled(self, said: list[tuple[tuple, str]], universe: set) -> list[str]:
        """Each message once: as it is where every slice of ``universe`` said it; else
        prefixed by the fills (every method said it there), by the methods (at every fill)
        or by each slice that said it."""
        out = []
        for message in dict.fromkeys(m for _, m in said):
            pairs = {k for k, m in said if m == message}
            fills = sorted({j for _, j in pairs}, key=lambda j: -1 if j is None else j)
            methods = sorted({i for i, _ in pairs})
            if pairs == universe:
                keys = [(None, None)]
            elif pairs == {(i, j) for i, j in universe if j in fills}:
                keys = [(None, j) for j in fills]
            elif pairs == {(i, j) for i, j in universe if i in methods}:
                keys = [(i, None) for i in methods]
            else:
                keys = sorted(pairs, key=lambda k: (k[0], -1 if k[1] is None else k[1]))
            for i, j in keys:
                lb = self.label(i, j)
                out.append(f"{lb}: {message}" if lb else message)
        return list(dict.fromkeys(out))

    def attrs(self, tagged: list[tuple[tuple, xr.DataArray]]) -> dict:
        """A stacked variable's attrs from its slices' (``tagged``: slice, DataArray): the NaN
        reasons (one shared message as it is, else each labelled by its slice) and the
        degeneracy warnings (:meth:`labelled`)."""
        from geomxai.study._degeneracy import WARNINGS_ATTR, warnings_of

        attrs = {}
        reasons = [(k, str(da.attrs["nan_reason"])) for k, da in tagged if "nan_reason" in da.attrs]
        unique = list(dict.fromkeys(m for _, m in reasons))
        if len(unique) == 1:
            attrs["nan_reason"] = unique[0]
        elif unique:
            attrs["nan_reason"] = "; ".join(self.labelled(reasons, {k for k, _ in tagged}))
        warned = self.labelled(
            [(k, w) for k, da in tagged for w in warnings_of(da)], {k for k, _ in tagged}
        )
        if warned:
            attrs[WARNINGS_ATTR] = json.dumps(warned)
        return attrs


def _bare(da: xr.DataArray) -> xr.DataArray:
    """A shallow copy of ``da`` without attrs (the stacked variable gets its own)."""
    da = da.copy(deep=False)
    da.attrs = {}
    return da


def _new_dim(dim: str, values) -> xr.DataArray:
    """A new dim and its coordinate, for :func:`xarray.concat`."""
    return xr.DataArray(list(values), dims=dim, name=dim)


def _read_cache(cache: Path) -> xr.Dataset | None:
    """A cache entry, or None when there is none or it cannot be read (then it is recomputed
    and replaced: a cache is never the reason an analysis fails)."""
    if not cache.is_file():
        return None
    try:
        with xr.open_dataset(cache, engine="h5netcdf") as cached:
            return cached.load()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        log.warning("the analysis cache entry %s cannot be read (%s); recomputing it", cache, err)
        return None


def _write_cache(cache: Path, ds: xr.Dataset) -> None:
    # A unique temporary name, renamed into place: parallel workers and concurrent
    # `geomxai analyze` processes may cache the same checkpoint at once, and each rename
    # leaves a whole entry (the same numbers, whichever lands last). Serialised in memory
    # first, so a full disk is a checked OSError here, never an HDF5 write that crashes.
    try:
        write_bytes_atomic(cache, ds.to_netcdf(engine="h5netcdf"))
    except OSError as err:
        log.warning(
            "cannot write the analysis cache entry %s (%s); the result is used without being "
            "cached",
            cache,
            err,
        )


def analyze_checkpoint(
    path, probe: Probe, options: AnalysisOptions, *, cache_dir=None, device=None
) -> xr.Dataset:
    """:func:`measure` on one checkpoint file, cached under ``cache_dir`` by content and options.

    An entry that cannot be read is recomputed; one that cannot be written (a full disk, a
    read-only folder) is skipped with a warning. ``cache_dir=None``: no cache. ``device``: where
    the passes run (not part of the cache key: the numbers are the same up to rounding).
    """
    path = Path(path)
    cache = None
    if cache_dir is not None:
        key = hashlib.sha256(
            f"{_file_digest(path)}|{options.key()}|{_probe_digest(probe)}|v{CACHE_VERSION}".encode()
        ).hexdigest()[:24]
        cache = Path(cache_dir) / f"{path.stem}-{key}.nc"
        cached = _read_cache(cache)
        if cached is not None:
            return cached
    # Through the package root, at call time: the checkpoint format (and the model specs it
    # rebuilds) belongs to geomxai.train, which `import geomxai.study` must not load.
    from geomxai import load_checkpoint

    model, config = load_checkpoint(path)
    # measure's own signature when no device is asked for (wrappers of it need not take one).
    extra = {} if device is None else {"device": device}
    ds = measure(model, probe, options, **extra)
    if cache is not None:
        _write_cache(cache, ds)
    return ds


def _cache_folder(run_dir: Path, cache) -> Path | None:
    """Where :func:`analyze_run` caches, after checking it can; stale temporary files of killed
    writers there are removed (only ``.<entry>.nc.<owner>.tmp`` names, never other files)."""
    if cache is None or cache is False:
        return None
    explicit = cache is not True
    if explicit and not isinstance(cache, (str, os.PathLike)):
        raise TypeError(f"cache must be True, False or a folder path; got {type(cache).__name__}")
    folder = check_nonempty_path(cache, "cache") if explicit else run_dir / "analysis"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        check_writable(folder, folder=True)
    except OSError as err:
        if explicit:
            raise
        log.warning(
            "the run directory %s is not writable (%s); analysing without a cache. Keep one "
            "elsewhere with cache=DIR (geomxai analyze --cache DIR), or pass cache=False "
            "(--no-cache) to say so",
            run_dir,
            err.strerror or err,
        )
        return None
    remove_stale_temps(folder, lambda name: name.endswith(".nc"))
    return folder


def _merge_reasons(merged: xr.Dataset, tagged: list[tuple[str, xr.Dataset]]) -> None:
    """Each variable's ``attrs["nan_reason"]`` in ``merged``, from the parts it was merged from.

    ``tagged`` pairs a label (``"epoch 3"``, ``"sgt-s0"``) with a part. One message shared by
    every part that has it is kept as it is; differing messages (which concat and
    combine_by_coords drop as conflicts) are each kept, prefixed by their part's label.
    """
    from geomxai.study._degeneracy import WARNINGS_ATTR, warnings_of

    for name in merged.data_vars:
        # Degeneracy warnings (a JSON list per variable): every part's, labelled by the part.
        labelled = [
            f"{label}: {w}"
            for label, part in tagged
            if name in part.data_vars
            for w in warnings_of(part[name])
        ]
        if labelled:
            merged[name].attrs[WARNINGS_ATTR] = json.dumps(list(dict.fromkeys(labelled)))
        entries = [
            (label, str(part[name].attrs["nan_reason"]))
            for label, part in tagged
            if name in part.data_vars and "nan_reason" in part[name].attrs
        ]
        if entries:
            messages = list(dict.fromkeys(m for _, m in entries))
            merged[name].attrs["nan_reason"] = (
                messages[0] if len(messages) == 1 else "; ".join(f"{lb}: {m}" for lb, m in entries)
            )


def checkpoints_of(run_dir) -> list[Path]:
    """The per-epoch checkpoints of a run directory, in epoch order.

    :func:`geomxai.rundir.list_checkpoints` as a list; raises ``FileNotFoundError`` naming the
    directory when it holds none.
    """
    return list(list_checkpoints(run_dir, missing_ok=False).values())


_SWAP_VARIABLES = tuple(
    n
    for n in schema.names("dynamics")
    if schema.variable(n).dims == ("layer",)
    and schema.variable(n).per_checkpoint
    and not n.startswith(("cka_", "procrustes_"))
)


def _eigenpairs(ds: xr.Dataset, layer: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(eigvals, eigvecs)`` of one layer at every epoch, its NaN padding cut off.

    A layer narrower than the widest one is padded with NaN rows (units) and, below ``top_k``
    units, NaN columns (axes); its units are the rows with a finite entry, its axes the columns
    finite on those rows, the same at every epoch of one run.
    """
    vecs = ds["top_eigvecs"].isel(layer=layer).transpose("epoch", "unit", "axis").values
    vals = ds["top_eigvals"].isel(layer=layer).transpose("epoch", "axis").values
    units = np.isfinite(vecs).any(axis=2).all(axis=0)
    axes = np.isfinite(vecs[:, units]).all(axis=(0, 1)) & np.isfinite(vals).all(axis=0)
    return [(vals[t, axes], vecs[t][np.ix_(units, axes)]) for t in range(vecs.shape[0])]


def _stability_over_epochs(probe_saliency: xr.DataArray) -> xr.DataArray:
    """Mean cosine similarity of each epoch's probe maps with the previous epoch's."""
    from geomxai.dynamics import saliency_stability

    maps = probe_saliency.transpose("epoch", ...).values
    stability = np.full(maps.shape[0], np.nan)
    for t in range(1, maps.shape[0]):
        per_sample = np.asarray(saliency_stability(maps[t - 1], maps[t]), dtype=float)
        if np.isfinite(per_sample).any():
            stability[t] = float(np.nanmean(per_sample))
    reason = _FIRST_EPOCH
    undefined = [int(e) for e in probe_saliency["epoch"].values[1:][np.isnan(stability[1:])]]
    if undefined:
        reason += f"; at epoch(s) {undefined} every probe map is all zero at one of the two"
    return xr.DataArray(stability, dims="epoch", attrs={"nan_reason": reason})


def add_dynamics(ds: xr.Dataset) -> xr.Dataset:
    """Axis swaps and saliency stability of each epoch against the previous one (NaN at the first),
    and the representation similarity to the previous and the final epoch.

    The swaps of each layer are :func:`geomxai.dynamics.axis_swap_sequence` of its top
    eigenpairs over the epochs; step ``s`` of the sequence is epoch ``s + 1`` here. The
    similarity (``cka_*``, ``procrustes_*``) is :func:`geomxai.study._similarity.add_similarity`
    of ``probe_features``, when ``ds`` holds them. With ``probe_size`` in ``ds``, the variables
    whose minimum probe size it is below are NaN saying so.
    """
    from geomxai.dynamics import axis_swap_sequence
    from geomxai.study._probe import apply_minimums
    from geomxai.study._similarity import add_similarity

    n_probe = None
    if "probe_size" in ds:
        n_probe = int(np.nanmin(np.asarray(ds["probe_size"].values, dtype=float)))
    swaps = {n: np.full((ds.sizes["epoch"], ds.sizes["layer"]), np.nan) for n in _SWAP_VARIABLES}
    # Below the geometry minimum the eigenvectors describe the probe; they are NaN below.
    if ds.sizes["epoch"] >= 2 and (n_probe is None or n_probe >= schema.MIN_GEOMETRY_SAMPLES):
        for j in range(ds.sizes["layer"]):
            sequence = axis_swap_sequence(_eigenpairs(ds, j))
            for n in _SWAP_VARIABLES:
                swaps[n][1:, j] = sequence[n].values
    for n in _SWAP_VARIABLES:
        ds[n] = xr.DataArray(swaps[n], dims=("epoch", "layer"), attrs={"nan_reason": _FIRST_EPOCH})
    if "probe_saliency" in ds:
        ds["saliency_stability"] = _stability_over_epochs(ds["probe_saliency"])
    ds = add_similarity(ds)
    if n_probe is not None:
        ds = apply_minimums(ds, n_probe)
    return schema.annotate(_add_run_dynamics(ds))


def _add_run_dynamics(ds: xr.Dataset) -> xr.Dataset:
    """The whole-run summaries of one run's dynamics (schema block ``run_dynamics``), from its
    per-checkpoint dynamics in ``ds`` (docs/dynamics.md): the mean non-degenerate swap rate
    and mean saliency stability over consecutive pairs, the step and epoch at which the top-k
    subspace settles, and the area under the CKA to the final checkpoint over training time
    rescaled to [0, 1]. Time is the ``step`` coordinate where there is one, else ``epoch``."""
    from geomxai.dynamics import SETTLED_OVERLAP, area_over_training, run_mean, settling_time

    epochs = np.asarray(ds["epoch"].values, dtype=float)
    steps = None
    if "step" in ds.coords and ds["step"].dims == ("epoch",):
        steps = np.asarray(ds["step"].values, dtype=float)
        steps = steps if np.isfinite(steps).all() else None

    def per_layer(name: str, summary) -> xr.DataArray:
        values = ds[name].transpose("epoch", "layer").values
        return xr.DataArray([summary(values[:, j]) for j in range(values.shape[1])], dims="layer")

    pairs = "fewer than 2 analysed checkpoints, or no pair with a defined value"
    if "nondegenerate_swap_rate" in ds:
        ds["mean_nondegenerate_swap_rate"] = _with_reason(
            per_layer("nondegenerate_swap_rate", run_mean), pairs
        )
    if "subspace_overlap" in ds:
        why = (
            f"the subspace overlap of the last analysed pair is below {SETTLED_OVERLAP} (not "
            "settled by the end), a pair's overlap is undefined, or fewer than 2 checkpoints"
        )
        attrs = {"settled_overlap": SETTLED_OVERLAP}
        settle = per_layer("subspace_overlap", lambda v: settling_time(v, epochs))
        ds["subspace_settle_epoch"] = _with_reason(settle.assign_attrs(attrs), why)
        if steps is None:
            step = xr.full_like(settle, np.nan)
            why = "the checkpoints' global steps are unknown (no finite step coordinate)"
        else:
            step = per_layer("subspace_overlap", lambda v: settling_time(v, steps))
        ds["subspace_settle_step"] = _with_reason(step.assign_attrs(attrs), why)
    if "cka_final" in ds:
        ds["cka_final_auc"] = _with_reason(
            per_layer("cka_final", lambda v: area_over_training(v, epochs)),
            "a checkpoint's CKA to the final one is undefined, or fewer than 2 checkpoints",
        )
    if "saliency_stability" in ds:
        ds["mean_saliency_stability"] = _with_reason(
            xr.DataArray(run_mean(ds["saliency_stability"].transpose("epoch").values)), pairs
        )
    return ds


def analyze_run(
    run_dir,
    *,
    options: AnalysisOptions | None = None,
    probe: Probe | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
    cache=True,
    device=None,
    epochs=None,
    steps=None,
    **option_overrides,
) -> xr.Dataset:
    """Every checkpoint of one run, measured on a fixed probe set, as one Dataset over ``epoch``.

    Parameters
    ----------
    run_dir : path-like
        A run directory written by :func:`geomxai.train.train`.
    options : AnalysisOptions, optional
        What to measure; keyword overrides (``probe_size=...``) are applied on top. A Captum
        instance as ``saliency_method`` is refused with a ValueError (it is bound to one model
        and each checkpoint is a new one): give a factory ``model -> Attribution``.
    probe : Probe, optional
        Defaults to the first ``probe_size`` test images of the run's dataset.
    workers, scheduler
        ``workers > 1`` or a scheduler address analyses checkpoints in parallel through dask.
    cache : bool or path-like
        Where each checkpoint's result is cached, keyed by the checkpoint's contents, the
        options and the probe: True (default) ``run_dir/analysis/``, falling back to no cache
        with a warning when the run directory is not writable (a read-only mount, another
        user's run); a folder path, which must be writable (one folder may serve many runs);
        False: no cache.
    device : str or torch.device, optional
        Where each checkpoint's passes run (serial analysis only; dask workers use their own
        device); default the CPU the checkpoint is loaded on.
    epochs : iterable of int, optional
        Analyse only these checkpointed epochs (default: every checkpoint, the sub-epoch ones
        of ``checkpoint_every_steps`` included). The dynamics then compare consecutive
        *analysed* checkpoints; include the last two epochs for a final swap rate and saliency
        stability between adjacent checkpoints. An epoch the run has no checkpoint for raises
        ``ValueError`` naming the ones it has.
    steps : iterable of int, optional
        Analyse (also) the checkpoints at these global optimizer steps, epoch or sub-epoch
        ones (:func:`geomxai.rundir.training_checkpoints` lists them); a step without a
        checkpoint raises ``ValueError`` naming the ones there are.

    Returns
    -------
    xr.Dataset
        Dims ``epoch``, ``layer``, ``fraction``, ``component``, ... with ``test_acc`` and the
        training losses from ``metrics.jsonl``; the run's config as JSON in ``attrs["config"]``.
        The ``epoch`` coordinate is training time in epochs: int epochs, or floats where
        sub-epoch checkpoints are analysed (1.5: half-way through the second epoch); the
        ``step`` coordinate along it holds each checkpoint's global optimizer step (float with
        NaN only where the run's steps per epoch are unknown).
        Results of checkpoints already analysed with the same options are read from the cache
        instead of recomputed. The dynamics compare consecutive checkpoints: axis swaps,
        saliency stability, and the linear CKA and Procrustes distance of each layer's probe
        features to the previous and the final checkpoint (``cka_previous``, ``cka_final``,
        ``procrustes_previous``, ``procrustes_final``); the probe features themselves are not
        kept. ``probe_size`` is the number of probe samples; a probe below a metric's minimum
        (:func:`geomxai.schema.min_samples`) leaves it NaN saying so, with one
        :class:`~geomxai.study.ProbeSizeWarning` per message for the run.
    """
    run_dir = Path(run_dir)
    options = options or AnalysisOptions()
    if option_overrides:
        options = replace(options, **{k: v for k, v in option_overrides.items() if v is not None})
    _check_per_checkpoint_method(options.saliency_method)
    if not isinstance(workers, (int, np.integer)) or isinstance(workers, bool) or workers < 1:
        raise ValueError(
            f"workers (--workers) must be a positive integer (1: serial); got workers={workers!r}"
        )
    if device is not None and (workers > 1 or scheduler):
        raise ValueError(
            "device goes with the serial analysis (workers=1, no scheduler); dask workers run "
            f"on their own devices; got device={str(device)!r} and workers={workers}"
        )
    run = read_run(run_dir)
    chosen = _selected_checkpoints(run, epochs, steps)
    epochs = [_epoch_value(c) for c in chosen]
    from geomxai.train._checkpoint import check_run_identity

    # A checkpoint copied in from another run would be labelled with this run's regime and seed.
    check_run_identity(run.path, run.config, [c.path for c in chosen])
    if probe is None:
        probe = make_probe(run.config["dataset"], options.probe_size)
    parts = _checkpoint_parts(
        [c.path for c in chosen],
        probe,
        options,
        _cache_folder(run_dir, cache),
        workers=workers,
        scheduler=scheduler,
        device=device,
        desc=f"analyse {run_dir.name}",
        progress=progress,
    )
    ds = _over_epochs(parts, epochs, probe, steps=[c.step for c in chosen])
    ds = _with_training_metrics(ds, run.metrics, epochs)
    ds.attrs.update(_run_attrs(run, options, parts))
    return schema.annotate(ds)


def _epoch_value(checkpoint) -> int | float:
    """A checkpoint's ``epoch`` coordinate: the epoch number of an epoch checkpoint, the
    fractional training time of a sub-epoch one (so every run without them keeps int epochs)."""
    if not checkpoint.sub_epoch:
        return int(checkpoint.epoch)
    return float(checkpoint.epoch)


def _selected_checkpoints(run, epochs, steps) -> list:
    """The checkpoints to analyse, in training order (:class:`geomxai.rundir.Checkpoint`): every
    one, sub-epoch ones included, when neither ``epochs`` nor ``steps`` is given; else the epoch
    checkpoints of ``epochs`` and the checkpoints (of either kind) at global steps ``steps``."""
    timeline = list(run.timeline)
    if epochs is None and steps is None:
        return timeline
    keep = set()
    if epochs is not None:
        keep |= {run.checkpoints[e] for e in _selected_epochs(run, epochs)}
    if steps is not None:
        steps = sorted({int(s) for s in steps})
        by_step = {c.step: c.path for c in timeline if c.step is not None}
        missing = [s for s in steps if s not in by_step]
        if missing or not steps:
            raise ValueError(
                f"steps must be global steps of checkpoints of {str(run.path)!r}; got "
                f"{missing or steps} (it has {sorted(by_step)})"
            )
        keep |= {by_step[s] for s in steps}
    return [c for c in timeline if c.path in keep]


def _selected_epochs(run, epochs) -> list[int]:
    """Every checkpointed epoch, or the requested ones (which must all be checkpointed)."""
    if epochs is None:
        return run.epochs
    epochs = sorted({int(e) for e in epochs})
    missing = [e for e in epochs if e not in run.checkpoints]
    if missing or not epochs:
        raise ValueError(
            f"epochs must be checkpointed epochs of {str(run.path)!r}; got {missing or epochs} "
            f"(it has {run.epochs})"
        )
    return epochs


def _checkpoint_parts(
    paths, probe, options, cache_dir, *, workers, scheduler, device, desc, progress
) -> list[xr.Dataset]:
    """:func:`analyze_checkpoint` of each path, serially or through dask."""
    from geomxai.study._probe import ProbeSizeWarning

    with warnings.catch_warnings():
        # Said once for the run (by _over_epochs), not once per checkpoint (or never, for
        # cached ones).
        warnings.simplefilter("ignore", ProbeSizeWarning)
        if workers > 1 or scheduler:
            from geomxai.study._parallel import map_checkpoints

            return map_checkpoints(
                paths, probe, options, cache_dir, workers=workers, scheduler=scheduler
            )
        extra = {} if device is None else {"device": device}
        return [
            analyze_checkpoint(p, probe, options, cache_dir=cache_dir, **extra)
            for p in tqdm(paths, desc=desc, disable=not progress, unit="ckpt")
        ]


def _over_epochs(
    parts: list[xr.Dataset], epochs: list[int], probe: Probe, *, steps: list | None = None
) -> xr.Dataset:
    """The checkpoints' parts along ``epoch``, their NaN reasons kept, with the dynamics; with
    ``steps`` (each checkpoint's global optimizer step, None where unknown) a ``step``
    coordinate along ``epoch``."""
    from geomxai.study._probe import warn_probe, widths_of

    ds = xr.concat(
        parts,
        dim="epoch",
        coords="minimal",
        compat="override",
        join="outer",
        combine_attrs="drop_conflicts",
    )
    ds.attrs = {}
    ds = ds.assign_coords(epoch=epochs)
    if steps is not None:
        ds = ds.assign_coords(step=("epoch", _step_values(steps)))
        ds["step"].attrs["long_name"] = "global optimizer steps taken at the checkpoint"
    # Each checkpoint's NaN reasons are kept: concat drops the ones that differ between epochs.
    _merge_reasons(ds, [(f"epoch {e}", part) for e, part in zip(epochs, parts, strict=True)])
    ds = add_dynamics(ds).drop_vars("probe_features", errors="ignore")
    if "probe_size" in ds:
        n_probe = int(np.nanmin(np.asarray(ds["probe_size"].values, dtype=float)))
        warn_probe(n_probe, widths_of(ds), labelled=probe.labels is not None)
    return ds


def _step_values(steps: list) -> np.ndarray:
    """Steps as int64, or float64 with NaN where a run's steps per epoch are unknown."""
    if all(s is not None for s in steps):
        return np.asarray(steps, dtype=np.int64)
    return np.asarray([np.nan if s is None else s for s in steps], dtype=float)


def _with_training_metrics(ds: xr.Dataset, metrics: dict, epochs: list[int]) -> xr.Dataset:
    """The run's ``metrics.jsonl`` values over ``epoch``, NaN with a reason where missing."""
    for key in schema.names("training"):
        ds[key] = xr.DataArray([_scalar(metrics.get(e, {}).get(key)) for e in epochs], dims="epoch")
        missing = [e for e in epochs if not math.isfinite(_scalar(metrics.get(e, {}).get(key)))]
        # Sub-epoch checkpoints (float epochs) have no line: metrics.jsonl has one per epoch.
        sub_epoch = [e for e in missing if isinstance(e, float)]
        missing = [e for e in missing if not isinstance(e, float)]
        reasons = []
        if missing:
            initial = "epoch 0 is the initial model, before any training step; "
            reasons.append(
                (initial if missing == [0] else "")
                + f"metrics.jsonl has no finite {key} for epoch(s) {missing}"
            )
        if sub_epoch:
            reasons.append(
                f"the sub-epoch checkpoints (epochs {sub_epoch}) have no metrics line: "
                "metrics.jsonl has one per finished epoch"
            )
        if reasons:
            ds[key].attrs["nan_reason"] = "; ".join(reasons)
    if 0 in epochs and math.isnan(float(ds["test_acc"].sel(epoch=0))):
        reason = "epoch 0 is the initial model; its test accuracy is probe_acc"
        if any(isinstance(e, float) for e in epochs):
            reason += "; sub-epoch checkpoints have no metrics line (probe_acc measures them)"
        ds["test_acc"].attrs["nan_reason"] = reason
    return ds


def _run_attrs(run, options: AnalysisOptions, parts: list[xr.Dataset]) -> dict:
    config = run.config
    return {
        "config": json.dumps(config, sort_keys=True),
        "regime": config.get("regime", ""),
        "seed": int(config.get("seed", 0)),
        "dataset": config.get("dataset", ""),
        "analysis": options.key(),
        # The method each checkpoint used (a factory's instance by its own name).
        "saliency_method": parts[0].attrs.get("saliency_method")
        or json.loads(options.key())["saliency_method"],
        "run_dir": str(run.path),
        **{k: v for k, v in parts[0].attrs.items() if k in ("reduction", "entanglement_layer")},
    }


_NOT_IN_RESULTS = (
    "probe_saliency",
    "top_eigvecs",
    "deletion_auc_per_sample",
    "insertion_auc_per_sample",
)
"""Per-checkpoint variables a run keeps in memory that a study's results leave out: every probe
map, the eigenvectors (the dynamics were computed from them) and the per-sample areas."""


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


def analyze_runs(run_dirs, **kwargs) -> xr.Dataset:
    """Several runs merged along ``regime`` and ``seed`` (from each run's config).

    Takes :func:`analyze_run`'s keyword arguments. With ``workers > 1`` and no scheduler, one
    local dask cluster serves every run, so its start-up is paid once.
    """
    run_dirs = list(run_dirs)
    if kwargs.get("workers", 1) > 1 and not kwargs.get("scheduler") and len(run_dirs) > 1:
        from geomxai.study._parallel import local_cluster

        with local_cluster(kwargs["workers"]) as address:
            return analyze_runs(run_dirs, **{**kwargs, "scheduler": address})
    runs = [analyze_run(r, **kwargs) for r in run_dirs]
    if not runs:
        raise ValueError("analyze_runs needs at least one run directory")
    return combine_runs(runs)


def combine_runs(runs: list[xr.Dataset]) -> xr.Dataset:
    """Per-run results (of :func:`analyze_run` or :func:`~geomxai.study.analyze_checkpoints`)
    merged along ``regime`` and ``seed`` (their attrs), the layout a study's results and
    :func:`geomxai.report.build_report` have.

    Drops the per-run bulk variables (every probe map, the eigenvectors, per-sample areas) and
    keeps ``configs``, ``dataset``, ``analysis`` and ``saliency_method`` in attrs. Two runs with
    the same ``(regime, seed)`` raise a ``ValueError``.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("combine_runs needs at least one run's results")
    tagged = []
    for ds in runs:
        attrs = dict(ds.attrs)
        ds = ds.drop_vars(_NOT_IN_RESULTS, errors="ignore")
        # A run's global steps are its own (runs differ in steps per epoch): the step
        # coordinate gets the run's dims too, NaN at epochs a run does not have.
        step = [c for c in ("step",) if c in ds.coords and "regime" not in ds[c].dims]
        ds = ds.reset_coords(step).expand_dims(regime=[attrs["regime"]], seed=[attrs["seed"]])
        ds = ds.set_coords(step)
        ds.attrs = {}
        tagged.append((attrs, ds))
    keys = [(a["regime"], a["seed"]) for a, _ in tagged]
    if len(set(keys)) != len(keys):
        raise ValueError(f"two runs share a (regime, seed) pair: {keys}")
    # "drop_conflicts", not "drop": the latter also strips every variable's attrs (nan_reason).
    merged = xr.combine_by_coords(
        [ds for _, ds in tagged], join="outer", combine_attrs="drop_conflicts"
    )
    labels = [f"{a['regime']}-s{a['seed']}" for a, _ in tagged]
    _merge_reasons(merged, [(label, ds) for label, (_, ds) in zip(labels, tagged, strict=True)])
    if len({ds.sizes["epoch"] for _, ds in tagged}) > 1:
        merged.attrs["nan_reason_epochs"] = (
            "runs have different numbers of checkpoints; a run's values are NaN at epochs it "
            "does not have"
        )
    merged.attrs["configs"] = json.dumps(
        {f"{a['regime']}-s{a['seed']}": json.loads(a["config"]) for a, _ in tagged}, sort_keys=True
    )
    merged.attrs["dataset"] = tagged[0][0]["dataset"]
    merged.attrs["analysis"] = tagged[0][0]["analysis"]
    merged.attrs["saliency_method"] = tagged[0][0]["saliency_method"]
    for key in ("reduction", "entanglement_layer", "preprocessing", "checkpoint_index"):
        if key in tagged[0][0]:
            merged.attrs[key] = tagged[0][0][key]
    return merged
