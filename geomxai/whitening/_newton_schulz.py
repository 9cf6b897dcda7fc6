"""Eigen-free group whitening by Newton-Schulz iterations (IterNorm, Huang et al. 2019)."""

from __future__ import annotations

import torch

from geomxai.whitening._groups import (
    check_eps,
    check_iters,
    feature_dim,
    resolve_groups,
    whiten_batch,
)


def ns_inv_sqrt(cov: torch.Tensor, *, eps: float, iters: int) -> torch.Tensor:
    """IterNorm whitening matrices of a batch (..., m, m) of covariances; matmuls only.

    ``Sigma = C + eps I``, ``S = Sigma / tr(Sigma)``, ``P_0 = I``,
    ``P_{t+1} = 1.5 P_t - 0.5 P_t^3 S``, ``W = P_T / sqrt(tr(Sigma))``. Normalising by the trace
    puts the spectrum of ``S`` in (0, 1], where the iteration converges to ``S^-1/2`` for every
    eigenvalue; with few iterations small eigenvalues are only partly inverted, which makes the
    output a damped ("partial") whitening rather than a failure.

    The recurrence is evaluated in its coupled form (Higham, *Functions of Matrices*, 2008,
    eq. 6.35): ``Y_0 = S``, ``Z_0 = I``, ``T = 1.5 I - 0.5 Z_t Y_t``, ``Y_{t+1} = Y_t T``,
    ``Z_{t+1} = T Z_t``. In exact arithmetic ``Y_t = S Z_t`` and ``Z_t = P_t`` (all are polynomials
    in ``S``), so it is IterNorm's iteration with the same three products per step; but the
    uncoupled ``P^3 S`` form amplifies rounding errors once the eigenvalue ratio of ``S`` exceeds
    about 2.4 (its linearisation has factor ``1 - (r + r^2) / 2``, ``r = sqrt(l_j / l_i)``) and
    diverges after a few tens of steps, while the coupled form is stable and keeps converging.
    """
    m = cov.shape[-1]
    eye = torch.eye(m, dtype=cov.dtype, device=cov.device)
    sigma = cov + eps * eye
    trace = sigma.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    y = sigma / trace
    z = eye.expand_as(y)
    for _ in range(iters):
        t = 1.5 * eye - 0.5 * (z @ y)
        y = y @ t
        z = t @ z
    return z / trace.sqrt()


def newton_schulz_whiten(
    x: torch.Tensor, *, group_size: int | None = None, iters: int = 5, eps: float = 1e-5
) -> torch.Tensor:
    """Group-wise whitening with the IterNorm Newton-Schulz approximation of ``(C + eps I)^-1/2``.

    Same contract as :func:`zca_whiten` (groups, remainder, dtypes, autocast) but computed with
    matrix products only, which suits GPUs and has no eigenvalue-gap issue in the backward. It
    approaches ZCA as ``iters`` grows; IterNorm uses ``iters=5``.

    Parameters
    ----------
    x : Tensor (n, d) or (n, c, *spatial)
        Features; channels (dim 1) are whitened for conv maps.
    group_size : int or None
        Size of the groups of consecutive features; ``None`` means one group.
    iters : int
        Newton-Schulz iterations, at least 1.
    eps : float
        Added to the covariance diagonal before normalising by its trace.

    Returns
    -------
    Tensor, shape and dtype of ``x``

    Raises
    ------
    ValueError
        NaN or inf in ``x``, on every device, as :func:`zca_whiten`.

    Examples
    --------
    >>> import torch
    >>> from geomxai.whitening import zca_whiten
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(400, 4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0, 4.0])
    >>> err = [(newton_schulz_whiten(x, iters=t) - zca_whiten(x)).abs().max() for t in (2, 8, 30)]
    >>> bool(err[0] > err[1] > err[2]) and bool(err[2] < 1e-8)
    True
    """
    eps = check_eps(eps)
    iters = check_iters(iters)
    layout = resolve_groups(feature_dim(x), group_size)
    y, _, _ = whiten_batch(
        x, layout, lambda covs: [ns_inv_sqrt(c, eps=eps, iters=iters) for c in covs]
    )
    return y
