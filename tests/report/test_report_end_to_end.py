"""A real tiny study end to end: profile -> training -> analysis -> results.nc -> report.

The one report test that trains; the others read synthetic results (``synthetic_results.py``),
and the last test here checks that those are laid out as this real study's results file is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr
from synthetic_results import OPTIONS, check_figures, check_tables, make_results, read_page

REGIMES = ("regular", "saliencydecor")

PROFILE = f"""
dataset = "digits"
model = "cnn2"
epochs = 2
train_subset = 128
test_subset = 64
batch_size = 64
device = "cpu"
progress = false

[study]
name = "tiny"
regimes = {list(REGIMES)!r}
seeds = [0]

[analysis]
probe_size = {OPTIONS.probe_size}
fractions = {OPTIONS.fractions}
top_k = {OPTIONS.top_k}
n_examples = {OPTIONS.n_examples}
"""


@pytest.fixture(scope="module")
def study_index(tmp_path_factory) -> Path:
    """``index.html`` of the tiny study, as ``geomxai study`` writes it (a profile of the older
    layout, read as the design it means)."""
    from geomxai.pipeline import run_study

    root = tmp_path_factory.mktemp("study")
    profile = root / "tiny.toml"
    profile.write_text(PROFILE.replace("'", '"'), encoding="utf-8")
    return run_study(str(profile), runs_root=root / "runs", reports_root=root / "reports")


@pytest.fixture(scope="module")
def real_results(study_index) -> xr.Dataset:
    """The study's per-checkpoint results (``detail.nc``: every run over regime, seed, epoch)."""
    with xr.open_dataset(study_index.parent / "detail.nc") as ds:
        return ds.load()


@pytest.fixture(scope="module")
def study(real_results, tmp_path_factory) -> Path:
    """The report of those results alone, as ``geomxai report detail.nc`` writes it."""
    from geomxai.report import build_report

    return build_report(real_results, tmp_path_factory.mktemp("plain"))


def test_the_study_page_holds_its_statistics_and_every_checkpoint(study_index):
    text = study_index.read_text()
    assert "What this report rests on" in text and "Data: digits; 128 training images" in text
    assert "Every checkpoint of every run" in text and "Correlation spectra" in text
    assert (study_index.parent / "tables.md").is_file()


def test_the_report_shows_the_saved_results(study, real_results):
    assert [str(r) for r in real_results.regime.values] == sorted(REGIMES)
    page = read_page(study)
    # Metadata (4 rows), per-regime tables (11 variables), the Spearman table: against results.nc.
    n_link = real_results["spearman"].size
    assert check_tables(page, real_results) == 4 + len(REGIMES) * 11 + n_link
    check_figures(page, study)
    assert len(page.images) >= 9, page.images


def _attr_keys(attrs) -> set[str]:
    """Attr names, less the NaN reasons and the warnings: which variables have some depends on
    the data (a tiny model at chance warns so)."""
    return {k for k in attrs if not k.startswith("nan_reason") and k != "warnings"}


def test_synthetic_results_are_laid_out_as_a_real_study(real_results):
    synthetic = make_results()
    assert sorted(synthetic.data_vars) == sorted(real_results.data_vars)
    assert sorted(synthetic.coords) == sorted(real_results.coords)
    for name, real in real_results.data_vars.items():
        fake = synthetic[name]
        assert fake.dims == real.dims, name
        assert fake.dtype == real.dtype, name
        assert _attr_keys(fake.attrs) == _attr_keys(real.attrs), name
        if "nan_reason" in real.attrs:
            assert "nan_reason" in fake.attrs, name
    assert _attr_keys(synthetic.attrs) <= _attr_keys(real_results.attrs)
