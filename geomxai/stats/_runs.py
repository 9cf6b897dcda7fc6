"""The runs table: one row per trained run, the input of every statistic in :mod:`geomxai.stats`.

The unit is a *run*: one trained model (its final checkpoint), summarised by per-run scalars. The
functions here read a "runs" Dataset (see :func:`runs_dataset`) and never train or load anything.

Seeds are matched across cells: seed ``s`` means the same initialisation and data order in every
regime, so every comparison between cells is *paired by seed*. A contrast is computed per seed first
(from the runs of that seed only) and the per-seed values are then summarised by a t-interval over
seeds, which removes the seed-to-seed variation that the cells share.

Runs format
-----------
An ``xr.Dataset`` with one dim ``run`` and

* coords on ``run``: ``regime`` (str: ``regular``, ``sgt``, ``dbn``, ``saliencydecor``, ...),
  ``seed`` (int) and, optionally, ``decor_weight`` (float: lambda of ``saliencydecor``; the other
  regimes carry the profile's value, which is ignored for them);
* data variables with dims ``(run,)`` holding one number per run (``test_acc``, ``morf_auc``,
  ``lerf_auc``, ``fidelity_gap``, ``mean_abs_corr``, ``effective_rank``, ``entanglement``, ...).
  NaN marks a value that is missing for that run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from numbers import Real

import numpy as np
import xarray as xr

from geomxai._checks import Interval, check
from geomxai._hints import did_you_mean

RUN_DIM = "run"
"""The one dim of a runs Dataset."""

DOSE_REGIME = "saliencydecor"
"""The regime whose ``decor_weight`` is a level of the design (the others ignore it)."""

FACTORIAL_CELLS = {
    "regular": (0, 0),
    "sgt": (1, 0),
    "dbn": (0, 1),
    "saliencydecor": (1, 1),
}
"""(masking, whitening) level of each regime in the 2x2 design; 1 = on."""

EFFECTS = ("masking", "whitening", "interaction")
"""Effects of the 2x2 design, in output order."""

EFFECT_WEIGHTS = {
    # Per seed, weights on the cells (regular, sgt, dbn, saliencydecor).
    # masking main effect: mean over whitening levels of (on - off) = ((sgt-regular)+(sd-dbn))/2
    "masking": (-0.5, 0.5, -0.5, 0.5),
    # whitening main effect: ((dbn-regular)+(sd-sgt))/2
    "whitening": (-0.5, -0.5, 0.5, 0.5),
    # interaction: (saliencydecor - dbn) - (sgt - regular)
    "interaction": (1.0, -1.0, -1.0, 1.0),
}
"""Contrast weights of each effect on the cells in :data:`FACTORIAL_CELLS` order."""

BASELINES = ("regular", "sgt", "dbn")
"""Regimes that :func:`paired_contrasts` compares ``saliencydecor`` with by default."""

# -- input ----------------------------------------------------------------------------------------


def runs_dataset(records: Iterable[Mapping | xr.Dataset]) -> xr.Dataset:
    """Build a runs Dataset (the format of this module) from one record per run.

    Parameters
    ----------
    records : iterable of dict or xr.Dataset
        A dict has keys ``regime`` (str), ``seed`` (int), optionally ``decor_weight`` (float) and
        ``run`` (a label), and per-run scalar metrics (``None`` is NaN). A Dataset gives the same
        keys as scalar coords, scalar data variables or attrs, and its other scalar data variables
        are the metrics. A metric absent from a record is NaN for that run.

    Returns
    -------
    xr.Dataset
        Dim ``run`` (labels from ``run`` where every record has one, else
        ``"<regime>-seed<seed>"`` with ``"-lambda<decor_weight>"`` for ``saliencydecor``); coords
        ``regime``, ``seed`` and, where any record has one, ``decor_weight`` (NaN where missing);
        one float variable per metric.

    Examples
    --------
    >>> runs = runs_dataset([
    ...     {"regime": "regular", "seed": 0, "decor_weight": 0.01, "test_acc": 0.9},
    ...     {"regime": "saliencydecor", "seed": 0, "decor_weight": 0.1, "test_acc": 0.91},
    ... ])
    >>> [str(r) for r in runs["run"].values]
    ['regular-seed0', 'saliencydecor-seed0-lambda0.1']
    >>> float(runs["test_acc"].sel(run="regular-seed0"))
    0.9
    """
    if isinstance(records, (xr.Dataset, Mapping)):
        raise TypeError(
            f"records must be an iterable of per-run dicts or Datasets; got one {type(records).__name__}"
        )
    rows = [_record(i, rec) for i, rec in enumerate(records)]
    if not rows:
        raise ValueError("records must hold at least one run; got none")
    names = list(dict.fromkeys(k for _, row in rows for k in row))
    has_weight = any(info["decor_weight"] is not None for info, _ in rows)
    regimes = [info["regime"] for info, _ in rows]
    seeds = np.array([info["seed"] for info, _ in rows], dtype=np.int64)
    weights = np.array(
        [np.nan if info["decor_weight"] is None else info["decor_weight"] for info, _ in rows]
    )
    if all(info["run"] is not None for info, _ in rows):
        labels = [str(info["run"]) for info, _ in rows]
    else:
        labels = [
            f"{r}-seed{s}" + (f"-lambda{w:g}" if r == DOSE_REGIME and np.isfinite(w) else "")
            for r, s, w in zip(regimes, seeds, weights, strict=True)
        ]
    if len(set(labels)) < len(labels):
        labels = [f"{lab}#{i}" for i, lab in enumerate(labels)]
    coords = {RUN_DIM: labels, "regime": (RUN_DIM, regimes), "seed": (RUN_DIM, seeds)}
    if has_weight:
        coords["decor_weight"] = (RUN_DIM, weights)
    data = {n: (RUN_DIM, np.array([row.get(n, np.nan) for _, row in rows])) for n in names}
    return xr.Dataset(data, coords=coords)


_KEYS = ("regime", "seed", "decor_weight", "run")


def _record(i: int, rec) -> tuple[dict, dict[str, float]]:
    if isinstance(rec, xr.Dataset):
        info = {}
        for key in _KEYS:
            if key in rec.variables:
                val = rec[key].values
                if val.ndim:
                    raise ValueError(f"record {i}: {key} must be a scalar; got shape {val.shape}")
                info[key] = val.item()
            else:
                info[key] = rec.attrs.get(key)
        raw = {n: rec[n].values for n in rec.data_vars if n not in _KEYS}
    elif isinstance(rec, Mapping):
        info = {key: rec.get(key) for key in _KEYS}
        raw = {str(n): v for n, v in rec.items() if n not in _KEYS}
    else:
        raise TypeError(f"record {i} must be a dict or an xarray Dataset; got {type(rec).__name__}")
    if not isinstance(info["regime"], str) or not info["regime"]:
        raise ValueError(f"record {i}: regime must be a non-empty str; got {info['regime']!r}")
    seed = info["seed"]
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"record {i}: seed must be an int; got {seed!r}")
    info["seed"] = int(seed)
    if info["decor_weight"] is not None:
        info["decor_weight"] = _real(info["decor_weight"], f"record {i}: decor_weight")
    row = {}
    for name, value in raw.items():
        row[name] = np.nan if value is None else _real(value, f"record {i}: metric {name!r}")
    return info, row


def _real(value, what: str) -> float:
    arr = np.asarray(value)
    if arr.ndim:
        raise ValueError(f"{what} must be a scalar; got shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{what} must be a real number; got {value!r}")
    return float(arr)


class _Runs:
    """The coords of a validated runs Dataset as numpy arrays."""

    def __init__(self, runs: xr.Dataset):
        if not isinstance(runs, xr.Dataset):
            raise TypeError(f"runs must be an xarray Dataset of runs; got {type(runs).__name__}")
        if set(runs.dims) != {RUN_DIM}:
            raise ValueError(
                f"runs must have exactly one dim {RUN_DIM!r}; got dims {tuple(runs.dims)}"
            )
        for key in ("regime", "seed"):
            if key not in runs.coords or runs[key].dims != (RUN_DIM,):
                raise ValueError(f"runs must have a coord {key!r} on dim {RUN_DIM!r}")
        self.ds = runs
        self.regime = np.asarray(runs["regime"].values).astype(str)
        seed = np.asarray(runs["seed"].values)
        if not np.issubdtype(seed.dtype, np.integer):
            raise ValueError(f"runs coord 'seed' must hold ints; got dtype {seed.dtype}")
        self.seed = seed.astype(np.int64)
        if "decor_weight" in runs.coords:
            self.weight = np.asarray(runs["decor_weight"].values, dtype=float)
        else:
            self.weight = None

    def values(self, name: str) -> np.ndarray:
        return np.asarray(self.ds[name].values, dtype=float)

    def mask(self, regime: str, weight: float | None) -> np.ndarray:
        m = self.regime == regime
        if weight is not None and self.weight is not None:
            m &= self.weight == weight
        return m

    def weight_of(self, regime: str, decor_weight) -> float | None:
        """The decor_weight level used for ``regime`` (None: every run of it, or not a dose regime)."""
        if regime != DOSE_REGIME or self.weight is None:
            return None
        present = self.weight[self.regime == regime]
        if decor_weight is not None:
            w = _real(decor_weight, "decor_weight")
            close = present[np.isclose(present, w, rtol=1e-9, atol=0.0)]
            if not close.size:
                levels = ", ".join(f"{v:g}" for v in np.unique(present)) or "(none)"
                raise ValueError(
                    f"decor_weight must be a level of the {regime} runs ({levels}); got {w:g}"
                )
            return float(close[0])
        if not present.size:
            return None
        if not np.isfinite(present).all():
            raise ValueError(f"runs of {regime} must have a finite decor_weight; got NaN")
        levels, counts = np.unique(present, return_counts=True)
        top = levels[counts == counts.max()]
        if top.size == 1:
            return float(top[0])
        # A tie (the dose-response holds every lambda with the same seed count): the profile's
        # value, which the other regimes carry, names the factorial's cell.
        others = self.weight[(self.regime != regime) & np.isfinite(self.weight)]
        if others.size:
            vals, cnt = np.unique(others, return_counts=True)
            profile = vals[np.argmax(cnt)]
            if profile in top:
                return float(profile)
        raise ValueError(
            f"decor_weight levels {', '.join(f'{v:g}' for v in top)} of {regime} are equally "
            "common and none is the profile's value; pass decor_weight"
        )


def _metric_names(runs: xr.Dataset, metrics, kind: str = "metrics") -> list[str]:
    if metrics is None:
        names = [
            str(n)
            for n, v in runs.data_vars.items()
            if v.dims == (RUN_DIM,) and np.issubdtype(v.dtype, np.number) and v.dtype != bool
        ]
        if not names:
            raise ValueError(f"runs hold no numeric per-run variables to use as {kind}")
        return names
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{kind} must be a str or a non-empty list of str; got {metrics!r}")
    for n in names:
        if n not in runs.data_vars:
            raise ValueError(
                f"{kind} must name variables of runs; got {n!r}"
                + did_you_mean(n, map(str, runs.data_vars))
            )
        v = runs[n]
        if v.dims != (RUN_DIM,) or not np.issubdtype(v.dtype, np.number) or v.dtype == bool:
            raise ValueError(
                f"{kind} must be numeric per-run variables with dims ({RUN_DIM!r},); got {n!r} "
                f"with dims {tuple(v.dims)} and dtype {v.dtype}"
            )
    return list(dict.fromkeys(names))


def _check_confidence(confidence) -> float:
    return float(check(confidence, "confidence", Interval(Real, 0, 1, closed="neither")))


def _cell_label(regime: str, weight: float | None) -> str:
    return regime if weight is None else f"{regime}@{weight:g}"


def _seed_table(
    seed: np.ndarray, values: np.ndarray, masks: Sequence[np.ndarray], labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Seeds (sorted) x cells table of ``values``, a cell being the runs one mask selects.

    NaN where a seed lacks a cell or its value; ``labels`` name the cells in the error raised
    when a cell holds two runs of one seed.
    """
    seeds = np.unique(np.concatenate([seed[m] for m in masks] + [np.zeros(0, np.int64)]))
    table = np.full((seeds.size, len(masks)), np.nan)
    for j, (m, label) in enumerate(zip(masks, labels, strict=True)):
        s = seed[m]
        uniq, counts = np.unique(s, return_counts=True)
        if (counts > 1).any():
            raise ValueError(
                f"runs must hold at most one run per cell and seed; got {int(counts.max())} runs "
                f"of {label} with seed {int(uniq[np.argmax(counts)])}"
            )
        table[np.searchsorted(seeds, s), j] = values[m]
    return seeds, table


def _dropped(seeds: np.ndarray, table: np.ndarray, labels: Sequence[str]) -> str:
    """A note of the seeds that miss a cell, e.g. ``"seed 3 (no dbn)"``."""
    parts = []
    for s, row in zip(seeds, table, strict=True):
        missing = [lab for lab, v in zip(labels, row, strict=True) if not np.isfinite(v)]
        if missing:
            parts.append(f"seed {int(s)} (no finite {', '.join(missing)})")
    return "; ".join(parts)


def _complete_cells(
    r: _Runs, values: np.ndarray, cells: Sequence[tuple[str, float | None]]
) -> tuple[np.ndarray, list[str], str]:
    """The seeds x cells table over the seeds with every cell finite, the cells' labels, and the
    note of the seeds left out (:func:`_dropped`)."""
    labels = [_cell_label(*c) for c in cells]
    seeds, table = _seed_table(r.seed, values, [r.mask(*c) for c in cells], labels)
    complete = np.isfinite(table).all(axis=1)
    return table[complete], labels, _dropped(seeds, table, labels)
