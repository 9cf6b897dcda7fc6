"""Layer selection: names, lists, globs, predicates, wrappers, and the unknown-name error."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from geomxai.collect import (
    FeatureCollector,
    UnknownLayerError,
    available_layers,
    format_layers,
    layer_shapes,
    resolve_layers,
    unwrap_model,
)
from geomxai.models import cnn2, vit_micro


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


def test_dotted_name_and_list_keep_the_order_given(resnet):
    assert resolve_layers(resnet, "layer4.1.conv2") == ["layer4.1.conv2"]
    assert resolve_layers(resnet, ["fc", "layer1", "fc"]) == ["fc", "layer1"]


def test_glob_selects_descendants_in_named_modules_order(resnet):
    names = resolve_layers(resnet, "layer4.*")
    expected = [n for n, _ in resnet.named_modules() if n.startswith("layer4.")]
    assert names == expected
    assert "layer4" not in names and "layer4.0.downsample.0" in names


def test_glob_and_names_mix_without_duplicates(resnet):
    names = resolve_layers(resnet, ["layer4.0.conv1", "layer4.0.conv?"])
    assert names == ["layer4.0.conv1", "layer4.0.conv2"]


def test_callable_selection(resnet):
    names = resolve_layers(resnet, lambda name, m: isinstance(m, nn.Conv2d) and "layer1" in name)
    assert names == ["layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2"]


def test_unknown_name_lists_close_matches(resnet):
    with pytest.raises(UnknownLayerError) as info:
        resolve_layers(resnet, "layer4.1.conv3")
    message = str(info.value)
    assert "'layer4.1.conv3'" in message
    assert "closest:" in message and "layer4.1.conv2" in message and "layer4.1.conv1" in message
    # Both the lookup and the bad-argument idioms catch it.
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


def test_unknown_name_inside_a_list(resnet):
    with pytest.raises(KeyError, match="closest: layer4"):
        resolve_layers(resnet, ["layer1", "layre4"])


def test_glob_matching_nothing_lists_close_matches(resnet):
    with pytest.raises(UnknownLayerError, match=r"glob 'layr4\.\*'.*closest: layer4"):
        resolve_layers(resnet, "layr4.*")


@pytest.mark.parametrize(
    ("layers", "error", "match"),
    [
        ([], ValueError, "empty list"),
        (lambda name, module: False, ValueError, "selected no module"),
        (3, TypeError, "got int"),
        ([None], TypeError, "must be strings"),
    ],
)
def test_bad_selections_raise(resnet, layers, error, match):
    with pytest.raises(error, match=match):
        resolve_layers(resnet, layers)


def test_collector_validates_names_before_touching_the_model(resnet):
    with pytest.raises(UnknownLayerError):
        FeatureCollector(resnet, "nope")
    assert all(not m._forward_hooks for m in resnet.modules())


def test_wrapper_prefix_is_optional():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    wrapped = nn.DataParallel(net)
    assert unwrap_model(wrapped) is net
    assert resolve_layers(wrapped, ["module.0", "1"]) == ["0", "1"]
    assert resolve_layers(wrapped, "module.*") == ["0", "1"]
    assert available_layers(wrapped) == ["0", "1"]
    # An unwrapped model has no "module." prefix to strip.
    with pytest.raises(UnknownLayerError):
        resolve_layers(net, "module.0")


def test_available_layers_without_and_with_example():
    torch.manual_seed(0)
    model = vit_micro(image_size=8)
    names = available_layers(model)
    assert names == [n for n, _ in model.named_modules() if n]
    run = available_layers(model, torch.zeros(2, 3, 8, 8))
    # The ViT's whiten module is not in forward()'s path; MultiheadAttention never calls
    # out_proj as a module; torchvision's ViT `heads` is bypassed by geomxai's ViTBody.
    assert "whiten" not in run and "body.vit.heads" not in run
    assert not any(n.endswith("out_proj") for n in run)
    assert "body" in run and "head" in run and set(run) <= set(names)


def test_layer_shapes_record_repeated_calls():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    shapes = layer_shapes(resnet, torch.zeros(2, 3, 32, 32))
    assert shapes["layer4"] == (2, 512, 1, 1)
    assert shapes["fc"] == (2, 1000)
    # BasicBlock calls its one ReLU module twice.
    assert shapes["layer1.0.relu#1"] == (2, 64, 8, 8)


def test_format_layers():
    model = cnn2(in_channels=1, image_size=8)
    plain = format_layers(model)
    assert plain.splitlines()[0].startswith("FeatureModel (geomxai.models._base.FeatureModel)")
    assert "body.0" in plain and "Conv2d" in plain
    with_shapes = format_layers(model, torch.zeros(3, 1, 8, 8))
    row = next(line for line in with_shapes.splitlines() if line.startswith("body.3 "))
    assert row.split() == ["body.3", "Conv2d", "(3,", "8,", "4,", "4)", "mean", "8"]
    vit = format_layers(vit_micro(image_size=8), torch.zeros(1, 3, 8, 8))
    assert "not called" in vit
    assert any(line.split()[-2:] == ["cls", "32"] for line in vit.splitlines())
