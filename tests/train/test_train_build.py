"""The model of a run: the whitening placement follows what the model declares, not its name."""

from __future__ import annotations

import pytest

from geomxai.models import MODEL_TRAITS, MODELS, ModelTraits, build_model, model_traits
from geomxai.train import TrainConfig, build_from_spec, model_spec


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_declares_what_it_is(name):
    traits = model_traits(name)
    model = build_model(name, in_channels=1, num_classes=3, image_size=8)
    assert model.is_sequence_model == traits.is_sequence_model
    assert model.whiten_in_path == traits.whiten_in_path  # the builder's own default


def test_vits_are_sequence_models_with_whitening_off_the_path():
    assert model_traits("vit_micro") == model_traits("vit_tiny") == MODEL_TRAITS["vit_micro"]
    assert model_traits("vit_micro") == ModelTraits(is_sequence_model=True, whiten_in_path=False)
    assert model_traits("cnn2") == ModelTraits()


@pytest.mark.parametrize(
    ("model", "regime", "in_path"),
    [
        ("cnn2", "saliencydecor", True),
        ("cnn2", "dbn", True),
        ("vit_micro", "saliencydecor", False),  # the paper's ViT: whitening feeds the loss only
        ("vit_micro", "dbn", True),  # dbn has no auxiliary loss: whitening must be in the path
    ],
)
def test_auto_placement(model, regime, in_path):
    config = TrainConfig(model=model, regime=regime, group_size=8, dataset="digits")
    spec = model_spec(config, in_channels=1, num_classes=4, image_size=8)
    assert spec["whiten_in_path"] is in_path
    assert build_from_spec(spec).whiten_in_path is in_path
