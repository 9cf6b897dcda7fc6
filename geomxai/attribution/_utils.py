"""Helpers shared by the attribution functions: images, targets, maps, layers, validation.

Devices and eval mode come from the leaf :mod:`geomxai._model_state`, shared with the collector.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from torch import nn

from geomxai._checks import Interval, check
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
    if isinstance(y, (bool, np.bool_)):
        # Python counts True as 1; the package's one rule says a bool is not an integer.
        check(y, name, Interval(Integral, None, None))
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


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_batch_size(batch_size: int | None, n: int) -> int:
    if batch_size is None:
        return n
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}")
    return int(batch_size)


def check_count(value, name: str) -> int:
    """A positive int (True is not a count)."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {name}={value!r}")
    return int(value)


def check_number(value, name: str, *, positive: bool = False) -> float:
    """A finite real number, >= 0 (or > 0 with ``positive``): inf noise or blur gives all-NaN
    or overflowing fills, which no caller means."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    if not ok or not np.isfinite(value) or value < 0 or (positive and value == 0):
        expected = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"{name} must be {expected}; got {name}={value!r}")
    return float(value)


MAX_SEED = 2**63 - 1


def check_seed(seed) -> int | None:
    """None, or an int in [0, 2**63 - 1] (what torch's generators take)."""
    if seed is None:
        return None
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be None or an int in [0, 2**63 - 1]; got seed={seed!r}")
    return int(seed)


def check_targets(targets: torch.Tensor, n_classes: int, *, name: str = "target") -> None:
    """Class indices in ``[0, n_classes)``; the model's output width names the range."""
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= n_classes):
        bad = targets[(targets < 0) | (targets >= n_classes)][:3].tolist()
        raise ValueError(
            f"{name} must hold class indices in [0, {n_classes}) for this {n_classes}-output "
            f"model; got {bad}"
        )
