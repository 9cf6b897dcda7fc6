"""Dynamics over one run's checkpoints: axis swaps, saliency stability, the similarity of
consecutive and final checkpoints, and the whole-run summaries of them."""

from __future__ import annotations

import numpy as np
import xarray as xr

from geomxai import schema
from geomxai.study._nan import _with_reason

_FIRST_EPOCH = "no previous checkpoint at the first epoch"


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
