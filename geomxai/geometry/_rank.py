"""Effective rank and participation ratio of a feature layer."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from geomxai.geometry._input import as_features, covariance_eigenvalues, gram_matrix

_METHODS = ("covariance", "rankme")


def _entropy_rank(p: np.ndarray) -> float:
    # 0 log 0 = 0: zero eigenvalues (rank-deficient features) add nothing to the entropy.
    nz = p[p > 0]
    return float(np.exp(-np.sum(nz * np.log(nz))))


def effective_rank(
    features,
    *,
    method: Literal["covariance", "rankme"] = "covariance",
    eps: float = 1e-7,
) -> float:
    """Effective rank: the exponential of the entropy of the normalised spectrum.

    ``method="covariance"`` (the default, the paper's and design.md's definition, after Roy &
    Vetterli 2007) uses the eigenvalues ``l_i`` of the covariance of the centred features:
    ``p_i = l_i / sum(l)``, ``erank = exp(-sum p_i log p_i)``, in ``[1, d]``.

    ``method="rankme"`` follows RankMe (Garrido et al. 2023): singular values ``s_k`` of the
    *uncentred* feature matrix, ``p_k = s_k / sum(s) + eps``. Singular values are square roots of
    the eigenvalues of the (uncentred) second moment, so the two methods give different numbers on
    the same features; they are not interchangeable.

    Parameters
    ----------
    features : array (n, d), Tensor (n, d), DataArray (sample, unit_*) or FeatureMoments
        Samples in rows, units in columns. With n < d the n x n Gram matrix is decomposed instead
        of the d x d covariance (they share their non-zero eigenvalues).
    method : {"covariance", "rankme"}
        Which spectrum and normalisation, see above.
    eps : float
        RankMe's additive constant on ``p_k`` (1e-7 as in the paper); ignored by "covariance".

    Returns
    -------
    float
        The effective rank. A representation with zero variance (complete collapse) has
        effective rank 0 by convention, like the matrix rank of a zero matrix.

    Warns
    -----
    UserWarning
        When the sample count, not the features, sets the value: with ``n <= d`` samples the
        centred features have rank at most ``n - 1``, which bounds the effective rank, and a
        value within 10% of that bound (always, for 2 samples: exactly 1) says more about ``n``
        than about the representation. The value is returned as computed.

    Examples
    --------
    >>> import numpy as np
    >>> h = np.random.default_rng(0).normal(size=(20000, 4))
    >>> round(effective_rank(h), 2)
    4.0
    >>> round(effective_rank(np.outer(np.arange(10.0), [1.0, 2.0, 3.0])), 6)
    1.0
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got method={method!r}")
    if not eps >= 0:
        raise ValueError(f"eps must be a non-negative float; got eps={eps!r}")
    # Scale-free (either method): computed on features rescaled by a power of two, so features
    # at 1e200 give their value rather than an overflowed covariance.
    feats = as_features(features, rescale=True)
    if method == "covariance":
        eig = covariance_eigenvalues(feats)
        total = eig.sum()
        if total <= 0:
            return 0.0
        value = _entropy_rank(eig / total)
        cap = feats.count - 1
        if cap < feats.dim and value >= 0.9 * cap:
            warnings.warn(
                f"effective_rank of {feats.count} samples of {feats.dim} units is {value:.3g}, "
                f"at the bound n - 1 = {cap} that the sample count sets: it measures the sample "
                f"count, not the features; use at least {2 * feats.dim} samples",
                UserWarning,
                stacklevel=2,
            )
        return value
    # RankMe: singular values of the uncentred matrix Z (n, d), min(n, d) of them.
    if feats.centred is not None:
        z = feats.centred + feats.mean
        s = np.linalg.svd(z, compute_uv=False)
    else:
        n = feats.count
        second = feats.covariance * (n - 1) + n * np.outer(feats.mean, feats.mean)
        eig = np.clip(np.linalg.eigvalsh(second), 0.0, None)[::-1][: min(n, feats.dim)]
        s = np.sqrt(eig)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def participation_ratio(features) -> float:
    """Participation ratio ``(sum l)^2 / sum l^2`` of the covariance eigenvalues ``l``.

    Computed without an eigendecomposition, as ``trace(C)^2 / ||C||_F^2`` (or the same on the
    n x n Gram matrix when n < d); in ``[1, d]``, and 0 for features with zero variance.

    Parameters
    ----------
    features : array (n, d), Tensor (n, d), DataArray (sample, unit_*) or FeatureMoments

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> h = np.random.default_rng(0).normal(size=(1000, 3)) * [1.0, 1.0, 0.0]
    >>> round(participation_ratio(h), 1)
    2.0
    """
    feats = as_features(features, rescale=True)  # scale-free, see effective_rank
    gram = gram_matrix(feats)
    total = float(np.trace(gram))
    if total <= 0:
        return 0.0
    return total**2 / float(np.sum(gram * gram))
