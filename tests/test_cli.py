"""The command line a newcomer meets (issue 26): their own model class from a file, a small
folder analysed whole, the headline numbers printed after the results path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from image_folders import write_image_folder

from geomxai.cli import main, summary_table
from geomxai.study import ProbeSizeWarning, is_model_file, parse_model_args, resolve_model

MODEL_FILE = """
import torch
from torch import nn

IMPORTED = True


class SmallCNN(nn.Module):
    def __init__(self, num_classes=10, width=4):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.head(self.body(self.conv(x)))
"""


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("own") / "my_models.py"
    path.write_text(MODEL_FILE)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Sixty random 12x12 RGB PNGs in two class folders: an 80/20 split leaves 12 to probe."""
    return write_image_folder(tmp_path_factory.mktemp("images"), ("cat", "dog"), 30, 12, seed=0)


def test_model_args_are_read_as_literals_else_strings():
    assert parse_model_args(["n=3", "w=0.5", "flag=True", "t=(1, 2)", "act=relu", "s='x'"]) == {
        "n": 3,
        "w": 0.5,
        "flag": True,
        "t": (1, 2),
        "act": "relu",
        "s": "x",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_model_args(["no_equals_sign"])
    assert is_model_file("a/b.py:SmallCNN") and not is_model_file("cnn2")
    assert not is_model_file("a/b.pt") and not is_model_file("b.py:not-a-name")


def test_a_class_from_a_file_is_built_with_its_arguments(model_file):
    model = resolve_model(f"{model_file}:SmallCNN", model_args={"num_classes": 3, "width": 2})
    assert type(model).__name__ == "SmallCNN"
    assert model.head.out_features == 3 and model.conv.out_channels == 2
    assert not model.training


def test_the_file_is_imported_only_when_named(tmp_path):
    # The file's code runs on this explicit request only: another spec leaves it unread.
    marker = tmp_path / "imported"
    path = tmp_path / "marked.py"
    path.write_text(f"open({str(marker)!r}, 'w').close()\n" + MODEL_FILE)
    resolve_model("cnn2")
    assert not marker.exists()
    resolve_model(f"{path}:SmallCNN")
    assert marker.exists()


def test_a_missing_class_or_a_bad_argument_names_the_fix(model_file):
    with pytest.raises(ValueError, match="did you mean SmallCNN"):
        resolve_model(f"{model_file}:SmallCNM")
    with pytest.raises(ValueError, match="--model-arg KEY=VALUE"):
        resolve_model(f"{model_file}:SmallCNN", model_args={"depth": 3})
    with pytest.raises(ValueError, match="no Python file"):
        resolve_model(f"{model_file.parent / 'nope.py'}:SmallCNN")
    with pytest.raises(ValueError, match="go with a path/to/file.py:ClassName"):
        resolve_model("cnn2", model_args={"width": 2})


def test_layers_lists_a_class_from_a_file(model_file, capsys):
    assert main(["layers", f"{model_file}:SmallCNN", "--model-arg", "width=2"]) == 0
    out = capsys.readouterr().out
    assert "conv" in out and "head" in out


def test_a_model_arg_without_a_model_file_is_one_error_line(caplog):
    assert main(["layers", "cnn2", "--model-arg", "width=2"]) == 2
    assert "path/to/file.py:ClassName" in caplog.text


def _analyze(model_file, folder, out, *extra):
    return main(
        [
            "analyze",
            "--model",
            f"{model_file}:SmallCNN",
            "--model-arg",
            "num_classes=2",
            "--data",
            f"imagefolder:{folder}",
            "--image-size",
            "12",
            "--layers",
            "body",
            "--out",
            str(out),
            *extra,
        ]
    )


@pytest.mark.slow  # two analyses of a small model
def test_probe_split_all_analyses_every_image_and_prints_the_headline(
    model_file, folder, tmp_path, capsys
):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _analyze(model_file, folder, tmp_path / "split.nc") == 0
    capsys.readouterr()
    messages = [str(w.message) for w in caught if issubclass(w.category, ProbeSizeWarning)]
    # 12 test images: the warning says what helps (not "a larger probe", which cannot).
    assert messages and all("--probe-split all" in m for m in messages)
    assert all("cannot help" in m for m in messages)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = tmp_path / "all.nc"
        assert _analyze(model_file, folder, out, "--probe-split", "all") == 0
    printed = capsys.readouterr().out
    with xr.open_dataset(out) as ds:
        assert int(ds["probe_size"].max()) == 60
        assert ds.attrs["probe_split"] == "all"
        assert list(ds["regime"].values) == ["SmallCNN"]
        acc = float(ds["probe_acc"].squeeze())
    assert not [w for w in caught if "accuracy and masking" in str(w.message)]
    lines = printed.splitlines()
    assert lines[0] == f"results: {out}"
    assert lines[1].startswith("headline numbers")
    assert "SmallCNN" in lines[2]
    row = next(line for line in lines if line.startswith("probe accuracy"))
    assert float(row.split()[-1]) == pytest.approx(acc, abs=1e-3)
    assert any(line.startswith("effective rank [body]") for line in lines)


def test_the_summary_table_takes_the_last_epoch_and_the_mean_over_seeds():
    ds = xr.Dataset(
        {
            "probe_acc": (
                ("regime", "seed", "epoch"),
                [[[0.1, 0.5], [0.2, 0.7]], [[0, 1], [0, 1]]],
            ),
            "effective_rank": (
                ("regime", "seed", "epoch", "layer"),
                np.arange(16.0).reshape(2, 2, 2, 2),
            ),
            "morf_curve": (("regime", "fraction"), np.zeros((2, 3))),  # a curve: not one number
            "gini": (("regime",), [np.nan, 0.25]),
        },
        coords={"regime": ["regular", "sgt"], "layer": ["body", "conv"]},
    )
    lines = summary_table(ds).splitlines()
    assert lines[0] == "headline numbers (last checkpoint; mean of 2 seeds):"
    assert lines[1].split() == ["regular", "sgt"]
    rows = {line.rsplit(None, 2)[0]: line.split()[-2:] for line in lines[2:]}
    assert rows["probe accuracy"] == ["0.6", "1"]
    # regular, seeds 0 and 1, last epoch, layer body: 2 and 6 -> 4; conv: 3 and 7 -> 5
    assert rows["effective rank [body]"][0] == "4" and rows["effective rank [conv]"][0] == "5"
    assert rows["Gini"] == ["n/a", "0.25"]
    assert not any("MoRF" in line for line in lines)
    assert summary_table(xr.Dataset()) == ""
