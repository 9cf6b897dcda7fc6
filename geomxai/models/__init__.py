"""Models from the paper, and ``mlp`` for tables: each a :class:`FeatureModel` whose feature layer
is named ``body``."""

from geomxai.models._base import FEATURE_LAYER, FeatureModel, ModelTraits
from geomxai.models._cnn import cnn2, cnn_gap
from geomxai.models._mlp import mlp
from geomxai.models._registry import MODEL_TRAITS, MODELS, build_model, model_traits
from geomxai.models._resnet import resnet18, resnet20, resnet20_w8, resnet50
from geomxai.models._vit import ViTBody, vit_micro, vit_micro_w64, vit_tiny

__all__ = [
    "FEATURE_LAYER",
    "MODELS",
    "MODEL_TRAITS",
    "FeatureModel",
    "ModelTraits",
    "ViTBody",
    "build_model",
    "cnn2",
    "cnn_gap",
    "mlp",
    "model_traits",
    "resnet18",
    "resnet20",
    "resnet20_w8",
    "resnet50",
    "vit_micro",
    "vit_micro_w64",
    "vit_tiny",
]
