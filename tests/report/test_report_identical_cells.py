"""A study report says which cells trained the same networks, read from the runs themselves.

In the micro ViT the whitened CLS token feeds only the decorrelation loss, so ``sgt`` and
``saliencydecor`` at ``decor_weight = 0`` are one computation: the committed results show it on
every seed and metric, and the page must say so before any verdict sets them against each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from geomxai.report import build_study_report

ROOT = Path(__file__).resolve().parents[2]
TITLE = "## Cells that are the same computation"


def per_run(name: str) -> xr.Dataset:
    """A committed study's per-run values with its attrs (the design and the runs' configs)."""
    path = ROOT / "reports" / name / "results.nc"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    ds = xr.load_dataset(path)
    return ds[[v for v in ds.data_vars if ds[v].dims == ("run",)]]


def section(ds: xr.Dataset, out: Path) -> str:
    tables = build_study_report(ds, out).with_name("tables.md").read_text()
    if TITLE not in tables:
        return ""
    return tables.split(TITLE, 1)[1].split("\n## ", 1)[0]


def test_the_vit_report_names_the_two_cells_that_trained_the_same_networks(tmp_path):
    text = section(per_run("fashion-mnist-vit-micro"), tmp_path)
    assert (
        "| sgt | saliencydecor-lambda0 | decor_weight: 0.01 / 0.0; regime: sgt / saliencydecor |"
        in text
    )
    assert text.count("\n| ") == 2  # the header and that one pair: no other cells are the same


def test_one_value_a_hair_apart_on_one_seed_makes_them_two_computations(tmp_path):
    ds = per_run("fashion-mnist-vit-micro")
    run = list(ds["run"].values).index("saliencydecor-lambda0-s3")
    gini = ds["gini__abs_gradient"].values
    gini[run] = np.nextafter(gini[run], np.inf)
    assert section(ds, tmp_path) == ""


def test_a_model_with_whitening_in_its_path_has_no_such_cells(tmp_path):
    assert section(per_run("fashion-mnist-cnn-gap"), tmp_path) == ""
