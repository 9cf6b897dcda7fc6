"""The HTML geometry report: tables and figures from one results Dataset."""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import numpy as np
import xarray as xr

from geomxai.report._style import new_figure, regime_colour, save

log = logging.getLogger(__name__)

FIDELITY = ("morf_auc", "lerf_auc", "fidelity_gap")
GEOMETRY = ("effective_rank", "mean_abs_corr", "spectrum_alpha", "entanglement")


def _final(da: xr.DataArray) -> xr.DataArray:
    """The last epoch at which this variable is measured."""
    if "epoch" not in da.dims:
        return da
    return da.dropna("epoch", how="all").isel(epoch=-1) if da.notnull().any() else da.isel(epoch=-1)


def _feature_layer(da: xr.DataArray) -> xr.DataArray:
    if "layer" in da.dims:
        return da.isel(layer=0)
    return da


def _mean_ci(values: np.ndarray) -> str:
    """Mean with a 95% interval over seeds (t interval; just the value for one seed)."""
    mean, half = seed_interval(values)
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.4g}" if not np.isfinite(half) else f"{mean:.4g} ± {half:.2g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _per_regime_table(ds: xr.Dataset, variables: dict[str, tuple[str, float]]) -> str:
    rows = []
    for regime in ds.regime.values:
        row = [str(regime), str(ds.sizes.get("seed", 1))]
        for var, (_, scale) in variables.items():
            if var not in ds:
                row.append("n/a")
                continue
            da = _feature_layer(_final(ds[var])).sel(regime=regime)
            row.append(_mean_ci(np.atleast_1d(da.values.astype(float)) * scale))
        rows.append(row)
    return _table(["regime", "seeds", *[label for label, _ in variables.values()]], rows)


def _fig_curves(ds: xr.Dataset, out: Path) -> str | None:
    if "morf_curve" not in ds:
        return None
    fig, ax = new_figure(6.5, 4.2)
    for regime in ds.regime.values:
        colour = regime_colour(str(regime))
        for var, style, label in (("morf_curve", "-", "MoRF"), ("lerf_curve", "--", "LeRF")):
            if var not in ds:
                continue
            curve = _final(ds[var]).sel(regime=regime)
            mean = curve.mean("seed") if "seed" in curve.dims else curve
            ax.plot(
                100 * ds.fraction.values,
                100 * mean.values,
                style,
                color=colour,
                label=f"{regime} {label}",
            )
    ax.set_xlabel("pixels masked (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Masking curves, final checkpoint (lower MoRF = more faithful)")
    ax.legend(fontsize=8, ncol=2)
    return save(fig, out / "masking_curves.png")


def _fig_over_epochs(ds: xr.Dataset, var: str, ylabel: str, out: Path) -> str | None:
    if var not in ds or "epoch" not in ds[var].dims or not ds[var].notnull().any():
        return None
    fig, ax = new_figure(5.5, 3.6)
    da = _feature_layer(ds[var])
    for regime in ds.regime.values:
        series = da.sel(regime=regime)
        series = series.mean("seed") if "seed" in series.dims else series
        ax.plot(
            ds.epoch.values,
            series.values,
            "o-",
            color=regime_colour(str(regime)),
            label=str(regime),
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return save(fig, out / f"{var}_over_epochs.png")


def _fig_spectra(ds: xr.Dataset, out: Path) -> str | None:
    if "corr_spectrum" not in ds:
        return None
    fig, ax = new_figure(5.5, 3.8)
    da = _feature_layer(_final(ds["corr_spectrum"]))
    for regime in ds.regime.values:
        spec = da.sel(regime=regime)
        spec = spec.mean("seed") if "seed" in spec.dims else spec
        values = spec.values[np.isfinite(spec.values) & (spec.values > 0)]
        ax.loglog(
            np.arange(1, values.size + 1),
            values,
            color=regime_colour(str(regime)),
            label=str(regime),
        )
    ax.set_xlabel("component rank k")
    ax.set_ylabel("correlation eigenvalue")
    ax.set_title("Correlation spectrum of the feature layer, final checkpoint")
    ax.legend(fontsize=8)
    return save(fig, out / "correlation_spectra.png")


def _fig_saliency_grid(ds: xr.Dataset, out: Path) -> str | None:
    if "saliency_maps" not in ds:
        return None
    import matplotlib.pyplot as plt

    maps = _final(ds["saliency_maps"])
    maps = maps.isel(seed=0) if "seed" in maps.dims else maps
    n_examples = min(6, maps.sizes["example"])
    regimes = list(ds.regime.values)
    fig, axes = plt.subplots(
        len(regimes) + 1,
        n_examples,
        figsize=(1.6 * n_examples, 1.6 * (len(regimes) + 1)),
        squeeze=False,
    )
    images = None
    if "probe_images" in ds:
        probe = ds["probe_images"]
        extra = {d: 0 for d in probe.dims if d not in ("example", "channel", "height", "width")}
        images = probe.isel(extra).transpose("example", "channel", "height", "width").values
    for j in range(n_examples):
        ax = axes[0, j]
        if images is not None:
            img = images[j]
            ax.imshow(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1), cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        if j == 0:
            ax.set_ylabel("input", fontsize=8)
        for i, regime in enumerate(regimes, start=1):
            ax = axes[i, j]
            ax.imshow(maps.sel(regime=regime).isel(example=j).values, cmap="hot")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(str(regime), fontsize=8, color=regime_colour(str(regime)))
    fig.suptitle("|gradient| saliency of the same test images, final checkpoint", fontsize=10)
    return save(fig, out / "saliency_grid.png")


def _fig_saliency_box(ds: xr.Dataset, out: Path) -> str | None:
    if "saliency_maps" not in ds:
        return None
    fig, ax = new_figure(5.5, 3.6)
    maps = _final(ds["saliency_maps"])
    data, labels, colours = [], [], []
    for regime in ds.regime.values:
        m = maps.sel(regime=regime).values
        m = m.reshape(-1, m.shape[-2] * m.shape[-1])
        # Each map normalised to sum 1 so regimes with larger gradients are comparable.
        m = m / np.clip(m.sum(1, keepdims=True), 1e-12, None)
        data.append(m.ravel() * m.shape[1])
        labels.append(str(regime))
        colours.append(regime_colour(str(regime)))
    parts = ax.boxplot(data, tick_labels=labels, patch_artist=True, showfliers=False)
    for patch, colour in zip(parts["boxes"], colours, strict=True):
        patch.set_facecolor(colour)
        patch.set_alpha(0.6)
    ax.set_ylabel("saliency / mean saliency of its map")
    ax.set_title("Distribution of saliency values")
    return save(fig, out / "saliency_boxplot.png")


def _fig_scatter(ds: xr.Dataset, out: Path) -> str | None:
    pairs = [(g, f) for g in GEOMETRY for f in ("morf_auc",) if g in ds and f in ds]
    if not pairs:
        return None
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(3.4 * len(pairs), 3.2), squeeze=False)
    for ax, (g, f) in zip(axes[0], pairs, strict=True):
        for regime in ds.regime.values:
            x = _feature_layer(ds[g]).sel(regime=regime).values.ravel()
            y = ds[f].sel(regime=regime).values.ravel()
            ax.scatter(x, y, s=14, color=regime_colour(str(regime)), label=str(regime))
        ax.set_xlabel(g.replace("_", " "))
        ax.set_ylabel("MoRF AUC (unit scale)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Geometry vs fidelity, every (regime, seed, epoch)", fontsize=10)
    return save(fig, out / "geometry_vs_fidelity.png")


def _fig_link(ds: xr.Dataset, out: Path) -> str | None:
    if not all(v in ds for v in ("spearman", "spearman_low", "spearman_high")):
        return None
    from geomxai.report._link import plot_link

    ax = plot_link(ds)
    return save(ax.figure, out / "geometry_fidelity_spearman.png")


def seed_interval(values: np.ndarray) -> tuple[float, float]:
    """Mean of per-seed values and the half-width of its 95% t-interval.

    Non-finite values are left out; one value gives a NaN half-width, none a NaN mean.

    Examples
    --------
    >>> mean, half = seed_interval(np.array([0.80, 0.82, 0.84]))
    >>> round(mean, 3), round(half, 3)
    (0.82, 0.05)
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.nan, np.nan
    if values.size == 1:
        return float(values[0]), np.nan
    from scipy import stats

    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return float(values.mean()), float(half)


VERDICT_METRICS = (
    ("test_acc", "higher", "test accuracy"),
    ("morf_auc", "lower", "MoRF masking AUC"),
    ("fidelity_gap", "higher", "LeRF − MoRF gap"),
)


def _verdict(ds: xr.Dataset) -> str:
    """A plain statement of whether saliencydecor beat each baseline on this data.

    With several seeds a difference counts only when the two 95% intervals do not overlap;
    otherwise it is called "not distinguishable". With one seed every call is provisional.
    """
    regimes = [str(r) for r in ds.regime.values]
    if "saliencydecor" not in regimes:
        return "<p>No saliencydecor run in these results; no comparison made.</p>"
    lines = []
    for var, better, label in VERDICT_METRICS:
        if var not in ds:
            continue
        final = _feature_layer(_final(ds[var]))
        ours, ours_h = seed_interval(np.atleast_1d(final.sel(regime="saliencydecor").values))
        for other in regimes:
            if other == "saliencydecor":
                continue
            theirs, theirs_h = seed_interval(np.atleast_1d(final.sel(regime=other).values))
            wins = ours > theirs if better == "higher" else ours < theirs
            separated = np.isfinite(ours_h) and abs(ours - theirs) > ours_h + theirs_h
            if np.isfinite(ours_h) and not separated:
                call = "not distinguishable (the seed intervals overlap)"
            else:
                call = "saliencydecor is better" if wins else "saliencydecor is NOT better"
            lines.append(
                f"{label} ({better} is better): saliencydecor {ours:.4f} vs {other} "
                f"{theirs:.4f} — {call}"
            )
    n_seeds = ds.sizes.get("seed", 1)
    notes = [
        f"Based on {n_seeds} seed(s)"
        + ("; one seed gives no interval, so these calls are provisional." if n_seeds < 2 else "."),
        "A model trained on masked inputs (sgt, saliencydecor) is also more robust to masking, "
        "which can raise its MoRF AUC whatever its saliency; the LeRF − MoRF gap, which compares "
        "two orders on the same model, is the fairer fidelity comparison across regimes.",
    ]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f"<ul>{items}</ul>" + "".join(f"<p>{html.escape(n)}</p>" for n in notes)


CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f3f3f3; }
td:first-child { text-align: left; }
img { max-width: 100%; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 85%; }
"""


def build_report(results: xr.Dataset, out_dir) -> Path:
    """Write a self-contained HTML report (figures as PNG files beside it) of a results Dataset.

    Parameters
    ----------
    results : xr.Dataset
        As returned by :func:`geomxai.study.analyze_runs`: dims ``regime``, ``seed``, ``epoch``,
        ``layer``, ``fraction``, ... Variables that are absent are left out of the report.
    out_dir : path-like
        Created if needed; receives ``index.html`` and ``figures/``.

    Returns
    -------
    Path
        The path of ``index.html``.
    """
    if "regime" not in results.dims:
        raise ValueError(
            f"results must have a 'regime' dimension (from geomxai.study.analyze_runs); got dims "
            f"{tuple(results.dims)}"
        )
    out_dir = Path(out_dir)
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    ds = results
    parts = [f"<h1>geomxai report: {html.escape(str(ds.attrs.get('study', 'results')))}</h1>"]
    meta = {k: ds.attrs.get(k, "unknown") for k in ("created", "hardware", "commit", "dataset")}
    parts.append(_table(["what", "value"], [[k, v] for k, v in meta.items()]))
    if ds.attrs.get("note"):
        parts.append(f"<p><b>Note:</b> {html.escape(str(ds.attrs['note']))}</p>")

    parts.append("<h2>Verdict on this data</h2>" + _verdict(ds))
    parts.append("<h2>Accuracy per regime (Table II form)</h2>")
    parts.append(_per_regime_table(ds, {"test_acc": ("test accuracy (%)", 100.0)}))
    parts.append("<h2>Masking fidelity per regime (Table I form)</h2>")
    parts.append(
        "<p>Area under the accuracy-vs-masked-fraction curve of |gradient| saliency. Unit scale: "
        "fraction and accuracy in [0, 1]; paper scale: accuracy% x masked% (max 10000). Lower MoRF "
        "and a larger LeRF-minus-MoRF gap mean more faithful saliency.</p>"
    )
    parts.append(
        _per_regime_table(
            ds,
            {
                "morf_auc": ("MoRF AUC", 1.0),
                "morf_auc_paper": ("MoRF AUC (paper scale)", 1.0),
                "lerf_auc": ("LeRF AUC", 1.0),
                "fidelity_gap": ("LeRF − MoRF", 1.0),
            },
        )
    )
    parts.append("<h2>Geometry and saliency quality per regime</h2>")
    parts.append(
        _per_regime_table(
            ds,
            {
                "effective_rank": ("effective rank", 1.0),
                "mean_abs_corr": ("mean |corr|", 1.0),
                "spectrum_alpha": ("spectrum alpha", 1.0),
                "entanglement": ("entanglement", 1.0),
                "topq_contrast": ("top-10% contrast", 1.0),
                "gini": ("Gini", 1.0),
            },
        )
    )
    figs = [
        ("MoRF and LeRF curves (Fig. 3 form)", _fig_curves(ds, figures)),
        ("Saliency maps (Fig. 2/4 form)", _fig_saliency_grid(ds, figures)),
        ("Saliency value distributions (Fig. 2, right)", _fig_saliency_box(ds, figures)),
        ("Correlation spectra", _fig_spectra(ds, figures)),
        (
            "Effective rank over epochs",
            _fig_over_epochs(ds, "effective_rank", "effective rank", figures),
        ),
        (
            "Axis-swap rate over epochs",
            _fig_over_epochs(ds, "swap_rate", "swap rate (share of axes)", figures),
        ),
        ("Test accuracy over epochs", _fig_over_epochs(ds, "test_acc", "test accuracy", figures)),
        ("MoRF AUC over epochs", _fig_over_epochs(ds, "morf_auc", "MoRF AUC (unit)", figures)),
        ("Geometry vs fidelity", _fig_scatter(ds, figures)),
    ]
    for title, path in figs:
        if path:
            rel = Path(path).relative_to(out_dir)
            parts.append(
                f"<h2>{html.escape(title)}</h2><img src='{rel}' alt='{html.escape(title)}'>"
            )
    if "spearman" in ds:
        rows = []
        sp = ds["spearman"]
        for g in sp["geometry"].values:
            for f in sp["fidelity"].values:
                cell = float(sp.sel(geometry=g, fidelity=f))
                lo = float(ds["spearman_low"].sel(geometry=g, fidelity=f))
                hi = float(ds["spearman_high"].sel(geometry=g, fidelity=f))
                n = ds["n_points"].sel(geometry=g, fidelity=f) if "n_points" in ds else None
                rows.append(
                    [
                        str(g),
                        str(f),
                        f"{cell:.3f}" if np.isfinite(cell) else "n/a",
                        f"[{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "n/a",
                        "" if n is None else str(int(n)),
                    ]
                )
        ci = float(sp.attrs.get("ci", 0.95))
        parts.append(
            f"<h2>Spearman correlation, geometry vs fidelity (bootstrap {ci:.0%} interval)</h2>"
        )
        points = sp.attrs.get("points")
        if points:
            parts.append(
                f"<p>One point per checkpoint: {html.escape(str(points))}. Checkpoints of one "
                "run are not independent, so the interval describes the spread over checkpoints, "
                "not over training runs.</p>"
            )
        heatmap = _fig_link(ds, figures)
        if heatmap:
            rel = Path(heatmap).relative_to(out_dir)
            parts.append(f"<img src='{rel}' alt='Spearman rho, geometry vs fidelity'>")
        parts.append(_table(["geometry", "fidelity", "rho", f"{ci:.0%} interval", "points"], rows))
    configs = ds.attrs.get("configs")
    if configs:
        try:
            pretty = json.dumps(json.loads(configs), indent=2, sort_keys=True)
        except (TypeError, ValueError):
            pretty = str(configs)
        parts.append(f"<h2>Configurations</h2><pre>{html.escape(pretty)}</pre>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>geomxai report</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    log.info("report written to %s", index)
    return index
