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
