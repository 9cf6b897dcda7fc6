"""The built-in MLP: its shape, its feature layer, its traits, and what it refuses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geomxai.models import FEATURE_LAYER, build_model, mlp, model_traits


def test_mlp_on_a_table(seed):
    model = build_model("mlp", in_channels=30, num_classes=2, image_size=1).eval()
    x = torch.randn(5, 30)
    logits, features, whitened = model.forward_all(x)
    assert logits.shape == (5, 2)
    assert features.shape == (5, 64) and model.feature_dim == 64
    assert torch.equal(features, whitened)  # whiten is the identity until a regime sets it
    assert dict(model.named_modules())[FEATURE_LAYER] is model.body
    torch.testing.assert_close(model(x), logits)


def test_mlp_is_linear_relu_blocks_to_the_feature_layer(seed):
    model = mlp(in_channels=13, num_classes=3, hidden=(40, 50), feature_dim=96)
    linears = [m for m in model.body if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(13, 40), (40, 50), (50, 96)]
    assert isinstance(model.body[-1], nn.ReLU)  # the features are the last block's ReLU output
    x = torch.randn(4, 13)
    # The slow, obvious forward: every block by hand, then the head.
    h = x
    for m in linears:
        h = torch.relu(h @ m.weight.T + m.bias)
    torch.testing.assert_close(model.body(x), h)
    torch.testing.assert_close(model(x), h @ model.head.weight.T + model.head.bias)


def test_mlp_flattens_images(seed):
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8).eval()
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(model(x), model(x.flatten(1)))


def test_mlp_traits():
    traits = model_traits("mlp")
    assert traits.takes_tables and traits.whiten_in_path and not traits.is_sequence_model
    assert not model_traits("cnn2").takes_tables


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"feature_dim": 32}, "at least 64"),
        ({"hidden": (0,)}, "positive"),
        ({"in_channels": 0}, "at least one input"),
    ],
)
def test_mlp_refuses(options, match):
    with pytest.raises(ValueError, match=match):
        mlp(**{"in_channels": 4, "num_classes": 2, **options})
