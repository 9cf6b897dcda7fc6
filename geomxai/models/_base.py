"""The one shape every geomxai model has: ``body -> whiten -> head``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

FEATURE_LAYER = "body"
"""Dotted name of the feature layer (the representation the paper whitens) in every geomxai model."""


@dataclass(frozen=True)
class ModelTraits:
    """What kind of model a builder makes, declared by the model and known before it is built.

    The trainer reads these instead of guessing from a model's name.

    Attributes
    ----------
    is_sequence_model : bool
        The body works on a token sequence (a ViT: patch embedding, then transformer blocks)
        rather than on image maps, so image memory formats (``channels_last``) do not apply.
    whiten_in_path : bool
        Default placement of a whitening layer that a regularising regime adds: True, in the
        path to the head, so input gradients pass through the whitened space (CNNs, paper
        Eq. 3); False, feeding only the auxiliary loss, logits from the raw features (the
        paper's ViT).
    takes_tables : bool
        The model takes tabular rows (n, d) (an MLP); the trainer builds it for a table of
        ``d`` features with ``in_channels=d, image_size=1`` and refuses a model without it.
    """

    is_sequence_model: bool = False
    whiten_in_path: bool = True
    takes_tables: bool = False


class FeatureModel(nn.Module):
    """A classifier split at its feature layer.

    ``body`` maps an image batch to the feature layer, shape (n, d): the flattened or pooled features
    of a CNN, the CLS token of a ViT. ``whiten`` is ``nn.Identity`` until a regime puts a
    :class:`~geomxai.whitening.GroupWhitening` there. ``head`` is the linear classifier.

    With ``whiten_in_path=True`` (the CNN default) logits are ``head(whiten(body(x)))``, so input
    gradients pass through the whitened space (paper, Eq. 3). With ``False`` (the ViT default)
    logits come from the raw features and the whitened features only feed an auxiliary loss.

    Parameters
    ----------
    body : nn.Module
        Image batch (n, c, h, w) to features (n, feature_dim).
    feature_dim : int
        Width of the feature layer.
    num_classes : int
        Number of logits.
    whiten_in_path : bool
        Whether logits are computed from the whitened features.
    is_sequence_model : bool
        Whether ``body`` works on a token sequence (see :class:`ModelTraits`).
    """

    feature_layer = FEATURE_LAYER

    def __init__(
        self,
        body: nn.Module,
        *,
        feature_dim: int,
        num_classes: int,
        whiten_in_path: bool = True,
        is_sequence_model: bool = False,
    ):
        super().__init__()
        self.body = body
        self.whiten: nn.Module = nn.Identity()
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.whiten_in_path = whiten_in_path
        self.is_sequence_model = is_sequence_model

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, raw features and whitened features of one forward pass.

        Returns
        -------
        logits : Tensor (n, num_classes)
        features : Tensor (n, feature_dim)
            The feature layer before whitening.
        whitened : Tensor (n, feature_dim)
            ``whiten(features)``; the same tensor as ``features`` when ``whiten`` is the identity.
        """
        features = self.body(x)
        whitened = self.whiten(features)
        logits = self.head(whitened if self.whiten_in_path else features)
        return logits, features, whitened

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x)
        if self.whiten_in_path:
            features = self.whiten(features)
        return self.head(features)
