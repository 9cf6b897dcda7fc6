"""Representational similarity analysis: dissimilarity matrices of samples and their comparison.

RSA (Kriegeskorte, Mur & Bandettini 2008, "Representational similarity analysis - connecting the
branches of systems neuroscience") describes a representation by its representational
dissimilarity matrix (RDM), the dissimilarity of every pair of samples, and compares two
representations (two layers, two checkpoints, a model and a brain) by the rank correlation of
their RDMs' upper triangles. Widths never need to agree: only the samples are shared.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import xarray as xr
from scipy import stats

from geomxai.geometry._input import as_matrix
from geomxai.moments import FeatureMoments

METRICS = ("correlation", "euclidean", "cosine")
"""The dissimilarities :func:`rdm` computes."""

COMPARISONS = ("spearman", "pearson", "kendall")
"""How :func:`rsa` and :func:`compare_rdms` compare two RDMs."""


def _matrix(x, name: str) -> np.ndarray:
    if isinstance(x, FeatureMoments):
        raise TypeError(
            f"{name} must be features (n, d), not FeatureMoments: an RDM needs every sample"
        )
    m = as_matrix(x, name=name)
    if m.shape[0] < 2:
        raise ValueError(f"an RDM needs at least 2 samples; got {name} of shape {m.shape}")
    return m


def rdm(features, *, metric: Literal["correlation", "euclidean", "cosine"] = "correlation"):
    """The representational dissimilarity matrix of a set of samples.

    - ``"correlation"``: ``1 - r(h_i, h_j)``, Pearson's r between two samples' feature vectors
      (each centred over its own units); in [0, 2]. RSA's usual choice.
    - ``"euclidean"``: ``||h_i - h_j||``.
    - ``"cosine"``: ``1 - <h_i, h_j> / (|h_i| |h_j|)``; in [0, 2].

    Computed in float64 from the Gram matrix of the (row-normalised) features; rounding is
    clipped so the diagonal is exactly 0 and the matrix exactly symmetric.

    Parameters
    ----------
    features : array (n, d), Tensor (n, d) or DataArray (sample, unit_*)
    metric : {"correlation", "euclidean", "cosine"}

    Returns
    -------
    xr.DataArray
        Dims ``(sample, sample_b)``, named ``rdm``, ``attrs["metric"]`` the metric.

    Raises
    ------
    ValueError
        Fewer than 2 samples, NaN or infinite values, an unknown metric, or (correlation,
        cosine) a sample whose vector is constant or zero: its dissimilarity is undefined, and
        the message names the samples.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.5], [3.0, 1.0, 0.0]])
    >>> rdm(x, metric="euclidean").values.round(3)[0]
    array([0.   , 4.153, 3.742])
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}; got metric={metric!r}")
    x = _matrix(features, "features")
    if metric == "euclidean":
        # Differences of centred data: the Gram form then loses nothing to a large mean.
        xc = x - x.mean(axis=0)
        sq = np.einsum("ij,ij->i", xc, xc)
        d = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2.0 * (xc @ xc.T), 0.0, None))
    else:
        rows = x - x.mean(axis=1, keepdims=True) if metric == "correlation" else x
        norms = np.linalg.norm(rows, axis=1)
        bad = np.flatnonzero(norms == 0)
        if bad.size:
            what = "constant" if metric == "correlation" else "all zero"
            raise ValueError(
                f"{metric} dissimilarity is undefined for samples whose feature vector is "
                f"{what}; samples {bad[:10].tolist()} are (use metric='euclidean', or drop them)"
            )
        u = rows / norms[:, None]
        d = np.clip(1.0 - u @ u.T, 0.0, 2.0)
    d = (d + d.T) / 2.0
    np.fill_diagonal(d, 0.0)
    return xr.DataArray(d, dims=("sample", "sample_b"), name="rdm", attrs={"metric": metric})


def _upper(m, name: str) -> np.ndarray:
    values = np.asarray(m.values if isinstance(m, xr.DataArray) else m, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != values.shape[1] or values.shape[0] < 3:
        raise ValueError(
            f"{name} must be a square RDM of 3 or more samples (n, n); got shape {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} holds NaN or infinite dissimilarities")
    return values[np.triu_indices(values.shape[0], k=1)]


def compare_rdms(
    rdm_a, rdm_b, *, method: Literal["spearman", "pearson", "kendall"] = "spearman"
) -> float:
    """The correlation of two RDMs' upper triangles (diagonal excluded).

    Parameters
    ----------
    rdm_a, rdm_b : array (n, n) or DataArray
        Dissimilarities of the same ``n >= 3`` samples, in the same order.
    method : {"spearman", "pearson", "kendall"}
        Spearman's rho (default; RSA's usual choice, since dissimilarities of two systems need
        not be linearly related), Pearson's r or Kendall's tau-b.

    Returns
    -------
    float
        In [-1, 1]; NaN (with scipy's warning) when one triangle is constant.
    """
    if method not in COMPARISONS:
        raise ValueError(f"method must be one of {COMPARISONS}; got method={method!r}")
    a, b = _upper(rdm_a, "rdm_a"), _upper(rdm_b, "rdm_b")
    if a.shape != b.shape:
        raise ValueError(
            "rdm_a and rdm_b must describe the same samples; got "
            f"{np.shape(rdm_a)} and {np.shape(rdm_b)}"
        )
    fn = {"spearman": stats.spearmanr, "pearson": stats.pearsonr, "kendall": stats.kendalltau}
    return float(fn[method](a, b)[0])


def rsa(
    a,
    b,
    *,
    metric: Literal["correlation", "euclidean", "cosine"] = "correlation",
    method: Literal["spearman", "pearson", "kendall"] = "spearman",
) -> float:
    """RSA score of two representations of the same samples: :func:`compare_rdms` of their
    :func:`rdm`.

    Invariant to permuting the samples of both alike, and (for every metric) to orthogonal
    transforms and isotropic scaling of either set's units; the correlation metric is also
    invariant to adding a constant to every unit of a sample.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(30, 6))
    >>> round(rsa(x, 3.0 * x, metric="euclidean"), 10)
    1.0
    """
    x, y = _matrix(a, "a"), _matrix(b, "b")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"a and b must have the same number of samples; got {x.shape} and {y.shape}"
        )
    return compare_rdms(rdm(x, metric=metric), rdm(y, metric=metric), method=method)
