"""Axis swapping: do the top covariance axes of a layer keep their order between checkpoints?

Principal axes are only defined up to sign, and up to any rotation inside a degenerate
eigenspace; both would be mistaken for "the representation changed" by a naive column-by-column
comparison. The metrics here therefore compare absolute overlaps, match axes with the Hungarian
algorithm, and report swaps between near-degenerate eigenvalues apart from the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.linalg
import xarray as xr
from scipy.optimize import linear_sum_assignment

from geomxai._features import as_features, as_float64, gram_matrix
from geomxai.dynamics._arrays import check_positive_int, eigvals_vector, eigvecs_matrix

# Largest tolerated |U^T U - I| entry. float32 eigensolvers on d ~ 2000 stay near 1e-4; anything
# much larger is not a basis (loadings scaled by sqrt(eigenvalue), rows passed as columns, ...) and
# would give overlaps above 1 and a meaningless subspace overlap, so it is refused, not warned.
_ORTHONORMAL_ATOL = 1e-3

# Bonus added to the diagonal of the overlap before matching: among matchings whose total overlap
# differs by less than this (exact ties, e.g. a 45-degree rotation in a plane), the one that keeps
# more axes in place wins, so a tie is never reported as a swap and the matching commutes with
# relabelling both checkpoints' axes in the same way. Far below any overlap difference that means
# something, far above float64 rounding of a sum of k overlaps.
_TIE_BONUS = 1e-9

# The n x n Gram route to the eigenvectors divides by sqrt(eigenvalue); it is used only when the
# k-th eigenvalue is at least this fraction of the first, so the division loses < ~1e-10.
_GRAM_MIN_RATIO = 1e-6


def top_eigvecs(features, k) -> tuple[xr.DataArray, xr.DataArray]:
    """The top-``k`` eigenvalues and eigenvectors of the covariance of ``features``.

    Parameters
    ----------
    features : array-like (n, d), Tensor (n, d), DataArray (sample, unit) or FeatureMoments
        Features of a probe set at one checkpoint. A DataArray needs a ``sample`` dim; its other
        dim (``unit`` or the collector's ``unit_<layer>``) becomes ``unit`` in the result.
        :class:`geomxai.collect.FeatureMoments` (streamed moments) are accepted too.
    k : int
        Number of axes, ``1 <= k <= d``.

    Returns
    -------
    eigvals : DataArray (component,) of float64
        Covariance eigenvalues (``n - 1`` in the denominator), in decreasing order, clipped at 0.
        ``attrs["total_variance"]`` holds the trace of the covariance (for explained-variance
        ratios) and ``attrs["n_samples"]`` the probe-set size.
    eigvecs : DataArray (unit, component) of float64
        Orthonormal eigenvectors, one per column, in the order of ``eigvals``. Sign convention:
        the entry of largest magnitude of every column is positive (the first such entry on
        exact ties), so the same data always give the same matrix. Inside an exactly degenerate
        eigenspace the basis is still arbitrary; :func:`axis_swaps` reports swaps there apart.

    Raises
    ------
    ValueError
        NaN/inf features, fewer than 2 samples, ``k > d``.

    Notes
    -----
    The covariance is formed from centred float64 data and diagonalised with ``eigh`` (only the
    top ``k`` pairs are computed). With fewer samples than units (``n < d``) the ``n x n`` Gram
    matrix is diagonalised instead, which is cheaper and gives the same nonzero spectrum; the
    covariance route is kept whenever an axis beyond the data's rank is asked for.

    Both results are DataArrays: use ``.values`` for numpy. Note that ``@`` between two
    DataArrays contracts over *all* shared dims (``vecs.T @ vecs`` is a scalar); write
    ``vecs.values.T @ vecs.values`` for the Gram matrix.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 3)) * [3.0, 1.0, 0.1]  # most variance on unit 0, then unit 1
    >>> vals, vecs = top_eigvecs(x, 2)
    >>> vecs.dims, vecs.shape
    (('unit', 'component'), (3, 2))
    >>> np.abs(vecs.values).argmax(axis=0).tolist()  # the axes follow the units
    [0, 1]
    >>> bool((vecs.values.max(axis=0) > 0).all())  # largest entry of each column is positive
    True
    """
    k = check_positive_int(k, name="k")
    feats = as_features(features)
    n, d, centred, unit_coord = feats.count, feats.dim, feats.centred, feats.unit_coord
    if k > d:
        raise ValueError(f"k must be at most the number of units d={d}; got k={k}")

    vals = vecs = None
    if centred is not None:
        total = float(np.einsum("ij,ij->", centred, centred) / (n - 1))
        if n < d and k <= n - 1:
            gram_vals, gram_vecs = _top_eigh(gram_matrix(feats), k)
            if gram_vals[-1] > _GRAM_MIN_RATIO * gram_vals[0]:
                vals = gram_vals
                # u = X^T v / |X^T v| and |X^T v|^2 = (n - 1) * lambda for a Gram eigenpair.
                vecs = centred.T @ gram_vecs / np.sqrt((n - 1) * gram_vals)
    else:
        total = float(np.trace(feats.covariance))
    if vecs is None:
        vals, vecs = _top_eigh(feats.covariance_matrix(), k)

    # eigh may return -1e-17 for a zero eigenvalue; a variance is never negative.
    vals = np.maximum(vals, 0.0)
    vecs = _sign_convention(vecs)
    # 1-based ranks, as correlation_spectrum's component (one convention; issue 16).
    component = np.arange(1, k + 1)
    unit_coords = {} if unit_coord is None else {"unit": unit_coord}
    eigvals = xr.DataArray(
        vals,
        dims=("component",),
        coords={"component": component},
        name="eigvals",
        attrs={"total_variance": total, "n_samples": int(n)},
    )
    eigvecs = xr.DataArray(
        vecs,
        dims=("unit", "component"),
        coords={**unit_coords, "component": component},
        name="eigvecs",
    )
    return eigvals, eigvecs


def axis_swaps(
    eigvecs_a,
    eigvecs_b,
    *,
    eigvals_a=None,
    eigvals_b=None,
    degenerate_tol: float = 0.05,
) -> xr.Dataset:
    """Match the top-``k`` axes of two consecutive checkpoints and count those that changed place.

    With ``U_a``, ``U_b`` the (d, k) eigenvector matrices, the overlap is ``O = |U_a^T U_b|``
    (absolute value: a sign flip is not a change). Axes are matched one-to-one by the Hungarian
    algorithm, maximising the total overlap; axis ``i`` of ``a`` is *swapped* when it is matched
    to an index ``j != i`` of ``b``.

    Parameters
    ----------
    eigvecs_a, eigvecs_b : array-like (d, k), Tensor (d, k) or DataArray (unit, component)
        Orthonormal columns: the top-``k`` covariance eigenvectors of the same probe set at two
        checkpoints, sorted by decreasing eigenvalue (as :func:`top_eigvecs` returns them).
    eigvals_a, eigvals_b : array-like (k,), optional
        The matching eigenvalues. The near-degeneracy of a swap is judged at *both* checkpoints
        when both are given (a small gap at either one makes it near-degenerate), at the one
        checkpoint whose eigenvalues are given otherwise.
    degenerate_tol : float, default 0.05
        A swap of axis ``i`` to index ``j`` is *near-degenerate* when the relative gap
        ``|l_i - l_j| / max(|l_i|, |l_j|)`` between the eigenvalues at positions ``i`` and ``j``
        is below this at checkpoint ``a`` or at checkpoint ``b`` (a gap of 0/0 counts as 0).

    Returns
    -------
    xr.Dataset
        Scalar variables (float64):

        - ``swap_rate``: share of the ``k`` axes matched to a different index, in [0, 1].
        - ``matched_overlap``: mean of ``O`` over the matched pairs, in [0, 1].
        - ``subspace_overlap``: ``||U_a^T U_b||_F^2 / k``, in [0, 1]; 1 when both span the same
          subspace, whatever happens inside it.
        - ``degenerate_swap_rate``, ``nondegenerate_swap_rate``: swapped axes whose swap is / is
          not near-degenerate, as shares of all ``k`` axes (they add up to ``swap_rate``); NaN
          when no eigenvalues are given. ``nondegenerate_swap_rate`` counts only swaps that no
          sampling noise inside a (nearly) degenerate eigenspace can explain: the headline rate
          to compare across models.

        Per-axis variables over dim ``component`` (the axes of ``a``, by 1-based rank as
        everywhere in geomxai): ``matching`` (int, the 1-based rank in ``b`` of the axis matched
        to each axis, a ``component_b`` coordinate), ``swapped`` (bool, ``matching !=
        component``), ``axis_overlap`` (the matched overlap of each axis); and ``overlap`` (dims
        ``component``, ``component_b``), the matrix ``O``. ``attrs`` hold ``d``, ``k``, ``degenerate_tol`` and ``degenerate_reference``,
        the eigenvalues degeneracy was judged on (``"both"``, ``"eigvals_a"``, ``"eigvals_b"``
        or ``"none"``).

    Raises
    ------
    ValueError
        Shapes differ, ``k > d``, NaN/inf entries, columns not orthonormal (``|U^T U - I|``
        above 1e-3), eigenvalues of the wrong length, a negative ``degenerate_tol``.

    Notes
    -----
    When several matchings reach the same total overlap (within 1e-9), the one that keeps the
    most axes in place is chosen, so exact ties are never counted as swaps. A cyclic exchange
    (``0 -> 1 -> 2 -> 0``) counts every axis on the cycle; each swapped axis ``i`` is judged
    degenerate or not on the pair ``(i, matching[i])``.

    Examples
    --------
    The first two axes trade places and the second flips sign; their eigenvalues are 0.5% apart:

    >>> import numpy as np
    >>> u_a = np.eye(4)[:, :3]
    >>> u_b = u_a[:, [1, 0, 2]] * [1.0, -1.0, 1.0]
    >>> out = axis_swaps(u_a, u_b, eigvals_a=[2.0, 1.99, 1.0])
    >>> out.matching.values.tolist()  # 1-based ranks: axes 1 and 2 trade places
    [2, 1, 3]
    >>> round(float(out.swap_rate), 4), float(out.matched_overlap), float(out.subspace_overlap)
    (0.6667, 1.0, 1.0)
    >>> round(float(out.degenerate_swap_rate), 4), float(out.nondegenerate_swap_rate)
    (0.6667, 0.0)

    The same swap with a wide gap at ``a`` but a near-tie at ``b`` is near-degenerate too:

    >>> out = axis_swaps(u_a, u_b, eigvals_a=[2.0, 1.0, 0.5], eigvals_b=[1.5, 1.49, 0.5])
    >>> float(out.nondegenerate_swap_rate), out.attrs["degenerate_reference"]
    (0.0, 'both')
    """
    u_a = eigvecs_matrix(eigvecs_a, name="eigvecs_a")
    u_b = eigvecs_matrix(eigvecs_b, name="eigvecs_b")
    if u_a.shape != u_b.shape:
        raise ValueError(
            "eigvecs_a and eigvecs_b must have the same shape (d units, k components); "
            f"got {u_a.shape} and {u_b.shape}"
        )
    _check_basis(u_a, name="eigvecs_a")
    _check_basis(u_b, name="eigvecs_b")
    k = u_a.shape[1]
    tol = _check_tol(degenerate_tol)
    vals_a = None if eigvals_a is None else eigvals_vector(eigvals_a, k=k, name="eigvals_a")
    vals_b = None if eigvals_b is None else eigvals_vector(eigvals_b, k=k, name="eigvals_b")
    pair = _pair_metrics(u_a, u_b, vals_a, vals_b, tol)
    label = _reference_label(vals_a is not None, vals_b is not None)
    return _to_dataset([pair], d=u_a.shape[0], k=k, tol=tol, reference=label, stacked=False)


def axis_swap_sequence(
    checkpoints: Iterable[tuple],
    k=None,
    *,
    labels: Sequence | None = None,
    degenerate_tol: float = 0.05,
) -> xr.Dataset:
    """:func:`axis_swaps` for every pair of consecutive checkpoints, over a ``step`` dim.

    Parameters
    ----------
    checkpoints : iterable of T >= 2 pairs ``(eigvals, eigvecs)``
        One pair per checkpoint, in training order, all for the same probe set and layer, as
        :func:`top_eigvecs` returns them: ``eigvals`` (>= k,) array-like, Tensor or DataArray, or
        ``None`` (then that checkpoint's swaps are not split into degenerate and not);
        ``eigvecs`` (d, >= k) array, Tensor or DataArray (unit, component). The one input form:
        from features, pass ``[top_eigvecs(f, k) for f in features]``.
    k : int, optional
        Number of axes: the first ``k`` columns of every ``eigvecs``; ``None`` uses them all.
    labels : sequence of length T, optional
        Checkpoint labels (epochs, steps); default ``0 .. T-1``.
    degenerate_tol : float, default 0.05
        As in :func:`axis_swaps`; judged at both checkpoints of each pair (a near-tie at either
        makes a swap near-degenerate), on the eigenvalues that are known.

    Returns
    -------
    xr.Dataset
        The variables of :func:`axis_swaps` with a leading ``step`` dim of length T - 1 (step
        ``s`` compares checkpoints ``s`` and ``s + 1``), and coordinates ``checkpoint_a`` and
        ``checkpoint_b`` (dim ``step``) holding the labels of the two checkpoints compared.

    Raises
    ------
    ValueError
        Fewer than 2 checkpoints, an entry that is not an ``(eigvals, eigvecs)`` pair, differing
        widths, eigenvalues from probe sets of different sizes (their ``n_samples`` attrs), and
        everything :func:`axis_swaps` refuses.

    Examples
    --------
    Unit 0 carries the most variance until the last checkpoint, where unit 1 overtakes it:

    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(400, 3))
    >>> feats = [z * [3.0, 2.0, 1.0], z * [3.0, 2.1, 1.0], z * [2.0, 3.0, 1.0]]
    >>> seq = axis_swap_sequence([top_eigvecs(f, 2) for f in feats], labels=[0, 5, 10])
    >>> seq.swap_rate.values.tolist()
    [0.0, 1.0]
    >>> seq.checkpoint_b.values.tolist()
    [5, 10]
    """
    items = list(checkpoints)
    if len(items) < 2:
        raise ValueError(f"axis_swap_sequence needs at least 2 checkpoints; got {len(items)}")
    if labels is None:
        labels = np.arange(len(items))
    else:
        labels = np.asarray(labels)
        if labels.shape != (len(items),):
            raise ValueError(
                f"labels must have one entry per checkpoint ({len(items)}); "
                f"got shape {labels.shape}"
            )
    if k is not None:
        k = check_positive_int(k, name="k")
    tol = _check_tol(degenerate_tol)

    bases = [_resolve_checkpoint(item, k, index) for index, item in enumerate(items)]
    _check_alike(bases)
    d, k = bases[0][0].shape
    steps = list(zip(bases[:-1], bases[1:], strict=True))
    # Degeneracy judged at both checkpoints of each pair, as axis_swaps does.
    pairs = [_pair_metrics(a[0], b[0], a[1], b[1], tol) for a, b in steps]
    used = {_reference_label(a[1] is not None, b[1] is not None) for a, b in steps}
    reference = used.pop() if len(used) == 1 else "mixed"
    out = _to_dataset(pairs, d=d, k=k, tol=tol, reference=reference, stacked=True)
    return out.assign_coords(checkpoint_a=("step", labels[:-1]), checkpoint_b=("step", labels[1:]))


def _top_eigh(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenpairs of a symmetric matrix, in decreasing order."""
    m = matrix.shape[0]
    vals, vecs = scipy.linalg.eigh(matrix, subset_by_index=[m - k, m - 1], check_finite=False)
    return vals[::-1].copy(), vecs[:, ::-1].copy()


def _sign_convention(vecs: np.ndarray) -> np.ndarray:
    """Flip columns so that each one's entry of largest magnitude is positive."""
    rows = np.abs(vecs).argmax(axis=0)
    signs = np.sign(vecs[rows, np.arange(vecs.shape[1])])
    signs[signs == 0] = 1.0
    return vecs * signs


def _check_basis(u: np.ndarray, *, name: str) -> None:
    d, k = u.shape
    if k == 0:
        raise ValueError(f"{name} has no columns; expected (d, k) with k >= 1")
    if k > d:
        raise ValueError(
            f"{name} has k={k} columns but only d={d} rows; eigenvectors are the columns of a "
            "(d units, k components) matrix (was it transposed?)"
        )
    deviation = np.abs(u.T @ u - np.eye(k))
    worst = float(deviation.max())
    if worst > _ORTHONORMAL_ATOL:
        norms = np.linalg.norm(u, axis=0)
        raise ValueError(
            f"{name} must have orthonormal columns (|U^T U - I| <= {_ORTHONORMAL_ATOL}); got a "
            f"largest deviation of {worst:.3g} (column norms from {norms.min():.3g} to "
            f"{norms.max():.3g}). Pass eigenvectors, not loadings scaled by eigenvalues; "
            "top_eigvecs(features, k) computes them"
        )


def _check_tol(tol) -> float:
    try:
        value = float(tol)
    except (TypeError, ValueError):
        raise TypeError(f"degenerate_tol must be a number; got {tol!r}") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"degenerate_tol must be a finite number >= 0; got {tol!r}")
    return value


def _reference_label(has_a: bool, has_b: bool) -> str:
    """Which eigenvalues the degeneracy of a pair's swaps was judged on."""
    return {(True, True): "both", (True, False): "eigvals_a", (False, True): "eigvals_b"}.get(
        (has_a, has_b), "none"
    )


def _relative_gap(eigvals: np.ndarray, index: np.ndarray, matching: np.ndarray) -> np.ndarray:
    """``|l_i - l_j| / max(|l_i|, |l_j|)`` for each pair of positions (i, matching[i])."""
    l_i, l_j = eigvals[index], eigvals[matching]
    scale = np.maximum(np.abs(l_i), np.abs(l_j))
    return np.divide(np.abs(l_i - l_j), scale, out=np.zeros(index.size), where=scale > 0)


def _pair_metrics(u_a, u_b, eigvals_a, eigvals_b, tol) -> dict[str, np.ndarray]:
    """Every per-pair quantity, as numpy values, for one pair of (d, k) bases.

    A swap of position ``i`` to ``j`` is near-degenerate when the eigenvalues at positions
    ``i`` and ``j`` are close at either checkpoint whose eigenvalues are known: a near-tie at
    ``a`` lets the solver order the two axes either way there, a near-tie at ``b`` the same
    at ``b``, and either one alone can produce the swap.
    """
    k = u_a.shape[1]
    product = u_a.T @ u_b
    overlap = np.abs(product)
    _, matching = linear_sum_assignment(overlap + _TIE_BONUS * np.eye(k), maximize=True)
    index = np.arange(k)
    swapped = matching != index
    axis_overlap = overlap[index, matching]
    known = [vals for vals in (eigvals_a, eigvals_b) if vals is not None]
    if not known:
        degenerate_rate = nondegenerate_rate = np.nan
    else:
        near = np.zeros(k, dtype=bool)
        for vals in known:
            near |= _relative_gap(vals, index, matching) < tol
        degenerate = swapped & near
        degenerate_rate = np.count_nonzero(degenerate) / k
        nondegenerate_rate = np.count_nonzero(swapped & ~degenerate) / k
    return {
        "swap_rate": np.float64(np.count_nonzero(swapped) / k),
        "matched_overlap": np.float64(axis_overlap.mean()),
        "subspace_overlap": np.float64(np.sum(product * product) / k),
        "degenerate_swap_rate": np.float64(degenerate_rate),
        "nondegenerate_swap_rate": np.float64(nondegenerate_rate),
        # Ranks, 1-based like the component coordinates (positions are 0-based above).
        "matching": matching.astype(np.int64) + 1,
        "swapped": swapped,
        "axis_overlap": axis_overlap,
        "overlap": overlap,
    }


_SCALARS = (
    "swap_rate",
    "matched_overlap",
    "subspace_overlap",
    "degenerate_swap_rate",
    "nondegenerate_swap_rate",
)
_PER_AXIS = ("matching", "swapped", "axis_overlap")


def _to_dataset(pairs, *, d, k, tol, reference, stacked) -> xr.Dataset:
    lead = ("step",) if stacked else ()

    def value(key):
        return np.stack([p[key] for p in pairs]) if stacked else pairs[0][key]

    data = {key: (lead, value(key)) for key in _SCALARS}
    data.update({key: ((*lead, "component"), value(key)) for key in _PER_AXIS})
    data["overlap"] = ((*lead, "component", "component_b"), value("overlap"))
    coords = {"component": np.arange(1, k + 1), "component_b": np.arange(1, k + 1)}
    if stacked:
        coords["step"] = np.arange(len(pairs))
    attrs = {"d": int(d), "k": int(k), "degenerate_tol": tol, "degenerate_reference": reference}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _check_alike(bases) -> None:
    """Every checkpoint's eigenvectors have one shape, and its probe set (if known) one size."""
    first_vecs, _, first_n = bases[0]
    for index, (vecs, _, n) in enumerate(bases[1:], start=1):
        if vecs.shape != first_vecs.shape:
            raise ValueError(
                "every checkpoint must give eigenvectors of the same shape (d, k); "
                f"checkpoint 0 gives {first_vecs.shape}, checkpoint {index} gives {vecs.shape}"
            )
        if n is not None and first_n is not None and n != first_n:
            raise ValueError(
                "axis swaps compare a fixed probe set; checkpoint 0 has "
                f"n={first_n} samples, checkpoint {index} has n={n}"
            )


def _resolve_checkpoint(item, k, index):
    """(eigvecs (d, k), eigvals (k,) or None, n or None) for one ``(eigvals, eigvecs)`` entry."""
    name = f"checkpoints[{index}]"
    if not isinstance(item, tuple) or len(item) != 2:
        got = f"a tuple of length {len(item)}" if isinstance(item, tuple) else type(item).__name__
        shape = f" of shape {tuple(item.shape)}" if hasattr(item, "shape") else ""
        raise ValueError(
            f"{name} must be a pair (eigvals, eigvecs) as top_eigvecs returns it; got "
            f"{got}{shape}. For features pass [top_eigvecs(f, k) for f in features]"
        )
    vals, vecs = item
    n = getattr(vals, "attrs", {}).get("n_samples")
    vecs = eigvecs_matrix(vecs, name=name)
    width = vecs.shape[1] if k is None else k
    if width > vecs.shape[1]:
        raise ValueError(f"{name} has {vecs.shape[1]} eigenvector columns; k={k} asked for")
    vecs = vecs[:, :width]
    _check_basis(vecs, name=name)
    if vals is not None:
        vals = as_float64(vals, name=f"{name} eigvals")
        if vals.ndim != 1 or vals.shape[0] < width:
            raise ValueError(
                f"{name} eigvals must be 1-D with at least k={width} entries; "
                f"got shape {vals.shape}"
            )
        vals = eigvals_vector(vals[:width], k=width, name=f"{name} eigvals")
    return vecs, vals, None if n is None else int(n)
