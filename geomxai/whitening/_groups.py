"""Group layout, argument checks and batch statistics shared by every whitening entry point.

A width ``d`` split by ``group_size = g`` gives ``k = d // g`` full groups of ``g`` consecutive
features and, when ``g`` does not divide ``d``, one remainder group of the last ``r = d % g``
features. The full groups are stored as one batch ``(k, g, g)`` and the remainder as a batch of one
``(1, r, r)``, so every computation is at most two batched calls ("chunks"), never a loop per group.
A remainder of one feature is whitened alone, which is exactly standardisation.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral, Real

import torch

# Statistics (mean, covariance) and the small per-group matrices are always computed in float64:
# a float32 covariance of features with a large mean or a wide spread loses the small eigenvalues
# that (l + eps)^-1/2 amplifies most. The matrices are (k, g, g), so this costs little.
STATS_DTYPE = torch.float64


@dataclass(frozen=True)
class GroupLayout:
    """How ``num_features`` consecutive features split into whitening groups.

    Attributes
    ----------
    num_features : int
        Width ``d``.
    group_size : int
        Size ``g`` of the full groups.
    num_full : int
        Number ``k = d // g`` of full groups.
    remainder : int
        Size ``r = d % g`` of the last, smaller group; 0 when there is none.
    """

    num_features: int
    group_size: int
    num_full: int
    remainder: int

    @property
    def num_groups(self) -> int:
        return self.num_full + (1 if self.remainder else 0)

    def chunks(self) -> Iterator[tuple[int, int, int]]:
        """``(start, count, size)`` of each batch of equal-size groups: full groups, then the rest."""
        if self.num_full:
            yield 0, self.num_full, self.group_size
        if self.remainder:
            yield self.num_full * self.group_size, 1, self.remainder

    def num_within_pairs(self) -> int:
        """Number of ordered pairs ``(i, j)``, ``i != j``, of features in the same group."""
        g, r = self.group_size, self.remainder
        return self.num_full * g * (g - 1) + r * (r - 1)

    def num_within_entries(self) -> int:
        """Number of entries of the block-diagonal (within-group) part of a (d, d) matrix."""
        return self.num_full * self.group_size**2 + self.remainder**2


def resolve_groups(num_features: int, group_size: int | None) -> GroupLayout:
    """Check ``group_size`` against the width and return the layout; ``None`` means one group."""
    d = num_features
    if group_size is not None and (
        isinstance(group_size, bool) or not isinstance(group_size, Integral)
    ):
        raise TypeError(
            f"group_size must be an int or None; got group_size={group_size!r} "
            f"of type {type(group_size).__name__}"
        )
    g = d if group_size is None else int(group_size)
    if g < 2 or g > d:
        hint = ""
        if g > d >= 2:
            hint = f"; use group_size=None (or any value up to {d}) for one group of all features"
        raise ValueError(
            "group_size must divide into at least one group of 2 or more features; "
            f"got group_size={group_size} for d={d}{hint}"
        )
    return GroupLayout(num_features=d, group_size=g, num_full=d // g, remainder=d % g)


def check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, Real) or not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number greater than 0; got eps={eps!r}")
    return float(eps)


def check_iters(iters: int) -> int:
    if isinstance(iters, bool) or not isinstance(iters, Integral) or iters < 1:
        raise ValueError(f"iters must be an int of at least 1; got iters={iters!r}")
    return int(iters)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}; got {name}={value!r}")
    return value


def feature_dim(x: torch.Tensor, *, name: str = "x") -> int:
    """Check that ``x`` is a floating (n, d) or (n, c, *spatial) tensor and return d (or c)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(
            f"{name} must have shape (n, d) or (n, c, ...) with features on dim 1; "
            f"got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    return x.shape[1]


def to_rows(x: torch.Tensor, *, name: str = "x") -> torch.Tensor:
    """(n, d) stays; (n, c, *spatial) becomes (n * prod(spatial), c), channels as features."""
    feature_dim(x, name=name)
    if x.dim() == 2:
        return x
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def from_rows(y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`to_rows` for an input of ``shape``."""
    if len(shape) == 2:
        return y
    moved = (shape[0], *shape[2:], shape[1])
    return y.reshape(moved).movedim(-1, 1)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype in which whitening matrices are applied: float64 stays, anything else gets float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off for the whitening itself: fp16/bf16 never reach eigh or the matmuls."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def check_rows(rows: torch.Tensor, layout_features: int, *, name: str = "x") -> None:
    if rows.shape[-1] != layout_features:
        raise ValueError(
            f"{name} has {rows.shape[-1]} features on dim 1 but {layout_features} were expected"
        )
    if rows.shape[0] == 0:
        raise ValueError(f"{name} has no samples; whitening needs at least one")


def group_view(rows: torch.Tensor, start: int, count: int, size: int) -> torch.Tensor:
    """Columns ``start : start + count * size`` of (m, d) rows as (count, m, size)."""
    block = rows[:, start : start + count * size]
    return block.reshape(rows.shape[0], count, size).transpose(0, 1)


def ungroup(blocks: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`group_view` over all chunks: a list of (count, m, size) to (m, d)."""
    parts = [b.transpose(0, 1).reshape(b.shape[1], -1) for b in blocks]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def batch_moments(
    rows: torch.Tensor, layout: GroupLayout
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Float64 mean, centred rows and within-group (biased, 1/m) covariances of (m, d) rows.

    Returns
    -------
    mean : Tensor (d,), float64
    centred : Tensor (m, d), float64
    covs : list of Tensor (count, size, size), float64
        One entry per chunk of :meth:`GroupLayout.chunks`.
    """
    x64 = rows.to(STATS_DTYPE)
    mean = x64.mean(dim=0)
    # Centre before the product: E[x x^T] - m m^T cancels catastrophically for a large mean.
    centred = x64 - mean
    m = rows.shape[0]
    covs = []
    for start, count, size in layout.chunks():
        xg = group_view(centred, start, count, size)
        covs.append(xg.mT @ xg / m)
    return mean, centred, covs


def apply_blocks(
    centred: torch.Tensor, mats: list[torch.Tensor], layout: GroupLayout, dtype: torch.dtype
) -> torch.Tensor:
    """``y_G = x_G W_G^T`` for every group ``G``, computed in ``dtype``; (m, d) in, (m, d) out."""
    xc = centred.to(dtype)
    out = []
    for (start, count, size), w in zip(layout.chunks(), mats, strict=True):
        out.append(group_view(xc, start, count, size) @ w.to(dtype).mT)
    return ungroup(out)


def block_diagonal(mats: list[torch.Tensor]) -> torch.Tensor:
    """Assemble per-chunk (count, size, size) matrices into one (d, d) block-diagonal matrix."""
    return torch.block_diag(*[b for chunk in mats for b in chunk.unbind(0)])


def whiten_batch(x: torch.Tensor, layout: GroupLayout, matrices) -> tuple[torch.Tensor, ...]:
    """Whiten ``x`` with batch statistics; ``matrices`` maps a list of covariances to matrices.

    Returns the whitened tensor (shape and dtype of ``x``), the float64 batch mean and the list of
    float64 batch covariances (for running statistics).
    """
    rows = to_rows(x)
    check_rows(rows, layout.num_features)
    with no_autocast(x.device):
        mean, centred, covs = batch_moments(rows, layout)
        mats = matrices(covs)
        y = apply_blocks(centred, mats, layout, work_dtype(x.dtype))
    return from_rows(y.to(x.dtype), x.shape), mean, covs
