"""Eigen-free group whitening by Newton-Schulz iterations (IterNorm, Huang et al. 2019)."""

from __future__ import annotations

from numbers import Real

import torch

from geomxai._checks import Interval, check
from geomxai.whitening._groups import (
    check_eps,
    check_iters,
    feature_dim,
    resolve_groups,
    whiten_batch,
    work_dtype,
)


def ns_iterations(lower_bound: float, dtype: torch.dtype = torch.float32) -> int:
    """Coupled Newton-Schulz steps that take every eigenvalue in [lower_bound, 1] to ``dtype``.

    In the coupled iteration of :func:`ns_inv_sqrt` every iterate is a polynomial in ``S``, so an
    eigenvalue ``s`` of ``S`` is followed by scalars: with ``x_t = s z_t^2`` the eigenvalue of
    ``Z_t Y_t``, ``x_0 = s`` and ``x_{t+1} = x_t (3 - x_t)^2 / 4``, and ``z_t = s^-1/2 sqrt(x_t)``.
    The map is increasing on [0, 1] and fixes 1, so the smallest eigenvalue is the last to
    arrive, and a bound on it bounds them all. A small ``x`` grows by a factor of about 2.25 per
    step (the linear phase, ``log(1 / lower_bound) / log(2.25)`` steps), then ``e = 1 - x`` falls
    as ``e_{t+1} = e_t^2 (3 + e_t) / 4`` (quadratic convergence, some 5 steps to float32's
    resolution and one more to float64's). The count is that of the scalar map itself, iterated
    here on Python floats: the smallest ``T`` with ``1 - x_T <= finfo(dtype).eps``. Then every
    eigenvalue of ``Z_T`` is ``s^-1/2`` to a relative error ``1 - sqrt(x_T) <= eps / 2``, the
    unit roundoff of ``dtype``: in exact arithmetic the result is the eigh-based inverse root
    rounded to ``dtype``.

    A pure function of its arguments, cheap (some 30 float operations), with no tensor in
    sight: the count costs no host synchronisation and no data-dependent loop on a device.

    Parameters
    ----------
    lower_bound : float
        A lower bound on the eigenvalues of the trace-normalised ``S``, in (0, 1]. For
        ``iters="auto"`` it is ``eps / (m (1 + eps))`` (see :func:`ns_inv_sqrt`).
    dtype : torch.dtype
        The floating dtype whose machine epsilon is the target.

    Returns
    -------
    int
        At least 0 (0 only when ``lower_bound`` is within the tolerance of 1).

    Raises
    ------
    ValueError
        ``lower_bound`` not a finite number in (0, 1].
    TypeError
        ``dtype`` not a floating-point ``torch.dtype``.

    Examples
    --------
    >>> import torch
    >>> bound = 1e-5 / (16 * (1 + 1e-5))  # iters="auto" for groups of 16 at eps=1e-5
    >>> ns_iterations(bound, torch.float32), ns_iterations(bound, torch.float64)
    (22, 23)
    >>> ns_iterations(bound / 4, torch.float32)  # groups of 64: four times lower, two steps more
    24
    """
    check(lower_bound, "lower_bound", Interval(Real, 0, 1, closed="right"))
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype; got dtype={dtype!r}")
    tol = torch.finfo(dtype).eps
    x, steps = float(lower_bound), 0
    # Linear phase on x itself: a product of positive factors, no rounding trouble at any scale.
    while x <= 0.5:
        x = x * (3.0 - x) ** 2 / 4.0
        steps += 1
    # Quadratic phase on e = 1 - x (exact for x > 0.5): 1 - x_t itself would round to 0 once
    # e < 1.1e-16 and so could not resolve float64's tolerance.
    e = 1.0 - x
    while e > tol:
        e = e * e * (3.0 + e) / 4.0
        steps += 1
    return steps


def auto_lower_bound(size: int, eps: float) -> float:
    """Lower bound ``eps / (m (1 + eps))`` on the spectrum of ``S`` under ``iters="auto"``."""
    return eps / (size * (1.0 + eps))


def ns_inv_sqrt(
    cov: torch.Tensor,
    *,
    eps: float,
    iters: int | str,
    target_dtype: torch.dtype | None = None,
) -> torch.Tensor:
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

    ``iters="auto"`` runs it to the precision of ``target_dtype``: exact ZCA with no eigh, no
    host synchronisation and a count fixed before any data is seen. With an absolute ``eps``
    the smallest eigenvalue of ``S`` is ``eps / (tr(C) + m eps)`` in the worst case (a
    rank-deficient ``C``), which depends on the scale of the data, so no static count would fit
    every input. The auto path therefore adds a floor relative to the group's mean variance
    ``v = tr(C) / m`` once that exceeds 1:

        ``Sigma = C + eps max(1, v) I``.

    For groups with ``v <= 1`` (standardised or small-scale features) this is exactly the
    absolute ``eps`` of :func:`zca_whiten`; above, ``eps`` is relative to ``v`` (rescaling such
    a group leaves its whitened output unchanged). Either way every eigenvalue of ``S`` is at least
    ``eps / (m (1 + eps))`` (attained at ``v >= 1`` by a rank-deficient ``C``), whatever the
    data, and the count is :func:`ns_iterations` of that bound: 22 steps for ``m = 16`` and 24
    for ``m = 64`` at ``eps = 1e-5`` to float32's precision, 23 and 25 to float64's. The result
    is the eigh-based ZCA matrix ``(C + eps max(1, v) I)^-1/2`` of the *same* regularised
    covariance, to ``target_dtype``'s unit roundoff in exact arithmetic (rounding in float64
    adds about ``1e-16`` times the condition number of ``Sigma``).

    The backward is autograd through the iterations: the exact derivative of the ``T``-step
    iterate, which tends to that of the inverse root as the iterate converges, with no division
    by eigenvalue gaps (finite at repeated eigenvalues, where the generic eigh backward is not).
    It keeps ``Y``, ``Z`` and ``T`` of every step, ``3 T`` float64 ``(k, m, m)`` matrices: 3.4 MB
    for 25 groups of 16 at ``T = 22``. On one (shared, noisy) CPU thread, forward + backward of
    those 25 matrices took 5.7 ms, against 1.5 ms for 5 steps and 0.95 ms for the batched eigh
    of :func:`zca_whiten`: on the CPU the eigh stays the faster exact path; the auto count is for
    devices where a host synchronisation, not arithmetic, bounds a step (not measured there).

    Parameters
    ----------
    cov : Tensor (..., m, m)
        Symmetric positive semi-definite covariances.
    eps : float
        Regularisation: absolute (``C + eps I``) for an int ``iters``; ``eps max(1, tr(C)/m)``
        for ``"auto"``.
    iters : int or "auto"
        Number of steps, or ``"auto"`` for the static count above.
    target_dtype : torch.dtype or None
        The dtype whose precision ``"auto"`` reaches (the dtype the matrices are applied in);
        ``None`` means ``cov.dtype``. Ignored for an int ``iters``.

    Returns
    -------
    Tensor (..., m, m), dtype of ``cov``
    """
    m = cov.shape[-1]
    eye = torch.eye(m, dtype=cov.dtype, device=cov.device)
    if iters == "auto":
        # clamp_min keeps the floor on the device: no host read of the trace.
        mean_var = cov.diagonal(dim1=-2, dim2=-1).sum(-1) / m
        floor = eps * mean_var.clamp_min(1.0)[..., None, None]
        sigma = cov + floor * eye
        steps = ns_iterations(
            auto_lower_bound(m, eps), cov.dtype if target_dtype is None else target_dtype
        )
    else:
        sigma = cov + eps * eye
        steps = iters
    trace = sigma.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    y = sigma / trace
    z = eye.expand_as(y)
    for _ in range(steps):
        t = 1.5 * eye - 0.5 * (z @ y)
        y = y @ t
        z = t @ z
    return z / trace.sqrt()


def newton_schulz_whiten(
    x: torch.Tensor, *, group_size: int | None = None, iters: int | str = 5, eps: float = 1e-5
) -> torch.Tensor:
    """Group-wise whitening with the IterNorm Newton-Schulz approximation of ``(C + eps I)^-1/2``.

    Same contract as :func:`zca_whiten` (groups, remainder, dtypes, autocast) but computed with
    matrix products only, which suits GPUs and has no eigenvalue-gap issue in the backward. It
    approaches ZCA as ``iters`` grows; IterNorm uses ``iters=5``. ``iters="auto"`` runs it to
    the precision of the dtype the matrices are applied in (float32, or float64 for float64
    input), with a count fixed by the group size and ``eps`` alone, and so *is* ZCA, of
    ``C + eps max(1, tr(C)/m) I`` per group of ``m`` features (see :func:`ns_inv_sqrt`): equal
    to :func:`zca_whiten` with the same ``eps`` for groups of mean variance at most 1.

    Parameters
    ----------
    x : Tensor (n, d) or (n, c, *spatial)
        Features; channels (dim 1) are whitened for conv maps.
    group_size : int or None
        Size of the groups of consecutive features; ``None`` means one group.
    iters : int or "auto"
        Newton-Schulz iterations, at least 1, or ``"auto"`` (:func:`ns_iterations`).
    eps : float
        Added to the covariance diagonal before normalising by its trace; under ``"auto"`` in
        units of ``max(1, mean variance of the group)``.

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

    Run to precision, it is ZCA (here the mean variance is below 1, so the floor is ``eps``):

    >>> x = x / 4
    >>> bool((newton_schulz_whiten(x, iters="auto") - zca_whiten(x)).abs().max() < 1e-12)
    True
    """
    eps = check_eps(eps)
    iters = check_iters(iters)
    layout = resolve_groups(feature_dim(x), group_size)
    target = work_dtype(x.dtype)
    y, _, _ = whiten_batch(
        x,
        layout,
        lambda covs: [ns_inv_sqrt(c, eps=eps, iters=iters, target_dtype=target) for c in covs],
    )
    return y
