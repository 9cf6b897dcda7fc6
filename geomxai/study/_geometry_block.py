"""The geometry block of :func:`~geomxai.study.measure`: each layer's effective rank,
participation ratio, live units, correlation summaries and spectrum, top eigenpairs and probe
features."""

from __future__ import annotations

import json
import math
import warnings
from typing import NamedTuple

import numpy as np
import torch
import xarray as xr

from geomxai import schema
from geomxai.study._nan import _scalar, _with_reason
from geomxai.study._options import AnalysisOptions
from geomxai.study._probe import Probe


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
