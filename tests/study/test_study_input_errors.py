"""Errors a newcomer hit (issue 26 point 4), each naming its fix: channels-last images, a pickled
module as weights, the PyTorch tutorial's checkpoint dict, a results file of another layout."""

from __future__ import annotations

import logging

import pytest
import torch
import xarray as xr
from _internals import check_image_layout

import geomxai
from geomxai.cli import main
from geomxai.models import build_model
from geomxai.report import ResultsVersionError, check_schema_version
from geomxai.schema import SCHEMA_VERSION
from geomxai.study import analyze_model, load_state_dict_file, resolve_model

PERMUTE = "images look channels-last (N, H, W, C); permute to (N, C, H, W): x.permute(0, 3, 1, 2)"


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return build_model("cnn2", in_channels=3, num_classes=10, image_size=32).eval()


@pytest.mark.parametrize("as_spec", [False, True])
def test_channels_last_images_name_the_permute_before_any_forward_pass(cnn, as_spec):
    x = torch.rand(4, 32, 32, 3)
    y = torch.arange(4)
    calls = []
    cnn.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError) as err:
        analyze_model("cnn2" if as_spec else cnn, (x, y), probe_size=4)
    assert PERMUTE in str(err.value) and "(4, 32, 32, 3)" in str(err.value)
    assert calls == []  # refused before the one-sample head check ran the model


def test_the_layout_check_lets_real_layouts_through(cnn):
    check_image_layout(torch.rand(2, 3, 32, 32), cnn)
    check_image_layout(torch.rand(2, 1, 8, 8))
    check_image_layout(torch.rand(2, 16))  # tabular
    # A model whose first convolution takes 32 channels may be given (n, 32, 8, 3) maps.
    wide = torch.nn.Sequential(torch.nn.Conv2d(32, 4, 1))
    check_image_layout(torch.rand(2, 32, 8, 3), wide)
    with pytest.raises(ValueError, match=r"x\.permute\(0, 3, 1, 2\)"):
        check_image_layout(torch.rand(2, 32, 8, 3), torch.nn.Conv2d(3, 4, 1))
    # After the permute it names, the same images pass.
    check_image_layout(torch.rand(2, 32, 32, 3).permute(0, 3, 1, 2), cnn)


def test_a_pickled_module_as_weights_says_resave_the_state_dict(cnn, tmp_path, caplog):
    path = tmp_path / "whole_model.pt"
    torch.save(cnn, path)
    with pytest.raises(geomxai.CheckpointError) as err:
        load_state_dict_file(path)
    message = str(err.value)
    assert message == (
        f"{str(path)!r} holds a pickled module, not a state_dict; re-save with "
        f"torch.save(model.state_dict(), {str(path)!r})"
    )
    # At the command line: exit status 2, one line, no terminal colour codes, no traceback.
    assert main(["layers", "cnn2", "--weights", str(path)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [message]
    assert "\x1b" not in caplog.text and "add_safe_globals" not in caplog.text


def test_the_tutorial_checkpoint_dict_is_unwrapped_saying_so(cnn, tmp_path, caplog):
    optimizer = torch.optim.SGD(cnn.parameters(), lr=0.1, momentum=0.9)
    path = tmp_path / "tutorial.pt"
    torch.save(
        {
            "epoch": 5,
            "model_state_dict": cnn.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "loss": 0.25,
        },
        path,
    )
    with caplog.at_level(logging.INFO, logger="geomxai"):
        model = resolve_model("cnn2", weights=path, num_classes=10)
    for key, value in cnn.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    assert "'model_state_dict' key" in caplog.text


def test_a_dict_without_a_state_dict_names_its_keys_and_the_fix(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"epoch": 5, "weights_list": [torch.zeros(2)]}, path)
    with pytest.raises(geomxai.CheckpointError, match=r"its keys: \['epoch', 'weights_list'\]"):
        load_state_dict_file(path)


def _results(version):
    ds = xr.Dataset({"probe_acc": (("regime",), [0.75])}, coords={"regime": ["m"]})
    if version is not None:
        ds.attrs["schema_version"] = version
    return ds


def test_a_results_layout_of_another_version_is_refused_by_name():
    def check(version, where):
        check_schema_version(_results(version), where=repr(where), fix="FIX")

    check(SCHEMA_VERSION, "r.nc")
    # Every analysis writes a version: a file without one is layout 1, from before they did.
    with pytest.raises(ResultsVersionError, match=r"'r.nc' has results layout 1 \(no schema_"):
        check(None, "r.nc")
    with pytest.raises(ResultsVersionError, match=r"'old.nc' has results layout 1, written by an"):
        check(1, "old.nc")
    with pytest.raises(ValueError, match="newer than the.*upgrade geomxai"):
        check(SCHEMA_VERSION + 1, "new.nc")
    with pytest.raises(ValueError, match=r"unreadable schema_version 'abc'.*FIX"):
        check("abc", "odd.nc")  # a traceback from int() before


def test_the_report_command_refuses_an_older_layout_before_building(tmp_path, caplog):
    path = tmp_path / "old.nc"
    _results(1).to_netcdf(path, engine="h5netcdf")
    out = tmp_path / "report"
    assert main(["report", str(path), "--out", str(out)]) == 2
    assert "results layout 1, written by an older geomxai" in caplog.text
    assert not (out / "index.html").exists()
