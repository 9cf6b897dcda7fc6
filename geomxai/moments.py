"""Running first and second moments of a feature layer, merged exactly (Chan et al.).

A leaf module (it imports only numpy and torch): the collector produces :class:`FeatureMoments`
and the geometry and dynamics metrics accept them, so the type sits below both.
:mod:`geomxai.collect` re-exports it, which is where users find it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class FeatureMoments:
    """Running count, mean and centred sum of outer products of a (n, d) feature stream, in float64.

    Memory is O(d^2) whatever the number of samples. Batches are merged with the pairwise update of
    Chan, Golub & LeVeque (1979), which stays accurate where the naive ``E[x x^T] - m m^T`` cancels
    catastrophically (features with a large mean and a small spread).

    Attributes
    ----------
    count : int
        Number of samples seen.
    mean : ndarray (d,)
        Running mean.
    m2 : ndarray (d, d)
        Sum over samples of ``(x - mean)(x - mean)^T``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 3))
    >>> m = FeatureMoments.empty(3)
    >>> for chunk in np.array_split(x, 7):
    ...     _ = m.update(chunk)
    >>> bool(np.allclose(m.covariance(), np.cov(x, rowvar=False)))
    True
    """

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> FeatureMoments:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @classmethod
    def from_batch(cls, x) -> FeatureMoments:
        """Moments of one batch (n, d): a numpy array or a tensor on any device."""
        if isinstance(x, torch.Tensor):
            # Reduce on the tensor's own device, in float64, and move only d + d^2 numbers.
            xt = x.detach().to(torch.float64)
            mean = xt.mean(0)
            centred = xt - mean
            return cls(xt.shape[0], mean.cpu().numpy(), (centred.T @ centred).cpu().numpy())
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(0)
        centred = x - mean
        return cls(x.shape[0], mean, centred.T @ centred)

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def merge(self, other: FeatureMoments) -> FeatureMoments:
        """Combine in place with another set of moments of the same width; returns ``self``."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge moments of width {other.dim} into width {self.dim}")
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean.copy(), other.m2.copy()
            return self
        n = self.count + other.count
        delta = other.mean - self.mean
        self.m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.count * other.count / n)
        self.mean = self.mean + delta * (other.count / n)
        self.count = n
        return self

    def update(self, x) -> FeatureMoments:
        """Add a batch (n, d); returns ``self``."""
        return self.merge(FeatureMoments.from_batch(x))

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """Covariance (d, d) with ``count - ddof`` in the denominator."""
        if self.count - ddof <= 0:
            raise ValueError(f"covariance needs more than {ddof} sample(s); got count={self.count}")
        return self.m2 / (self.count - ddof)
