"""Analyse runs: every checkpoint of a run measured (cached, serially or through dask) into one
Dataset over ``epoch`` with its dynamics, and runs merged along ``regime`` and ``seed``."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace
from numbers import Integral
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from geomxai import schema
from geomxai._checks import Interval
from geomxai.rundir import list_checkpoints, read_run, run_name
from geomxai.study._cache import _cache_folder, analyze_checkpoint
from geomxai.study._dynamics import add_dynamics
from geomxai.study._nan import _merge_reasons, _scalar
from geomxai.study._options import AnalysisOptions
from geomxai.study._probe import Probe, make_probe
from geomxai.study._provenance import stamp
from geomxai.study._saliency_method import _check_per_checkpoint_method


def checkpoints_of(run_dir) -> list[Path]:
    """The per-epoch checkpoints of a run directory, in epoch order.

    :func:`geomxai.rundir.list_checkpoints` as a list; raises ``FileNotFoundError`` naming the
    directory when it holds none.
    """
    return list(list_checkpoints(run_dir, missing_ok=False).values())


def analyze_run(
    run_dir,
    *,
    options: AnalysisOptions | None = None,
    probe: Probe | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
    cache=True,
    device=None,
    epochs=None,
    steps=None,
    **option_overrides,
) -> xr.Dataset:
    """Every checkpoint of one run, measured on a fixed probe set, as one Dataset over ``epoch``.

    Parameters
    ----------
    run_dir : path-like
        A run directory written by :func:`geomxai.train.train`.
    options : AnalysisOptions, optional
        What to measure; keyword overrides (``probe_size=...``) are applied on top. A Captum
        instance as ``saliency_method`` is refused with a ValueError (it is bound to one model
        and each checkpoint is a new one): give a factory ``model -> Attribution``.
    probe : Probe, optional
        Defaults to the first ``probe_size`` test images of the run's dataset.
    workers, scheduler
        ``workers > 1`` or a scheduler address analyses checkpoints in parallel through dask.
    cache : bool or path-like
        Where each checkpoint's result is cached, keyed by the checkpoint's contents, the
        options and the probe: True (default) ``run_dir/analysis/``, falling back to no cache
        with a warning when the run directory is not writable (a read-only mount, another
        user's run); a folder path, which must be writable (one folder may serve many runs);
        False: no cache.
    device : str or torch.device, optional
        Where each checkpoint's passes run (serial analysis only; dask workers use their own
        device); default the CPU the checkpoint is loaded on.
    epochs : iterable of int, optional
        Analyse only these checkpointed epochs (default: every checkpoint, the sub-epoch ones
        of ``checkpoint_every_steps`` included). The dynamics then compare consecutive
        *analysed* checkpoints; include the last two epochs for a final swap rate and saliency
        stability between adjacent checkpoints. An epoch the run has no checkpoint for raises
        ``ValueError`` naming the ones it has.
    steps : iterable of int, optional
        Analyse (also) the checkpoints at these global optimizer steps, epoch or sub-epoch
        ones (:func:`geomxai.rundir.training_checkpoints` lists them); a step without a
        checkpoint raises ``ValueError`` naming the ones there are.

    Returns
    -------
    xr.Dataset
        Dims ``epoch``, ``layer``, ``fraction``, ``component``, ... with ``test_acc`` and the
        training losses from ``metrics.jsonl``; the run's config as JSON in ``attrs["config"]``.
        The ``epoch`` coordinate is training time in epochs: int epochs, or floats where
        sub-epoch checkpoints are analysed (1.5: half-way through the second epoch); the
        ``step`` coordinate along it holds each checkpoint's global optimizer step (float with
        NaN only where the run's steps per epoch are unknown).
        Results of checkpoints already analysed with the same options are read from the cache
        instead of recomputed. The dynamics compare consecutive checkpoints: axis swaps,
        saliency stability, and the linear CKA and Procrustes distance of each layer's probe
        features to the previous and the final checkpoint (``cka_previous``, ``cka_final``,
        ``procrustes_previous``, ``procrustes_final``); the probe features themselves are not
        kept. ``probe_size`` is the number of probe samples; a probe below a metric's minimum
        (:func:`geomxai.schema.min_samples`) leaves it NaN saying so, with one
        :class:`~geomxai.study.ProbeSizeWarning` per message for the run.
    """
    run_dir = Path(run_dir)
    options = options or AnalysisOptions()
    if option_overrides:
        options = replace(options, **{k: v for k, v in option_overrides.items() if v is not None})
    _check_per_checkpoint_method(options.saliency_method)
    if not Interval(Integral, 1, None).accepts(workers):
        raise ValueError(
            f"workers (--workers) must be a positive integer (1: serial); got workers={workers!r}"
        )
    if device is not None and (workers > 1 or scheduler):
        raise ValueError(
            "device goes with the serial analysis (workers=1, no scheduler); dask workers run "
            f"on their own devices; got device={str(device)!r} and workers={workers}"
        )
    run = read_run(run_dir)
    chosen = _selected_checkpoints(run, epochs, steps)
    epochs = [_epoch_value(c) for c in chosen]
    from geomxai.train import check_run_identity

    # A checkpoint copied in from another run would be labelled with this run's regime and seed.
    check_run_identity(run.path, run.config, [c.path for c in chosen])
    if probe is None:
        probe = make_probe(run.config["dataset"], options.probe_size)
    parts = _checkpoint_parts(
        [c.path for c in chosen],
        probe,
        options,
        _cache_folder(run_dir, cache),
        workers=workers,
        scheduler=scheduler,
        device=device,
        desc=f"analyse {run_dir.name}",
        progress=progress,
    )
    ds = _over_epochs(parts, epochs, probe, steps=[c.step for c in chosen])
    ds = _with_training_metrics(ds, run.metrics, epochs)
    ds.attrs.update(_run_attrs(run, options, parts))
    return stamp(schema.annotate(ds))


def _epoch_value(checkpoint) -> int | float:
    """A checkpoint's ``epoch`` coordinate: the epoch number of an epoch checkpoint, the
    fractional training time of a sub-epoch one (so every run without them keeps int epochs)."""
    if not checkpoint.sub_epoch:
        return int(checkpoint.epoch)
    return float(checkpoint.epoch)


def _selected_checkpoints(run, epochs, steps) -> list:
    """The checkpoints to analyse, in training order (:class:`geomxai.rundir.Checkpoint`): every
    one, sub-epoch ones included, when neither ``epochs`` nor ``steps`` is given; else the epoch
    checkpoints of ``epochs`` and the checkpoints (of either kind) at global steps ``steps``."""
    timeline = list(run.timeline)
    if epochs is None and steps is None:
        return timeline
    keep = set()
    if epochs is not None:
        keep |= {run.checkpoints[e] for e in _selected_epochs(run, epochs)}
    if steps is not None:
        steps = sorted({int(s) for s in steps})
        by_step = {c.step: c.path for c in timeline if c.step is not None}
        missing = [s for s in steps if s not in by_step]
        if missing or not steps:
            raise ValueError(
                f"steps must be global steps of checkpoints of {str(run.path)!r}; got "
                f"{missing or steps} (it has {sorted(by_step)})"
            )
        keep |= {by_step[s] for s in steps}
    return [c for c in timeline if c.path in keep]


def _selected_epochs(run, epochs) -> list[int]:
    """Every checkpointed epoch, or the requested ones (which must all be checkpointed)."""
    if epochs is None:
        return run.epochs
    epochs = sorted({int(e) for e in epochs})
    missing = [e for e in epochs if e not in run.checkpoints]
    if missing or not epochs:
        raise ValueError(
            f"epochs must be checkpointed epochs of {str(run.path)!r}; got {missing or epochs} "
            f"(it has {run.epochs})"
        )
    return epochs


def _checkpoint_parts(
    paths, probe, options, cache_dir, *, workers, scheduler, device, desc, progress
) -> list[xr.Dataset]:
    """:func:`analyze_checkpoint` of each path, serially or through dask."""
    from geomxai.study._probe import ProbeSizeWarning

    with warnings.catch_warnings():
        # Said once for the run (by _over_epochs), not once per checkpoint (or never, for
        # cached ones).
        warnings.simplefilter("ignore", ProbeSizeWarning)
        if workers > 1 or scheduler:
            from geomxai.study._parallel import map_checkpoints

            return map_checkpoints(
                paths, probe, options, cache_dir, workers=workers, scheduler=scheduler
            )
        extra = {} if device is None else {"device": device}
        return [
            analyze_checkpoint(p, probe, options, cache_dir=cache_dir, **extra)
            for p in tqdm(paths, desc=desc, disable=not progress, unit="ckpt")
        ]


def _over_epochs(
    parts: list[xr.Dataset], epochs: list[int], probe: Probe, *, steps: list | None = None
) -> xr.Dataset:
    """The checkpoints' parts along ``epoch``, their NaN reasons kept, with the dynamics; with
    ``steps`` (each checkpoint's global optimizer step, None where unknown) a ``step``
    coordinate along ``epoch``."""
    from geomxai.study._probe import warn_probe, widths_of

    ds = xr.concat(
        parts,
        dim="epoch",
        coords="minimal",
        compat="override",
        join="outer",
        combine_attrs="drop_conflicts",
    )
    ds.attrs = {}
    ds = ds.assign_coords(epoch=epochs)
    if steps is not None:
        ds = ds.assign_coords(step=("epoch", _step_values(steps)))
        ds["step"].attrs["long_name"] = "global optimizer steps taken at the checkpoint"
    # Each checkpoint's NaN reasons are kept: concat drops the ones that differ between epochs.
    _merge_reasons(ds, [(f"epoch {e}", part) for e, part in zip(epochs, parts, strict=True)])
    ds = add_dynamics(ds).drop_vars("probe_features", errors="ignore")
    if "probe_size" in ds:
        n_probe = int(np.nanmin(np.asarray(ds["probe_size"].values, dtype=float)))
        warn_probe(n_probe, widths_of(ds), labelled=probe.labels is not None)
    return ds


def _step_values(steps: list) -> np.ndarray:
    """Steps as int64, or float64 with NaN where a run's steps per epoch are unknown."""
    if all(s is not None for s in steps):
        return np.asarray(steps, dtype=np.int64)
    return np.asarray([np.nan if s is None else s for s in steps], dtype=float)


def _with_training_metrics(ds: xr.Dataset, metrics: dict, epochs: list[int]) -> xr.Dataset:
    """The run's ``metrics.jsonl`` values over ``epoch``, NaN with a reason where missing."""
    for key in schema.names("training"):
        ds[key] = xr.DataArray([_scalar(metrics.get(e, {}).get(key)) for e in epochs], dims="epoch")
        missing = [e for e in epochs if not math.isfinite(_scalar(metrics.get(e, {}).get(key)))]
        # Sub-epoch checkpoints (float epochs) have no line: metrics.jsonl has one per epoch.
        sub_epoch = [e for e in missing if isinstance(e, float)]
        missing = [e for e in missing if not isinstance(e, float)]
        reasons = []
        if missing:
            initial = "epoch 0 is the initial model, before any training step; "
            reasons.append(
                (initial if missing == [0] else "")
                + f"metrics.jsonl has no finite {key} for epoch(s) {missing}"
            )
        if sub_epoch:
            reasons.append(
                f"the sub-epoch checkpoints (epochs {sub_epoch}) have no metrics line: "
                "metrics.jsonl has one per finished epoch"
            )
        if reasons:
            ds[key].attrs["nan_reason"] = "; ".join(reasons)
    if 0 in epochs and math.isnan(float(ds["test_acc"].sel(epoch=0))):
        reason = "epoch 0 is the initial model; its test accuracy is probe_acc"
        if any(isinstance(e, float) for e in epochs):
            reason += "; sub-epoch checkpoints have no metrics line (probe_acc measures them)"
        ds["test_acc"].attrs["nan_reason"] = reason
    return ds


def _run_attrs(run, options: AnalysisOptions, parts: list[xr.Dataset]) -> dict:
    config = run.config
    return {
        "config": json.dumps(config, sort_keys=True),
        "regime": config.get("regime", ""),
        "seed": int(config.get("seed", 0)),
        "dataset": config.get("dataset", ""),
        "analysis": options.key(),
        # The method each checkpoint used (a factory's instance by its own name).
        "saliency_method": parts[0].attrs.get("saliency_method")
        or json.loads(options.key())["saliency_method"],
        "run_dir": str(run.path),
        **{k: v for k, v in parts[0].attrs.items() if k in ("reduction", "entanglement_layer")},
    }


_NOT_IN_RESULTS = (
    "probe_saliency",
    "top_eigvecs",
    "deletion_auc_per_sample",
    "insertion_auc_per_sample",
)
"""Per-checkpoint variables a run keeps in memory that a study's results leave out: every probe
map, the eigenvectors (the dynamics were computed from them) and the per-sample areas."""


def analyze_runs(run_dirs, **kwargs) -> xr.Dataset:
    """Several runs merged along ``regime`` and ``seed`` (from each run's config).

    Takes :func:`analyze_run`'s keyword arguments. With ``workers > 1`` and no scheduler, one
    local dask cluster serves every run, so its start-up is paid once.
    """
    run_dirs = list(run_dirs)
    if kwargs.get("workers", 1) > 1 and not kwargs.get("scheduler") and len(run_dirs) > 1:
        from geomxai.study._parallel import local_cluster

        with local_cluster(kwargs["workers"]) as address:
            return analyze_runs(run_dirs, **{**kwargs, "scheduler": address})
    runs = [analyze_run(r, **kwargs) for r in run_dirs]
    if not runs:
        raise ValueError("analyze_runs needs at least one run directory")
    return combine_runs(runs)


def combine_runs(runs: list[xr.Dataset]) -> xr.Dataset:
    """Per-run results (of :func:`analyze_run` or :func:`~geomxai.study.analyze_checkpoints`)
    merged along ``regime`` and ``seed`` (their attrs), the layout a study's results and
    :func:`geomxai.report.build_report` have.

    Drops the per-run bulk variables (every probe map, the eigenvectors, per-sample areas) and
    keeps ``configs``, ``dataset``, ``analysis``, ``saliency_method`` and what was done to the
    inputs in attrs, stamped (:func:`~geomxai.study.stamp`: ``schema_version``, the oldest of
    the runs', ``created``, ``hardware``, ``commit``). Two runs with the same
    ``(regime, seed)`` raise a ``ValueError``.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("combine_runs needs at least one run's results")
    tagged = []
    for ds in runs:
        attrs = dict(ds.attrs)
        ds = ds.drop_vars(_NOT_IN_RESULTS, errors="ignore")
        # A run's global steps are its own (runs differ in steps per epoch): the step
        # coordinate gets the run's dims too, NaN at epochs a run does not have.
        step = [c for c in ("step",) if c in ds.coords and "regime" not in ds[c].dims]
        ds = ds.reset_coords(step).expand_dims(regime=[attrs["regime"]], seed=[attrs["seed"]])
        ds = ds.set_coords(step)
        ds.attrs = {}
        tagged.append((attrs, ds))
    keys = [(a["regime"], a["seed"]) for a, _ in tagged]
    if len(set(keys)) != len(keys):
        raise ValueError(f"two runs share a (regime, seed) pair: {keys}")
    # "drop_conflicts", not "drop": the latter also strips every variable's attrs (nan_reason).
    merged = xr.combine_by_coords(
        [ds for _, ds in tagged], join="outer", combine_attrs="drop_conflicts"
    )
    labels = [run_name(a["regime"], a["seed"]) for a, _ in tagged]
    _merge_reasons(merged, [(label, ds) for label, (_, ds) in zip(labels, tagged, strict=True)])
    if len({ds.sizes["epoch"] for _, ds in tagged}) > 1:
        merged.attrs["nan_reason_epochs"] = (
            "runs have different numbers of checkpoints; a run's values are NaN at epochs it "
            "does not have"
        )
    merged.attrs["configs"] = json.dumps(
        {run_name(a["regime"], a["seed"]): json.loads(a["config"]) for a, _ in tagged},
        sort_keys=True,
    )
    merged.attrs["dataset"] = tagged[0][0]["dataset"]
    merged.attrs["analysis"] = tagged[0][0]["analysis"]
    merged.attrs["saliency_method"] = tagged[0][0]["saliency_method"]
    for key in (
        "reduction",
        "entanglement_layer",
        "preprocessing",
        "input_size",
        "resize_factor",
        "checkpoint_index",
    ):
        if key in tagged[0][0]:
            merged.attrs[key] = tagged[0][0][key]
    # The oldest layout the runs say they have (merging does not make an old result current).
    # A run without one counts as current: the study engine brings its older per-run files to
    # today's layout (current_layout) before merging them.
    versions = [int(a["schema_version"]) for a, _ in tagged if "schema_version" in a]
    merged.attrs["schema_version"] = min(versions, default=schema.SCHEMA_VERSION)
    return stamp(merged)
