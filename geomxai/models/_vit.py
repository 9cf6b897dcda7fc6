"""A DeiT-Tiny-sized Vision Transformer on torchvision's VisionTransformer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from geomxai.models._base import FeatureModel, ModelTraits

if TYPE_CHECKING:  # imported where a ViT is built: torchvision takes seconds to import
    from torchvision.models.vision_transformer import VisionTransformer

VIT_TRAITS = ModelTraits(is_sequence_model=True, whiten_in_path=False)
"""A ViT is a sequence model, and its whitening feeds only the auxiliary loss by default."""


class ViTBody(nn.Module):
    """torchvision's VisionTransformer up to the CLS token after the last block (and its LayerNorm).

    Accepts any channel count by replacing the patch projection.
    """

    def __init__(self, vit: VisionTransformer, in_channels: int):
        super().__init__()
        if in_channels != 3:
            vit.conv_proj = nn.Conv2d(
                in_channels, vit.hidden_dim, vit.patch_size, stride=vit.patch_size
            )
        vit.heads = nn.Identity()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit._process_input(x)
        cls = self.vit.class_token.expand(tokens.shape[0], -1, -1)
        tokens = self.vit.encoder(torch.cat([cls, tokens], dim=1))
        return tokens[:, 0]


def vit_tiny(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
    patch_size: int = 4,
    num_layers: int = 12,
    num_heads: int = 3,
    hidden_dim: int = 192,
    mlp_dim: int = 768,
) -> FeatureModel:
    """DeiT-Tiny dimensions (12 blocks, 3 heads, width 192) by default; feature layer = CLS token.

    Logits come from the raw CLS token (``whiten_in_path=False``), as the paper's ViT variant asks.
    """
    if image_size % patch_size:
        raise ValueError(
            f"image_size must be a multiple of patch_size; got image_size={image_size}, "
            f"patch_size={patch_size}"
        )
    from torchvision.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        num_classes=num_classes,
    )
    return FeatureModel(
        ViTBody(vit, in_channels),
        feature_dim=hidden_dim,
        num_classes=num_classes,
        whiten_in_path=VIT_TRAITS.whiten_in_path,
        is_sequence_model=VIT_TRAITS.is_sequence_model,
    )


def vit_micro(*, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> FeatureModel:
    """A 2-block, width-32 ViT for CPU tests and quick runs."""
    return vit_tiny(
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        patch_size=4 if image_size % 4 == 0 else 1,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
    )


def vit_micro_w64(
    *, in_channels: int = 3, num_classes: int = 10, image_size: int = 32
) -> FeatureModel:
    """A 4-block, 4-head, width-64 ViT: the paper's ViT form at a size that trains on a CPU.

    Patches of 7 pixels where the image side is a multiple of 7 (16 tokens and the CLS token on
    28x28), else of 4 (else 1). The feature layer is the 64-d CLS token after the last block; as
    for every ViT here, logits come from the raw CLS token and a ``saliencydecor`` run's whitening
    feeds only the auxiliary loss (``whiten_in_path=False``).

    Examples
    --------
    >>> import torch
    >>> model = vit_micro_w64(in_channels=1, image_size=28)
    >>> model.feature_dim, model.body.vit.patch_size, len(model.body.vit.encoder.layers)
    (64, 7, 4)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    patch = 7 if image_size % 7 == 0 else 4 if image_size % 4 == 0 else 1
    return vit_tiny(
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        patch_size=patch,
        num_layers=4,
        num_heads=4,
        hidden_dim=64,
        mlp_dim=128,
    )
