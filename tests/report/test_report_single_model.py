"""What a newcomer sees of one model's analysis (issue 26 point 6): a report without over-epochs
plots of one dot, the probe accuracy rather than "n/a", whole-epoch ticks, saliency maps with
pixel coordinates that draw the right way up, and a progress bar while the model runs."""

from __future__ import annotations

import re

import matplotlib
import numpy as np
import pytest
import torch
from _internals import report_report as _report

from geomxai.models import build_model
from geomxai.report import build_report
from geomxai.study import AnalysisOptions, analyze_model, squeeze_results

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One cnn2 analysed on 64 random 16x16 images (one model, one checkpoint)."""
    torch.manual_seed(0)
    model = build_model("cnn2", in_channels=3, num_classes=4, image_size=16).eval()
    x = torch.rand(64, 3, 16, 16)
    y = torch.arange(64) % 4
    options = AnalysisOptions(probe_size=64, fractions=3, n_examples=2)
    return analyze_model(model, (x, y), options=options, progress=False)


def test_a_single_model_report_leaves_out_what_one_checkpoint_cannot_show(single, tmp_path):
    index = build_report(single, tmp_path / "report")
    page = index.read_text()
    figures = {p.name for p in (tmp_path / "report" / "figures").iterdir()}
    assert not [f for f in figures if "over_epochs" in f or f == "representation_similarity.png"]
    assert "over epochs" not in page
    assert "No saliencydecor run" not in page
    # The accuracy section shows the probe accuracy the analysis measured.
    section = page.split("<h2>Accuracy per regime (on the probe)")[1].split("<h2>")[0]
    cells = re.findall(r"<td>([^<]*)</td>", section)
    assert cells[0] == "cnn2" or cells[0] == "FeatureModel"
    assert float(cells[-1]) == pytest.approx(100 * float(single["probe_acc"].squeeze()), rel=1e-3)
    assert "n/a" not in section


def _over_three_epochs(single):
    """``single`` as if measured at epochs 0, 1 and 2, with a CKA to the previous checkpoint."""
    import xarray as xr

    epochs = [single.isel(epoch=0).assign_coords(epoch=e) for e in (0, 1, 2)]
    out = xr.concat(epochs, dim="epoch", data_vars="minimal", coords="minimal")
    out = out.assign(
        effective_rank=out["effective_rank"] + xr.DataArray([0.0, 1.0, 2.0], dims="epoch")
    )
    out["cka_previous"] = out["effective_rank"] * 0 + xr.DataArray([np.nan, 0.5, 0.7], dims="epoch")
    out.attrs = single.attrs
    return out


def test_results_over_epochs_keep_their_over_epochs_figures(single, tmp_path):
    build_report(_over_three_epochs(single), tmp_path / "report")
    figures = {p.name for p in (tmp_path / "report" / "figures").iterdir()}
    assert {"effective_rank_over_epochs.png", "representation_similarity.png"} <= figures


def test_epoch_axes_have_whole_epoch_ticks_only(single, tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(_report, "save", lambda fig, path: drawn.append(fig) or str(path))
    results = _over_three_epochs(single)
    assert _report._fig_over_epochs(results, "effective_rank", tmp_path)
    assert _report._fig_similarity(results, tmp_path)
    for fig in drawn:
        fig.canvas.draw()
        for ax in fig.axes:
            if ax.get_visible() and ax.get_xlabel() == "epoch":
                lo, hi = ax.get_xlim()
                ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
                assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_saliency_maps_have_pixel_coordinates_and_draw_the_right_way_up(single):
    maps = squeeze_results(single)["saliency_maps"].isel(example=0)
    h, w = maps.sizes["height"], maps.sizes["width"]
    assert maps["y"].values.tolist() == list(range(h)) and maps["y"].attrs["units"] == "pixel"
    assert maps["x"].values.tolist() == list(range(w))
    image = maps.plot.imshow(x="x", y="y")
    left, right, bottom, top = image.get_extent()
    assert top < bottom  # row y=0 is at the top of the axes, as it is in the image
    np.testing.assert_array_equal(image.get_array(), maps.values)


def test_analyze_model_shows_a_progress_bar(capsys):
    torch.manual_seed(0)
    model = build_model("cnn2", in_channels=1, num_classes=2, image_size=8).eval()
    x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 2
    options = AnalysisOptions(probe_size=20, fractions=2, n_examples=1)
    with pytest.warns(UserWarning):  # a 20-sample probe is below the accuracy minimum
        analyze_model(model, (x, y), options=options, progress=True)
    err = capsys.readouterr().err
    assert "analysing FeatureModel" in err
    counts = [float(c) for c in re.findall(r"analysing FeatureModel: (\d+(?:\.\d+)?)", err)]
    assert counts and max(counts) >= 20  # at least the probe went through the model once
    with pytest.warns(UserWarning):
        analyze_model(model, (x, y), options=options, progress=False)
    assert "analysing" not in capsys.readouterr().err
