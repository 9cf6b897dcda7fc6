"""The entanglement block of :func:`~geomxai.study.measure`: gradient entanglement and the
function-invariant geometry at one layer, from one pass of the layer's gradients."""

from __future__ import annotations

import math

import xarray as xr

from geomxai import schema
from geomxai.study._nan import _scalar, _with_reason
from geomxai.study._options import AnalysisOptions
from geomxai.study._probe import Probe

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
        reasons = dict.fromkeys(
            names,
            f"the model has no {kind} named {layer!r}; name the layer to measure it at with "
            "entanglement_layer= (--entanglement-layer; geomxai layers MODEL lists them)",
        )
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
