"""What a masked pixel is replaced with: the one definition of every fill.

A leaf module (torch only): saliency-guided training (:mod:`geomxai.train`) and the masking
fidelity curves (:mod:`geomxai.attribution`) both replace the pixels they mask with
:func:`image_fill`, so a curve measured with ``fill="uniform"`` removes pixels exactly the way
the trainer masked them.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F

from geomxai._checks import Interval, check

FILLS = ("uniform", "zero", "mean", "blur", "road")
"""Every fill the masking curves accept. ``"road"`` depends on which pixels are removed
(:func:`geomxai.attribution.road_impute`), so :func:`image_fill` does not make it."""

TRAINING_FILLS = ("uniform", "mean", "zero")
"""The fills saliency-guided training accepts (``TrainConfig.mask_fill``): one elementwise pass
each, cheap enough for every training step."""

IMAGE_FILLS = ("uniform", "zero", "mean", "blur")
"""The fills computed from the image alone, whatever the mask: those :func:`image_fill` makes."""


MAX_BLUR_SIGMA = 10
"""The widest ``"blur"`` fill, in multiples of the image's larger side (of the series' length).

A blur that wide is already close to its limit, a flat fill made of the image's edge values,
while its kernel (``2 * ceil(3 sigma) + 1`` taps) and its cost keep growing with sigma; at
``sigma = 1e300`` the kernel cannot even be made (OverflowError)."""


def check_blur_sigma(sigma, x: torch.Tensor, name: str = "blur_sigma") -> float:
    """``sigma`` as a float: positive, finite and at most :data:`MAX_BLUR_SIGMA` times the
    larger side of the images ``x`` (n, c, h, w) (or the length of the series (n, c, t)).

    Raises
    ------
    ValueError
        Naming ``name``, the largest sigma these images take and what came.
    """
    check(sigma, name, Interval(Real, 0, None, closed="neither"))
    side = max(x.shape[2:], default=1)
    limit = MAX_BLUR_SIGMA * side
    if sigma > limit:
        size = "x".join(str(s) for s in x.shape[2:]) or "1"
        raise ValueError(
            f"{name} must be at most {limit} ({MAX_BLUR_SIGMA} times the larger side of these "
            f"{size} inputs): a wider blur is already close to a flat fill while its kernel "
            f"keeps growing; got {name}={sigma!r}"
        )
    return float(sigma)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur per channel, kernel radius ceil(3 sigma), replicate padding.

    The blur of the masking curves' ``fill="blur"`` (public as
    ``geomxai.attribution.gaussian_blur``), for a baseline that must equal it.

    Parameters
    ----------
    x : Tensor (n, c, h, w)
    sigma : float
        Standard deviation in pixels, a positive finite number at most :data:`MAX_BLUR_SIGMA`
        times the image's larger side.

    Returns
    -------
    Tensor (n, c, h, w)
        Same dtype and device as ``x``.

    Raises
    ------
    ValueError
        ``sigma`` not a positive finite number or wider than the image allows, or ``x`` not
        4-d.

    Examples
    --------
    >>> x = torch.zeros(1, 1, 9, 9)
    >>> x[0, 0, 4, 4] = 1.0
    >>> y = gaussian_blur(x, 1.0)
    >>> round(float(y.sum()), 6), round(float(y[0, 0, 4, 4]), 4)
    (1.0, 0.1592)
    """
    if x.dim() != 4:
        raise ValueError(f"x must be a (n, c, h, w) batch of images; got shape {tuple(x.shape)}")
    check_blur_sigma(sigma, x, "sigma")
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    # Replicate padding works for any image size (reflect needs radius < size).
    y = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def image_fill(
    x: torch.Tensor,
    fill: str,
    *,
    generator: torch.Generator | None = None,
    blur_sigma: float = 2.0,
) -> torch.Tensor:
    """Replacement values for every pixel of ``x``, per image; they do not depend on the mask.

    Parameters
    ----------
    x : Tensor (n, c, h, w)
    fill : {"uniform", "zero", "mean", "blur"}
        ``"uniform"``: independent draws from U[min, max] of each channel's range in each image
        (over its pixels), the saliency-guided training reference's random mask (Ismail et al.
        2021); ``"zero"``: zeros; ``"mean"``: each image's per-channel mean (the reference's
        mean mask); ``"blur"``: the pixel of a Gaussian blur of the image (:func:`gaussian_blur`,
        ``blur_sigma`` pixels).
    generator : torch.Generator, optional
        On ``x``'s device; makes the uniform draws reproducible.
    blur_sigma : float
        Standard deviation, in pixels, of the ``"blur"`` fill.

    Returns
    -------
    Tensor (n, c, h, w)
        Same dtype and device as ``x``.

    Examples
    --------
    >>> x = torch.tensor([[[[0.0, 1.0]], [[10.0, 30.0]]]])  # one image, two channels
    >>> v = image_fill(x, "uniform", generator=torch.Generator().manual_seed(0))
    >>> bool((v[0, 0] <= 1).all()), bool((v[0, 1] >= 10).all())  # each channel's own range
    (True, True)
    >>> image_fill(x, "mean").tolist()
    [[[[0.5, 0.5]], [[20.0, 20.0]]]]
    """
    if fill not in IMAGE_FILLS:
        raise ValueError(f"fill must be one of {', '.join(IMAGE_FILLS)}; got fill={fill!r}")
    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if fill == "blur":
        return gaussian_blur(x, blur_sigma)
    # Each channel's own range, as the reference draws its random mask: a colour image's
    # channels span different ranges once normalised, and one range for all of them would put
    # fill values outside a channel's range. For a grey image (one channel) this is the image's
    # own range.
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    lo = flat.amin(dim=2).view(n, c, 1, 1)
    hi = flat.amax(dim=2).view(n, c, 1, 1)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return lo + (hi - lo) * u


def table_fill(
    x: torch.Tensor, fill: str, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replacement values for every feature of a batch of tabular rows; they do not depend on
    the mask.

    A row's features are on unrelated scales, so (as the masking curves do for tables,
    :func:`geomxai.attribution.masking_curve`) each feature is filled from its own values over
    the batch, never from the row's other features: ``"uniform"`` draws from U[min, max] of the
    feature over the batch, ``"mean"`` is its batch mean, ``"zero"`` is 0 (the training split's
    mean on standardised features). None of them reads the row itself, so a fully masked row
    carries nothing of its class.

    Parameters
    ----------
    x : Tensor (n, d)
    fill : {"uniform", "mean", "zero"}
    generator : torch.Generator, optional
        On ``x``'s device; makes the uniform draws reproducible.

    Returns
    -------
    Tensor (n, d)
        Same dtype and device as ``x``.

    Examples
    --------
    >>> x = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    >>> table_fill(x, "mean").tolist()
    [[1.0, 20.0], [1.0, 20.0]]
    >>> v = table_fill(x, "uniform", generator=torch.Generator().manual_seed(0))
    >>> bool(((v[:, 1] >= 10) & (v[:, 1] <= 30)).all())  # each feature's own range
    True
    """
    if fill not in TRAINING_FILLS:
        raise ValueError(f"fill must be one of {', '.join(TRAINING_FILLS)}; got fill={fill!r}")
    if x.dim() != 2:
        raise ValueError(f"x must be a (n, d) batch of rows; got shape {tuple(x.shape)}")
    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "mean":
        return x.mean(dim=0, keepdim=True).expand_as(x)
    lo, hi = x.amin(dim=0, keepdim=True), x.amax(dim=0, keepdim=True)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return lo + (hi - lo) * u
