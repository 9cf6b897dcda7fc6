"""``geomxai analyze --reduce`` and ``--entanglement-layer``: the analysis options the API has
(``reduce=``, ``entanglement_layer=``), on the command line, recorded in the results."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import xarray as xr

from geomxai.cli import main

_MODEL = (
    "from torch import nn\n\n\n"
    "class ConvNet(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())\n"
    "        self.features = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())\n"
    "        self.head = nn.Linear(16, 10)\n\n"
    "    def forward(self, x):\n"
    "        return self.head(self.features(self.conv(x)))\n"
)


@pytest.fixture
def argv(tmp_path):
    source = tmp_path / "net.py"
    source.write_text(_MODEL)
    return ["analyze", "--model", f"{source}:ConvNet", "--data", "digits", "--probe-size", "64"]


def test_reduce_and_entanglement_layer_reach_the_analysis(argv, tmp_path):
    out = tmp_path / "flat.nc"
    args = [*argv, "--layers", "conv", "--reduce", "flatten"]
    args += ["--entanglement-layer", "features", "--out", str(out)]
    assert main(args) == 0
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        # A conv map (4 channels of 8x8) flattened is 256 units; mean-pooled it would be 4.
        assert int(ds["n_units"].sel(layer="conv").max()) == 4 * 8 * 8
        assert json.loads(ds.attrs["reduction"])["conv"] == "flatten"
        assert ds.attrs["entanglement_layer"] == "features"
        assert np.isfinite(ds["entanglement"].values).all()
    pooled = tmp_path / "mean.nc"
    assert main([*argv, "--layers", "conv", "--reduce", "conv=mean", "--out", str(pooled)]) == 0
    with xr.open_dataset(pooled, engine="h5netcdf") as ds:
        assert int(ds["n_units"].sel(layer="conv").max()) == 4


def test_reduce_values_are_read_as_the_api_takes_them(argv, tmp_path, monkeypatch, caplog):
    import geomxai.study

    given = []

    def analyze_model(model, data, *, options, **kwargs):
        given.append(options.reduce)
        raise ValueError("stopped after reading the options")

    monkeypatch.setattr(geomxai.study, "analyze_model", analyze_model)

    def reduce_of(*values):
        given.clear()
        flag = [a for v in values for a in ("--reduce", v)]  # repeatable, one value each
        assert main([*argv, *flag, "--out", str(tmp_path / "r.nc")]) == 2
        return given

    def api(reduce):
        return [geomxai.study.AnalysisOptions(reduce=reduce).reduce]

    assert reduce_of() == [geomxai.study.AnalysisOptions().reduce]  # the API's default
    assert reduce_of("flatten") == api("flatten")
    assert reduce_of("-1") == api(-1) == [-1]  # a token index, read as a number
    assert reduce_of("conv=flatten", "blocks.1=0") == api({"conv": "flatten", "blocks.1": 0})
    with caplog.at_level(logging.ERROR):
        assert reduce_of("flatten", "conv=mean") == []
    assert "not both" in caplog.records[-1].getMessage()


def test_a_wrong_reduction_is_one_error_line(argv, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert main([*argv, "--reduce", "sideways", "--out", str(tmp_path / "r.nc")]) == 2
    message = caplog.records[-1].getMessage()
    assert "reduce must be one of" in message and "sideways" in message
