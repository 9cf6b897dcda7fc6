"""Probabilistic faithfulness: deletion and insertion curves (Petsiuk et al. 2018, RISE)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import xarray as xr
from torch import nn

from geomxai._checks import Boolean, check
from geomxai._fill import FILLS, check_blur_sigma
from geomxai._model_state import evaluating, module_device
from geomxai.attribution._layout import (
    BatchStats,
    Layout,
    as_batch,
    as_position_maps,
    batch_stats,
    check_fill,
    layout_of,
    position_fill,
)
from geomxai.attribution._masking import _check_fractions, n_masked, pixel_ranks
from geomxai.attribution._road import impute_road
from geomxai.attribution._utils import as_labels, check_batch_size, check_number, compute_dtype

MODES = ("deletion", "insertion")


def default_fill(mode: str, layout: Layout) -> str:
    """RISE's choices: deletion fills with zeros; insertion starts from a blurred image.

    A sequence or a tabular row starts insertion from its mean (per series and channel over
    time; per feature over the batch): the uninformative start a blur gives an image.
    """
    if mode == "deletion":
        return "zero"
    return "blur" if layout.kind == "image" else "mean"


class _Masking(NamedTuple):
    """How a curve changes its inputs: the mode, the fill and what the fill reads."""

    mode: str
    fill: str
    layout: Layout
    stats: BatchStats | None
    blur_sigma: float
    road_noise: float


def _check_curve(
    mode, softmax, fractions, x, fill, blur_sigma, road_noise
) -> tuple[np.ndarray, torch.Tensor, Layout, str]:
    """The fractions, the batch, its layout and the fill (the mode's default for None), checked."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got mode={mode!r}")
    check(softmax, "softmax", Boolean())
    fr = _check_fractions(fractions)
    if fr.size < 2:
        raise ValueError(
            f"a curve with a per-sample area needs at least 2 fractions; got {fr.tolist()}"
        )
    x = as_batch(x)
    layout = layout_of(x)
    fill = default_fill(mode, layout) if fill is None else fill
    check_fill(fill, layout, FILLS)
    if fill == "blur":
        check_blur_sigma(blur_sigma, x)
    if fill == "road":
        check_number(road_noise, "road_noise")  # inf noise gives an all-NaN imputation
    return fr, x, layout, fill


def _masked(
    xb: torch.Tensor,
    ranks: torch.Tensor,
    values: torch.Tensor | None,
    k: int,
    masking: _Masking,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``xb`` at one fraction: its ``k`` most salient positions filled (deletion), or only
    they kept (insertion); ``values`` is the fill, None for ROAD's imputation."""
    # Deletion fills the k most salient positions; insertion shows only them.
    deletion = masking.mode == "deletion"
    filled = ranks < k if deletion else ranks >= k
    untouched = k == 0 if deletion else k == masking.layout.n_positions
    if untouched:
        return xb
    if values is None:
        return impute_road(
            xb, filled, masking.layout, noise=masking.road_noise, generator=generator
        )
    return torch.where(filled, values, xb)


def _target_output(out: torch.Tensor, targets: torch.Tensor, softmax: bool) -> torch.Tensor:
    """The softmax probability (or raw output) of each sample's target, float64 (b,)."""
    if out.ndim != 2:
        raise ValueError(
            f"model must return logits (n, k); got an output of shape {tuple(out.shape)}"
        )
    # float64 before the softmax: a probability near 1 keeps its distance to 1.
    p = out.double().softmax(dim=1) if softmax else out.double()
    return p.gather(1, targets[:, None])[:, 0]


def _target_curves(
    model, x, targets, s, counts: list[int], masking: _Masking, *, batch_size, seed, softmax
) -> np.ndarray:
    """The target's probability per sample at each count of positions changed, (n, len(counts))."""
    n = x.shape[0]
    device = module_device(model, fallback=x.device)
    dtype = compute_dtype(model, x)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed))
    probs = torch.empty(n, len(counts), dtype=torch.float64, device=device)
    with evaluating(model), torch.no_grad():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            xb = x[start:stop].to(device, dtype)
            tb = targets[start:stop].to(device)
            sb = s[start:stop].to(device)
            # MoRF ranks; stable, so ties go in row-major order as in masking_curve.
            ranks = masking.layout.broadcastable(pixel_ranks(sb, "morf", None).view_as(sb))
            values = None
            if masking.fill != "road":
                values = position_fill(
                    xb,
                    masking.fill,
                    masking.layout,
                    stats=masking.stats,
                    generator=generator,
                    blur_sigma=masking.blur_sigma,
                )
            for j, k in enumerate(counts):
                xm = _masked(xb, ranks, values, k, masking, generator)
                probs[start:stop, j] = _target_output(model(xm), tb, softmax)
    return probs.cpu().numpy()


def _curve_dataset(
    values: np.ndarray, fr: np.ndarray, counts: list[int], masking: _Masking, softmax: bool
) -> xr.Dataset:
    """The curves (sample, fraction), their areas and the attrs of a deletion/insertion call."""
    n = values.shape[0]
    curve = xr.DataArray(
        values,
        dims=("sample", "fraction"),
        coords={"sample": np.arange(n), "fraction": fr},
        name="probability",
    )
    auc = curve.integrate("fraction").rename("auc")
    ds = xr.Dataset(
        {"probability": curve, "auc": auc},
        coords={"n_masked": ("fraction", np.asarray(counts, dtype=np.int64))},
    )
    ds["probability"].attrs["long_name"] = (
        "softmax probability of the target class" if softmax else "model output for the target"
    )
    mode = masking.mode
    ds["auc"].attrs["long_name"] = f"area under each sample's {mode} curve (trapezoid rule)"
    ds["auc"].attrs["direction"] = "lower" if mode == "deletion" else "higher"
    ds.attrs = {
        "mode": mode,
        "order": "morf",
        "fill": masking.fill,
        "softmax": int(softmax),
        "n_samples": int(n),
        "n_positions": int(masking.layout.n_positions),
        "layout": masking.layout.kind,
    }
    return ds


def _probability_curve(
    model,
    x,
    target,
    saliency,
    *,
    mode,
    fractions,
    fill,
    batch_size,
    seed,
    blur_sigma,
    road_noise,
    softmax,
) -> xr.Dataset:
    """The deletion or insertion curve of ``mode``; see :func:`deletion_curve`."""
    fr, x, layout, fill = _check_curve(mode, softmax, fractions, x, fill, blur_sigma, road_noise)
    n = x.shape[0]
    targets = as_labels(target, n, name="target")
    s = as_position_maps(saliency, n=n, layout=layout)
    batch_size = check_batch_size(batch_size, n)
    counts = n_masked(fr, layout.n_positions).tolist()
    masking = _Masking(mode, fill, layout, batch_stats(x, layout), blur_sigma, road_noise)
    values = _target_curves(
        model, x, targets, s, counts, masking, batch_size=batch_size, seed=seed, softmax=softmax
    )
    return _curve_dataset(values, fr, counts, masking, softmax)


_PARAMS = """
    Parameters
    ----------
    model : nn.Module
        Maps inputs (n, c, h, w), (n, c, t) or (n, d) to logits (n, k). Left as it was (eval
        mode during the call, each submodule's flag restored after).
    x : Tensor (n, c, h, w), (n, c, t) or (n, d)
        Finite inputs, of any floating dtype (cast to the model's floating parameter dtype).
    target : int or Tensor (n,)
        Class whose probability is followed, per sample or one for all: the class the saliency
        explains (RISE follows the predicted class, ``model(x).argmax(1)``).
    saliency : Tensor (n, h, w), (n, t) or (n, d)
        Per-position maps, as :func:`saliency` returns them.
    fractions : sequence of float in [0, 1]
        Fractions of positions {verb}; sorted ascending, distinct, at least 2. With
        ``np.linspace(0, 1, m)`` the area is RISE's normalised AUC.
    fill : str or None
        {fill}
    batch_size : int or None
        Samples per forward pass (None: all).
    seed : int or None
        Seed of the generator (on the model's device) of the ``"uniform"`` and ``"road"``
        fills, drawn once per batch and reused at every fraction.
    blur_sigma : float
        Standard deviation, in positions, of the ``"blur"`` fill (RISE blurs 224-pixel images
        with sigma 5; the default suits small images).
    road_noise : float
        Standard deviation of the noise ROAD adds to imputed positions.
    softmax : bool
        Follow the softmax probability of ``target`` (True) or the model's raw output for it
        (False, for a model that outputs probabilities already).

    Returns
    -------
    Dataset
        ``probability`` (sample, fraction): the target's probability at each fraction;
        ``auc`` (sample,): the area under each sample's curve over ``fraction`` (trapezoid
        rule, not rescaled when the fractions span less than [0, 1]), so a distribution can be
        shown (``ds.auc.mean()`` for one number). Coordinates ``sample``, ``fraction`` and
        ``n_masked`` (fraction,), the number of positions {verb}. ``attrs``: ``mode``,
        ``order`` ("morf"), ``fill``, ``softmax``, ``n_samples``, ``n_positions``, ``layout``.
"""


def deletion_curve(
    model: nn.Module,
    x,
    target,
    saliency,
    *,
    fractions,
    fill: str | None = None,
    batch_size: int | None = 256,
    seed: int | None = 0,
    blur_sigma: float = 2.0,
    road_noise: float = 0.01,
    softmax: bool = True,
) -> xr.Dataset:
    """The target's probability as the most salient positions are deleted (RISE's deletion).

    Petsiuk et al. 2018 (*RISE: randomized input sampling for explanation of black-box
    models*), deletion metric: positions are removed most salient first (MoRF, ties in
    row-major order) and replaced by ``fill``; at fraction ``f`` the first
    ``k = floor(f * P + 1/2)`` of the ``P`` positions are removed (in all channels) and the
    softmax probability of ``target`` is recorded, per sample. A faithful map makes it fall
    fast: **lower area is better**. RISE fills with zeros (the default); any masking fill
    works (``"uniform"``, ``"mean"``, ``"blur"``, ``"road"``; ``"uniform"``, ``"mean"`` and
    ``"zero"`` for tabular rows, with the per-feature batch statistics of
    :func:`masking_curve`).
    {params}
    Examples
    --------
    A model whose probability of class 0 is the mean of its four inputs in [0, 1]: deleting
    the largest input first (zero fill) removes its share at once.

    >>> import torch
    >>> from torch import nn
    >>> class MeanProb(nn.Module):
    ...     def forward(self, x):
    ...         p = x.flatten(1).mean(1)
    ...         return torch.stack([p.log(), (1 - p).log()], dim=1)
    >>> x = torch.tensor([[0.8, 0.4, 0.4, 0.4]])
    >>> ds = deletion_curve(MeanProb(), x, 0, x, fractions=[0, 0.25, 0.5, 0.75, 1])
    >>> [round(v, 6) for v in ds.probability[0].values.tolist()]
    [0.5, 0.3, 0.2, 0.1, 0.0]
    >>> round(float(ds.auc[0]), 6)
    0.2125
    """
    return _probability_curve(
        model,
        x,
        target,
        saliency,
        mode="deletion",
        fractions=fractions,
        fill=fill,
        batch_size=batch_size,
        seed=seed,
        blur_sigma=blur_sigma,
        road_noise=road_noise,
        softmax=softmax,
    )


def insertion_curve(
    model: nn.Module,
    x,
    target,
    saliency,
    *,
    fractions,
    fill: str | None = None,
    batch_size: int | None = 256,
    seed: int | None = 0,
    blur_sigma: float = 2.0,
    road_noise: float = 0.01,
    softmax: bool = True,
) -> xr.Dataset:
    """The target's probability as the most salient positions are revealed (RISE's insertion).

    Petsiuk et al. 2018, insertion metric: the input starts fully replaced by ``fill`` (RISE:
    a blurred copy of the image, the default for images; the mean for sequences, per series
    and channel, and for tabular rows, per feature over the batch) and the original values
    are put back most salient first (MoRF, ties in row-major order); at fraction ``f`` the
    first ``k = floor(f * P + 1/2)`` positions show their original values and the rest the
    fill. A faithful map makes the probability rise fast: **higher area is better**.
    {params}
    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class MeanProb(nn.Module):
    ...     def forward(self, x):
    ...         p = x.flatten(1).mean(1)
    ...         return torch.stack([p.log(), (1 - p).log()], dim=1)
    >>> x = torch.tensor([[0.8, 0.4, 0.4, 0.4]])
    >>> ds = insertion_curve(MeanProb(), x, 0, x, fractions=[0, 0.25, 1], fill="zero")
    >>> [round(v, 6) for v in ds.probability[0].values.tolist()]
    [0.0, 0.2, 0.5]
    """
    return _probability_curve(
        model,
        x,
        target,
        saliency,
        mode="insertion",
        fractions=fractions,
        fill=fill,
        batch_size=batch_size,
        seed=seed,
        blur_sigma=blur_sigma,
        road_noise=road_noise,
        softmax=softmax,
    )


deletion_curve.__doc__ = deletion_curve.__doc__.replace(
    "{params}",
    _PARAMS.replace("{verb}", "deleted").replace(
        "{fill}", 'What deleted positions become (None: ``"zero"``, as RISE).'
    ),
)
insertion_curve.__doc__ = insertion_curve.__doc__.replace(
    "{params}",
    _PARAMS.replace("{verb}", "revealed").replace(
        "{fill}",
        'The start, what hidden positions are (None: ``"blur"`` for images, ``"mean"`` otherwise).',
    ),
)
