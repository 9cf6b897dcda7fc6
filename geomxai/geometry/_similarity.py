"""Representation similarity of feature sets on the same samples: linear and kernel (RBF) CKA, CKA
matrices, Procrustes.

Both functions compare representations that may have different widths (two layers, two
checkpoints, two regimes) through the only thing they share, the samples. They are pure, work
in float64 and accept the containers of :func:`geomxai.geometry._input.as_matrix`: numpy arrays,
torch tensors (n, d) or ``xr.DataArray`` with a ``sample`` dim. Moments
(:class:`~geomxai.collect.FeatureMoments`) are refused: both quantities need the
*cross*-covariance of the two sets, which the moments of each set alone do not hold.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Literal

import numpy as np
import xarray as xr

from geomxai._features import rescaled
from geomxai.geometry._input import as_matrix
from geomxai.moments import FeatureMoments

_KINDS = ("angular", "euclidean")


def _pair(
    a, b, *, min_samples: int, why: str, rescale: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Two finite float64 matrices (n, d1), (n, d2) of the same samples, columns centred; with
    ``rescale``, each divided by a power of two near its largest magnitude (exact), for a
    similarity invariant to the scale of either set."""
    for name, x in (("a", a), ("b", b)):
        if isinstance(x, FeatureMoments):
            raise TypeError(
                f"{name} must be features (n, d), not FeatureMoments: a similarity of two "
                "representations needs their cross-covariance, which separate moments do not hold"
            )
    if isinstance(a, xr.DataArray) and isinstance(b, xr.DataArray):
        if "sample" in a.coords and "sample" in b.coords:
            sa, sb = a["sample"].values, b["sample"].values
            if sa.shape != sb.shape or not np.array_equal(sa, sb):
                raise ValueError(
                    "a and b must hold the same samples in the same order; their 'sample' "
                    "coordinates differ (select or sort both on the same samples first)"
                )
    x = as_matrix(a, name="a")
    y = as_matrix(b, name="b")
    if rescale:
        x, y = rescaled(x)[0], rescaled(y)[0]
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            "a and b must have the same number of samples (rows); "
            f"got a of shape {x.shape} and b of shape {y.shape}"
        )
    n = x.shape[0]
    if n < min_samples:
        raise ValueError(f"{why} needs at least {min_samples} samples; got n={n}")
    for name, m in (("a", x), ("b", y)):
        if m.shape[1] < 1:
            raise ValueError(f"{name} must have at least 1 unit; got shape {m.shape}")
    # Centring changes neither quantity (CKA's centred HSIC and the shape distance are
    # translation invariant); doing it once up front keeps the sums below free of the
    # cancellation a large feature mean would cause.
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    for name, m in (("a", x), ("b", y)):
        if not np.any(m):
            raise ValueError(
                f"{name} has zero variance (every sample is the same point); the similarity of "
                "a constant representation is undefined"
            )
    return x, y


def _hsic_terms_features(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """``tr(K~L~), 1'K~1, 1'L~1, 1'K~L~1`` for ``K = x x'``, ``L = y y'``, diagonals zeroed.

    Every term is written through ``x' y`` (d1, d2), the row norms and ``x' 1``, so nothing
    of size n x n is formed: O(n d1 d2) time, O(d1 d2) memory.
    """
    kd = np.einsum("ij,ij->i", x, x)  # diag(K)
    ld = np.einsum("ij,ij->i", y, y)
    xty = x.T @ y
    tr_kl = float(np.sum(xty * xty) - kd @ ld)
    k1 = x @ x.sum(axis=0) - kd  # K~ 1
    l1 = y @ y.sum(axis=0) - ld
    return tr_kl, float(k1.sum()), float(l1.sum()), float(k1 @ l1)


def _hsic_terms_gram(k: np.ndarray, l_: np.ndarray) -> tuple[float, float, float, float]:
    """The same four terms from the n x n Gram matrices."""
    k = k.copy()
    l_ = l_.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l_, 0.0)
    k1, l1 = k.sum(axis=1), l_.sum(axis=1)
    return float(np.sum(k * l_)), float(k1.sum()), float(l1.sum()), float(k1 @ l1)


def _hsic_unbiased(terms: tuple[float, float, float, float], n: int) -> float:
    """The U-statistic HSIC of Song et al. (2012), as Nguyen et al. (2021) write it."""
    tr_kl, sk, sl, kl1 = terms
    return (tr_kl + sk * sl / ((n - 1) * (n - 2)) - 2.0 * kl1 / (n - 2)) / (n * (n - 3))


def _use_gram(n: int, d1: int, d2: int) -> bool:
    # Feature form: x'y, x'x, y'y cost n (d1 d2 + d1^2 + d2^2) and O(d^2) memory.
    # Gram form: K and L cost n^2 (d1 + d2) and O(n^2) memory. Take the cheaper one; with few
    # samples and wide layers (n < d) that is the Gram form, with many samples the feature form.
    return n * (d1 + d2) < d1 * d1 + d2 * d2 + d1 * d2


def linear_cka(a, b, *, unbiased: bool = True) -> float:
    """Linear centred kernel alignment between two representations of the same samples.

    With the linear kernels ``K = A A^T`` and ``L = B B^T`` of the two feature sets,
    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` (Kornblith et al. 2019, "Similarity of
    neural network representations revisited"). CKA is invariant to orthogonal transforms and
    isotropic scaling of either set (not to arbitrary invertible maps), and does not need the
    two widths to agree.

    - ``unbiased=True`` (default): the unbiased U-statistic estimator of HSIC (Song et al. 2012)
      in the form of Nguyen, Raghu & Kornblith (2021, "Do wide and deep networks learn the same
      things?"), with ``K~``, ``L~`` the kernels with zeroed diagonals:
      ``HSIC_1 = [tr(K~ L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n-3))``.
      The plain estimator is biased towards 1 when the width is large next to ``n`` (two
      independent random representations get a CKA near 1); this one is not, at the price of
      values that can fall slightly outside [0, 1] on few samples. Needs ``n >= 4``.
    - ``unbiased=False``: the plain estimator ``HSIC_0 = tr(K H L H) / (n-1)^2`` with the
      centring matrix ``H = I - 11'/n``, for which linear CKA is
      ``||A_c' B_c||_F^2 / (||A_c' A_c||_F ||B_c' B_c||_F)`` on the centred features; in [0, 1].

    Both estimators are computed in float64, in whichever of two equal forms is cheaper: the
    n x n Gram matrices when samples are few next to the widths (``n < d``), else the
    feature form through ``A' B`` (d1, d2), which never builds an n x n matrix and so scales
    to many samples of a narrow layer.

    Parameters
    ----------
    a : array (n, d1), Tensor (n, d1) or DataArray (sample, unit_*)
    b : array (n, d2), Tensor (n, d2) or DataArray (sample, unit_*)
        The same ``n`` samples, in the same order (DataArrays with ``sample`` coordinates are
        checked for it).
    unbiased : bool
        Which HSIC estimator, see above.

    Returns
    -------
    float
        1 for representations equal up to rotation and scale. NaN, with a ``RuntimeWarning``,
        when the unbiased self-similarity estimate of a set is not positive (it is 0, for
        example, when all of a set's spread comes from a single sample), where the ratio is
        undefined.

    Raises
    ------
    ValueError
        Different numbers of samples, fewer than 4 (unbiased) or 2 (biased) samples, NaN or
        infinite values, or a set with zero variance.
    TypeError
        ``FeatureMoments`` (a cross-covariance is needed).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 8))
    >>> q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    >>> round(linear_cka(x, 3.0 * x @ q), 10)
    1.0
    >>> u, v = rng.normal(size=(50, 500)), rng.normal(size=(50, 500))  # independent, wide
    >>> round(linear_cka(u, v, unbiased=False), 1)  # the plain estimator is biased towards 1
    0.9
    >>> abs(linear_cka(u, v)) < 0.05
    True
    """
    if not isinstance(unbiased, (bool, np.bool_)):
        raise TypeError(f"unbiased must be a bool; got unbiased={unbiased!r}")
    x, y = _pair(
        a,
        b,
        min_samples=4 if unbiased else 2,
        why="unbiased linear CKA" if unbiased else "linear CKA",
        rescale=True,  # CKA is invariant to the scale of either set; this keeps it finite
    )
    n, d1 = x.shape
    d2 = y.shape[1]
    gram = _use_gram(n, d1, d2)
    if unbiased:
        if gram:
            k, l_ = x @ x.T, y @ y.T
            kl = _hsic_unbiased(_hsic_terms_gram(k, l_), n)
            kk = _hsic_unbiased(_hsic_terms_gram(k, k), n)
            ll = _hsic_unbiased(_hsic_terms_gram(l_, l_), n)
        else:
            kl = _hsic_unbiased(_hsic_terms_features(x, y), n)
            kk = _hsic_unbiased(_hsic_terms_features(x, x), n)
            ll = _hsic_unbiased(_hsic_terms_features(y, y), n)
        # The self-similarity estimates are >= 0 up to rounding but can be exactly 0 on a set
        # whose spread comes from one sample; compare with the scale (tr Sigma)^2 they have.
        scale_k = (np.sum(x * x) / n) ** 2
        scale_l = (np.sum(y * y) / n) ** 2
        if not (kk > 1e-12 * scale_k and ll > 1e-12 * scale_l):
            warnings.warn(
                f"unbiased linear CKA is undefined here: the self-similarity estimates are "
                f"HSIC(a, a)={kk:.3g} and HSIC(b, b)={ll:.3g} on n={n} samples (must be > 0); "
                "use more samples or unbiased=False",
                RuntimeWarning,
                stacklevel=2,
            )
            return float("nan")
        return float(kl / math.sqrt(kk * ll))
    # The centred HSIC's common factor 1 / (n-1)^2 cancels in the ratio.
    if gram:
        k, l_ = x @ x.T, y @ y.T
        kl, kk, ll = np.sum(k * l_), np.sum(k * k), np.sum(l_ * l_)
    else:
        xty, xtx, yty = x.T @ y, x.T @ x, y.T @ y
        kl, kk, ll = np.sum(xty * xty), np.sum(xtx * xtx), np.sum(yty * yty)
    return float(kl / math.sqrt(kk * ll))


def _reduce_columns(x: np.ndarray) -> np.ndarray:
    """``x V`` (n, min(n, d)) for the right singular vectors ``V`` of ``x``.

    An orthogonal change of basis of the columns (followed by dropping columns that are exactly
    zero in that basis), to which the shape distance is invariant; it bounds the matrix whose
    nuclear norm is taken by n x n when the layer is wider than the sample count.
    """
    n, d = x.shape
    if d <= n:
        return x
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u * s


def procrustes_distance(a, b, *, kind: Literal["angular", "euclidean"] = "angular") -> float:
    """Orthogonal Procrustes shape distance between two representations of the same samples.

    The shape metric of Williams, Kunz, Kornblith & Linderman (2021, "Generalized shape metrics
    on neural representations", NeurIPS), with no partial whitening (their ``alpha = 1``, the
    orthogonal-invariant case): each set is centred and scaled to unit Frobenius norm, the
    narrower is padded with zero columns to the wider width, and the best rotation ``Q`` aligns
    them, ``max_Q tr(A' B Q) = ||A' B||_*`` (the nuclear norm, sum of singular values; by the
    solution of the orthogonal Procrustes problem, Schoenemann 1966). Then

    - ``kind="angular"``: ``arccos(||A' B||_*)``, in ``[0, pi/2]``;
    - ``kind="euclidean"``: ``min_Q ||A - B Q||_F = sqrt(2 - 2 ||A' B||_*)``, in ``[0, sqrt 2]``.

    Both are metrics on representations modulo translation, rotation (and reflection) and
    isotropic scaling: 0 exactly when one set is such a transform of the other, symmetric, and
    they satisfy the triangle inequality (which CKA, a similarity, does not).

    Computed in float64; when a set is wider than the number of samples it is first rotated to
    at most ``n`` columns (``A V`` for its right singular vectors, an orthogonal map the
    distance is invariant to), so the SVD is at most n x n. The value is read from the residual
    ``||A - B Q||_F`` of the optimal rotation ``Q = V U'`` (``A' B = U S V'``), which equals the
    closed forms above but keeps full precision near 0, where ``arccos`` of a nuclear norm a
    rounding error below 1 would not.

    Parameters
    ----------
    a : array (n, d1), Tensor (n, d1) or DataArray (sample, unit_*)
    b : array (n, d2), Tensor (n, d2) or DataArray (sample, unit_*)
        The same ``n >= 2`` samples in the same order.
    kind : {"angular", "euclidean"}

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Different numbers of samples, fewer than 2 samples, NaN or infinite values, a set with
        zero variance, or an unknown ``kind``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(100, 5))
    >>> q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    >>> round(procrustes_distance(x, 2.0 * x @ q + 1.0), 6)
    0.0
    >>> 0 < procrustes_distance(x, rng.normal(size=(100, 7))) <= np.pi / 2
    True
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}; got kind={kind!r}")
    x, y = _pair(a, b, min_samples=2, why="procrustes_distance", rescale=True)
    x = _reduce_columns(x / np.linalg.norm(x))
    y = _reduce_columns(y / np.linalg.norm(y))
    k = max(x.shape[1], y.shape[1])
    x = np.pad(x, ((0, 0), (0, k - x.shape[1])))
    y = np.pad(y, ((0, 0), (0, k - y.shape[1])))
    u, _, vt = np.linalg.svd(x.T @ y)
    # The residual of the optimal rotation Q = V U', not sqrt(2 - 2 ||A'B||_*): near a distance
    # of 0 the latter loses half the digits (1 - 1e-16 gives 1.5e-8), the residual none.
    euclidean = float(np.linalg.norm(x - y @ (vt.T @ u.T)))
    euclidean = min(euclidean, math.sqrt(2.0))  # tr(S) >= 0; only rounding could exceed it
    if kind == "euclidean":
        return euclidean
    # The chord of the unit sphere to its angle: ||A - BQ|| = 2 sin(theta / 2).
    return float(2.0 * math.asin(euclidean / 2.0))


def _rbf_gram(x: np.ndarray, sigma: float | None, median_scale: float) -> tuple[np.ndarray, float]:
    """The RBF kernel ``exp(-||x_i - x_j||^2 / (2 sigma^2))`` of centred ``x`` and its ``sigma``.

    ``sigma=None``: the median heuristic, ``median_scale`` times the median Euclidean distance
    between distinct samples (Gretton et al. 2005; Kornblith et al. 2019 use 0.2 to 2 times it).
    """
    sq = np.einsum("ij,ij->i", x, x)
    # Squared distances from the Gram matrix; clipped because rounding can make a zero
    # distance -1e-16.
    d2 = np.clip(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0, None)
    np.fill_diagonal(d2, 0.0)
    if sigma is None:
        off = d2[np.triu_indices_from(d2, k=1)]
        off = off[off > 0]
        if off.size == 0:
            raise ValueError("every sample is the same point; the RBF bandwidth is undefined")
        sigma = median_scale * float(np.sqrt(np.median(off)))
    return np.exp(-d2 / (2.0 * sigma * sigma)), float(sigma)


def _check_bandwidth(sigma, median_scale) -> None:
    if sigma is not None and not (isinstance(sigma, (int, float)) and 0 < sigma < math.inf):
        raise ValueError(
            f"sigma must be None (median heuristic) or a positive number; got {sigma!r}"
        )
    if not (isinstance(median_scale, (int, float)) and 0 < median_scale < math.inf):
        raise ValueError(f"median_scale must be a positive number; got {median_scale!r}")


def kernel_cka(
    a,
    b,
    *,
    sigma: float | None = None,
    median_scale: float = 1.0,
    unbiased: bool = True,
) -> float:
    """Centred kernel alignment with Gaussian (RBF) kernels, bandwidth by the median heuristic.

    ``K_ij = exp(-||a_i - a_j||^2 / (2 sigma_a^2))`` and likewise ``L`` for ``b``;
    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` (Kornblith et al. 2019, section 3 and
    their ``gram_rbf``). Each set gets its own bandwidth: ``sigma_a = median_scale x`` the
    median Euclidean distance between its distinct samples (the median heuristic, Gretton et
    al. 2005), so the value is invariant to isotropic scaling, translation and orthogonal
    transforms of either set, and to permuting the samples of both alike. The estimators are
    those of :func:`linear_cka`: the unbiased U-statistic HSIC (default; ``n >= 4``) or the plain
    ``tr(K H L H) / (n-1)^2`` (``unbiased=False``, in [0, 1]).

    Parameters
    ----------
    a : array (n, d1), Tensor (n, d1) or DataArray (sample, unit_*)
    b : array (n, d2), Tensor (n, d2) or DataArray (sample, unit_*)
        The same samples in the same order.
    sigma : float, optional
        A fixed bandwidth for both sets instead of the median heuristic (then only orthogonal
        transforms and translations leave the value unchanged).
    median_scale : float
        Factor on the median distance (Kornblith et al.'s ``threshold``); 1 by default.
    unbiased : bool
        Which HSIC estimator.

    Returns
    -------
    float
        NaN with a ``RuntimeWarning`` when a self-similarity estimate is not positive.

    Raises
    ------
    ValueError
        As :func:`linear_cka`; also a non-positive ``sigma`` or ``median_scale``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(60, 5))
    >>> q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    >>> round(kernel_cka(x, 4.0 * x @ q + 1.0), 10)
    1.0
    >>> kernel_cka(x, np.tanh(x)) > kernel_cka(x, rng.normal(size=(60, 5)))
    True
    """
    if not isinstance(unbiased, (bool, np.bool_)):
        raise TypeError(f"unbiased must be a bool; got unbiased={unbiased!r}")
    _check_bandwidth(sigma, median_scale)
    x, y = _pair(
        a,
        b,
        min_samples=4 if unbiased else 2,
        why="unbiased kernel CKA" if unbiased else "kernel CKA",
    )
    n = x.shape[0]
    k, _ = _rbf_gram(x, sigma, median_scale)
    l_, _ = _rbf_gram(y, sigma, median_scale)
    if unbiased:
        kl = _hsic_unbiased(_hsic_terms_gram(k, l_), n)
        kk = _hsic_unbiased(_hsic_terms_gram(k, k), n)
        ll = _hsic_unbiased(_hsic_terms_gram(l_, l_), n)
        # An RBF kernel's entries lie in [0, 1]; the self-similarities are compared with 1.
        if not (kk > 1e-12 and ll > 1e-12):
            warnings.warn(
                f"unbiased kernel CKA is undefined here: HSIC(a, a)={kk:.3g}, HSIC(b, b)={ll:.3g} "
                f"on n={n} samples (must be > 0); use more samples or unbiased=False",
                RuntimeWarning,
                stacklevel=2,
            )
            return float("nan")
        return float(kl / math.sqrt(kk * ll))
    # tr(K H L H) with H the centring matrix; the common 1 / (n-1)^2 cancels.
    kc = k - k.mean(axis=0) - k.mean(axis=1)[:, None] + k.mean()
    lc = l_ - l_.mean(axis=0) - l_.mean(axis=1)[:, None] + l_.mean()
    kl, kk, ll = np.sum(kc * lc), np.sum(kc * kc), np.sum(lc * lc)
    if not (kk > 0 and ll > 0):
        warnings.warn(
            "kernel CKA is undefined: a centred kernel is zero", RuntimeWarning, stacklevel=2
        )
        return float("nan")
    return float(kl / math.sqrt(kk * ll))


_CKA_KINDS = ("linear", "rbf")


def cka_matrix(
    features,
    *,
    kernel: Literal["linear", "rbf"] = "linear",
    dim: str = "layer",
    unbiased: bool = True,
    **kernel_kwargs,
) -> xr.DataArray:
    """CKA of every pair of representations of the same samples: layers x layers, or
    checkpoints x checkpoints.

    Parameters
    ----------
    features : mapping of label to features, or a sequence of features
        Each entry (n, d_i) as :func:`linear_cka` takes it (widths may differ); the labels
        (layer names, epochs) become the coordinates; a sequence is labelled ``0 .. m-1``. A
        ``xr.Dataset`` from :func:`geomxai.collect.collect_features` is read as a mapping of
        its layers.
    kernel : {"linear", "rbf"}
        :func:`linear_cka` or :func:`kernel_cka` (``kernel_kwargs``: ``sigma``,
        ``median_scale``).
    dim : str
        Name of the first dim; the second is ``dim + "_b"``.
    unbiased : bool
        The HSIC estimator of both functions.

    Returns
    -------
    xr.DataArray
        Dims ``(dim, dim_b)``, symmetric, 1 on the diagonal (where defined). A pair whose CKA is
        undefined (a constant representation) is NaN, and ``attrs["nan_reason"]`` names it.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(50, 4))
    >>> m = cka_matrix({"a": x, "b": 2 * x, "c": rng.normal(size=(50, 3))})
    >>> m.dims, float(m.sel(layer="a", layer_b="b").round(6))
    (('layer', 'layer_b'), 1.0)
    """
    if kernel not in _CKA_KINDS:
        raise ValueError(f"kernel must be one of {_CKA_KINDS}; got kernel={kernel!r}")
    if kernel == "linear" and kernel_kwargs:
        raise TypeError(f"linear CKA takes no kernel arguments; got {sorted(kernel_kwargs)}")
    if isinstance(features, xr.Dataset):
        features = {str(name): features[name] for name in features.data_vars}
    if isinstance(features, Mapping):
        labels, items = list(features), list(features.values())
    else:
        items = list(features)
        labels = list(range(len(items)))
    if len(items) < 1:
        raise ValueError("cka_matrix needs at least one representation")
    out = np.full((len(items), len(items)), np.nan)
    reasons = []
    for i in range(len(items)):
        for j in range(i, len(items)):
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", RuntimeWarning)
                    if kernel == "linear":
                        value = linear_cka(items[i], items[j], unbiased=unbiased)
                    else:
                        value = kernel_cka(items[i], items[j], unbiased=unbiased, **kernel_kwargs)
                if math.isnan(value) and caught:
                    reasons.append(f"{labels[i]!s} vs {labels[j]!s}: {caught[0].message}")
            except ValueError as err:
                if "zero variance" not in str(err) and "same point" not in str(err):
                    raise
                value = math.nan
                reasons.append(f"{labels[i]!s} vs {labels[j]!s}: {err}")
            out[i, j] = out[j, i] = value
    da = xr.DataArray(
        out,
        dims=(dim, f"{dim}_b"),
        coords={dim: labels, f"{dim}_b": labels},
        name=f"cka_{kernel}",
        attrs={"kernel": kernel, "estimator": "unbiased" if unbiased else "biased"},
    )
    if reasons:
        da.attrs["nan_reason"] = "; ".join(reasons)
    return da
