"""Whole-run summaries of the dynamics: one number per run (and layer) from the per-checkpoint
dynamics, so a run-level link sees the whole of training, not only its last (lr ~ 0) pair.

Every function takes values along the run's checkpoints in training order, in the layout
:func:`geomxai.study.add_dynamics` stores them: entry ``t`` compares checkpoint ``t - 1`` with
checkpoint ``t``, and entry 0 (no previous checkpoint) is NaN and not read. See
``docs/dynamics.md`` for the definitions.
"""

from __future__ import annotations

import math

import numpy as np

from geomxai._features import as_float64

SETTLED_OVERLAP = 0.9
"""Subspace overlap (mean squared cosine of the principal angles between consecutive top-k
subspaces) at or above which a pair of checkpoints counts as settled: 0.9 is a mean principal
angle of about 18 degrees."""

__all__ = ["SETTLED_OVERLAP", "area_over_training", "run_mean", "settling_time"]


def _series(values, *, name: str) -> np.ndarray:
    array = as_float64(values, name=name)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D, one value per checkpoint in training order; got shape "
            f"{array.shape}"
        )
    if np.isinf(array).any():
        raise ValueError(
            f"{name} holds {int(np.isinf(array).sum())} infinite value(s); a dynamics metric is "
            "finite or NaN (undefined)"
        )
    return array


def _times(times, n: int, *, name: str = "times") -> np.ndarray:
    array = _series(times, name=name)
    if array.shape[0] != n:
        raise ValueError(f"{name} must have one entry per checkpoint ({n}); got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite; got {array.tolist()}")
    if n > 1 and not (np.diff(array) > 0).all():
        raise ValueError(f"{name} must increase strictly along training; got {array.tolist()}")
    return array


def run_mean(per_pair) -> float:
    """The mean of a per-pair dynamics metric over the run's consecutive checkpoint pairs.

    Parameters
    ----------
    per_pair : array-like, shape (T,)
        Entry ``t`` compares checkpoints ``t - 1`` and ``t`` (entry 0 is not read), e.g. the
        non-degenerate swap rate or the saliency stability of one run.

    Returns
    -------
    float
        The unweighted mean over pairs 1..T-1; NaN pairs (undefined: too small a probe, all-zero
        maps) are skipped, and the mean is NaN when no pair is finite (or T < 2). Every pair
        counts once whatever the steps between its checkpoints, so the mean depends on the
        checkpoint schedule: compare runs that share one (a study's runs do).

    Examples
    --------
    >>> run_mean([float("nan"), 0.5, 0.25, 0.0])
    0.25
    """
    values = _series(per_pair, name="per_pair")[1:]
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def settling_time(subspace_overlap, times, *, threshold: float = SETTLED_OVERLAP) -> float:
    """When the top-k subspace settles: the time of the first checkpoint after which the
    subspace overlap of every consecutive pair stays at or above ``threshold``.

    Parameters
    ----------
    subspace_overlap : array-like, shape (T,)
        Entry ``t``: the subspace overlap of checkpoints ``t - 1`` and ``t`` (entry 0 not read).
    times : array-like, shape (T,)
        Each checkpoint's training time (global steps, or epochs), strictly increasing.
    threshold : float
        In (0, 1]; default :data:`SETTLED_OVERLAP`.

    Returns
    -------
    float
        ``times[t*]`` with ``t* = min{t : overlap[s] >= threshold for every s > t}``:
        ``times[0]`` when every pair is settled; NaN (never settled) when the last pair itself
        is below the threshold, as the subspace still moves at the end of what was analysed.
        NaN too when any pair is NaN (its side of the threshold is unknown) or T < 2.

    Examples
    --------
    >>> settling_time([float("nan"), 0.3, 0.95, 0.5, 0.92, 0.97], [0, 10, 20, 30, 40, 50])
    30.0
    """
    overlap = _series(subspace_overlap, name="subspace_overlap")
    t = _times(times, overlap.shape[0])
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1]; got threshold={threshold}")
    pairs = overlap[1:]
    if pairs.size == 0 or not np.isfinite(pairs).all():
        return math.nan
    below = np.flatnonzero(pairs < threshold)
    if below.size == 0:
        return float(t[0])
    # Pair index p compares checkpoints p and p + 1; settled from checkpoint p + 1 on.
    last = int(below[-1]) + 1
    return float(t[last]) if last < t.shape[0] - 1 else math.nan


def area_over_training(values, times) -> float:
    """The area under a per-checkpoint curve over training time rescaled to [0, 1].

    Time ``u = (t - t_0) / (t_T - t_0)`` (first analysed checkpoint 0, last 1); the area is the
    trapezoid rule over the checkpoints, so for a curve in [0, 1] (CKA to the final checkpoint)
    it lies in [0, 1]: near 1 when the representation reached its final form early, lower the
    later it did.

    Parameters
    ----------
    values : array-like, shape (T,)
        One value per checkpoint, every one read (no NaN first entry: e.g. ``cka_final``).
    times : array-like, shape (T,)
        Each checkpoint's training time, strictly increasing (steps or epochs: the rescaling
        makes them the same, since epochs are steps over the steps per epoch).

    Returns
    -------
    float
        NaN when a value is NaN or T < 2.

    Examples
    --------
    >>> area_over_training([0.0, 1.0, 1.0], [0, 1, 4])
    0.875
    """
    curve = _series(values, name="values")
    t = _times(times, curve.shape[0])
    if curve.shape[0] < 2 or not np.isfinite(curve).all():
        return math.nan
    u = (t - t[0]) / (t[-1] - t[0])
    return float(np.sum(np.diff(u) * (curve[1:] + curve[:-1]) / 2.0))
