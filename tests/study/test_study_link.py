"""Geometry <-> fidelity link: Spearman and its bootstrap against a slow reference, edge cases, plots."""

from __future__ import annotations

import json
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from matplotlib.colors import to_hex
from scipy import stats

from geomxai import schema
from geomxai.report import build_report, plot_geometry_fidelity, plot_link, regime_colour
from geomxai.study import link_geometry_fidelity, open_results, save_results

REGIMES = ["regular", "saliencydecor"]
SEEDS = [0, 1]
EPOCHS = np.arange(6)
POINT_DIMS = ("regime", "seed", "epoch")
SHAPE = (len(REGIMES), len(SEEDS), len(EPOCHS))


def _results(**variables) -> xr.Dataset:
    """Results-shaped data: point variables (regime, seed, epoch); ``effective_rank`` per layer."""
    coords = {"regime": REGIMES, "seed": SEEDS, "epoch": EPOCHS, "layer": ["body", "body.4"]}
    data = {}
    for name, values in variables.items():
        values = np.asarray(values, float).reshape(SHAPE + np.shape(values)[3:])
        dims = POINT_DIMS + (("layer",) if values.ndim == 4 else ())
        data[name] = (dims, values)
    return xr.Dataset(data, coords=coords)


def _reference(x, y, *, n_boot, ci, seed):
    """Straight from the definition: drop non-finite pairs, spearmanr on every resample."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = x.size
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant resamples: scipy warns and returns NaN
        boot = np.array([stats.spearmanr(x[i], y[i]).statistic for i in idx])
    full = stats.spearmanr(x, y)
    tail = 100 * (1 - ci) / 2
    low, high = np.nanpercentile(boot, [tail, 100 - tail])
    return full.statistic, full.pvalue, low, high, n


@pytest.fixture
def noisy(rng):
    x = rng.normal(size=SHAPE)
    # Rounded, so ties occur: midranks must agree with scipy's.
    y = np.round(0.6 * x + rng.normal(size=SHAPE), 1)
    z = rng.normal(size=SHAPE)
    return x, y, z


@pytest.mark.parametrize("ci", [0.95, 0.8])
def test_matches_a_loop_of_spearmanr_over_the_same_resamples(noisy, ci):
    x, y, z = noisy
    ds = _results(mean_abs_corr=x, morf_auc=y, gini=z)
    link = link_geometry_fidelity(ds, fidelity=["morf_auc", "gini"], n_boot=300, ci=ci, seed=7)
    for f, values in (("morf_auc", y), ("gini", z)):
        rho, p, low, high, n = _reference(x.ravel(), values.ravel(), n_boot=300, ci=ci, seed=7)
        cell = link.sel(geometry="mean_abs_corr", fidelity=f)
        np.testing.assert_allclose(float(cell["spearman"]), rho, rtol=1e-12)
        np.testing.assert_allclose(float(cell["p_value"]), p, rtol=1e-10)
        np.testing.assert_allclose(float(cell["spearman_low"]), low, rtol=1e-12)
        np.testing.assert_allclose(float(cell["spearman_high"]), high, rtol=1e-12)
        assert int(cell["n_points"]) == n == x.size
        assert low <= rho <= high


def test_known_monotone_relations_give_plus_and_minus_one(rng):
    x = rng.uniform(0.1, 3.0, size=SHAPE)
    ds = _results(entanglement=x, lerf_auc=np.exp(x), morf_auc=-(x**3))
    link = link_geometry_fidelity(ds, n_boot=200)
    assert list(link["geometry"].values) == ["entanglement"]
    assert list(link["fidelity"].values) == ["morf_auc", "lerf_auc"]  # default order, present only
    for f, sign in (("lerf_auc", 1.0), ("morf_auc", -1.0)):
        cell = link.sel(geometry="entanglement", fidelity=f)
        # Every resample of a strictly monotone relation is monotone too: a zero-width interval.
        for var in ("spearman", "spearman_low", "spearman_high"):
            assert float(cell[var]) == pytest.approx(sign, abs=1e-12), var
        assert float(cell["p_value"]) < 1e-6


def test_defaults_labels_and_directions_come_from_the_schema(noisy):
    from geomxai.study import FIDELITY_METRICS, GEOMETRY_METRICS

    assert GEOMETRY_METRICS == schema.geometry_metrics()
    assert FIDELITY_METRICS == schema.fidelity_metrics()
    x, y, z = noisy
    link = link_geometry_fidelity(
        _results(effective_rank=x, morf_auc=y, lerf_auc=z), ci=0.8, n_boot=50
    )
    assert json.loads(link["spearman"].attrs["fidelity_directions"]) == {
        "morf_auc": "lower",
        "lerf_auc": "higher",
    }
    assert link["spearman"].attrs["long_name"] == schema.label("spearman")
    assert link["p_value"].attrs["long_name"] == "two-sided p-value of scipy.stats.spearmanr"
    assert link["spearman_low"].attrs["long_name"] == "lower end of the 80% percentile bootstrap CI"
    assert (
        link["spearman_high"].attrs["long_name"] == "upper end of the 80% percentile bootstrap CI"
    )
    for name in link.data_vars:
        assert link[name].attrs["block"] == "link", name


def test_points_with_a_nan_on_either_side_are_dropped(noisy):
    x, y, _ = noisy
    x, y = x.copy(), y.copy()
    x[0, 0, 0] = np.nan  # e.g. a swap rate at the first epoch
    y[1, 1, 2:4] = np.inf
    ds = _results(nondegenerate_swap_rate=x, saliency_stability=y)
    # Named: the per-checkpoint dynamics are no longer linked by default (issue 23).
    link = link_geometry_fidelity(
        ds,
        geometry="nondegenerate_swap_rate",
        fidelity="saliency_stability",
        n_boot=250,
        seed=3,
    )
    cell = link.sel(geometry="nondegenerate_swap_rate", fidelity="saliency_stability")
    rho, p, low, high, n = _reference(x.ravel(), y.ravel(), n_boot=250, ci=0.95, seed=3)
    assert int(cell["n_points"]) == n == x.size - 3
    np.testing.assert_allclose(
        [float(cell[v]) for v in ("spearman", "p_value", "spearman_low", "spearman_high")],
        [rho, p, low, high],
        rtol=1e-10,
    )


def test_min_epoch_leaves_the_earlier_checkpoints_out(noisy):
    x, y, _ = noisy
    ds = _results(effective_rank=x, morf_auc=y)
    link = link_geometry_fidelity(ds, min_epoch=1, n_boot=200, seed=5)
    rho, p, low, high, n = _reference(
        x[..., 1:].ravel(), y[..., 1:].ravel(), n_boot=200, ci=0.95, seed=5
    )
    cell = link.sel(geometry="effective_rank", fidelity="morf_auc")
    assert int(cell["n_points"]) == n == x[..., 1:].size
    np.testing.assert_allclose(
        [float(cell[v]) for v in ("spearman", "p_value", "spearman_low", "spearman_high")],
        [rho, p, low, high],
        rtol=1e-10,
    )
    assert link["spearman"].attrs["min_epoch"] == 1
    assert "epoch >= 1" in link["spearman"].attrs["points"]
    with pytest.raises(ValueError, match="no 'epoch' dim"):
        link_geometry_fidelity(ds.isel(epoch=0), min_epoch=1)


def test_fewer_than_three_points_is_nan_with_a_reason():
    x = np.full(SHAPE, np.nan)
    x[0, 0, :2] = [1.0, 2.0]
    ds = _results(effective_rank=np.stack([x, x], -1), morf_auc=np.arange(x.size))
    link = link_geometry_fidelity(ds)
    cell = link.sel(geometry="effective_rank", fidelity="morf_auc")
    assert int(cell["n_points"]) == 2
    for var in ("spearman", "spearman_low", "spearman_high", "p_value"):
        assert np.isnan(float(cell[var]))
        assert "fewer than 3" in link[var].attrs["nan_reason"]
    reason = link["spearman"].attrs["nan_reason_effective_rank_vs_morf_auc"]
    assert "2 point(s)" in reason and "at least 3" in reason


def test_a_constant_metric_is_nan_with_a_reason(noisy):
    x, _, _ = noisy
    ds = _results(participation_ratio=x, topq_contrast=np.ones(SHAPE))
    link = link_geometry_fidelity(ds)
    assert np.isnan(float(link["spearman"].squeeze()))
    assert int(link["n_points"].squeeze()) == x.size
    reason = link["spearman"].attrs["nan_reason_participation_ratio_vs_topq_contrast"]
    assert "topq_contrast constant" in reason


def test_layer_variables_are_taken_at_the_feature_layer_or_the_named_one(rng):
    x = rng.normal(size=SHAPE)
    layered = np.stack([x, -x], axis=-1)  # body: x, body.4: -x
    ds = _results(effective_rank=layered, morf_auc=x)
    first = link_geometry_fidelity(ds, n_boot=50)
    assert float(first["spearman"].squeeze()) == pytest.approx(1.0)
    assert first.attrs["layer"] == "body"
    second = link_geometry_fidelity(ds, layer="body.4", n_boot=50)
    assert float(second["spearman"].squeeze()) == pytest.approx(-1.0)
    assert second["spearman"].attrs["layer"] == "body.4"
    with pytest.raises(ValueError, match="layer 'fc' is not in the results; layers: body, body.4"):
        link_geometry_fidelity(ds, layer="fc")


def test_bad_arguments_are_refused_with_what_came(rng):
    ds = _results(effective_rank=rng.normal(size=SHAPE), morf_auc=rng.normal(size=SHAPE))
    with pytest.raises(ValueError, match="'efective_rank'.*closest effective_rank"):
        link_geometry_fidelity(ds, geometry="efective_rank")
    with pytest.raises(ValueError, match="n_boot must be a positive integer; got n_boot=0"):
        link_geometry_fidelity(ds, n_boot=0)
    with pytest.raises(ValueError, match=r"ci must lie in \(0, 1\); got ci=95"):
        link_geometry_fidelity(ds, ci=95)
    with pytest.raises(TypeError, match="got DataArray"):
        link_geometry_fidelity(ds["morf_auc"])
    with pytest.raises(ValueError, match="none of the default fidelity metrics"):
        link_geometry_fidelity(ds[["effective_rank"]])
    spectrum = ds.assign(corr_spectrum=ds["effective_rank"].expand_dims(component=3))
    with pytest.raises(ValueError, match=r"dims \('component',\) must be selected away"):
        link_geometry_fidelity(spectrum, geometry="corr_spectrum")


def test_dask_backed_results_give_the_same_link(noisy, tmp_path):
    x, y, z = noisy
    ds = _results(mean_abs_corr=x, morf_auc=y, gini=z)
    path = save_results(ds, tmp_path / "results.nc")
    with open_results(path) as lazy:
        assert lazy["morf_auc"].chunks is not None
        xr.testing.assert_identical(
            link_geometry_fidelity(lazy, n_boot=100), link_geometry_fidelity(ds, n_boot=100)
        )


def test_the_link_survives_a_results_file_and_reaches_the_report(noisy, tmp_path):
    x, y, z = noisy
    ds = _results(effective_rank=np.stack([x, z], -1), morf_auc=y, fidelity_gap=np.ones(SHAPE))
    merged = ds.merge(link_geometry_fidelity(ds, n_boot=100))
    merged.attrs["schema_version"] = schema.SCHEMA_VERSION  # as the analysis stamps its results
    path = save_results(merged, tmp_path / "results.nc")
    with xr.open_dataset(path) as back:
        back = back.load()
    xr.testing.assert_identical(
        back[["spearman", "spearman_low", "spearman_high"]],
        merged[["spearman", "spearman_low", "spearman_high"]],
    )
    assert "nan_reason_effective_rank_vs_fidelity_gap" in back["spearman"].attrs
    page = build_report(back, tmp_path / "report").read_text()
    assert "Spearman correlation, geometry vs fidelity" in page
    assert "figures/geometry_fidelity_spearman.png" in page
    rho = float(merged["spearman"].sel(geometry="effective_rank", fidelity="morf_auc"))
    assert f"<td>{rho:.3f}</td>" in page
    assert "<td>n/a</td>" in page  # the constant fidelity_gap


def test_a_scatter_without_a_link_draws_the_points_and_computes_nothing(rng):
    x = rng.uniform(size=SHAPE)
    ds = _results(effective_rank=np.stack([x, x], -1), lerf_auc=x**2, mean_abs_corr=-x)
    ax = plot_geometry_fidelity(ds, geometry="effective_rank", fidelity="lerf_auc")
    try:
        assert ax.get_title().startswith("no link in these results")
        assert sum(len(c.get_offsets()) for c in ax.collections) == x.size
    finally:
        plt.close(ax.figure)


def test_scatter_colours_regimes_and_titles_rho_with_its_interval(rng):
    x = rng.uniform(size=SHAPE)
    ds = _results(effective_rank=np.stack([x, x], -1), lerf_auc=x**2, mean_abs_corr=-x)
    link = link_geometry_fidelity(ds, geometry=["effective_rank"], fidelity=["lerf_auc"])
    ax = plot_geometry_fidelity(ds, link, geometry="effective_rank", fidelity="lerf_auc")
    try:
        assert ax.get_title() == f"Spearman ρ = 1.00 [1.00, 1.00], n = {x.size}"
        # Labels from the schema (the layer of a per-layer variable beside it).
        assert ax.get_xlabel() == f"{schema.label('effective_rank')} (body)"
        assert ax.get_ylabel() == schema.label("lerf_auc") == "LeRF AUC"
        colours = [to_hex(c.get_facecolor()[0]) for c in ax.collections]
        assert colours == [regime_colour(r) for r in REGIMES]
        assert sum(len(c.get_offsets()) for c in ax.collections) == x.size
    finally:
        plt.close(ax.figure)
    # A given link is used as it is (here one saved with the results).
    link = link_geometry_fidelity(ds, geometry="effective_rank", n_boot=20).copy(deep=True)
    link["spearman"][:] = 0.5
    ax = plot_geometry_fidelity(ds.merge(link), geometry="effective_rank", fidelity="lerf_auc")
    try:
        assert ax.get_title().startswith("Spearman ρ = 0.50")
    finally:
        plt.close(ax.figure)
    with pytest.raises(ValueError, match="no entry for geometry='mean_abs_corr'"):
        plot_geometry_fidelity(ds, link, geometry="mean_abs_corr", fidelity="lerf_auc")


def test_heatmap_annotates_every_cell(noisy):
    x, y, z = noisy
    ds = _results(mean_abs_corr=x, nondegenerate_swap_rate=z, morf_auc=y, gini=np.ones(SHAPE))
    link = link_geometry_fidelity(
        ds, geometry=["mean_abs_corr", "nondegenerate_swap_rate"], n_boot=50
    )
    fig, ax = plt.subplots()
    try:
        assert plot_link(link, ax=ax) is ax
        texts = [t.get_text() for t in ax.texts]
        assert len(texts) == 4
        assert texts.count("n/a") == 2  # gini is constant
        rho = float(link["spearman"].sel(geometry="mean_abs_corr", fidelity="morf_auc"))
        assert texts[0].startswith(f"{rho:.2f}\n[")
        assert [t.get_text() for t in ax.get_yticklabels()] == [
            schema.label("mean_abs_corr"),
            schema.label("nondegenerate_swap_rate"),
        ]
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="link lacks spearman"):
        plot_link(ds)
