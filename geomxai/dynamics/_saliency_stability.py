"""Saliency stability: does a probe image keep its saliency map from one checkpoint to the next?"""

from __future__ import annotations

import numpy as np
import xarray as xr

from geomxai._features import as_float64, check_finite

_UNDEFINED_NOTE = (
    "NaN where the map of a sample is all zero at either checkpoint (cosine undefined); "
    ".mean() skips them"
)


def saliency_stability(maps_a, maps_b) -> xr.DataArray:
    """Per-sample cosine similarity of saliency maps at two checkpoints.

    Each sample's map is flattened and ``cos = <a, b> / (|a| |b|)`` is computed in float64.

    Parameters
    ----------
    maps_a, maps_b : array-like (n, H, W), Tensor (n, H, W) or DataArray (sample, ...)
        Saliency maps of the same n probe images at two checkpoints, as
        :func:`geomxai.attribution.saliency` returns them. Any trailing shape works, e.g.
        (n, C, H, W) for per-channel maps: every sample is flattened. A DataArray must have a
        ``sample`` dim (moved first); its ``sample`` coordinate is kept.

    Returns
    -------
    DataArray (sample,) of float64
        Cosine similarity of each sample's pair of maps, in [-1, 1]: 1 for identical maps (or
        one a positive multiple of the other), 0 for orthogonal maps, -1 for negated maps.
        ``.mean()`` is the headline number. Where a map is all zero at either checkpoint the
        cosine is undefined and the entry is NaN (not 0: "no saliency" is not "dissimilar
        saliency"); ``.mean()`` skips such entries, and ``attrs["n_undefined"]`` counts them.
        No warning is emitted.

    Raises
    ------
    ValueError
        Shapes differ, fewer than 2 dims, no samples, maps of no pixels, NaN/inf entries.

    Notes
    -----
    Signed maps are compared as they are; pass ``abs()`` of them when the sign carries no
    meaning for the question asked (absolute-gradient saliency already is unsigned).

    Examples
    --------
    >>> import numpy as np
    >>> maps = np.random.default_rng(0).random((3, 8, 8))
    >>> later = 2.0 * maps  # a rescaled map is the same map
    >>> later[2] = 0.0  # sample 2 lost all saliency
    >>> s = saliency_stability(maps, later)
    >>> s.dims, s.values.round(6).tolist()
    (('sample',), [1.0, 1.0, nan])
    >>> round(float(s.mean()), 6), s.attrs["n_undefined"]
    (1.0, 1)
    """
    a, sample_coord = _maps_input(maps_a, name="maps_a")
    b, sample_coord_b = _maps_input(maps_b, name="maps_b")
    if a.shape != b.shape:
        raise ValueError(
            f"maps_a and maps_b must have the same shape (n, H, W); got {a.shape} and {b.shape}"
        )
    n = a.shape[0]
    unit_a, zero_a = _unit_rows(a.reshape(n, -1))
    unit_b, zero_b = _unit_rows(b.reshape(n, -1))
    # Rounding can leave |cos| a few ulps above 1 for parallel maps.
    cosine = np.clip(np.einsum("ij,ij->i", unit_a, unit_b), -1.0, 1.0)
    undefined = zero_a | zero_b
    cosine[undefined] = np.nan
    if sample_coord is None:
        sample_coord = sample_coord_b if sample_coord_b is not None else np.arange(n)
    return xr.DataArray(
        cosine,
        dims=("sample",),
        coords={"sample": sample_coord},
        name="saliency_stability",
        attrs={"n_undefined": int(np.count_nonzero(undefined)), "note": _UNDEFINED_NOTE},
    )


def _maps_input(maps, *, name: str):
    """A finite float64 array (n, ...) and the ``sample`` coordinate values, if any."""
    coord = None
    if isinstance(maps, xr.DataArray):
        if "sample" not in maps.dims:
            raise ValueError(f"{name} as a DataArray needs a 'sample' dim; got dims {maps.dims}")
        maps = maps.transpose("sample", ...)
        if "sample" in maps.indexes:
            coord = maps.indexes["sample"].values
    array = as_float64(maps, name=name)
    if array.ndim < 2:
        raise ValueError(
            f"{name} must be (n, H, W) or (n, ...), one map per sample; got shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name} holds no samples; expected at least one map")
    if array.size == 0:
        raise ValueError(
            f"{name} holds maps of no pixels (shape {array.shape}); expected at least one value "
            "per map"
        )
    check_finite(array, name=name)
    return array, coord


def _unit_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to unit norm, and a mask of all-zero rows (left at zero).

    Each row is first divided by its largest |entry|: saliency values of 1e-30 (tiny input
    gradients) would underflow when squared for the norm, and ones of 1e200 would overflow.
    """
    peak = np.abs(rows).max(axis=1)
    zero = peak == 0
    safe = np.where(zero, 1.0, peak)[:, None]
    scaled = rows / safe
    norm = np.sqrt(np.einsum("ij,ij->i", scaled, scaled))
    return scaled / np.where(zero, 1.0, norm)[:, None], zero
