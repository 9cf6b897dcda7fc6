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


def cnn_gap(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    widths: tuple[int, int, int] = (32, 64, 128),
) -> FeatureModel:
    """Three conv(3x3)-BatchNorm-ReLU stages, global average pooling, a linear head.

    The first two stages end in a 2x2 max-pool; the third keeps its resolution and is averaged
    over space, so the feature layer is one value per channel of the last stage: ``widths[-1]``
    units (128 by default) for any image size. Unlike :func:`cnn2`'s flattened map of 8 channels,
    whose units are positions of a few channels (several of them dead after training), every unit
    here is a channel seen over the whole image, and a unit is dead only when its channel is zero
    everywhere on every image. Batch normalisation before each ReLU keeps the channels in use and
    lets plain SGD train the pooled layer from the first steps (without it, the averaged
    features start nearly constant across images and training stalls for hundreds of steps);
    like ResNet's, the train and eval forward passes then differ, and the trainer's
    ``mask_gradient_mode="eval"`` takes the masking gradient with the running statistics.

    Parameters
    ----------
    widths : tuple of 3 ints
        Channels of the three stages; the last is the feature width.

    Examples
    --------
    >>> import torch
    >>> model = cnn_gap(in_channels=1, image_size=28)
    >>> model.feature_dim
    128
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    if image_size < 4:
        raise ValueError(
            f"cnn_gap needs images of at least 4x4 pixels; got image_size={image_size}"
        )
    if len(widths) != 3 or any(int(w) < 1 for w in widths):
        raise ValueError(f"cnn_gap needs three positive stage widths; got widths={widths!r}")
    w1, w2, w3 = (int(w) for w in widths)

    def stage(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    body = nn.Sequential(
        *stage(in_channels, w1),
        nn.MaxPool2d(2),
        *stage(w1, w2),
        nn.MaxPool2d(2),
        *stage(w2, w3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return FeatureModel(body, feature_dim=w3, num_classes=num_classes)
