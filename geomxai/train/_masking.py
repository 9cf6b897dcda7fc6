"""Saliency-guided input masking: replace the least salient pixels of each image (or features of
each tabular row), on the device.

Everything here is vectorised over the batch (``topk`` + ``scatter`` + ``where``): no Python loop
over samples and no host round trip, so masking costs a few elementwise kernels per step.
"""

from __future__ import annotations

import torch

from geomxai._fill import TRAINING_FILLS, image_fill, table_fill

MASK_BY = ("abs", "signed")
"""How pixels are ranked for masking (``TrainConfig.mask_by``); see :func:`saliency_scores`."""


def num_masked(height: int, width: int, ratio: float) -> int:
    """Number of pixels masked per image: ``floor(ratio * height * width)``, at least 1.

    The floor follows the saliency-guided training reference (``int(featuresDroped * n)``).

    Examples
    --------
    >>> num_masked(28, 28, 0.25), num_masked(8, 8, 0.1), num_masked(2, 2, 0.01)
    (196, 6, 1)
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must lie in (0, 1); got ratio={ratio}")
    return max(1, int(ratio * height * width))


def saliency_scores(grad: torch.Tensor, *, by: str = "abs") -> torch.Tensor:
    """Per-pixel importance from the input gradient of the cross-entropy; low = masked first.

    Parameters
    ----------
    grad : Tensor (n, c, h, w) or (n, d)
        ``dCE/dx`` of the clean batch: images, or tabular rows (each feature is a position of
        its own, scored by its own gradient).
    by : {"abs", "signed"}
        ``"abs"``: ``sum_c |dCE/dx|``, so the pixels whose change moves the loss least come out
        lowest (design.md). ``"signed"``: ``sum_c -dCE/dx = sum_c d log p_y / dx``, so the pixels
        whose increase lowers the class probability the most come out lowest; this is the sign
        convention of the saliency-guided training reference (Ismail et al. 2021), which ranks the
        signed gradient of the target output and masks the most negative values.

    Returns
    -------
    Tensor (n, h * w) or (n, d)
        Scores in float32 (float64 stays), flattened over pixels.
    """
    if grad.dim() not in (2, 4):
        raise ValueError(
            f"grad must have shape (n, c, h, w) or (n, d); got shape {tuple(grad.shape)}"
        )
    if by not in MASK_BY:
        raise ValueError(f"by must be one of {', '.join(MASK_BY)}; got by={by!r}")
    g = grad if grad.dtype == torch.float64 else grad.float()
    if g.dim() == 2:
        return g.abs() if by == "abs" else -g
    score = g.abs().sum(dim=1) if by == "abs" else -g.sum(dim=1)
    return score.reshape(score.shape[0], -1)


def low_saliency_mask(grad: torch.Tensor, *, ratio: float, by: str = "abs") -> torch.Tensor:
    """Boolean mask of the ``ratio`` fraction of pixels with the lowest saliency score per image.

    Parameters
    ----------
    grad : Tensor (n, c, h, w) or (n, d)
        Input gradient of the cross-entropy, of images or of tabular rows.
    ratio : float
        Fraction of pixels to mask, in (0, 1); exactly :func:`num_masked` pixels per image
        (``num_masked(1, d, ratio)`` features per row).
    by : {"abs", "signed"}
        See :func:`saliency_scores`.

    Returns
    -------
    Tensor (n, h, w) or (n, d) of bool
        True where the pixel (all its channels) or the feature is to be replaced.

    Examples
    --------
    >>> g = torch.tensor([[[[0.1, -3.0], [2.0, 0.0]]]])
    >>> low_saliency_mask(g, ratio=0.5).int().tolist()
    [[[1, 0], [0, 1]]]
    >>> low_saliency_mask(g, ratio=0.5, by="signed").int().tolist()  # dCE/dx > 0 lowers p_y
    [[[1, 0], [1, 0]]]
    >>> low_saliency_mask(torch.tensor([[0.5, -0.1, 2.0, 0.0]]), ratio=0.5).int().tolist()
    [[0, 1, 0, 1]]
    """
    scores = saliency_scores(grad, by=by)
    # A row's d features are its positions, as a 1 x d image's pixels would be.
    positions = tuple(grad.shape[1:]) if grad.dim() == 2 else tuple(grad.shape[2:])
    k = num_masked(1, scores.shape[1], ratio)
    index = scores.topk(k, dim=1, largest=False, sorted=False).indices
    mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, index, True)
    return mask.view(grad.shape[0], *positions)


def fill_values(
    x: torch.Tensor, *, fill: str = "uniform", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replacement values for every pixel of ``x``, per image: :func:`geomxai._fill.image_fill`;
    for tabular rows, per feature over the batch: :func:`geomxai._fill.table_fill`.

    The masking fidelity curves (:func:`geomxai.attribution.masking_curve`) use the same fills.

    Parameters
    ----------
    x : Tensor (n, c, h, w) or (n, d)
    fill : {"uniform", "mean", "zero"}
        Images: ``"uniform"``: independent draws from U[min, max] of each channel's range in
        each image (over its pixels), the reference's random mask; ``"mean"``: each image's
        per-channel mean (the reference's mean mask); ``"zero"``: zeros. Rows: the feature's
        range or mean over the batch, or zeros (the training split's mean when standardised).
    generator : torch.Generator, optional
        On ``x``'s device; makes the uniform draws reproducible.

    Returns
    -------
    Tensor (n, c, h, w) or (n, d)
        Same dtype and device as ``x``.
    """
    if fill not in TRAINING_FILLS:
        raise ValueError(f"fill must be one of {', '.join(TRAINING_FILLS)}; got fill={fill!r}")
    if x.dim() == 2:
        return table_fill(x, fill, generator=generator)
    return image_fill(x, fill, generator=generator)


@torch.no_grad()
def mask_low_saliency(
    x: torch.Tensor,
    grad: torch.Tensor,
    *,
    ratio: float,
    by: str = "abs",
    fill: str = "uniform",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The saliency-masked copy of a batch: low-saliency pixels replaced in all channels (for
    tabular rows, low-saliency features).

    Parameters
    ----------
    x : Tensor (n, c, h, w) or (n, d)
        The clean batch (not modified).
    grad : Tensor of ``x``'s shape
        ``dCE/dx`` of the clean batch.
    ratio, by
        See :func:`low_saliency_mask`.
    fill, generator
        See :func:`fill_values`.

    Returns
    -------
    Tensor of ``x``'s shape
        Detached; equal to ``x`` outside the mask.

    Examples
    --------
    >>> x = torch.arange(8.0).view(2, 1, 2, 2)
    >>> g = torch.tensor([1.0, 0.0, 2.0, 3.0, 0.5, 4.0, 5.0, 6.0]).view(2, 1, 2, 2)
    >>> mask_low_saliency(x, g, ratio=0.25, fill="zero").view(2, 4).tolist()
    [[0.0, 0.0, 2.0, 3.0], [0.0, 5.0, 6.0, 7.0]]
    """
    if x.shape != grad.shape:
        raise ValueError(
            f"x and grad must have the same shape; got {tuple(x.shape)} and {tuple(grad.shape)}"
        )
    mask = low_saliency_mask(grad, ratio=ratio, by=by)
    if x.dim() == 4:
        mask = mask.unsqueeze(1)
    return torch.where(mask, fill_values(x, fill=fill, generator=generator), x).detach()
