"""Function-invariant geometry: metrics of a layer that no reparametrisation of it can move.

Fold an invertible affine map into a layer and its inverse into what reads it,
``h -> A h + c`` with the head ``W -> W A^{-1}`` (and the bias adjusted), and the network
computes the same function while the covariance ``Sigma`` of ``h`` becomes ``A Sigma A^T``: every
second-order statistic of ``h`` itself (effective rank, participation ratio, mean |corr|, the
correlation spectrum) moves, though nothing the network does has changed. The metrics here are
built from quantities that transform so that the map cancels:

- **Head-projected features** ``u_i = J_i (h_i - mean h)`` with ``J_i = d logits / d h`` at
  sample ``i`` (``W`` for a linear head): ``J`` becomes ``J A^{-1}`` and ``h - mean h`` becomes
  ``A (h - mean h)``, so every ``u_i`` is unchanged, entry by entry. Their covariance is
  ``W Sigma W^T`` (C x C) for a linear head: the covariance in the metric the head induces.
- **The feature gradient in the feature metric**: per-sample gradients ``g = d logit_y / d h``
  become ``A^{-T} g``, so their second moment ``G = E[g g^T]`` becomes ``A^{-T} G A^{-1}`` and
  ``Sigma G`` becomes ``A (Sigma G) A^{-1}``, a similar matrix: its eigenvalues do not move.
  Equivalently every entry ``g_i . (h_j - mean h)`` of the cross-Gram matrix is unchanged.

Dead units (constant on the probe) enter none of them: ``h_i - mean h`` is 0 there, so they add
nothing to ``u`` nor to ``Sigma``. Formulas and conventions: ``docs/metrics.md``,
"Function-invariant geometry".
"""

from __future__ import annotations

import math

import numpy as np

from geomxai._features import as_float64, check_finite
from geomxai._finite import DEAD_UNIT_TOL, live_units
from geomxai.geometry._input import as_features

__all__ = [
    "gradient_metric_geometry",
    "gradient_metric_spectrum",
    "head_covariance",
    "head_geometry",
    "head_projection",
]


def _entropy_rank(eigenvalues: np.ndarray) -> float:
    """exp(entropy) of the normalised eigenvalues; 0 when they are all 0 (as effective_rank)."""
    total = float(eigenvalues.sum())
    if not total > 0:
        return 0.0
    p = eigenvalues / total
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def _participation(eigenvalues: np.ndarray) -> float:
    """(sum l)^2 / sum l^2; 0 when they are all 0 (as participation_ratio)."""
    squares = float(np.sum(eigenvalues * eigenvalues))
    return 0.0 if not squares > 0 else float(eigenvalues.sum()) ** 2 / squares


def _psd_eigenvalues(matrix: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix, descending, rounding negatives clipped to 0."""
    sym = (matrix + matrix.T) / 2
    return np.clip(np.linalg.eigvalsh(sym), 0.0, None)[::-1]


def _head_array(head, *, n: int, d: int) -> np.ndarray:
    array = as_float64(head, name="head")
    check_finite(array, name="head", hint="a diverged checkpoint?")
    if array.ndim == 2 and array.shape[1] == d and array.shape[0] >= 1:
        return array
    if array.ndim == 3 and array.shape[0] == n and array.shape[2] == d and array.shape[1] >= 1:
        return array
    raise ValueError(
        f"head must be the head's weight (C, {d}) or per-sample Jacobians d logits / d h "
        f"({n}, C, {d}) for features of {n} samples and {d} units; got shape {array.shape}"
    )


def head_projection(features, head) -> np.ndarray:
    """The centred features seen through the head: ``u_i = J_i (h_i - mean h)``, (n, C).

    Parameters
    ----------
    features : array (n, d), Tensor (n, d) or DataArray (sample, unit_*)
        The layer's output on the probe (samples needed: the projection is per sample).
    head : array or Tensor (C, d) or (n, C, d)
        The weight ``W`` of a linear head that reads the layer (``u = (h - mean h) W^T``), or
        per-sample Jacobians ``J_i = d logits / d h`` of whatever reads it (a nonlinear head,
        or a normalisation before the linear one). For an affine path they are all ``W``.

    Returns
    -------
    ndarray (n, C), float64
        Unchanged, entry by entry, when an invertible linear map ``A`` is folded into the layer
        and ``A^{-1}`` into the head (``J -> J A^{-1}``, ``h - mean h -> A (h - mean h)``).

    Examples
    --------
    >>> h = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 2.0]])
    >>> w = np.array([[1.0, -1.0]])
    >>> head_projection(h, w).ravel().tolist()
    [-1.0, -1.0, 2.0]
    """
    feats = as_features(features)
    if feats.centred is None:
        raise TypeError(
            "head_projection needs the samples (n, d), not FeatureMoments: each sample is "
            "projected; head_covariance takes FeatureMoments with a weight matrix"
        )
    w = _head_array(head, n=feats.count, d=feats.dim)
    if w.ndim == 2:
        return feats.centred @ w.T
    return np.einsum("ncd,nd->nc", w, feats.centred)


def head_covariance(features, head) -> np.ndarray:
    """Covariance (C, C) of the head-projected features: ``W Sigma W^T`` for a linear head.

    ``features`` may also be :class:`~geomxai.collect.FeatureMoments` when ``head`` is a
    weight (C, d); per-sample Jacobians (n, C, d) need the samples. Uses ``n - 1``.

    Examples
    --------
    >>> h = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 2.0]])
    >>> head_covariance(h, np.array([[1.0, -1.0]])).tolist()
    [[3.0]]
    """
    feats = as_features(features)
    if feats.centred is None:
        w = _head_array(head, n=feats.count, d=feats.dim)
        if w.ndim != 2:
            raise TypeError(
                "per-sample Jacobians (n, C, d) need the samples (n, d), not FeatureMoments"
            )
        return w @ feats.covariance @ w.T
    u = head_projection(features, head)
    u = u - u.mean(axis=0)
    return u.T @ u / (feats.count - 1)


def head_geometry(features, head, *, tol: float = DEAD_UNIT_TOL) -> dict[str, float]:
    """Effective rank, participation ratio and mean |corr| of the head-projected features.

    All three are functions of :func:`head_covariance` ``K`` (C x C), so none moves when an
    invertible linear map is folded into the layer and its inverse into the head:

    - ``effective_rank``: ``exp`` of the entropy of ``K``'s normalised eigenvalues (Roy &
      Vetterli), in ``[1, C]``, 0 when ``K = 0``;
    - ``participation_ratio``: ``trace(K)^2 / ||K||_F^2``, in ``[1, C]``, 0 when ``K = 0``;
    - ``mean_abs_corr``: the mean ``|R_ij|``, ``i != j``, of the correlation of the projected
      outputs, over those that are live by :data:`geomxai._finite.DEAD_UNIT_TOL` (``tol``);
      NaN with fewer than 2 live outputs (a one-logit head, or a collapsed layer).

    For a linear head, ``u = W (h - mean h)`` is the logits less their mean: these are the
    geometry of what the head makes of the layer, in its own ``C`` dimensions.

    Parameters
    ----------
    features : array (n, d), Tensor (n, d), DataArray (sample, unit_*) or FeatureMoments
    head : array or Tensor (C, d) or (n, C, d)
        As :func:`head_projection`.
    tol : float
        Relative variance at or below which a projected output counts as dead.

    Returns
    -------
    dict
        ``effective_rank``, ``participation_ratio``, ``mean_abs_corr``, ``n_outputs`` (C),
        ``n_live_outputs``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> h, w = rng.normal(size=(200, 5)), rng.normal(size=(3, 5))
    >>> a = rng.normal(size=(5, 5)) + 5 * np.eye(5)
    >>> g1, g2 = head_geometry(h, w), head_geometry(h @ a.T, w @ np.linalg.inv(a))
    >>> all(math.isclose(g1[k], g2[k], rel_tol=1e-9) for k in g1)
    True
    """
    k = head_covariance(features, head)
    eig = _psd_eigenvalues(k)
    var = np.clip(np.diag(k), 0.0, None)
    live = live_units(var, tol=tol)
    n_live = int(live.sum())
    if n_live >= 2:
        sd = np.sqrt(var[live])
        r = k[np.ix_(live, live)] / np.outer(sd, sd)
        off = np.abs(r[~np.eye(n_live, dtype=bool)])
        mean_abs = float(np.clip(off, 0.0, 1.0).mean())
    else:
        mean_abs = math.nan
    return {
        "effective_rank": _entropy_rank(eig),
        "participation_ratio": _participation(eig),
        "mean_abs_corr": mean_abs,
        "n_outputs": int(k.shape[0]),
        "n_live_outputs": n_live,
    }


def _gradients(grads, d: int) -> np.ndarray:
    g = as_float64(grads, name="grads")
    check_finite(g, name="grads", hint="a diverged checkpoint?")
    if g.ndim != 2 or g.shape[1] != d or g.shape[0] < 1:
        raise ValueError(
            f"grads must be per-sample gradients (m, {d}) at the layer of the features, m >= 1; "
            f"got shape {g.shape}"
        )
    return g


def gradient_metric_spectrum(features, grads) -> np.ndarray:
    """Eigenvalues of ``Sigma G``: the feature-gradient second moment in the feature metric.

    ``Sigma`` is the covariance of the layer's features, ``G = (1/m) sum_i g_i g_i^T`` the
    uncentred second moment of per-sample gradients ``g_i = d logit_{y_i} / d h`` (uncentred:
    the gradient's common direction is part of what the head reads). ``Sigma G`` is not
    symmetric, but it is similar to the PSD matrix ``Sigma^{1/2} G Sigma^{1/2}``, whose
    eigenvalues are computed (or, when the samples are fewer than the units, those of the
    cross-Gram matrix ``K_ij = g_i . (h_j - mean h)``: the non-zero eigenvalues of ``Sigma G``
    are the squared singular values of ``K / sqrt(m (n - 1))``).

    Under ``h -> A h + c`` with ``A`` folded out of the head, ``g -> A^{-T} g``, so
    ``Sigma G -> A Sigma G A^{-1}``: the eigenvalues do not move. Their sum,
    ``E_i[g_i^T Sigma g_i]``, is the mean variance over the probe of the target logit's linear
    response to the layer's variation.

    Parameters
    ----------
    features : array (n, d), Tensor (n, d), DataArray (sample, unit_*) or FeatureMoments
    grads : array or Tensor (m, d)
        Per-sample gradients at the same layer (usually of the same samples, ``m = n``).

    Returns
    -------
    ndarray (min(d, n - 1, m),) float64
        Descending, non-negative.

    Examples
    --------
    >>> h = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    >>> g = np.array([[1.0, 0.0]] * 4)
    >>> gradient_metric_spectrum(h, g).round(6).tolist()
    [0.666667, 0.0]
    """
    feats = as_features(features)
    g = _gradients(grads, feats.dim)
    m, d = g.shape
    if feats.centred is not None and min(feats.count, m) < d:
        k = g @ feats.centred.T / math.sqrt(m * (feats.count - 1))
        s = np.linalg.svd(k, compute_uv=False)
        return np.sort(s * s)[::-1]
    sigma = feats.covariance_matrix()
    lam, v = np.linalg.eigh((sigma + sigma.T) / 2)
    root = (v * np.sqrt(np.clip(lam, 0.0, None))) @ v.T
    second = g.T @ g / m
    return _psd_eigenvalues(root @ second @ root)


def gradient_metric_geometry(features, grads) -> dict[str, float]:
    """Effective rank, participation ratio and total of :func:`gradient_metric_spectrum`.

    ``effective_rank`` and ``participation_ratio`` say over how many directions (of the layer,
    in the metric its own covariance induces) the gradient's second moment spreads; ``total``
    is ``E_i[g_i^T Sigma g_i]``. All three are invariant under an invertible linear map folded
    into the layer and out of what reads it (and the totals' scale is that of the logits).

    Returns
    -------
    dict
        ``effective_rank`` (in ``[1, d]``, 0 when the spectrum is 0), ``participation_ratio``
        (idem), ``total``.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> h, g = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    >>> a = rng.normal(size=(4, 4)) + 4 * np.eye(4)
    >>> g1 = gradient_metric_geometry(h, g)
    >>> g2 = gradient_metric_geometry(h @ a.T, g @ np.linalg.inv(a))
    >>> all(math.isclose(g1[k], g2[k], rel_tol=1e-9) for k in g1)
    True
    """
    eig = gradient_metric_spectrum(features, grads)
    return {
        "effective_rank": _entropy_rank(eig),
        "participation_ratio": _participation(eig),
        "total": float(eig.sum()),
    }
