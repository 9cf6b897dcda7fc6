"""Temporary changes to a model's state, each undone on exit (exceptions included)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def module_device(module: nn.Module) -> torch.device | None:
    """Device of the first parameter or buffer; ``None`` for a module that has neither."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return None if first is None else first.device


def _devices(module: nn.Module) -> set[torch.device]:
    return {t.device for t in itertools.chain(module.parameters(), module.buffers())}


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then every submodule's own ``training`` flag back.

    Flags are saved per submodule, not just at the root, because a model may be in train mode
    with some parts frozen in eval mode (a common fine-tuning set-up) and ``train()`` would
    overwrite that.
    """
    flags = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield
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
