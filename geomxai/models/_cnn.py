"""The paper's 2-layer CNN."""

from __future__ import annotations

from torch import nn

from geomxai.models._base import FeatureModel


def cnn2(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    width: int = 32,
    feature_channels: int = 8,
) -> FeatureModel:
    """Two conv-ReLU-maxpool stages and a linear head.

    The feature layer is the flattened output of the second stage: ``feature_channels`` maps of
    ``image_size / 4`` squared pixels, which gives the paper's widths with the defaults (392 for
    28x28 grey images, 512 for 32x32 colour ones).

    Examples
    --------
    >>> import torch
    >>> model = cnn2(in_channels=1, image_size=28)
    >>> model.feature_dim
    392
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    side = image_size // 4
    if side < 1:
        raise ValueError(f"cnn2 needs images of at least 4x4 pixels; got image_size={image_size}")
    body = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, feature_channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return FeatureModel(body, feature_dim=feature_channels * side * side, num_classes=num_classes)
