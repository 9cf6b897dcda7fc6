"""The geometry metrics' view of their input: the shared normaliser and the covariance spectrum.

Every accepted container (arrays, tensors, DataArrays (sample, unit), FeatureMoments) is turned
into :class:`~geomxai._features.Features` by :func:`geomxai._features.as_features`, the one
normaliser the geometry and dynamics metrics share; it is re-exported here for the geometry
modules. Everything downstream works in float64 because eigendecompositions of float32
covariances lose the small eigenvalues that the entropy and decay metrics are sensitive to.
"""

from __future__ import annotations

import numpy as np

from geomxai._features import Features, as_features, as_matrix, gram_matrix

__all__ = ["Features", "as_features", "as_matrix", "covariance_eigenvalues", "gram_matrix"]


def covariance_eigenvalues(feats: Features) -> np.ndarray:
    """Non-zero-capable covariance eigenvalues, descending, clipped at 0.

    With n < d the d x d covariance has at most n - 1 non-zero eigenvalues, all shared with the
    n x n Gram matrix of the centred data, which is cheaper to decompose; the zeros it leaves out
    contribute nothing to any metric here.
    """
    gram = gram_matrix(feats)
    # eigvalsh can return tiny negative values for a positive semi-definite matrix; they are
    # rounding noise, and a negative "variance" would break the entropy.
    eig = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
    return eig[::-1]
