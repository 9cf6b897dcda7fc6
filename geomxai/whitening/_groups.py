"""Group layout, argument checks and batch statistics shared by every whitening entry point.

A width ``d`` split by ``group_size = g`` gives ``k = d // g`` full groups of ``g`` consecutive
features and, when ``g`` does not divide ``d``, one remainder group of the last ``r = d % g``
features. The per-group matrices are handed around as "chunks": the full groups as one batch
``(k, g, g)`` and the remainder as a batch of one ``(1, r, r)``. The products with the data are
one batched product over all groups, the remainder padded with zero columns to the full size
(:func:`padded_groups`), never a loop per group. A remainder of one feature is whitened alone,
which is exactly standardisation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from numbers import Integral, Real

import torch

from geomxai._checks import Interval, check
from geomxai._finite import check_finite

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
    check(group_size, "group_size", Interval(Integral, None, None), None)
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
    return float(check(eps, "eps", Interval(Real, 0, None, closed="neither")))


def check_iters(iters: int | str, *, name: str = "iters") -> int | str:
    """An int of at least 1, or ``"auto"`` (the static count of ``ns_iterations``); ``name`` is
    the parameter the ``ValueError`` names."""
    if isinstance(iters, str) and iters == "auto":
        return "auto"
    if not Interval(Integral, 1, None).accepts(iters):
        raise ValueError(
            f"{name} must be an int of at least 1 or 'auto' (the static Newton-Schulz count "
            f"that makes it ZCA); got {name}={iters!r}"
        )
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


_NONFINITE_HINT = (
    "batch statistics over them would be NaN and every whitened row with them; drop or repair "
    "those samples, or look for a diverged model upstream"
)


def refuse_nonfinite(x: torch.Tensor, *, name: str = "x", on_accelerator: bool = True) -> None:
    """Raise a ValueError, counting the NaN/inf entries of ``x``, when it holds any.

    On the CPU the test is one elementwise pass and reading its flag costs nothing. On an
    accelerator reading the flag is a host synchronisation, which the training hot path
    (:class:`GroupWhitening`'s forward and :func:`decorrelation_loss`, once per step) must not
    pay: ``on_accelerator=False`` skips the test there. The non-finite input then gives a
    non-finite output and loss, which the trainer stops on, and :class:`GroupWhitening` keeps
    its running statistics safe on the device (see ``_update_running``). Meta tensors hold no
    values and are never tested.
    """
    if x.device.type == "meta" or (x.device.type != "cpu" and not on_accelerator):
        return
    check_finite(x, name=name, hint=_NONFINITE_HINT)


def padded_groups(rows: torch.Tensor, layout: GroupLayout) -> torch.Tensor:
    """(m, d) rows as (m, num_groups, group_size), a remainder group padded with zero columns.

    The products over groups are then one batched matrix product each: a zero column adds
    nothing to a covariance, and a zero row of a whitening matrix adds nothing to the output.
    One product per chunk instead cost a second set of launches and, through the strided
    gradient of the chunks' concatenation, a copy of every group's matrix in the CPU backward.
    """
    pad = layout.num_groups * layout.group_size - layout.num_features
    if pad:
        rows = torch.nn.functional.pad(rows, (0, pad))
    return rows.unflatten(1, (layout.num_groups, layout.group_size))


def within_group_products(centred: torch.Tensor, layout: GroupLayout) -> torch.Tensor:
    """``sum_rows x_G x_G^T`` of every group ``G`` of (m, d) centred rows: (num_groups, g, g).

    A remainder group's block is zero outside its top-left ``r x r`` (see :func:`split_chunks`).
    """
    xg = padded_groups(centred, layout).transpose(0, 1)
    return xg.mT @ xg


def split_chunks(mats: torch.Tensor, layout: GroupLayout) -> list[torch.Tensor]:
    """(num_groups, g, g) matrices of :func:`padded_groups` as the list of chunks."""
    if not layout.remainder:
        return [mats]
    k, r = layout.num_full, layout.remainder
    rest = mats[k:, :r, :r]
    return [mats[:k], rest] if k else [rest]


def join_chunks(mats: list[torch.Tensor], layout: GroupLayout) -> torch.Tensor:
    """Inverse of :func:`split_chunks`: a remainder's (1, r, r) matrix padded with zeros."""
    if not layout.remainder:
        return mats[0]
    g, r = layout.group_size, layout.remainder
    rest = torch.nn.functional.pad(mats[-1], (0, g - r, 0, g - r))
    return torch.cat([*mats[:-1], rest]) if layout.num_full else rest


def batch_moments(
    rows: torch.Tensor, layout: GroupLayout
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Float64 mean, centred rows and within-group (biased, 1/m) covariances of (m, d) rows.

    Returns
    -------
    mean : Tensor (d,), float64
    centred : Tensor (m, d), float64
    covs : list of Tensor (count, size, size), float64
        The chunks of :func:`split_chunks`: the full groups, then the remainder group if any.
    """
    mean, centred, cov = padded_moments(rows, layout)
    return mean, centred, split_chunks(cov, layout)


def padded_moments(
    rows: torch.Tensor, layout: GroupLayout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`batch_moments` with the covariances as one (num_groups, g, g) tensor.

    A remainder group's block is its (r, r) covariance padded with zeros: what a sum over
    entries (a decorrelation loss) needs, in one piece.
    """
    x64 = rows.to(STATS_DTYPE)
    mean = x64.mean(dim=0)
    # Centre before the product: E[x x^T] - m m^T cancels catastrophically for a large mean.
    centred = x64 - mean
    return mean, centred, within_group_products(centred, layout) / rows.shape[0]


def apply_blocks(
    centred: torch.Tensor, mats: list[torch.Tensor], layout: GroupLayout, dtype: torch.dtype
) -> torch.Tensor:
    """``y_G = x_G W_G^T`` for every group ``G``, computed in ``dtype``; (m, d) in, (m, d) out."""
    xg = padded_groups(centred.to(dtype), layout).transpose(0, 1)
    y = (xg @ join_chunks(mats, layout).to(dtype).mT).transpose(0, 1).flatten(1)
    return y[:, : layout.num_features] if layout.remainder else y


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
    # Off the training hot path (the layer has its own check), so tested on every device.
    refuse_nonfinite(rows)
    with no_autocast(x.device):
        mean, centred, covs = batch_moments(rows, layout)
        mats = matrices(covs)
        y = apply_blocks(centred, mats, layout, work_dtype(x.dtype))
    return from_rows(y.to(x.dtype), x.shape), mean, covs
