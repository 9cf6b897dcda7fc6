"""The `geomxai` command on any model: analyze, layers, report, and clear errors with exit status 2."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from geomxai.cli import main
from geomxai.study import ProbeSizeWarning

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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = _analyze_resnet(image_folder, out, "--layers", "layer4")
    return rc, out, [str(w.message) for w in caught if issubclass(w.category, ProbeSizeWarning)]


@pytest.mark.slow  # ResNet-18 at 64x64 on two busy cores
def test_analyze_any_torchvision_model_on_an_image_folder(resnet_results):
    """Twelve images split 80/20 leave a probe of 2: it is recorded, warned about, and nothing
    is reported as a confident 1.0 (issue 16)."""
    rc, out, caught = resnet_results
    assert rc == 0 and out.is_file()
    with xr.open_dataset(out) as ds:
        assert list(ds["regime"].values) == ["torchvision:resnet18"]
        assert list(ds["layer"].values) == ["layer4"]
        assert ds.sizes["unit"] == 512  # layer4's channels, spatially averaged
        assert ds.sizes["epoch"] == ds.sizes["seed"] == 1
        assert int(ds["probe_size"].squeeze()) == 2
        assert int(ds["n_units"].squeeze()) == 512
        for var in ("effective_rank", "mean_abs_corr", "probe_acc", "morf_auc"):
            assert np.isnan(ds[var].values).all(), var
            assert "a probe of 2 samples is below" in ds[var].attrs["nan_reason"], var
        # A torchvision ResNet has no `body`: its entanglement would be NaN anyway; below the
        # probe minimum the probe is the reason given.
        assert np.isnan(ds["entanglement"].values).all()
        assert ds.attrs["dataset"].startswith("imagefolder:")
        assert ds.attrs["weights"] == "random init"
    assert any("a probe of 2 samples is below the 16" in m for m in caught), caught
    assert any("below the 50 the accuracy" in m for m in caught), caught


@pytest.mark.slow  # shares the ResNet-18 analysis above
def test_report_of_a_results_file(resnet_results, tmp_path, capsys):
    _, results, _ = resnet_results
    rc = main(["report", str(results), "--out", str(tmp_path / "report")])
    index = tmp_path / "report" / "index.html"
    assert rc == 0 and index.is_file()
    assert f"report: {index}" in capsys.readouterr().out
    page = index.read_text()
    assert "torchvision:resnet18" in page
    # The probe the numbers come from, and what it allows.
    assert "<h2>Probe</h2>" in page and "<td>2</td>" in page and "geometry NaN" in page


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


def test_version(capsys):
    import geomxai

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"geomxai {geomxai.__version__}"


def test_a_misspelt_design_lists_close_matches_and_the_designs(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["study", "--profile", "quik", "--runs", str(tmp_path / "r")]) == 2
    assert "no study design 'quik' (did you mean quick?)" in caplog.text
    assert "paper-mnist" in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize(
    "flag",
    [["--num-classes", "2"], ["--no-labels"], ["--image-size", "32"], ["--normalize", "imagenet"]],
)
def test_model_only_flags_are_refused_with_run_directories(flag, tmp_path, caplog):
    assert main(["analyze", str(tmp_path), *flag, "--out", str(tmp_path / "x.nc")]) == 2
    assert f"{flag[0]} go(es) with --model" in caplog.text


def test_an_unknown_saliency_method_names_the_close_ones(tmp_path, caplog):
    argv = ["analyze", "--model", "cnn2", "--data", "digits", "--saliency-method", "smoothgard"]
    assert main([*argv, "--out", str(tmp_path / "x.nc")]) == 2
    assert "did you mean 'smoothgrad'" in caplog.text
