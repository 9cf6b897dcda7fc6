"""Each model's forward pass and its feature layer."""

from __future__ import annotations

import pytest
import torch

from geomxai.models import FEATURE_LAYER, build_model


@pytest.mark.parametrize(
    ("name", "channels", "size", "width"),
    [
        ("cnn2", 1, 28, 392),
        ("cnn2", 3, 32, 512),
        ("resnet18", 3, 32, 512),
        ("resnet18", 1, 28, 512),
        ("resnet50", 3, 32, 2048),
        ("vit_micro", 3, 32, 32),
        ("vit_micro", 1, 28, 32),
    ],
)
def test_forward_and_feature_layer(seed, name, channels, size, width):
    model = build_model(name, in_channels=channels, num_classes=7, image_size=size).eval()
    x = torch.randn(2, channels, size, size)
    logits, features, whitened = model.forward_all(x)
    assert logits.shape == (2, 7)
    assert features.shape == (2, width) and model.feature_dim == width
    assert torch.equal(features, whitened)  # whiten is the identity until a regime sets it
    assert dict(model.named_modules())[FEATURE_LAYER] is model.body
    torch.testing.assert_close(model(x), logits)


def test_vit_tiny_has_deit_tiny_dimensions():
    model = build_model("vit_tiny", in_channels=3, num_classes=10, image_size=32)
    assert model.feature_dim == 192
    assert len(model.body.vit.encoder.layers) == 12
    assert not model.whiten_in_path  # logits from the raw CLS token, as the paper's ViT variant


def test_vit_feature_is_cls_token():
    model = build_model("vit_micro", in_channels=3, num_classes=10, image_size=32).eval()
    x = torch.randn(3, 3, 32, 32)
    seen = {}
    handle = model.body.vit.encoder.register_forward_hook(lambda m, i, o: seen.update(out=o))
    try:
        features = model.body(x)
    finally:
        handle.remove()
    torch.testing.assert_close(features, seen["out"][:, 0])


def test_unknown_model_suggests():
    with pytest.raises(ValueError, match="did you mean resnet18"):
        build_model("resnet-18", in_channels=3, num_classes=10, image_size=32)


def test_cnn2_rejects_tiny_images():
    with pytest.raises(ValueError, match="at least 4x4"):
        build_model("cnn2", in_channels=1, num_classes=10, image_size=3)
