"""Reading a study's results one way for every report: which geometry x fidelity pairs a link
table tracks, what the function-preserving control says of a metric, and which cells are one
computation.

Both the study report and the across-settings table call these, so "tracked" and "invariant"
mean the same in each.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

CONTROL_WORDS = ("invariant", "moved", "undetermined", "not covered")
"""What the control says of a metric over a study's runs: unchanged (below the control's
tolerance) in every run; changed in at least one; no change measured as changed but at least one
run's change is not a number; not among the control's metrics."""


def results_alpha(ds: xr.Dataset) -> float:
    """The design's alpha (its ``[statistics] alpha``; 0.05 where the design does not say)."""
    design = json.loads(ds.attrs.get("design", "{}") or "{}")
    return float(design.get("statistics", {}).get("alpha", 0.05))


def tracked_pairs(ds: xr.Dataset, prefix: str) -> list[tuple[str, str, float]]:
    """``(geometry, fidelity, partial rho)`` for each pair of the link table ``prefix``
    (``link_`` pooled, ``within_cell_``) whose corrected q is below the design's alpha; ``[]``
    where the results have no such table.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset({"link_partial_q_value": (("geometry", "fidelity"), [[0.01, 0.3]]),
    ...                  "link_partial_spearman": (("geometry", "fidelity"), [[0.6, 0.1]])},
    ...                 coords={"geometry": ["erank"], "fidelity": ["morf_auc", "gini"]})
    >>> tracked_pairs(ds, "link_")
    [('erank', 'morf_auc', 0.6)]
    """
    if f"{prefix}partial_q_value" not in ds:
        return []
    q, rho = ds[f"{prefix}partial_q_value"], ds[f"{prefix}partial_spearman"]
    alpha = results_alpha(ds)
    return [
        (str(g), str(f), float(rho.sel(geometry=g, fidelity=f)))
        for g in q["geometry"].values
        for f in q["fidelity"].values
        if float(q.sel(geometry=g, fidelity=f)) < alpha
    ]


def control_word(ds: xr.Dataset, metric: str) -> str:
    """One of :data:`CONTROL_WORDS` for ``metric`` over every run of the results' control."""
    if "control_invariant" not in ds or metric not in set(map(str, ds["control_metric"].values)):
        return "not covered"
    at = {"control_metric": metric}
    if bool(ds["control_invariant"].sel(at).all()):
        return "invariant"
    change = ds["control_relative_change"].sel(at).values if "control_relative_change" in ds else []
    invariant = ds["control_invariant"].sel(at).values
    moved = np.isfinite(change) & ~invariant if len(change) else ~invariant
    return "moved" if moved.any() else "undetermined"


def identical_cells(ds: xr.Dataset) -> list[list[str]]:
    """Groups of cells whose runs are one computation.

    Two cells are one computation where they ran the same seeds and, seed by seed, every value
    along ``run`` is equal: the final metrics and the per-epoch curves, with at least one finite
    number among them. That happens where the config fields naming the cells apart are never
    read by the training, as ``decor_weight`` where the whitened features feed only a loss
    weighted 0.

    Parameters
    ----------
    ds : xr.Dataset
        A study's results (or runs table): dim ``run`` with coords ``cell`` and ``seed``.

    Returns
    -------
    list of list of str
        Each group of two or more cells, in the design's cell order; ``[]`` where no two cells
        are one computation or ``ds`` has no ``cell`` and ``seed``.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset({"test_acc": ("run", [0.8, 0.8, 0.9, 0.7, 0.7, 0.9])},
    ...                 coords={"cell": ("run", ["sgt", "sd0", "sd"] * 2),
    ...                         "seed": ("run", [0, 0, 0, 1, 1, 1])})
    >>> identical_cells(ds)
    [['sgt', 'sd0']]
    """
    if "cell" not in ds.coords or "seed" not in ds.coords:
        return []
    rows = [ds[v].transpose("run", ...).values for v in ds.data_vars if "run" in ds[v].dims]
    index: dict[str, dict[int, int]] = {}
    for i, (c, s) in enumerate(zip(ds["cell"].values, ds["seed"].values, strict=True)):
        index.setdefault(str(c), {})[int(s)] = i
    design = [c["name"] for c in json.loads(ds.attrs.get("design") or "{}").get("cells", [])]
    cells = [c for c in dict.fromkeys([*design, *index]) if c in index]  # the design's order

    def same(a: str, b: str) -> bool:
        if index[a].keys() != index[b].keys():
            return False
        pairs = [(index[a][s], index[b][s]) for s in index[a]]
        return all(_equal(v[i], v[j]) for v in rows for i, j in pairs) and any(
            _has_number(v[i]) for v in rows for i, _ in pairs
        )

    groups: list[list[str]] = []
    for cell in cells:
        home = next((g for g in groups if same(g[0], cell)), None)
        if home is None:
            groups.append([cell])
        else:
            home.append(cell)
    return [g for g in groups if len(g) > 1]


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal to the last bit, NaN equal to NaN where the values are numbers."""
    numeric = np.issubdtype(np.asarray(a).dtype, np.inexact)
    return bool(np.array_equal(a, b, equal_nan=numeric))


def _has_number(a: np.ndarray) -> bool:
    a = np.asarray(a)
    return np.issubdtype(a.dtype, np.number) and bool(np.isfinite(a).any())
