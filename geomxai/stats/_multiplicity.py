"""Multiplicity and the one verdict rule of geomxai.

Every table of claims in a report is a *family*: the paired contrasts of one table, the effects
of the factorial, the dose-response slopes, the grid of the run-level link. The p-values of a
family are adjusted together (Benjamini-Hochberg by default, Holm on request), and a difference
is called "better" or "worse" only where its *adjusted* p-value is below ``alpha``. The 95%
interval printed beside it stays the per-claim (unadjusted) t- or bootstrap interval, so a table
can show an interval that excludes 0 next to "not distinguishable after correction"; the report
says so where it happens.
"""

from __future__ import annotations

import numpy as np
from statsmodels.stats.multitest import multipletests

CORRECTIONS = {"bh": "fdr_bh", "holm": "holm"}
"""Correction names a design may use, and statsmodels' method for each."""

CORRECTION_LABELS = {
    "bh": "Benjamini-Hochberg (false discovery rate)",
    "holm": "Holm (family-wise error rate)",
}
"""How each correction is named in a table's caption."""

VERDICTS = (
    "better",
    "worse",
    "higher",
    "lower",
    "not distinguishable",
    "not distinguishable after correction",
    "no interval",
)
"""Every word :func:`verdict` can say."""


def _check_correction(method: str) -> str:
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}; got {method!r}")
    return method


def adjust(p_values, method: str = "bh") -> np.ndarray:
    """Adjusted p-values of one family: the finite entries adjusted together, NaN left out.

    Parameters
    ----------
    p_values : array_like
        p-values in [0, 1], any shape; NaN entries are not in the family and stay NaN.
    method : {"bh", "holm"}
        Benjamini-Hochberg (q-values) or Holm's step-down adjustment, both as statsmodels'
        :func:`~statsmodels.stats.multitest.multipletests` computes them.

    Returns
    -------
    np.ndarray
        Same shape, each in [0, 1].

    Examples
    --------
    >>> adjust([0.01, 0.04, 0.03, np.nan]).round(3).tolist()
    [0.03, 0.04, 0.04, nan]
    >>> adjust([0.01, 0.04, 0.03], "holm").round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    method = _check_correction(method)
    p = np.asarray(p_values, dtype=float)
    finite = np.isfinite(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError(f"p_values must lie in [0, 1]; got {p[finite].min()}..{p[finite].max()}")
    q = np.full(p.shape, np.nan)
    if finite.any():
        q[finite] = multipletests(p[finite], method=CORRECTIONS[method])[1]
    return q


def bh_adjust(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) over the finite entries.

    Parameters
    ----------
    p_values : array_like
        p-values in [0, 1], any shape.

    Returns
    -------
    np.ndarray
        Same shape: ``q_(i) = min_{j >= i} p_(j) m / j`` over the ``m`` finite p-values in
        ascending order, capped at 1.

    Examples
    --------
    >>> bh_adjust([0.01, 0.04, 0.03, np.nan]).round(3).tolist()
    [0.03, 0.04, 0.04, nan]
    """
    return adjust(p_values, "bh")


def holm_adjust(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values over the finite entries (see :func:`adjust`)."""
    return adjust(p_values, "holm")


def verdict(
    estimate: float,
    ci_low: float,
    ci_high: float,
    adjusted_p: float,
    direction: str | None,
    *,
    alpha: float = 0.05,
) -> str:
    """The word for one claim: the one rule every report uses.

    A difference is called only where its family-adjusted p-value is below ``alpha``; then
    ``direction`` ("higher" or "lower" is better, None for a metric with no better side) turns
    the sign into "better"/"worse" or "higher"/"lower". Where the unadjusted interval excludes 0
    but the adjusted p-value does not pass, the word is "not distinguishable after correction",
    so a reader sees why an interval without 0 is not called.

    Parameters
    ----------
    estimate, ci_low, ci_high : float
        The difference and its (unadjusted) interval.
    adjusted_p : float
        The claim's p-value adjusted over its family (:func:`adjust`); NaN when it has none.
    direction : {"higher", "lower"} or None
        Which way the metric is better.
    alpha : float
        The family's level.

    Returns
    -------
    str
        One of :data:`VERDICTS`.

    Examples
    --------
    >>> verdict(0.04, 0.01, 0.07, 0.01, "lower")
    'worse'
    >>> verdict(0.04, 0.01, 0.07, 0.06, "lower")
    'not distinguishable after correction'
    >>> verdict(0.04, -0.01, 0.07, 0.3, "higher")
    'not distinguishable'
    """
    if direction not in ("higher", "lower", None):
        raise ValueError(f"direction must be 'higher', 'lower' or None; got {direction!r}")
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)) or not np.isfinite(estimate):
        return "no interval"
    if ci_low <= 0 <= ci_high:
        return "not distinguishable"
    if not (np.isfinite(adjusted_p) and adjusted_p < alpha):
        return "not distinguishable after correction"
    up = estimate > 0
    if direction is None:
        return "higher" if up else "lower"
    return "better" if up == (direction == "higher") else "worse"
