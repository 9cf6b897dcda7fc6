"""Correlation spectrum of a feature layer, its summaries, and power-law spectrum decay.

Two decay exponents, on two spectra, under two names: the correlation spectrum's decay
(``correlation_summary(...)["alpha"]``, :func:`spectrum_decay` of :func:`correlation_spectrum`
over its whole range) and alpha-ReQ (:func:`alpha_req`, Agrawal et al. 2022: the covariance
spectrum over a fixed rank window, weighted by 1/k).
"""

from __future__ import annotations

from numbers import Integral
from typing import Literal

import numpy as np
import xarray as xr

from geomxai._checks import Interval, check
from geomxai._finite import DEAD_UNIT_TOL, live_units
from geomxai.geometry._input import Features, as_features, covariance_eigenvalues

DEFAULT_TOL = DEAD_UNIT_TOL
"""Relative variance at or below which a unit counts as dead: ``var_i <= tol * max_j var_j``.

The one threshold geomxai uses for dead units (:data:`geomxai._finite.DEAD_UNIT_TOL`, shared
with gradient entanglement). On variances, so 1e-8 is a standard-deviation ratio of 1e-4: well
above float32 rounding of a constant unit, well below any unit that carries signal at the
layer's scale."""

ALPHA_REQ_RANKS = (6, 100)
"""alpha-ReQ's default fit window, 1-based inclusive ranks: the public implementation's first
call fits eigenvalues 5..99 (0-based), i.e. ranks 6..100, skipping the leading components."""

WEIGHTINGS = ("uniform", "inverse_rank")


def _live_units(feats: Features, tol: float) -> np.ndarray:
    return live_units(feats.unit_variances(), tol=tol)


def _standardised(feats: Features, live: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Either ``z`` (n, d_live) with ``R = z.T @ z``, or ``R`` (d_live, d_live) directly."""
    var = feats.unit_variances()[live]
    scale = np.sqrt(var)
    if feats.centred is not None:
        z = feats.centred[:, live] / (scale * np.sqrt(feats.count - 1))
        return z, None
    cov = feats.covariance[np.ix_(live, live)]
    return None, cov / np.outer(scale, scale)


def _correlation_matrix(feats: Features, live: np.ndarray) -> np.ndarray:
    z, r = _standardised(feats, live)
    if r is None:
        r = z.T @ z
    # Exact ones on the diagonal: the standardisation makes them 1 up to rounding.
    np.fill_diagonal(r, 1.0)
    return r


def _check_tol(tol: float) -> None:
    if not (0 <= tol < 1):
        raise ValueError(f"tol must be a relative variance in [0, 1); got tol={tol!r}")


def correlation_spectrum(features, *, tol: float = DEFAULT_TOL) -> xr.DataArray:
    """Eigenvalues of the correlation matrix of the live units, descending.

    A unit is live when its variance exceeds ``tol`` times the largest unit variance; dead units
    (constant, e.g. ReLUs that never fire) have no correlation and are left out of the matrix.
    They are counted in ``attrs["n_dead"]``, never turned into NaN. The eigenvalues of a
    correlation matrix sum to the number of live units.

    Parameters
    ----------
    features : array (n, d), Tensor (n, d), DataArray (sample, unit_*) or FeatureMoments
    tol : float
        Relative variance tolerance for live units.

    Returns
    -------
    DataArray (component,)
        Named ``"eigenvalue"``; coordinate ``component`` is the 1-based rank. With n <= d_live
        the spectrum comes from the n x n Gram matrix of the standardised data, padded with the
        exact zeros it implies. Eigenvalues are computed in float64 and clipped at 0 (rounding can
        make the smallest ones slightly negative). ``attrs``: ``n_live``, ``n_dead``, ``n_units``,
        ``n_samples``, ``tol``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(5000, 1))
    >>> h = np.hstack([a, a + 0.01 * rng.normal(size=(5000, 1)), np.zeros((5000, 1))])
    >>> spec = correlation_spectrum(h)
    >>> spec.round(2).values.tolist(), spec.attrs["n_dead"]
    ([2.0, 0.0], 1)
    """
    _check_tol(tol)
    feats = as_features(features)
    live = _live_units(feats, tol)
    d_live = int(live.sum())
    if d_live == 0:
        eig = np.zeros(0)
    else:
        z, r = _standardised(feats, live)
        if r is None and z.shape[0] < d_live:
            # Same non-zero eigenvalues as z.T @ z, at n^3 instead of d^3.
            eig = np.linalg.eigvalsh(z @ z.T)
            eig = np.concatenate([eig, np.zeros(d_live - eig.size)])
        else:
            eig = np.linalg.eigvalsh(z.T @ z if r is None else r)
        eig = np.sort(np.clip(eig, 0.0, None))[::-1]
    return xr.DataArray(
        eig,
        dims=("component",),
        coords={"component": np.arange(1, d_live + 1)},
        name="eigenvalue",
        attrs={
            "n_live": d_live,
            "n_dead": int(feats.dim - d_live),
            "n_units": int(feats.dim),
            "n_samples": int(feats.count),
            "tol": float(tol),
        },
    )


def _check_fit_range(fit_range, *, name: str = "fit_range") -> tuple[int, int | None]:
    """A private copy of ``fit_range`` as ``(lo, hi)``; lists are accepted and left as they are."""
    try:
        lo, hi = tuple(fit_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a pair (lo, hi) of 1-based ranks; got {name}={fit_range!r}"
        ) from None
    # Ranks are 1-based: the first eigenvalue is rank 1.
    check(lo, f"{name}[0]", Interval(Integral, 1, None))
    check(hi, f"{name}[1]", None, Interval(Integral, lo, None))
    return int(lo), None if hi is None else int(hi)


def _check_weighting(weighting: str) -> str:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}; got weighting={weighting!r}")
    return weighting


def _spectrum_values(spectrum) -> np.ndarray:
    values = np.asarray(
        spectrum.values if isinstance(spectrum, xr.DataArray) else spectrum, dtype=np.float64
    )
    if values.ndim != 1:
        raise ValueError(f"spectrum must be 1-D (component,); got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("spectrum contains NaN or infinite values; expected finite eigenvalues")
    return np.sort(values)[::-1]


def _power_law_fit(
    values: np.ndarray, lo: int, hi: int | None, rtol: float, weighting: str
) -> dict[str, float] | int:
    """The fit of ``log l_k = c - alpha log k`` over ranks lo..hi of descending ``values``.

    Returns the result dict, or the number of usable points when there are fewer than 2.
    """
    ranks = np.arange(1, values.size + 1)
    top = values[0] if values.size else 0.0
    keep = (ranks >= lo) & (values > rtol * top) & (values > 0)
    if hi is not None:
        keep &= ranks <= hi
    if keep.sum() < 2:
        return int(keep.sum())
    k = ranks[keep].astype(np.float64)
    x = np.log(k)
    y = np.log(values[keep])
    # Weighted least squares in closed form. alpha-ReQ weights each point by 1/k (as its
    # public implementation does): on a log-rank axis the tail holds most of the points, and
    # the weights keep them from outvoting the head of the window.
    w = 1.0 / k if weighting == "inverse_rank" else np.ones_like(k)
    w = w / w.sum()
    x_mean, y_mean = w @ x, w @ y
    dx = x - x_mean
    slope = float(w @ (dx * (y - y_mean)) / (w @ (dx * dx)))
    intercept = float(y_mean - slope * x_mean)
    # R^2 unweighted over the fitted points, whatever the weighting: how straight the spectrum
    # is on the log-log scale over the window, for the line that was fitted.
    resid = y - (intercept + slope * x)
    ss_res = float(resid @ resid)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return {
        "alpha": -slope,
        "intercept": intercept,
        "r2": float(r2),
        "fit_lo": int(ranks[keep][0]),
        "fit_hi": int(ranks[keep][-1]),
        "n_fit": int(keep.sum()),
    }


def spectrum_decay(
    spectrum,
    *,
    fit_range: tuple[int, int | None] = (1, None),
    rtol: float = 1e-12,
    weighting: Literal["uniform", "inverse_rank"] = "uniform",
) -> dict[str, float]:
    """Power-law decay exponent of a spectrum: fit ``log l_k = c - alpha log k``.

    Least squares in float64 over the 1-based ranks ``lo <= k <= hi`` of ``fit_range``
    (``hi=None``: the last component), each point weighted equally (``"uniform"``) or by ``1/k``
    (``"inverse_rank"``, alpha-ReQ's weighting, see :func:`alpha_req`). Eigenvalues at or below
    ``rtol * l_1`` inside the range are left out (their logarithm is rounding noise or
    undefined); ``n_fit`` says how many points the fit used. The range is read, never modified:
    a published alpha-ReQ implementation shifts a default array in place and drifts from call
    to call.

    Parameters
    ----------
    spectrum : DataArray (component,) or array (k,)
        Eigenvalues; sorted into descending order before ranks are assigned.
    fit_range : tuple of (int, int or None)
        Inclusive 1-based rank range.
    rtol : float
        Relative floor below which eigenvalues are excluded.
    weighting : {"uniform", "inverse_rank"}
        Weight of each point in the least squares.

    Returns
    -------
    dict
        ``alpha`` (decay exponent, positive for a decaying spectrum), ``intercept`` (``c``),
        ``r2`` (coefficient of determination of the log-log fit over the fitted points,
        unweighted; 1 when the fit is exact), ``fit_lo`` and ``fit_hi`` (the ranks actually
        used), ``n_fit``.

    Examples
    --------
    >>> import numpy as np
    >>> k = np.arange(1, 101)
    >>> out = spectrum_decay(3.0 * k**-1.5, fit_range=(2, 50))
    >>> round(out["alpha"], 6), round(out["r2"], 6), out["n_fit"]
    (1.5, 1.0, 49)
    """
    lo, hi = _check_fit_range(fit_range)
    weighting = _check_weighting(weighting)
    values = _spectrum_values(spectrum)
    out = _power_law_fit(values, lo, hi, rtol, weighting)
    if isinstance(out, int):
        raise ValueError(
            f"spectrum_decay needs at least 2 positive eigenvalues in fit_range={fit_range!r}; "
            f"got {out} of {values.size}"
        )
    return out


def alpha_req(
    features,
    *,
    ranks: tuple[int, int | None] = ALPHA_REQ_RANKS,
    rtol: float = 1e-12,
) -> dict[str, float]:
    """alpha-ReQ: the power-law decay exponent of the covariance spectrum (Agrawal et al. 2022).

    Agrawal, Mittal, Richards & Ganguli (2022), "alpha-ReQ: Assessing representation quality
    in self-supervised learning by measuring eigenspectrum decay" (NeurIPS). With ``l_k`` the
    eigenvalues of the covariance of the centred features (descending, ``n - 1`` in the
    denominator; normalising them to sum 1, as the reference's PCA does, only moves the
    intercept), ``log l_k = c - alpha log k`` is fitted by least squares weighted by ``1/k``
    over the 1-based ranks of ``ranks``, as the public implementation (``reptrix``) does.

    Differences from that implementation, all deliberate: ``ranks`` is read, never modified
    (the reference adds 1 in place to its default window on every call, so its second call
    fits ranks 7..101); a window beyond the spectrum is cut to the ranks that exist (``fit_hi``
    says where it ended) instead of failing; eigenvalues at or below ``rtol * l_1`` (a
    rank-deficient covariance's zeros) are left out instead of entering as ``log 0``; ``r2`` is
    computed over the fitted window (the reference scores the fit over ranks up to 500).

    This is not ``correlation_summary(...)["alpha"]``, which fits the *correlation* spectrum
    of the live units over its whole range, unweighted (see ``docs/metrics.md``).

    Parameters
    ----------
    features : array (n, d), Tensor (n, d), DataArray (sample, unit_*) or FeatureMoments
    ranks : tuple of (int, int or None), default (6, 100)
        Inclusive 1-based rank window of the fit; ``None`` as the upper end means the last
        eigenvalue. The default is the reference's first-call window.
    rtol : float
        Relative floor below which eigenvalues are left out of the fit.

    Returns
    -------
    dict
        ``alpha`` (the exponent, positive for a decaying spectrum), ``r2`` (coefficient of
        determination of the log-log fit over the fitted ranks, unweighted), ``intercept``,
        ``fit_lo``, ``fit_hi``, ``n_fit``.

    Raises
    ------
    ValueError
        Fewer than 2 positive eigenvalues in the window (a layer of fewer than ``lo + 1`` units,
        or fewer than ``lo + 2`` samples, has none at the default window); invalid features.

    Examples
    --------
    A spectrum ``l_k = k^-1`` planted on orthogonal axes:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = np.linalg.qr(rng.normal(size=(4000, 200)))[0] * np.sqrt(3999)  # white, exactly
    >>> h = z * np.arange(1, 201) ** -0.5
    >>> out = alpha_req(h)
    >>> round(out["alpha"], 3), round(out["r2"], 3), (out["fit_lo"], out["fit_hi"])
    (1.0, 1.0, (6, 100))
    """
    lo, hi = _check_fit_range(ranks, name="ranks")
    feats = as_features(features)
    values = np.sort(covariance_eigenvalues(feats))[::-1]
    out = _power_law_fit(values, lo, hi, rtol, "inverse_rank")
    if isinstance(out, int):
        window = f"{lo}..{'end' if hi is None else hi}"
        raise ValueError(
            f"alpha_req needs at least 2 positive covariance eigenvalues at ranks {window}; got "
            f"{out} (features of {feats.dim} units and {feats.count} samples have at most "
            f"{min(feats.dim, feats.count - 1)} non-zero eigenvalues). Pass a window that fits, "
            "e.g. ranks=(1, None)"
        )
    return out


def correlation_summary(
    features,
    *,
    tol: float = DEFAULT_TOL,
    fit_range: tuple[int, int | None] = (1, None),
) -> dict[str, float]:
    """Scalar summaries of the correlation structure of the live units, and alpha-ReQ.

    With ``R`` the correlation matrix of the ``d`` live units (see :func:`correlation_spectrum`):

    - ``mean_abs_offdiag = sum_{i != j} |R_ij| / (d (d - 1))``
    - ``offdiag_fro = ||R - I||_F / sqrt(d (d - 1))`` (the root mean square off-diagonal
      correlation; 0 for uncorrelated units, 1 for identical ones)
    - ``alpha``, ``alpha_r2``, ``fit_lo``, ``fit_hi``, ``n_fit``: the correlation spectrum's
      decay, :func:`spectrum_decay` of the eigenvalues of ``R`` over ``fit_range`` (default the
      whole spectrum), unweighted. This is *not* alpha-ReQ (which fits the covariance spectrum
      over a fixed window, weighted); NaN alpha and R^2 when the spectrum has a single non-zero
      eigenvalue (all live units perfectly correlated), where no decay can be fitted
    - ``alpha_req``, ``alpha_req_r2``: :func:`alpha_req` of the features at its default window
      (the covariance spectrum of all units, ranks 6 to 100); NaN when that window holds fewer
      than 2 positive eigenvalues (a layer of 6 units or fewer, or fewer than 8 samples)
    - ``n_live``, ``n_dead``

    Parameters
    ----------
    features : array (n, d), Tensor (n, d), DataArray (sample, unit_*) or FeatureMoments
    tol : float
        Relative variance tolerance for live units.
    fit_range : tuple of (int, int or None)
        Inclusive 1-based rank range of the correlation spectrum's decay fit.

    Returns
    -------
    dict
        The keys above, floats and ints.

    Raises
    ------
    ValueError
        With fewer than 2 live units (no off-diagonal correlation exists).

    Examples
    --------
    >>> import numpy as np
    >>> h = np.random.default_rng(0).normal(size=(100000, 3))
    >>> s = correlation_summary(h)
    >>> round(s["mean_abs_offdiag"], 2), s["n_live"], s["n_dead"]
    (0.0, 3, 0)
    >>> s["alpha_req"]  # three units: no eigenvalue at ranks 6..100
    nan
    """
    _check_tol(tol)
    fit_range = _check_fit_range(fit_range)
    # Every summary is scale-free (correlations, decay exponents and their R^2), so they are
    # computed on features rescaled by a power of two: finite for features at any finite scale.
    feats = as_features(features, rescale=True)
    live = _live_units(feats, tol)
    d = int(live.sum())
    if d < 2:
        raise ValueError(
            f"correlation_summary needs at least 2 live units; got {d} live of {feats.dim} "
            f"(tol={tol})"
        )
    r = _correlation_matrix(feats, live)
    off = ~np.eye(d, dtype=bool)
    pairs = d * (d - 1)
    mean_abs = float(np.abs(r[off]).sum() / pairs)
    fro = float(np.sqrt((r[off] ** 2).sum() / pairs))
    eig = np.sort(np.clip(np.linalg.eigvalsh(r), 0.0, None))[::-1]
    try:
        decay = spectrum_decay(eig, fit_range=fit_range)
    except ValueError:
        if np.count_nonzero(eig > 1e-12 * eig[0]) >= 2:
            raise  # a fit_range beyond the spectrum, not a degenerate spectrum
        # Perfectly correlated units: one non-zero eigenvalue, no decay to fit.
        decay = {"alpha": np.nan, "r2": np.nan, "fit_lo": 1, "fit_hi": 1, "n_fit": 1}
    lo, hi = ALPHA_REQ_RANKS
    req = _power_law_fit(
        np.sort(covariance_eigenvalues(feats))[::-1], lo, hi, 1e-12, "inverse_rank"
    )
    if isinstance(req, int):  # too narrow (or too few samples) for alpha-ReQ's window
        req = {"alpha": np.nan, "r2": np.nan}
    return {
        "mean_abs_offdiag": mean_abs,
        "offdiag_fro": fro,
        "alpha": decay["alpha"],
        "alpha_r2": decay["r2"],
        "fit_lo": decay["fit_lo"],
        "fit_hi": decay["fit_hi"],
        "n_fit": decay["n_fit"],
        "alpha_req": float(req["alpha"]),
        "alpha_req_r2": float(req["r2"]),
        "n_live": d,
        "n_dead": int(feats.dim - d),
    }
