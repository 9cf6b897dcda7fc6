"""The one paired t-interval of geomxai: per-seed values summarised by a t-interval over seeds,
and the result grids the statistics fill."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import xarray as xr
from scipy import stats

from geomxai.stats._runs import RUN_DIM  # noqa: F401

_T_ATTRS = "two-sided t-interval over seeds of the per-seed values (scipy.stats.t)"


def _scale(a: np.ndarray) -> float:
    """The largest magnitude in ``a`` (0 for an empty array)."""
    return float(np.abs(a).max()) if a.size else 0.0


def _t_summary(
    x: np.ndarray, confidence: float, *, scale: float | None = None
) -> tuple[float, float, float, float, str | None]:
    """Mean, t-interval and one-sample t-test p-value (against 0) of per-seed values ``x``.

    Returns NaN for all four with a reason when no value is given; with one value, that value as
    the estimate (a one-seed study still shows its differences) and NaN for the interval and
    p-value, with a reason; and NaN for the interval and p-value (the mean kept) when the values
    have no spread: a t-interval of width 0
    would be a fake certainty. "No spread" is an SD below 1e-12 of ``scale`` (the magnitude of the
    numbers the values were computed from; default the largest ``|x|``), so that a contrast of
    cells that differ by a constant is not given an interval of float round-off.
    """
    x = np.asarray(x, dtype=float)
    n = x.size
    if n < 2:
        estimate = float(x[0]) if n else np.nan
        return (estimate,) + (np.nan,) * 3 + (f"{n} usable seed(s); a t-interval needs at least 2",)
    mean = float(x.mean())
    sd = float(x.std(ddof=1))
    if scale is None:
        scale = float(np.abs(x).max())
    if not sd > 1e-12 * scale:
        return (mean, np.nan, np.nan, np.nan, f"the {n} per-seed values are all equal; no spread")
    sem = sd / math.sqrt(n)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    p = float(stats.ttest_1samp(x, 0.0).pvalue)
    return mean, float(low), float(high), p, None


_T_KEYS = ("estimate", "ci_low", "ci_high", "p_value")
"""The variables a t-summary fills, in :func:`_t_summary` order."""


def _t_keys(prefix: str) -> tuple[str, str, str, str]:
    """The t-summary variables of one statistic of :func:`dose_response`, e.g. ``slope_ci_low``."""
    return prefix, f"{prefix}_ci_low", f"{prefix}_ci_high", f"{prefix}_p_value"


def _t_values(
    x: np.ndarray, confidence: float, keys: Sequence[str] = _T_KEYS, *, scale: float | None = None
) -> tuple[dict[str, float], str | None]:
    """:func:`_t_summary` of ``x`` keyed by ``keys`` (mean, low, high, p), and its NaN reason."""
    *values, why = _t_summary(x, confidence, scale=scale)
    return dict(zip(keys, values, strict=True)), why


def _t_columns(
    x: np.ndarray, confidence: float, *, scale: float | None = None
) -> tuple[dict[str, np.ndarray], list[str | None]]:
    """:func:`_t_summary` of each column of ``x`` (seed, k): arrays (k,) keyed by ``_T_KEYS``,
    and the k NaN reasons."""
    rows = [_t_summary(x[:, j], confidence, scale=scale) for j in range(x.shape[1])]
    arrays = {key: np.array([row[i] for row in rows]) for i, key in enumerate(_T_KEYS)}
    return arrays, [row[4] for row in rows]


# -- result grids ---------------------------------------------------------------------------------


def _grid(shape, names: Sequence[str], ints: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """One array of ``shape`` per name, in order: NaN floats, or zero int64 for the ``ints``."""
    return {
        k: np.zeros(shape, dtype=np.int64) if k in ints else np.full(shape, np.nan) for k in names
    }


def _gather(arrays: dict[str, np.ndarray], blocks: Iterable[tuple]) -> dict[str, str]:
    """Write each block's values into ``arrays`` and collect its attrs, in order.

    ``blocks`` yields ``(index, (values, attrs))``: a block computes one cell of the grid
    (a metric, or a metric and a contrast) and returns only the values it defines, so the
    others keep their NaN (or zero count).
    """
    attrs: dict[str, str] = {}
    for index, (values, block_attrs) in blocks:
        for key, value in values.items():
            arrays[key][index] = value
        attrs.update(block_attrs)
    return attrs


def _variables(arrays: Mapping[str, np.ndarray], dims: tuple[str, ...]) -> dict[str, tuple]:
    """Dataset variables ``{name: (dims, array)}``, in order."""
    return {k: (dims, v) for k, v in arrays.items()}


def _label_t(out: xr.Dataset, confidence: float, estimate: str, p_value: str) -> None:
    """The long names of the four t-summary variables of ``out``."""
    out["estimate"].attrs["long_name"] = estimate
    out["ci_low"].attrs["long_name"] = f"lower end of the {confidence:.0%} {_T_ATTRS}"
    out["ci_high"].attrs["long_name"] = f"upper end of the {confidence:.0%} {_T_ATTRS}"
    out["p_value"].attrs["long_name"] = p_value


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, t-interval and one-sample t-test p-value of per-seed values: the one t-interval.

    Every interval over seeds in geomxai (a cell's mean, a paired difference) is this one:
    ``mean +- t_{n-1} * sd / sqrt(n)`` from :mod:`scipy.stats`. NaN values are left out. With
    fewer than two values, or values without spread, the interval and p-value are NaN (a
    zero-width interval would be a fake certainty).

    Parameters
    ----------
    values : array_like, shape (n,)
        One value per seed.
    confidence : float
        Coverage, in (0, 1).

    Returns
    -------
    tuple of float
        ``(mean, low, high, p_value)``.

    Examples
    --------
    >>> mean, low, high, p = t_interval([0.1, 0.2, 0.3])
    >>> round(mean, 3), round(low, 3), round(high, 3)
    (0.2, -0.048, 0.448)
    """
    from geomxai.stats._runs import _check_confidence

    x = np.asarray(values, dtype=float).ravel()
    mean, low, high, p, _ = _t_summary(x[np.isfinite(x)], _check_confidence(confidence))
    return mean, low, high, p
