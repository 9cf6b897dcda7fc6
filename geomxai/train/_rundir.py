"""The writing side of a run directory: its lock, metrics lines, atomic rewrites, resume checks.

Reading (config, checkpoints, metrics) is :mod:`geomxai.rundir`, the one reader every consumer
uses; the names it defines are re-exported here for the trainer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
from geomxai.train._config import ConfigError, TrainConfig

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "METRICS_FILE",
    "RESUMABLE_CHANGES",
    "append_metrics",
    "check_checkpoint_entries",
    "check_resumable",
    "checkpoint_path",
    "config_differences",
    "latest_checkpoint",
    "list_checkpoints",
    "list_step_checkpoints",
    "lock_run_dir",
    "read_metrics",
    "rewrite_metrics",
    "step_checkpoint_path",
    "training_checkpoints",
    "write_atomic",
    "write_text_atomic",
]

RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "resume",
        "progress",
        "out_dir",
        "checkpoint_every_steps",
        "checkpoint_steps_epochs",
        "tensorboard_dir",
    }
)
"""Fields a resumed run may change: how long to go on, display, where the directory now is,
which extra (sub-epoch) checkpoints it keeps and where it logs; none of them changes a
weight."""


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
