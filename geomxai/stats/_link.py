"""Geometry <-> fidelity across runs (the unit is a run), and co-movement within runs.

:func:`run_link` correlates per-run scalars (each run's final checkpoint) across runs, raw and
given a control (test accuracy by default), with bootstrap intervals over runs and
Benjamini-Hochberg q-values over the grid of metric pairs. Training progress cannot confound it:
every point is a finished run. :func:`within_run_link` keeps the over-epochs view, computed
inside each run, and says what it measures.

The runs format is that of :mod:`geomxai.stats` (:func:`~geomxai.stats.runs_dataset`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from numbers import Integral

import numpy as np
import xarray as xr
from scipy import stats

from geomxai import schema
from geomxai._checks import Interval, check
from geomxai.stats._multiplicity import CORRECTION_LABELS, _check_correction, adjust
from geomxai.stats._runs import RUN_DIM, _check_confidence, _metric_names
from geomxai.stats._tinterval import _gather, _grid

MIN_RUNS = 3
"""Fewest runs for a rank correlation."""

MIN_RUNS_PARTIAL = 4
"""Fewest runs for a partial rank correlation given one control (its t-test has ``n - 3`` df)."""

MIN_EPOCHS = 3
"""Fewest epochs for a within-run rank correlation."""

WITHIN_RUN_NOTE = (
    "Spearman over epochs inside each run, summarised by the median over runs: it measures how "
    "the two metrics co-move during training, which training progress drives in both (it is "
    "confounded by training progress). It is not a between-run explanation; use run_link for that."
)

# Relative size below which a residual (or a centred rank vector) counts as zero: ranks are
# integers or half-integers of order n, so float64 round-off sits far below this.
_TOL = 1e-10


def _canonical_order(runs: xr.Dataset, names: list[str]) -> np.ndarray:
    """An order of the runs that does not depend on how they were listed.

    Sorted by the coords ``regime``, ``decor_weight``, ``seed`` and the ``run`` labels where
    present, then by the values of ``names``, so that a bootstrap with a fixed seed draws the
    same resamples of the same runs whichever order the study listed them in.
    """
    keys = []
    for key in ("regime", "decor_weight", "seed", RUN_DIM):
        if key in runs.coords and runs[key].dims == (RUN_DIM,):
            keys.append(runs[key].values)
    keys += [np.asarray(runs[n].values, dtype=float) for n in names]
    codes = [
        np.unique(k.astype(str) if k.dtype.kind in "OUS" else k, return_inverse=True)[1]
        for k in keys
    ]
    return np.lexsort(codes[::-1]) if codes else np.arange(runs.sizes[RUN_DIM])


def _center(a: np.ndarray) -> np.ndarray:
    return a - a.mean(axis=-1, keepdims=True)


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis; NaN where either is constant."""
    a, b = _center(a), _center(b)
    saa, sbb = (a * a).sum(-1), (b * b).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(-1) / np.sqrt(saa * sbb)
    return np.where((saa > 0) & (sbb > 0), np.clip(r, -1.0, 1.0), np.nan)


def _residual(r: np.ndarray, rz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residual of ``r`` after OLS on ``[1, rz]`` (last axis), and whether it is non-degenerate.

    The closed form of ``lstsq`` with an intercept. A constant ``rz`` (possible in a bootstrap
    resample) leaves the centred ``r``, as the minimum-norm ``lstsq`` solution does.
    """
    rc, zc = _center(r), _center(rz)
    szz = (zc * zc).sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = np.where(szz > 0, (rc * zc).sum(-1, keepdims=True) / szz, 0.0)
    e = rc - beta * zc
    ok = (e * e).sum(-1) > _TOL**2 * np.maximum((rc * rc).sum(-1), 1.0)
    return e, ok


def _partial_from_ranks(rx: np.ndarray, ry: np.ndarray, rz: np.ndarray) -> np.ndarray:
    """Pearson correlation of the residuals of ``rx`` and ``ry`` on ``rz`` (last axis)."""
    ex, okx = _residual(rx, rz)
    ey, oky = _residual(ry, rz)
    return np.where(okx & oky, _pearson(ex, ey), np.nan)


def partial_spearman(x, y, z) -> tuple[float, float]:
    """Spearman correlation of ``x`` and ``y`` given ``z``, and its two-sided p-value.

    The ranks of ``x`` and ``y`` (average ranks for ties) are regressed on the ranks of ``z``
    with an intercept, and the residuals correlated (Pearson): the partial correlation of the
    ranks. The p-value uses ``t = r sqrt((n - 3) / (1 - r^2))`` with ``n - 3`` df.

    Parameters
    ----------
    x, y, z : array_like, shape (n,)
        Finite values; ``n >= 4``.

    Returns
    -------
    (float, float)
        The partial rank correlation and its p-value; NaN for both where ``x`` or ``y`` is a
        monotone function of ``z`` over these points (nothing is left to correlate) or constant.

    Examples
    --------
    >>> z = np.arange(8.0)
    >>> x = z + np.array([0, 1, 0, 1, 0, 1, 0, 1]) * 3
    >>> y = z + np.array([0, 1, 0, 1, 0, 1, 0, 1]) * 3
    >>> round(partial_spearman(x, y, z)[0], 6)
    1.0
    """
    arrs = [np.asarray(v, dtype=float) for v in (x, y, z)]
    if any(a.ndim != 1 for a in arrs) or len({a.size for a in arrs}) != 1:
        raise ValueError(
            f"x, y and z must be 1-d of one length; got shapes {[a.shape for a in arrs]}"
        )
    if not all(np.isfinite(a).all() for a in arrs):
        raise ValueError("x, y and z must be finite")
    n = arrs[0].size
    if n < MIN_RUNS_PARTIAL:
        raise ValueError(
            f"a partial rank correlation needs at least {MIN_RUNS_PARTIAL} points; got {n}"
        )
    rx, ry, rz = (stats.rankdata(a) for a in arrs)
    r = float(_partial_from_ranks(rx, ry, rz))
    return r, _partial_p(r, n)


def _partial_p(r: float, n: int) -> float:
    if not np.isfinite(r):
        return np.nan
    df = n - 3
    if abs(r) >= 1.0:
        return 0.0
    t = r * math.sqrt(df / (1.0 - r * r))
    return float(2.0 * stats.t.sf(abs(t), df))


def _check_boot(n_boot, seed) -> None:
    check(n_boot, "n_boot", Interval(Integral, 1, None))
    check(seed, "seed", Interval(Integral, None, None))


def _names_or_default(runs, requested, defaults, kind) -> list[str]:
    if requested is None:
        names = [n for n in defaults if n in runs.data_vars]
        if not names:
            raise ValueError(
                f"runs hold none of the default {kind} metrics ({', '.join(defaults)}); pass {kind}"
            )
        requested = names
    return _metric_names(runs, requested, kind)


_LINK_VARS = (
    "spearman",
    "spearman_ci_low",
    "spearman_ci_high",
    "spearman_p_value",
    "partial_spearman",
    "partial_ci_low",
    "partial_ci_high",
    "partial_p_value",
    "n_runs",
)
"""The variables :func:`run_link` computes; a ``*_q_value`` follows each ``*_p_value``."""


class _BootRanks:
    """The runs' values of each metric, and their ranks in bootstrap resamples of the runs a
    pair keeps.

    The resamples of a set of runs are drawn once (``default_rng(seed)``, so every pair with the
    same number of runs draws the same indices) and each metric's ranks in them are kept, since
    one metric enters many pairs.
    """

    def __init__(self, values: dict[str, np.ndarray], n_boot: int, seed: int):
        self.values, self.n_boot, self.seed = values, n_boot, seed
        self._draws: dict[bytes, np.ndarray] = {}
        self._ranks: dict[tuple[str, bytes], np.ndarray] = {}

    def __call__(self, name: str, keep: np.ndarray) -> np.ndarray:
        key = keep.tobytes()
        if (name, key) not in self._ranks:
            if key not in self._draws:
                m = int(keep.sum())
                rng = np.random.default_rng(self.seed)
                self._draws[key] = rng.integers(0, m, size=(self.n_boot, m))
            self._ranks[name, key] = stats.rankdata(
                self.values[name][keep][self._draws[key]], axis=1
            )
        return self._ranks[name, key]


def _interval(
    boot: np.ndarray, tail: float, dropped_key: str
) -> tuple[tuple[float, float] | None, dict[str, str]]:
    """Percentile interval of the finite bootstrap values (None if none), and a note of the
    resamples left out."""
    finite = np.isfinite(boot)
    note = {}
    if not finite.all():
        note[dropped_key] = (
            f"{int((~finite).sum())} of {boot.size} resamples left out: a metric was "
            "constant or a monotone function of the control in them"
        )
    boot = boot[finite]
    if not boot.size:
        return None, note
    lo, hi = np.percentile(boot, [tail, 100.0 - tail])
    return (float(lo), float(hi)), note


def _partial_link(
    g: str, f: str, ctl: str, keep: np.ndarray, boot: _BootRanks, tail: float
) -> tuple[dict[str, float], dict[str, str]]:
    """Partial Spearman of ``g`` and ``f`` given ``ctl`` over the runs ``keep``, its p-value and
    bootstrap interval."""
    n = int(keep.sum())
    why = f"nan_reason_{g}_vs_{f}_partial"
    if n < MIN_RUNS_PARTIAL:
        return {}, {
            why: f"{n} runs; a partial rank correlation given {ctl} needs at least "
            f"{MIN_RUNS_PARTIAL}"
        }
    rx, ry, rz = (stats.rankdata(boot.values[v][keep]) for v in (g, f, ctl))
    par = float(_partial_from_ranks(rx, ry, rz))
    if not np.isfinite(par):
        return {"partial_spearman": par}, {
            why: f"{g} or {f} is a monotone function of {ctl} over the {n} runs; nothing is "
            "left to correlate once it is controlled"
        }
    out = {"partial_spearman": par, "partial_p_value": _partial_p(par, n)}
    boot_par = _partial_from_ranks(boot(g, keep), boot(f, keep), boot(ctl, keep))
    ci, reasons = _interval(boot_par, tail, f"partial_boot_dropped_{g}_vs_{f}")
    if ci:
        out["partial_ci_low"], out["partial_ci_high"] = ci
    else:
        reasons[why] = "every bootstrap resample left a degenerate residual"
    return out, reasons


def _link_pair(
    g: str, f: str, ctl: str | None, boot: _BootRanks, tail: float
) -> tuple[dict[str, float], dict[str, str]]:
    """Spearman of one (geometry, fidelity) pair across runs and, given ``ctl``, its partial.

    The pair uses the runs where both metrics and the control are finite.
    """
    x, y = boot.values[g], boot.values[f]
    keep = np.isfinite(x) & np.isfinite(y)
    if ctl:
        keep &= np.isfinite(boot.values[ctl])
    n = int(keep.sum())
    out: dict[str, float] = {"n_runs": n}
    why = f"nan_reason_{g}_vs_{f}"
    if n < MIN_RUNS:
        return out, {
            why: f"{n} run(s) with {g}, {f}" + (f" and {ctl}" if ctl else "") + " finite; a "
            f"rank correlation needs at least {MIN_RUNS}"
        }
    constant = [name for name, v in ((g, x), (f, y)) if np.ptp(v[keep]) == 0]
    if constant:
        return out, {why: f"{' and '.join(constant)} constant over the {n} runs"}
    res = stats.spearmanr(x[keep], y[keep])
    out["spearman"], out["spearman_p_value"] = float(res.statistic), float(res.pvalue)
    boot_rho = _pearson(boot(g, keep), boot(f, keep))
    ci, reasons = _interval(boot_rho, tail, f"spearman_boot_dropped_{g}_vs_{f}")
    if ci:
        out["spearman_ci_low"], out["spearman_ci_high"] = ci
    else:
        reasons[why] = "every bootstrap resample had a constant metric"
    if ctl is not None:
        partial, partial_reasons = _partial_link(g, f, ctl, keep, boot, tail)
        out |= partial
        reasons |= partial_reasons
    return out, reasons


def _link_dataset(
    arrays: dict[str, np.ndarray],
    geo: list[str],
    fid: list[str],
    ctl: str | None,
    confidence,
    correction: str,
) -> xr.Dataset:
    """The grid of :func:`run_link`, with q-values (``correction``) beside each p-value and long
    names."""
    dims = ("geometry", "fidelity")
    data = {}
    for key, value in arrays.items():
        data[key] = (dims, value)
        if key.endswith("_p_value"):
            data[key.replace("_p_value", "_q_value")] = (dims, adjust(value, correction))
    out = xr.Dataset(data, coords={"geometry": geo, "fidelity": fid})
    pct = f"{confidence:.0%} percentile bootstrap over runs"
    q_text = f"{CORRECTION_LABELS[correction]} q-value over the grid"
    long = {
        "spearman": "Spearman rank correlation across runs",
        "spearman_ci_low": f"lower end of the {pct}",
        "spearman_ci_high": f"upper end of the {pct}",
        "spearman_p_value": "two-sided p-value of scipy.stats.spearmanr",
        "spearman_q_value": q_text,
        "partial_spearman": f"partial Spearman given {ctl} (Pearson of rank residuals)",
        "partial_ci_low": f"lower end of the {pct}",
        "partial_ci_high": f"upper end of the {pct}",
        "partial_p_value": "two-sided t-test, n - 3 df",
        "partial_q_value": q_text,
        "n_runs": "runs with both metrics and the control finite",
    }
    for name, text in long.items():
        out[name].attrs["long_name"] = text
    return out


def run_link(
    runs: xr.Dataset,
    geometry: str | Iterable[str] | None = None,
    fidelity: str | Iterable[str] | None = None,
    *,
    control: str | None = "test_acc",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    correction: str = "bh",
) -> xr.Dataset:
    """Spearman and partial Spearman (given ``control``) of geometry vs fidelity across runs.

    The unit is a run: each point is one trained run's final value, so the points are
    independent training outcomes and training progress cannot drive the correlation. A pair of
    metrics uses the runs where both metrics *and* the control are finite, so its raw and partial
    correlations rest on the same runs.

    Parameters
    ----------
    runs : xr.Dataset
        Runs (dim ``run``; see :func:`~geomxai.stats.runs_dataset`); the factorial and the
        dose-response runs together, typically.
    geometry, fidelity : str or list of str, optional
        Per-run variables. Default: those of :func:`geomxai.schema.geometry_metrics` and
        :func:`geomxai.schema.fidelity_metrics` present in ``runs``.
    control : str or None
        The per-run variable partialled out (test accuracy by default: a better-trained model
        may be both more decorrelated and more faithful). ``None``: no partial correlation.
    n_boot : int
        Bootstrap resamples of the runs (with replacement). For a pair with ``n`` runs the draws
        are ``np.random.default_rng(seed).integers(0, n, size=(n_boot, n))`` over the runs in a
        canonical order (by regime, decor_weight, seed, run label, then values), so results do
        not depend on the order the runs are listed in. Resamples in which a statistic is
        undefined (constant ranks) are left out of its interval.
    seed : int
        Seed of the bootstrap.
    confidence : float
        Coverage of the percentile intervals, in (0, 1).
    correction : {"bh", "holm"}
        Multiplicity correction of each statistic's q-values over the grid (Benjamini-Hochberg
        by default).

    Returns
    -------
    xr.Dataset
        Dims ``(geometry, fidelity)``: ``spearman`` (rho, :func:`scipy.stats.spearmanr`),
        ``spearman_ci_low``, ``spearman_ci_high`` (percentile bootstrap), ``spearman_p_value``
        (spearmanr, two-sided), ``spearman_q_value`` (``correction`` over the grid);
        ``partial_spearman`` (:func:`partial_spearman`), ``partial_ci_low``, ``partial_ci_high``,
        ``partial_p_value`` (t with ``n - 3`` df), ``partial_q_value`` (``correction`` over the grid);
        ``n_runs`` (int). NaN where undefined, with ``attrs["nan_reason_<geometry>_vs_<fidelity>"]``
        (and ``..._partial``).

    Notes
    -----
    The q-values adjust each of the two statistics over its own grid of pairs (the finite
    p-values only). Geometry metrics are correlated with one another, so the pairs are not
    independent tests; BH stays valid under positive dependence, the usual case here.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> acc = rng.uniform(0.8, 0.9, 12)
    >>> runs = xr.Dataset({"test_acc": ("run", acc), "erank": ("run", acc + rng.normal(0, .01, 12)),
    ...                    "morf_auc": ("run", -acc)})
    >>> link = run_link(runs, "erank", "morf_auc", n_boot=200)
    >>> float(link["spearman"].item()) < -0.5
    True
    >>> bool(np.isnan(link["partial_spearman"].item()))  # morf_auc is a function of accuracy only
    True
    """
    if not isinstance(runs, xr.Dataset):
        raise TypeError(f"runs must be an xarray Dataset of runs; got {type(runs).__name__}")
    if RUN_DIM not in runs.dims:
        raise ValueError(f"runs must have a dim {RUN_DIM!r}; got dims {tuple(runs.dims)}")
    _check_boot(n_boot, seed)
    confidence = _check_confidence(confidence)
    correction = _check_correction(correction)
    geo = _names_or_default(runs, geometry, schema.geometry_metrics(), "geometry")
    fid = _names_or_default(runs, fidelity, schema.fidelity_metrics(), "fidelity")
    ctl = None if control is None else _metric_names(runs, control, "control")[0]
    used = list(dict.fromkeys(geo + fid + ([ctl] if ctl else [])))
    order = _canonical_order(runs, used)
    boot = _BootRanks(
        {n: np.asarray(runs[n].values, dtype=float)[order] for n in used}, n_boot, seed
    )
    tail = 100.0 * (1.0 - confidence) / 2.0
    arrays = _grid((len(geo), len(fid)), _LINK_VARS, ints=("n_runs",))
    blocks = (
        ((i, j), _link_pair(g, f, ctl, boot, tail))
        for i, g in enumerate(geo)
        for j, f in enumerate(fid)
    )
    reasons = _gather(arrays, blocks)
    if ctl is None:
        reasons["nan_reason_partial"] = "control=None: no partial correlation"
    out = _link_dataset(arrays, geo, fid, ctl, confidence, correction)
    out.attrs.update(
        {
            "unit": "run (its final checkpoint)",
            "correction": correction,
            "control": ctl or "",
            "n_boot": int(n_boot),
            "bootstrap_seed": int(seed),
            "confidence": confidence,
            "n_runs_total": int(order.size),
            **reasons,
        }
    )
    return out


def _epoch_names(per_epoch: xr.Dataset, requested, defaults, kind: str) -> list[str]:
    """The (run, epoch) variables named (default: those of ``defaults`` present), checked."""
    if requested is None:
        requested = [n for n in defaults if n in per_epoch.data_vars]
        if not requested:
            raise ValueError(
                f"per_epoch holds none of the default {kind} metrics ({', '.join(defaults)})"
            )
    requested = [requested] if isinstance(requested, str) else list(requested)
    for n in requested:
        if n not in per_epoch.data_vars or set(per_epoch[n].dims) != {RUN_DIM, "epoch"}:
            raise ValueError(
                f"{kind} must name variables of per_epoch with dims ({RUN_DIM}, epoch); got {n!r}"
            )
    return list(dict.fromkeys(requested))


def _by_run(
    per_epoch: xr.Dataset, names: list[str], min_epoch: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run labels in a canonical order (sorted, where ``run`` is a coord), and each variable as
    an array (run, epoch) in that order over the epochs >= ``min_epoch``."""
    n_ep = per_epoch.sizes["epoch"]
    epochs = (
        np.asarray(per_epoch["epoch"].values) if "epoch" in per_epoch.coords else np.arange(n_ep)
    )
    ep_keep = epochs >= min_epoch
    if RUN_DIM in per_epoch.coords:
        labels = per_epoch[RUN_DIM].values
        order = np.argsort(
            labels.astype(str) if labels.dtype.kind in "OUS" else labels, kind="stable"
        )
    else:
        labels = np.arange(per_epoch.sizes[RUN_DIM])
        order = labels
    data = {
        n: np.asarray(per_epoch[n].transpose(RUN_DIM, "epoch").values, dtype=float)[order][
            :, ep_keep
        ]
        for n in dict.fromkeys(names)
    }
    return labels[order], data


_WITHIN_VARS = ("median_spearman", "median_ci_low", "median_ci_high", "n_runs")
"""The ``(geometry, fidelity)`` variables of :func:`within_run_link`, in output order."""


def _within_pair(
    x: np.ndarray,
    y: np.ndarray,
    reason_key: str,
    *,
    n_boot: int,
    seed: int,
    tail: float,
    min_epoch: int,
) -> tuple[dict[str, np.ndarray | float], dict[str, str]]:
    """Spearman over epochs in each run of two (run, epoch) arrays, and its median over runs
    with a bootstrap interval; ``{reason_key: why}`` where the median or interval is NaN."""
    per_run = np.full(x.shape[0], np.nan)
    for k in range(x.shape[0]):
        keep = np.isfinite(x[k]) & np.isfinite(y[k])
        if keep.sum() < MIN_EPOCHS or np.ptp(x[k][keep]) == 0 or np.ptp(y[k][keep]) == 0:
            continue
        per_run[k] = stats.spearmanr(x[k][keep], y[k][keep]).statistic
    rhos = per_run[np.isfinite(per_run)]
    out = {"per_run_spearman": per_run, "n_runs": rhos.size}
    if not rhos.size:
        why = f"no run has {MIN_EPOCHS}+ epochs (>= {min_epoch}) with both finite and non-constant"
        return out, {reason_key: why}
    out["median_spearman"] = np.median(rhos)
    if rhos.size < 2:
        return out, {reason_key: "one run: no interval over runs"}
    idx = np.random.default_rng(seed).integers(0, rhos.size, size=(n_boot, rhos.size))
    low, high = np.percentile(np.median(rhos[idx], axis=1), [tail, 100 - tail])
    out["median_ci_low"], out["median_ci_high"] = low, high
    return out, {}


def _within_dataset(
    arrays: dict[str, np.ndarray], geo: list[str], fid: list[str], labels, confidence: float
) -> xr.Dataset:
    """The grid of :func:`within_run_link`, with its long names."""
    g3, g2 = ("geometry", "fidelity", RUN_DIM), ("geometry", "fidelity")
    out = xr.Dataset(
        {k: (g3 if k == "per_run_spearman" else g2, v) for k, v in arrays.items()},
        coords={"geometry": geo, "fidelity": fid, RUN_DIM: labels},
    )
    out["median_spearman"].attrs["long_name"] = (
        "median over runs of the within-run Spearman over epochs (co-movement during training)"
    )
    out["median_ci_low"].attrs["long_name"] = (
        f"lower end of the {confidence:.0%} percentile bootstrap over runs"
    )
    out["median_ci_high"].attrs["long_name"] = (
        f"upper end of the {confidence:.0%} percentile bootstrap over runs"
    )
    return out


def within_run_link(
    per_epoch: xr.Dataset,
    geometry: str | Iterable[str] | None = None,
    fidelity: str | Iterable[str] | None = None,
    *,
    min_epoch: int = 1,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> xr.Dataset:
    """Spearman over epochs inside each run, then the median over runs with a bootstrap interval.

    This measures **co-movement during training**: inside one run, training progress moves
    geometry and fidelity together, so the correlation is confounded by training progress. It is
    not a between-run explanation of fidelity by geometry (that is :func:`run_link`).

    Parameters
    ----------
    per_epoch : xr.Dataset
        Dims ``(run, epoch)``; variables with exactly those dims (any order). An ``epoch``
        coord gives the epoch numbers (else positions 0, 1, ...).
    geometry, fidelity : str or list of str, optional
        Variables. Default: those of :func:`geomxai.schema.geometry_metrics` and
        :func:`geomxai.schema.fidelity_metrics` present.
    min_epoch : int
        Epochs below it are left out (epoch 0 is the untrained model, the same across regimes
        with one seed).
    n_boot : int
        Bootstrap resamples of the runs for the interval of the median (runs in a canonical
        order, by their ``run`` labels where present).
    seed : int
        Seed of the bootstrap.
    confidence : float
        Coverage of the percentile interval, in (0, 1).

    Returns
    -------
    xr.Dataset
        ``per_run_spearman`` with dims ``(geometry, fidelity, run)`` (NaN for a run with fewer
        than 3 epochs where both are finite, or a constant metric); dims ``(geometry,
        fidelity)``: ``median_spearman``, ``median_ci_low``, ``median_ci_high`` (percentile
        bootstrap of the median over runs), ``n_runs`` (runs with a defined correlation).
        ``attrs["interpretation"]`` states what it measures.

    Examples
    --------
    >>> e = np.arange(6.0)
    >>> ds = xr.Dataset({"erank": (("run", "epoch"), np.stack([e, 2 * e, e**2])),
    ...                  "morf_auc": (("run", "epoch"), -np.stack([e, e, e]))},
    ...                 coords={"epoch": e.astype(int)})
    >>> w = within_run_link(ds, "erank", "morf_auc", n_boot=100)
    >>> round(float(w["median_spearman"].item()), 6)
    -1.0
    """
    if not isinstance(per_epoch, xr.Dataset):
        raise TypeError(
            f"per_epoch must be an xarray Dataset with dims (run, epoch); got {type(per_epoch).__name__}"
        )
    if set(per_epoch.dims) != {RUN_DIM, "epoch"}:
        raise ValueError(
            f"per_epoch must have exactly dims ({RUN_DIM!r}, 'epoch'); got {tuple(per_epoch.dims)}"
        )
    check(min_epoch, "min_epoch", Interval(Integral, None, None))
    _check_boot(n_boot, seed)
    confidence = _check_confidence(confidence)
    geo = _epoch_names(per_epoch, geometry, schema.geometry_metrics(), "geometry")
    fid = _epoch_names(per_epoch, fidelity, schema.fidelity_metrics(), "fidelity")
    labels, data = _by_run(per_epoch, geo + fid, min_epoch)
    arrays = {"per_run_spearman": np.full((len(geo), len(fid), labels.size), np.nan)}
    arrays |= _grid((len(geo), len(fid)), _WITHIN_VARS, ints=("n_runs",))
    tail = 100.0 * (1.0 - confidence) / 2.0
    options = {"n_boot": n_boot, "seed": seed, "tail": tail, "min_epoch": min_epoch}
    blocks = (
        ((i, j), _within_pair(data[g], data[f], f"nan_reason_{g}_vs_{f}", **options))
        for i, g in enumerate(geo)
        for j, f in enumerate(fid)
    )
    reasons = _gather(arrays, blocks)
    out = _within_dataset(arrays, geo, fid, labels, confidence)
    out.attrs.update(
        {
            "interpretation": WITHIN_RUN_NOTE,
            "min_epoch": int(min_epoch),
            "n_boot": int(n_boot),
            "bootstrap_seed": int(seed),
            "confidence": confidence,
            **reasons,
        }
    )
    return out


# -- within cells ---------------------------------------------------------------------------------

MIN_RUNS_PER_CELL = 3
"""Fewest runs a cell needs to enter the within-cell link. Two would give only the sign of one
within-cell change, whose correlation across cells is +-1 by chance with probability 2**(1-k)
and whose t-test p-value would then be 0: so a design needs at least 3 seeds per cell."""


def _cell_ranks(values: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Ranks within each cell, centred on the cell's mean rank (last axis holds the runs)."""
    out = np.empty(values.shape, dtype=float)
    for idx in groups:
        r = stats.rankdata(values[..., idx], axis=-1)
        out[..., idx] = r - r.mean(axis=-1, keepdims=True)
    return out


def _pooled_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation of within-cell centred ranks (their pooled means are 0 by construction)."""
    saa, sbb = (a * a).sum(-1), (b * b).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(-1) / np.sqrt(saa * sbb)
    return np.where((saa > 0) & (sbb > 0), np.clip(r, -1.0, 1.0), np.nan)


def _pooled_partial(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Partial correlation of within-cell centred ranks ``a`` and ``b`` given ``c``."""
    scc = (c * c).sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ea = a - np.where(scc > 0, (a * c).sum(-1, keepdims=True) / scc, 0.0) * c
        eb = b - np.where(scc > 0, (b * c).sum(-1, keepdims=True) / scc, 0.0) * c
    ok = ((ea * ea).sum(-1) > _TOL**2 * np.maximum((a * a).sum(-1), 1.0)) & (
        (eb * eb).sum(-1) > _TOL**2 * np.maximum((b * b).sum(-1), 1.0)
    )
    return np.where(ok, _pooled_r(ea, eb), np.nan)


def _t_p(r: float, df: int) -> float:
    if not np.isfinite(r) or df < 1:
        return np.nan
    if abs(r) >= 1.0:
        return 0.0
    return float(2.0 * stats.t.sf(abs(r * math.sqrt(df / (1.0 - r * r))), df))


def within_cell_link(
    runs: xr.Dataset,
    geometry: str | Iterable[str] | None = None,
    fidelity: str | Iterable[str] | None = None,
    *,
    cell: str = "cell",
    control: str | None = "test_acc",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    correction: str = "bh",
) -> xr.Dataset:
    """Does geometry track fidelity *within* cells? Spearman with cell as a fixed factor.

    A pooled correlation across runs mostly reflects differences between cells (regimes), so it
    changes with a design's mix of cells. Here each metric is ranked within each cell and the
    ranks are centred on the cell's mean rank; the correlation of these centred ranks over all
    runs is the within-cell Spearman (a fixed-effects rank model: every cell's own level is
    removed), and its partial given ``control`` residualises both on the control's centred
    ranks. p-values: t-tests with ``n - k - 1`` df (``n - k - 2`` for the partial), ``k`` the
    cells used; intervals: a percentile bootstrap resampling runs *within* each cell; q-values:
    ``correction`` over the grid.

    Parameters
    ----------
    runs : xr.Dataset
        Runs (dim ``run``) with a coord ``cell``.
    geometry, fidelity : str or list of str, optional
        Per-run variables. Default as in :func:`run_link`.
    cell : str
        The coord naming each run's cell.
    control : str or None
        Per-run variable held fixed in the partial correlation.
    n_boot, seed, confidence
        Bootstrap resamples, their seed, and the intervals' coverage.
    correction : {"bh", "holm"}
        Multiplicity correction over the grid.

    Returns
    -------
    xr.Dataset
        Dims ``(geometry, fidelity)``: ``spearman``, ``spearman_ci_low``, ``spearman_ci_high``,
        ``spearman_p_value``, ``spearman_q_value``, ``partial_spearman``, ``partial_ci_low``,
        ``partial_ci_high``, ``partial_p_value``, ``partial_q_value``, ``n_runs``, ``n_cells``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> level = np.repeat([0.0, 10.0], 12)           # two cells, far apart
    >>> x = rng.normal(size=24)
    >>> runs = xr.Dataset(
    ...     {"g": ("run", level + x), "f": ("run", -level + x), "acc": ("run", rng.normal(size=24))},
    ...     coords={"cell": ("run", np.repeat(["a", "b"], 12))},
    ... )
    >>> w = within_cell_link(runs, "g", "f", control="acc", n_boot=200)
    >>> float(w["spearman"].item()) > 0.99   # within cells g and f move together
    True
    """

    _check_boot(n_boot, seed)
    confidence = _check_confidence(confidence)
    if cell not in runs.coords or runs[cell].dims != (RUN_DIM,):
        raise ValueError(
            f"runs must have a coord {cell!r} on dim {RUN_DIM!r} naming each run's cell"
        )
    geo = _names_or_default(runs, geometry, schema.geometry_metrics(), "geometry")
    fid = _names_or_default(runs, fidelity, schema.fidelity_metrics(), "fidelity")
    if control is not None:
        _metric_names(runs, [control], "control")
    labels = np.asarray(runs[cell].values).astype(str)
    values = {
        n: np.asarray(runs[n].values, dtype=float)
        for n in {*geo, *fid, *([control] if control else [])}
    }
    tail = 100.0 * (1.0 - confidence) / 2.0
    shape = (len(geo), len(fid))
    arrays = _grid(shape, (*_LINK_VARS, "n_cells"), ints=("n_runs", "n_cells"))
    rng_seed = int(seed)
    for i, g in enumerate(geo):
        for j, f in enumerate(fid):
            keep = np.isfinite(values[g]) & np.isfinite(values[f])
            if control:
                keep &= np.isfinite(values[control])
            groups = []
            for c in np.unique(labels[keep]):
                idx = np.flatnonzero(keep & (labels == c))
                if idx.size >= MIN_RUNS_PER_CELL:
                    groups.append(idx)
            n, k = sum(g_.size for g_ in groups), len(groups)
            arrays["n_runs"][i, j], arrays["n_cells"][i, j] = n, k
            if not k or n - k - 1 < 1:
                continue
            # Re-index the kept runs 0..n-1, cell by cell, for the rank arrays.
            order = np.concatenate(groups)
            local = []
            start = 0
            for g_ in groups:
                local.append(np.arange(start, start + g_.size))
                start += g_.size
            x = _cell_ranks(values[g][order], local)
            y = _cell_ranks(values[f][order], local)
            r = float(_pooled_r(x, y))
            arrays["spearman"][i, j] = r
            arrays["spearman_p_value"][i, j] = _t_p(r, n - k - 1)
            rng = np.random.default_rng(rng_seed)
            draw = np.concatenate(
                [loc[rng.integers(0, loc.size, size=(n_boot, loc.size))] for loc in local], axis=1
            )
            bx = _cell_ranks(values[g][order][draw], local)
            by = _cell_ranks(values[f][order][draw], local)
            ci, _ = _interval(_pooled_r(bx, by), tail, "unused")
            if ci:
                arrays["spearman_ci_low"][i, j], arrays["spearman_ci_high"][i, j] = ci
            if control and n - k - 2 >= 1:
                z = _cell_ranks(values[control][order], local)
                p = float(_pooled_partial(x, y, z))
                arrays["partial_spearman"][i, j] = p
                arrays["partial_p_value"][i, j] = _t_p(p, n - k - 2)
                bz = _cell_ranks(values[control][order][draw], local)
                ci, _ = _interval(_pooled_partial(bx, by, bz), tail, "unused")
                if ci:
                    arrays["partial_ci_low"][i, j], arrays["partial_ci_high"][i, j] = ci
    dims = ("geometry", "fidelity")
    data = {}
    for key, value in arrays.items():
        data[key] = (dims, value)
        if key.endswith("_p_value"):
            data[key.replace("_p_value", "_q_value")] = (dims, adjust(value, correction))
    out = xr.Dataset(data, coords={"geometry": geo, "fidelity": fid})
    out.attrs.update(
        {
            "model": "Spearman of ranks centred within each cell (cell as a fixed factor)",
            "control": control or "",
            "cells": json.dumps(sorted(set(labels.tolist()))),
            "correction": correction,
            "bootstrap": f"{n_boot} resamples of runs within each cell, seed {seed}",
        }
    )
    return out
