"""The one finite check and the one dead-unit threshold, for every public boundary.

A leaf module (numpy and torch only, nothing of geomxai, no xarray), so the torch-only parts
(:mod:`geomxai.whitening`, the trainer) use the same check as the metrics without importing
what the metrics need. :mod:`geomxai._features` re-exports both.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["DEAD_UNIT_TOL", "check_finite", "live_units"]

_FINITE_HINT = "a diverged checkpoint or an unfilled buffer upstream?"


def check_finite(array, *, name: str, hint: str | None = None) -> None:
    """Raise a ValueError that counts the NaN/inf entries of ``array``, if there are any.

    The one finite check of geomxai's public boundaries. ``array`` is a numpy array or a torch
    tensor (any device): a tensor is tested where it lies and only one flag (then, on failure,
    one count) comes back to the host. On a GPU that read is a synchronisation, so functions on
    a training hot path decide themselves whether to call this (see
    :class:`geomxai.whitening.GroupWhitening`). ``hint`` says what to do about it; the default
    suits features and matrices.

    Examples
    --------
    >>> check_finite(np.array([1.0, np.nan, np.inf]), name="x")
    Traceback (most recent call last):
    ...
    ValueError: x contains 2 NaN or infinite value(s) out of 3; expected finite values (a diverged checkpoint or an unfilled buffer upstream?)
    >>> check_finite(torch.tensor([0.0, float("nan")]), name="x", hint="drop that image")
    Traceback (most recent call last):
    ...
    ValueError: x contains 1 NaN or infinite value(s) out of 2; expected finite values (drop that image)
    """
    if isinstance(array, torch.Tensor):
        if not array.is_floating_point() and not array.is_complex():
            return  # integers and booleans are always finite
        finite = torch.isfinite(array)
        if bool(finite.all()):
            return
        size, bad = array.numel(), int(array.numel() - finite.sum())
    else:
        finite = np.isfinite(array)
        if finite.all():
            return
        size, bad = array.size, int(array.size - np.count_nonzero(finite))
    raise ValueError(
        f"{name} contains {bad} NaN or infinite value(s) out of {size}; expected finite "
        f"values ({hint or _FINITE_HINT})"
    )


DEAD_UNIT_TOL = 1e-8
"""Relative variance at or below which a unit is dead: ``var_i <= DEAD_UNIT_TOL * max_j var_j``.

The one threshold every metric that leaves dead units out uses: the correlation spectrum and its
summaries (:mod:`geomxai.geometry`) and gradient entanglement (:mod:`geomxai.attribution`). On
variances, so 1e-8 is a standard-deviation ratio of 1e-4: well above float32 rounding of a
constant unit (a ReLU that never fires, a constant channel), well below any unit that carries
signal at the layer's scale."""


def live_units(variances, *, tol: float = DEAD_UNIT_TOL) -> np.ndarray:
    """Boolean mask (d,) of the units whose variance exceeds ``tol`` times the largest.

    The scale of ``variances`` does not matter (``n`` or ``n - 1`` in the denominator, or sums
    of squares); when every variance is 0 no unit is live.

    Examples
    --------
    >>> live_units(np.array([4.0, 1e-9, 0.0, 1e-7])).tolist()
    [True, False, False, True]
    """
    var = np.asarray(variances, dtype=np.float64)
    top = var.max() if var.size else 0.0
    if not top > 0:
        return np.zeros(var.shape, dtype=bool)
    return var > tol * top
