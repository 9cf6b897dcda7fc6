"""Group-wise ZCA whitening through one batched eigendecomposition with a safe backward."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch
from torch.autograd.function import once_differentiable

from geomxai.whitening._groups import check_eps, feature_dim, resolve_groups, whiten_batch

# Relative sizes of the diagonal shifts tried when eigh fails to converge (see _safe_eigh).
_SHIFTS = (1e-12, 1e-9, 1e-6)

EighRoutine = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
_EIGH: contextvars.ContextVar[EighRoutine | None] = contextvars.ContextVar(
    "geomxai_whitening_eigh", default=None
)


@contextlib.contextmanager
def eigh_routine(fn: EighRoutine) -> Iterator[None]:
    """Decompose ZCA's covariances with ``fn`` instead of ``torch.linalg.eigh`` inside the block.

    For measuring or choosing the eigendecomposition route on a device (cuSOLVER, MAGMA, the
    host's LAPACK, a lower precision): within the ``with`` block (in this thread or task) every
    ZCA matrix that :func:`inv_sqrt_psd`, :func:`zca_whiten` and ``GroupWhitening(method="zca")``
    compute starts from ``fn(sym)``. The fallbacks for a decomposition that does not converge
    (diagonal shifts, a CPU retry) are unchanged and still use ``torch.linalg.eigh``.

    Parameters
    ----------
    fn : callable (Tensor (..., m, m)) -> (Tensor (..., m), Tensor (..., m, m))
        Eigenvalues in ascending order and orthonormal eigenvectors (as columns) of a batch of
        symmetric matrices, with the input's dtype and device, like ``torch.linalg.eigh``; it
        raises ``torch.linalg.LinAlgError`` when it does not converge.

    Yields
    ------
    None

    Examples
    --------
    >>> import torch
    >>> from geomxai.whitening import eigh_routine, inv_sqrt_psd
    >>> def host(sym):
    ...     evals, evecs = torch.linalg.eigh(sym.cpu())
    ...     return evals.to(sym.device), evecs.to(sym.device)
    >>> with eigh_routine(host):
    ...     w = inv_sqrt_psd(torch.eye(2, dtype=torch.float64)[None] * 4.0, 0.0)
    >>> w[0].diagonal().tolist()
    [0.5, 0.5]
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable like torch.linalg.eigh; got {type(fn).__name__}")
    token = _EIGH.set(fn)
    try:
        yield
    finally:
        _EIGH.reset(token)


def _safe_eigh(sym: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` with fallbacks for the rare case where it does not converge.

    Adding ``s * I`` moves every eigenvalue by ``s`` and leaves the eigenvectors unchanged, so a
    shifted problem gives the same decomposition once ``s`` is subtracted again, while changing the
    floating-point path the solver takes (the usual remedy for LAPACK/cuSOLVER non-convergence on
    clustered spectra). After that, a tiny symmetric perturbation, and last the CPU LAPACK solver
    (a different algorithm from cuSOLVER's batched Jacobi).
    """
    routine = _EIGH.get()
    try:
        return torch.linalg.eigh(sym) if routine is None else routine(sym)
    except torch.linalg.LinAlgError:
        pass
    if not bool(torch.isfinite(sym).all()):
        raise FloatingPointError(
            "the covariance to whiten contains NaN or inf; check the input features "
            "(they must be finite)"
        )
    m = sym.shape[-1]
    eye = torch.eye(m, dtype=sym.dtype, device=sym.device)
    # Per matrix scale: mean absolute diagonal, floored so an all-zero block still moves.
    scale = sym.diagonal(dim1=-2, dim2=-1).abs().mean(-1).clamp_min(1.0)[..., None, None]
    for rel in _SHIFTS:
        shift = rel * scale
        try:
            evals, evecs = torch.linalg.eigh(sym + shift * eye)
            return evals - shift[..., 0], evecs
        except torch.linalg.LinAlgError:
            continue
    gen = torch.Generator(device="cpu").manual_seed(0)
    noise = torch.randn(sym.shape, generator=gen, dtype=sym.dtype).to(sym.device)
    try:
        return torch.linalg.eigh(sym + 1e-9 * scale * 0.5 * (noise + noise.mT))
    except torch.linalg.LinAlgError:
        pass
    if sym.device.type != "cpu":
        try:
            evals, evecs = torch.linalg.eigh(sym.cpu())
            return evals.to(sym.device), evecs.to(sym.device)
        except torch.linalg.LinAlgError:
            pass
    raise torch.linalg.LinAlgError(
        f"eigh did not converge on a batch of {tuple(sym.shape)} covariance matrices, even after "
        f"diagonal shifts of {_SHIFTS} times their scale and a CPU retry"
    )


class _InvSqrtPSD(torch.autograd.Function):
    """``W = (C + eps I)^-1/2 = U diag((l + eps)^-1/2) U^T`` for a batch of symmetric PSD ``C``.

    The backward uses the Daleckii-Krein formula for a spectral function ``F(C) = U f(L) U^T``:
    ``dC = U (K * (U^T sym(dW) U)) U^T`` with ``K_ij = (f(l_i) - f(l_j)) / (l_i - l_j)`` and
    ``K_ii = f'(l_i)``. For ``f(l) = (l + eps)^-1/2`` and ``a_i = sqrt(l_i + eps)`` the divided
    difference has the closed form ``K_ij = -1 / (a_i a_j (a_i + a_j))``: no subtraction, so no
    cancellation, and it equals ``f'(l_i) = -a_i^-3 / 2`` when ``l_i = l_j``. Repeated eigenvalues
    (dead or duplicated units, fewer samples than features) therefore give finite gradients, where
    the generic eigh backward divides by ``l_i - l_j`` and returns inf or NaN.
    """

    @staticmethod
    def forward(ctx, cov: torch.Tensor, eps: float) -> torch.Tensor:
        # eigh reads one triangle only; symmetrising makes the function (and the gradient that
        # gradcheck sees for a non-symmetric perturbation) well defined.
        sym = 0.5 * (cov + cov.mT)
        evals, evecs = _safe_eigh(sym)
        # A PSD matrix can come out with eigenvalues of -1e-16 * scale; they are zeros.
        root = (evals.clamp_min(0.0) + eps).sqrt()
        ctx.save_for_backward(root, evecs)
        return (evecs / root.unsqueeze(-2)) @ evecs.mT

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_w: torch.Tensor) -> tuple[torch.Tensor, None]:
        root, evecs = ctx.saved_tensors
        ai = root.unsqueeze(-1)
        aj = root.unsqueeze(-2)
        divided = -1.0 / (ai * aj * (ai + aj))
        inner = evecs.mT @ (0.5 * (grad_w + grad_w.mT)) @ evecs
        return evecs @ (divided * inner) @ evecs.mT, None


def inv_sqrt_psd(cov: torch.Tensor, eps: float) -> torch.Tensor:
    """ZCA matrices ``(C + eps I)^-1/2`` of a batch (..., m, m) of covariances; safe gradients.

    The matrix function under :func:`zca_whiten`, from one batched ``eigh`` (see
    :func:`eigh_routine` to choose its route). The backward is the Daleckii-Krein formula in a
    closed form with no division by eigenvalue gaps, so repeated and zero eigenvalues give finite
    gradients (first order only).

    Parameters
    ----------
    cov : Tensor (..., m, m)
        Symmetric positive semi-definite matrices (only their symmetric part is used); float64
        for the precision ``zca_whiten`` has.
    eps : float
        Added to every eigenvalue (negative round-off eigenvalues count as 0).

    Returns
    -------
    Tensor (..., m, m), dtype of ``cov``
    """
    return _InvSqrtPSD.apply(cov, eps)


def zca_matrices(covs: list[torch.Tensor], *, eps: float) -> list[torch.Tensor]:
    """ZCA matrices of each chunk of equal-size groups, from *one* batched eigendecomposition.

    A remainder group's (1, r, r) covariance ``C_r`` is embedded as the block-diagonal
    ``diag(C_r, I)`` of the full groups' size and decomposed with them. A spectral function of a
    block-diagonal matrix is the block-diagonal of the function of the blocks, so the top-left
    ``r x r`` block of the result is exactly ``(C_r + eps I)^-1/2`` (and its gradient exactly that
    of ``C_r``, the Daleckii-Krein form being basis-free), whatever eigenvectors the solver picks
    where the two blocks share an eigenvalue. It saves a second ``eigh`` with its host sync and
    the launches of a second forward and backward: on a GPU a step is bound by those.
    """
    if len(covs) == 1:
        return [inv_sqrt_psd(covs[0], eps)]
    full, rest = covs
    g, r = full.shape[-1], rest.shape[-1]
    embedded = torch.eye(g, dtype=rest.dtype, device=rest.device).repeat(rest.shape[0], 1, 1)
    embedded[:, :r, :r] = rest
    mats = inv_sqrt_psd(torch.cat([full, embedded]), eps)
    return [mats[: full.shape[0]], mats[full.shape[0] :, :r, :r]]


def zca_whiten(
    x: torch.Tensor, *, group_size: int | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Group-wise ZCA whitening with batch statistics.

    For each group ``G`` of consecutive features, with batch mean ``mu_G`` and biased covariance
    ``C_G = U diag(l) U^T``, returns ``(x_G - mu_G) U diag((l + eps)^-1/2) U^T``. All full groups
    share one batched ``eigh``; a remainder group (``d % group_size`` features) is whitened alone,
    so a 1-feature remainder is standardised, ``(x - mu) / sqrt(var + eps)``.

    Statistics and eigendecomposition run in float64 and with autocast off; the matrix is applied
    in float32 (float64 for float64 input) and the result is cast back to ``x.dtype``. Gradients
    are finite for dead, duplicated and rank-deficient features (see ``docs/whitening.md``); the
    backward is first-order only (no ``create_graph`` through batch statistics).

    Parameters
    ----------
    x : Tensor (n, d) or (n, c, *spatial)
        Features; for conv maps the channels (dim 1) are whitened over ``n * prod(spatial)`` rows.
    group_size : int or None
        Size ``g`` of the groups, ``2 <= g <= d``; ``None`` whitens all ``d`` features together.
    eps : float
        Added to every eigenvalue, in units of feature variance: directions with variance well
        below ``eps`` are not blown up to unit variance.

    Returns
    -------
    Tensor, shape and dtype of ``x``
        Whitened features; within each group the batch covariance is ``I`` up to ``eps``.

    Raises
    ------
    ValueError
        NaN or inf in ``x`` (counted in the message), on every device: batch statistics over
        them would make every output row NaN. Not a training hot path, so the one flag read
        back costs no more than the ``eigh`` that follows.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(500, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    >>> y = zca_whiten(x, group_size=3, eps=1e-12)
    >>> cov = y.T @ y / len(y)
    >>> torch.allclose(cov[:3, :3], torch.eye(3, dtype=torch.float64), atol=1e-8)
    True
    >>> bool(cov[:3, 3:].abs().max() > 0.01)  # groups are whitened independently
    True
    """
    eps = check_eps(eps)
    layout = resolve_groups(feature_dim(x), group_size)
    y, _, _ = whiten_batch(x, layout, lambda covs: zca_matrices(covs, eps=eps))
    return y
