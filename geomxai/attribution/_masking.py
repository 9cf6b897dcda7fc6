"""Masking fidelity: accuracy as the most (or least) salient pixels are removed."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import xarray as xr
from torch import nn

from geomxai._features import check_finite
from geomxai._fill import FILLS, check_blur_sigma
from geomxai._model_state import evaluating, module_device
from geomxai.attribution._layout import (
    as_batch,
    as_position_maps,
    batch_stats,
    check_fill,
    layout_of,
    position_fill,
)
from geomxai.attribution._road import impute_road
from geomxai.attribution._utils import (
    as_labels,
    check_batch_size,
    check_number,
    check_seed,
    check_targets,
    compute_dtype,
)

ORDERS = ("morf", "lerf", "random")
SCALES = ("unit", "paper")
# What a NaN accuracy means and what to do, for the area functions' finite check.
_CURVE_HINT = (
    "accuracies in [0, 1]; a NaN is a fraction that was not measured: recompute the curve, or "
    "drop that fraction with curve.dropna('fraction') and compare areas over the same fractions"
)


def _check_fractions(fractions) -> np.ndarray:
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim == 0:
        fr = fr[None]
    if fr.ndim != 1 or fr.size == 0:
        raise ValueError(f"fractions must be a non-empty 1-D sequence; got shape {fr.shape}")
    if not np.all(np.isfinite(fr)) or fr.min() < 0 or fr.max() > 1:
        raise ValueError(f"fractions must lie in [0, 1]; got {fr.tolist()}")
    fr = np.sort(fr)
    if np.any(np.diff(fr) == 0):
        raise ValueError(f"fractions must be distinct; got {np.asarray(fractions).tolist()}")
    return fr


def n_masked(fractions: np.ndarray, n_pixels: int) -> np.ndarray:
    """Pixels removed at each fraction: ``floor(f * n_pixels + 1/2)`` (round half up)."""
    return np.floor(fractions * n_pixels + 0.5).astype(np.int64)


def pixel_ranks(s: torch.Tensor, order: str, generator: torch.Generator | None) -> torch.Tensor:
    """Rank (0 = removed first) of every position, (n, P), from saliency (n, *positions).

    Ties are broken by a stable sort, so among equal saliency values the position with the
    lower row-major index is removed first, for MoRF and LeRF alike.
    """
    flat = s.flatten(1)
    b, p = flat.shape
    if order == "random":
        keys = torch.rand(b, p, generator=generator, device=flat.device)
        perm = torch.argsort(keys, dim=1)
    else:
        perm = torch.argsort(flat, dim=1, descending=order == "morf", stable=True)
    ranks = torch.empty_like(perm)
    ranks.scatter_(1, perm, torch.arange(p, device=flat.device).expand(b, p))
    return ranks


def masking_curve(
    model: nn.Module,
    x,
    y,
    saliency,
    *,
    fractions,
    order: Literal["morf", "lerf", "random"] = "morf",
    fill: Literal["uniform", "zero", "mean", "blur", "road"] = "uniform",
    batch_size: int | None = 256,
    seed: int | None = 0,
    blur_sigma: float = 2.0,
    road_noise: float = 0.01,
) -> xr.DataArray:
    """Accuracy of ``model`` as a growing fraction of pixels, ranked by saliency, is removed.

    For each image, pixels are ranked by ``saliency`` (``order="morf"``: most salient first;
    ``"lerf"``: least salient first; ``"random"``: a random permutation per image, the control).
    At fraction ``f`` the first ``floor(f * h * w + 1/2)`` pixels of that ranking are replaced,
    in all channels, by a fill, and accuracy is the share of images still classified as ``y``.

    Fills: ``"uniform"`` (default; values drawn uniformly from each channel's [min, max] in each
    image, exactly as saliency-guided training fills the pixels it masks, Ismail et al. 2021),
    ``"zero"``, ``"mean"`` (each image's per-channel mean), ``"blur"`` (the pixel of a Gaussian
    blur of the image, ``blur_sigma`` pixels), ``"road"`` (ROAD noisy linear imputation, Rong et
    al. 2022, see :func:`road_impute`). The first four are the trainer's own definitions
    (``geomxai._fill.image_fill``). Random fills are drawn once per image and reused at every
    fraction, so a pixel keeps its replacement value as ``f`` grows.

    .. versionchanged:: 0.1
       ``"uniform"`` draws from each channel's own range, as the trainer does; it used to draw
       from the image's range over all channels. Grey images (one channel) give the same curve
       as before; colour images get fill values inside each channel's range.

    Sequences (n, c, t) and tabular rows (n, d) are masked the same way by position: time
    steps (all channels) or features, ranked by maps (n, t) or (n, d). A sequence's fills are
    the image definitions along time, per series and channel (``"blur"`` blurs along time,
    ``"road"`` interpolates between kept neighbours in time). Tabular features have no
    neighbours, so ``"blur"`` and ``"road"`` are refused; ``"uniform"`` draws each feature from
    its [min, max] over all the rows given and ``"mean"`` is its mean over them (one row's
    features are on unrelated scales, so its own range would mean nothing); ``"zero"`` is 0.

    Everything runs on the model's device, batch by batch: ranks by one stable ``argsort`` and a
    ``scatter`` per batch, masks by comparing ranks with the count, one forward pass per
    fraction per batch, no per-pixel loops and no host round trips until the final counts.

    Parameters
    ----------
    model : nn.Module
        Maps inputs (n, c, h, w), (n, c, t) or (n, d) to logits (n, k). Left as it was (eval
        mode during the call, each submodule's flag restored after).
    x : Tensor (n, c, h, w), (n, c, t) or (n, d)
        Finite inputs (NaN or inf values are refused), of any floating dtype: cast to the
        model's floating parameter dtype before they are masked and classified.
    y : Tensor (n,)
        True labels.
    saliency : Tensor (n, h, w), (n, t) or (n, d)
        Per-position maps, as :func:`saliency` returns them.
    fractions : sequence of float in [0, 1]
        Fractions of positions removed; sorted ascending in the result, must be distinct.
    order : {"morf", "lerf", "random"}
    fill : {"uniform", "zero", "mean", "blur", "road"}
    batch_size : int or None
        Images per forward pass (None: all).
    seed : int or None
        Seed of the generator (on the model's device) for random orders and fills. Random
        draws are made batch by batch, so they depend on ``batch_size`` too.
    blur_sigma : float
        Standard deviation, in pixels, of the ``"blur"`` fill.
    road_noise : float
        Standard deviation of the noise ROAD adds to imputed pixels, in the units of ``x``.

    Returns
    -------
    DataArray (fraction,)
        Named ``"accuracy"``, in [0, 1]; coordinate ``n_masked`` (fraction,) holds the number of
        positions removed; ``attrs`` hold ``order``, ``fill``, ``n_samples``, ``n_positions``,
        ``layout`` (``"image"``, ``"sequence"`` or ``"tabular"``), and for images
        ``n_pixels`` (= ``n_positions``).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = model[1].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    ...     _ = model[1].bias.copy_(torch.tensor([-2.5, 0.0]))
    >>> x = torch.ones(1, 1, 2, 2)
    >>> curve = masking_curve(model, x, torch.tensor([0]), torch.rand(1, 2, 2),
    ...                       fractions=[0, 0.25, 0.5, 1], fill="zero")
    >>> curve.values.tolist()
    [1.0, 1.0, 0.0, 0.0]
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}; got order={order!r}")
    if fill == "road":
        check_number(road_noise, "road_noise")
    seed = check_seed(seed)
    fr = _check_fractions(fractions)
    x = as_batch(x)
    layout = layout_of(x)
    check_fill(fill, layout, FILLS)
    if fill == "blur":
        check_blur_sigma(blur_sigma, x)
    n, n_positions = x.shape[0], layout.n_positions
    labels = as_labels(y, n)
    s = as_position_maps(saliency, n=n, layout=layout)
    batch_size = check_batch_size(batch_size, n)
    counts = n_masked(fr, n_positions)
    stats = batch_stats(x, layout)  # tabular fills: each feature over every row given

    device = module_device(model, fallback=x.device)
    dtype = compute_dtype(model, x)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed))
    correct = torch.zeros(len(counts), dtype=torch.long, device=device)
    with evaluating(model), torch.no_grad():
        for start in range(0, n, batch_size):
            xb = x[start : start + batch_size].to(device, dtype)
            yb = labels[start : start + batch_size].to(device)
            sb = s[start : start + batch_size].to(device)
            ranks = layout.broadcastable(pixel_ranks(sb, order, generator).view_as(sb))
            values = (
                None
                if fill == "road"
                else position_fill(
                    xb, fill, layout, stats=stats, generator=generator, blur_sigma=blur_sigma
                )
            )
            for j, k in enumerate(counts.tolist()):
                if k == 0:
                    xm = xb
                else:
                    mask = ranks < k
                    if values is None:
                        xm = impute_road(xb, mask, layout, noise=road_noise, generator=generator)
                    else:
                        xm = torch.where(mask, values, xb)
                logits = model(xm)
                if start == 0 and j == 0:
                    # y out of the model's class range would give a curve of zeros, silently.
                    check_targets(labels, logits.shape[-1], name="y")
                pred = logits.argmax(dim=1)
                correct[j] += (pred == yb).sum()
    accuracy = correct.cpu().numpy() / n
    return xr.DataArray(
        accuracy,
        dims=("fraction",),
        coords={"fraction": fr, "n_masked": ("fraction", counts)},
        name="accuracy",
        attrs={
            "order": order,
            "fill": fill,
            "n_samples": int(n),
            "n_positions": int(n_positions),
            "layout": layout.kind,
            **({"n_pixels": int(n_positions)} if layout.kind == "image" else {}),
        },
    )


def masking_auc(curve: xr.DataArray, *, scale: Literal["unit", "paper"] = "unit") -> xr.DataArray:
    """Area under a masking curve, by the trapezoid rule over its ``fraction`` coordinate.

    With ``scale="unit"`` fraction and accuracy are both in [0, 1], so the area is in [0, 1]
    when the fractions span [0, 1]; ``scale="paper"`` multiplies by 10000 (accuracy% times
    masked%, the scale of the paper's Table I). The area covers only the fractions measured; it
    is not rescaled to [0, 1] when they span less. Lower MoRF AUC means more faithful saliency.
    NaN or inf accuracies (an unmeasured fraction) are refused with a ValueError, not turned
    into a NaN area.

    Parameters
    ----------
    curve : DataArray (fraction, ...)
        As :func:`masking_curve` returns it; other dims are kept.
    scale : {"unit", "paper"}

    Returns
    -------
    DataArray (...) named ``auc``
        Always a DataArray: over the curve's other dims, 0-d for a curve over ``fraction``
        alone (``float(...)`` gives the number). ``attrs``: ``scale``, and the curve's
        ``order`` and ``fill`` where it has them.

    Examples
    --------
    >>> import xarray as xr
    >>> curve = xr.DataArray([1.0, 0.5, 0.0], dims="fraction", coords={"fraction": [0, 0.5, 1]})
    >>> float(masking_auc(curve)), float(masking_auc(curve, scale="paper"))
    (0.5, 5000.0)
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}; got scale={scale!r}")
    if not isinstance(curve, xr.DataArray) or "fraction" not in curve.dims:
        raise ValueError(
            "curve must be a DataArray with a 'fraction' dim, as masking_curve returns; "
            f"got {type(curve).__name__}"
        )
    if "fraction" not in curve.coords:
        raise ValueError("curve needs a 'fraction' coordinate with the masked fractions")
    fr = np.asarray(curve["fraction"].values, dtype=np.float64)
    if fr.size < 2:
        raise ValueError(f"an area needs at least 2 fractions; got {fr.size}")
    if not np.all(np.isfinite(fr)) or fr.min() < 0 or fr.max() > 1:
        raise ValueError(f"curve fractions must lie in [0, 1]; got {fr.tolist()}")
    acc = np.asarray(curve.values, dtype=np.float64)
    check_finite(acc, name="curve values", hint=_CURVE_HINT)
    if np.any(acc < 0) or np.any(acc > 1):
        raise ValueError("curve values must be accuracies in [0, 1]")
    factor = 10000.0 if scale == "paper" else 1.0
    area = curve.sortby("fraction").integrate("fraction") * factor
    kept = {k: curve.attrs[k] for k in ("order", "fill") if k in curve.attrs}
    return area.rename("auc").assign_attrs(scale=scale, **kept)


def fidelity_gap(
    lerf_curve: xr.DataArray,
    morf_curve: xr.DataArray,
    *,
    scale: Literal["unit", "paper"] = "unit",
):
    """LeRF-minus-MoRF area gap: ``masking_auc(lerf) - masking_auc(morf)``.

    Larger means more faithful saliency: removing the least salient pixels first should hurt
    accuracy much less than removing the most salient first. Curves must share their fractions;
    when their ``order`` attributes are present they must be "lerf" and "morf" respectively
    (a swapped call raises instead of silently flipping the sign). A curve holding NaN or inf
    (an unmeasured fraction) is refused with a ValueError that names it, as :func:`masking_auc`
    refuses one.

    Parameters
    ----------
    lerf_curve, morf_curve : DataArray (fraction, ...)
    scale : {"unit", "paper"}

    Returns
    -------
    DataArray (...) named ``fidelity_gap``
        As :func:`masking_auc`: over the curves' other dims, 0-d for curves over ``fraction``
        alone; ``attrs["scale"]``.
    """
    for curve, want, arg in (
        (lerf_curve, "lerf", "lerf_curve"),
        (morf_curve, "morf", "morf_curve"),
    ):
        got = getattr(curve, "attrs", {}).get("order")
        if got is not None and got != want:
            raise ValueError(f"{arg} must be a {want!r} curve; got a curve with order={got!r}")
    if not isinstance(lerf_curve, xr.DataArray) or not isinstance(morf_curve, xr.DataArray):
        raise ValueError("lerf_curve and morf_curve must be DataArrays from masking_curve")
    for curve, arg in ((lerf_curve, "lerf_curve"), (morf_curve, "morf_curve")):
        values = np.asarray(curve.values, dtype=np.float64)
        check_finite(values, name=f"{arg} values", hint=_CURVE_HINT)
    a = np.sort(np.asarray(lerf_curve["fraction"].values, dtype=np.float64))
    b = np.sort(np.asarray(morf_curve["fraction"].values, dtype=np.float64))
    if a.shape != b.shape or not np.allclose(a, b):
        raise ValueError(f"curves must share their fractions; got {a.tolist()} and {b.tolist()}")
    gap = masking_auc(lerf_curve, scale=scale) - masking_auc(morf_curve, scale=scale)
    return gap.rename("fidelity_gap").assign_attrs(scale=scale)
