"""Paired contrasts between cells and the 2x2 factorial (masking x whitening), per seed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import xarray as xr

from geomxai._hints import did_you_mean
from geomxai.stats._runs import (
    BASELINES,
    DOSE_REGIME,
    EFFECT_WEIGHTS,
    EFFECTS,
    FACTORIAL_CELLS,
    _cell_label,
    _check_confidence,
    _complete_cells,
    _metric_names,
    _Runs,
)
from geomxai.stats._tinterval import (
    _T_KEYS,
    _gather,
    _grid,
    _label_t,
    _scale,
    _t_columns,
    _t_values,
    _variables,
)

# -- per-seed contrasts ---------------------------------------------------------------------------


def _contrast_name(contrast) -> str:
    if isinstance(contrast, str):
        if contrast in EFFECTS:
            return contrast
        parts = contrast.split("-")
        if len(parts) == 2 and all(parts):
            return contrast
    elif (
        isinstance(contrast, tuple)
        and len(contrast) == 2
        and all(isinstance(c, str) and c for c in contrast)
    ):
        return f"{contrast[0]}-{contrast[1]}"
    raise ValueError(
        f"a contrast must be one of {', '.join(EFFECTS)}, a pair (a, b) of regimes or 'a-b'; "
        f"got {contrast!r}"
    )


def _regimes_of(contrast: str) -> list[str]:
    """The regimes a contrast name compares."""
    return list(FACTORIAL_CELLS) if contrast in EFFECTS else contrast.split("-")


def _per_seed(
    r: _Runs, values: np.ndarray, contrast: str, decor_weight
) -> tuple[np.ndarray, float, str, str]:
    """Per-seed values of ``contrast`` over the seeds that have every cell it needs.

    Returns (per-seed values, magnitude of the cell values used, cells description,
    dropped-seed note).
    """
    if contrast in EFFECTS:
        regimes = list(FACTORIAL_CELLS)
        weights = np.asarray(EFFECT_WEIGHTS[contrast])
    else:
        a, b = contrast.split("-")
        if a == b:
            raise ValueError(f"a contrast must compare two different regimes; got {contrast!r}")
        regimes, weights = [a, b], np.array([1.0, -1.0])
    cells = [(reg, r.weight_of(reg, decor_weight)) for reg in regimes]
    t, labels, dropped = _complete_cells(r, values, cells)
    return t @ weights, _scale(t), ", ".join(labels), dropped


# -- factorial ------------------------------------------------------------------------------------


def _factorial_metric(
    r: _Runs, name: str, cells: list[tuple[str, float | None]], confidence: float
) -> tuple[dict[str, np.ndarray | int], dict[str, str]]:
    """The effects (arrays over effect) and cell means (over cell) of one metric, and its attrs."""
    t, labels, dropped = _complete_cells(r, r.values(name), cells)
    attrs = {f"dropped_seeds_{name}": dropped} if dropped else {}
    weights = np.array([EFFECT_WEIGHTS[e] for e in EFFECTS])  # (effect, cell)
    effects, why_effect = _t_columns(t @ weights.T, confidence, scale=_scale(t))
    cell, why_cell = _t_columns(t, confidence)
    for effect, why in zip(EFFECTS, why_effect, strict=True):
        if why:
            attrs[f"nan_reason_{name}_{effect}"] = (
                f"{why} (seeds with finite {name} in all of {', '.join(labels)})"
            )
    for (reg, _), why in zip(cells, why_cell, strict=True):
        if why:
            attrs[f"nan_reason_{name}_{reg}"] = why
    n = t.shape[0]
    cell_values = {"cell_mean": cell["estimate"], "cell_ci_low": cell["ci_low"]}
    cell_values |= {"cell_ci_high": cell["ci_high"], "cell_n": n}
    return effects | {"n_seeds": n} | cell_values, attrs


def factorial_effects(
    runs: xr.Dataset,
    metrics: str | Iterable[str] | None = None,
    *,
    confidence: float = 0.95,
    decor_weight: float | None = None,
) -> xr.Dataset:
    """Main effects of masking and whitening and their interaction, paired by seed.

    The four regimes are a 2x2 design (:data:`FACTORIAL_CELLS`): masking off = ``regular``,
    ``dbn``, on = ``sgt``, ``saliencydecor``; whitening off = ``regular``, ``sgt``, on = ``dbn``,
    ``saliencydecor``. For each seed that has all four cells (with a finite value of the metric):

    * masking = mean over whitening levels of (on - off) = ((sgt - regular) + (sd - dbn)) / 2
    * whitening = ((dbn - regular) + (sd - sgt)) / 2
    * interaction = (sd - dbn) - (sgt - regular): how much more masking helps with whitening
      than without (positive = the combination gains more than masking alone).

    Each effect is the mean of its per-seed values with a t-interval over seeds (``n - 1`` df)
    and the two-sided one-sample t-test p-value against 0 (a paired t-test). Seeds lacking a cell
    are dropped per metric and named in ``attrs``.

    Parameters
    ----------
    runs : xr.Dataset
        Runs in this module's format (:func:`runs_dataset`).
    metrics : str or list of str, optional
        Per-run variables to analyse. Default: every numeric per-run variable.
    confidence : float
        Coverage of the intervals, in (0, 1).
    decor_weight : float, optional
        The lambda whose ``saliencydecor`` runs form that cell. Default: the most common lambda
        among the ``saliencydecor`` runs; on a tie, the value the other regimes carry (the
        profile's); a tie without it raises. Ignored where runs have no ``decor_weight`` coord.

    Returns
    -------
    xr.Dataset
        Dims ``(metric, effect)`` with ``effect`` = masking, whitening, interaction: ``estimate``,
        ``ci_low``, ``ci_high``, ``p_value``, ``n_seeds`` (int). Dims ``(metric, regime)``:
        ``cell_mean``, ``cell_ci_low``, ``cell_ci_high``, ``cell_n`` — cell means over the same
        seeds, so each effect is the same combination of cell means (:data:`EFFECT_WEIGHTS`).
        NaN where fewer than 2 seeds have all four cells, or (interval and p-value only) where the
        per-seed values have no spread; ``attrs["nan_reason_<metric>_<effect>"]`` says why and
        ``attrs["dropped_seeds_<metric>"]`` names the seeds left out.

    Examples
    --------
    >>> cells = {"regular": [0.80, 0.82], "sgt": [0.78, 0.79],
    ...          "dbn": [0.70, 0.74], "saliencydecor": [0.83, 0.85]}
    >>> from geomxai.stats import runs_dataset
    >>> runs = runs_dataset([{"regime": k, "seed": s, "acc": v[s]}
    ...                      for k, v in cells.items() for s in (0, 1)])
    >>> fx = factorial_effects(runs, "acc")
    >>> round(float(fx["estimate"].sel(metric="acc", effect="interaction")), 4)
    0.145
    >>> int(fx["n_seeds"].sel(metric="acc", effect="masking"))
    2
    """
    r = _Runs(runs)
    names = _metric_names(runs, metrics)
    confidence = _check_confidence(confidence)
    weight = r.weight_of(DOSE_REGIME, decor_weight)
    regimes = list(FACTORIAL_CELLS)
    cells = [(reg, weight if reg == DOSE_REGIME else None) for reg in regimes]
    effects = _grid((len(names), len(EFFECTS)), (*_T_KEYS, "n_seeds"), ints=("n_seeds",))
    cell_vars = ("cell_mean", "cell_ci_low", "cell_ci_high", "cell_n")
    cell = _grid((len(names), len(regimes)), cell_vars, ints=("cell_n",))
    blocks = ((i, _factorial_metric(r, name, cells, confidence)) for i, name in enumerate(names))
    attrs = _gather(effects | cell, blocks)
    out = xr.Dataset(
        _variables(effects, ("metric", "effect")) | _variables(cell, ("metric", "regime")),
        coords={"metric": names, "effect": list(EFFECTS), "regime": regimes},
    )
    _label_t(
        out,
        confidence,
        "mean over seeds of the per-seed effect",
        "two-sided paired t-test (per-seed effect against 0)",
    )
    out["cell_mean"].attrs["long_name"] = "cell mean over the seeds used for the effects"
    labels = [_cell_label(*c) for c in cells]
    out.attrs.update(
        {
            "confidence": confidence,
            "cells": "; ".join(
                f"{lab}: masking={FACTORIAL_CELLS[reg][0]}, whitening={FACTORIAL_CELLS[reg][1]}"
                for reg, lab in zip(regimes, labels, strict=True)
            ),
            "decor_weight": np.nan if weight is None else weight,
            "interaction": "(saliencydecor - dbn) - (sgt - regular), per seed",
            "pairing": "per seed; seeds lacking a cell are dropped per metric",
            **attrs,
        }
    )
    return out


def _check_pair_regimes(a, against, known: set[str]) -> list[str]:
    """``against`` as a list, once ``a`` and it are checked to be regimes of the runs."""
    if not isinstance(a, str) or not a:
        raise ValueError(f"a must be a regime name; got {a!r}")
    against = [against] if isinstance(against, str) else list(against)
    if not against or not all(isinstance(b, str) and b for b in against):
        raise ValueError(f"against must be a non-empty list of regime names; got {against!r}")
    if a in against:
        raise ValueError(f"against must not contain a={a!r} itself; got {against!r}")
    for reg in [a, *against]:
        if reg not in known:
            raise ValueError(
                f"regimes must be among those of the runs ({', '.join(sorted(known))}); got "
                f"{reg!r}" + did_you_mean(reg, known)
            )
    return against


def _paired_difference(
    r: _Runs, values: np.ndarray, a: str, b: str, decor_weight, confidence: float, name: str
) -> tuple[dict[str, float], dict[str, str]]:
    """The per-seed difference ``a - b`` of one metric, summarised over seeds, and its attrs."""
    cells = [(reg, r.weight_of(reg, decor_weight)) for reg in (a, b)]
    t, labels, dropped = _complete_cells(r, values, cells)
    attrs = {f"dropped_seeds_{name}_{b}": dropped} if dropped else {}
    diff = t[:, 0] - t[:, 1]
    out, why = _t_values(diff, confidence, scale=_scale(t))
    out["n_seeds"] = diff.size
    if why:
        attrs[f"nan_reason_{name}_{b}"] = f"{why} (seeds with {' and '.join(labels)})"
    if diff.size >= 2:
        out["sd_difference"] = diff.std(ddof=1)
        out["mean_a"], out["mean_baseline"] = t.mean(axis=0)
    return out, attrs


def paired_contrasts(
    runs: xr.Dataset,
    metrics: str | Iterable[str] | None = None,
    a: str = DOSE_REGIME,
    against: Sequence[str] = BASELINES,
    *,
    confidence: float = 0.95,
    decor_weight: float | None = None,
) -> xr.Dataset:
    """Paired difference ``a - baseline`` per seed, for each baseline, with t-intervals.

    Parameters
    ----------
    runs : xr.Dataset
        Runs in this module's format (:func:`runs_dataset`).
    metrics : str or list of str, optional
        Per-run variables. Default: every numeric per-run variable.
    a : str
        The regime compared.
    against : sequence of str
        The baselines.
    confidence : float
        Coverage of the intervals, in (0, 1).
    decor_weight : float, optional
        Lambda of the ``saliencydecor`` runs used where ``saliencydecor`` is ``a`` or a baseline;
        default as in :func:`factorial_effects`.

    Returns
    -------
    xr.Dataset
        Dims ``(metric, baseline)``: ``estimate`` (mean over seeds of ``a - baseline``),
        ``ci_low``, ``ci_high`` (t-interval over seeds), ``p_value`` (paired t-test), ``n_seeds``,
        ``sd_difference`` (SD of the per-seed differences), ``mean_a`` and ``mean_baseline`` (over
        the same seeds). NaN with ``attrs["nan_reason_<metric>_<baseline>"]`` where fewer than 2
        seeds have both; ``attrs["dropped_seeds_<metric>_<baseline>"]`` names seeds left out.

    Examples
    --------
    >>> from geomxai.stats import runs_dataset
    >>> runs = runs_dataset([{"regime": k, "seed": s, "acc": v + 0.01 * s}
    ...     for k, v in {"regular": 0.8, "saliencydecor": 0.85}.items() for s in range(3)])
    >>> pc = paired_contrasts(runs, "acc", against=["regular"])
    >>> round(float(pc["estimate"].sel(metric="acc", baseline="regular")), 6)
    0.05
    """
    r = _Runs(runs)
    names = _metric_names(runs, metrics)
    confidence = _check_confidence(confidence)
    known = set(r.regime.tolist())
    against = _check_pair_regimes(a, against, known)
    variables = (*_T_KEYS, "n_seeds", "sd_difference", "mean_a", "mean_baseline")
    arrays = _grid((len(names), len(against)), variables, ints=("n_seeds",))
    blocks = (
        ((i, j), _paired_difference(r, r.values(name), a, b, decor_weight, confidence, name))
        for i, name in enumerate(names)
        for j, b in enumerate(against)
    )
    attrs = _gather(arrays, blocks)
    out = xr.Dataset(
        _variables(arrays, ("metric", "baseline")), coords={"metric": names, "baseline": against}
    )
    _label_t(out, confidence, f"mean over seeds of ({a} - baseline)", "two-sided paired t-test")
    weight = r.weight_of(DOSE_REGIME, decor_weight) if DOSE_REGIME in known else None
    out.attrs.update(
        {
            "a": a,
            "confidence": confidence,
            "decor_weight": np.nan if weight is None else weight,
            "pairing": "per seed; seeds lacking either cell are dropped",
            **attrs,
        }
    )
    return out
