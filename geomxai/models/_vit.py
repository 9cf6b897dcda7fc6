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
