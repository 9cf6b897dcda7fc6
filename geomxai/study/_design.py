"""Statistics of a study over trained runs: the 2x2 factorial, paired contrasts, dose-response, power.

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

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import xarray as xr
from scipy import optimize, special, stats

from geomxai._util import did_you_mean

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

# The paper (saliencydecor-paper.txt) reports MoRF AUC as accuracy% x masked% (max 10000) and
# accuracy in %; ours are in [0, 1] x [0, 1] and [0, 1], hence the /10000 and /100.
_T1_MORF = {"regular": 5353.33, "sgt": 4458.52, "saliencydecor": 3707.19}  # Table I, MNIST
_T3_ACC = {"regular": 94.59, "sgt": 92.77, "dbn": 81.40, "saliencydecor": 95.12}  # Table III

PAPER_STATED_DIFFERENCES: dict[tuple[str, str], float] = {
    ("saliencydecor-regular", "morf_auc"): (_T1_MORF["saliencydecor"] - _T1_MORF["regular"]) / 1e4,
    ("saliencydecor-sgt", "morf_auc"): (_T1_MORF["saliencydecor"] - _T1_MORF["sgt"]) / 1e4,
    ("saliencydecor-regular", "test_acc"): (_T3_ACC["saliencydecor"] - _T3_ACC["regular"]) / 100,
    ("saliencydecor-sgt", "test_acc"): (_T3_ACC["saliencydecor"] - _T3_ACC["sgt"]) / 100,
    ("saliencydecor-dbn", "test_acc"): (_T3_ACC["saliencydecor"] - _T3_ACC["dbn"]) / 100,
    **{
        (effect, "test_acc"): float(
            np.dot(EFFECT_WEIGHTS[effect], [_T3_ACC[r] for r in FACTORIAL_CELLS]) / 100
        )
        for effect in EFFECTS
    },
}
"""Differences the paper states, on geomxai's scales, keyed by ``(contrast, metric)``.

* ``morf_auc`` (lower is more faithful): Table I (MNIST, simple CNN): regular 5353.33, SGT
  4458.52, SaliencyDecor 3707.19 on the accuracy% x masked% scale, divided by 10000; so
  saliencydecor-regular = -0.1646 and saliencydecor-sgt = -0.0751. Table I has no DBN column.
* ``test_acc``: Table III (the only table with all four cells of the 2x2; its numbers match Table
  II's CIFAR-10 ResNet-18 column): regular 94.59, SGT 92.77, DBN 81.40, SaliencyDecor 95.12 (%),
  divided by 100; so saliencydecor-regular = +0.0053, -sgt = +0.0235, -dbn = +0.1372, and, with
  :data:`EFFECT_WEIGHTS`, masking = +0.0595, whitening = -0.0542, interaction = +0.1554 (the
  paper's "whitening alone is insufficient" is this interaction). Table II's simple CNN on MNIST,
  the model closest to ours, states no accuracy difference (99.4 vs 99.4), so it gives no target.
"""

_T_ATTRS = "two-sided t-interval over seeds of the per-seed values (scipy.stats.t)"


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
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)):
        raise TypeError(f"confidence must be a float in (0, 1); got {confidence!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1); got confidence={confidence}")
    return float(confidence)


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


def _scale(a: np.ndarray) -> float:
    """The largest magnitude in ``a`` (0 for an empty array)."""
    return float(np.abs(a).max()) if a.size else 0.0


def _t_summary(
    x: np.ndarray, confidence: float, *, scale: float | None = None
) -> tuple[float, float, float, float, str | None]:
    """Mean, t-interval and one-sample t-test p-value (against 0) of per-seed values ``x``.

    Returns NaN for all four with a reason when no value is given; with one value, that value as
    the estimate (a one-seed study still shows its differences) and NaN for the interval and
    p-value, with a reason; and NaN for the interval and p-value (the mean kept) when the values
    have no spread: a t-interval of width 0
    would be a fake certainty. "No spread" is an SD below 1e-12 of ``scale`` (the magnitude of the
    numbers the values were computed from; default the largest ``|x|``), so that a contrast of
    cells that differ by a constant is not given an interval of float round-off.
    """
    x = np.asarray(x, dtype=float)
    n = x.size
    if n < 2:
        estimate = float(x[0]) if n else np.nan
        return (estimate,) + (np.nan,) * 3 + (f"{n} usable seed(s); a t-interval needs at least 2",)
    mean = float(x.mean())
    sd = float(x.std(ddof=1))
    if scale is None:
        scale = float(np.abs(x).max())
    if not sd > 1e-12 * scale:
        return (mean, np.nan, np.nan, np.nan, f"the {n} per-seed values are all equal; no spread")
    sem = sd / math.sqrt(n)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    p = float(stats.ttest_1samp(x, 0.0).pvalue)
    return mean, float(low), float(high), p, None


_T_KEYS = ("estimate", "ci_low", "ci_high", "p_value")
"""The variables a t-summary fills, in :func:`_t_summary` order."""


def _t_keys(prefix: str) -> tuple[str, str, str, str]:
    """The t-summary variables of one statistic of :func:`dose_response`, e.g. ``slope_ci_low``."""
    return prefix, f"{prefix}_ci_low", f"{prefix}_ci_high", f"{prefix}_p_value"


def _t_values(
    x: np.ndarray, confidence: float, keys: Sequence[str] = _T_KEYS, *, scale: float | None = None
) -> tuple[dict[str, float], str | None]:
    """:func:`_t_summary` of ``x`` keyed by ``keys`` (mean, low, high, p), and its NaN reason."""
    *values, why = _t_summary(x, confidence, scale=scale)
    return dict(zip(keys, values, strict=True)), why


def _t_columns(
    x: np.ndarray, confidence: float, *, scale: float | None = None
) -> tuple[dict[str, np.ndarray], list[str | None]]:
    """:func:`_t_summary` of each column of ``x`` (seed, k): arrays (k,) keyed by ``_T_KEYS``,
    and the k NaN reasons."""
    rows = [_t_summary(x[:, j], confidence, scale=scale) for j in range(x.shape[1])]
    arrays = {key: np.array([row[i] for row in rows]) for i, key in enumerate(_T_KEYS)}
    return arrays, [row[4] for row in rows]


# -- result grids ---------------------------------------------------------------------------------


def _grid(shape, names: Sequence[str], ints: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """One array of ``shape`` per name, in order: NaN floats, or zero int64 for the ``ints``."""
    return {
        k: np.zeros(shape, dtype=np.int64) if k in ints else np.full(shape, np.nan) for k in names
    }


def _gather(arrays: dict[str, np.ndarray], blocks: Iterable[tuple]) -> dict[str, str]:
    """Write each block's values into ``arrays`` and collect its attrs, in order.

    ``blocks`` yields ``(index, (values, attrs))``: a block computes one cell of the grid
    (a metric, or a metric and a contrast) and returns only the values it defines, so the
    others keep their NaN (or zero count).
    """
    attrs: dict[str, str] = {}
    for index, (values, block_attrs) in blocks:
        for key, value in values.items():
            arrays[key][index] = value
        attrs.update(block_attrs)
    return attrs


def _variables(arrays: Mapping[str, np.ndarray], dims: tuple[str, ...]) -> dict[str, tuple]:
    """Dataset variables ``{name: (dims, array)}``, in order."""
    return {k: (dims, v) for k, v in arrays.items()}


def _label_t(out: xr.Dataset, confidence: float, estimate: str, p_value: str) -> None:
    """The long names of the four t-summary variables of ``out``."""
    out["estimate"].attrs["long_name"] = estimate
    out["ci_low"].attrs["long_name"] = f"lower end of the {confidence:.0%} {_T_ATTRS}"
    out["ci_high"].attrs["long_name"] = f"upper end of the {confidence:.0%} {_T_ATTRS}"
    out["p_value"].attrs["long_name"] = p_value


# -- per-seed contrasts ---------------------------------------------------------------------------


def _contrast_name(contrast) -> str:
    if isinstance(contrast, str):
        if contrast in EFFECTS:
            return contrast
        parts = contrast.split("-")
        if len(parts) == 2 and all(parts):
            return contrast
    elif (
        isinstance(contrast, tuple)
        and len(contrast) == 2
        and all(isinstance(c, str) and c for c in contrast)
    ):
        return f"{contrast[0]}-{contrast[1]}"
    raise ValueError(
        f"a contrast must be one of {', '.join(EFFECTS)}, a pair (a, b) of regimes or 'a-b'; "
        f"got {contrast!r}"
    )


def _regimes_of(contrast: str) -> list[str]:
    """The regimes a contrast name compares."""
    return list(FACTORIAL_CELLS) if contrast in EFFECTS else contrast.split("-")


def _per_seed(
    r: _Runs, values: np.ndarray, contrast: str, decor_weight
) -> tuple[np.ndarray, float, str, str]:
    """Per-seed values of ``contrast`` over the seeds that have every cell it needs.

    Returns (per-seed values, magnitude of the cell values used, cells description,
    dropped-seed note).
    """
    if contrast in EFFECTS:
        regimes = list(FACTORIAL_CELLS)
        weights = np.asarray(EFFECT_WEIGHTS[contrast])
    else:
        a, b = contrast.split("-")
        if a == b:
            raise ValueError(f"a contrast must compare two different regimes; got {contrast!r}")
        regimes, weights = [a, b], np.array([1.0, -1.0])
    cells = [(reg, r.weight_of(reg, decor_weight)) for reg in regimes]
    t, labels, dropped = _complete_cells(r, values, cells)
    return t @ weights, _scale(t), ", ".join(labels), dropped


# -- factorial ------------------------------------------------------------------------------------


def _factorial_metric(
    r: _Runs, name: str, cells: list[tuple[str, float | None]], confidence: float
) -> tuple[dict[str, np.ndarray | int], dict[str, str]]:
    """The effects (arrays over effect) and cell means (over cell) of one metric, and its attrs."""
    t, labels, dropped = _complete_cells(r, r.values(name), cells)
    attrs = {f"dropped_seeds_{name}": dropped} if dropped else {}
    weights = np.array([EFFECT_WEIGHTS[e] for e in EFFECTS])  # (effect, cell)
    effects, why_effect = _t_columns(t @ weights.T, confidence, scale=_scale(t))
    cell, why_cell = _t_columns(t, confidence)
    for effect, why in zip(EFFECTS, why_effect, strict=True):
        if why:
            attrs[f"nan_reason_{name}_{effect}"] = (
                f"{why} (seeds with finite {name} in all of {', '.join(labels)})"
            )
    for (reg, _), why in zip(cells, why_cell, strict=True):
        if why:
            attrs[f"nan_reason_{name}_{reg}"] = why
    n = t.shape[0]
    cell_values = {"cell_mean": cell["estimate"], "cell_ci_low": cell["ci_low"]}
    cell_values |= {"cell_ci_high": cell["ci_high"], "cell_n": n}
    return effects | {"n_seeds": n} | cell_values, attrs


def factorial_effects(
    runs: xr.Dataset,
    metrics: str | Iterable[str] | None = None,
    *,
    confidence: float = 0.95,
    decor_weight: float | None = None,
) -> xr.Dataset:
    """Main effects of masking and whitening and their interaction, paired by seed.

    The four regimes are a 2x2 design (:data:`FACTORIAL_CELLS`): masking off = ``regular``,
    ``dbn``, on = ``sgt``, ``saliencydecor``; whitening off = ``regular``, ``sgt``, on = ``dbn``,
    ``saliencydecor``. For each seed that has all four cells (with a finite value of the metric):

    * masking = mean over whitening levels of (on - off) = ((sgt - regular) + (sd - dbn)) / 2
    * whitening = ((dbn - regular) + (sd - sgt)) / 2
    * interaction = (sd - dbn) - (sgt - regular): how much more masking helps with whitening
      than without (positive = the combination gains more than masking alone).

    Each effect is the mean of its per-seed values with a t-interval over seeds (``n - 1`` df)
    and the two-sided one-sample t-test p-value against 0 (a paired t-test). Seeds lacking a cell
    are dropped per metric and named in ``attrs``.

    Parameters
    ----------
    runs : xr.Dataset
        Runs in this module's format (:func:`runs_dataset`).
    metrics : str or list of str, optional
        Per-run variables to analyse. Default: every numeric per-run variable.
    confidence : float
        Coverage of the intervals, in (0, 1).
    decor_weight : float, optional
        The lambda whose ``saliencydecor`` runs form that cell. Default: the most common lambda
        among the ``saliencydecor`` runs; on a tie, the value the other regimes carry (the
        profile's); a tie without it raises. Ignored where runs have no ``decor_weight`` coord.

    Returns
    -------
    xr.Dataset
        Dims ``(metric, effect)`` with ``effect`` = masking, whitening, interaction: ``estimate``,
        ``ci_low``, ``ci_high``, ``p_value``, ``n_seeds`` (int). Dims ``(metric, regime)``:
        ``cell_mean``, ``cell_ci_low``, ``cell_ci_high``, ``cell_n`` — cell means over the same
        seeds, so each effect is the same combination of cell means (:data:`EFFECT_WEIGHTS`).
        NaN where fewer than 2 seeds have all four cells, or (interval and p-value only) where the
        per-seed values have no spread; ``attrs["nan_reason_<metric>_<effect>"]`` says why and
        ``attrs["dropped_seeds_<metric>"]`` names the seeds left out.

    Examples
    --------
    >>> cells = {"regular": [0.80, 0.82], "sgt": [0.78, 0.79],
    ...          "dbn": [0.70, 0.74], "saliencydecor": [0.83, 0.85]}
    >>> runs = runs_dataset([{"regime": k, "seed": s, "acc": v[s]}
    ...                      for k, v in cells.items() for s in (0, 1)])
    >>> fx = factorial_effects(runs, "acc")
    >>> round(float(fx["estimate"].sel(metric="acc", effect="interaction")), 4)
    0.145
    >>> int(fx["n_seeds"].sel(metric="acc", effect="masking"))
    2
    """
    r = _Runs(runs)
    names = _metric_names(runs, metrics)
    confidence = _check_confidence(confidence)
    weight = r.weight_of(DOSE_REGIME, decor_weight)
    regimes = list(FACTORIAL_CELLS)
    cells = [(reg, weight if reg == DOSE_REGIME else None) for reg in regimes]
    effects = _grid((len(names), len(EFFECTS)), (*_T_KEYS, "n_seeds"), ints=("n_seeds",))
    cell_vars = ("cell_mean", "cell_ci_low", "cell_ci_high", "cell_n")
    cell = _grid((len(names), len(regimes)), cell_vars, ints=("cell_n",))
    blocks = ((i, _factorial_metric(r, name, cells, confidence)) for i, name in enumerate(names))
    attrs = _gather(effects | cell, blocks)
    out = xr.Dataset(
        _variables(effects, ("metric", "effect")) | _variables(cell, ("metric", "regime")),
        coords={"metric": names, "effect": list(EFFECTS), "regime": regimes},
    )
    _label_t(
        out,
        confidence,
        "mean over seeds of the per-seed effect",
        "two-sided paired t-test (per-seed effect against 0)",
    )
    out["cell_mean"].attrs["long_name"] = "cell mean over the seeds used for the effects"
    labels = [_cell_label(*c) for c in cells]
    out.attrs.update(
        {
            "confidence": confidence,
            "cells": "; ".join(
                f"{lab}: masking={FACTORIAL_CELLS[reg][0]}, whitening={FACTORIAL_CELLS[reg][1]}"
                for reg, lab in zip(regimes, labels, strict=True)
            ),
            "decor_weight": np.nan if weight is None else weight,
            "interaction": "(saliencydecor - dbn) - (sgt - regular), per seed",
            "pairing": "per seed; seeds lacking a cell are dropped per metric",
            **attrs,
        }
    )
    return out


def _check_pair_regimes(a, against, known: set[str]) -> list[str]:
    """``against`` as a list, once ``a`` and it are checked to be regimes of the runs."""
    if not isinstance(a, str) or not a:
        raise ValueError(f"a must be a regime name; got {a!r}")
    against = [against] if isinstance(against, str) else list(against)
    if not against or not all(isinstance(b, str) and b for b in against):
        raise ValueError(f"against must be a non-empty list of regime names; got {against!r}")
    if a in against:
        raise ValueError(f"against must not contain a={a!r} itself; got {against!r}")
    for reg in [a, *against]:
        if reg not in known:
            raise ValueError(
                f"regimes must be among those of the runs ({', '.join(sorted(known))}); got "
                f"{reg!r}" + did_you_mean(reg, known)
            )
    return against


def _paired_difference(
    r: _Runs, values: np.ndarray, a: str, b: str, decor_weight, confidence: float, name: str
) -> tuple[dict[str, float], dict[str, str]]:
    """The per-seed difference ``a - b`` of one metric, summarised over seeds, and its attrs."""
    cells = [(reg, r.weight_of(reg, decor_weight)) for reg in (a, b)]
    t, labels, dropped = _complete_cells(r, values, cells)
    attrs = {f"dropped_seeds_{name}_{b}": dropped} if dropped else {}
    diff = t[:, 0] - t[:, 1]
    out, why = _t_values(diff, confidence, scale=_scale(t))
    out["n_seeds"] = diff.size
    if why:
        attrs[f"nan_reason_{name}_{b}"] = f"{why} (seeds with {' and '.join(labels)})"
    if diff.size >= 2:
        out["sd_difference"] = diff.std(ddof=1)
        out["mean_a"], out["mean_baseline"] = t.mean(axis=0)
    return out, attrs


def paired_contrasts(
    runs: xr.Dataset,
    metrics: str | Iterable[str] | None = None,
    a: str = DOSE_REGIME,
    against: Sequence[str] = BASELINES,
    *,
    confidence: float = 0.95,
    decor_weight: float | None = None,
) -> xr.Dataset:
    """Paired difference ``a - baseline`` per seed, for each baseline, with t-intervals.

    Parameters
    ----------
    runs : xr.Dataset
        Runs in this module's format (:func:`runs_dataset`).
    metrics : str or list of str, optional
        Per-run variables. Default: every numeric per-run variable.
    a : str
        The regime compared.
    against : sequence of str
        The baselines.
    confidence : float
        Coverage of the intervals, in (0, 1).
    decor_weight : float, optional
        Lambda of the ``saliencydecor`` runs used where ``saliencydecor`` is ``a`` or a baseline;
        default as in :func:`factorial_effects`.

    Returns
    -------
    xr.Dataset
        Dims ``(metric, baseline)``: ``estimate`` (mean over seeds of ``a - baseline``),
        ``ci_low``, ``ci_high`` (t-interval over seeds), ``p_value`` (paired t-test), ``n_seeds``,
        ``sd_difference`` (SD of the per-seed differences), ``mean_a`` and ``mean_baseline`` (over
        the same seeds). NaN with ``attrs["nan_reason_<metric>_<baseline>"]`` where fewer than 2
        seeds have both; ``attrs["dropped_seeds_<metric>_<baseline>"]`` names seeds left out.

    Examples
    --------
    >>> runs = runs_dataset([{"regime": k, "seed": s, "acc": v + 0.01 * s}
    ...     for k, v in {"regular": 0.8, "saliencydecor": 0.85}.items() for s in range(3)])
    >>> pc = paired_contrasts(runs, "acc", against=["regular"])
    >>> round(float(pc["estimate"].sel(metric="acc", baseline="regular")), 6)
    0.05
    """
    r = _Runs(runs)
    names = _metric_names(runs, metrics)
    confidence = _check_confidence(confidence)
    known = set(r.regime.tolist())
    against = _check_pair_regimes(a, against, known)
    variables = (*_T_KEYS, "n_seeds", "sd_difference", "mean_a", "mean_baseline")
    arrays = _grid((len(names), len(against)), variables, ints=("n_seeds",))
    blocks = (
        ((i, j), _paired_difference(r, r.values(name), a, b, decor_weight, confidence, name))
        for i, name in enumerate(names)
        for j, b in enumerate(against)
    )
    attrs = _gather(arrays, blocks)
    out = xr.Dataset(
        _variables(arrays, ("metric", "baseline")), coords={"metric": names, "baseline": against}
    )
    _label_t(out, confidence, f"mean over seeds of ({a} - baseline)", "two-sided paired t-test")
    weight = r.weight_of(DOSE_REGIME, decor_weight) if DOSE_REGIME in known else None
    out.attrs.update(
        {
            "a": a,
            "confidence": confidence,
            "decor_weight": np.nan if weight is None else weight,
            "pairing": "per seed; seeds lacking either cell are dropped",
            **attrs,
        }
    )
    return out


# -- dose-response --------------------------------------------------------------------------------


_DOSE_COUNTS = ("slope_n_seeds", "pooled_n_runs", "contrast_n_seeds", "spearman_n_runs")
_DOSE_STATS = (
    *_t_keys("slope"),
    "pooled_slope",
    "pooled_slope_stderr",
    *_t_keys("contrast"),
    "spearman",
    "spearman_p_value",
    *_DOSE_COUNTS,
)
"""The ``(metric,)`` variables of :func:`dose_response`, in output order."""
_DOSE_LEVEL_STATS = ("dose_mean", "dose_ci_low", "dose_ci_high", "dose_n")
"""Its ``(metric, dose)`` variables."""


def _dose_series(
    runs: xr.Dataset, r: _Runs, dose, regime: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of ``regime`` (a mask over runs), their doses and the dose levels, checked."""
    if not isinstance(dose, str) or dose not in runs.variables or runs[dose].dims != (RUN_DIM,):
        raise ValueError(
            f"dose must name a coord or variable of runs on dim {RUN_DIM!r}; got {dose!r}"
        )
    in_regime = r.regime == regime
    if not in_regime.any():
        raise ValueError(
            f"regime must be a regime of the runs ({', '.join(sorted(set(r.regime.tolist())))}); "
            f"got {regime!r}" + did_you_mean(regime, set(r.regime.tolist()))
        )
    d = np.asarray(runs[dose].values, dtype=float)[in_regime]
    if not (np.isfinite(d).all() and (d >= 0).all()):
        raise ValueError(f"dose {dose!r} must be finite and >= 0 on the {regime} runs; got {d}")
    return in_regime, d, np.unique(d)


def _per_dose_means(
    y: np.ndarray, d: np.ndarray, levels: np.ndarray, confidence: float
) -> dict[str, np.ndarray]:
    """Mean and t-interval over the finite values at each dose (one value: its mean only)."""
    out = _grid(levels.size, _DOSE_LEVEL_STATS, ints=("dose_n",))
    for j, level in enumerate(levels):
        vals = y[d == level][np.isfinite(y[d == level])]
        out["dose_n"][j] = vals.size
        mean, low, high, _, _ = _t_summary(vals, confidence)
        out["dose_mean"][j], out["dose_ci_low"][j], out["dose_ci_high"][j] = mean, low, high
        if vals.size == 1:
            out["dose_mean"][j] = vals[0]
    return out


def _dose_slope(
    seeds: np.ndarray,
    table: np.ndarray,
    levels: np.ndarray,
    confidence: float,
    name: str,
    dose: str,
) -> tuple[dict[str, float], dict[str, str]]:
    """Per-seed OLS slope on ``log10(dose)`` over the positive doses, summarised over seeds."""
    positive = levels[levels > 0]
    if positive.size < 2:
        why = f"{positive.size} positive dose level(s); a slope needs at least 2"
        return {}, {f"nan_reason_{name}_slope": why}
    tp = table[:, levels > 0]
    yc = tp[np.isfinite(tp).all(axis=1)]
    x = np.log10(positive)
    xc = x - x.mean()
    slopes = (yc - yc.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    scale = _scale(yc) / float(np.abs(xc).max())
    out, why = _t_values(slopes, confidence, _t_keys("slope"), scale=scale)
    out["slope_n_seeds"] = slopes.size
    attrs = {}
    if why:
        attrs[f"nan_reason_{name}_slope"] = (
            f"{why} (seeds with finite {name} at every positive dose)"
        )
    dropped = _dropped(seeds, tp, [f"{dose}={v:g}" for v in positive])
    if dropped:
        attrs[f"dropped_seeds_{name}_slope"] = dropped
    return out, attrs


def _pooled_slope(
    y: np.ndarray, d: np.ndarray, name: str
) -> tuple[dict[str, float], dict[str, str]]:
    """One OLS of ``y`` on ``log10(dose)`` over every run with ``dose > 0`` (runs independent)."""
    keep = (d > 0) & np.isfinite(y)
    out = {"pooled_n_runs": int(keep.sum())}
    if np.unique(d[keep]).size < 2:
        why = "runs with finite values cover fewer than 2 positive doses"
        return out, {f"nan_reason_{name}_pooled_slope": why}
    fit = stats.linregress(np.log10(d[keep]), y[keep])
    out["pooled_slope"] = fit.slope
    if keep.sum() >= 3:
        out["pooled_slope_stderr"] = fit.stderr
    return out, {}


def _dose_contrast(
    seeds: np.ndarray,
    table: np.ndarray,
    levels: np.ndarray,
    confidence: float,
    name: str,
    dose: str,
    regime: str,
) -> tuple[dict[str, float], dict[str, str]]:
    """The largest dose minus dose 0, per seed (seeds with both), summarised over seeds."""
    if levels[0] != 0 or levels.size < 2:
        why = f"the {regime} runs need dose 0 and a positive dose; doses: " + ", ".join(
            f"{v:g}" for v in levels
        )
        return {}, {f"nan_reason_{name}_contrast": why}
    pair = table[:, [levels.size - 1, 0]]
    complete = np.isfinite(pair).all(axis=1)
    diff = pair[complete, 0] - pair[complete, 1]
    out, why = _t_values(diff, confidence, _t_keys("contrast"), scale=_scale(pair[complete]))
    out["contrast_n_seeds"] = diff.size
    attrs = {f"nan_reason_{name}_contrast": why} if why else {}
    dropped = _dropped(seeds, pair, [f"{dose}={levels[-1]:g}", f"{dose}=0"])
    if dropped:
        attrs[f"dropped_seeds_{name}_contrast"] = dropped
    return out, attrs


def _dose_spearman(
    y: np.ndarray, d: np.ndarray, name: str, dose: str
) -> tuple[dict[str, float], dict[str, str]]:
    """Spearman of ``y`` with the dose over every run, dose 0 included."""
    keep = np.isfinite(y)
    n = int(keep.sum())
    out = {"spearman_n_runs": n}
    if n < 3:
        return out, {f"nan_reason_{name}_spearman": f"{n} run(s) with finite {name}; needs 3"}
    if np.ptp(y[keep]) == 0 or np.ptp(d[keep]) == 0:
        return out, {f"nan_reason_{name}_spearman": f"{name} or {dose} constant over the runs"}
    res = stats.spearmanr(d[keep], y[keep])
    out["spearman"], out["spearman_p_value"] = res.statistic, res.pvalue
    return out, {}


def _dose_metric(
    y: np.ndarray,
    d: np.ndarray,
    seeds_r: np.ndarray,
    levels: np.ndarray,
    confidence: float,
    *,
    name: str,
    dose: str,
    regime: str,
) -> tuple[dict[str, np.ndarray | float], dict[str, str]]:
    """Every statistic of :func:`dose_response` for one metric's values ``y`` on the regime's
    runs (doses ``d``, seeds ``seeds_r``), and its attrs."""
    labels = [f"{regime} at {dose}={level:g}" for level in levels]
    seeds, table = _seed_table(seeds_r, y, [d == level for level in levels], labels)
    out: dict = _per_dose_means(y, d, levels, confidence)
    attrs: dict[str, str] = {}
    for values, block_attrs in (
        _dose_slope(seeds, table, levels, confidence, name, dose),
        _pooled_slope(y, d, name),
        _dose_contrast(seeds, table, levels, confidence, name, dose, regime),
        _dose_spearman(y, d, name, dose),
    ):
        out.update(values)
        attrs.update(block_attrs)
    return out, attrs


def dose_response(
    runs: xr.Dataset,
    metrics: str | Iterable[str] | None = None,
    *,
    dose: str = "decor_weight",
    regime: str = DOSE_REGIME,
    confidence: float = 0.95,
) -> xr.Dataset:
    """How each metric moves with the dose (lambda) within one regime, paired by seed.

    Choices, stated:

    * **Slope per decade**: for each seed that has a run at *every* positive dose (a balanced
      design, so every seed's slope rests on the same doses and their mean equals the OLS slope
      of the per-dose means), the OLS slope of the metric on ``log10(dose)`` over ``dose > 0``
      (``dose = 0`` has no logarithm); then the mean and t-interval over seeds. The seed's own
      intercept absorbs what the seed shares across doses.
    * **Pooled slope**: one OLS of the metric on ``log10(dose)`` over every run with ``dose > 0``
      (:func:`scipy.stats.linregress`), treating runs as independent; its standard error ignores
      the pairing and is given for comparison only.
    * **Contrast**: largest dose minus ``dose = 0``, per seed (seeds with both), t-interval.
    * **Spearman** of the metric against the dose over every run of the regime, ``dose = 0``
      included (ties in the dose get average ranks); :func:`scipy.stats.spearmanr` p-value.
    * **Per-dose means** with t-intervals over all runs at that dose.

    Parameters
    ----------
    runs : xr.Dataset
        Runs in this module's format (:func:`runs_dataset`).
    metrics : str or list of str, optional
        Per-run variables. Default: every numeric per-run variable.
    dose : str
        The coord (or variable) on ``run`` holding the dose; it must be finite and >= 0 on the
        runs of ``regime``.
    regime : str
        The regime whose runs form the dose series.
    confidence : float
        Coverage of the intervals, in (0, 1).

    Returns
    -------
    xr.Dataset
        Dims ``(metric,)``: ``slope`` (per decade of dose), ``slope_ci_low``, ``slope_ci_high``,
        ``slope_p_value``, ``slope_n_seeds``; ``pooled_slope``, ``pooled_slope_stderr``,
        ``pooled_n_runs``; ``contrast`` (largest dose - 0), ``contrast_ci_low``,
        ``contrast_ci_high``, ``contrast_p_value``, ``contrast_n_seeds``; ``spearman``,
        ``spearman_p_value``, ``spearman_n_runs``. Dims ``(metric, dose)``: ``dose_mean``,
        ``dose_ci_low``, ``dose_ci_high``, ``dose_n``. NaN where a statistic is undefined, with
        ``attrs["nan_reason_<metric>_<statistic>"]``.

    Examples
    --------
    >>> lam = [0.0, 0.01, 0.1, 1.0]
    >>> runs = runs_dataset([
    ...     {"regime": "saliencydecor", "seed": s, "decor_weight": w,
    ...      "corr": 0.5 - 0.1 * np.log10(w if w else 1e-3) + 0.01 * s + 0.001 * (s * i % 3)}
    ...     for s in range(4) for i, w in enumerate(lam)])
    >>> dr = dose_response(runs, "corr")
    >>> round(float(dr["slope"].sel(metric="corr")), 2)
    -0.1
    >>> float(dr["spearman"].sel(metric="corr")) < -0.9
    True
    """
    r = _Runs(runs)
    names = _metric_names(runs, metrics)
    confidence = _check_confidence(confidence)
    in_regime, d, levels = _dose_series(runs, r, dose, regime)
    per_metric = _grid(len(names), _DOSE_STATS, ints=_DOSE_COUNTS)
    per_dose = _grid((len(names), levels.size), _DOSE_LEVEL_STATS, ints=("dose_n",))
    blocks = (
        (
            i,
            _dose_metric(
                r.values(name)[in_regime],
                d,
                r.seed[in_regime],
                levels,
                confidence,
                name=name,
                dose=dose,
                regime=regime,
            ),
        )
        for i, name in enumerate(names)
    )
    attrs = _gather(per_metric | per_dose, blocks)
    out = xr.Dataset(
        _variables(per_metric, ("metric",)) | _variables(per_dose, ("metric", "dose")),
        coords={"metric": names, "dose": levels},
    )
    out["slope"].attrs["long_name"] = f"mean over seeds of the per-seed slope per decade of {dose}"
    out["pooled_slope"].attrs["long_name"] = (
        f"OLS slope per decade of {dose} over runs with dose > 0"
    )
    out["contrast"].attrs["long_name"] = f"paired difference {dose}={levels[-1]:g} minus {dose}=0"
    out["spearman"].attrs["long_name"] = f"Spearman of the metric with {dose} over all runs"
    out.attrs.update(
        {
            "dose": dose,
            "regime": regime,
            "confidence": confidence,
            "slope_method": "OLS on log10(dose) over dose > 0 per seed (seeds with every "
            "positive dose), then t-interval over seeds",
            **attrs,
        }
    )
    return out


# -- power ----------------------------------------------------------------------------------------


def _t_power(effect_size: float, nobs: float, alpha: float) -> float:
    """Power of the two-sided one-sample (paired) t-test: ``statsmodels``' ``ttest_power``.

    ``effect_size`` is Cohen's d_z (mean over SD of the paired differences); the statistic is
    noncentral t with ``nobs - 1`` df and noncentrality ``d sqrt(nobs)``.
    """
    df = nobs - 1.0
    nc = effect_size * math.sqrt(nobs)
    crit = stats.t.isf(alpha / 2.0, df)
    upper = 1.0 - special.nctdtr(df, nc, crit)
    lower = special.nctdtr(df, nc, -crit)
    # nctdtr gives NaN where the far tail underflows (large nc, small df): that tail is 0.
    return float(upper + (0.0 if np.isnan(lower) else lower))


def _solve_effect_size(nobs: float, alpha: float, power: float) -> float:
    """The d_z with ``_t_power(d_z, nobs, alpha) == power`` (``TTestPower.solve_power``)."""
    hi = 1.0
    while _t_power(hi, nobs, alpha) < power:
        hi *= 2.0
        if hi > 1e8:
            return np.inf
    return float(optimize.brentq(lambda d: _t_power(d, nobs, alpha) - power, 0.0, hi, xtol=1e-12))


def _solve_nobs(effect_size: float, alpha: float, power: float) -> float:
    """The (real) number of pairs giving ``power`` for ``effect_size``; at least 2."""
    d = abs(effect_size)
    if _t_power(d, 2.0, alpha) >= power:
        return 2.0
    hi = 4.0
    while _t_power(d, hi, alpha) < power:
        hi *= 2.0
        if hi > 1e9:
            return np.inf
    return float(optimize.brentq(lambda n: _t_power(d, n, alpha) - power, 2.0, hi, xtol=1e-10))


def _stated_lookup(stated, contrasts: Sequence[str], names: Sequence[str]) -> dict:
    if stated is None:
        stated = PAPER_STATED_DIFFERENCES
    if not isinstance(stated, Mapping):
        raise TypeError(
            f"stated must be a dict metric -> difference or (contrast, metric) -> difference; "
            f"got {type(stated).__name__}"
        )
    bare: dict[tuple[str, str], float] = {}
    pairs: dict[tuple[str, str], float] = {}
    for key, value in stated.items():
        diff = _real(value, f"stated[{key!r}]")
        if not np.isfinite(diff):
            raise ValueError(f"stated differences must be finite; got {key!r}: {value!r}")
        if isinstance(key, str):
            bare.update({(c, key): diff for c in contrasts})
        elif isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], str):
            pairs[(_contrast_name(key[0]), key[1])] = diff
        else:
            raise ValueError(
                f"stated keys must be a metric name or a (contrast, metric) pair; got {key!r}"
            )
    # A (contrast, metric) key wins over a bare metric key.
    table = bare | pairs
    return {k: v for k, v in table.items() if k[0] in contrasts and k[1] in names}


DEFAULT_CONTRASTS = (
    "saliencydecor-regular",
    "saliencydecor-sgt",
    "saliencydecor-dbn",
    *EFFECTS,
)
"""Claims :func:`power_analysis` sizes by default."""


_POWER_VARS = (
    "n_seeds",
    "mean_difference",
    "sd_difference",
    "detectable_effect_size",
    "detectable_difference",
    "stated_difference",
    "stated_effect_size",
    "power_at_stated",
    "seeds_needed",
)
"""The ``(metric, contrast)`` variables of :func:`power_analysis`, in output order."""


def _power_contrasts(contrasts, known: set[str]) -> list[str]:
    """The contrast names to size, in order without repeats; a contrast given (not a default)
    must have its regimes in the runs."""
    if contrasts is None:
        contrasts = DEFAULT_CONTRASTS
    elif isinstance(contrasts, (str, tuple)) and _is_single_contrast(contrasts):
        contrasts = [contrasts]
    cnames = list(dict.fromkeys(_contrast_name(c) for c in contrasts))
    if not cnames:
        raise ValueError("contrasts must name at least one contrast; got none")
    for c in cnames:
        missing = [reg for reg in _regimes_of(c) if reg not in known]
        if missing and c not in DEFAULT_CONTRASTS:
            raise ValueError(
                f"contrast {c!r} needs regimes not in the runs: {', '.join(missing)}"
                + did_you_mean(missing[0], known)
            )
    return cnames


def _sizes(
    n: int, sd: float, stated: float, alpha: float, power: float
) -> tuple[dict[str, float], str | None]:
    """The difference ``n`` seeds detect; the power at, and the seeds for, the stated one."""
    d_det = _solve_effect_size(float(n), alpha, power)
    out = {"detectable_effect_size": d_det, "detectable_difference": d_det * sd}
    if not np.isfinite(stated):
        return out, None
    if stated == 0:
        return out, "a stated difference of 0 is undetectable"
    out["stated_effect_size"] = abs(stated) / sd
    out["power_at_stated"] = _t_power(out["stated_effect_size"], float(n), alpha)
    # A hair below the exact root so a round trip n -> d -> n gives back n.
    out["seeds_needed"] = math.ceil(_solve_nobs(out["stated_effect_size"], alpha, power) - 1e-6)
    return out, None


def _power_cell(
    r: _Runs,
    values: np.ndarray,
    name: str,
    contrast: str,
    stated: float,
    *,
    known: set[str],
    alpha: float,
    power: float,
    decor_weight,
) -> tuple[dict[str, float], dict[str, str]]:
    """Seeds, spread and sizes of one (metric, contrast) (``stated``: NaN for none), and attrs."""
    key = f"{name}_{contrast}"
    out = {"stated_difference": stated}
    if any(reg not in known for reg in _regimes_of(contrast)):
        return out, {f"nan_reason_{key}": f"the runs lack regime(s) of {contrast}"}
    x, scale, cells, dropped = _per_seed(r, values, contrast, decor_weight)
    attrs = {f"dropped_seeds_{key}": dropped} if dropped else {}
    out["n_seeds"] = x.size
    if x.size < 2:
        attrs[f"nan_reason_{key}"] = f"{x.size} seed(s) with finite {name} in all of {cells}"
        return out, attrs
    out["mean_difference"], out["sd_difference"] = x.mean(), x.std(ddof=1)
    if not out["sd_difference"] > 1e-12 * scale:
        attrs[f"nan_reason_{key}"] = "the per-seed differences have no spread"
        return out, attrs
    sizes, why = _sizes(x.size, out["sd_difference"], stated, alpha, power)
    if why:
        attrs[f"nan_reason_{key}_stated"] = why
    return out | sizes, attrs


def power_analysis(
    runs: xr.Dataset,
    metrics: str | Iterable[str] | None = None,
    contrasts: Iterable | None = None,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    stated: Mapping | None = None,
    decor_weight: float | None = None,
) -> xr.Dataset:
    """Per claim: the smallest difference the seed count detects, and the seeds a stated one needs.

    Every contrast is a paired (per-seed) comparison tested by a two-sided one-sample t-test on
    the per-seed values, as in :func:`factorial_effects` and :func:`paired_contrasts`. With ``n``
    seeds and the observed SD ``s`` of the per-seed values, the detectable difference is
    ``d_z * s``, where ``d_z`` solves ``power(d_z, n) = power`` (what ``statsmodels``'
    ``TTestPower().solve_power(nobs=n, alpha=alpha, power=power)`` returns; reimplemented here with
    :mod:`scipy.stats.nct` so the package does not depend on statsmodels, and tested against it).
    The seeds needed for a stated difference ``D`` solve ``power(|D| / s, n) = power`` for ``n``,
    rounded up (at least 2). Both rest on the observed SD, itself uncertain with few seeds.

    Parameters
    ----------
    runs : xr.Dataset
        Runs in this module's format (:func:`runs_dataset`).
    metrics : str or list of str, optional
        Per-run variables. Default: every numeric per-run variable.
    contrasts : iterable, optional
        Each an effect name (``masking``, ``whitening``, ``interaction``), a pair ``(a, b)`` of
        regimes or ``"a-b"`` (the per-seed difference ``a - b``). Default:
        :data:`DEFAULT_CONTRASTS`.
    alpha : float
        Two-sided significance level, in (0, 1).
    power : float
        Target power, in (0, 1).
    stated : dict, optional
        Differences to size for, on the metrics' own scales: keys a metric name (every
        contrast) or a ``(contrast, metric)`` pair (that one; wins over a bare metric). Default:
        :data:`PAPER_STATED_DIFFERENCES` (the paper's Tables I and III). ``{}`` sizes none.
    decor_weight : float, optional
        Lambda of the ``saliencydecor`` cell; default as in :func:`factorial_effects`.

    Returns
    -------
    xr.Dataset
        Dims ``(metric, contrast)``: ``n_seeds``, ``mean_difference``, ``sd_difference``,
        ``detectable_effect_size`` (d_z), ``detectable_difference`` (d_z x SD, the smallest
        absolute difference detected with the given power), ``stated_difference``,
        ``stated_effect_size``, ``power_at_stated`` (power of the present seed count for the
        stated difference) and ``seeds_needed``. NaN where undefined, with
        ``attrs["nan_reason_<metric>_<contrast>"]``.

    Examples
    --------
    >>> runs = runs_dataset([{"regime": k, "seed": s, "acc": v + 0.01 * s + 0.005 * (s % 2) * (k == "sgt")}
    ...     for k, v in {"regular": 0.8, "sgt": 0.82}.items() for s in range(6)])
    >>> pw = power_analysis(runs, "acc", [("sgt", "regular")], stated={"acc": 0.001})
    >>> bool(pw["detectable_difference"].item() > 0)
    True
    >>> int(pw["seeds_needed"].item()) > 6
    True
    """
    r = _Runs(runs)
    names = _metric_names(runs, metrics)
    for label, v in (("alpha", alpha), ("power", power)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0 < v < 1:
            raise ValueError(f"{label} must be a float in (0, 1); got {label}={v!r}")
    known = set(r.regime.tolist())
    cnames = _power_contrasts(contrasts, known)
    lookup = _stated_lookup(stated, cnames, names)
    arrays = _grid((len(names), len(cnames)), _POWER_VARS, ints=("n_seeds",))
    options = {"known": known, "alpha": alpha, "power": power, "decor_weight": decor_weight}
    blocks = (
        ((i, j), _power_cell(r, r.values(name), name, c, lookup.get((c, name), np.nan), **options))
        for i, name in enumerate(names)
        for j, c in enumerate(cnames)
    )
    attrs = _gather(arrays, blocks)
    out = xr.Dataset(
        _variables(arrays, ("metric", "contrast")), coords={"metric": names, "contrast": cnames}
    )
    out["detectable_difference"].attrs["long_name"] = (
        f"smallest |difference| detected with power {power:g} at two-sided alpha {alpha:g}, "
        "from the observed SD of the per-seed values"
    )
    out["seeds_needed"].attrs["long_name"] = (
        f"seeds for power {power:g} at two-sided alpha {alpha:g} for the stated difference"
    )
    out.attrs.update(
        {
            "alpha": float(alpha),
            "power": float(power),
            "test": "two-sided one-sample t-test on per-seed paired values (noncentral t)",
            "stated_source": "PAPER_STATED_DIFFERENCES (Tables I and III)"
            if stated is None
            else "given",
            **attrs,
        }
    )
    return out


def _is_single_contrast(c) -> bool:
    """A bare ``"a-b"``/effect name, or a pair of regime names (not a tuple of contrasts)."""
    if isinstance(c, str):
        return True
    return len(c) == 2 and all(isinstance(x, str) and x not in EFFECTS and "-" not in x for x in c)
