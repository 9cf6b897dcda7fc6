"""Decorrelation penalties on a batch of features (the ``L_decor`` term of SaliencyDecor)."""

from __future__ import annotations

import torch

from geomxai.whitening._groups import (
    STATS_DTYPE,
    batch_moments,
    check_choice,
    check_eps,
    check_rows,
    no_autocast,
    padded_moments,
    refuse_nonfinite,
    resolve_groups,
    to_rows,
    work_dtype,
)
from geomxai.whitening._layer import GroupWhitening

DECORRELATION_KINDS = ("offdiag", "covariance", "whitened")


def _offdiag_sq_sum(mat: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal entries over a batch (..., m, m)."""
    sq = mat.square()
    return sq.sum() - sq.diagonal(dim1=-2, dim2=-1).sum()


def _rescaled_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows / 2**k`` in float64 with their largest magnitude in [0.5, 1), and ``k``.

    Powers of two scale exactly, so a statistic computed on these and scaled back by
    :func:`_scaled_back` is the one of ``rows``, but its sums of squares stay finite for
    features at any finite scale (at 1e77 a covariance's squares overflow to inf, and the
    difference of two infinite sums is NaN). ``k`` is computed on the device: no host
    synchronisation.
    """
    x64 = rows.to(STATS_DTYPE)
    # 2**-k is exact for these k (2**1000 bounds the factor for subnormal features).
    k = torch.frexp(x64.detach().abs().amax()).exponent.to(STATS_DTYPE).clamp_min(-1000.0)
    return x64 * torch.exp2(-k), k


def _scaled_back(value: torch.Tensor, k: torch.Tensor, power: int) -> torch.Tensor:
    """``value * 2**(power * k)``, exactly, and ``inf`` (never NaN) where that overflows.

    In two halves of ``k`` per power: ``2**k`` itself overflows for ``k = 1024`` (features
    near float64's largest value), and ``0 * inf`` would be NaN.
    """
    low = torch.floor(k / 2)
    for _ in range(power):
        value = value * torch.exp2(low) * torch.exp2(k - low)
    return value


def _scale_free_rows(rows: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_rescaled_rows` and ``eps / 4**k``: the correlations of ``offdiag`` are the same
    for these, so nothing is scaled back."""
    x64, k = _rescaled_rows(rows)
    factor = torch.exp2(-k)
    return x64, eps * factor * factor


def _refuse_overflow(loss: torch.Tensor, rows: torch.Tensor, kind: str) -> None:
    """A loss that is not scale-free and overflows its dtype at these features' scale: refused on
    the CPU, naming the scale and the fix (on an accelerator reading the loss would synchronise
    every step; it is then inf, never NaN, and the trainer stops on it)."""
    try:
        # The package's one CPU-only finite check, which the training step may make.
        refuse_nonfinite(loss, name="the loss", on_accelerator=False)
    except ValueError:
        pass
    else:
        return
    scale = float(rows.detach().abs().amax())
    dtype = str(loss.dtype).removeprefix("torch.")
    raise ValueError(
        f"decorrelation_loss(kind={kind!r}) overflows {dtype} for features of magnitude up to "
        f"{scale:.3g}: it grows with the 4th power of their scale. Rescale the features, or "
        "use kind='offdiag', which is scale-free"
    )


def decorrelation_loss(
    h: torch.Tensor,
    *,
    group_size: int | None = None,
    kind: str = "offdiag",
    eps: float = 1e-5,
    whitening: GroupWhitening | None = None,
) -> torch.Tensor:
    """Penalty on the within-group correlation of a batch of features; 0 when uncorrelated.

    Statistics are the batch mean and the biased (``1/n``) covariance ``C`` of each group of
    ``group_size`` consecutive features (a remainder group of ``d % group_size`` features is its own
    group), computed in float64 with autocast off.

    ``kind="offdiag"`` (the SaliencyDecor default)
        ``mean_{G, i != j in G} R_ij^2`` with ``R_ij = C_ij / sqrt((C_ii + eps)(C_jj + eps))``: the
        mean squared off-diagonal correlation, pooled over all within-group pairs (the mean over
        groups when they have equal size). A mean of quantities in [0, 1], it has the same scale
        at any width and group size, so a weight of 0.001-0.01 means the same everywhere. ``eps``
        keeps the gradient finite at dead units (a plain ``C_ij / sqrt(C_ii C_jj)`` has an infinite
        one); units with variance well below ``eps`` count as uncorrelated. Computed on the
        features and ``eps`` divided by powers of two near the features' largest magnitude
        (exact), so features at any finite scale (1e200) give the true value.
    ``kind="covariance"``
        DeCov (Cogswell et al., ICLR 2016): ``0.5 * (||C||_F^2 - ||diag C||^2)`` summed over groups
        (over the whole matrix when ``group_size=None``). Not scale-free: it grows with the feature
        scale (4th power) and with the number of pairs.
    ``kind="whitened"``
        ``mean_{G, i, j in G} (W_G C'_G W_G^T - I)_ij^2`` where ``W_G`` is the eval-time (running)
        whitening matrix of ``whitening`` (no gradient flows into it) and ``C'`` the unbiased batch
        covariance: how far the batch is from white under the fixed transform used at inference.
        It is 0 when the batch covariance matches the running one (up to ``eps``); it pulls batches
        towards the running statistics rather than decorrelating the raw features.

    Parameters
    ----------
    h : Tensor (n, d) or (n, c, *spatial)
        Features (pre-whitening for ``offdiag`` and ``covariance``); channels for conv maps.
    group_size : int or None
        Group size ``2 <= g <= d``; ``None`` for one group. For ``kind="whitened"`` it defaults to
        (and must match) ``whitening.group_size``.
    kind : {"offdiag", "covariance", "whitened"}
    eps : float
        Variance floor of the correlation (``offdiag``).
    whitening : GroupWhitening, optional
        Required for ``kind="whitened"``, ignored otherwise.

    Returns
    -------
    Tensor ()
        Scalar, differentiable with respect to ``h``; float64 for float64 input, else float32.

    Raises
    ------
    ValueError
        NaN or inf in ``h`` on the CPU (the message counts them). On an accelerator ``h`` is
        not tested, because reading the result would synchronise every training step; the loss
        is then non-finite, which :func:`geomxai.train.train` stops on.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> z = torch.randn(10000, 2)
    >>> h = torch.cat([z[:, :1], 0.6 * z[:, :1] + 0.8 * z[:, 1:]], dim=1)  # correlation 0.6
    >>> round(decorrelation_loss(h).item(), 2)
    0.36
    """
    kind = check_choice("kind", kind, DECORRELATION_KINDS)
    eps = check_eps(eps)
    rows = to_rows(h, name="h")
    if kind == "whitened":
        if not isinstance(whitening, GroupWhitening):
            raise ValueError(
                "kind='whitened' needs whitening=<GroupWhitening> (its running statistics define "
                f"the target); got whitening={type(whitening).__name__}"
            )
        if group_size is not None and group_size != whitening.group_size:
            raise ValueError(
                "group_size must match whitening.group_size for kind='whitened'; "
                f"got group_size={group_size} for whitening.group_size={whitening.group_size}"
            )
        layout = whitening.layout
    else:
        layout = resolve_groups(rows.shape[-1], group_size)
    check_rows(rows, layout.num_features, name="h")
    # Once per training step: refused on the CPU; on an accelerator not tested (a host sync per
    # step), where NaN/inf features give a non-finite loss that the trainer stops on.
    refuse_nonfinite(rows, name="h", on_accelerator=False)

    features = rows
    with no_autocast(h.device):
        if kind == "offdiag":
            rows, eps = _scale_free_rows(rows, eps)
        else:
            # Not scale-free: computed on rescaled features and scaled back, so a finite true
            # value is found at any scale and one beyond float64 is inf, not inf - inf = NaN.
            rows, k = _rescaled_rows(rows)
        if kind != "whitened":
            # One (num_groups, g, g) batch; a remainder group's zero padding adds nothing to
            # either sum (its off-diagonal entries are 0, so are their correlations).
            _, _, cov = padded_moments(rows, layout)
        if kind == "offdiag":
            inv_std = (cov.diagonal(dim1=-2, dim2=-1) + eps).rsqrt()
            corr = cov * inv_std[..., :, None] * inv_std[..., None, :]
            loss = _offdiag_sq_sum(corr) / layout.num_within_pairs()
        elif kind == "covariance":
            loss = _scaled_back(0.5 * _offdiag_sq_sum(cov), k, 4)
        else:
            _, _, covs = batch_moments(rows, layout)
            total = covs[0].new_zeros(())
            with torch.no_grad():
                mats = whitening._matrices(whitening._running_covs())
            m = rows.shape[0]
            unbiased = m / (m - 1) if m > 1 else 1.0
            for cov, w in zip(covs, mats, strict=True):
                eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
                w = w.to(cov.device)
                white = _scaled_back(w @ (cov * unbiased) @ w.mT, k, 2)
                total = total + (white - eye).square().sum()
            loss = total / layout.num_within_entries()
    loss = loss.to(work_dtype(h.dtype))
    if kind != "offdiag":
        _refuse_overflow(loss, features, kind)
    return loss
