"""Reductions of a layer's output (n, ...) to a feature matrix (n, d), run where the output lives."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

Reduction = str | Callable[[torch.Tensor], torch.Tensor]
"""A reduction name or a callable ``output (n, ...) -> features (n, ...)``."""

REDUCTIONS = ("auto", "flatten", "mean", "max", "cls", "token_mean")
"""The reduction names ``reduce`` accepts."""

# Modules whose 3-D output is (n, channels, length), not a token sequence (n, tokens, d): "auto"
# averages over the length for these instead of taking token 0.
_CHANNELS_FIRST_1D = (
    nn.Conv1d,
    nn.ConvTranspose1d,
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
    nn.BatchNorm1d,
    nn.InstanceNorm1d,
)


def check_reduction(reduce: object, *, where: str = "reduce") -> Reduction:
    """Validate one reduction spec at the public boundary; returns it unchanged."""
    if callable(reduce) and not isinstance(reduce, str):
        return reduce
    if isinstance(reduce, str) and reduce in REDUCTIONS:
        return reduce
    raise ValueError(
        f"{where} must be one of {', '.join(map(repr, REDUCTIONS))} or a callable "
        f"(output tensor) -> (n, ...) tensor; got {reduce!r}"
    )


def check_reduce_argument(
    reduce: Reduction | Mapping[str, Reduction] | None, layers: list[str]
) -> dict[str, Reduction | None]:
    """Per-layer reduction from a ``reduce`` argument: one spec for all, or a mapping by layer.

    A mapping may name only selected layers; the others get ``"auto"``.
    """
    if reduce is None:
        return dict.fromkeys(layers)
    if isinstance(reduce, Mapping):
        unknown = sorted(set(reduce) - set(layers))
        if unknown:
            raise ValueError(
                f"reduce names layers that are not selected: {', '.join(unknown)}; "
                f"selected: {', '.join(layers)}"
            )
        return {
            name: check_reduction(reduce.get(name, "auto"), where=f"reduce[{name!r}]")
            for name in layers
        }
    spec = check_reduction(reduce)
    return dict.fromkeys(layers, spec)


def auto_reduction(output: torch.Tensor, module: nn.Module) -> str:
    """The reduction ``"auto"`` picks for one output of ``module``.

    (n,) and (n, d) -> ``"flatten"`` (as is); (n, c, *spatial) with two or more spatial dims ->
    ``"mean"`` (a conv map); (n, t, d) -> ``"cls"`` (a token sequence, token 0), except after a
    1-d conv, pool or norm, whose (n, c, length) output -> ``"mean"``.
    """
    if output.ndim <= 2:
        return "flatten"
    if output.ndim == 3:
        return "mean" if isinstance(module, _CHANNELS_FIRST_1D) else "cls"
    return "mean"


def reduction_label(how: Reduction) -> str:
    """A string for attrs: the name, or ``"callable:<qualname>"``."""
    if isinstance(how, str):
        return how
    return "callable:" + getattr(how, "__qualname__", type(how).__name__)


def apply_reduction(output: torch.Tensor, how: Reduction, *, layer: str) -> torch.Tensor:
    """Reduce one output (n, ...) to (n, d) on its own device; ``how`` is never ``"auto"``.

    - ``flatten``: (n, ...) -> (n, prod(...)); (n,) -> (n, 1).
    - ``mean`` / ``max``: (n, c, *spatial) -> (n, c) over the spatial dims (channels first, as
      PyTorch convolutions are); an (n, d) output has no spatial dims and passes unchanged.
    - ``cls``: (n, t, d) -> (n, d), token 0 (the class token of a ViT).
    - ``token_mean``: (n, t, d) -> (n, d), the mean over tokens.
    - a callable: applied to the detached output, its result flattened to (n, -1).

    The result may be a view of ``output``; the caller copies it.
    """
    n = output.shape[0] if output.ndim else None
    if output.ndim == 0:
        raise ValueError(f"layer {layer!r} returned a 0-d tensor; features need a batch dim")
    if callable(how):
        out = how(output)
        # Whether dim 0 is the batch is checked by the caller, which knows the batch size.
        if not isinstance(out, torch.Tensor) or out.ndim == 0:
            got = "a 0-d tensor" if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the reduce callable for layer {layer!r} must return a tensor (n, ...); got {got}"
            )
        return out.reshape(out.shape[0], -1)
    if how == "flatten":
        return output.reshape(n, -1)
    if how in ("mean", "max"):
        if output.ndim <= 2:
            return output.reshape(n, -1)
        spatial = tuple(range(2, output.ndim))
        if how == "mean" and output.is_contiguous():
            # One reduction over a flat trailing dim is several times faster on CPU than a
            # multi-dim reduction (seen with torch 2.14); same result up to summation order.
            return output.flatten(2).mean(dim=-1)
        return output.mean(dim=spatial) if how == "mean" else output.amax(dim=spatial)
    if how in ("cls", "token_mean"):
        if output.ndim != 3:
            raise ValueError(
                f"reduce={how!r} expects a token sequence (n, tokens, d); layer {layer!r} "
                f"gave shape {tuple(output.shape)}"
            )
        return output[:, 0] if how == "cls" else output.mean(dim=1)
    raise ValueError(f"unknown reduction {how!r} for layer {layer!r}")  # pragma: no cover
