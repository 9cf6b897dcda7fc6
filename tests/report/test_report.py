"""The HTML report of synthetic results (conftest.py): every figure present, tables, verdict, metadata.

The report of a real tiny study is test_report_end_to_end.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from synthetic_results import PNG_MAGIC, REGIMES, SEEDS, check_figures, check_tables, read_page

from geomxai.report import build_report


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
    # Two seeds give intervals; the plain report calls no difference (the one verdict rule
    # is paired and corrected, applied by a study's statistics stage).
    assert "±" in page
    assert "geomxai study DESIGN.toml" in page


def test_the_plain_report_never_calls_a_difference(results, tmp_path):
    # Non-overlapping intervals are not geomxai's rule for "better": a plain results file has
    # no paired, corrected statistics, so its page states values and makes no call.
    for ours, theirs in ((0.1, 0.9), (0.9, 0.1)):
        ds = results.copy(deep=True)
        ds["test_acc"].loc[{"regime": "saliencydecor"}] = (
            ours + 0.001 * np.arange(len(SEEDS))[:, None]
        )
        ds["test_acc"].loc[{"regime": "regular"}] = theirs + 0.001 * np.arange(len(SEEDS))[:, None]
        page = build_report(ds, tmp_path).read_text()
        assert "saliencydecor is better" not in page and "NOT better" not in page
        assert "paired, multiplicity-corrected" in page


def test_results_without_a_regime_dim_are_refused(results, tmp_path):
    with pytest.raises(ValueError, match="regime"):
        build_report(results.isel(regime=0), tmp_path)


def test_report_reads_a_saved_results_file(results, report, tmp_path):
    from geomxai.study import save_results

    path = save_results(results, tmp_path / "results.nc")
    with xr.open_dataset(path) as ds:
        index = build_report(ds.load(), tmp_path / "out")
    page = read_page(index)
    # The file gives the page the Dataset gives (`report` is that of the same synthetic results).
    assert page.text == read_page(report).text
    assert check_tables(page, results) == 4 + len(REGIMES) * 11 + results["spearman"].size
    check_figures(page, index)


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


@pytest.mark.parametrize(
    ("attrs", "named"),
    [
        ({"saliency_method": "smoothgrad"}, "SmoothGrad saliency"),
        ({"saliency_method": "gradient"}, "gradient saliency"),
        ({"saliency_method": "my_method"}, "my_method saliency"),
        ({"analysis": '{"saliency_method": "input_x_gradient"}'}, "input × gradient saliency"),
        ({}, "saliency (method not recorded in the results)"),
    ],
)
def test_the_page_names_the_saliency_method_the_analysis_used(
    results, tmp_path, monkeypatch, attrs, named
):
    """Not "|gradient|" whatever the method: the text and the saliency figure name the one used."""
    from _internals import report_report as _report

    titles = []
    real_save = _report.save

    def keep_title(fig, path):
        titles.append(fig._suptitle.get_text() if fig._suptitle else "")
        return real_save(fig, path)

    monkeypatch.setattr(_report, "save", keep_title)
    for key in ("saliency_method", "analysis", "analysis_options"):
        results.attrs.pop(key, None)
    results.attrs.update(attrs)
    page = build_report(results, tmp_path).read_text()
    assert f"curve of {named}." in page
    assert "|gradient|" not in page
    grid = [t for t in titles if "of the same test images" in t]
    assert grid == [f"{named[0].upper()}{named[1:]} of the same test images, final checkpoint"]
