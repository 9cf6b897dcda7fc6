"""Helpers shared by the analysis scripts: train a set of runs, analyse them, compare regimes.

Not part of the package: these scripts use only its public API (``geomxai.train``,
``geomxai.study``, ``geomxai.report``), as a user's own analysis would.
"""

from __future__ import annotations

import logging
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import stats

from geomxai.report import seed_interval
from geomxai.study import analyze_runs
from geomxai.train import TrainConfig, read_metrics, train

log = logging.getLogger("analyses")


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def command_line() -> str:
    """The command that ran this script, quoted so it can be pasted back into a shell."""
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


@dataclass(frozen=True)
class Variant:
    """One trained configuration: a label (the ``regime`` coordinate of the results) and the
    :class:`~geomxai.train.TrainConfig` fields that differ from the base config."""

    label: str
    overrides: dict = field(default_factory=dict)

    def run_name(self, seed: int) -> str:
        return f"{self.label}-s{seed}"


def train_variants(
    base: TrainConfig, variants: list[Variant], seeds: list[int], runs_root: Path
) -> tuple[dict[str, list[Path]], dict[str, float]]:
    """Train every variant at every seed (resuming runs that already have checkpoints).

    Returns the run directories per variant label and the training time per label, summed from
    each run's ``metrics.jsonl`` (so it includes epochs trained by an earlier invocation).
    """
    dirs: dict[str, list[Path]] = {}
    seconds: dict[str, float] = {}
    progress = sys.stderr.isatty()
    for variant in variants:
        dirs[variant.label] = []
        seconds[variant.label] = 0.0
        for seed in seeds:
            out = runs_root / variant.run_name(seed)
            config = base.replace(
                **variant.overrides,
                seed=seed,
                out_dir=str(out),
                resume=(out / "checkpoints").is_dir(),
                progress=progress,
            )
            log.info("training %s seed %d -> %s", variant.label, seed, out)
            run_dir = train(config)
            dirs[variant.label].append(run_dir)
            # The run's own per-epoch seconds, so runs resumed from an earlier invocation are
            # counted at what they cost then, not at the zero seconds this call took.
            took = sum(float(m.get("seconds", 0.0)) for m in read_metrics(Path(run_dir)))
            seconds[variant.label] += took
            log.info("%s seed %d: %.0f s of training", variant.label, seed, took)
    return dirs, seconds


def analyse_variants(
    dirs: dict[str, list[Path]], **analyze_kwargs
) -> tuple[xr.Dataset, dict[str, float]]:
    """:func:`geomxai.study.analyze_runs` per variant, merged along ``regime`` = variant label.

    ``analyze_runs`` takes the ``regime`` coordinate from each run's config, so variants of the
    same regime (the ablation's mask ratios) are analysed apart and relabelled before merging.
    """
    parts, seconds = [], {}
    progress = sys.stderr.isatty()
    for label, run_dirs in dirs.items():
        start = time.perf_counter()
        log.info("analysing %s (%d runs)", label, len(run_dirs))
        ds = analyze_runs(run_dirs, progress=progress, **analyze_kwargs)
        parts.append(ds.assign_coords(regime=[label]))
        seconds[label] = time.perf_counter() - start
        log.info("analysed %s in %.0f s", label, seconds[label])
    attrs = parts[0].attrs
    # "drop_conflicts" keeps each variable's nan_reason; "drop" would strip them all.
    merged = xr.combine_by_coords(parts, join="outer", combine_attrs="drop_conflicts")
    merged.attrs = {}
    merged = merged.sel(regime=list(dirs))  # keep the variants in the order they were given
    merged.attrs.update({k: attrs[k] for k in ("dataset", "analysis") if k in attrs})
    return merged, seconds


def final_values(ds: xr.Dataset, var: str, label: str) -> np.ndarray:
    """Per-seed values of ``var`` for one variant at the last epoch (feature layer if any)."""
    da = ds[var].sel(regime=label)
    if "layer" in da.dims:
        da = da.isel(layer=0)
    if "epoch" in da.dims:
        da = da.isel(epoch=-1)
    return np.atleast_1d(np.asarray(da.values, dtype=float))


interval = seed_interval  # the report's: mean and 95% t half-width over seeds


def fmt(values: np.ndarray, *, scale: float = 1.0, digits: int = 2) -> str:
    mean, half = interval(np.asarray(values, dtype=float) * scale)
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


@dataclass(frozen=True)
class Comparison:
    """``a - b`` with a Welch 95% interval, and what it says about "a is better"."""

    diff: float
    half: float
    call: str  # "better", "worse", "not distinguishable" or "one seed: no interval"


def compare(a: np.ndarray, b: np.ndarray, *, higher_is_better: bool) -> Comparison:
    """Difference of the seed means of ``a`` and ``b`` with a Welch 95% t-interval.

    The call is "better"/"worse" only when the interval excludes zero; otherwise "not
    distinguishable": the difference is within what changing the seed moves.
    """
    a = a[np.isfinite(a)]
    b = b[np.isfinite(b)]
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Comparison(diff, math.nan, "one seed: no interval")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        half = 0.0
    else:
        dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
        half = float(stats.t.ppf(0.975, dof) * se)
    if abs(diff) <= half:
        call = "not distinguishable"
    else:
        call = "better" if (diff > 0) == higher_is_better else "worse"
    return Comparison(diff, half, call)


def fmt_diff(c: Comparison, *, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    if not math.isfinite(c.half):
        return f"{c.diff * scale:+.{digits}f}{unit}"
    return f"{c.diff * scale:+.{digits}f}{unit} ± {c.half * scale:.{digits}f}{unit}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"
