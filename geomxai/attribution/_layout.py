"""Input layouts: images (n, c, h, w), sequences (n, c, t) and tabular rows (n, d).

Every attribution function works on per-*position* maps: one value per pixel of an image
(h, w), per time step of a sequence (t,), per feature of a tabular row (d,). The channel axis
of images and sequences is summed over (after ``|.|`` by default) and masked as one: a masked
position is replaced in all its channels. Tabular rows have no channel axis: each feature is a
position of its own.

This module owns that convention: which shapes are accepted (:func:`as_batch`), what the
positions of a batch are (:class:`Layout`), how an attribution becomes a per-position map
(:func:`reduce_channels`), how a map is checked against its batch (:func:`as_position_maps`),
and what a masked position is replaced with (:func:`position_fill`; ROAD's imputation is
:func:`geomxai.attribution._road.impute_road`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from geomxai._fill import image_fill
from geomxai._finite import check_finite
from geomxai.attribution._utils import as_images

LAYOUTS = {4: "image", 3: "sequence", 2: "tabular"}
SHAPES = "an image batch (n, c, h, w), a sequence batch (n, c, t) or a tabular batch (n, d)"
REDUCTIONS = ("abs_sum", "sum", "max_abs")
TABULAR_FILLS = ("uniform", "zero", "mean")
"""Fills for tabular rows: blur and ROAD need neighbouring positions, which features lack."""

_SAMPLE_HINT = (
    "replace or drop the samples that hold them, e.g. keep x[torch.isfinite(x).flatten(1).all(1)]"
    ", or torch.nan_to_num(x) if NaN stands for a missing value"
)


class Layout(NamedTuple):
    """What the positions of a batch are.

    ``kind`` is ``"image"``, ``"sequence"`` or ``"tabular"``; ``positions`` the shape of one
    per-position map: (h, w), (t,) or (d,).
    """

    kind: str
    positions: tuple[int, ...]

    @property
    def n_positions(self) -> int:
        return math.prod(self.positions)

    @property
    def map_dims(self) -> str:
        """The shape of a batch of maps, spelt out for error messages."""
        return {"image": "(n, h, w)", "sequence": "(n, t)", "tabular": "(n, d)"}[self.kind]

    def broadcastable(self, per_position: torch.Tensor) -> torch.Tensor:
        """(b, *positions) viewed to broadcast against a batch (b, [c,] *positions)."""
        if self.kind == "tabular":
            return per_position
        return per_position.unsqueeze(1)


def layout_of(x: torch.Tensor) -> Layout:
    """The :class:`Layout` of a batch that :func:`as_batch` accepted."""
    kind = LAYOUTS[x.ndim]
    return Layout(kind, tuple(x.shape[2:]) if kind != "tabular" else (x.shape[1],))


def as_batch(x, *, name: str = "x") -> torch.Tensor:
    """A finite floating tensor (n, c, h, w), (n, c, t) or (n, d); nothing is copied.

    Images go through :func:`geomxai.attribution._utils.as_images` unchanged; sequences and
    tabular rows get the same checks: a floating dtype, at least one sample, no NaN or inf.

    Examples
    --------
    >>> layout_of(as_batch(torch.zeros(5, 30)))
    Layout(kind='tabular', positions=(30,))
    >>> as_batch(torch.zeros(5))
    Traceback (most recent call last):
    ...
    ValueError: x must be an image batch (n, c, h, w), a sequence batch (n, c, t) or a tabular batch (n, d); got shape (5,)
    """
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim not in LAYOUTS:
        raise ValueError(f"{name} must be {SHAPES}; got shape {tuple(x.shape)}")
    if x.ndim == 4:
        return as_images(x, name=name)
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor; got dtype {x.dtype}. Convert it and scale "
            f"it as the model was trained (e.g. {name}.float(), then the training normalisation)"
        )
    if x.shape[0] == 0 or any(s == 0 for s in x.shape[1:]):
        raise ValueError(
            f"{name} must hold at least one non-empty sample; got shape {tuple(x.shape)}"
        )
    check_finite(x, name=name, hint=_SAMPLE_HINT)
    return x


def reduce_channels(attr: torch.Tensor, reduce: str, layout: Layout) -> torch.Tensor:
    """Attributions of a batch's shape, or already per position, to per-position maps.

    Images (n, c, h, w) and sequences (n, c, t) are reduced over the channel axis: ``"abs_sum"``
    sums ``|a|``, ``"sum"`` sums ``a``, ``"max_abs"`` takes the largest ``|a|``. A map that is
    already per position (n, *positions), as tabular attributions always are, is one channel:
    ``"abs_sum"`` and ``"max_abs"`` give ``|a|``, ``"sum"`` gives ``a``.
    """
    if attr.ndim == 1 + len(layout.positions):  # per position already: a single channel
        return attr if reduce == "sum" else attr.abs()
    if reduce == "abs_sum":
        return attr.abs().sum(dim=1)
    if reduce == "sum":
        return attr.sum(dim=1)
    return attr.abs().amax(dim=1)


def as_position_maps(s, *, n: int, layout: Layout, name: str = "saliency") -> torch.Tensor:
    """Per-position maps (n, *positions) as a floating tensor, checked against their batch."""
    if not isinstance(s, torch.Tensor):
        s = torch.as_tensor(np.asarray(s))
    want = (n, *layout.positions)
    if tuple(s.shape) != want:
        hint = (
            "reduce channels first, as geomxai.attribution.saliency does"
            if layout.kind != "tabular"
            else "one value per feature"
        )
        raise ValueError(
            f"{name} must be per-position maps {layout.map_dims} of shape {want} for x of "
            f"{layout.kind} layout ({hint}); got shape {tuple(s.shape)}"
        )
    if not s.is_floating_point():
        s = s.double()
    check_finite(s, name=name, hint="saliency of non-finite inputs or a diverged model?")
    return s


def check_fill(fill: str, layout: Layout, fills) -> None:
    """Refuse a fill that is unknown, or that needs neighbours tabular features do not have."""
    if fill not in fills:
        raise ValueError(f"fill must be one of {fills}; got fill={fill!r}")
    if layout.kind == "tabular" and fill not in TABULAR_FILLS:
        raise ValueError(
            f"fill={fill!r} needs neighbouring positions (images or sequences); the features of "
            f"a tabular batch (n, d) have no neighbours: use one of {TABULAR_FILLS}"
        )


class BatchStats(NamedTuple):
    """Per-feature minimum, maximum and mean over a whole tabular batch (d,) each."""

    low: torch.Tensor
    high: torch.Tensor
    mean: torch.Tensor


def batch_stats(x: torch.Tensor, layout: Layout) -> BatchStats | None:
    """What tabular fills draw from, over every row given (not one internal batch); else None."""
    if layout.kind != "tabular":
        return None
    # The mean in float64: a half-precision sum over many rows loses the low bits.
    return BatchStats(x.amin(dim=0), x.amax(dim=0), x.double().mean(dim=0))


def position_fill(
    x: torch.Tensor,
    fill: str,
    layout: Layout,
    *,
    stats: BatchStats | None = None,
    generator: torch.Generator | None = None,
    blur_sigma: float = 2.0,
) -> torch.Tensor:
    """Replacement values of every position of ``x``, of ``x``'s shape; not ``"road"``.

    Images: :func:`geomxai._fill.image_fill`, per image and channel. Sequences: the same
    definitions along the time axis, per series and channel (``"uniform"`` in the channel's
    [min, max] over time, ``"mean"`` its mean over time, ``"blur"`` a Gaussian blur along
    time). Tabular rows: per feature over the whole batch ``stats`` (``"uniform"`` in the
    feature's [min, max], ``"mean"`` its mean), since one row's features are on unrelated
    scales and its own range says nothing about any one of them; ``"zero"``: 0.
    """
    if layout.kind == "image":
        return image_fill(x, fill, generator=generator, blur_sigma=blur_sigma)
    if layout.kind == "sequence":
        # (n, c, t) as images one pixel high: the blur's vertical pass is then the identity.
        return image_fill(x[:, :, None], fill, generator=generator, blur_sigma=blur_sigma)[:, :, 0]
    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "mean":
        return stats.mean.to(x.device, x.dtype).expand_as(x)
    if fill == "uniform":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        # The statistics are those of the whole batch, wherever it lies; x is one chunk of it
        # on the model's device.
        low, high = stats.low.to(x.device, x.dtype), stats.high.to(x.device, x.dtype)
        return low + (high - low) * u
    raise ValueError(f"fill must be one of {TABULAR_FILLS} for tabular data; got fill={fill!r}")
