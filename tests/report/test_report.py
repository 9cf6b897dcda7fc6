"""The HTML report, built from a tiny real study: every figure present, tables, verdict, metadata."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from geomxai.report import build_report
from geomxai.study import AnalysisOptions, analyze_runs, make_probe

REGIMES = ("regular", "saliencydecor")
SEEDS = (0, 1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results(tmp_path_factory, train_tiny) -> xr.Dataset:
    root = tmp_path_factory.mktemp("runs")
    runs = [
        train_tiny(root / f"{regime}-s{seed}", regime, seed=seed)
        for regime in REGIMES
        for seed in SEEDS
    ]
    options = AnalysisOptions(probe_size=64, fractions=5, top_k=4, n_examples=3)
    ds = analyze_runs(runs, options=options, probe=make_probe("digits", 64), progress=False)
    ds["probe_images"] = xr.DataArray(
        make_probe("digits", 3).images.numpy(), dims=("example", "channel", "height", "width")
    )
    ds.attrs.update(study="tiny", created="today", hardware="test", commit="abc1234")
    return ds


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> Path:
    return build_report(results, tmp_path_factory.mktemp("report"))


def test_every_figure_is_a_png_beside_the_page(report):
    page = report.read_text()
    sources = re.findall(r"<img src='([^']+)'", page)
    assert len(sources) >= 8, sources
    for src in sources:
        path = report.parent / src
        assert path.is_file(), src
        assert path.read_bytes()[:8] == PNG_MAGIC, src
    # No network: nothing is fetched from elsewhere.
    assert "http://" not in page and "https://" not in page


def test_tables_verdict_and_metadata(report):
    page = report.read_text()
    for heading in (
        "Verdict on this data",
        "Accuracy per regime (Table II form)",
        "Masking fidelity per regime (Table I form)",
        "Configurations",
    ):
        assert heading in page
    for regime in REGIMES:
        assert f"<td>{regime}</td>" in page
    assert "abc1234" in page and "digits" in page
    # Two seeds give intervals, and the verdict weighs them.
    assert "±" in page
    assert "vs regular" in page


def test_verdict_follows_the_numbers(results, tmp_path):
    for ours, theirs, call in ((0.1, 0.9, "saliencydecor is NOT better"), (0.9, 0.1, "is better")):
        ds = results.copy(deep=True)
        ds["test_acc"].loc[{"regime": "saliencydecor"}] = (
            ours + 0.001 * np.arange(len(SEEDS))[:, None]
        )
        ds["test_acc"].loc[{"regime": "regular"}] = theirs + 0.001 * np.arange(len(SEEDS))[:, None]
        page = build_report(ds, tmp_path).read_text()
        line = re.search(
            r"test accuracy \(higher is better\): saliencydecor [^<]* vs regular [^<]*", page
        )
        assert line and line.group(0).endswith(call), line


def test_overlapping_seed_intervals_are_not_distinguishable(results, tmp_path):
    ds = results.copy(deep=True)
    spread = np.array([0.2, 0.8])[:, None]
    ds["test_acc"].loc[{"regime": "saliencydecor"}] = spread + 0.01
    ds["test_acc"].loc[{"regime": "regular"}] = spread
    page = build_report(ds, tmp_path).read_text()
    assert re.search(r"test accuracy [^<]* vs regular [^<]*not distinguishable", page)


def test_results_without_a_regime_dim_are_refused(results, tmp_path):
    with pytest.raises(ValueError, match="regime"):
        build_report(results.isel(regime=0), tmp_path)


def test_report_reads_a_saved_results_file(results, tmp_path):
    from geomxai.study import save_results

    path = save_results(results, tmp_path / "results.nc")
    with xr.open_dataset(path) as ds:
        index = build_report(ds.load(), tmp_path / "out")
    assert index.is_file()
    assert np.isfinite(float(ds["test_acc"].isel(epoch=-1).mean()))


def test_report_renders_in_headless_chromium(report):
    """The real browser check; `make test` installs Chromium where it runs as root."""
    import shutil
    import subprocess
    import sys

    if shutil.which("chromium") is None:
        pytest.skip("Chromium is not installed (scripts/install_browser.sh installs it as root)")
    script = Path(__file__).resolve().parents[2] / "scripts" / "check_report.py"
    out = subprocess.run(
        [sys.executable, str(script), str(report)], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert '"missing": []' in out.stdout
