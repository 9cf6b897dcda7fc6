"""Degeneracy warnings: a measurement that says when it cannot mean anything (issue 23).

A fill that leaves the class readable, a saliency map that is (nearly) constant, a model at
chance level and a layer with too few live units all give numbers that look like any other.
:func:`add_degeneracy_warnings` checks one checkpoint's results for each and records what it
finds beside the numbers: on each affected variable as ``attrs["warnings"]``, a JSON list of
strings (netCDF attrs hold strings), and the union on the Dataset's own ``attrs["warnings"]``.
The values are kept; the report shows the warnings next to them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import xarray as xr

from geomxai import schema

WARNINGS_ATTR = "warnings"
"""The attr that holds a variable's (and a Dataset's) warnings, a JSON list of strings."""

FLAT_GINI = 0.01
"""Gini coefficient at or below which a saliency map counts as (near-)constant: 0 is a flat
map, a map of independent uniform values has about 1/3, and gradient maps 0.4 to 0.9."""

FLAT_SHARE = 0.5
"""Share of (near-)constant probe maps from which the saliency metrics are flagged."""

_MASKING = (
    "morf_curve",
    "morf_auc",
    "morf_auc_paper",
    "lerf_curve",
    "lerf_auc",
    "lerf_auc_paper",
    "random_curve",
    "random_auc",
    "random_auc_paper",
    "fidelity_gap",
)
_NO_FILL = ("zero",)


def warnings_of(da) -> list[str]:
    """The warnings recorded on a variable or Dataset (an empty list when there are none)."""
    text = da.attrs.get(WARNINGS_ATTR)
    if not text:
        return []
    return list(json.loads(text)) if isinstance(text, str) else list(text)


def add_warning(da, message: str) -> None:
    """Append ``message`` to ``da.attrs["warnings"]`` (a JSON list), once."""
    current = warnings_of(da)
    if message not in current:
        da.attrs[WARNINGS_ATTR] = json.dumps([*current, message])


def chance_level(labels) -> float:
    """The accuracy of the best constant prediction: the share of the most frequent label."""
    y = np.asarray(labels).astype(np.int64).ravel()
    if y.size == 0:
        return math.nan
    return float(np.bincount(y - y.min()).max() / y.size)


def _margin(chance: float, n: int, floor: float) -> float:
    """How far above chance an accuracy must be to be more than sampling noise: three binomial
    standard errors on ``n`` samples, and at least ``floor``."""
    return max(floor, 3.0 * math.sqrt(chance * (1.0 - chance) / max(n, 1)))


def _flag(ds: xr.Dataset, names, message: str) -> None:
    for name in names:
        if name in ds.data_vars:
            add_warning(ds[name], message)


def _finite(ds: xr.Dataset, name: str) -> np.ndarray | None:
    if name not in ds.data_vars:
        return None
    values = np.asarray(ds[name].values, dtype=float)
    return values if np.isfinite(values).all() else None


def add_degeneracy_warnings(ds: xr.Dataset, *, labels, fill: str) -> xr.Dataset:
    """Record on one checkpoint's results (:func:`geomxai.study.measure`) what makes them
    degenerate; ``ds`` is changed in place and returned.

    - **A model at chance level**: ``probe_acc`` at most ``chance + max(0.02, 3 se)``, where
      chance is the share of the probe's most frequent label (what a constant prediction
      scores) and ``se`` its binomial standard error; flagged on ``probe_acc`` and every
      fidelity metric (:func:`geomxai.schema.fidelity_metrics`).
    - **A leaking fill**: accuracy with every position masked (the masking curves at fraction 1)
      above ``chance + max(0.1, 3 se)``: the fill itself carries the class (the ``uniform`` fill
      keeps each image's range, which is the class where intensity carries it). Flagged on the
      masking variables, naming ``"zero"``, with which every fully masked input is the same, so
      its accuracy there cannot exceed chance.
    - **(Near-)constant maps**: at least :data:`FLAT_SHARE` of the probe maps have a Gini
      coefficient at or below :data:`FLAT_GINI`, or the MoRF and LeRF curves agree at every
      fraction within one probe sample (the order of the map makes no difference); flagged on
      the saliency and masking variables.
    - **Too few live units**: a layer with fewer than :data:`geomxai.schema.MIN_LIVE_UNITS`
      live units; flagged on that layer's geometry scalars.

    Parameters
    ----------
    ds : xr.Dataset
        One checkpoint's results, before ``epoch`` is added.
    labels : array (n,) or None
        The probe's labels; None (an unlabelled probe) checks the live units only.
    fill : str
        The masking fill that was used.
    """
    found: list[str] = []

    def flag(names, message):
        _flag(ds, names, message)
        found.append(message)

    _live_units(ds, flag)
    if labels is not None:
        n = len(labels)
        chance = chance_level(labels)
        _at_chance(ds, n, chance, flag)
        _leaking_fill(ds, n, chance, fill, flag)
        _flat_maps(ds, n, flag)
    if found:
        for message in found:
            add_warning(ds, message)
    return ds


def _at_chance(ds, n, chance, flag) -> None:
    acc = _finite(ds, "probe_acc")
    if acc is None or float(acc) > chance + _margin(chance, n, 0.02):
        return
    flag(
        ("probe_acc", *schema.fidelity_metrics()),
        f"the model is at chance level: probe accuracy {float(acc):.3f} against {chance:.3f} "
        "for always predicting the most frequent class; its saliency and fidelity describe an "
        "untrained or collapsed model",
    )


def _leaking_fill(ds, n, chance, fill, flag) -> None:
    curve = _finite(ds, "morf_curve")
    if curve is None or "fraction" not in ds["morf_curve"].coords:
        return
    fractions = np.asarray(ds["morf_curve"]["fraction"].values, dtype=float)
    if not np.isclose(fractions[-1], 1.0):
        return
    full = float(curve[-1])
    if full <= chance + _margin(chance, n, 0.1):
        return
    other = "" if fill in _NO_FILL else "; use fill='zero' (every fully masked input is then the "
    other += "" if fill in _NO_FILL else "same, so its accuracy there is at most chance)"
    flag(
        _MASKING,
        f"the fill {fill!r} leaks the class: accuracy with every position masked is {full:.3f}, "
        f"well above chance ({chance:.3f}), so the masking curves measure what the fill keeps, "
        f"not what the map ranks{other}",
    )


def _flat_maps(ds, n, flag) -> None:
    maps = ds["probe_saliency"] if "probe_saliency" in ds.data_vars else None
    if maps is not None and maps.sizes.get("sample", 0) > 0:
        from geomxai.attribution import gini

        flat = np.asarray(maps.values, dtype=np.float64).reshape(maps.sizes["sample"], -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.asarray(gini(flat).values, dtype=float)
        # An all-zero map has no Gini (NaN): it is as constant as a map can be.
        share = float(np.mean(~(g > FLAT_GINI)))
        if share >= FLAT_SHARE:
            flag(
                ("gini", "topq_contrast", *_MASKING, "deletion_auc", "insertion_auc"),
                f"{share:.0%} of the probe's saliency maps are constant or nearly so (Gini at "
                f"most {FLAT_GINI:g}): their ranking of positions is arbitrary (a method whose "
                "map is coarser than the input, e.g. LayerGradCam at a 1x1 layer?)",
            )
    morf, lerf = _finite(ds, "morf_curve"), _finite(ds, "lerf_curve")
    if morf is not None and lerf is not None and morf.size > 2:
        if float(np.max(np.abs(morf - lerf))) <= 1.0 / max(n, 1) + 1e-12:
            flag(
                ("gini", *_MASKING),
                "the MoRF and LeRF curves agree at every fraction: removing the most or the "
                "least salient positions first makes no difference (a constant map, or a model "
                "that the fill does not change)",
            )


def _live_units(ds, flag) -> None:
    if "n_live_units" not in ds.data_vars or "layer" not in ds["n_live_units"].dims:
        return
    live = np.asarray(ds["n_live_units"].values, dtype=float)
    layers = [str(v) for v in ds["layer"].values]
    scalars = [
        name
        for name in schema.names("geometry")
        if schema.variable(name).dims == ("layer",) and name not in ("n_live_units", "n_units")
    ]
    for layer, k in zip(layers, live, strict=True):
        if np.isfinite(k) and k < schema.MIN_LIVE_UNITS:
            flag(
                scalars,
                f"layer {layer!r} has {int(k)} live unit(s) on the probe, fewer than "
                f"{schema.MIN_LIVE_UNITS} (geomxai.schema.MIN_LIVE_UNITS): its geometry is "
                "bounded by that count and says little about how the units share variance",
            )
