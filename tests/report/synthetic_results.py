"""A results Dataset made with numpy in milliseconds, and checks of a report page against one.

:func:`make_results` lays out a Dataset as a study writes one (:func:`geomxai.study.analyze_runs`,
the geometry <-> fidelity link, the probe images): the variables, their dims and their attrs come
from :mod:`geomxai.schema`, the one declaration the analysis, the link and the report read, and
``test_report_end_to_end.py`` checks that layout against the results file of a real tiny study.
The values are random but coherent where the report relies on it: AUCs are the areas under
their curves, the fidelity gap is LeRF minus MoRF, spectra decrease, the dynamics and training
variables are NaN at epoch 0 with the reason the analysis gives.
"""

from __future__ import annotations

import json
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import xarray as xr

from geomxai import schema
from geomxai.report import seed_interval
from geomxai.study import AnalysisOptions

REGIMES = ("regular", "saliencydecor")
SEEDS = (0, 1)
EPOCHS = (0, 1, 2)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

NOT_IN_RESULTS = (
    "probe_saliency",
    "top_eigvecs",
    "probe_features",
    "deletion_auc_per_sample",
    "insertion_auc_per_sample",
)
"""Schema variables a results file does not hold: analyze_runs keeps neither the maps of every
probe image nor the eigenvectors (the dynamics were computed from them) nor the per-sample
deletion and insertion areas, and analyze_run drops the probe features once the similarity is
computed."""

# 64 probe images: at least the 50 the accuracy needs and 2 per unit of the tiny cnn2's 32.
OPTIONS = AnalysisOptions(probe_size=64, fractions=5, top_k=4, n_examples=3)
"""The analysis options the synthetic results claim, and the end-to-end study uses."""

FIRST_EPOCH_REASON = {
    "dynamics": "no previous checkpoint at the first epoch",
    "training": "epoch 0 is the initial model, before any training step",
}


def result_variables(*, masks: bool = False) -> list[schema.Variable]:
    """The schema variables of a study's results file (localisation only on data with masks)."""
    return [
        v
        for v in schema.VARIABLES.values()
        if v.name not in NOT_IN_RESULTS and (masks or v.block != "localisation")
    ]


def make_results(
    *,
    regimes=REGIMES,
    seeds=SEEDS,
    epochs=EPOCHS,
    units: int = 8,
    side: int = 8,
    masks: bool = False,
    seed: int = 0,
) -> xr.Dataset:
    """A study's results, with every variable of the schema that a results file holds.

    Dims: ``regime``, ``seed``, ``epoch``, one ``layer`` ("body") of ``units`` units,
    ``OPTIONS.fractions`` masking fractions, ``OPTIONS.top_k`` axes, ``OPTIONS.n_examples``
    saliency maps of ``side`` x ``side`` pixels, and the link's ``geometry`` x ``fidelity``.
    """
    rng = np.random.default_rng(seed)
    variables = result_variables(masks=masks)
    present = {v.name for v in variables}
    geometry = [g for g in schema.geometry_metrics() if g in present]
    fidelity = [f for f in schema.fidelity_metrics() if f in present]
    fractions = np.linspace(0.0, 1.0, OPTIONS.fractions)
    coords = {
        "regime": list(regimes),
        "seed": list(seeds),
        "epoch": list(epochs),
        "epoch_b": list(epochs),  # cka_checkpoints: every pair of checkpoints
        "layer": ["body"],
        "component": np.arange(1, units + 1),
        "axis": np.arange(1, OPTIONS.top_k + 1),
        "unit": np.arange(units),
        "fraction": fractions,
        "geometry": geometry,
        "fidelity": fidelity,
    }
    sizes = {name: len(values) for name, values in coords.items()}
    sizes.update(example=OPTIONS.n_examples, channel=1, height=side, width=side)
    point = ("regime", "seed", "epoch")

    ds = xr.Dataset(coords=coords)
    for v in variables:
        if v.per_checkpoint:
            dims = (*point, *v.dims)
        elif v.block == "run_dynamics":  # one value per run, over the whole run
            dims = ("regime", "seed", *v.dims)
        else:
            dims = v.dims
        if v.block == "link" or v.name == "probe_images":
            continue  # below: the link's variables hang together; the images come last
        values = rng.uniform(0.05, 0.95, [sizes[d] for d in dims])
        if v.name in ("effective_rank", "participation_ratio"):
            values = 1.0 + values * (units - 1)
        elif v.name == "n_dead_units":
            values = np.ones(values.shape)  # the last unit: its spectrum component is NaN
        elif v.name == "n_live_units":
            values = np.full(values.shape, float(units - 1))
        elif v.name == "n_units":
            values = np.full(values.shape, float(units))
        elif v.name == "probe_size":
            values = np.full(values.shape, OPTIONS.probe_size, dtype=np.int64)
        elif v.name in ("corr_spectrum", "top_eigvals"):
            values = -np.sort(-values * units, axis=-1)
        elif v.dims[-2:] == ("height", "width"):
            values = values.astype(np.float32)
        ds[v.name] = xr.DataArray(values, dims=dims)
        if v.block in FIRST_EPOCH_REASON:
            ds[v.name].loc[{"epoch": epochs[0]}] = np.nan
            ds[v.name].attrs["nan_reason"] = FIRST_EPOCH_REASON[v.block]
    ds["top_eigvals"].attrs["nan_reason"] = "padding past a layer's width or its top_k axes"
    # One dead unit: the spectrum has units - 1 components, NaN-padded as the analysis pads it.
    ds["corr_spectrum"][..., -1] = np.nan
    ds["corr_spectrum"].attrs["nan_reason"] = "components past the number of live units"
    # Masking curves fall from the probe accuracy as pixels go, MoRF fastest; AUCs are their areas.
    acc = ds["probe_acc"]
    frac = xr.DataArray(fractions, dims="fraction", coords={"fraction": fractions})
    for order, power in (("morf", 3.0), ("random", 1.0), ("lerf", 0.3)):
        curve = 0.1 + (acc - 0.1) * (1.0 - frac**power)
        ds[f"{order}_curve"] = curve.transpose(*point, "fraction")
        ds[f"{order}_auc"] = curve.integrate("fraction")
        ds[f"{order}_auc_paper"] = 1e4 * ds[f"{order}_auc"]
    ds["fidelity_gap"] = ds["lerf_auc"] - ds["morf_auc"]
    # The target's probability falls as salient pixels are deleted and rises as they are
    # inserted; the areas are those of the mean curves (the means of the per-sample areas).
    start = acc.copy(data=rng.uniform(0.3, 0.9, acc.shape))
    for mode, shape in (("deletion", 1.0 - frac**0.3), ("insertion", frac**0.3)):
        curve = start * shape
        ds[f"{mode}_curve"] = curve.transpose(*point, "fraction")
        ds[f"{mode}_auc"] = curve.integrate("fraction")
    ds["test_acc"].attrs["nan_reason"] = (
        "epoch 0 is the initial model; its test accuracy is probe_acc"
    )

    link_shape = (len(geometry), len(fidelity))
    rho = rng.uniform(-0.9, 0.9, link_shape)
    half = rng.uniform(0.05, 0.3, link_shape)
    n_points = np.full(link_shape, len(regimes) * len(seeds) * (len(epochs) - 1), dtype=np.int64)
    rho[-1, -1], n_points[-1, -1] = np.nan, 2  # one pair undefined, as with too few points
    link_dims = ("geometry", "fidelity")
    nan_reason = "NaN where fewer than 3 points have both values finite"
    ds["spearman"] = xr.DataArray(rho, dims=link_dims)
    ds["spearman_low"] = xr.DataArray(np.clip(rho - half, -1, 1), dims=link_dims)
    ds["spearman_high"] = xr.DataArray(np.clip(rho + half, -1, 1), dims=link_dims)
    ds["p_value"] = xr.DataArray(
        np.where(np.isnan(rho), np.nan, rng.uniform(0, 1, link_shape)), dims=link_dims
    )
    ds["n_points"] = xr.DataArray(n_points, dims=link_dims)
    for name in ("spearman", "spearman_low", "spearman_high", "p_value"):
        ds[name].attrs["nan_reason"] = nan_reason
    ds["spearman"].attrs.update(
        n_boot=1000,
        ci=0.95,
        bootstrap_seed=0,
        layer="body",
        min_epoch=1,
        points="(regime, seed, epoch) with both values finite, epoch >= 1",
        fidelity_directions=json.dumps({f: schema.direction(f) for f in fidelity}),
        **{f"nan_reason_{geometry[-1]}_vs_{fidelity[-1]}": "only 2 points have both values finite"},
    )
    ds["spearman_low"].attrs["long_name"] = "lower end of the 95% percentile bootstrap CI"
    ds["spearman_high"].attrs["long_name"] = "upper end of the 95% percentile bootstrap CI"

    configs = {
        f"{r}-s{s}": {"dataset": "digits", "model": "cnn2", "regime": r, "seed": s}
        for r in regimes
        for s in seeds
    }
    ds.attrs.update(
        configs=json.dumps(configs, sort_keys=True),
        dataset="digits",
        analysis=OPTIONS.key(),
        analysis_options=OPTIONS.key(),
        study="synthetic",
        created="2000-01-01 00:00 UTC",
        hardware="test",
        commit="abc1234",
        schema_version=schema.SCHEMA_VERSION,
    )
    # Where the entanglement-layer metrics were taken, and over which units, as measure says.
    for name in ds.data_vars:
        if name.startswith(("head_", "grad_metric_")) or name.startswith("entanglement"):
            ds[name].attrs["layer"] = "body"
    for name, units in (("entanglement", "live"), ("entanglement_all_units", "all")):
        if name in ds:
            ds[name].attrs["units"] = units
    for name, units in (("subspace_settle_epoch", "epochs"), ("subspace_settle_step", "steps")):
        if name in ds:
            ds[name].attrs.update(units=units, settled_overlap=0.9)
    # Each run's global optimizer step at each checkpoint (runs may differ in steps per epoch).
    ds = ds.assign_coords(
        step=(point, np.broadcast_to(np.asarray(epochs) * 10, [sizes[d] for d in point]).copy())
    )
    ds["step"].attrs["long_name"] = "global optimizer steps taken at the checkpoint"
    ds = schema.annotate(ds)
    # The pipeline adds the probe images after the analysis and the link, unannotated.
    images = rng.uniform(0, 1, [sizes[d] for d in schema.variable("probe_images").dims])
    ds["probe_images"] = xr.DataArray(
        images.astype(np.float32), dims=schema.variable("probe_images").dims
    )
    return ds


# ---- reading the page back ---------------------------------------------------------------------


class Page(HTMLParser):
    """The headings, tables and images of a report page, in page order."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text
        self.headings: list[str] = []
        self.tables: list[dict] = []  # {"heading", "header": [...], "rows": [[...], ...]}
        self.images: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag in ("h1", "h2"):
            self._heading = []
        elif tag == "table":
            heading = self.headings[-1] if self.headings else ""
            self.tables.append({"heading": heading, "header": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("h1", "h2") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None
        elif tag in ("td", "th") and self._cell is not None:
            table = self.tables[-1]
            text = "".join(self._cell).strip()
            (table["header"] if tag == "th" else table["rows"][-1]).append(text)
            self._cell = None
        elif tag == "table":
            table = self.tables[-1]
            table["rows"] = [row for row in table["rows"] if row]

    def handle_data(self, data):
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)


def read_page(index: Path) -> Page:
    return Page(Path(index).read_text(encoding="utf-8"))


def _agrees(printed: str, expected: float) -> bool:
    """``printed`` is ``expected`` to the precision it was printed with (half its last place)."""
    if not np.isfinite(expected):
        return printed == "n/a"
    value = Decimal(printed)
    last_place = Decimal(1).scaleb(value.as_tuple().exponent)
    return abs(float(value) - expected) <= float(last_place) / 2 * (1 + 1e-9) + 1e-12


def _column_variable(header: str) -> tuple[str, float]:
    """The variable a per-regime column shows, by its schema label; ``"X (%)"``: X times 100."""
    for name in schema.VARIABLES:
        if schema.label(name) == header:
            return name, 1.0
        if f"{schema.label(name)} (%)" == header:
            return name, 100.0
    raise AssertionError(f"report column {header!r} is the label of no schema variable")


def _final(da: xr.DataArray) -> xr.DataArray:
    """At the last epoch with any finite value, the feature layer: what the tables summarise."""
    if "layer" in da.dims:
        da = da.isel(layer=0)
    return da.dropna("epoch", how="all").isel(epoch=-1)


def check_tables(page: Page, ds: xr.Dataset) -> int:
    """Every cell of the metadata, per-regime and Spearman tables against ``ds``; how many.

    A metadata cell is the Dataset's attr of that name. A per-regime cell is the mean over seeds of the variable at its last measured epoch, with
    the half-width of its 95% seed interval after "±" (:func:`geomxai.report.seed_interval`).
    """
    checked = 0
    for table in page.tables:
        header, rows = table["header"], table["rows"]
        if header == ["what", "value"]:  # the metadata: the Dataset's attrs
            for key, value in rows:
                assert value == str(ds.attrs.get(key, "unknown")), (key, value)
                checked += 1
        elif header[:2] == ["regime", "seeds"]:
            assert [row[0] for row in rows] == [str(r) for r in ds.regime.values], table
            for row in rows:
                assert row[1] == str(ds.sizes["seed"]), row
                for column, cell in zip(header[2:], row[2:], strict=True):
                    name, scale = _column_variable(column)
                    values = _final(ds[name]).sel(regime=row[0]).values * scale
                    mean, half = seed_interval(np.atleast_1d(values))
                    printed_mean, _, printed_half = cell.partition(" ± ")
                    assert _agrees(printed_mean, mean), (column, row[0], cell, mean)
                    if np.isfinite(half):
                        assert _agrees(printed_half, half), (column, row[0], cell, half)
                    checked += 1
        elif header[:3] == ["geometry", "fidelity", "rho"]:
            pairs = [(str(g), str(f)) for g in ds.geometry.values for f in ds.fidelity.values]
            assert [tuple(row[:2]) for row in rows] == pairs, table["heading"]
            for row in rows:
                at = {"geometry": row[0], "fidelity": row[1]}
                rho = float(ds["spearman"].sel(at))
                assert _agrees(row[2], rho), (row, rho)
                if np.isfinite(float(ds["spearman_low"].sel(at))):
                    low, high = row[3].strip("[]").split(", ")
                    assert _agrees(low, float(ds["spearman_low"].sel(at))), row
                    assert _agrees(high, float(ds["spearman_high"].sel(at))), row
                else:
                    assert row[3] == "n/a", row
                assert row[4] == str(int(ds["n_points"].sel(at))), row
                checked += 1
    return checked


def check_figures(page: Page, index: Path) -> None:
    """Every image of the page is a PNG beside it that decodes to a picture with something on it."""
    from PIL import Image

    assert page.images, "the page shows no figure"
    for src in page.images:
        path = Path(index).parent / src
        assert path.is_file(), src
        assert path.read_bytes()[:8] == PNG_MAGIC, src
        with Image.open(path) as image:
            image.load()
            pixels = np.asarray(image.convert("L"))
        assert min(pixels.shape) >= 100, (src, pixels.shape)
        assert pixels.std() > 1.0, f"{src} is blank"
