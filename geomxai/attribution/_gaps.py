"""Saliency gaps: how concentrated a map is, with and without a ground-truth mask.

Every function here returns one value per image, as a DataArray with dim ``sample``, so that
distributions (the paper's box plots) stay available; take ``.mean()`` for one number. Images
for which a value is undefined (an all-zero map; a mask that is all foreground or all
background, for AUROC) get NaN, which xarray's ``mean`` skips by default. These metrics are
computed in float64 on the CPU: they sort or rank every pixel once, which costs nothing next to
the forward passes that made the maps. Empty input (no map, or maps of no pixel) and NaN/inf
values are refused with a ValueError: NaN is kept for a value that is undefined for one image.
Maps may be per pixel (n, h, w), per time step (n, t) or per feature (n, d): every metric
treats a map as its flattened positions.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from scipy import ndimage
from scipy.stats import rankdata

from geomxai._features import as_float64, check_finite


def _maps(saliency, *, name: str = "saliency") -> np.ndarray:
    s = as_float64(saliency, name=name)
    if s.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be per-position maps: (n, h, w) for images, (n, t) for sequences or "
            f"(n, d) for tabular data; got shape {s.shape}"
        )
    if s.size == 0:
        # Nothing to rank or sum: numpy would fail deep inside (a zero-size reduction) or
        # give NaN for every image, which reads as "undefined map", not "no map".
        raise ValueError(
            f"{name} must hold at least one map of at least one pixel (n >= 1, h * w >= 1); "
            f"got shape {s.shape}. Was the probe set or the image empty?"
        )
    check_finite(s, name=name)
    if np.any(s < 0):
        raise ValueError(
            f"{name} must be non-negative magnitudes (e.g. saliency(..., reduce='abs_sum')); "
            f"got a minimum of {s.min():.3g}"
        )
    return s.reshape(s.shape[0], -1)


def _scale_free(s: np.ndarray) -> np.ndarray:
    """Each map (row) divided by a power of two near its largest value: exact in floating
    point, so a ratio of the map's sums is unchanged, and sums of maps at 1e308 stay finite."""
    top = s.max(axis=1, keepdims=True)
    k = np.where(top > 0, np.frexp(top)[1], 0)
    return np.ldexp(s, -k)


def _masks(masks, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(masks, xr.DataArray):
        masks = masks.values
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    m = np.asarray(masks)
    if m.shape != shape:
        raise ValueError(f"masks must have the saliency's shape {shape}; got shape {m.shape}")
    if m.dtype != bool:
        if not np.all((m == 0) | (m == 1)):
            raise ValueError("masks must be boolean or hold only 0 and 1")
        m = m.astype(bool)
    return m


def _per_sample(values: np.ndarray, name: str) -> xr.DataArray:
    return xr.DataArray(
        values, dims=("sample",), coords={"sample": np.arange(values.size)}, name=name
    )


def _shape(saliency) -> tuple[int, ...]:
    return tuple(np.shape(saliency.values if isinstance(saliency, xr.DataArray) else saliency))


def topq_contrast(saliency, q: float = 0.1) -> xr.DataArray:
    """Top-q contrast: ``(mean of the top q share of pixels - mean of the rest) / mean``.

    The top share holds ``k = max(1, round(q * P))`` of the ``P`` positions. The ratio is
    scale-free, so normalising the map to sum 1 first changes nothing. It is 0 for a flat map
    and at most ``P / k`` (about ``1 / q``, e.g. 10 for q=0.1), reached when all the mass lies
    in the top share. NaN for an all-zero map.

    Parameters
    ----------
    saliency : array or Tensor (n, h, w), (n, t) or (n, d), non-negative
    q : float in (0, 1)

    Returns
    -------
    DataArray (sample,)

    Examples
    --------
    >>> import numpy as np
    >>> s = np.zeros((1, 10, 10)); s[0, 0, :10] = 1.0
    >>> float(topq_contrast(s, q=0.1)[0])
    10.0
    """
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1); got q={q!r}")
    s = _scale_free(_maps(saliency))  # scale-free: finite for maps at any finite scale
    p = s.shape[1]
    k = max(1, int(round(q * p)))
    if k >= p:
        raise ValueError(f"q={q} leaves no pixels outside the top share of {p}")
    ordered = -np.sort(-s, axis=1)
    top = ordered[:, :k].mean(axis=1)
    rest = ordered[:, k:].mean(axis=1)
    mean = s.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(mean > 0, (top - rest) / mean, np.nan)
    return _per_sample(out, "topq_contrast")


def gini(saliency) -> xr.DataArray:
    """Gini coefficient of each map's pixel values (sparsity; Hurley & Rickard 2009).

    With the ``P`` values sorted ascending, ``a_(1) <= ... <= a_(P)``:
    ``G = sum_i (2i - P - 1) a_(i) / (P sum_i a_(i))``, in ``[0, 1 - 1/P]``: 0 for a flat map,
    ``1 - 1/P`` when one pixel holds all the mass. The same formula as Quantus's ``Sparseness``
    (Chalasani et al. 2020), without its additive epsilon.

    Parameters
    ----------
    saliency : array or Tensor (n, h, w), (n, t) or (n, d), non-negative

    Returns
    -------
    DataArray (sample,)

    Examples
    --------
    >>> import numpy as np
    >>> s = np.zeros((2, 2, 2)); s[0] = 1.0; s[1, 0, 0] = 5.0
    >>> gini(s).values.tolist()
    [0.0, 0.75]
    """
    s = np.sort(_scale_free(_maps(saliency)), axis=1)  # scale-free, see topq_contrast
    p = s.shape[1]
    weights = 2 * np.arange(1, p + 1) - p - 1
    total = s.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, (s @ weights) / (p * total), np.nan)
    return _per_sample(out, "gini")


def mask_auroc(saliency, masks) -> xr.DataArray:
    """AUROC of saliency as a detector of the mask's foreground pixels, per image.

    The Mann-Whitney statistic: the probability that a random foreground pixel has higher
    saliency than a random background pixel, ties counting one half (midranks). 0.5 is chance,
    1 is perfect localisation. NaN where the mask is all foreground or all background.

    Parameters
    ----------
    saliency : array or Tensor (n, h, w), (n, t) or (n, d), non-negative
    masks : bool array or Tensor of the saliency's shape
        True on the ground-truth foreground.

    Returns
    -------
    DataArray (sample,)

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([[[3.0, 1.0], [2.0, 0.0]]]); m = np.array([[[True, False], [False, False]]])
    >>> float(mask_auroc(s, m)[0])
    1.0
    """
    s = _maps(saliency)
    m = _masks(masks, _shape(saliency)).reshape(s.shape)
    ranks = rankdata(s, axis=1)  # average ranks for ties
    pos = m.sum(axis=1)
    neg = m.shape[1] - pos
    rank_sum = (ranks * m).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - pos * (pos + 1) / 2) / (pos * neg)
    return _per_sample(np.where((pos > 0) & (neg > 0), auc, np.nan), "mask_auroc")


def mass_inside(saliency, masks) -> xr.DataArray:
    """Share of each map's saliency mass inside the ground-truth mask, in [0, 1].

    The map normalised to sum 1, summed over the mask. NaN for an all-zero map.

    Parameters
    ----------
    saliency : array or Tensor (n, h, w), (n, t) or (n, d), non-negative
    masks : bool array or Tensor of the saliency's shape

    Returns
    -------
    DataArray (sample,)
    """
    s = _maps(saliency)
    m = _masks(masks, _shape(saliency)).reshape(s.shape)
    total = s.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, (s * m).sum(axis=1) / total, np.nan)
    return _per_sample(out, "mass_inside")


def pointing_game(saliency, masks, *, tolerance: float = 0.0) -> xr.DataArray:
    """Pointing game (Zhang et al. 2018): does the map's maximum fall on the object?

    A hit is a maximum within ``tolerance`` pixels (Euclidean) of the mask; Zhang et al. use 15
    pixels on full-size images, the default 0 asks for the maximum to lie inside the mask, which
    suits small images. When several pixels share the maximum the score is the share of them
    that hit (the expected hit of picking one at random), so an all-zero map scores the mask's
    area share instead of a lucky 1.

    Parameters
    ----------
    saliency : array or Tensor (n, h, w), (n, t) or (n, d), non-negative
    masks : bool array or Tensor of the saliency's shape
    tolerance : float
        Distance in pixels within which a maximum still counts as a hit.

    Returns
    -------
    DataArray (sample,)
        In [0, 1]; 1 or 0 when the maximum is unique.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0; got tolerance={tolerance!r}")
    shape = _shape(saliency)
    s = _maps(saliency)
    m = _masks(masks, shape)
    if tolerance > 0:
        m = np.stack(
            [ndimage.distance_transform_edt(~mi) <= tolerance if mi.any() else mi for mi in m]
        )
    m = m.reshape(s.shape)
    top = s == s.max(axis=1, keepdims=True)
    out = (top & m).sum(axis=1) / top.sum(axis=1)
    return _per_sample(out.astype(np.float64), "pointing_game")
