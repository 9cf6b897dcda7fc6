"""Geometry <-> fidelity: Spearman correlations over every (regime, seed, epoch), bootstrapped.

The metrics linked by default, the labels of the link's own variables and which way each
fidelity metric is better come from :mod:`geomxai.schema`. The function is four blocks: pick the metrics (:func:`_names`), take
one value per point of each (:func:`_points`), correlate every pair (:func:`_correlate`, with
:class:`_Bootstrap` sharing resamples between pairs), and label the result
(:func:`_link_dataset`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np
import xarray as xr
from scipy import stats

from geomxai import schema
from geomxai._checks import Interval, check
from geomxai._hints import close_matches

GEOMETRY_METRICS = schema.geometry_metrics()
"""Geometry metrics linked by default (those present in the results)."""

FIDELITY_METRICS = schema.fidelity_metrics()
"""Saliency-quality metrics linked by default (those present in the results)."""

POINT_DIMS = ("regime", "seed", "epoch")
"""A point of the link: one checkpoint of one run."""

MIN_POINTS = 3

_STATISTICS = ("spearman", "spearman_low", "spearman_high", "p_value")


def _as_list(names) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


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
        hints = {n: close_matches(n, ds.data_vars) for n in missing}
        hint = "; ".join(f"{n!r}: closest {', '.join(c)}" for n, c in hints.items() if c)
        raise ValueError(
            f"{kind} names variables that are not in the results: {', '.join(map(repr, missing))}"
            + (f" ({hint})" if hint else "")
        )
    return names


def _check_arguments(ds, n_boot, ci, layer, min_epoch) -> None:
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds must be an xarray Dataset of results; got {type(ds).__name__}")
    check(n_boot, "n_boot", Interval(Integral, 1, None))
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie in (0, 1); got ci={ci}")
    if layer is not None:
        if "layer" not in ds.coords:
            raise ValueError(f"layer={layer!r} given but the results have no 'layer' coordinate")
        known = [str(v) for v in ds["layer"].values]
        if layer not in known:
            raise ValueError(f"layer {layer!r} is not in the results; layers: {', '.join(known)}")
    if min_epoch and "epoch" not in ds.dims:
        raise ValueError(f"min_epoch={min_epoch} given but the results have no 'epoch' dim")


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


@dataclass
class _Bootstrap:
    """Resamples of the points and their ranks, drawn once and shared by every pair.

    Resamples depend only on which points are kept, and their ranks on one metric and those
    points, so they are drawn per set of points and ranked per (metric, set of points).
    """

    values: dict[str, np.ndarray]
    n_boot: int
    seed: int
    _draws: dict[bytes, np.ndarray] = field(default_factory=dict)
    _ranks: dict[tuple[str, bytes], np.ndarray] = field(default_factory=dict)

    def ranks(self, name: str, keep: np.ndarray) -> np.ndarray:
        key = keep.tobytes()
        if (name, key) not in self._ranks:
            if key not in self._draws:
                n = int(keep.sum())
                self._draws[key] = np.random.default_rng(self.seed).integers(
                    0, n, size=(self.n_boot, n)
                )
            self._ranks[name, key] = stats.rankdata(
                self.values[name][keep][self._draws[key]], axis=1
            )
        return self._ranks[name, key]

    def correlations(self, g: str, f: str, keep: np.ndarray) -> np.ndarray:
        """Spearman rho of every resample (Pearson of the ranks); constant resamples left out."""
        boot = _row_pearson(self.ranks(g, keep), self.ranks(f, keep))
        return boot[np.isfinite(boot)]


def _pair(g: str, f: str, boot: _Bootstrap, ci: float) -> tuple[tuple[float, ...], int, str]:
    """(rho, low, high, p) of one pair, its number of points, and why it is NaN ("" if it is not)."""
    x, y = boot.values[g], boot.values[f]
    keep = np.isfinite(x) & np.isfinite(y)
    n = int(keep.sum())
    nan = (np.nan,) * 4
    if n < MIN_POINTS:
        return (
            nan,
            n,
            (
                f"{n} point(s) with both {g} and {f} finite; a rank correlation needs at least "
                f"{MIN_POINTS}"
            ),
        )
    constant = [name for name, v in ((g, x), (f, y)) if np.ptp(v[keep]) == 0]
    if constant:
        return (
            nan,
            n,
            (
                f"{' and '.join(constant)} constant over the {n} points; a rank correlation is "
                "undefined"
            ),
        )
    result = stats.spearmanr(x[keep], y[keep])
    rho, p = float(result.statistic), float(result.pvalue)
    resampled = boot.correlations(g, f, keep)
    if not resampled.size:
        return (rho, np.nan, np.nan, p), n, "every bootstrap resample had a constant metric"
    tail = 100.0 * (1.0 - ci) / 2.0
    low, high = np.percentile(resampled, [tail, 100.0 - tail])
    return (rho, float(low), float(high), p), n, ""


def _correlate(values, geo_names, fid_names, *, n_boot, ci, seed):
    """Every (geometry, fidelity) pair: statistics (4, G, F), points (G, F), NaN reasons."""
    boot = _Bootstrap(values, n_boot, seed)
    shape = (len(geo_names), len(fid_names))
    statistics = np.full((len(_STATISTICS), *shape), np.nan)
    n_points = np.zeros(shape, dtype=np.int64)
    reasons: dict[str, str] = {}
    for i, g in enumerate(geo_names):
        for j, f in enumerate(fid_names):
            statistics[:, i, j], n_points[i, j], reason = _pair(g, f, boot, ci)
            if reason:
                reasons[f"nan_reason_{g}_vs_{f}"] = reason
    return statistics, n_points, reasons


def _link_dataset(statistics, n_points, reasons, geo_names, fid_names, info) -> xr.Dataset:
    """The link's variables, labelled from the schema, with the settings in attrs."""
    dims = ("geometry", "fidelity")
    out = xr.Dataset(
        {
            **{name: (dims, statistics[k]) for k, name in enumerate(_STATISTICS)},
            "n_points": (dims, n_points),
        },
        coords={"geometry": geo_names, "fidelity": fid_names},
    )
    ci = info["ci"]
    nan_note = (
        f"NaN where fewer than {MIN_POINTS} points have both values finite or a metric is "
        "constant over them; see the spearman attrs nan_reason_<geometry>_vs_<fidelity>"
    )
    for name in _STATISTICS:
        out[name].attrs["nan_reason"] = nan_note
    for name in ("spearman_low", "spearman_high"):
        # The schema's label with the interval's coverage: "lower end of the 95% percentile ..."
        label = schema.label(name).replace("percentile", f"{ci:.0%} percentile")
        out[name].attrs["long_name"] = label
    # Which way each fidelity metric is better, so the link read on its own (without the
    # results it came from, whose variables carry their own `direction`) says how to read a sign.
    directions = {f: schema.direction(f) for f in fid_names}
    out["spearman"].attrs.update(info, fidelity_directions=json.dumps(directions))
    out["spearman"].attrs.update(reasons)
    out.attrs.update(info)
    return schema.annotate(out)


# Over 80 lines by its numpydoc docstring (parameters, notes, a doctested example) only; the body
# is the four named blocks above, about 30 lines.
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
        :data:`FIDELITY_METRICS` (:func:`geomxai.schema.geometry_metrics` and
        :func:`~geomxai.schema.fidelity_metrics`) present in ``ds``.
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
        and ``n_points`` (int), with the schema's attrs (:func:`geomxai.schema.annotate`). Where
        fewer than 3 points are finite or a metric is constant over them, the statistics are NaN
        and ``spearman.attrs["nan_reason_<geometry>_vs_<fidelity>"]`` says which.
        ``spearman.attrs["fidelity_directions"]`` (JSON, from :func:`geomxai.schema.direction`)
        says which way each fidelity metric is better: with ``"lower"`` (MoRF AUC) a negative
        rho means the geometry metric rises with more faithful saliency.

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
    _check_arguments(ds, n_boot, ci, layer, min_epoch)
    # Saliency metrics of several methods or fills: one metric per method (and fill).
    from geomxai.study._summary import expand_variants, split_variants

    ds = split_variants(ds)
    fidelity = None if fidelity is None else expand_variants(ds, _as_list(fidelity))
    geo_names = _names(ds, geometry, GEOMETRY_METRICS, "geometry")
    fid_names = _names(ds, fidelity, tuple(expand_variants(ds, FIDELITY_METRICS)), "fidelity")
    if min_epoch:
        ds = ds.sel(epoch=ds["epoch"] >= min_epoch)
    point_dims = [d for d in POINT_DIMS if d in ds.dims]
    values = {n: _points(ds, n, layer, point_dims) for n in dict.fromkeys(geo_names + fid_names)}
    statistics, n_points, reasons = _correlate(
        values, geo_names, fid_names, n_boot=n_boot, ci=ci, seed=seed
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
    return _link_dataset(statistics, n_points, reasons, geo_names, fid_names, info)


def _first_layer(ds: xr.Dataset) -> str:
    if "layer" in ds.coords and ds.sizes.get("layer", 0):
        return str(ds["layer"].values[0])
    return ""
