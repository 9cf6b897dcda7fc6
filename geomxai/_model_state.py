"""Temporary changes to a model's state, each undone on exit (exceptions included).

A leaf module (torch only, nothing of geomxai): the collector and the attribution functions
share it, so neither imports the other.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def module_device(module: nn.Module, fallback: torch.device | None = None) -> torch.device:
    """Device of the first parameter or buffer; ``fallback`` (CPU if None) for a module with none.

    Examples
    --------
    >>> module_device(nn.Linear(2, 2))
    device(type='cpu')
    >>> module_device(nn.ReLU(), fallback=torch.device("meta"))
    device(type='meta')
    """
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    if first is not None:
        return first.device
    return fallback if fallback is not None else torch.device("cpu")


def module_dtype(module: nn.Module, fallback: torch.dtype | None = None) -> torch.dtype | None:
    """Floating dtype of the first floating parameter or buffer; ``fallback`` if there is none.

    The dtype a model computes in: inputs cast to it reach a conv or linear layer with the
    dtype of its weights (float16, bfloat16 or float64 images into a float32 model crash there
    otherwise). Integer buffers (BatchNorm's ``num_batches_tracked``) are skipped.

    Examples
    --------
    >>> module_dtype(nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 2).double()))
    torch.float32
    >>> module_dtype(nn.Linear(2, 2).double())
    torch.float64
    >>> module_dtype(nn.ReLU(), fallback=torch.float16)
    torch.float16
    """
    for t in itertools.chain(module.parameters(), module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return fallback


def _devices(module: nn.Module) -> set[torch.device]:
    return {t.device for t in itertools.chain(module.parameters(), module.buffers())}


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration, then every submodule's own ``training`` flag back.

    Flags are saved per submodule, not just at the root, because a model may be in train mode
    with some parts frozen in eval mode (a common fine-tuning set-up, or a frozen BatchNorm)
    and ``train(was_training)`` would overwrite that. Yields the module.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    >>> _ = model[1].eval()  # frozen inside a training model
    >>> with evaluating(model):
    ...     model.training
    False
    >>> model.training, model[1].training
    (True, False)
    """
    flags = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def placed_on(module: nn.Module, device: torch.device | None) -> Iterator[torch.device]:
    """Run with the module on ``device`` (its own device when ``None``), moved back afterwards.

    Yields the device inputs should go to. ``Module.to`` moves parameters in place, so tensors
    an optimizer holds stay the same objects.
    """
    here = _devices(module)
    if device is None:
        yield next(iter(here)) if here else torch.device("cpu")
        return
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} asked for, but CUDA is not available here")
    if device.type == "cuda" and device.index is None:
        # Parameters report "cuda:0", never "cuda"; compare like with like.
        device = torch.device("cuda", torch.cuda.current_device())
    if here <= {device}:
        yield device
        return
    if len(here) > 1:
        raise ValueError(
            f"device={str(device)!r} would move a model whose parameters lie on several devices "
            f"({', '.join(sorted(map(str, here)))}); pass device=None to keep its placement"
        )
    (original,) = here
    try:
        module.to(device)
        yield device
    finally:
        module.to(original)
