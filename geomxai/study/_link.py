"""Geometry <-> fidelity: Spearman correlations over every (regime, seed, epoch), bootstrapped."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xarray as xr
from scipy import stats

GEOMETRY_METRICS = (
    "effective_rank",
    "participation_ratio",
    "mean_abs_corr",
    "corr_offdiag_fro",
    "spectrum_alpha",
    "entanglement",
    "swap_rate",
)
"""Geometry metrics linked by default (those present in the results)."""

FIDELITY_METRICS = (
    "morf_auc",
    "lerf_auc",
    "fidelity_gap",
    "topq_contrast",
    "gini",
    "saliency_stability",
    "mask_auroc",
    "mass_inside",
    "pointing_game",
)
"""Saliency-quality metrics linked by default (those present in the results)."""

POINT_DIMS = ("regime", "seed", "epoch")
"""A point of the link: one checkpoint of one run."""

MIN_POINTS = 3


def _names(ds: xr.Dataset, requested, defaults: tuple[str, ...], kind: str) -> list[str]:
    if requested is None:
        names = [n for n in defaults if n in ds.data_vars]
        if not names:
            raise ValueError(
                f"results hold none of the default {kind} metrics ({', '.join(defaults)}); got "
                f"variables {', '.join(map(str, ds.data_vars)) or '(none)'}"
            )
        return names
    names = [requested] if isinstance(requested, str) else list(requested)
    if not names:
        raise ValueError(f"{kind} must name at least one variable; got an empty list")
    missing = [n for n in names if n not in ds.data_vars]
    if missing:
        import difflib

        hints = {
            n: difflib.get_close_matches(n, list(map(str, ds.data_vars)), n=3) for n in missing
        }
        hint = "; ".join(f"{n!r}: closest {', '.join(c)}" for n, c in hints.items() if c)
        raise ValueError(
            f"{kind} names variables that are not in the results: {', '.join(map(repr, missing))}"
            + (f" ({hint})" if hint else "")
        )
    return names


def _points(ds: xr.Dataset, name: str, layer, point_dims: list[str]) -> np.ndarray:
    """One value per (regime, seed, epoch) of variable ``name``, flattened in a fixed order."""
    da = ds[name]
    if "layer" in da.dims:
        da = da.isel(layer=0) if layer is None else da.sel(layer=layer)
    extra = [d for d in da.dims if d not in point_dims]
    if extra:
        raise ValueError(
            f"variable {name!r} has dims {tuple(da.dims)}; a link needs one number per "
            f"({', '.join(point_dims)}), so dims {tuple(extra)} must be selected away first"
        )
    shape = [ds.sizes[d] for d in point_dims]
    coords = {d: ds[d].values for d in point_dims if d in ds.coords}
    template = xr.DataArray(np.zeros(shape), coords=coords, dims=point_dims)
    return np.asarray(da.broadcast_like(template).transpose(*point_dims).values, float).ravel()


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``; NaN for a constant row."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / den, np.nan)


def link_geometry_fidelity(
    ds: xr.Dataset,
    *,
    geometry: str | Iterable[str] | None = None,
    fidelity: str | Iterable[str] | None = None,
    layer: str | None = None,
    min_epoch: int = 0,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> xr.Dataset:
    """Spearman correlation of every geometry metric with every fidelity metric, with bootstrap CIs.

    A point is one checkpoint of one run, i.e. one (regime, seed, epoch) of the results; a pair of
    metrics uses the points where both values are finite.

    Parameters
    ----------
    ds : xr.Dataset
        Results of :func:`analyze_runs` (or :func:`open_results`; dask-backed arrays are computed):
        dims ``regime``, ``seed``, ``epoch``, ``layer``, ... Variables without one of the point
        dims are broadcast along it.
    geometry, fidelity : str or list of str, optional
        Variables to correlate. Default: those of :data:`GEOMETRY_METRICS` and
        :data:`FIDELITY_METRICS` present in ``ds``.
    layer : str, optional
        The layer at which variables with a ``layer`` dim are taken. Default: the first layer,
        which is the feature layer when the analysis ran with its default layers.
    min_epoch : int
        Checkpoints of earlier epochs are left out. ``geomxai study`` passes 1: epoch 0 is the
        untrained initial model, shared by regimes with the same architecture and seed, and
        untrained points can dominate a rank correlation that is meant to be about training.
    n_boot : int
        Bootstrap resamples. For every pair the resampled indices are
        ``np.random.default_rng(seed).integers(0, n, size=(n_boot, n))`` over its ``n`` points, so
        pairs with the same points share the same resamples.
    ci : float
        Coverage of the percentile interval, in (0, 1).
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    xr.Dataset
        Dims ``(geometry, fidelity)``; variables ``spearman`` (rho over all points),
        ``spearman_low`` and ``spearman_high`` (percentile bootstrap interval; resamples whose
        ranks are constant are left out), ``p_value`` (:func:`scipy.stats.spearmanr`, two-sided)
        and ``n_points`` (int). Where fewer than 3 points are finite or a metric is constant over
        them, the statistics are NaN and ``spearman.attrs["nan_reason_<geometry>_vs_<fidelity>"]``
        says which.

    Notes
    -----
    Points of one run at consecutive epochs are not independent, so a bootstrap over points is
    optimistic when a study has few runs and many epochs; the interval describes the spread over
    checkpoints, not over training runs.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> x = np.arange(6.0).reshape(1, 1, 6)
    >>> ds = xr.Dataset(
    ...     {"effective_rank": (("regime", "seed", "epoch"), x),
    ...      "morf_auc": (("regime", "seed", "epoch"), -(x**3))},
    ...     coords={"regime": ["regular"], "seed": [0], "epoch": np.arange(6)},
    ... )
    >>> link = link_geometry_fidelity(ds, n_boot=200)
    >>> float(link["spearman"].sel(geometry="effective_rank", fidelity="morf_auc"))
    -1.0
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds must be an xarray Dataset of results; got {type(ds).__name__}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer; got n_boot={n_boot!r}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie in (0, 1); got ci={ci}")
    geo_names = _names(ds, geometry, GEOMETRY_METRICS, "geometry")
    fid_names = _names(ds, fidelity, FIDELITY_METRICS, "fidelity")
    if layer is not None:
        if "layer" not in ds.coords:
            raise ValueError(f"layer={layer!r} given but the results have no 'layer' coordinate")
        known = [str(v) for v in ds["layer"].values]
        if layer not in known:
            raise ValueError(f"layer {layer!r} is not in the results; layers: {', '.join(known)}")
    if min_epoch:
        if "epoch" not in ds.dims:
            raise ValueError(f"min_epoch={min_epoch} given but the results have no 'epoch' dim")
        ds = ds.sel(epoch=ds["epoch"] >= min_epoch)
    point_dims = [d for d in POINT_DIMS if d in ds.dims]
    values = {n: _points(ds, n, layer, point_dims) for n in dict.fromkeys(geo_names + fid_names)}

    shape = (len(geo_names), len(fid_names))
    rho, low, high, p_value = (np.full(shape, np.nan) for _ in range(4))
    n_points = np.zeros(shape, dtype=np.int64)
    reasons: dict[str, str] = {}
    tail = 100.0 * (1.0 - ci) / 2.0
    # Resamples and their ranks depend only on which points are kept and on one metric, so they
    # are drawn and ranked once per (set of points) and (metric, set of points), not per pair.
    draws: dict[bytes, np.ndarray] = {}
    ranks: dict[tuple[str, bytes], np.ndarray] = {}

    def resampled_ranks(name: str, keep: np.ndarray, key: bytes) -> np.ndarray:
        if (name, key) not in ranks:
            if key not in draws:
                rng = np.random.default_rng(seed)
                draws[key] = rng.integers(0, int(keep.sum()), size=(n_boot, int(keep.sum())))
            ranks[name, key] = stats.rankdata(values[name][keep][draws[key]], axis=1)
        return ranks[name, key]

    for i, g in enumerate(geo_names):
        for j, f in enumerate(fid_names):
            x, y = values[g], values[f]
            keep = np.isfinite(x) & np.isfinite(y)
            n = int(keep.sum())
            n_points[i, j] = n
            pair = f"nan_reason_{g}_vs_{f}"
            if n < MIN_POINTS:
                reasons[pair] = (
                    f"{n} point(s) with both {g} and {f} finite; a rank correlation needs at "
                    f"least {MIN_POINTS}"
                )
                continue
            constant = [name for name, v in ((g, x), (f, y)) if np.ptp(v[keep]) == 0]
            if constant:
                reasons[pair] = (
                    f"{' and '.join(constant)} constant over the {n} points; a rank correlation "
                    "is undefined"
                )
                continue
            result = stats.spearmanr(x[keep], y[keep])
            rho[i, j], p_value[i, j] = float(result.statistic), float(result.pvalue)
            key = keep.tobytes()
            boot = _row_pearson(resampled_ranks(g, keep, key), resampled_ranks(f, keep, key))
            boot = boot[np.isfinite(boot)]
            if boot.size:
                low[i, j], high[i, j] = np.percentile(boot, [tail, 100.0 - tail])
            else:
                reasons[pair] = "every bootstrap resample had a constant metric"

    dims = ("geometry", "fidelity")
    out = xr.Dataset(
        {
            "spearman": (dims, rho),
            "spearman_low": (dims, low),
            "spearman_high": (dims, high),
            "p_value": (dims, p_value),
            "n_points": (dims, n_points),
        },
        coords={"geometry": geo_names, "fidelity": fid_names},
    )
    info = {
        "n_boot": int(n_boot),
        "ci": float(ci),
        "bootstrap_seed": int(seed),
        "layer": layer if layer is not None else _first_layer(ds),
        "min_epoch": int(min_epoch),
        "points": "("
        + ", ".join(point_dims)
        + ") with both values finite"
        + (f", epoch >= {min_epoch}" if min_epoch else ""),
    }
    out["spearman"].attrs.update(info, long_name="Spearman rank correlation over checkpoints")
    nan_note = (
        f"NaN where fewer than {MIN_POINTS} points have both values finite or a metric is "
        "constant over them; see the spearman attrs nan_reason_<geometry>_vs_<fidelity>"
    )
    for var in ("spearman", "spearman_low", "spearman_high", "p_value"):
        out[var].attrs["nan_reason"] = nan_note
    out["spearman_low"].attrs["long_name"] = f"lower end of the {ci:.0%} percentile bootstrap CI"
    out["spearman_high"].attrs["long_name"] = f"upper end of the {ci:.0%} percentile bootstrap CI"
    out["p_value"].attrs["long_name"] = "two-sided p-value of scipy.stats.spearmanr"
    out["spearman"].attrs.update(reasons)
    out.attrs.update(info)
    return out


def _first_layer(ds: xr.Dataset) -> str:
    if "layer" in ds.coords and ds.sizes.get("layer", 0):
        return str(ds["layer"].values[0])
    return ""
