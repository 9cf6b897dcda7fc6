"""Helpers shared by the attribution functions: devices, modes, targets, layers, validation."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn


def model_device(model: nn.Module, fallback: torch.device | None = None) -> torch.device:
    """The device of the model's first parameter or buffer (``fallback`` or CPU if it has none)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return fallback if fallback is not None else torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own flag afterwards.

    Restoring per module (not ``model.train(was_training)``) keeps mixed states intact, such as
    a frozen BatchNorm left in eval mode inside a model that is training.
    """
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def as_images(x, *, name: str = "x") -> torch.Tensor:
    """A floating tensor (n, c, h, w); numpy arrays are converted, nothing is copied needlessly."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim != 4:
        raise ValueError(f"{name} must be an image batch (n, c, h, w); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image; got shape {tuple(x.shape)}")
    return x


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


def as_maps(
    s, *, n: int, hw: tuple[int, int] | None = None, name: str = "saliency"
) -> torch.Tensor:
    """Per-pixel maps (n, h, w) as a floating tensor, checked against the images they belong to."""
    if not isinstance(s, torch.Tensor):
        s = torch.as_tensor(np.asarray(s))
    expected = f"({n}, {hw[0]}, {hw[1]})" if hw is not None else f"({n}, h, w)"
    if s.ndim != 3 or s.shape[0] != n or (hw is not None and tuple(s.shape[1:]) != tuple(hw)):
        raise ValueError(
            f"{name} must be per-pixel maps of shape {expected} (reduce channels first, as "
            f"geomxai.attribution.saliency does); got shape {tuple(s.shape)}"
        )
    if not s.is_floating_point():
        s = s.double()
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"{name} contains NaN or infinite values; expected finite maps")
    return s


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule with dotted name ``layer``; an unknown name lists the close matches."""
    modules = dict(model.named_modules())
    if layer in modules:
        return modules[layer]
    names = [k for k in modules if k]
    close = difflib.get_close_matches(layer, names, n=3)
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
