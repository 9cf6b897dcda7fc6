"""How far each checkpoint's representation moved: linear CKA and Procrustes distance of its probe
features to the previous checkpoint's and to the final one's, per layer."""

from __future__ import annotations

import math
import warnings

import numpy as np
import xarray as xr

FIRST_EPOCH = "no previous checkpoint at the first epoch"

SIMILARITY_VARIABLES = ("cka_previous", "cka_final", "procrustes_previous", "procrustes_final")

CHECKPOINT_MATRIX = "cka_checkpoints"
"""Linear CKA of every pair of checkpoints, dims ``(epoch, layer, epoch_b)``."""


def _layer_features(features: xr.DataArray, layer: int) -> list[np.ndarray]:
    """One layer's probe features (sample, unit) at every epoch, its NaN padding cut off."""
    values = features.isel(layer=layer).transpose("epoch", "sample", "unit").values
    units = np.isfinite(values).all(axis=(0, 1))
    return [values[t][:, units].astype(np.float64) for t in range(values.shape[0])]


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[float, float, str | None]:
    """``(cka, procrustes, reason)``: NaN and the reason where the pair has no similarity."""
    from geomxai.geometry import linear_cka, procrustes_distance

    if a.shape[1] == 0 or b.shape[1] == 0:
        return math.nan, math.nan, "the layer has no units with finite features"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            cka = linear_cka(a, b)
        procrustes = procrustes_distance(a, b)
    except ValueError as err:
        return math.nan, math.nan, str(err)
    reason = str(caught[0].message) if caught and math.isnan(cka) else None
    return cka, procrustes, reason


def add_similarity(ds: xr.Dataset) -> xr.Dataset:
    """``cka_*`` and ``procrustes_*`` over ``(epoch, layer)`` from ``ds["probe_features"]``.

    ``*_previous`` compares epoch ``t`` with the epoch before it (NaN at the first);
    ``*_final`` compares it with the last epoch of ``ds`` (CKA 1 and distance 0 there). Linear
    CKA is :func:`geomxai.geometry.linear_cka` (unbiased HSIC), the distance
    :func:`geomxai.geometry.procrustes_distance` (angular). A pair that has none (a layer whose
    features are constant at one of the two checkpoints) is NaN with the reason, prefixed by its
    epoch and layer. ``ds`` is changed in place and returned; without ``probe_features`` it is
    returned as it is.
    """
    if "probe_features" not in ds:
        return ds
    features = ds["probe_features"]
    n_epochs, n_layers = ds.sizes["epoch"], ds.sizes["layer"]
    # int epochs, or floats where sub-epoch checkpoints are analysed (int() would merge them)
    epochs = [e.item() for e in np.asarray(ds["epoch"].values)]
    layers = [str(name) for name in ds["layer"].values]
    out = {name: np.full((n_epochs, n_layers), np.nan) for name in SIMILARITY_VARIABLES}
    reasons: dict[str, list[str]] = {"previous": [], "final": []}
    for j in range(n_layers):
        per_epoch = _layer_features(features, j)
        last = per_epoch[-1]
        for t, current in enumerate(per_epoch):
            where = f"epoch {epochs[t]}, layer {layers[j]!r}"
            cka, dist, reason = _pair(current, last)
            out["cka_final"][t, j], out["procrustes_final"][t, j] = cka, dist
            if reason:
                reasons["final"].append(f"{where}: {reason}")
            if t == 0:
                continue
            cka, dist, reason = _pair(per_epoch[t - 1], current)
            out["cka_previous"][t, j], out["procrustes_previous"][t, j] = cka, dist
            if reason:
                reasons["previous"].append(f"{where}: {reason}")
    ds = _add_checkpoint_matrix(ds, features, epochs, layers)
    for name, values in out.items():
        kind = "previous" if name.endswith("_previous") else "final"
        why = ([FIRST_EPOCH] if kind == "previous" else []) + reasons[kind]
        da = xr.DataArray(values, dims=("epoch", "layer"))
        if why and np.isnan(values).any():
            da.attrs["nan_reason"] = "; ".join(why)
        ds[name] = da
    return ds


def _add_checkpoint_matrix(
    ds: xr.Dataset, features: xr.DataArray, epochs: list[int], layers: list[str]
) -> xr.Dataset:
    """``cka_checkpoints`` (epoch, layer, epoch_b): :func:`geomxai.geometry.cka_matrix` of each
    layer's probe features over the checkpoints (linear, unbiased), NaN where undefined."""
    from geomxai.geometry import cka_matrix

    values = np.full((len(epochs), len(layers), len(epochs)), np.nan)
    reasons = []
    for j, layer in enumerate(layers):
        per_epoch = _layer_features(features, j)
        if per_epoch[0].shape[1] == 0:
            reasons.append(f"layer {layer!r}: the layer has no units with finite features")
            continue
        try:
            matrix = cka_matrix(dict(zip(epochs, per_epoch, strict=True)), dim="epoch")
        except ValueError as err:  # too few samples
            reasons.append(f"layer {layer!r}: {err}")
            continue
        values[:, j, :] = matrix.values
        if "nan_reason" in matrix.attrs:
            reasons.append(f"layer {layer!r}: {matrix.attrs['nan_reason']}")
    da = xr.DataArray(values, dims=("epoch", "layer", "epoch_b"), coords={"epoch_b": epochs})
    if reasons and np.isnan(values).any():
        da.attrs["nan_reason"] = "; ".join(reasons)
    ds[CHECKPOINT_MATRIX] = da
    return ds
