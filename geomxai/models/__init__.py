"""Models from the paper, each a :class:`FeatureModel` with its feature layer named ``body``."""

from geomxai.models._base import FEATURE_LAYER, FeatureModel, ModelTraits
from geomxai.models._cnn import cnn2
from geomxai.models._registry import MODEL_TRAITS, MODELS, build_model, model_traits
from geomxai.models._resnet import resnet18, resnet50
from geomxai.models._vit import ViTBody, vit_micro, vit_tiny

__all__ = [
    "FEATURE_LAYER",
    "MODELS",
    "MODEL_TRAITS",
    "FeatureModel",
    "ModelTraits",
    "ViTBody",
    "build_model",
    "cnn2",
    "model_traits",
    "resnet18",
    "resnet50",
    "vit_micro",
    "vit_tiny",
]
