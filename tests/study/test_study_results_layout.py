"""Every results file geomxai writes says its layout (``schema_version``) and where it was made;
a report of a file without one, or of an older one, is refused naming the layout and the fix
rather than drawn with sections silently missing."""

from __future__ import annotations

import logging

import pytest
import torch
import xarray as xr
from tiny_models import TinyNet, write_source

from geomxai.cli import main
from geomxai.report import ResultsVersionError, build_report
from geomxai.schema import SCHEMA_VERSION
from geomxai.study import (
    AnalysisOptions,
    analyze_checkpoints,
    analyze_model,
    combine_runs,
    make_probe,
)

_KW = {"layers": ["features"], "probe_size": 64, "fractions": 3, "n_examples": 2}


@pytest.fixture(scope="module")
def states():
    torch.manual_seed(0)
    net, out = TinyNet(), {}
    for epoch in range(3):
        with torch.no_grad():
            net.features[1].weight.mul_(1.2)
        out[epoch] = {k: v.clone() for k, v in net.state_dict().items()}
    return out


@pytest.fixture(scope="module")
def run(states):
    return analyze_checkpoints(TinyNet(), states, "digits", progress=False, **_KW)


def _stamped(ds):
    assert int(ds.attrs["schema_version"]) == SCHEMA_VERSION
    for key in ("created", "hardware", "commit"):
        assert ds.attrs.get(key), key


def test_analyze_checkpoints_and_combine_runs_carry_the_layout_and_the_stamp(run):
    _stamped(run)
    _stamped(combine_runs([run]))


def test_combine_runs_keeps_the_oldest_layout_of_its_runs(run):
    old = run.copy()
    old.attrs = {**run.attrs, "schema_version": 1, "regime": "old"}
    assert int(combine_runs([run, old]).attrs["schema_version"]) == 1
    built = run.copy()
    built.attrs = {k: v for k, v in run.attrs.items() if k != "schema_version"}
    assert int(combine_runs([built]).attrs["schema_version"]) == SCHEMA_VERSION


def test_the_checkpoints_command_writes_the_layout(states, tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for epoch, state in states.items():
        torch.save(state, folder / f"epoch_{epoch}.pt")
    source = write_source(tmp_path / "net.py")
    out = tmp_path / "r.nc"
    argv = ["analyze", "--model", f"{source}:TinyNet", "--checkpoints", str(folder)]
    argv += ["--data", "digits", "--layers", "features", "--probe-size", "64", "--out", str(out)]
    assert main(argv) == 0
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        _stamped(ds)
    # ... and the report of that file is drawn.
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0


@pytest.fixture(scope="module")
def single():
    torch.manual_seed(0)
    probe = make_probe("digits", 64)
    options = AnalysisOptions(probe_size=64, layers=("features",), fractions=3, n_examples=2)
    return analyze_model(TinyNet(), (probe.images, probe.labels), options=options)


@pytest.mark.parametrize("version", [None, 1])
def test_build_report_refuses_an_unnumbered_or_older_layout(single, tmp_path, version):
    old = single.copy()
    old.attrs = {k: v for k, v in single.attrs.items() if k != "schema_version"}
    if version is not None:
        old.attrs["schema_version"] = version
    with pytest.raises(ResultsVersionError, match=r"layout 1.*geomxai analyze.*--stage statistics"):
        build_report(old, tmp_path / "report")
    assert not (tmp_path / "report").exists()
    assert build_report(single, tmp_path / "report").is_file()


def test_the_report_command_refuses_a_file_without_a_layout_in_one_line(single, tmp_path, caplog):
    path = tmp_path / "old.nc"
    old = single.copy()
    old.attrs = {k: v for k, v in single.attrs.items() if k != "schema_version"}
    old.to_netcdf(path, engine="h5netcdf")
    with caplog.at_level(logging.ERROR):
        assert main(["report", str(path), "--out", str(tmp_path / "report")]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert "layout 1 (no schema_version)" in errors[0] and "geomxai analyze" in errors[0]
    assert not (tmp_path / "report" / "index.html").exists()
