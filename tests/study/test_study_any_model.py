"""analyze_model on what a researcher brings (issue 16): modules and specs, any data container,
weights files, heads that do not fit, unlabelled data, transforms, scalar access."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchvision
import xarray as xr
from image_folders import write_image_folder
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from geomxai.study import (
    AnalysisOptions,
    ProbeSizeWarning,
    analyze_model,
    imagenet_normalization,
    squeeze_results,
)

OPTIONS = AnalysisOptions(probe_size=64, fractions=3, top_k=4, n_examples=2, batch_size=64)


class SmallNet(nn.Module):
    """A user's own CNN with a named feature layer (so entanglement is measured too)."""

    feature_layer = "features"

    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def tensors():
    g = torch.Generator().manual_seed(0)
    return torch.rand(80, 3, 12, 12, generator=g), torch.randint(0, 3, (80,), generator=g)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return SmallNet()


@pytest.fixture(scope="module")
def reference(net, tensors) -> xr.Dataset:
    return analyze_model(net, tensors, options=OPTIONS)


def _numeric(ds):
    return [v for v in ds.data_vars if np.issubdtype(ds[v].dtype, np.number)]


def test_a_module_on_a_tensor_pair_has_the_layout_of_a_study(reference):
    ds = reference
    assert list(ds.regime.values) == ["SmallNet"]
    assert ds["effective_rank"].dims == ("regime", "seed", "epoch", "layer")
    assert list(ds.layer.values) == ["features"]
    assert int(ds["probe_size"].squeeze()) == 64
    for var in ("effective_rank", "probe_acc", "morf_auc", "gini", "entanglement"):
        assert np.isfinite(ds[var].values).all(), var
    assert ds.attrs["weights"] == "the module's own" and ds.attrs["labels"] == "yes"
    assert ds.attrs["dataset"] == "tensors"
    assert ds["probe_images"].dims == ("example", "channel", "height", "width")
    assert "probe_features" not in ds and "top_eigvecs" not in ds


@pytest.mark.parametrize("kind", ["dataset", "loader", "list"])
def test_a_dataset_a_loader_and_a_list_give_the_numbers_of_the_tensors(
    kind, net, tensors, reference
):
    x, y = tensors
    data = {
        "dataset": TensorDataset(x, y),
        "loader": DataLoader(TensorDataset(x, y), batch_size=16),
        "list": [x, y],
    }[kind]
    ds = analyze_model(net, data, options=OPTIONS)
    for var in _numeric(reference):
        np.testing.assert_allclose(ds[var].values, reference[var].values, err_msg=var)


def test_the_callers_module_is_left_as_it_was(tensors):
    torch.manual_seed(0)
    net = SmallNet().train()
    net.features.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    analyze_model(net, tensors, options=OPTIONS, num_classes=5)  # a head rebuilt on a copy
    assert net.training and not net.features.training
    assert net.head.out_features == 3
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_transform_is_applied_to_every_input(net, tensors):
    x, y = tensors
    normalise = imagenet_normalization()
    ds = analyze_model(net, tensors, options=OPTIONS, transform=normalise)
    expected = analyze_model(net, (normalise(x), y), options=OPTIONS)
    for var in ("effective_rank", "probe_acc", "morf_auc", "probe_images"):
        np.testing.assert_allclose(ds[var].values, expected[var].values, rtol=1e-6, err_msg=var)


class _Items(Dataset):
    """Items as mappings of PIL images and labels, as Hugging Face-style datasets give them."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        pixels = (self.x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        return {"image": Image.fromarray(pixels), "label": int(self.y[i])}


def test_pil_images_in_mappings_are_read_as_tensors_in_the_unit_range(net, tensors):
    x, y = tensors
    ds = analyze_model(net, _Items(x, y), options=OPTIONS)
    assert ds.attrs["dataset"] == "_Items"
    quantised = (x * 255).round() / 255
    expected = analyze_model(net, (quantised, y), options=OPTIONS)
    np.testing.assert_allclose(
        ds["effective_rank"].values, expected["effective_rank"].values, rtol=1e-5
    )


def test_inputs_alone_are_analysed_without_labels(net, tensors):
    x, _ = tensors
    ds = analyze_model(net, x, options=OPTIONS)
    assert ds.attrs["labels"] == "no"
    assert np.isfinite(ds["effective_rank"].values).all()
    for var in ("probe_acc", "morf_auc", "gini", "entanglement"):
        assert np.isnan(ds[var].values).all(), var
        assert "no labels" in ds[var].attrs["nan_reason"], var


# ---- heads and weights


def test_a_head_that_does_not_fit_the_classes_is_refused_naming_the_fix(tensors):
    torch.manual_seed(0)
    wrong = SmallNet(classes=10)
    # A TensorDataset declares no classes: its labels 0..2 fit 10 outputs (a subset of classes).
    analyze_model(wrong, TensorDataset(*tensors), options=OPTIONS)
    # Data that declares them (an ImageFolder's .classes) is checked exactly:
    data = TensorDataset(*tensors)
    data.classes = ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"has 10 outputs but the data has 3 classes") as err:
        analyze_model(wrong, data, options=OPTIONS)
    assert "num_classes=3 (--num-classes 3)" in str(err.value)
    assert "labels=False, --no-labels" in str(err.value)
    fixed = analyze_model(wrong, data, options=OPTIONS, num_classes=3)
    assert "head rebuilt at random for 3 classes" in fixed.attrs["weights"]
    geometry = analyze_model(wrong, data, options=OPTIONS, labels=False)
    assert np.isfinite(geometry["effective_rank"].values).all()


def test_labels_beyond_the_head_are_refused_when_the_data_declares_no_classes(tensors):
    x, y = tensors
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"has 2 outputs but the data has 3 classes"):
        analyze_model(SmallNet(classes=2), (x, y), options=OPTIONS)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of 20 random 24x24 RGB PNGs each, made in the test."""
    return write_image_folder(tmp_path_factory.mktemp("folder"), ("cat", "dog"), 20, 24, seed=1)


@pytest.fixture(scope="module")
def imagenet_weights(tmp_path_factory):
    """A "pretrained" ResNet-18 state_dict with its 1000-class ImageNet head, in both formats."""
    import safetensors.torch

    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    root = tmp_path_factory.mktemp("weights")
    torch.save(state, root / "resnet18.pt")
    safetensors.torch.save_file(state, str(root / "resnet18.safetensors"))
    return root


@pytest.mark.parametrize("suffix", ["pt", "safetensors"])
def test_a_1000_class_head_on_a_2_class_folder_is_refused_before_any_work(
    folder, imagenet_weights, suffix, monkeypatch
):
    from _internals import study_model as _model

    def fail(*args, **kwargs):
        raise AssertionError("measure ran although the head does not fit")

    monkeypatch.setattr(_model, "measure", fail)
    weights = imagenet_weights / f"resnet18.{suffix}"
    with pytest.raises(ValueError, match=r"1000 outputs but the data has 2 classes") as err:
        analyze_model(
            "torchvision:resnet18",
            f"imagefolder:{folder}",
            weights=weights,
            layers=["avgpool"],
            image_size=32,
        )
    assert "--num-classes 2" in str(err.value) and "--no-labels" in str(err.value)


def test_label_free_geometry_of_a_pretrained_model_on_a_folder(folder, imagenet_weights):
    """No labels: the 1000-class head is kept, the geometry is measured on every image."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = analyze_model(
            "torchvision:resnet18",
            f"imagefolder:{folder}",
            weights=imagenet_weights / "resnet18.safetensors",
            layers=["layer3", "avgpool"],
            labels=False,
            image_size=32,
            normalize="imagenet",
        )
    one = squeeze_results(ds.sel(layer="avgpool"))
    assert int(one["probe_size"]) == 40  # test and training split: nothing is held out
    for var in ("effective_rank", "participation_ratio", "mean_abs_corr", "spectrum_alpha"):
        assert np.isfinite(ds[var].values).all(), var
    assert 1.0 < float(one["effective_rank"]) <= 39.0  # at most n - 1
    for var in ("probe_acc", "morf_auc", "topq_contrast", "entanglement"):
        assert np.isnan(ds[var].values).all(), var
        assert "no labels" in ds[var].attrs["nan_reason"]
    assert "saliency_maps" not in ds
    assert ds.attrs["weights"].endswith("resnet18.safetensors") and ds.attrs["labels"] == "no"
    # 40 samples on 256 and 512 units: biased spectra, said so, values kept.
    messages = [str(w.message) for w in caught if w.category is ProbeSizeWarning]
    assert any("for layer 'avgpool'" in m for m in messages), messages


def test_num_classes_rebuilds_the_head_and_keeps_every_other_weight(folder, imagenet_weights):
    from geomxai.study import resolve_model

    path = imagenet_weights / "resnet18.pt"
    model = resolve_model("torchvision:resnet18", weights=path, num_classes=2, rebuild_head=True)
    state = torch.load(path, weights_only=True)
    assert model.fc.out_features == 2
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    ds = analyze_model(
        "torchvision:resnet18",
        f"imagefolder:{folder}",
        weights=path,
        layers=["avgpool"],
        num_classes=2,
        image_size=32,
        probe_size=8,
    )
    assert "head rebuilt at random for 2 classes (theirs: 1000)" in ds.attrs["weights"]


def test_weights_of_another_architecture_name_the_file(tmp_path):
    import geomxai

    path = tmp_path / "other.pt"
    torch.save(nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(geomxai.CheckpointError, match=r"other\.pt.*do not fit"):
        from geomxai.study import resolve_model

        resolve_model("torchvision:resnet18", weights=path, rebuild_head=True)


# ---- timm, scalar access, small probes


def test_a_timm_model_with_its_own_preprocessing(tensors):
    x, y = tensors
    ds = analyze_model(
        "timm:test_resnet",
        (x, y),
        layers=["global_pool"],
        options=AnalysisOptions(probe_size=64, layers=("global_pool",), fractions=3, top_k=4),
        image_size=32,
    )
    assert list(ds.regime.values) == ["timm:test_resnet"]
    assert ds.attrs["weights"] == "random init"
    # test_resnet's data config: resize, centre crop to the asked 32, normalise by 0.5 / 0.5.
    assert ds["probe_images"].shape[-2:] == (32, 32)
    assert float(ds["probe_images"].min()) < 0.0
    assert np.isfinite(ds["effective_rank"].values).all()
    assert np.isfinite(ds["morf_auc"].values).all()


def test_an_unknown_timm_model_names_the_close_ones():
    with pytest.raises(ValueError, match=r"unknown timm model 'test_resnt'.*test_resnet"):
        analyze_model("timm:test_resnt", torch.zeros(4, 3, 8, 8))


def test_squeeze_results_gives_scalars(reference):
    one = squeeze_results(reference)
    assert isinstance(float(one.effective_rank), float)
    assert float(one.effective_rank) == float(reference.effective_rank.values.ravel()[0])
    assert str(one.regime.values) == "SmallNet" and str(one.layer.values) == "features"
    with pytest.raises(TypeError):
        float(reference.effective_rank)  # the study layout keeps its size-1 dims


def test_a_tiny_probe_records_its_size_and_warns(net, tensors):
    x, y = tensors
    with pytest.warns(ProbeSizeWarning, match="a probe of 2 samples is below the 16"):
        ds = analyze_model(net, (x[:2], y[:2]), options=OPTIONS)
    one = squeeze_results(ds)
    assert int(one.probe_size) == 2
    assert np.isnan(float(one.effective_rank)) and np.isnan(float(one.probe_acc))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"labels": "no"}, TypeError, "labels must be True or False"),
        ({"num_classes": 0}, ValueError, "num_classes must be a positive int"),
        ({"normalize": "imagenet2"}, ValueError, "normalize must be"),
    ],
)
def test_bad_arguments_are_refused(net, tensors, kwargs, error, match):
    with pytest.raises(error, match=match):
        analyze_model(net, tensors, options=OPTIONS, **kwargs)


def test_image_size_of_a_fixed_size_dataset_points_at_transform():
    with pytest.raises(ValueError, match="image_size applies to imagefolder"):
        analyze_model("cnn2", "digits", image_size=32)


def test_tabular_rows_with_an_mlp():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2))
    ds = analyze_model(mlp, "breast-cancer", layers=["1"], probe_size=114)
    one = squeeze_results(ds)
    assert int(one.probe_size) == 114
    for var in ("effective_rank", "probe_acc", "morf_auc", "gini"):
        assert np.isfinite(float(one[var])), var
    assert ds["saliency_maps"].sizes["height"] == 1 and ds["saliency_maps"].sizes["width"] == 30


def test_the_cli_analyses_with_num_classes_and_without_labels(folder, imagenet_weights, tmp_path):
    from geomxai.cli import main

    out = tmp_path / "r.nc"
    common = [
        "analyze",
        "--model",
        "torchvision:resnet18",
        "--weights",
        str(imagenet_weights / "resnet18.pt"),
        "--data",
        f"imagefolder:{folder}",
        "--layers",
        "avgpool",
        "--image-size",
        "32",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main([*common, "--num-classes", "2", "--saliency-method", "gradient"]) == 0
    with xr.open_dataset(out) as ds:
        assert "head rebuilt" in ds.attrs["weights"] and ds.attrs["saliency_method"] == "gradient"
        assert int(ds["probe_size"].squeeze()) == 8
    assert main([*common, "--no-labels", "--normalize", "imagenet"]) == 0
    with xr.open_dataset(out) as ds:
        assert ds.attrs["labels"] == "no" and int(ds["probe_size"].squeeze()) == 40
        assert np.isfinite(ds["effective_rank"].values).all()
