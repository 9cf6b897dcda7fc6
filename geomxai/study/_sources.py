"""Turn what a user names on the command line into a model: a checkpoint, a torchvision model, ours."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from geomxai.models import MODELS, build_model
from geomxai.train._checkpoint import CheckpointError, load_checkpoint


def load_state_dict_file(path) -> dict:
    """A bare state_dict saved with ``torch.save``, read with ``weights_only=True``.

    Accepts ``{"state_dict": ...}`` and ``{"model": ...}`` wrappers, which common training scripts
    write.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncation: the file is not plain tensors
        raise CheckpointError(
            f"cannot read {str(path)!r} as plain tensors (weights_only=True): {err}"
        ) from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{str(path)!r} does not hold a state_dict of tensors")
    return state


def resolve_model(
    name: str,
    *,
    weights=None,
    num_classes: int | None = None,
    in_channels: int = 3,
    image_size: int = 32,
) -> nn.Module:
    """A model in eval mode from a name the CLI accepts.

    ``name`` is a geomxai checkpoint path (``*.pt``), ``torchvision:ARCH`` (any architecture of
    ``torchvision.models.list_models()``, random weights unless ``weights`` is a state_dict file),
    or a geomxai registry name (``cnn2``, ``resnet18``, ...).
    """
    if name.startswith("torchvision:"):
        arch = name.split(":", 1)[1]
        available = torchvision.models.list_models()
        if arch not in available:
            import difflib

            close = difflib.get_close_matches(arch, available, n=3)
            raise ValueError(
                f"unknown torchvision model {arch!r}"
                + (f"; did you mean {', '.join(close)}?" if close else "")
            )
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
    elif name in MODELS:
        model = build_model(
            name, in_channels=in_channels, num_classes=num_classes or 10, image_size=image_size
        )
    elif Path(name).suffix in (".pt", ".pth") or Path(name).is_file():
        if weights is not None:
            raise ValueError(
                f"{name!r} is a geomxai checkpoint and carries its own weights; --weights goes "
                "with torchvision:ARCH or a geomxai model name"
            )
        model, _ = load_checkpoint(name)
        return model
    else:
        raise ValueError(
            f"cannot make a model of {name!r}: expected a checkpoint file, torchvision:ARCH or one "
            f"of {', '.join(sorted(MODELS))}"
        )
    if weights is not None:
        state = load_state_dict_file(weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(f"weights in {str(weights)!r} do not fit {name}: {err}") from err
    return model.eval()
