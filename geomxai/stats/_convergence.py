"""How far each cell's learning curves have settled: the convergence table of a study."""

from __future__ import annotations

from numbers import Real

import numpy as np
import xarray as xr

from geomxai._checks import Interval, check
from geomxai.stats._runs import RUN_DIM

FLAT_TOLERANCE = 0.005
"""'Flat from' an epoch: the mean test accuracy stays within this (0.5 points) of its final
value from that epoch on."""


def convergence_summary(
    curves: xr.DataArray, *, cell: str = "cell", tolerance: float = FLAT_TOLERANCE
) -> xr.Dataset:
    """Per cell: the mean learning curve over seeds, the final value's spread and where it settles.

    Parameters
    ----------
    curves : xr.DataArray
        Dims ``(run, E)`` for an epoch dim ``E`` (its coord the epoch numbers, ascending): each
        run's test accuracy after every epoch, NaN where a run has no value. A coord ``cell`` on
        dim ``run`` names each run's cell.
    cell : str
        The name of that coord.
    tolerance : float
        How close to its final value the mean must stay to count as flat.

    Returns
    -------
    xr.Dataset
        Dim ``flat_cell`` (the cells in the order runs list them): ``curve_mean_test_acc``
        (``flat_cell``, ``E``; NaN where no run of the cell has the epoch), ``curve_final_mean``,
        ``curve_final_min``, ``curve_final_max`` (over the runs with a value at the cell's last
        epoch, the last one any of its runs reached; NaN when none), ``curve_final_n`` (how many)
        and ``flat_from``: the first epoch from which the mean stays within ``tolerance`` of its
        final value (-1 when the cell has no value at all). Attr ``flat_tolerance``.

    Examples
    --------
    >>> acc = xr.DataArray([[0.5, 0.8, 0.9, 0.902], [0.6, 0.8, 0.898, 0.898]],
    ...                    dims=("run", "epoch"), coords={"epoch": [1, 2, 3, 4],
    ...                    "cell": ("run", ["a", "a"])})
    >>> s = convergence_summary(acc)
    >>> int(s["flat_from"].sel(flat_cell="a")), round(float(s["curve_final_mean"][0]), 3)
    (3, 0.9)
    """
    if RUN_DIM not in curves.dims or curves.ndim != 2:
        raise ValueError(f"curves must have dims ({RUN_DIM!r}, epoch); got {curves.dims}")
    if cell not in curves.coords or curves[cell].dims != (RUN_DIM,):
        raise ValueError(f"curves must have a coord {cell!r} on dim {RUN_DIM!r}")
    check(tolerance, "tolerance", Interval(Real, 0, None))
    epoch_dim = next(d for d in curves.dims if d != RUN_DIM)
    curves = curves.transpose(RUN_DIM, epoch_dim)
    epochs = curves[epoch_dim].values
    labels = curves[cell].values.astype(str)
    names = list(dict.fromkeys(labels))
    values = np.asarray(curves.values, dtype=float)
    final = {k: np.full(len(names), np.nan) for k in ("mean", "min", "max")}
    n, flat = np.zeros(len(names), int), np.full(len(names), -1)
    mean_curve = np.full((len(names), len(epochs)), np.nan)
    for i, name in enumerate(names):
        rows = values[labels == name]
        seen = np.isfinite(rows)
        sums, counts = np.where(seen, rows, 0).sum(0), seen.sum(0)
        mean_curve[i] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        if not counts.any():
            continue
        end = int(np.flatnonzero(counts)[-1])  # the cell's last epoch (a cell may train fewer)
        last = rows[:, end][seen[:, end]]
        n[i] = last.size
        final["mean"][i], final["min"][i], final["max"][i] = last.mean(), last.min(), last.max()
        off = ~(np.abs(mean_curve[i, : end + 1] - mean_curve[i, end]) <= tolerance)
        flat[i] = epochs[np.flatnonzero(off)[-1] + 1] if off.any() else epochs[0]
    data = {f"curve_final_{k}": ("flat_cell", v) for k, v in final.items()}
    return xr.Dataset(
        {
            "curve_mean_test_acc": (("flat_cell", epoch_dim), mean_curve),
            **data,
            "curve_final_n": ("flat_cell", n),
            "flat_from": ("flat_cell", flat),
        },
        coords={"flat_cell": names, epoch_dim: epochs},
        attrs={"flat_tolerance": float(tolerance)},
    )
