"""The HTML geometry report: tables and figures from one results Dataset.

The page is :data:`SECTIONS`, a list of functions in page order; each takes the report's
:class:`_Page` (the results and the figure folder) and returns its part of the HTML, or ``None``
to be left out (a variable the results do not hold). Column headers, axis labels and which way
is better come from :mod:`geomxai.schema`; the saliency method named in the text is the one the
analysis used (the results' ``saliency_method`` attr). Names from the data (regimes, layers, the
method) are drawn letter for letter, never as mathtext (``_style.plain``).
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from geomxai import schema
from geomxai._fs import atomic_folder
from geomxai.report._style import new_figure, plain, regime_colour, save

log = logging.getLogger(__name__)

SCATTER_GEOMETRY = ("effective_rank", "mean_abs_corr", "spectrum_alpha", "entanglement")
"""Geometry metrics drawn against MoRF AUC in the report's scatter figure."""

SIMILARITY_VARIABLES = ("cka_previous", "cka_final", "procrustes_previous", "procrustes_final")
"""Representation-similarity variables drawn over epochs (the dynamics block of the schema)."""

VERDICT_METRICS = ("test_acc", "morf_auc", "fidelity_gap")
"""Variables the verdict compares saliencydecor on; direction and label from the schema."""

SALIENCY_LABELS = {
    "gradient": "gradient",
    "abs_gradient": "|gradient|",
    "input_x_gradient": "input × gradient",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "integrated gradients",
}
"""How the page names the methods of :func:`geomxai.attribution.saliency`; another is named as
it is."""


@dataclass(frozen=True)
class _Page:
    ds: xr.Dataset
    out_dir: Path
    figures: Path

    def image(self, path: str | None, title: str, *, heading: bool = True) -> str | None:
        if not path:
            return None
        rel = Path(path).relative_to(self.out_dir)
        head = f"<h2>{html.escape(title)}</h2>" if heading else ""
        return f"{head}<img src='{rel}' alt='{html.escape(title)}'>"


def _saliency_method(ds: xr.Dataset) -> str | None:
    """The saliency method the results were analysed with, or ``None`` if they do not say.

    From ``attrs["saliency_method"]``, else from the analysis options saved as JSON in
    ``attrs["analysis"]`` or ``attrs["analysis_options"]`` (results written before the attr).
    """
    if ds.attrs.get("saliency_method"):
        return str(ds.attrs["saliency_method"])
    for key in ("analysis", "analysis_options"):
        try:
            method = json.loads(ds.attrs[key]).get("saliency_method")
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if method:
            return str(method)
    return None


def _saliency_text(ds: xr.Dataset) -> str:
    method = _saliency_method(ds)
    if method is None:
        return "saliency (method not recorded in the results)"
    return f"{SALIENCY_LABELS.get(method, method)} saliency"


# ---- values and tables


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


def _per_regime_table(ds: xr.Dataset, columns: tuple[str, ...], *, percent=()) -> str:
    """Final-epoch mean ± seed interval of each variable per regime; ``percent`` ones x 100."""
    rows = []
    for regime in ds.regime.values:
        row = [str(regime), str(ds.sizes.get("seed", 1))]
        for var in columns:
            if var not in ds:
                row.append("n/a")
                continue
            da = _feature_layer(_final(ds[var])).sel(regime=regime)
            scale = 100.0 if var in percent else 1.0
            row.append(_mean_ci(np.atleast_1d(da.values.astype(float)) * scale))
        rows.append(row)
    labels = [schema.label(v) + (" (%)" if v in percent else "") for v in columns]
    return _table(["regime", "seeds", *labels], rows)


def seed_interval(values: np.ndarray) -> tuple[float, float]:
    """Mean of per-seed values and the half-width of its 95% t-interval
    (:func:`geomxai.stats.t_interval`, the one interval over seeds).

    Non-finite values are left out; one value gives a NaN half-width, none a NaN mean.

    Examples
    --------
    >>> mean, half = seed_interval(np.array([0.80, 0.82, 0.84]))
    >>> round(mean, 3), round(half, 3)
    (0.82, 0.05)
    """
    from geomxai.stats import t_interval

    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.nan, np.nan
    if values.size == 1:
        return float(values[0]), np.nan
    mean, low, high, _ = t_interval(values)
    return mean, (high - low) / 2 if np.isfinite(low) else 0.0


# ---- figures


def _measured(ds: xr.Dataset, var: str) -> bool:
    """The results hold ``var`` with at least one finite value (an unlabelled analysis, or a
    probe below a metric's minimum, leaves it all NaN: then its figure is left out)."""
    return var in ds and bool(ds[var].notnull().any())


def _fig_curves(ds: xr.Dataset, out: Path) -> str | None:
    if not _measured(ds, "morf_curve"):
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
                label=plain(f"{regime} {label}"),
            )
    ax.set_xlabel("pixels masked (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Masking curves, final checkpoint (lower MoRF = more faithful)")
    ax.legend(fontsize=8, ncol=2)
    return save(fig, out / "masking_curves.png")


def _over_training(ds: xr.Dataset, var: str) -> bool:
    """``var`` is measured at two checkpoints or more: a line over epochs has something to show
    (one model's single checkpoint would draw one dot)."""
    if var not in ds or "epoch" not in ds[var].dims:
        return False
    measured = ds[var].notnull()
    others = [d for d in measured.dims if d != "epoch"]
    return int((measured.any(others) if others else measured).sum()) >= 2


def _training_time(ds: xr.Dataset) -> tuple[str, str]:
    """What the ``epoch`` coordinate counts, singular and plural: epochs, or the optimizer steps
    of results whose ``attrs["checkpoint_index"]`` is ``"step"`` (a training callback's
    snapshots, ``analyze_checkpoints(index="step")``)."""
    if ds.attrs.get("checkpoint_index") == "step":
        return "optimizer step", "optimizer steps"
    return "epoch", "epochs"


def _epoch_axis(ax, ds: xr.Dataset) -> None:
    """The training-time x axis (epochs or optimizer steps, :func:`_training_time`) with ticks
    at whole numbers only (never 1.5)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(_training_time(ds)[0])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _fig_over_epochs(ds: xr.Dataset, var: str, out: Path) -> str | None:
    if not _over_training(ds, var):
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
            label=plain(regime),
        )
    _epoch_axis(ax, ds)
    ax.set_ylabel(plain(schema.label(var)))
    ax.legend(fontsize=8)
    return save(fig, out / f"{var}_over_epochs.png")


def _fig_spectra(ds: xr.Dataset, out: Path) -> str | None:
    if not _measured(ds, "corr_spectrum"):
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
            label=plain(regime),
        )
    ax.set_xlabel("component rank k")
    ax.set_ylabel(schema.label("corr_spectrum"))
    ax.set_title("Correlation spectrum of the feature layer, final checkpoint")
    ax.legend(fontsize=8)
    return save(fig, out / "correlation_spectra.png")


def _example_maps(ds: xr.Dataset) -> xr.DataArray | None:
    """The example saliency maps, or None where the results hold none to show: no
    ``saliency_maps`` variable, an ``example`` dim of size 0, or every value NaN."""
    if "saliency_maps" not in ds:
        return None
    maps = ds["saliency_maps"]
    if maps.sizes.get("example", 0) == 0 or maps.size == 0 or not bool(maps.notnull().any()):
        return None
    return maps


def _fig_saliency_grid(ds: xr.Dataset, out: Path) -> str | None:
    maps = _example_maps(ds)
    if maps is None:
        return None
    import matplotlib.pyplot as plt

    maps = _final(maps)
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
            img = _displayable(images[j])
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
                ax.set_ylabel(plain(regime), fontsize=8, color=regime_colour(str(regime)))
    title = f"{_saliency_text(ds)} of the same test images, final checkpoint"
    fig.suptitle(plain(title[0].upper() + title[1:]), fontsize=10)
    return save(fig, out / "saliency_grid.png")


def _displayable(image: np.ndarray) -> np.ndarray:
    """An image (c, h, w) as imshow shows it: as it is in [0, 1], else stretched to [0, 1].

    Normalised inputs (ImageNet mean and std, a timm config) lie outside [0, 1]; imshow would
    clip them and complain.
    """
    lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
    if lo >= 0.0 and hi <= 1.0:
        return image
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def _fig_similarity(ds: xr.Dataset, out: Path) -> str | None:
    """Linear CKA and Procrustes distance of the feature layer over training, per regime."""
    panels = [v for v in SIMILARITY_VARIABLES if "epoch" in ds.get(v, xr.DataArray()).dims]
    panels = [v for v in panels if _over_training(ds, v)]
    if not panels:
        return None
    import matplotlib.pyplot as plt

    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.2 * rows), squeeze=False)
    for ax, var in zip(axes.flat, panels, strict=False):
        da = _feature_layer(ds[var])
        for regime in ds.regime.values:
            series = da.sel(regime=regime)
            series = series.mean("seed") if "seed" in series.dims else series
            colour = regime_colour(str(regime))
            ax.plot(ds.epoch.values, series.values, "o-", color=colour, label=plain(regime))
        _epoch_axis(ax, ds)
        ax.set_ylabel(plain(schema.label(var)), fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Representation similarity of the feature layer's probe features", fontsize=10)
    fig.tight_layout()
    return save(fig, out / "representation_similarity.png")


def _fig_saliency_box(ds: xr.Dataset, out: Path) -> str | None:
    maps = _example_maps(ds)
    if maps is None:
        return None
    maps = _final(maps)
    data, labels, colours = [], [], []
    for regime in ds.regime.values:
        m = maps.sel(regime=regime).values
        m = m.reshape(-1, m.shape[-2] * m.shape[-1])
        # Each map normalised to sum 1 so regimes with larger gradients are comparable.
        m = m / np.clip(m.sum(1, keepdims=True), 1e-12, None)
        values = m.ravel() * m.shape[1]
        data.append(values[np.isfinite(values)])
        labels.append(plain(regime))
        colours.append(regime_colour(str(regime)))
    fig, ax = new_figure(5.5, 3.6)
    parts = ax.boxplot(data, tick_labels=labels, patch_artist=True, showfliers=False)
    for patch, colour in zip(parts["boxes"], colours, strict=True):
        patch.set_facecolor(colour)
        patch.set_alpha(0.6)
    ax.set_ylabel("saliency / mean saliency of its map")
    ax.set_title("Distribution of saliency values")
    return save(fig, out / "saliency_boxplot.png")


def _fig_scatter(ds: xr.Dataset, out: Path) -> str | None:
    # A panel of one point (one model's single checkpoint) shows no relation: left out.
    pairs = [
        (g, f)
        for g in SCATTER_GEOMETRY
        for f in ("morf_auc",)
        if _measured(ds, g) and _measured(ds, f) and _scatter_points(ds, g, f) >= 2
    ]
    if not pairs:
        return None
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(3.4 * len(pairs), 3.2), squeeze=False)
    for ax, (g, f) in zip(axes[0], pairs, strict=True):
        for regime in ds.regime.values:
            x = _feature_layer(ds[g]).sel(regime=regime).values.ravel()
            y = ds[f].sel(regime=regime).values.ravel()
            ax.scatter(x, y, s=14, color=regime_colour(str(regime)), label=plain(regime))
        ax.set_xlabel(plain(schema.label(g)))
        ax.set_ylabel(plain(f"{schema.label(f)} (unit scale)"))
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Geometry vs fidelity, every (regime, seed, epoch)", fontsize=10)
    return save(fig, out / "geometry_vs_fidelity.png")


def _scatter_points(ds: xr.Dataset, g: str, f: str) -> int:
    """The (regime, seed, epoch) points where geometry ``g`` and fidelity ``f`` are both finite."""
    x, y = xr.broadcast(_feature_layer(ds[g]), ds[f])
    return int((np.isfinite(x.values) & np.isfinite(y.values)).sum())


def _fig_link(ds: xr.Dataset, out: Path) -> str | None:
    if not all(v in ds for v in ("spearman", "spearman_low", "spearman_high")):
        return None
    from geomxai.report._link import plot_link

    ax = plot_link(ds)
    return save(ax.figure, out / "geometry_fidelity_spearman.png")


# ---- sections, in page order


def _header(page: _Page) -> str:
    ds = page.ds
    parts = [f"<h1>geomxai report: {html.escape(str(ds.attrs.get('study', 'results')))}</h1>"]
    meta = {k: ds.attrs.get(k, "unknown") for k in ("created", "hardware", "commit", "dataset")}
    parts.append(_table(["what", "value"], [[k, v] for k, v in meta.items()]))
    if ds.attrs.get("note"):
        parts.append(f"<p><b>Note:</b> {html.escape(str(ds.attrs['note']))}</p>")
    return "".join(parts)


def _verdict(page: _Page) -> str | None:
    """What the results can say about saliencydecor against each baseline.

    A report computes no statistics: the one verdict rule (paired by seed, corrected for
    multiplicity, :func:`geomxai.stats.verdict`) is applied by a study's statistics stage, and
    its calls are in a study's report. Results of single analyses carry per-regime values only,
    shown in the tables below without a call.
    """
    ds = page.ds
    regimes = [str(r) for r in ds.regime.values] if "regime" in ds.dims else []
    if len(regimes) < 2:
        return None
    notes = [
        "These results hold per-regime values only; geomxai calls a difference better or worse "
        "only from paired, multiplicity-corrected statistics over seeds, which a study design "
        "computes (geomxai study DESIGN.toml; its report states each call and its correction).",
        "A model trained on masked inputs (sgt, saliencydecor) is also more robust to masking, "
        "which can raise its MoRF AUC whatever its saliency; the LeRF − MoRF gap, which compares "
        "two orders on the same model, is the fairer fidelity comparison across regimes.",
    ]
    return "<h2>Verdict on this data</h2>" + "".join(f"<p>{html.escape(n)}</p>" for n in notes)


def _accuracy_variable(ds: xr.Dataset) -> str:
    """``test_acc`` (a trained run's test set) where measured, else ``probe_acc`` (the accuracy
    a single model's analysis measures on its probe), rather than a column of n/a."""
    if not _measured(ds, "test_acc") and _measured(ds, "probe_acc"):
        return "probe_acc"
    return "test_acc"


def _accuracy(page: _Page) -> str:
    var = _accuracy_variable(page.ds)
    table = _per_regime_table(page.ds, (var,), percent=(var,))
    where = " (on the probe)" if var == "probe_acc" else ""
    return f"<h2>Accuracy per regime{where} (Table II form)</h2>" + table


def _masking(page: _Page) -> str:
    text = (
        "Area under the accuracy-vs-masked-fraction curve of "
        f"{html.escape(_saliency_text(page.ds))}. Unit scale: fraction and accuracy in [0, 1]; "
        "paper scale: accuracy% x masked% (max 10000). Lower MoRF and a larger LeRF-minus-MoRF "
        "gap mean more faithful saliency."
    )
    table = _per_regime_table(page.ds, ("morf_auc", "morf_auc_paper", "lerf_auc", "fidelity_gap"))
    return f"<h2>Masking fidelity per regime (Table I form)</h2><p>{text}</p>{table}"


def _probe_rows(ds: xr.Dataset) -> list[list[str]]:
    """One row per regime and layer: the probe size, the layer's width and what they allow."""
    rows = []
    labelled = ds.attrs.get("labels") != "no"
    for regime in ds.regime.values:
        sizes = np.asarray(ds["probe_size"].sel(regime=regime).values, dtype=float)
        if not np.isfinite(sizes).any():
            continue
        n = int(np.nanmin(sizes))
        widths = {}
        if "n_units" in ds and "layer" in ds["n_units"].dims:
            units = ds["n_units"].sel(regime=regime)
            extra = [d for d in units.dims if d != "layer"]
            units = units.max(extra) if extra else units
            widths = {
                str(layer): int(d)
                for layer, d in zip(units.layer.values, units.values, strict=True)
                if np.isfinite(d)
            }
        accuracy = []
        if labelled and n < schema.MIN_ACCURACY_SAMPLES:
            accuracy = [f"accuracy and masking NaN (under {schema.MIN_ACCURACY_SAMPLES} samples)"]
        for layer, d in widths.items() or [("", 0)]:
            notes = list(accuracy)
            if n < schema.MIN_GEOMETRY_SAMPLES:
                notes.insert(0, f"geometry NaN (under {schema.MIN_GEOMETRY_SAMPLES} samples)")
            elif d and n < schema.SAMPLES_PER_UNIT * d:
                notes.insert(
                    0, f"spectrum biased (under {schema.SAMPLES_PER_UNIT * d} samples, 2 per unit)"
                )
            ratio = f"{n / d:.3g}" if d else ""
            rows.append([str(regime), str(n), layer, str(d or ""), ratio, "; ".join(notes) or "ok"])
    return rows


def _probe(page: _Page) -> str | None:
    """The probe the numbers come from, and what its size allows (issue 16: probe honesty)."""
    ds = page.ds
    if "probe_size" not in ds or "regime" not in ds["probe_size"].dims:
        return None
    rows = _probe_rows(ds)
    if not rows:
        return None
    text = (
        "Every number below is an estimate on this probe. Under "
        f"{schema.MIN_GEOMETRY_SAMPLES} samples the geometry, entanglement and similarity "
        f"metrics are NaN, and under {schema.MIN_ACCURACY_SAMPLES} the accuracy and masking "
        "metrics (each variable says why in its nan_reason); with fewer than "
        f"{schema.SAMPLES_PER_UNIT} samples per unit a layer's spectrum metrics are kept but "
        "biased (effective rank is at most samples - 1), and the analysis warned."
    )
    header = ["regime", "probe samples", "layer", "units", "samples per unit", "what it allows"]
    return f"<h2>Probe</h2><p>{html.escape(text)}</p>" + _table(header, rows)


def _saliency_maps(page: _Page) -> str:
    """The example maps, or a line saying that the results hold none (never a failure)."""
    title = "Saliency maps (Fig. 2/4 form)"
    shown = page.image(_fig_saliency_grid(page.ds, page.figures), title)
    if shown:
        return shown
    why = (
        "There are no example saliency maps in these results (the analysis kept none: "
        "n_examples=0, an unlabelled probe, or results written without saliency_maps), so "
        "no maps and no distribution of their values are shown."
    )
    return f"<h2>{html.escape(title)}</h2><p>{html.escape(why)}</p>"


def _geometry(page: _Page) -> str:
    columns = ("effective_rank", "mean_abs_corr", "spectrum_alpha", "entanglement")
    table = _per_regime_table(page.ds, (*columns, "topq_contrast", "gini"))
    return "<h2>Geometry and saliency quality per regime</h2>" + table


def _figure(title: str, draw: Callable[[xr.Dataset, Path], str | None]):
    """A section of one figure under its own heading (left out when ``draw`` returns None);
    ``{time}`` in the title is what the results' ``epoch`` counts (epochs or optimizer steps)."""

    def section(page: _Page) -> str | None:
        return page.image(
            draw(page.ds, page.figures), title.format(time=_training_time(page.ds)[1])
        )

    return section


def _over_epochs(var: str):
    return lambda ds, out: _fig_over_epochs(ds, var, out)


def _link_rows(ds: xr.Dataset) -> list[list[str]]:
    rows = []
    sp = ds["spearman"]
    for g in sp["geometry"].values:
        for f in sp["fidelity"].values:
            at = {"geometry": g, "fidelity": f}
            cell = float(sp.sel(at))
            lo, hi = float(ds["spearman_low"].sel(at)), float(ds["spearman_high"].sel(at))
            n = "" if "n_points" not in ds else str(int(ds["n_points"].sel(at)))
            rows.append(
                [
                    str(g),
                    str(f),
                    f"{cell:.3f}" if np.isfinite(cell) else "n/a",
                    f"[{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "n/a",
                    n,
                    schema.direction(str(f)) or "",
                ]
            )
    return rows


def _link(page: _Page) -> str | None:
    ds = page.ds
    if "spearman" not in ds:
        return None
    sp = ds["spearman"]
    ci = float(sp.attrs.get("ci", 0.95))
    parts = [f"<h2>Spearman correlation, geometry vs fidelity (bootstrap {ci:.0%} interval)</h2>"]
    points = sp.attrs.get("points")
    if points:
        parts.append(
            f"<p>One point per checkpoint: {html.escape(str(points))}. Checkpoints of one "
            "run are not independent, so the interval describes the spread over checkpoints, "
            "not over training runs. The last column says which way the fidelity metric is "
            "better: a positive rho with a higher-is-better metric (a negative one with a "
            "lower-is-better metric) means the geometry metric rises with more faithful "
            "saliency.</p>"
        )
    title = "Spearman rho, geometry vs fidelity"
    parts.append(page.image(_fig_link(ds, page.figures), title, heading=False) or "")
    header = ["geometry", "fidelity", "rho", f"{ci:.0%} interval", "points", "fidelity better"]
    parts.append(_table(header, _link_rows(ds)))
    return "".join(parts)


def _configurations(page: _Page) -> str | None:
    configs = page.ds.attrs.get("configs")
    if not configs:
        return None
    try:
        pretty = json.dumps(json.loads(configs), indent=2, sort_keys=True)
    except (TypeError, ValueError):
        pretty = str(configs)
    return f"<h2>Configurations</h2><pre>{html.escape(pretty)}</pre>"


SECTIONS: tuple[Callable[[_Page], str | None], ...] = (
    _header,
    _probe,
    _verdict,
    _accuracy,
    _masking,
    _geometry,
    _figure("MoRF and LeRF curves (Fig. 3 form)", _fig_curves),
    _saliency_maps,
    _figure("Saliency value distributions (Fig. 2, right)", _fig_saliency_box),
    _figure("Correlation spectra", _fig_spectra),
    _figure("Effective rank over {time}", _over_epochs("effective_rank")),
    _figure("Axis-swap rate over {time}", _over_epochs("swap_rate")),
    _figure("Representation similarity over {time} (linear CKA, Procrustes)", _fig_similarity),
    _figure("Test accuracy over {time}", _over_epochs("test_acc")),
    _figure("MoRF AUC over {time}", _over_epochs("morf_auc")),
    _figure("Geometry vs fidelity", _fig_scatter),
    _link,
    _configurations,
)
"""The report's sections in page order: each returns its HTML, or None to be left out."""

DETAIL_SECTIONS = SECTIONS[3:-1]
"""The per-checkpoint sections a study's report adds from its ``detail.nc``."""


def detail_sections(results: xr.Dataset, out_dir) -> str:
    """The HTML of :data:`DETAIL_SECTIONS` for per-checkpoint results, figures into
    ``out_dir/figures`` (a study report's page calls this; it computes nothing)."""
    out_dir = Path(out_dir)
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    page = _Page(results, out_dir, figures)
    return "".join(part for section in DETAIL_SECTIONS if (part := section(page)))


REPORT_ENTRIES = ("index.html", "figures")
"""What a report writes in its folder; a rebuild replaces these whole and keeps anything else."""

CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f3f3f3; }
td:first-child { text-align: left; }
img { max-width: 100%; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 85%; }
"""


def write_report(results: xr.Dataset, out_dir) -> Path:
    """The page of :func:`geomxai.report.build_report`, its layout already checked: ``index.html``
    and ``figures/`` written whole into ``out_dir`` (:func:`geomxai._fs.atomic_folder`).

    Raises
    ------
    ValueError
        Results without a ``regime`` dim.
    """
    if "regime" not in results.dims:
        raise ValueError(
            f"results must have a 'regime' dimension (from geomxai.study.analyze_runs); got dims "
            f"{tuple(results.dims)}"
        )
    out_dir = Path(out_dir)
    with atomic_folder(out_dir, replaces=REPORT_ENTRIES) as tmp:
        figures = tmp / "figures"
        figures.mkdir()
        page = _Page(results, tmp, figures)
        body = "".join(part for section in SECTIONS if (part := section(page)))
        text = (
            "<!doctype html><html><head><meta charset='utf-8'><title>geomxai report</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>"
        )
        (tmp / "index.html").write_text(text, encoding="utf-8")
    index = out_dir / "index.html"
    log.info("report written to %s", index)
    return index
