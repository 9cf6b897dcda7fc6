"""The report's probe table, its similarity figure, and results of one model (issue 16)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from synthetic_results import check_figures, make_results, read_page

from geomxai.report import build_report


def _probe_table(page):
    return next(t for t in page.tables if t["heading"] == "Probe")


@pytest.mark.parametrize(
    ("probe", "status"),
    [
        (64, "ok"),
        (12, "geometry NaN (under 16 samples); accuracy and masking NaN (under 50 samples)"),
        (
            40,
            "spectrum biased (under 64 samples, 2 per unit); accuracy and masking NaN (under 50 samples)",
        ),
    ],
)
def test_the_probe_table_says_what_the_probe_allows(tmp_path, probe, status):
    ds = make_results(units=32)
    ds["probe_size"][...] = probe
    page = read_page(build_report(ds, tmp_path))
    table = _probe_table(page)
    assert table["header"] == [
        "regime",
        "probe samples",
        "layer",
        "units",
        "samples per unit",
        "what it allows",
    ]
    assert [row[0] for row in table["rows"]] == [str(r) for r in ds.regime.values]
    for row in table["rows"]:
        assert row[1:5] == [str(probe), "body", "32", f"{probe / 32:.3g}"]
        assert row[5] == status


def test_unlabelled_results_are_not_told_about_accuracy(tmp_path):
    ds = make_results(units=32)
    ds["probe_size"][...] = 40
    ds.attrs["labels"] = "no"
    row = _probe_table(read_page(build_report(ds, tmp_path)))["rows"][0]
    assert row[5] == "spectrum biased (under 64 samples, 2 per unit)"


def test_results_without_a_probe_size_have_no_probe_table(tmp_path):
    ds = make_results().drop_vars(["probe_size", "n_units"])
    assert "Probe" not in read_page(build_report(ds, tmp_path)).headings


def test_the_similarity_figure_is_drawn_over_epochs(tmp_path):
    index = build_report(make_results(), tmp_path)
    page = read_page(index)
    heading = "Representation similarity over epochs (linear CKA, Procrustes)"
    assert heading in page.headings
    assert any(src.endswith("representation_similarity.png") for src in page.images)
    check_figures(page, index)


def test_all_nan_variables_leave_their_figures_out(tmp_path):
    ds = make_results()
    for var in ("morf_curve", "lerf_curve", "morf_auc", "corr_spectrum"):
        ds[var][...] = np.nan
    for var in ("cka_previous", "cka_final", "procrustes_previous", "procrustes_final"):
        ds[var][...] = np.nan
    index = build_report(ds, tmp_path)
    page = read_page(index)
    assert not any("masking_curves" in s or "correlation_spectra" in s for s in page.images)
    assert not any("representation_similarity" in s for s in page.images)
    assert not any("geometry_vs_fidelity" in s for s in page.images)
    check_figures(page, index)


def test_a_report_of_one_model_with_normalised_images(tmp_path):
    """analyze_model results (one regime, seed, epoch) of normalised inputs: no clipped images."""
    from torch import nn

    from geomxai.study import analyze_model, imagenet_normalization

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.append(nn.Linear(4, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 3, 10, 10, generator=g), torch.randint(0, 3, (64,), generator=g)
    results = analyze_model(
        net, (x, y), layers=["3"], probe_size=64, transform=imagenet_normalization()
    )
    assert float(results["probe_images"].min()) < 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "Clipping input data" among them
        index = build_report(results, tmp_path)
    page = read_page(index)
    check_figures(page, index)
    row = _probe_table(page)["rows"][0]
    assert row[:4] == ["Sequential", "64", "3", "4"] and row[5] == "ok"
