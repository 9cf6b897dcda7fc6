"""A multilayer perceptron for tabular rows (and flattened images)."""

from __future__ import annotations

from torch import nn

from geomxai.models._base import FeatureModel, ModelTraits

MLP_TRAITS = ModelTraits(takes_tables=True)
"""An MLP takes tabular rows (n, d); its whitening sits in the path, as a CNN's."""

MIN_FEATURE_WIDTH = 64
"""The narrowest feature layer :func:`mlp` builds: whitening in groups of 16 and the geometry
metrics need more live units than a handful."""


def mlp(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 1,
    hidden: tuple[int, ...] = (128,),
    feature_dim: int = 64,
) -> FeatureModel:
    """Linear-ReLU blocks to a feature layer of ``feature_dim`` units, then a linear head.

    The input is flattened: ``in_channels * image_size ** 2`` inputs. A table of ``d`` features
    is ``in_channels=d, image_size=1`` (a row is a 1x1 image of ``d`` channels), which is how the
    trainer builds it for ``breast-cancer`` and ``wine``; an image batch works as well.

    The feature layer (``body``, the one whitening and the decorrelation loss act on) is the
    ReLU output of the last block, ``feature_dim`` units.

    Parameters
    ----------
    in_channels, image_size : int
        Input geometry; ``in_channels * image_size ** 2`` inputs after flattening.
    num_classes : int
        Number of logits.
    hidden : tuple of int
        Widths of the hidden blocks before the feature block (``()`` for none).
    feature_dim : int
        Width of the feature layer, at least :data:`MIN_FEATURE_WIDTH`.

    Examples
    --------
    >>> import torch
    >>> model = mlp(in_channels=30, num_classes=2)
    >>> model.feature_dim, model(torch.zeros(4, 30)).shape
    (64, torch.Size([4, 2]))
    """
    if in_channels < 1 or image_size < 1:
        raise ValueError(
            f"mlp needs at least one input; got in_channels={in_channels}, image_size={image_size}"
        )
    if feature_dim < MIN_FEATURE_WIDTH:
        raise ValueError(
            f"feature_dim must be at least {MIN_FEATURE_WIDTH}; got feature_dim={feature_dim}"
        )
    if any(width < 1 for width in hidden):
        raise ValueError(f"hidden widths must be positive; got hidden={tuple(hidden)}")
    widths = [in_channels * image_size * image_size, *hidden, feature_dim]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return FeatureModel(nn.Sequential(*layers), feature_dim=feature_dim, num_classes=num_classes)
