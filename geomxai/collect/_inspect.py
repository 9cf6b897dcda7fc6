"""What can be collected from a model: layer names, output shapes, a printable table."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from geomxai._model_state import evaluating, placed_on
from geomxai.collect._collector import FeatureCollector, record_name
from geomxai.collect._layers import _module_names, unwrap_model
from geomxai.collect._reduce import apply_reduction, auto_reduction


@dataclass
class _Call:
    layer: str
    module_type: str
    shape: tuple[int, ...] | None  # full output shape, batch included; None: not a tensor
    output_type: str
    reduction: str | None  # what "auto" picks
    units: int | None  # width after that reduction


class _ShapeProbe(FeatureCollector):
    """Hooks every module and records what it returns, without keeping any output."""

    def __init__(self, model: nn.Module):
        super().__init__(model, lambda name, module: True)
        self.calls: dict[str, _Call] = {}

    def _store(self, key: str, name: str, module: nn.Module, output: object) -> None:
        if isinstance(output, torch.Tensor):
            tensor = output
        elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
            tensor = output[0]
        else:
            tensor = None
        reduction = units = None
        if tensor is not None and tensor.ndim > 0:
            reduction = auto_reduction(tensor, module)
            try:
                units = apply_reduction(tensor.detach(), reduction, layer=key).shape[1]
            except ValueError:
                reduction = None
        self.calls[key] = _Call(
            layer=name,
            module_type=type(module).__name__,
            shape=None if tensor is None else tuple(tensor.shape),
            output_type=type(output).__name__,
            reduction=reduction,
            units=units,
        )


def _example_args(example: object) -> tuple:
    if isinstance(example, torch.Tensor):
        return (example,)
    if isinstance(example, tuple) and all(isinstance(a, torch.Tensor) for a in example):
        return example
    raise TypeError(
        f"example must be an input tensor (n, ...) or a tuple of them; got {type(example).__name__}"
    )


def _probe(model: nn.Module, example: object) -> dict[str, _Call]:
    args = _example_args(example)
    inner = unwrap_model(model)
    if not _module_names(inner):
        return {}  # a leaf module: nothing to list but the root, which is never listed
    probe = _ShapeProbe(model)
    with placed_on(inner, None) as device, evaluating(inner), torch.no_grad(), probe:
        inner(*(a.to(device) for a in args))
    return probe.calls


def available_layers(
    model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...] | None = None
) -> list[str]:
    """The dotted module names that a ``layers`` argument accepts.

    Parameters
    ----------
    model : nn.Module
        Any module; names of a DataParallel / DDP wrapper's ``.module`` come without the
        ``module.`` prefix. The root module (whose output is the model's output) is not listed.
    example : Tensor (n, ...) or tuple of Tensor, optional
        An input batch (a tuple is passed as positional arguments). When given, only the modules that run in its forward pass and return a
        tensor (or a tuple/list whose first item is one) are listed: the ones whose features can
        actually be collected. The model runs once, in eval mode under ``no_grad``, and is left
        as it was.

    Returns
    -------
    list of str
        In ``named_modules()`` order. Always a list of names; :func:`layer_shapes` gives the
        output shapes.

    Examples
    --------
    A geomxai ViT computes its logits from the raw CLS token, so its ``whiten`` module exists but
    does not run in ``forward``:

    >>> import torch
    >>> from geomxai.models import vit_micro
    >>> model = vit_micro(image_size=8)
    >>> available_layers(model)[:3]
    ['body', 'body.vit', 'body.vit.conv_proj']
    >>> "whiten" in available_layers(model), "whiten" in available_layers(model, torch.zeros(1, 3, 8, 8))
    (True, False)
    """
    if example is None:
        return _module_names(unwrap_model(model))
    calls = _probe(model, example)
    return [
        name for name in _module_names(unwrap_model(model)) if calls.get(name) and calls[name].shape
    ]


def layer_shapes(
    model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...]
) -> dict[str, tuple[int, ...]]:
    """Output shape of every module in one forward pass of ``example``, batch dim included.

    Keys are record names as :func:`collect_features` uses them: a module that runs ``k`` times
    appears as ``name``, ``name#1``, ... Modules that do not run, or return no tensor, are left
    out.

    Returns
    -------
    dict of str to tuple of int
        In call order.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten())
    >>> layer_shapes(net, torch.zeros(2, 1, 5, 5))
    {'0': (2, 4, 3, 3), '1': (2, 36)}
    """
    return {key: call.shape for key, call in _probe(model, example).items() if call.shape}


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def format_layers(
    model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...] | None = None
) -> str:
    """A table of the collectable layers of ``model``, for printing (``geomxai layers``).

    Without ``example``: name and module type. With it: also the output shape of each call,
    the reduction ``reduce="auto"`` would pick and the resulting number of units; modules that
    do not run are marked ``not called``, and repeated calls get rows ``name#1``, ...

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    >>> print(format_layers(net, torch.zeros(2, 1, 5, 5)))
    Sequential (torch.nn.modules.container.Sequential): 3 layers
    name  type     output shape  auto     units
    0     Conv2d   (2, 4, 3, 3)  mean     4
    1     ReLU     (2, 4, 3, 3)  mean     4
    2     Flatten  (2, 36)       flatten  36
    """
    inner = unwrap_model(model)
    names = _module_names(inner)
    modules = dict(inner.named_modules())
    cls = type(inner)
    header = f"{cls.__name__} ({cls.__module__}.{cls.__qualname__}): {len(names)} layers"
    if example is None:
        rows = [["name", "type"]] + [[name, type(modules[name]).__name__] for name in names]
        return "\n".join([header, *_table(rows)])
    calls = _probe(model, example)
    rows = [["name", "type", "output shape", "auto", "units"]]
    for name in names:
        kind = type(modules[name]).__name__
        if name not in calls:
            rows.append([name, kind, "not called", "-", "-"])
            continue
        call_index = 0
        while (key := record_name(name, call_index)) in calls:
            call = calls[key]
            shape = str(call.shape) if call.shape is not None else f"<{call.output_type}>"
            rows.append(
                [
                    key,
                    kind,
                    shape,
                    call.reduction or "-",
                    "-" if call.units is None else str(call.units),
                ]
            )
            call_index += 1
    return "\n".join([header, *_table(rows)])
