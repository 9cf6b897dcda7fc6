"""Dose-response of a metric along one varied field within one regime, paired by seed."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xarray as xr
from scipy import stats

from geomxai._hints import did_you_mean
from geomxai.stats._runs import (
    DOSE_REGIME,
    RUN_DIM,
    _check_confidence,
    _dropped,
    _metric_names,
    _Runs,
    _seed_table,
)
from geomxai.stats._tinterval import (
    _gather,
    _grid,
    _scale,
    _t_keys,
    _t_summary,
    _t_values,
    _variables,
)

# -- dose-response --------------------------------------------------------------------------------


_DOSE_COUNTS = ("slope_n_seeds", "pooled_n_runs", "contrast_n_seeds", "spearman_n_runs")
_DOSE_STATS = (
    *_t_keys("slope"),
    "pooled_slope",
    "pooled_slope_stderr",
    *_t_keys("contrast"),
    "spearman",
    "spearman_p_value",
    *_DOSE_COUNTS,
)
"""The ``(metric,)`` variables of :func:`dose_response`, in output order."""
_DOSE_LEVEL_STATS = ("dose_mean", "dose_ci_low", "dose_ci_high", "dose_n")
"""Its ``(metric, dose)`` variables."""


def _dose_series(
    runs: xr.Dataset, r: _Runs, dose, regime: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of ``regime`` (a mask over runs), their doses and the dose levels, checked."""
    if not isinstance(dose, str) or dose not in runs.variables or runs[dose].dims != (RUN_DIM,):
        raise ValueError(
            f"dose must name a coord or variable of runs on dim {RUN_DIM!r}; got {dose!r}"
        )
    in_regime = r.regime == regime
    if not in_regime.any():
        raise ValueError(
            f"regime must be a regime of the runs ({', '.join(sorted(set(r.regime.tolist())))}); "
            f"got {regime!r}" + did_you_mean(regime, set(r.regime.tolist()))
        )
    d = np.asarray(runs[dose].values, dtype=float)[in_regime]
    if not (np.isfinite(d).all() and (d >= 0).all()):
        raise ValueError(f"dose {dose!r} must be finite and >= 0 on the {regime} runs; got {d}")
    return in_regime, d, np.unique(d)


def _per_dose_means(
    y: np.ndarray, d: np.ndarray, levels: np.ndarray, confidence: float
) -> dict[str, np.ndarray]:
    """Mean and t-interval over the finite values at each dose (one value: its mean only)."""
    out = _grid(levels.size, _DOSE_LEVEL_STATS, ints=("dose_n",))
    for j, level in enumerate(levels):
        vals = y[d == level][np.isfinite(y[d == level])]
        out["dose_n"][j] = vals.size
        mean, low, high, _, _ = _t_summary(vals, confidence)
        out["dose_mean"][j], out["dose_ci_low"][j], out["dose_ci_high"][j] = mean, low, high
        if vals.size == 1:
            out["dose_mean"][j] = vals[0]
    return out


def _dose_slope(
    seeds: np.ndarray,
    table: np.ndarray,
    levels: np.ndarray,
    confidence: float,
    name: str,
    dose: str,
) -> tuple[dict[str, float], dict[str, str]]:
    """Per-seed OLS slope on ``log10(dose)`` over the positive doses, summarised over seeds."""
    positive = levels[levels > 0]
    if positive.size < 2:
        why = f"{positive.size} positive dose level(s); a slope needs at least 2"
        return {}, {f"nan_reason_{name}_slope": why}
    tp = table[:, levels > 0]
    yc = tp[np.isfinite(tp).all(axis=1)]
    x = np.log10(positive)
    xc = x - x.mean()
    slopes = (yc - yc.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    scale = _scale(yc) / float(np.abs(xc).max())
    out, why = _t_values(slopes, confidence, _t_keys("slope"), scale=scale)
    out["slope_n_seeds"] = slopes.size
    attrs = {}
    if why:
        attrs[f"nan_reason_{name}_slope"] = (
            f"{why} (seeds with finite {name} at every positive dose)"
        )
    dropped = _dropped(seeds, tp, [f"{dose}={v:g}" for v in positive])
    if dropped:
        attrs[f"dropped_seeds_{name}_slope"] = dropped
    return out, attrs


def _pooled_slope(
    y: np.ndarray, d: np.ndarray, name: str
) -> tuple[dict[str, float], dict[str, str]]:
    """One OLS of ``y`` on ``log10(dose)`` over every run with ``dose > 0`` (runs independent)."""
    keep = (d > 0) & np.isfinite(y)
    out = {"pooled_n_runs": int(keep.sum())}
    if np.unique(d[keep]).size < 2:
        why = "runs with finite values cover fewer than 2 positive doses"
        return out, {f"nan_reason_{name}_pooled_slope": why}
    fit = stats.linregress(np.log10(d[keep]), y[keep])
    out["pooled_slope"] = fit.slope
    if keep.sum() >= 3:
        out["pooled_slope_stderr"] = fit.stderr
    return out, {}


def _dose_contrast(
    seeds: np.ndarray,
    table: np.ndarray,
    levels: np.ndarray,
    confidence: float,
    name: str,
    dose: str,
    regime: str,
) -> tuple[dict[str, float], dict[str, str]]:
    """The largest dose minus dose 0, per seed (seeds with both), summarised over seeds."""
    if levels[0] != 0 or levels.size < 2:
        why = f"the {regime} runs need dose 0 and a positive dose; doses: " + ", ".join(
            f"{v:g}" for v in levels
        )
        return {}, {f"nan_reason_{name}_contrast": why}
    pair = table[:, [levels.size - 1, 0]]
    complete = np.isfinite(pair).all(axis=1)
    diff = pair[complete, 0] - pair[complete, 1]
    out, why = _t_values(diff, confidence, _t_keys("contrast"), scale=_scale(pair[complete]))
    out["contrast_n_seeds"] = diff.size
    attrs = {f"nan_reason_{name}_contrast": why} if why else {}
    dropped = _dropped(seeds, pair, [f"{dose}={levels[-1]:g}", f"{dose}=0"])
    if dropped:
        attrs[f"dropped_seeds_{name}_contrast"] = dropped
    return out, attrs


def _dose_spearman(
    y: np.ndarray, d: np.ndarray, name: str, dose: str
) -> tuple[dict[str, float], dict[str, str]]:
    """Spearman of ``y`` with the dose over every run, dose 0 included."""
    keep = np.isfinite(y)
    n = int(keep.sum())
    out = {"spearman_n_runs": n}
    if n < 3:
        return out, {f"nan_reason_{name}_spearman": f"{n} run(s) with finite {name}; needs 3"}
    if np.ptp(y[keep]) == 0 or np.ptp(d[keep]) == 0:
        return out, {f"nan_reason_{name}_spearman": f"{name} or {dose} constant over the runs"}
    res = stats.spearmanr(d[keep], y[keep])
    out["spearman"], out["spearman_p_value"] = res.statistic, res.pvalue
    return out, {}


def _dose_metric(
    y: np.ndarray,
    d: np.ndarray,
    seeds_r: np.ndarray,
    levels: np.ndarray,
    confidence: float,
    *,
    name: str,
    dose: str,
    regime: str,
) -> tuple[dict[str, np.ndarray | float], dict[str, str]]:
    """Every statistic of :func:`dose_response` for one metric's values ``y`` on the regime's
    runs (doses ``d``, seeds ``seeds_r``), and its attrs."""
    labels = [f"{regime} at {dose}={level:g}" for level in levels]
    seeds, table = _seed_table(seeds_r, y, [d == level for level in levels], labels)
    out: dict = _per_dose_means(y, d, levels, confidence)
    attrs: dict[str, str] = {}
    for values, block_attrs in (
        _dose_slope(seeds, table, levels, confidence, name, dose),
        _pooled_slope(y, d, name),
        _dose_contrast(seeds, table, levels, confidence, name, dose, regime),
        _dose_spearman(y, d, name, dose),
    ):
        out.update(values)
        attrs.update(block_attrs)
    return out, attrs


def dose_response(
    runs: xr.Dataset,
    metrics: str | Iterable[str] | None = None,
    *,
    dose: str = "decor_weight",
    regime: str = DOSE_REGIME,
    confidence: float = 0.95,
) -> xr.Dataset:
    """How each metric moves with the dose (lambda) within one regime, paired by seed.

    Choices, stated:

    * **Slope per decade**: for each seed that has a run at *every* positive dose (a balanced
      design, so every seed's slope rests on the same doses and their mean equals the OLS slope
      of the per-dose means), the OLS slope of the metric on ``log10(dose)`` over ``dose > 0``
      (``dose = 0`` has no logarithm); then the mean and t-interval over seeds. The seed's own
      intercept absorbs what the seed shares across doses.
    * **Pooled slope**: one OLS of the metric on ``log10(dose)`` over every run with ``dose > 0``
      (:func:`scipy.stats.linregress`), treating runs as independent; its standard error ignores
      the pairing and is given for comparison only.
    * **Contrast**: largest dose minus ``dose = 0``, per seed (seeds with both), t-interval.
    * **Spearman** of the metric against the dose over every run of the regime, ``dose = 0``
      included (ties in the dose get average ranks); :func:`scipy.stats.spearmanr` p-value.
    * **Per-dose means** with t-intervals over all runs at that dose.

    Parameters
    ----------
    runs : xr.Dataset
        Runs in this module's format (:func:`runs_dataset`).
    metrics : str or list of str, optional
        Per-run variables. Default: every numeric per-run variable.
    dose : str
        The coord (or variable) on ``run`` holding the dose; it must be finite and >= 0 on the
        runs of ``regime``.
    regime : str
        The regime whose runs form the dose series.
    confidence : float
        Coverage of the intervals, in (0, 1).

    Returns
    -------
    xr.Dataset
        Dims ``(metric,)``: ``slope`` (per decade of dose), ``slope_ci_low``, ``slope_ci_high``,
        ``slope_p_value``, ``slope_n_seeds``; ``pooled_slope``, ``pooled_slope_stderr``,
        ``pooled_n_runs``; ``contrast`` (largest dose - 0), ``contrast_ci_low``,
        ``contrast_ci_high``, ``contrast_p_value``, ``contrast_n_seeds``; ``spearman``,
        ``spearman_p_value``, ``spearman_n_runs``. Dims ``(metric, dose)``: ``dose_mean``,
        ``dose_ci_low``, ``dose_ci_high``, ``dose_n``. NaN where a statistic is undefined, with
        ``attrs["nan_reason_<metric>_<statistic>"]``.

    Examples
    --------
    >>> lam = [0.0, 0.01, 0.1, 1.0]
    >>> from geomxai.stats import runs_dataset
    >>> runs = runs_dataset([
    ...     {"regime": "saliencydecor", "seed": s, "decor_weight": w,
    ...      "corr": 0.5 - 0.1 * np.log10(w if w else 1e-3) + 0.01 * s + 0.001 * (s * i % 3)}
    ...     for s in range(4) for i, w in enumerate(lam)])
    >>> dr = dose_response(runs, "corr")
    >>> round(float(dr["slope"].sel(metric="corr")), 2)
    -0.1
    >>> float(dr["spearman"].sel(metric="corr")) < -0.9
    True
    """
    r = _Runs(runs)
    names = _metric_names(runs, metrics)
    confidence = _check_confidence(confidence)
    in_regime, d, levels = _dose_series(runs, r, dose, regime)
    per_metric = _grid(len(names), _DOSE_STATS, ints=_DOSE_COUNTS)
    per_dose = _grid((len(names), levels.size), _DOSE_LEVEL_STATS, ints=("dose_n",))
    blocks = (
        (
            i,
            _dose_metric(
                r.values(name)[in_regime],
                d,
                r.seed[in_regime],
                levels,
                confidence,
                name=name,
                dose=dose,
                regime=regime,
            ),
        )
        for i, name in enumerate(names)
    )
    attrs = _gather(per_metric | per_dose, blocks)
    out = xr.Dataset(
        _variables(per_metric, ("metric",)) | _variables(per_dose, ("metric", "dose")),
        coords={"metric": names, "dose": levels},
    )
    out["slope"].attrs["long_name"] = f"mean over seeds of the per-seed slope per decade of {dose}"
    out["pooled_slope"].attrs["long_name"] = (
        f"OLS slope per decade of {dose} over runs with dose > 0"
    )
    out["contrast"].attrs["long_name"] = f"paired difference {dose}={levels[-1]:g} minus {dose}=0"
    out["spearman"].attrs["long_name"] = f"Spearman of the metric with {dose} over all runs"
    out.attrs.update(
        {
            "dose": dose,
            "regime": regime,
            "confidence": confidence,
            "slope_method": "OLS on log10(dose) over dose > 0 per seed (seeds with every "
            "positive dose), then t-interval over seeds",
            **attrs,
        }
    )
    return out
