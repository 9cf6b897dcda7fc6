"""The writing side of a run directory and its policy: lock, start, resume, metrics lines.

What the trainer may do with a run directory is decided here: a new run refuses a directory that
already holds one (:func:`check_fresh_run_dir`); a resume continues from the last checkpoint in
training order, read and checked with everything it restores before anything is rewritten
(:func:`find_resume_point`), and may change only :data:`RESUMABLE_CHANGES`
(:func:`check_resumable`) on the same model (:func:`check_same_model`); the run's ``config.json``
and, on resume, its metrics trimmed to the checkpoints are written by :func:`start_run_dir`.
Reading (config, checkpoints, metrics) is :mod:`geomxai.rundir`, the one reader every consumer
uses; the names it defines are re-exported here for the trainer.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from geomxai._fs import naming_errors, remove_stale_temps, write_atomic, write_text_atomic
from geomxai._lock import DirectoryLock
from geomxai.rundir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOCK_FILE,
    METRICS_FILE,
    checkpoint_path,
    list_checkpoints,
    list_step_checkpoints,
    read_metrics,
    step_checkpoint_path,
    training_checkpoints,
)
from geomxai.train._checkpoint import (
    CheckpointError,
    check_metrics_entry,
    check_resume_payload,
    read_checkpoint,
)
from geomxai.train._config import RESUMABLE_CHANGES, ConfigError, TrainConfig
from geomxai.train._step import TERMS

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "METRICS_FILE",
    "RESUMABLE_CHANGES",
    "ResumePoint",
    "append_metrics",
    "check_checkpoint_entries",
    "check_fresh_run_dir",
    "check_partial_epoch",
    "check_resumable",
    "check_same_model",
    "checkpoint_path",
    "config_differences",
    "find_resume_point",
    "latest_checkpoint",
    "list_checkpoints",
    "list_step_checkpoints",
    "lock_run_dir",
    "read_metrics",
    "resume_metrics_rows",
    "rewrite_metrics",
    "start_run_dir",
    "step_checkpoint_path",
    "training_checkpoints",
    "write_atomic",
    "write_text_atomic",
]

log = logging.getLogger("geomxai.train")


def latest_checkpoint(run_dir) -> Path | None:
    """The checkpoint a resumed run continues from: the last in training order, epoch or
    sub-epoch (by global step, read from the file names and ``metrics.jsonl``); None when the
    run has none."""
    timeline = training_checkpoints(run_dir)
    return timeline[-1].path if timeline else None


def config_differences(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """Human-readable differences between a run's saved config and ``config``, except the
    fields a resume may change."""
    current = config.to_dict()
    out = []
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE_CHANGES:
            continue
        default = TrainConfig.__dataclass_fields__.get(key)
        # A field added to TrainConfig after the run was written counts as its default.
        before = saved.get(key, default.default if default is not None else None)
        if before != current.get(key):
            out.append(f"{key} (run: {before!r}, now: {current.get(key)!r})")
    return out


def check_resumable(saved_config: dict[str, Any], config: TrainConfig, run_dir: Path) -> None:
    """Refuse to resume a run whose saved config differs from ``config`` in more than
    :data:`RESUMABLE_CHANGES`, naming each difference (a :class:`ConfigError`)."""
    diffs = config_differences(saved_config, config)
    if diffs:
        raise ConfigError(
            f"cannot resume the run in {str(run_dir)!r}: its config differs in "
            + "; ".join(diffs)
            + f". Only {', '.join(sorted(RESUMABLE_CHANGES))} may change on resume; "
            "use another out_dir for a new run"
        )


def append_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Append one JSON line to ``metrics.jsonl`` and flush it to disk.

    A crash (or a full disk) during the append can leave the line cut short; the reader skips
    such a last line, and a resumed run rewrites the file from its checkpoints. Errors name
    the file.
    """
    path = Path(run_dir) / METRICS_FILE
    with naming_errors(path), open(path, "a") as fh:
        fh.write(json.dumps(metrics, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def rewrite_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    write_text_atomic(Path(run_dir) / METRICS_FILE, text)


def _is_checkpoint_name(name: str) -> bool:
    return name.startswith(("epoch_", "step_")) and name.endswith(".pt")


def lock_run_dir(run_dir) -> DirectoryLock:
    """Take the run directory's exclusive lock (creating the directory), then remove what a
    killed writer left: temporary files of checkpoints, ``config.json`` and ``metrics.jsonl``.

    Under the lock no other process writes these, so every temporary file of those names goes,
    whoever made it; nothing else in the directory is touched (``analysis/`` belongs to
    ``geomxai analyze``). Release the lock with ``.release()``; a directory the lock created is
    removed again if nothing was written into it.

    Raises
    ------
    geomxai._lock.DirectoryLockedError
        Another live process trains this run; the message names it.
    OSError
        The directory cannot be created or written (read-only, no permission), naming it.
    """
    run_dir = Path(run_dir)
    lock = DirectoryLock(
        run_dir,
        what="run directory",
        hint="wait for it to finish, stop it, or choose another out_dir",
        lock_name=LOCK_FILE,
    )
    lock.acquire()
    remove_stale_temps(run_dir, {CONFIG_FILE, METRICS_FILE}, owned=True)
    remove_stale_temps(run_dir / CHECKPOINT_DIR, _is_checkpoint_name, owned=True)
    return lock


def check_checkpoint_entries(run_dir) -> None:
    """Refuse a run directory where something other than a file has a checkpoint's name.

    The reader ignores a folder named ``epoch_0001.pt``; the trainer could not write that
    epoch's checkpoint over it, so it says so before training.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if _is_checkpoint_name(path.name) and not path.is_file():
            raise ConfigError(
                f"out_dir {str(run_dir)!r} cannot be trained into: {str(path)!r} is not a "
                "checkpoint file but a folder or other entry of that name; move it out of "
                f"{CHECKPOINT_DIR}/ or choose another out_dir"
            )


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues, read and checked before anything of the run is rewritten.

    Attributes
    ----------
    path : Path
        The checkpoint: the last epoch checkpoint, or a sub-epoch one after it.
    payload : dict
        Its contents (model, optimizer, scheduler, epoch; ``partial_epoch`` for a sub-epoch one).
    epoch : int
        The last epoch completed before it.
    metrics_rows : list of dict
        The ``metrics.jsonl`` lines the resume keeps (see :func:`resume_metrics_rows`).
    """

    path: Path
    payload: dict[str, Any]
    epoch: int
    metrics_rows: list[dict[str, Any]]


def check_fresh_run_dir(run_dir) -> None:
    """Refuse to start a new run in a directory that holds one (a checkpoint or metrics lines).

    Raises
    ------
    ConfigError
        Naming the directory and the two ways on: ``resume=true`` or another ``out_dir``.
    """
    run_dir = Path(run_dir)
    if list_checkpoints(run_dir) or (run_dir / METRICS_FILE).exists():
        raise ConfigError(
            f"out_dir {str(run_dir)!r} already holds a run; set resume=true to continue "
            "it or choose another out_dir"
        )


def check_same_model(payload: dict[str, Any], spec: dict, config: TrainConfig, run_dir) -> None:
    """Refuse to resume a run whose checkpoint's model is not the one ``config`` builds now.

    The config itself may be unchanged while its dataset changed on disk (channels, classes or
    image size), which changes the model ``spec`` it gives.
    """
    if payload["model_spec"] != spec:
        raise ConfigError(
            f"cannot resume {str(run_dir)!r}: its model {payload['model_spec']} does not match "
            f"the one dataset {config.dataset!r} gives now ({spec}); the dataset changed in "
            "channels, classes or image size"
        )


def check_partial_epoch(
    payload: dict[str, Any], path, step: int, steps_per_epoch: int, world_size: int
) -> None:
    """Refuse a sub-epoch checkpoint a mid-epoch resume cannot continue from exactly, before
    anything of the run is rewritten: its ``partial_epoch`` must hold the steps done (matching
    the file's global step ``step``), finite loss sums of one entry per loss term and a
    generator state for each of ``world_size`` processes."""
    where = str(path)
    partial = payload.get("partial_epoch")
    done = step % steps_per_epoch
    rng = partial.get("rng") if isinstance(partial, dict) else None
    sums = partial.get("sums") if isinstance(partial, dict) else None
    ok = (
        isinstance(partial, dict)
        and partial.get("steps_done") == done
        and partial.get("epoch") == step // steps_per_epoch + 1
        and payload.get("step") == step
        and isinstance(sums, torch.Tensor)
        and tuple(sums.shape) == (len(TERMS),)
        and bool(torch.isfinite(sums).all())
        and isinstance(rng, list)
        and all(
            isinstance(r, dict)
            and all(isinstance(r.get(k), torch.Tensor) for k in ("torch", "mask", "augment"))
            for r in rng
        )
    )
    if not ok:
        raise CheckpointError(
            f"{where!r} is not a sub-epoch checkpoint of global step {step} that a resume can "
            f"continue from (its 'partial_epoch' entry must hold {done} steps done of epoch "
            f"{step // steps_per_epoch + 1} of {steps_per_epoch} steps, finite loss sums and "
            "every process's generator states); the file was edited, damaged or written with "
            "another batch size. Move it out of the run's checkpoints/ folder to resume from "
            "the checkpoint before it"
        )
    if len(rng) != world_size:
        raise ConfigError(
            f"cannot resume mid-epoch from {where!r}: it was written by {len(rng)} process(es) "
            f"and this run has {world_size}; each process's random streams continue from its "
            "own saved state. Resume with the same number of processes, or move the sub-epoch "
            "checkpoints after the last epoch checkpoint out of checkpoints/"
        )


def resume_metrics_rows(run_dir, last_epoch: int, found: dict[int, Path]) -> list[dict[str, Any]]:
    """The metrics lines a resume keeps: one per checkpointed epoch up to ``last_epoch``,
    dropping lines of the lost epoch and restoring a line a crash kept from being written
    (from the checkpoint's copy). Only reads: damage raises here, naming the file, before
    the resume writes anything."""
    rows = {r["epoch"]: r for r in read_metrics(run_dir) if 1 <= r.get("epoch", 0) <= last_epoch}
    for epoch in range(1, last_epoch + 1):
        if epoch not in rows and epoch in found:
            payload = read_checkpoint(found[epoch])
            rows[epoch] = check_metrics_entry(payload, found[epoch], epoch) or {"epoch": epoch}
    return [rows[e] for e in sorted(rows)]


def find_resume_point(
    run_dir, config: TrainConfig, spec: dict, *, steps_per_epoch: int, world_size: int
) -> ResumePoint | None:
    """Inspect a run directory (under its lock) for ``config``: where the run continues, or None.

    A new run (``config.resume`` false) gets None, or :func:`check_fresh_run_dir`'s refusal. A
    resume continues from the last epoch checkpoint, or from a sub-epoch checkpoint after it
    (then mid-epoch); with none it starts from scratch (None). Every entry the resume restores
    is checked now, before anything of the run (its ``config.json``, its ``metrics.jsonl``) is
    rewritten, so a refused resume leaves the run as it was: the checkpoint's contents, its
    partial epoch (:func:`check_partial_epoch`), the metrics lines kept, the config's changes
    (:func:`check_resumable`) and the model (:func:`check_same_model`).

    Parameters
    ----------
    run_dir : path
    config : TrainConfig
    spec : dict
        The model spec ``config`` builds now (``geomxai.train.model_spec``).
    steps_per_epoch : int
        Optimiser steps per epoch (a sub-epoch checkpoint's global step is split by it).
    world_size : int
        Processes of this run; a mid-epoch resume needs as many as wrote the checkpoint.

    Returns
    -------
    ResumePoint or None

    Raises
    ------
    ConfigError
        A run where a new one is asked for, a config or model a resume may not change, a
        checkpoint's name held by a folder, a mid-epoch resume with another process count.
    CheckpointError
        A checkpoint the resume cannot restore, naming the file.
    """
    run_dir = Path(run_dir)
    check_checkpoint_entries(run_dir)
    if not config.resume:
        check_fresh_run_dir(run_dir)
        return None
    found = list_checkpoints(run_dir)
    if not found:
        if (run_dir / CONFIG_FILE).is_file():
            log.info("no checkpoint in %s yet; starting the run from scratch", run_dir)
        return None
    last = max(found)
    path, step = found[last], None
    steps = list_step_checkpoints(run_dir)
    if steps and max(steps) > last * steps_per_epoch:
        # A sub-epoch checkpoint after the last epoch one: the run continues mid-epoch.
        step = max(steps)
        path, last = steps[step], step // steps_per_epoch
    payload = read_checkpoint(path)
    check_resume_payload(payload, path, epoch=last)
    if step is not None:
        check_partial_epoch(payload, path, step, steps_per_epoch, world_size)
    rows = resume_metrics_rows(run_dir, last, found)
    check_resumable(payload["config"], config, run_dir)
    check_same_model(payload, spec, config, run_dir)
    return ResumePoint(path=path, payload=payload, epoch=last, metrics_rows=rows)


def start_run_dir(run_dir, config: TrainConfig, resume: ResumePoint | None) -> None:
    """Write the run's ``config.json`` (creating the directory); on resume, trim
    ``metrics.jsonl`` to the lines :func:`find_resume_point` kept. Both writes are atomic."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / CONFIG_FILE, config.to_json() + "\n")
    if resume is not None:
        rewrite_metrics(run_dir, resume.metrics_rows)
