"""Build models by name."""

from __future__ import annotations

from collections.abc import Callable

from geomxai._hints import close_matches
from geomxai.models._base import FeatureModel, ModelTraits
from geomxai.models._cnn import cnn2, cnn_gap
from geomxai.models._mlp import MLP_TRAITS, mlp
from geomxai.models._resnet import resnet18, resnet20, resnet20_w8, resnet50
from geomxai.models._vit import VIT_TRAITS, vit_micro, vit_micro_w64, vit_tiny

MODELS: dict[str, Callable[..., FeatureModel]] = {
    "cnn2": cnn2,
    "cnn_gap": cnn_gap,
    "mlp": mlp,
    "resnet18": resnet18,
    "resnet20": resnet20,
    "resnet20_w8": resnet20_w8,
    "resnet50": resnet50,
    "vit_tiny": vit_tiny,
    "vit_micro": vit_micro,
    "vit_micro_w64": vit_micro_w64,
}

MODEL_TRAITS: dict[str, ModelTraits] = {
    "vit_tiny": VIT_TRAITS,
    "vit_micro": VIT_TRAITS,
    "vit_micro_w64": VIT_TRAITS,
    "mlp": MLP_TRAITS,
}
"""Registered models whose :class:`ModelTraits` differ from the defaults (a CNN's)."""


def model_traits(name: str) -> ModelTraits:
    """What the registered model ``name`` is, without building it.

    A name without an entry in :data:`MODEL_TRAITS` has the defaults; :func:`build_model` is the
    one that refuses an unknown name.

    Examples
    --------
    >>> model_traits("vit_micro").is_sequence_model, model_traits("cnn2").is_sequence_model
    (True, False)
    """
    return MODEL_TRAITS.get(name, ModelTraits())


def build_model(
    name: str, *, in_channels: int, num_classes: int, image_size: int, **options
) -> FeatureModel:
    """Build a registered model for images of ``in_channels`` x ``image_size`` x ``image_size``.

    Examples
    --------
    >>> build_model("cnn2", in_channels=3, num_classes=10, image_size=32).feature_dim
    512
    """
    if name not in MODELS:
        close = close_matches(name, MODELS)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}{hint}")
    return MODELS[name](
        in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options
    )
