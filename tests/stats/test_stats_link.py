"""Geometry <-> fidelity across runs (partial Spearman, bootstrap, BH) and within runs."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from geomxai.stats import (
    WITHIN_RUN_NOTE,
    bh_adjust,
    partial_spearman,
    run_link,
    runs_dataset,
    within_run_link,
)


def _reference_partial(x, y, z):
    """Partial Spearman straight from the definition: residualise ranks with numpy lstsq.

    NaN where a residual is zero (x or y a monotone function of z): the correlation is 0/0.
    """
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    design = np.column_stack([np.ones_like(rz), rz])
    ex = rx - design @ np.linalg.lstsq(design, rx, rcond=None)[0]
    ey = ry - design @ np.linalg.lstsq(design, ry, rcond=None)[0]
    for e, r in ((ex, rx), (ey, ry)):
        if np.linalg.norm(e) <= 1e-9 * max(np.linalg.norm(r - r.mean()), 1.0):
            return np.nan, np.nan
    r = float(np.corrcoef(ex, ey)[0, 1])
    n = len(x)
    if abs(r) >= 1:
        return r, 0.0
    t = r * np.sqrt((n - 3) / (1 - r * r))
    return r, float(2 * stats.t.sf(abs(t), n - 3))


def _study(n=30, seed=0):
    """Runs where accuracy drives both geometry and fidelity, plus a geometry metric that
    explains fidelity beyond accuracy."""
    rng = np.random.default_rng(seed)
    regimes = ["regular", "sgt", "dbn", "saliencydecor"]
    records = []
    for i in range(n):
        acc = rng.uniform(0.85, 0.92)
        own = rng.normal()
        records.append(
            {
                "regime": regimes[i % 4],
                "seed": i // 4,
                "decor_weight": 0.01,
                "test_acc": acc,
                "effective_rank": 100 * acc + rng.normal(0, 0.3),  # only via accuracy
                "mean_abs_corr": own,  # explains fidelity beyond accuracy
                "morf_auc": -3 * acc + 0.02 * own + rng.normal(0, 0.005),
                # a strictly monotone function of accuracy alone
                "lerf_auc": -np.exp(5 * acc),
            }
        )
    return runs_dataset(records)


# -- partial Spearman -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(5, 40), ties=st.booleans())
def test_partial_spearman_matches_the_lstsq_reference(seed, n, ties):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    x = z + rng.normal(size=n)
    y = -z + rng.normal(size=n)
    if ties:
        x, y, z = np.round(x), np.round(y), np.round(z * 2)
    ref = _reference_partial(x, y, z)
    r, p = partial_spearman(x, y, z)
    if np.isnan(ref[0]):
        assert np.isnan(r) and np.isnan(p)
        return
    assert r == pytest.approx(ref[0], abs=1e-9)
    assert p == pytest.approx(ref[1], rel=1e-6, abs=1e-12)


def test_a_fidelity_metric_driven_by_the_control_alone_has_no_partial_correlation():
    rng = np.random.default_rng(1)
    n = 400
    acc = rng.normal(size=n)
    geometry = acc + 0.4 * rng.normal(size=n)
    fidelity = np.exp(acc) + 0.02 * rng.normal(size=n)  # monotone in the control, plus noise
    raw = stats.spearmanr(geometry, fidelity).statistic
    r, p = partial_spearman(geometry, fidelity, acc)
    assert raw > 0.85
    assert abs(r) < 0.15
    assert p > 0.001
    assert r == pytest.approx(_reference_partial(geometry, fidelity, acc)[0], abs=1e-9)


def test_a_metric_that_is_exactly_monotone_in_the_control_gives_nan():
    z = np.arange(10.0)
    r, p = partial_spearman(np.sin(z), np.exp(z), z)
    assert np.isnan(r) and np.isnan(p)


def test_partial_spearman_validates():
    with pytest.raises(ValueError, match="at least 4"):
        partial_spearman([1, 2, 3], [1, 2, 3], [3, 2, 1])
    with pytest.raises(ValueError, match="one length"):
        partial_spearman([1, 2, 3, 4], [1, 2, 3], [3, 2, 1, 0])
    with pytest.raises(ValueError, match="finite"):
        partial_spearman([1, 2, np.nan, 4], [1, 2, 3, 4], [3, 2, 1, 0])


# -- BH -------------------------------------------------------------------------------------------


def test_bh_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.2 -> p m / rank = 0.04, 0.06, 0.0533, 0.2 -> running min from the
    # top: 0.04, 0.0533, 0.0533, 0.2
    q = bh_adjust([0.01, 0.04, 0.03, 0.2])
    assert q == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert bh_adjust([0.5, 0.9]) == pytest.approx([0.9, 0.9])


def test_bh_against_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(3)
    for size in (1, 2, 7, 50):
        p = np.concatenate([rng.uniform(size=size), rng.uniform(0, 0.01, size=size // 2)])
        expected = multitest.multipletests(p, method="fdr_bh")[1]
        assert bh_adjust(p) == pytest.approx(expected, rel=1e-12)
    grid = rng.uniform(size=(3, 4))
    grid[1, 2] = np.nan
    q = bh_adjust(grid)
    assert np.isnan(q[1, 2])
    finite = np.isfinite(grid)
    assert q[finite] == pytest.approx(
        multitest.multipletests(grid[finite], method="fdr_bh")[1], rel=1e-12
    )
    with pytest.raises(ValueError, match="must lie in"):
        bh_adjust([0.1, 1.2])


# -- run_link -------------------------------------------------------------------------------------


def test_run_link_statistics_against_references():
    runs = _study()
    link = run_link(runs, ["effective_rank", "mean_abs_corr"], ["morf_auc", "lerf_auc"], n_boot=300)
    acc = runs["test_acc"].values
    for g in ("effective_rank", "mean_abs_corr"):
        for f in ("morf_auc", "lerf_auc"):
            sel = {"geometry": g, "fidelity": f}
            x, y = runs[g].values, runs[f].values
            res = stats.spearmanr(x, y)
            assert float(link["spearman"].sel(sel)) == pytest.approx(res.statistic)
            assert float(link["spearman_p_value"].sel(sel)) == pytest.approx(res.pvalue)
            assert int(link["n_runs"].sel(sel)) == 30
            if f == "lerf_auc":  # a function of accuracy alone
                assert np.isnan(link["partial_spearman"].sel(sel))
                assert (
                    "monotone function of test_acc" in link.attrs[f"nan_reason_{g}_vs_{f}_partial"]
                )
                continue
            r, p = _reference_partial(x, y, acc)
            assert float(link["partial_spearman"].sel(sel)) == pytest.approx(r, abs=1e-9)
            assert float(link["partial_p_value"].sel(sel)) == pytest.approx(p, rel=1e-6)
    # accuracy drives effective_rank and morf_auc together; only mean_abs_corr survives control
    er = {"geometry": "effective_rank", "fidelity": "morf_auc"}
    mc = {"geometry": "mean_abs_corr", "fidelity": "morf_auc"}
    assert float(link["spearman"].sel(er)) < -0.7
    assert abs(float(link["partial_spearman"].sel(er))) < float(link["partial_spearman"].sel(mc))
    assert float(link["partial_ci_low"].sel(mc)) > 0


@pytest.mark.parametrize(("correction", "method"), [("bh", "fdr_bh"), ("holm", "holm")])
def test_run_link_q_values_are_the_correction_over_the_grid(correction, method):
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    runs = _study(n=24, seed=4)
    link = run_link(
        runs,
        ["effective_rank", "mean_abs_corr"],
        ["morf_auc", "lerf_auc"],
        n_boot=50,
        correction=correction,
    )
    assert link.attrs["correction"] == correction
    for stat in ("spearman", "partial"):
        p = link[f"{stat}_p_value"].values
        q = link[f"{stat}_q_value"].values
        finite = np.isfinite(p)
        assert np.isnan(q[~finite]).all()
        assert q[finite] == pytest.approx(
            multitest.multipletests(p[finite], method=method)[1], rel=1e-12
        )
    with pytest.raises(ValueError, match="correction must be one of"):
        run_link(runs, "effective_rank", "morf_auc", n_boot=10, correction="bonferroni")


def test_bootstrap_interval_contains_the_estimate_and_is_reproducible():
    runs = _study()
    kw = {"geometry": "mean_abs_corr", "fidelity": "morf_auc", "n_boot": 500}
    a = run_link(runs, seed=7, **kw)
    b = run_link(runs, seed=7, **kw)
    c = run_link(runs, seed=8, **kw)
    xr.testing.assert_identical(a, b)
    assert float(a["spearman_ci_low"].item()) != float(c["spearman_ci_low"].item())
    for stat, lo, hi in (
        ("spearman", "spearman_ci_low", "spearman_ci_high"),
        ("partial_spearman", "partial_ci_low", "partial_ci_high"),
    ):
        assert float(a[lo].item()) <= float(a[stat].item()) <= float(a[hi].item())


def _documented_order(runs, names):
    """The runs in the order run_link's docstring gives its resamples: by regime, decor_weight,
    seed and run label, then by the values of the metrics used."""
    keys = [runs[k].values.tolist() for k in ("regime", "decor_weight", "seed", "run")]
    keys += [runs[n].values.tolist() for n in names]
    return sorted(range(runs.sizes["run"]), key=lambda i: [k[i] for k in keys])


def test_bootstrap_matches_a_slow_reference():
    runs = _study(n=16, seed=2)
    assert {"regime", "decor_weight", "seed", "run"} <= set(runs.coords)
    # Listed in another order, the runs are resampled the same way (below: the same interval).
    runs = runs.isel(run=np.random.default_rng(3).permutation(runs.sizes["run"]))
    order = _documented_order(runs, ["effective_rank", "morf_auc", "test_acc"])
    x, y, z = (runs[n].values[order] for n in ("effective_rank", "morf_auc", "test_acc"))
    n_boot = 200
    idx = np.random.default_rng(5).integers(0, x.size, size=(n_boot, x.size))
    rho, par = [], []
    for row in idx:
        rx, ry, rz = x[row], y[row], z[row]
        if np.ptp(rx) and np.ptp(ry):
            rho.append(stats.spearmanr(rx, ry).statistic)
            par.append(_reference_partial(rx, ry, rz)[0])
    par = np.array(par)
    dropped = int(np.isnan(par).sum())
    assert dropped > 0  # effective_rank follows accuracy closely: some resamples tie their ranks
    par = par[np.isfinite(par)]
    link = run_link(runs, "effective_rank", "morf_auc", n_boot=n_boot, seed=5)
    assert float(link["spearman_ci_low"].item()) == pytest.approx(np.percentile(rho, 2.5))
    assert float(link["spearman_ci_high"].item()) == pytest.approx(np.percentile(rho, 97.5))
    assert float(link["partial_ci_low"].item()) == pytest.approx(np.percentile(par, 2.5))
    assert float(link["partial_ci_high"].item()) == pytest.approx(np.percentile(par, 97.5))
    assert link.attrs["partial_boot_dropped_effective_rank_vs_morf_auc"].startswith(
        f"{dropped} of {n_boot} resamples"
    )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_permuting_the_runs_changes_nothing(seed, data):
    runs = _study(n=12, seed=seed % 1000)
    perm = data.draw(st.permutations(range(runs.sizes["run"])))
    kw = {
        "geometry": ["effective_rank", "mean_abs_corr"],
        "fidelity": ["morf_auc", "lerf_auc"],
        "n_boot": 100,
    }
    a = run_link(runs, **kw)
    b = run_link(runs.isel(run=list(perm)), **kw)
    xr.testing.assert_allclose(a, b)
    assert a.attrs == b.attrs


def test_run_link_nan_reasons_and_no_control():
    runs = _study(n=8)
    few = runs.copy()
    vals = few["morf_auc"].values.copy()
    vals[2:] = np.nan
    few["morf_auc"] = ("run", vals)
    link = run_link(few, "effective_rank", "morf_auc", n_boot=20)
    assert np.isnan(link["spearman"].item()) and int(link["n_runs"].item()) == 2
    assert "needs at least 3" in link.attrs["nan_reason_effective_rank_vs_morf_auc"]
    link = run_link(runs, "effective_rank", "morf_auc", control=None, n_boot=20)
    assert np.isfinite(link["spearman"].item())
    assert np.isnan(link["partial_spearman"].item())
    assert "control=None" in link.attrs["nan_reason_partial"]
    runs["flat"] = ("run", np.ones(8))
    link = run_link(runs, "flat", "morf_auc", n_boot=20)
    assert "constant" in link.attrs["nan_reason_flat_vs_morf_auc"]


def test_run_link_defaults_and_validation():
    runs = _study(n=10)
    link = run_link(runs, n_boot=20)
    assert list(link["geometry"].values) == ["effective_rank", "mean_abs_corr"]
    assert list(link["fidelity"].values) == ["morf_auc", "lerf_auc"]
    assert link.attrs["unit"].startswith("run")
    with pytest.raises(ValueError, match="n_boot must be"):
        run_link(runs, n_boot=0)
    with pytest.raises(ValueError, match="did you mean 'test_acc'"):
        run_link(runs, control="test_ac")
    with pytest.raises(TypeError, match="xarray Dataset"):
        run_link({"a": 1})


# -- within_run_link ------------------------------------------------------------------------------


def _per_epoch(n_runs=5, n_epochs=8, seed=0):
    rng = np.random.default_rng(seed)
    e = np.arange(n_epochs, dtype=float)
    progress = 1 - np.exp(-e / 3)
    geo = np.stack(
        [progress * rng.uniform(1, 2) + rng.normal(0, 0.05, n_epochs) for _ in range(n_runs)]
    )
    fid = np.stack([-progress + rng.normal(0, 0.05, n_epochs) for _ in range(n_runs)])
    return xr.Dataset(
        {"effective_rank": (("run", "epoch"), geo), "morf_auc": (("epoch", "run"), fid.T)},
        coords={"run": [f"r{i}" for i in range(n_runs)], "epoch": e.astype(int)},
    )


def test_within_run_link_against_per_run_spearman():
    ds = _per_epoch()
    w = within_run_link(ds, "effective_rank", "morf_auc", n_boot=400, seed=3)
    sel = {"geometry": "effective_rank", "fidelity": "morf_auc"}
    ref = []
    for i in range(5):
        x = ds["effective_rank"].values[i, 1:]
        y = ds["morf_auc"].values[1:, i]
        ref.append(stats.spearmanr(x, y).statistic)
    assert w["per_run_spearman"].sel(sel).values == pytest.approx(ref)
    assert float(w["median_spearman"].sel(sel)) == pytest.approx(np.median(ref))
    idx = np.random.default_rng(3).integers(0, 5, size=(400, 5))
    boot = np.median(np.array(ref)[idx], axis=1)
    assert float(w["median_ci_low"].sel(sel)) == pytest.approx(np.percentile(boot, 2.5))
    assert float(w["median_ci_high"].sel(sel)) == pytest.approx(np.percentile(boot, 97.5))
    assert int(w["n_runs"].sel(sel)) == 5
    assert float(w["median_spearman"].sel(sel)) < -0.5  # co-movement through training progress
    assert "confounded by training progress" in w.attrs["interpretation"]
    assert w.attrs["interpretation"] == WITHIN_RUN_NOTE


def test_within_run_link_min_epoch_and_undefined_runs():
    ds = _per_epoch(n_runs=3, n_epochs=5)
    ds["effective_rank"][1] = 2.0  # constant run: no correlation
    w = within_run_link(ds, "effective_rank", "morf_auc", min_epoch=2, n_boot=50)
    per_run = w["per_run_spearman"].squeeze().values
    assert np.isnan(per_run[1]) and np.isfinite(per_run[[0, 2]]).all()
    assert int(w["n_runs"].item()) == 2
    x = ds["effective_rank"].values[0, 2:]
    assert per_run[0] == pytest.approx(stats.spearmanr(x, ds["morf_auc"].values[2:, 0]).statistic)
    w = within_run_link(ds, "effective_rank", "morf_auc", min_epoch=3, n_boot=50)
    assert np.isnan(w["median_spearman"].item())
    assert "no run has 3+ epochs" in w.attrs["nan_reason_effective_rank_vs_morf_auc"]


def test_within_run_link_is_order_invariant_and_validates():
    ds = _per_epoch()
    a = within_run_link(ds, n_boot=100)
    b = within_run_link(ds.isel(run=[3, 0, 4, 1, 2]), n_boot=100)
    xr.testing.assert_allclose(a, b)
    with pytest.raises(ValueError, match="exactly dims"):
        within_run_link(ds.isel(epoch=0))
    with pytest.raises(ValueError, match="must name variables"):
        within_run_link(ds, "nope", "morf_auc")
