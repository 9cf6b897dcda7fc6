"""On-device data augmentation for image batches (random horizontal flip and padded crop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_flip_crop(
    x: torch.Tensor, *, padding: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2, then crop it back from a zero padding.

    The standard CIFAR augmentation (as in the saliency-guided training reference), vectorised:
    one gather builds every crop, so there is no Python loop over images and no host round trip.

    Parameters
    ----------
    x : Tensor (n, c, h, w)
    padding : int, optional
        Zero padding on each side before cropping; default ``max(1, h // 8)`` (4 for 32x32).
    generator : torch.Generator, optional
        On ``x``'s device.

    Returns
    -------
    Tensor (n, c, h, w)

    Examples
    --------
    >>> x = torch.rand(5, 3, 8, 8)
    >>> random_flip_crop(x, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([5, 3, 8, 8])
    """
    n, c, h, w = x.shape
    pad = max(1, h // 8) if padding is None else int(padding)
    if pad < 0:
        raise ValueError(f"padding must be non-negative; got padding={pad}")
    dev = x.device
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    if pad == 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    rows = (oy[:, None] + torch.arange(h, device=dev)).view(n, 1, h, 1)
    cols = (ox[:, None] + torch.arange(w, device=dev)).view(n, 1, 1, w)
    images = torch.arange(n, device=dev).view(n, 1, 1, 1)
    channels = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[images, channels, rows, cols]
