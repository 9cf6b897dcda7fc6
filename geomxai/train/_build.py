"""From a config and a dataset to a model: the one place that decides the architecture of a run."""

from __future__ import annotations

from typing import Any

from geomxai.models import FeatureModel, build_model, model_traits
from geomxai.train._config import ConfigError, TrainConfig


def model_spec(config: TrainConfig, *, in_channels: int, num_classes: int, image_size: int) -> dict:
    """Plain-data description of the model of a run, stored in its checkpoints.

    It holds what is needed to rebuild the exact module tree (so a checkpoint loads without the
    dataset): the registry name, the input geometry, and the whitening layer with its placement.
    """
    whitening: dict[str, Any] | None = None
    in_path = True
    if config.uses_whitening:
        whitening = {
            "group_size": config.group_size,
            "eps": config.whitening_eps,
            "momentum": config.whitening_momentum,
            "method": config.whitening_method,
            "iters": config.whitening_iters,
        }
        placement = config.whitening_placement
        if placement == "auto":
            # The model's declared default (a ViT: the paper whitens the CLS token for the
            # auxiliary loss only; CNNs: in the path). dbn has no auxiliary loss: in the path.
            default_in_path = model_traits(config.model).whiten_in_path
            placement = (
                "aux" if not default_in_path and config.regime == "saliencydecor" else "path"
            )
        if placement == "aux" and config.regime == "dbn":
            raise ConfigError(
                "whitening_placement='aux' leaves a dbn run without any whitening effect; "
                "use 'path' or 'auto' for regime='dbn'"
            )
        in_path = placement == "path"
    return {
        "name": config.model,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "image_size": image_size,
        "whitening": whitening,
        "whiten_in_path": in_path,
    }


def build_from_spec(spec: dict) -> FeatureModel:
    """Rebuild the module tree described by :func:`model_spec` (weights are loaded separately)."""
    model = build_model(
        spec["name"],
        in_channels=spec["in_channels"],
        num_classes=spec["num_classes"],
        image_size=spec["image_size"],
    )
    if spec.get("whitening"):
        from geomxai.whitening import GroupWhitening

        w = spec["whitening"]
        if model.feature_dim < w["group_size"]:
            raise ConfigError(
                f"group_size must not exceed the feature width; got group_size={w['group_size']} "
                f"for the {model.feature_dim}-d feature layer of {spec['name']}"
            )
        model.whiten = GroupWhitening(
            model.feature_dim,
            group_size=w["group_size"],
            eps=w["eps"],
            momentum=w["momentum"],
            method=w["method"],
            iters=w.get("iters", 5),  # checkpoints from before the field whitened with 5
        )
    model.whiten_in_path = bool(spec.get("whiten_in_path", True))
    return model
