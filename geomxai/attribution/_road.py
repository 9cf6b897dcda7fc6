"""ROAD's noisy linear imputation (Rong et al. 2022) of masked positions.

:func:`road_impute` solves ROAD's system on image batches; :func:`impute_road` applies it to any
layout of :mod:`geomxai.attribution._layout` that has neighbours (a sequence is an image one
pixel high). The masking and the deletion/insertion curves both fill with it; it depends on
neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from geomxai.attribution._layout import Layout

# ROAD's neighbour weights (Rong et al. 2022): 1/6 for the 4 direct neighbours, 1/12 for the
# 4 diagonal ones; they sum to 1 for an interior pixel.
_ROAD_KERNEL = torch.tensor(
    [[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], dtype=torch.float64
)


def _neighbour_sum(v: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    c = v.shape[1]
    # Zero padding: neighbours outside the image do not exist (ROAD drops them, no wrap-around).
    return F.conv2d(v, kernel.expand(c, 1, 3, 3), padding=1, groups=c)


def road_impute(
    x: torch.Tensor,
    mask: torch.Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    tol: float = 1e-6,
    max_iter: int | None = None,
) -> torch.Tensor:
    """ROAD noisy linear imputation (Rong et al. 2022), batched on the tensors' device.

    Every removed pixel takes the weighted mean of its in-image neighbours (weights 1/6 direct,
    1/12 diagonal), removed neighbours included as unknowns; this is the sparse linear system
    ``D_i v_i - sum_{j removed} w_ij v_j = sum_{j kept} w_ij x_j`` over removed pixels, one per
    image and channel. The system is symmetric positive definite wherever a connected region of
    removed pixels touches a kept pixel, so it is solved matrix-free by Jacobi-preconditioned
    conjugate gradients (all images and channels at once, convolutions for the products), which
    needs O(size) iterations where plain Jacobi sweeps need O(size^2). A removed region with no
    kept neighbour at all (the whole image, for instance) has no unique solution; it keeps the
    mean of the image's kept pixels (0 if none). Gaussian noise of standard deviation ``noise``
    is then added to the imputed pixels, as ROAD does.

    Parameters
    ----------
    x : Tensor (n, c, h, w)
    mask : Tensor (n, 1 or c, h, w), bool
        True where a pixel is removed.
    noise : float
        Standard deviation of the added noise, in the units of ``x`` (ROAD's default 0.01).
    generator : torch.Generator or None
    tol : float
        Relative residual at which the iteration stops.
    max_iter : int or None
        Iteration cap; None means ``4 * max(h, w)``.

    Returns
    -------
    Tensor (n, c, h, w)
        ``x`` with the removed pixels imputed.
    """
    m = mask.expand_as(x).to(x.dtype)
    keep = 1.0 - m
    kernel = _ROAD_KERNEL.to(device=x.device, dtype=x.dtype).view(1, 1, 3, 3)
    diag = _neighbour_sum(torch.ones_like(x[:, :1]), kernel).expand_as(x)
    b = _neighbour_sum(x * keep, kernel) * m
    kept = keep.sum(dim=(2, 3), keepdim=True)
    start = (x * keep).sum(dim=(2, 3), keepdim=True) / kept.clamp_min(1.0)
    v = start.expand_as(x) * m

    def apply(u):  # A u on the removed pixels, 0 elsewhere
        return (diag * u - _neighbour_sum(u, kernel)) * m

    def dot(a, c):
        return (a * c).sum(dim=(2, 3), keepdim=True)

    r = b - apply(v)
    z = r / diag
    p = z
    rz = dot(r, z)
    rz0 = rz.clamp_min(torch.finfo(x.dtype).tiny)
    iters = max_iter if max_iter is not None else 4 * max(x.shape[2], x.shape[3])
    for it in range(iters):
        ap = apply(p)
        pap = dot(p, ap)
        alpha = torch.where(pap > 0, rz / torch.where(pap > 0, pap, 1.0), 0.0)
        v = v + alpha * p
        r = r - alpha * ap
        z = r / diag
        rz_new = dot(r, z)
        beta = torch.where(rz > 0, rz_new / torch.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta * p
        rz = rz_new
        # One host sync every 8 iterations to stop early.
        if it % 8 == 7 and bool((rz <= (tol**2) * rz0).all()):
            break
    if noise > 0:
        v = v + noise * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(m.bool(), v, x)


def _road_impute_scipy(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reference: ROAD's system for one image (c, h, w) and mask (h, w), scipy sparse solve.

    Noise-free; used by the tests and as a readable statement of the system.
    """
    from scipy.sparse import lil_matrix
    from scipy.sparse.linalg import spsolve

    c, h, w = image.shape
    idx = -np.ones((h, w), dtype=np.int64)
    removed = np.argwhere(mask)
    idx[mask] = np.arange(len(removed))
    a = lil_matrix((len(removed), len(removed)))
    rhs = np.zeros((len(removed), c))
    k = _ROAD_KERNEL.numpy()
    for e, (i, j) in enumerate(removed):
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                wgt = k[di + 1, dj + 1]
                ii, jj = i + di, j + dj
                if wgt == 0 or not (0 <= ii < h and 0 <= jj < w):
                    continue
                a[e, e] += wgt
                if mask[ii, jj]:
                    a[e, idx[ii, jj]] -= wgt
                else:
                    rhs[e] += wgt * image[:, ii, jj]
    sol = spsolve(a.tocsc(), rhs).reshape(len(removed), c)
    out = image.copy()
    out[:, mask] = sol.T
    return out


def impute_road(
    x: torch.Tensor,
    mask: torch.Tensor,
    layout: Layout,
    *,
    noise: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """ROAD imputation of the masked positions; a sequence is an image one pixel high.

    With no neighbour above or below, ROAD's system along a sequence makes each removed step
    the mean of its two neighbours in time: linear interpolation between kept steps.
    """
    if layout.kind == "image":
        return road_impute(x, mask, noise=noise, generator=generator)
    return road_impute(x[:, :, None], mask[:, :, None], noise=noise, generator=generator)[:, :, 0]
