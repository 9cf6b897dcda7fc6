"""Figures of the geometry <-> fidelity link: one scatter per metric pair, a heatmap of all pairs.

Axis and tick labels are the variables' labels in :mod:`geomxai.schema` (an undeclared variable
is labelled by its name); every label from the data is drawn as it is written, never as
mathtext (:func:`geomxai.report._style.plain`).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from geomxai import schema
from geomxai.report._style import new_figure, plain, regime_colour

LINK_VARIABLES = ("spearman", "spearman_low", "spearman_high")


def _label(name: str, layer: str | None) -> str:
    text = schema.label(name)
    return plain(f"{text} ({layer})" if layer else text)


def _pair_link(ds: xr.Dataset, link, geometry: str, fidelity: str, layer) -> xr.Dataset | None:
    """The link statistics of one pair: from ``link`` or from ``ds`` itself; None where the
    results hold none (a report draws what the analysis computed and computes nothing)."""
    for source in (link, ds):
        if source is None or not all(v in source for v in LINK_VARIABLES):
            continue
        linked_at = source["spearman"].attrs.get("layer")
        if source is ds and layer is not None and linked_at not in (None, layer):
            continue  # the saved link was taken at another layer
        if geometry in source["geometry"].values and fidelity in source["fidelity"].values:
            return source.sel(geometry=geometry, fidelity=fidelity)
    if link is not None:
        raise ValueError(
            f"link has no entry for geometry={geometry!r}, fidelity={fidelity!r}; it covers "
            f"geometry {list(map(str, link['geometry'].values))} and fidelity "
            f"{list(map(str, link['fidelity'].values))}"
        )
    return None


def plot_geometry_fidelity(
    ds: xr.Dataset,
    link: xr.Dataset | None = None,
    *,
    geometry: str = "effective_rank",
    fidelity: str = "morf_auc",
    layer: str | None = None,
    ax=None,
):
    """Scatter of one geometry metric against one fidelity metric, a point per checkpoint.

    Parameters
    ----------
    ds : xr.Dataset
        Results of :func:`geomxai.study.analyze_runs` (dims ``regime``, ``seed``, ``epoch``, ...).
    link : xr.Dataset, optional
        :func:`geomxai.study.link_geometry_fidelity` of ``ds``; by default the ``spearman``
        variables already in ``ds`` (as :func:`geomxai.study.linked` saves them). Without
        either, the points are drawn and the title says the results hold no link.
    geometry, fidelity : str
        The two variables.
    layer : str, optional
        Layer of variables with a ``layer`` dim; default the first (the feature layer).
    ax : matplotlib Axes, optional
        Drawn into; a new figure otherwise.

    Returns
    -------
    matplotlib Axes
        Points coloured by regime (the report's colours), Spearman rho with its bootstrap
        interval in the title.
    """
    for name in (geometry, fidelity):
        if name not in ds.data_vars:
            raise ValueError(f"{name!r} is not a variable of the results")
    if ax is None:
        _, ax = new_figure(4.8, 3.8)
    stats = _pair_link(ds, link, geometry, fidelity, layer)

    def at_layer(da: xr.DataArray) -> xr.DataArray:
        if "layer" not in da.dims:
            return da
        return da.isel(layer=0) if layer is None else da.sel(layer=layer)

    x_all, y_all = xr.broadcast(at_layer(ds[geometry]), at_layer(ds[fidelity]))
    regimes = [str(r) for r in ds["regime"].values] if "regime" in x_all.dims else [None]
    for regime in regimes:
        x = x_all.sel(regime=regime) if regime is not None else x_all
        y = y_all.sel(regime=regime) if regime is not None else y_all
        x, y = np.asarray(x.values, float).ravel(), np.asarray(y.values, float).ravel()
        keep = np.isfinite(x) & np.isfinite(y)
        ax.scatter(
            x[keep],
            y[keep],
            s=18,
            alpha=0.8,
            color=regime_colour(regime or ""),
            label=plain(regime or "results"),
        )

    def layer_of(name: str) -> str | None:
        if "layer" not in ds[name].dims:
            return None
        return layer if layer is not None else str(ds[name]["layer"].values[0])

    ax.set_xlabel(_label(geometry, layer_of(geometry)))
    ax.set_ylabel(_label(fidelity, layer_of(fidelity)))
    if stats is None:
        ax.set_title("no link in these results (geomxai.study.linked computes it)", fontsize=9)
        ax.legend(fontsize=7)
        return ax
    rho = float(stats["spearman"])
    lo, hi = float(stats["spearman_low"]), float(stats["spearman_high"])
    n = int(stats["n_points"]) if "n_points" in stats else None
    suffix = f", n = {n}" if n is not None else ""
    if np.isfinite(rho):
        ax.set_title(f"Spearman ρ = {rho:.2f} [{lo:.2f}, {hi:.2f}]{suffix}", fontsize=10)
    else:
        ax.set_title(f"Spearman ρ undefined{suffix}", fontsize=10)
    ax.legend(fontsize=7)
    return ax


def plot_link(link: xr.Dataset, ax=None):
    """Heatmap of Spearman rho, geometry (rows) against fidelity (columns), CIs annotated.

    Parameters
    ----------
    link : xr.Dataset
        :func:`geomxai.study.link_geometry_fidelity`'s result, or results that hold its variables.
    ax : matplotlib Axes, optional
        Drawn into; a new figure otherwise.

    Returns
    -------
    matplotlib Axes
        Cells coloured on a diverging scale fixed to [-1, 1]; each holds rho and its interval
        (``n/a`` where undefined).
    """
    missing = [v for v in LINK_VARIABLES if v not in link]
    if missing:
        raise ValueError(
            f"link lacks {', '.join(missing)}; pass the result of "
            "geomxai.study.link_geometry_fidelity"
        )
    rho = link["spearman"].transpose("geometry", "fidelity")
    low = link["spearman_low"].transpose("geometry", "fidelity").values
    high = link["spearman_high"].transpose("geometry", "fidelity").values
    geo = [str(g) for g in rho["geometry"].values]
    fid = [str(f) for f in rho["fidelity"].values]
    if ax is None:
        _, ax = new_figure(1.0 + 1.45 * len(fid), 1.0 + 0.62 * len(geo))
    image = ax.imshow(
        np.ma.masked_invalid(rho.values), cmap="RdBu_r", vmin=-1.0, vmax=1.0, aspect="auto"
    )
    ax.grid(False)
    ax.set_xticks(range(len(fid)), [plain(schema.label(f)) for f in fid], rotation=30, ha="right")
    ax.set_yticks(range(len(geo)), [plain(schema.label(g)) for g in geo])
    for i in range(len(geo)):
        for j in range(len(fid)):
            r = rho.values[i, j]
            if np.isfinite(r):
                text = f"{r:.2f}\n[{low[i, j]:.2f}, {high[i, j]:.2f}]"
                colour = "white" if abs(r) > 0.6 else "black"
            else:
                text, colour = "n/a", "grey"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    ax.figure.colorbar(image, ax=ax, label="Spearman ρ")
    ci = link["spearman"].attrs.get("ci", link.attrs.get("ci"))
    interval = f"{float(ci):.0%} bootstrap interval" if ci is not None else "bootstrap interval"
    ax.set_title(f"Geometry vs fidelity: Spearman ρ [{interval}]", fontsize=10)
    return ax
