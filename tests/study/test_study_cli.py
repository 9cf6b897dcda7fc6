"""The `geomxai` command on any model: analyze, layers, report, and clear errors with exit status 2."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from geomxai.cli import main

CLASSES = ("cat", "dog")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Twelve random 20x20 RGB PNGs in two class folders."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir()
        for i in range(6):
            pixels = rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _analyze_resnet(folder, out, *extra):
    return main(
        [
            "analyze",
            "--model",
            "torchvision:resnet18",
            "--data",
            f"imagefolder:{folder}",
            "--probe-size",
            "8",
            "--out",
            str(out),
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def resnet_results(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("analyze") / "resnet.nc"
    rc = _analyze_resnet(image_folder, out, "--layers", "layer4")
    return rc, out


@pytest.mark.slow  # ResNet-18 at 64x64: about 15 s on two busy cores
def test_analyze_any_torchvision_model_on_an_image_folder(resnet_results):
    rc, out = resnet_results
    assert rc == 0 and out.is_file()
    with xr.open_dataset(out) as ds:
        assert list(ds["regime"].values) == ["torchvision:resnet18"]
        assert list(ds["layer"].values) == ["layer4"]
        assert ds.sizes["unit"] == 512  # layer4's channels, spatially averaged
        assert ds.sizes["epoch"] == ds.sizes["seed"] == 1
        assert np.isfinite(ds["effective_rank"].values).all()
        assert np.isfinite(ds["morf_auc"].values).all()
        # A torchvision ResNet has no `body`: entanglement is NaN and says why.
        assert np.isnan(ds["entanglement"].values).all()
        assert "no feature layer" in ds.attrs["nan_reason_entanglement"]
        assert ds.attrs["dataset"].startswith("imagefolder:")
        assert ds.attrs["weights"] == "random init"


@pytest.mark.slow  # shares the ResNet-18 analysis above
def test_report_of_a_results_file(resnet_results, tmp_path, capsys):
    _, results = resnet_results
    rc = main(["report", str(results), "--out", str(tmp_path / "report")])
    index = tmp_path / "report" / "index.html"
    assert rc == 0 and index.is_file()
    assert f"report: {index}" in capsys.readouterr().out
    assert "torchvision:resnet18" in index.read_text()


def test_layers_lists_names_and_shapes(capsys):
    assert main(["layers", "cnn2", "--input-shape", "1", "28", "28", "--shapes"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert "body" in rows and "(1, 392)" in rows["body"]
    assert {"body.0", "head"} <= set(rows)


def test_analyze_on_a_directory_without_checkpoints_exits_2(tmp_path, caplog):
    assert main(["analyze", str(tmp_path), "--out", str(tmp_path / "x.nc")]) == 2
    assert "no checkpoints under" in caplog.text
    assert not (tmp_path / "x.nc").exists()


def test_an_unknown_layer_lists_the_close_names(image_folder, tmp_path, caplog):
    assert _analyze_resnet(image_folder, tmp_path / "x.nc", "--layers", "layer5") == 2
    assert "layer 'layer5' matches no module of ResNet; closest: layer4" in caplog.text


def test_a_model_without_a_feature_layer_needs_layers(image_folder, tmp_path, caplog):
    assert _analyze_resnet(image_folder, tmp_path / "x.nc") == 2
    assert "no feature layer named 'body'" in caplog.text and "--layers" in caplog.text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["analyze", "--model", "cnn2"], "--model needs --data"),
        (["analyze"], "needs RUN_DIR arguments or --model/--data"),
        (["analyze", "run", "--model", "cnn2", "--data", "digits"], "not both"),
        (["analyze", "run", "--weights", "w.pt"], "--weights and --data go with --model"),
    ],
)
def test_inconsistent_analyze_arguments_exit_2(argv, message, caplog):
    assert main(argv) == 2
    assert message in caplog.text
