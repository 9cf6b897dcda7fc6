"""A progress bar for a long analysis: what went through the model, and how fast.

The number of forward passes an analysis makes depends on its blocks (masking curves at every
fraction, SmallGrad's noisy copies, ...), so the bar counts samples as the model sees them
rather than promise a total it cannot know: a six-minute timm analysis then shows that it is
moving and at what rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def model_progress(model: nn.Module, desc: str, *, enable: bool | None = None) -> Iterator[None]:
    """Count the samples ``model`` runs on inside the block in a tqdm bar.

    ``enable``: True always shows it, False never, None (default) on a terminal or in a
    notebook only. The forward hook that counts is removed on exit, exceptions included.
    """
    if enable is False:
        yield
        return
    from tqdm.auto import tqdm

    bar = tqdm(
        desc=desc, unit=" samples", unit_scale=True, disable=None if enable is None else False
    )

    def count(_module, args, _output):
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.ndim > 0:
            bar.update(int(x.shape[0]))

    handle = model.register_forward_hook(count)
    try:
        yield
    finally:
        handle.remove()
        bar.close()
