"""Power of paired contrasts: the difference a seed count detects, the seeds a difference needs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Real

import numpy as np
import xarray as xr
from scipy import optimize, special, stats

from geomxai._checks import Interval, check
from geomxai._hints import did_you_mean
from geomxai.stats._contrasts import _contrast_name, _per_seed, _regimes_of
from geomxai.stats._runs import EFFECTS, _metric_names, _real, _Runs
from geomxai.stats._tinterval import _gather, _grid, _variables

# -- power ----------------------------------------------------------------------------------------


def _t_power(effect_size: float, nobs: float, alpha: float) -> float:
    """Power of the two-sided one-sample (paired) t-test: ``statsmodels``' ``ttest_power``.

    ``effect_size`` is Cohen's d_z (mean over SD of the paired differences); the statistic is
    noncentral t with ``nobs - 1`` df and noncentrality ``d sqrt(nobs)``.
    """
    df = nobs - 1.0
    nc = effect_size * math.sqrt(nobs)
    crit = stats.t.isf(alpha / 2.0, df)
    upper = 1.0 - special.nctdtr(df, nc, crit)
    lower = special.nctdtr(df, nc, -crit)
    # nctdtr gives NaN where the far tail underflows (large nc, small df): that tail is 0.
    return float(upper + (0.0 if np.isnan(lower) else lower))


def _solve_effect_size(nobs: float, alpha: float, power: float) -> float:
    """The d_z with ``_t_power(d_z, nobs, alpha) == power`` (``TTestPower.solve_power``)."""
    hi = 1.0
    while _t_power(hi, nobs, alpha) < power:
        hi *= 2.0
        if hi > 1e8:
            return np.inf
    return float(optimize.brentq(lambda d: _t_power(d, nobs, alpha) - power, 0.0, hi, xtol=1e-12))


def _solve_nobs(effect_size: float, alpha: float, power: float) -> float:
    """The (real) number of pairs giving ``power`` for ``effect_size``; at least 2."""
    d = abs(effect_size)
    if _t_power(d, 2.0, alpha) >= power:
        return 2.0
    hi = 4.0
    while _t_power(d, hi, alpha) < power:
        hi *= 2.0
        if hi > 1e9:
            return np.inf
    return float(optimize.brentq(lambda n: _t_power(d, n, alpha) - power, 2.0, hi, xtol=1e-10))


def _stated_lookup(stated, contrasts: Sequence[str], names: Sequence[str]) -> dict:
    if stated is None:
        stated = {}
    if not isinstance(stated, Mapping):
        raise TypeError(
            f"stated must be a dict metric -> difference or (contrast, metric) -> difference; "
            f"got {type(stated).__name__}"
        )
    bare: dict[tuple[str, str], float] = {}
    pairs: dict[tuple[str, str], float] = {}
    for key, value in stated.items():
        diff = _real(value, f"stated[{key!r}]")
        if not np.isfinite(diff):
            raise ValueError(f"stated differences must be finite; got {key!r}: {value!r}")
        if isinstance(key, str):
            bare.update({(c, key): diff for c in contrasts})
        elif isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], str):
            pairs[(_contrast_name(key[0]), key[1])] = diff
        else:
            raise ValueError(
                f"stated keys must be a metric name or a (contrast, metric) pair; got {key!r}"
            )
    # A (contrast, metric) key wins over a bare metric key.
    table = bare | pairs
    return {k: v for k, v in table.items() if k[0] in contrasts and k[1] in names}


DEFAULT_CONTRASTS = (
    "saliencydecor-regular",
    "saliencydecor-sgt",
    "saliencydecor-dbn",
    *EFFECTS,
)
"""Claims :func:`power_analysis` sizes by default."""


_POWER_VARS = (
    "n_seeds",
    "mean_difference",
    "sd_difference",
    "detectable_effect_size",
    "detectable_difference",
    "stated_difference",
    "stated_effect_size",
    "power_at_stated",
    "seeds_needed",
)
"""The ``(metric, contrast)`` variables of :func:`power_analysis`, in output order."""


def _power_contrasts(contrasts, known: set[str]) -> list[str]:
    """The contrast names to size, in order without repeats; a contrast given (not a default)
    must have its regimes in the runs."""
    if contrasts is None:
        contrasts = DEFAULT_CONTRASTS
    elif isinstance(contrasts, (str, tuple)) and _is_single_contrast(contrasts):
        contrasts = [contrasts]
    cnames = list(dict.fromkeys(_contrast_name(c) for c in contrasts))
    if not cnames:
        raise ValueError("contrasts must name at least one contrast; got none")
    for c in cnames:
        missing = [reg for reg in _regimes_of(c) if reg not in known]
        if missing and c not in DEFAULT_CONTRASTS:
            raise ValueError(
                f"contrast {c!r} needs regimes not in the runs: {', '.join(missing)}"
                + did_you_mean(missing[0], known)
            )
    return cnames


def _sizes(
    n: int, sd: float, stated: float, alpha: float, power: float
) -> tuple[dict[str, float], str | None]:
    """The difference ``n`` seeds detect; the power at, and the seeds for, the stated one."""
    d_det = _solve_effect_size(float(n), alpha, power)
    out = {"detectable_effect_size": d_det, "detectable_difference": d_det * sd}
    if not np.isfinite(stated):
        return out, None
    if stated == 0:
        return out, "a stated difference of 0 is undetectable"
    out["stated_effect_size"] = abs(stated) / sd
    out["power_at_stated"] = _t_power(out["stated_effect_size"], float(n), alpha)
    # A hair below the exact root so a round trip n -> d -> n gives back n.
    out["seeds_needed"] = math.ceil(_solve_nobs(out["stated_effect_size"], alpha, power) - 1e-6)
    return out, None


def _power_cell(
    r: _Runs,
    values: np.ndarray,
    name: str,
    contrast: str,
    stated: float,
    *,
    known: set[str],
    alpha: float,
    power: float,
    decor_weight,
) -> tuple[dict[str, float], dict[str, str]]:
    """Seeds, spread and sizes of one (metric, contrast) (``stated``: NaN for none), and attrs."""
    key = f"{name}_{contrast}"
    out = {"stated_difference": stated}
    if any(reg not in known for reg in _regimes_of(contrast)):
        return out, {f"nan_reason_{key}": f"the runs lack regime(s) of {contrast}"}
    x, scale, cells, dropped = _per_seed(r, values, contrast, decor_weight)
    attrs = {f"dropped_seeds_{key}": dropped} if dropped else {}
    out["n_seeds"] = x.size
    if x.size < 2:
        attrs[f"nan_reason_{key}"] = f"{x.size} seed(s) with finite {name} in all of {cells}"
        return out, attrs
    out["mean_difference"], out["sd_difference"] = x.mean(), x.std(ddof=1)
    if not out["sd_difference"] > 1e-12 * scale:
        attrs[f"nan_reason_{key}"] = "the per-seed differences have no spread"
        return out, attrs
    sizes, why = _sizes(x.size, out["sd_difference"], stated, alpha, power)
    if why:
        attrs[f"nan_reason_{key}_stated"] = why
    return out | sizes, attrs


def power_analysis(
    runs: xr.Dataset,
    metrics: str | Iterable[str] | None = None,
    contrasts: Iterable | None = None,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    stated: Mapping | None = None,
    decor_weight: float | None = None,
) -> xr.Dataset:
    """Per claim: the smallest difference the seed count detects, and the seeds a stated one needs.

    Every contrast is a paired (per-seed) comparison tested by a two-sided one-sample t-test on
    the per-seed values, as in :func:`factorial_effects` and :func:`paired_contrasts`. With ``n``
    seeds and the observed SD ``s`` of the per-seed values, the detectable difference is
    ``d_z * s``, where ``d_z`` solves ``power(d_z, n) = power`` (what ``statsmodels``'
    ``TTestPower().solve_power(nobs=n, alpha=alpha, power=power)`` returns; reimplemented here with
    :mod:`scipy.stats.nct` so the package does not depend on statsmodels, and tested against it).
    The seeds needed for a stated difference ``D`` solve ``power(|D| / s, n) = power`` for ``n``,
    rounded up (at least 2). Both rest on the observed SD, itself uncertain with few seeds.

    Parameters
    ----------
    runs : xr.Dataset
        Runs in this module's format (:func:`runs_dataset`).
    metrics : str or list of str, optional
        Per-run variables. Default: every numeric per-run variable.
    contrasts : iterable, optional
        Each an effect name (``masking``, ``whitening``, ``interaction``), a pair ``(a, b)`` of
        regimes or ``"a-b"`` (the per-seed difference ``a - b``). Default:
        :data:`DEFAULT_CONTRASTS`.
    alpha : float
        Two-sided significance level, in (0, 1).
    power : float
        Target power, in (0, 1).
    stated : dict, optional
        Differences to size for, on the metrics' own scales: keys a metric name (every
        contrast) or a ``(contrast, metric)`` pair (that one; wins over a bare metric). Default:
        none (a study design states the differences it sizes for, with their source, in its
        ``[statistics.power] stated`` table).
    decor_weight : float, optional
        Lambda of the ``saliencydecor`` cell; default as in :func:`factorial_effects`.

    Returns
    -------
    xr.Dataset
        Dims ``(metric, contrast)``: ``n_seeds``, ``mean_difference``, ``sd_difference``,
        ``detectable_effect_size`` (d_z), ``detectable_difference`` (d_z x SD, the smallest
        absolute difference detected with the given power), ``stated_difference``,
        ``stated_effect_size``, ``power_at_stated`` (power of the present seed count for the
        stated difference) and ``seeds_needed``. NaN where undefined, with
        ``attrs["nan_reason_<metric>_<contrast>"]``.

    Examples
    --------
    >>> from geomxai.stats import runs_dataset
    >>> runs = runs_dataset([{"regime": k, "seed": s, "acc": v + 0.01 * s + 0.005 * (s % 2) * (k == "sgt")}
    ...     for k, v in {"regular": 0.8, "sgt": 0.82}.items() for s in range(6)])
    >>> pw = power_analysis(runs, "acc", [("sgt", "regular")], stated={"acc": 0.001})
    >>> bool(pw["detectable_difference"].item() > 0)
    True
    >>> int(pw["seeds_needed"].item()) > 6
    True
    """
    r = _Runs(runs)
    names = _metric_names(runs, metrics)
    for label, v in (("alpha", alpha), ("power", power)):
        check(v, label, Interval(Real, 0, 1, closed="neither"))
    known = set(r.regime.tolist())
    cnames = _power_contrasts(contrasts, known)
    lookup = _stated_lookup(stated, cnames, names)
    arrays = _grid((len(names), len(cnames)), _POWER_VARS, ints=("n_seeds",))
    options = {"known": known, "alpha": alpha, "power": power, "decor_weight": decor_weight}
    blocks = (
        ((i, j), _power_cell(r, r.values(name), name, c, lookup.get((c, name), np.nan), **options))
        for i, name in enumerate(names)
        for j, c in enumerate(cnames)
    )
    attrs = _gather(arrays, blocks)
    out = xr.Dataset(
        _variables(arrays, ("metric", "contrast")), coords={"metric": names, "contrast": cnames}
    )
    out["detectable_difference"].attrs["long_name"] = (
        f"smallest |difference| detected with power {power:g} at two-sided alpha {alpha:g}, "
        "from the observed SD of the per-seed values"
    )
    out["seeds_needed"].attrs["long_name"] = (
        f"seeds for power {power:g} at two-sided alpha {alpha:g} for the stated difference"
    )
    out.attrs.update(
        {
            "alpha": float(alpha),
            "power": float(power),
            "test": "two-sided one-sample t-test on per-seed paired values (noncentral t)",
            "stated_source": "none" if not stated else "given",
            **attrs,
        }
    )
    return out


def _is_single_contrast(c) -> bool:
    """A bare ``"a-b"``/effect name, or a pair of regime names (not a tuple of contrasts)."""
    if isinstance(c, str):
        return True
    return len(c) == 2 and all(isinstance(x, str) and x not in EFFECTS and "-" not in x for x in c)
