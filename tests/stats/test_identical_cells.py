"""Which cells are one computation: equal seed by seed on every value along ``run``, over the
same seeds, with at least one number among them (``geomxai.stats.identical_cells``)."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from geomxai.stats import identical_cells


def runs(acc, cells, seeds, **more) -> xr.Dataset:
    data = {"test_acc": ("run", np.asarray(acc, dtype=float))} | {
        k: (("run", *(["epoch"] if np.ndim(v) == 2 else [])), np.asarray(v))
        for k, v in more.items()
    }
    return xr.Dataset(data, coords={"cell": ("run", cells), "seed": ("run", seeds)})


def test_two_cells_equal_on_every_seed_are_one_computation_and_a_third_is_not():
    ds = runs([0.8, 0.8, 0.9, 0.7, 0.7, 0.7], ["a", "b", "c"] * 2, [0, 0, 0, 1, 1, 1])
    assert identical_cells(ds) == [["a", "b"]]


def test_a_curve_that_differs_at_one_epoch_parts_them():
    curve = [[0.5, 0.8], [0.5, 0.8], [0.4, 0.7], [0.4, np.nextafter(0.7, 1)]]
    ds = runs([0.8, 0.8, 0.7, 0.7], ["a", "b", "a", "b"], [0, 0, 1, 1], curve=curve)
    assert identical_cells(ds) == []


def test_cells_over_other_seeds_are_not_called_one_computation():
    # b equals a on seed 0 but has no seed 1: one seed is not the cell.
    ds = runs([0.8, 0.8, 0.7], ["a", "b", "a"], [0, 0, 1])
    assert identical_cells(ds) == []


def test_runs_with_no_number_are_not_evidence():
    ds = runs([np.nan] * 4, ["a", "b"] * 2, [0, 0, 1, 1])
    assert identical_cells(ds) == []


def test_nan_where_both_have_it_and_text_columns_are_compared_as_values():
    ds = runs(
        [0.8, 0.8, np.nan, np.nan],
        ["a", "b", "a", "b"],
        [0, 0, 1, 1],
        label=["x", "x", "y", "y"],
    )
    assert identical_cells(ds) == [["a", "b"]]
    ds["label"].values[3] = "z"
    assert identical_cells(ds) == []


def test_groups_come_in_the_design_order_and_a_planned_cell_without_runs_is_left_out():
    ds = runs([0.8, 0.8, 0.8], ["z", "y", "x"], [0, 0, 0])
    ds.attrs["design"] = json.dumps({"cells": [{"name": n} for n in ("never-ran", "x", "y", "z")]})
    assert identical_cells(ds) == [["x", "y", "z"]]
    assert identical_cells(ds.drop_vars("seed")) == []
