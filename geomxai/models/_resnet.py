"""torchvision ResNets with a stem for small images."""

from __future__ import annotations

from torch import nn

from geomxai.models._base import FeatureModel


def _small_image_resnet(arch: str, in_channels: int, num_classes: int, image_size: int):
    import torchvision.models  # here, not at the top: torchvision takes seconds to import

    net = getattr(torchvision.models, arch)(weights=None)
    feature_dim = net.fc.in_features
    if image_size <= 64:
        # CIFAR-style stem: a 7x7 stride-2 conv and a max-pool would leave a 32x32 image 8x8
        # before the first residual stage; a 3x3 stride-1 conv keeps the resolution.
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    return FeatureModel(net, feature_dim=feature_dim, num_classes=num_classes)


def resnet18(*, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> FeatureModel:
    """torchvision ResNet-18; feature layer = the 512-d pooled output (``body``)."""
    return _small_image_resnet("resnet18", in_channels, num_classes, image_size)


def resnet50(*, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> FeatureModel:
    """torchvision ResNet-50; feature layer = the 2048-d pooled output (``body``)."""
    return _small_image_resnet("resnet50", in_channels, num_classes, image_size)


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN stages and a parameter-free shortcut (He et al. 2016, CIFAR option A).

    Where the block halves the resolution and doubles the channels, the shortcut takes every
    second pixel and pads the new channels with zeros, so ResNet-20 keeps its 0.27M parameters.
    """

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.stride = stride
        self.pad = planes - in_planes

    def _shortcut(self, x):
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self._shortcut(x))


class _CifarResNetBody(nn.Module):
    """A 3x3 stem and three stages of ``blocks`` basic blocks (widths w, 2w, 4w), average-pooled."""

    def __init__(self, in_channels: int, width: int, blocks: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages = []
        in_planes = width
        for i, planes in enumerate((width, 2 * width, 4 * width)):
            layers = []
            for j in range(blocks):
                layers.append(_BasicBlock(in_planes, planes, 2 if i > 0 and j == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.pool(x).flatten(1)


def resnet20(
    *, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 16
) -> FeatureModel:
    """The CIFAR ResNet-20 (He et al. 2016, Sec. 4.2) at stage widths ``width, 2 width, 4 width``.

    Nine basic blocks in three stages (the second and third halve the resolution: 28 -> 14 -> 7
    for Fashion-MNIST), a 3x3 stride-1 stem, batch normalisation, parameter-free shortcuts.
    The feature layer (``body``) is the average-pooled output of the last stage, ``4 * width``
    units: 64 at the paper's width 16. Built for any channel count and image size of at least
    4 pixels.

    Examples
    --------
    >>> import torch
    >>> model = resnet20(in_channels=1, image_size=28)
    >>> model.feature_dim, sum(p.numel() for p in model.body.parameters())
    (64, 268784)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    if image_size < 4:
        raise ValueError(
            f"resnet20 needs images of at least 4x4 pixels; got image_size={image_size}"
        )
    if int(width) < 1:
        raise ValueError(f"resnet20 needs a positive width; got width={width!r}")
    body = _CifarResNetBody(in_channels, int(width), blocks=3)
    return FeatureModel(body, feature_dim=4 * int(width), num_classes=num_classes)


def resnet20_w8(*, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
    """:func:`resnet20` at half the paper's width: stages of 8, 16, 32 channels, 32 features."""
    return resnet20(
        in_channels=in_channels, num_classes=num_classes, image_size=image_size, width=8
    )
