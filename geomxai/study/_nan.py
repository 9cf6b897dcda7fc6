"""A NaN says why: a measured value as a float, the reason written on the variable
(``attrs["nan_reason"]``), and the reasons of merged parts kept.

A NaN's reason is written in one way only: on the variable, where it travels with the values
through every merge (:func:`_merge_reasons` keeps each part's where they differ)."""

from __future__ import annotations

import json
import math

import numpy as np
import xarray as xr

from geomxai import schema
from geomxai.study._options import AnalysisOptions


def _scalar(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def _with_reason(da: xr.DataArray, reason: str | None) -> xr.DataArray:
    """``da`` with ``attrs["nan_reason"] = reason`` when it holds a NaN and a reason is known."""
    if reason and bool(np.isnan(np.asarray(da.values, dtype=float)).any()):
        da.attrs["nan_reason"] = reason
    return da


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
