"""Several saliency methods and fills in one analysis: their blocks measured per (method,
fill) slice, checked per slice, and stacked along ``saliency_method`` and ``fill``, each
slice's messages labelled."""

from __future__ import annotations

import json

import torch
import xarray as xr

from geomxai import schema
from geomxai.study._nan import _unmeasured
from geomxai.study._options import AnalysisOptions
from geomxai.study._probe import Probe
from geomxai.study._saliency_blocks import (
    _examples_block,
    _faithfulness_block,
    _localisation_block,
    _masking_block,
    _saliency_block,
)
from geomxai.study._saliency_method import _saliency_arguments

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
