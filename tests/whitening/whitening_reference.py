"""Slow references for geomxai.whitening, written from the definitions with numpy and scipy.

Every function loops over groups explicitly and uses ``scipy.linalg.eigh`` in float64, so that the
fast batched implementation is checked against something obviously right.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from hypothesis import HealthCheck, settings


def hyp_settings(max_examples: int) -> settings:
    """Small, reproducible hypothesis runs: derandomised, no example database, no deadline."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def group_slices(d: int, group_size: int | None) -> list[slice]:
    g = d if group_size is None else group_size
    return [slice(s, min(s + g, d)) for s in range(0, d, g)]


def cov_biased(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=0)
    return xc.T @ xc / x.shape[0]


def zca_matrix(cov: np.ndarray, eps: float) -> np.ndarray:
    lam, u = scipy.linalg.eigh(cov)
    lam = np.clip(lam, 0.0, None)
    return u @ np.diag(1.0 / np.sqrt(lam + eps)) @ u.T


def zca_whiten(x: np.ndarray, group_size: int | None, eps: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for sl in group_slices(x.shape[1], group_size):
        xg = x[:, sl]
        w = zca_matrix(cov_biased(xg), eps)
        out[:, sl] = (xg - xg.mean(axis=0)) @ w.T
    return out


def relative_floor(cov: np.ndarray, eps: float) -> float:
    """``eps max(1, tr(C) / m)``: what Newton-Schulz with ``iters="auto"`` adds to the diagonal."""
    return eps * max(1.0, float(np.trace(cov)) / cov.shape[0])


def zca_whiten_floored(x: np.ndarray, group_size: int | None, eps: float) -> np.ndarray:
    """ZCA of each group's ``C + relative_floor(C, eps) I``: the limit of ``iters="auto"``."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for sl in group_slices(x.shape[1], group_size):
        xg = x[:, sl]
        c = cov_biased(xg)
        out[:, sl] = (xg - xg.mean(axis=0)) @ zca_matrix(c, relative_floor(c, eps)).T
    return out


def newton_schulz_matrix(cov: np.ndarray, eps: float, iters: int) -> np.ndarray:
    """IterNorm as printed: P <- 1.5 P - 0.5 P^3 S (uncoupled; fine for few iterations)."""
    m = cov.shape[0]
    sigma = cov + eps * np.eye(m)
    tr = np.trace(sigma)
    s = sigma / tr
    p = np.eye(m)
    for _ in range(iters):
        p = 1.5 * p - 0.5 * np.linalg.matrix_power(p, 3) @ s
    return p / np.sqrt(tr)


def newton_schulz_whiten(
    x: np.ndarray, group_size: int | None, eps: float, iters: int
) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for sl in group_slices(x.shape[1], group_size):
        xg = x[:, sl]
        w = newton_schulz_matrix(cov_biased(xg), eps, iters)
        out[:, sl] = (xg - xg.mean(axis=0)) @ w.T
    return out


def offdiag_loss(h: np.ndarray, group_size: int | None, eps: float) -> float:
    h = np.asarray(h, dtype=np.float64)
    total, pairs = 0.0, 0
    for sl in group_slices(h.shape[1], group_size):
        c = cov_biased(h[:, sl])
        std = np.sqrt(np.diag(c) + eps)
        r = c / np.outer(std, std)
        m = c.shape[0]
        for i in range(m):
            for j in range(m):
                if i != j:
                    total += r[i, j] ** 2
                    pairs += 1
    return total / pairs


def decov_loss(h: np.ndarray, group_size: int | None) -> float:
    h = np.asarray(h, dtype=np.float64)
    total = 0.0
    for sl in group_slices(h.shape[1], group_size):
        c = cov_biased(h[:, sl])
        total += 0.5 * (np.sum(c**2) - np.sum(np.diag(c) ** 2))
    return total


def random_orthogonal(m: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(m, m)))
    return q * np.sign(np.diag(r))
