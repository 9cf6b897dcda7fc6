"""convergence_summary against a slow reference, on planted and random learning curves."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from geomxai.stats import FLAT_TOLERANCE, convergence_summary


def _curves(values, cells, epochs=None):
    values = np.asarray(values, dtype=float)
    epochs = list(range(1, values.shape[1] + 1)) if epochs is None else epochs
    return xr.DataArray(
        values, dims=("run", "epoch"), coords={"epoch": epochs, "cell": ("run", cells)}
    )


def _reference(values, cells, epochs, tol):
    """Cell by cell, epoch by epoch, in plain Python."""
    out = {}
    for cell in dict.fromkeys(cells):
        rows = [v for v, c in zip(values, cells, strict=True) if c == cell]
        means = []
        for j in range(len(epochs)):
            col = [r[j] for r in rows if np.isfinite(r[j])]
            means.append(sum(col) / len(col) if col else float("nan"))
        reached = [j for j in range(len(epochs)) if np.isfinite(means[j])]
        last, flat = [], -1
        if reached:
            end = reached[-1]
            last = [r[end] for r in rows if np.isfinite(r[end])]
            flat = epochs[0]
            for j in range(end + 1):
                if not abs(means[j] - means[end]) <= tol:
                    flat = epochs[j + 1]
        out[cell] = (means, last, flat)
    return out


def test_a_planted_curve_settles_where_it_was_planted():
    values = [
        [0.50, 0.80, 0.900, 0.902, 0.899],
        [0.60, 0.84, 0.896, 0.898, 0.901],
        [0.10, 0.20, 0.300, 0.400, 0.500],
    ]
    s = convergence_summary(_curves(values, ["a", "a", "b"], [2, 4, 6, 8, 10]))
    assert s["flat_cell"].values.tolist() == ["a", "b"]
    assert s["flat_from"].values.tolist() == [6, 10]
    assert s["curve_final_n"].values.tolist() == [2, 1]
    assert float(s["curve_final_mean"].sel(flat_cell="a")) == pytest.approx(0.9)
    assert float(s["curve_final_min"].sel(flat_cell="a")) == pytest.approx(0.899)
    assert float(s["curve_final_max"].sel(flat_cell="a")) == pytest.approx(0.901)
    assert s["curve_mean_test_acc"].sel(flat_cell="a").values[0] == pytest.approx(0.55)


def test_a_cell_that_trains_fewer_epochs_ends_at_its_own_last_epoch():
    values = [[0.5, 0.9, np.nan], [0.6, 0.7, 0.8], [np.nan, np.nan, np.nan]]
    s = convergence_summary(_curves(values, ["a", "b", "c"]))
    a = s.sel(flat_cell="a")
    assert int(a["curve_final_n"]) == 1 and float(a["curve_final_mean"]) == 0.9
    assert int(a["flat_from"]) == 2 and np.isnan(float(a["curve_mean_test_acc"][2]))
    assert int(s["flat_from"].sel(flat_cell="b")) == 3
    c = s.sel(flat_cell="c")  # no value at all
    assert int(c["curve_final_n"]) == 0 and int(c["flat_from"]) == -1
    assert np.isnan(float(c["curve_final_mean"]))
    assert s.attrs["flat_tolerance"] == FLAT_TOLERANCE


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n_runs=st.integers(1, 6),
    n_epochs=st.integers(1, 7),
    tol=st.sampled_from([0.0, FLAT_TOLERANCE, 0.05]),
)
def test_matches_the_slow_reference(data, n_runs, n_epochs, tol):
    value = st.one_of(st.floats(0, 1), st.just(float("nan")))
    values = [[data.draw(value) for _ in range(n_epochs)] for _ in range(n_runs)]
    cells = [data.draw(st.sampled_from("abc")) for _ in range(n_runs)]
    epochs = sorted(data.draw(st.sets(st.integers(0, 50), min_size=n_epochs, max_size=n_epochs)))
    s = convergence_summary(_curves(values, cells, epochs), tolerance=tol)
    for cell, (means, last, flat) in _reference(values, cells, epochs, tol).items():
        at = s.sel(flat_cell=cell)
        np.testing.assert_allclose(at["curve_mean_test_acc"].values, means, rtol=1e-12)
        assert int(at["curve_final_n"]) == len(last)
        assert int(at["flat_from"]) == flat
        if last:
            assert float(at["curve_final_mean"]) == pytest.approx(np.mean(last), rel=1e-12)
            assert float(at["curve_final_min"]) == min(last)


def test_bad_input_is_named():
    good = _curves([[0.5, 0.6]], ["a"])
    with pytest.raises(ValueError, match="coord 'cell'"):
        convergence_summary(good.drop_vars("cell"))
    with pytest.raises(ValueError, match="dims"):
        convergence_summary(good.isel(epoch=0))
    for bad in (float("nan"), -0.1, True, "x"):
        with pytest.raises(ValueError, match="tolerance"):
            convergence_summary(good, tolerance=bad)
