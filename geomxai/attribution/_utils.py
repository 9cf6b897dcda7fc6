"""Helpers shared by the attribution functions: images, targets, maps, layers, validation.

Devices and eval mode come from the leaf :mod:`geomxai._model_state`, shared with the collector.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from geomxai._finite import check_finite
from geomxai._hints import close_matches
from geomxai._model_state import module_dtype

PIXEL_HINT = (
    "replace or drop the images that hold them, e.g. keep x[torch.isfinite(x).flatten(1).all(1)]"
    ", or torch.nan_to_num(x) if NaN stands for a missing value"
)


def as_images(x, *, name: str = "x") -> torch.Tensor:
    """A finite floating tensor (n, c, h, w); numpy arrays are converted, nothing is copied.

    NaN or inf pixels are refused (one check on ``x``'s device, one flag read back): a
    gradient through them is NaN and a masked copy of them is still NaN, so every downstream
    number would be NaN or, after an argmax, a meaningless but finite-looking accuracy.
    """
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim != 4:
        raise ValueError(f"{name} must be an image batch (n, c, h, w); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor; got dtype {x.dtype}. Convert integer "
            f"images and scale them as the model was trained (e.g. {name}.float() / 255, then "
            "the training normalisation)"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image; got shape {tuple(x.shape)}")
    check_finite(x, name=name, hint=PIXEL_HINT)
    return x


def compute_dtype(model: nn.Module, x: torch.Tensor) -> torch.dtype:
    """The dtype inputs are cast to before they reach ``model``: its floating parameter dtype.

    float16, bfloat16 or float64 images into a float32 model would crash in its first conv; a
    model without floating parameters or buffers gets ``x`` in its own dtype.
    """
    return module_dtype(model, fallback=x.dtype)


def as_labels(y, n: int, *, name: str = "y") -> torch.Tensor:
    """Integer class indices (n,), from an int (broadcast), a sequence, an array or a tensor."""
    if isinstance(y, (int, np.integer)):
        return torch.full((n,), int(y), dtype=torch.long)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must be an int or have shape ({n},); got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices; got dtype {y.dtype}")
    return y.long()


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule with dotted name ``layer``; an unknown name lists the close matches."""
    modules = dict(model.named_modules())
    if layer in modules:
        return modules[layer]
    names = [k for k in modules if k]
    close = close_matches(layer, names)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown layer {layer!r} for {type(model).__name__}; layers are the dotted names of "
        f"model.named_modules(){hint}"
    )


def check_batch_size(batch_size: int | None, n: int) -> int:
    if batch_size is None:
        return n
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}")
    return int(batch_size)
