"""`geomxai study`: a profile trains every regime, analyses every checkpoint and writes a report."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from geomxai import pipeline
from geomxai.cli import main
from geomxai.data import DatasetNotFoundError

PROFILE = """
dataset = "{dataset}"
model = "cnn2"
epochs = 1
train_subset = 200
test_subset = 100
batch_size = 50
device = "cpu"
progress = false
out_dir = "unused"

[study]
regimes = ["regular", "saliencydecor"]
seeds = [0]
fallback_dataset = "digits"

[analysis]
probe_size = 64
fractions = 4
top_k = 4
n_examples = 2
"""


def _profile(tmp_path, dataset="digits"):
    path = tmp_path / "tiny.toml"
    path.write_text(PROFILE.format(dataset=dataset))
    return path


@pytest.mark.slow  # trains and analyses two regimes
def test_study_from_the_command_line(tmp_path, capsys):
    rc = main(
        [
            "study",
            "--profile",
            str(_profile(tmp_path)),
            "--runs",
            str(tmp_path / "runs"),
            "--reports",
            str(tmp_path / "reports"),
        ]
    )
    assert rc == 0
    index = tmp_path / "reports" / "tiny" / "index.html"
    assert f"report: {index}" in capsys.readouterr().out
    with xr.open_dataset(index.parent / "results.nc") as ds:
        assert set(ds.regime.values) == {"regular", "saliencydecor"}
        assert ds.sizes["epoch"] == 2  # the initial model and one trained epoch
        assert ds.attrs["dataset"] == "digits"
        assert {"created", "hardware", "commit"} <= set(ds.attrs)
        # The geometry <-> fidelity link is saved with the results, for the report to read.
        assert ds["spearman"].dims == ("geometry", "fidelity")
        assert {"spearman_low", "spearman_high", "p_value", "n_points"} <= set(ds.data_vars)
        assert "effective_rank" in ds["geometry"].values and "morf_auc" in ds["fidelity"].values
        # Trained checkpoints only (epoch >= 1): 2 regimes x 1 epoch, too few for a rank
        # correlation, so NaN with its reason rather than a number from untrained models.
        assert int(ds["n_points"].sel(geometry="effective_rank", fidelity="morf_auc")) == 2
        assert np.isnan(float(ds["spearman"].sel(geometry="effective_rank", fidelity="morf_auc")))
        assert "at least 3" in ds["spearman"].attrs["nan_reason_effective_rank_vs_morf_auc"]
    assert "Spearman correlation, geometry vs fidelity" in index.read_text()
    # Every regime and seed has its run directory with a checkpoint per epoch.
    for regime in ("regular", "saliencydecor"):
        assert len(list((tmp_path / "runs" / "tiny" / f"{regime}-s0" / "checkpoints").glob("*.pt")))


@pytest.mark.slow  # trains and analyses two regimes
def test_missing_dataset_falls_back_to_digits_and_says_so(tmp_path, monkeypatch, caplog):
    real = pipeline.load_dataset

    def missing_fashion(name, **kwargs):
        if name == "fashion-mnist":
            raise DatasetNotFoundError("no Fashion-MNIST here (looked in /nowhere)")
        return real(name, **kwargs)

    monkeypatch.setattr(pipeline, "load_dataset", missing_fashion)
    caplog.set_level("WARNING")
    index = pipeline.run_study(
        str(_profile(tmp_path, dataset="fashion-mnist")),
        runs_root=tmp_path / "runs",
        reports_root=tmp_path / "reports",
    )
    assert "falling back to digits" in caplog.text
    page = index.read_text()
    assert "this study ran on &#x27;digits&#x27; instead" in page or "ran on 'digits'" in page
    with xr.open_dataset(index.parent / "results.nc") as ds:
        assert ds.attrs["dataset"] == "digits"
        assert "fashion-mnist is not installed" in ds.attrs["note"]


def test_without_a_fallback_a_missing_dataset_stops_the_study(tmp_path, monkeypatch):
    def missing(name, **kwargs):
        raise DatasetNotFoundError(f"no {name} here (looked in /nowhere)")

    monkeypatch.setattr(pipeline, "load_dataset", missing)
    profile = _profile(tmp_path, dataset="cifar10")
    profile.write_text(profile.read_text().replace('fallback_dataset = "digits"\n', ""))
    with pytest.raises(DatasetNotFoundError, match="no cifar10 here.*sets no \\[study\\] fallback"):
        pipeline.run_study(str(profile), runs_root=tmp_path / "runs", reports_root=tmp_path / "r")
    assert not (tmp_path / "runs").exists()  # nothing was trained


def test_unknown_profile_names_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="looked at"):
        pipeline.find_profile("no-such-profile")
