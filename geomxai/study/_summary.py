"""One run's small result, and the rows a study's statistics read from it.

A study of many runs keeps, per run, a small result instead of its checkpoints: the scalars of
every analysed checkpoint, the arrays the report draws (the final checkpoint's only, where the
design says so), and the reparametrisation control of the final checkpoint. From it,
:func:`run_record` takes the run's row of the runs table (its final scalars) and
:func:`epoch_record` its over-checkpoint scalars; both are the one place that knows the layout.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from geomxai.rundir import read_run

__all__ = ["control_record", "current_layout", "epoch_record", "run_record", "run_result"]

CONTROL_PREFIX = "control_"
"""Prefix of the control's variables and dims inside a per-run result."""

_DROP = ("probe_saliency", "top_eigvecs", "top_eigvals", "probe_images")
"""Arrays a per-run result never keeps: the whole probe's maps and the eigenvectors are only
needed for the dynamics, computed before they are dropped."""

_KEPT_WHOLE = ("top_eigvals", "probe_images")
"""What a per-run result of a design that keeps every checkpoint (``keep = "all"``) keeps of
:data:`_DROP`: small, and drawn by the report."""

_FINAL_ONLY = (
    "saliency_maps",
    "corr_spectrum",
    "morf_curve",
    "lerf_curve",
    "random_curve",
    "deletion_curve",
    "insertion_curve",
    "deletion_auc_per_sample",
    "insertion_auc_per_sample",
)
"""Per-checkpoint arrays kept at the final checkpoint only when a design keeps ``"final"``."""


def run_result(
    run_dir,
    *,
    probe,
    options,
    epochs: Sequence[int] | None = None,
    steps: Sequence[int] | None = None,
    keep: str = "all",
    control: bool = False,
    progress: bool = False,
) -> xr.Dataset:
    """Analyse one run into its small per-run result.

    Parameters
    ----------
    run_dir : path-like
        A finished run directory.
    probe : geomxai.study.Probe
        The fixed probe every run of a study is measured on.
    options : geomxai.study.AnalysisOptions
        What to measure.
    epochs : sequence of int, optional
        The epoch checkpoints analysed (default every checkpoint).
    steps : sequence of int, optional
        Sub-epoch checkpoints analysed too, by global optimizer step.
    keep : {"all", "final"}
        Keep the per-checkpoint arrays of every analysed checkpoint, or the final one's only.
    control : bool
        Add the reparametrisation control of the final checkpoint, its variables and dims
        prefixed ``control_``.
    progress : bool
        Show a progress bar over checkpoints.

    Returns
    -------
    xr.Dataset
        Over ``epoch``; attrs ``final_epoch`` and, with ``control``, ``control`` (JSON).
    """
    from geomxai.study._runs import analyze_run

    run = read_run(run_dir)
    ds = analyze_run(
        run_dir, options=options, probe=probe, progress=progress, epochs=epochs, steps=steps
    )
    # A small study keeps every checkpoint's spectrum of the tracked axes and the example
    # images its report draws the maps over.
    drop = _DROP if keep == "final" else tuple(v for v in _DROP if v not in _KEPT_WHOLE)
    ds = ds.drop_vars([v for v in drop if v in ds.variables])
    if keep == "all" and "probe_images" not in ds and "example" in ds.dims:
        n = ds.sizes["example"]
        ds["probe_images"] = (("example", "channel", "height", "width"), probe.images[:n].numpy())
    if keep == "final":
        for name in _FINAL_ONLY:
            if name in ds and "epoch" in ds[name].dims:
                ds[name] = ds[name].isel(epoch=-1, drop=True)
    final = max(run.checkpoints)
    ds.attrs["final_epoch"] = int(final)
    if control:
        _add_control(ds, run.checkpoints[final], probe, options)
    return ds


def _add_control(ds: xr.Dataset, checkpoint: Path, probe, options) -> None:
    from geomxai.study._control import reparametrization_control
    from geomxai.train import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    method = options.saliency_method if isinstance(options.saliency_method, str) else "abs_gradient"
    ctrl = reparametrization_control(model, probe.images, probe.labels, saliency_method=method)
    # Prefixed, dims included, so the control's `model` and `metric` dims sit beside the
    # analysis's own without clashing.
    ctrl = ctrl.rename({d: f"{CONTROL_PREFIX}{d}" for d in ctrl.dims})
    ctrl = ctrl.rename({v: f"{CONTROL_PREFIX}{v}" for v in ctrl.data_vars})
    for name, var in ctrl.data_vars.items():
        ds[name] = var
    ds.attrs["control"] = json.dumps({k: str(v) for k, v in ctrl.attrs.items()})


def current_layout(ds: xr.Dataset) -> xr.Dataset:
    """A per-run result in today's variable names.

    Results analysed before live-unit accounting (no ``n_live_units``) measured gradient
    entanglement over every unit, dead ones included: that value is today's
    ``entanglement_all_units``, not the live-unit ``entanglement``, so it is renamed rather
    than read as the other; their dead-unit count ``n_dead`` becomes ``n_dead_units`` with
    ``n_live_units`` beside it.
    """
    if "n_live_units" in ds:
        return ds
    if "entanglement" in ds and "entanglement_all_units" not in ds:
        ds = ds.rename({"entanglement": "entanglement_all_units"})
        metric = f"{CONTROL_PREFIX}metric"
        if metric in ds.coords:
            names = [str(m) for m in ds[metric].values]
            ds = ds.assign_coords(
                {metric: [("entanglement_all_units" if m == "entanglement" else m) for m in names]}
            )
    if "n_dead" in ds and "n_dead_units" not in ds:
        # The count of dead units under its old name; NaN where fewer than 2 units lived.
        ds = ds.rename({"n_dead": "n_dead_units"})
        if "unit" in ds.dims:
            ds["n_live_units"] = ds.sizes["unit"] - ds["n_dead_units"]
    return ds


def _scalar(da: xr.DataArray, *, final: bool) -> xr.DataArray | None:
    if "layer" in da.dims:
        da = da.isel(layer=0, drop=True)
    if final and "epoch" in da.dims:
        da = da.isel(epoch=-1, drop=True)
    return da


def _numeric(da: xr.DataArray) -> bool:
    return np.issubdtype(da.dtype, np.number) and da.dtype != bool


def variant_names(ds: xr.Dataset, name: str) -> list[str]:
    """The runs-table names of a saliency metric measured with several methods or fills: one
    per method (and fill) where ``name`` has a ``saliency_method`` or ``fill`` dim
    (:func:`geomxai.schema.variant_name`: ``morf_auc__integrated_gradients__road``); ``[]``
    where it has neither."""
    return list(_variants(ds, name))


def _variants(ds: xr.Dataset, name: str) -> dict[str, xr.DataArray]:
    """``name``'s variants by runs-table name, each without the variant dims."""
    from geomxai import schema

    if name not in ds.data_vars:
        return {}
    da = ds[name]
    dims = [d for d in schema.VARIANT_DIMS if d in da.dims]
    if not dims:
        return {}
    # Only fills vary: every variant has the one method, the run's own.
    single = ds.attrs.get("saliency_method") or json.loads(ds.attrs.get("analysis") or "{}").get(
        "saliency_method", "saliency"
    )
    methods = [str(m) for m in da["saliency_method"].values] if "saliency_method" in dims else []
    fills = [str(f) for f in da["fill"].values] if "fill" in dims else [None]
    out = {}
    for i, method in enumerate(methods or [single]):
        for j, fill in enumerate(fills):
            sel = {"saliency_method": i} if methods else {}
            sel.update({"fill": j} if fill is not None else {})
            out[schema.variant_name(name, method, fill)] = da.isel(sel, drop=True)
    return out


def split_variants(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with each variable that has a ``saliency_method`` or ``fill`` dim replaced by one
    variable per method (and fill), named by :func:`variant_names`, its other dims kept (the
    variant dims' coordinates are dropped where nothing else uses them)."""
    variants = {name: split for name in list(ds.data_vars) if (split := _variants(ds, str(name)))}
    if not variants:
        return ds
    out = ds.drop_vars(list(variants))
    for parts in variants.values():
        for name, da in parts.items():
            out[name] = da
    from geomxai import schema

    unused = [d for d in schema.VARIANT_DIMS if d in out.coords and d not in out.dims]
    return out.drop_vars(unused)


def expand_variants(ds: xr.Dataset, names) -> list[str]:
    """``names`` with each metric that ``ds`` (after :func:`split_variants`) holds only as
    variants replaced by those variants, in ``ds``'s order; a name ``ds`` lacks in both forms
    is kept (for the caller's error)."""
    from geomxai import schema

    out = []
    for name in names:
        out += schema.with_variants([name], ds.data_vars) or [name]
    return list(dict.fromkeys(out))


def _lookup(ds: xr.Dataset, name: str) -> xr.DataArray | None:
    """A variable of ``ds``, or the variant a name of :func:`variant_names` selects; None."""
    from geomxai import schema

    if name in ds.data_vars:
        return ds[name]
    base, method, _ = schema.split_variant(name)
    return None if method is None else _variants(ds, base).get(name)


def run_record(ds: xr.Dataset, names: Sequence[str] | None = None) -> dict[str, float]:
    """The run's row of a runs table: each scalar metric at the final checkpoint.

    A metric is a numeric variable whose only dims are ``epoch`` and ``layer`` (the first layer,
    the model's feature layer, is the one a study compares); a saliency metric measured with
    several methods or fills gives one metric per method (and fill), named by
    :func:`variant_names`. A name in ``names`` that the run lacks is NaN, so runs analysed
    before a metric existed keep their row.
    """
    ds = current_layout(ds)
    out: dict[str, float] = {}
    if names is not None:
        pick = list(names)
    else:
        pick = [v for n in ds.data_vars for v in (variant_names(ds, str(n)) or [str(n)])]
    for name in pick:
        da = _lookup(ds, name)
        if da is None:
            out[name] = math.nan
            continue
        if not _numeric(da) or not set(da.dims) <= {"epoch", "layer"}:
            if names is not None:
                out[name] = math.nan
            continue
        da = _scalar(da, final=True)
        out[name] = float(da) if da.ndim == 0 else math.nan
    return out


def epoch_record(ds: xr.Dataset, names: Sequence[str]) -> xr.Dataset:
    """Each of ``names`` over the run's analysed checkpoints (dim ``epoch``; first layer)."""
    ds = current_layout(ds)
    keep = {}
    for name in names:
        da = _lookup(ds, name)
        if da is not None and "epoch" in da.dims and _numeric(da):
            da = _scalar(da, final=False)
            if da.dims == ("epoch",):
                keep[name] = da
    return xr.Dataset(keep)


def control_record(ds: xr.Dataset) -> Mapping[str, object] | None:
    """The control of one per-run result: per metric its relative change and whether it is
    invariant, and the largest relative change of the logits and the saliency maps (None where
    the run has no control)."""
    p = CONTROL_PREFIX
    ds = current_layout(ds)
    if f"{p}relative_change" not in ds:
        return None
    return {
        "metric": [str(m) for m in ds[f"{p}metric"].values],
        "relative_change": ds[f"{p}relative_change"].values.astype(float),
        "invariant": ds[f"{p}invariant"].values.astype(bool),
        "logit_max_rel_diff": float(ds[f"{p}logit_max_rel_diff"]),
        "saliency_max_rel_diff": float(ds[f"{p}saliency_max_rel_diff"]),
    }
