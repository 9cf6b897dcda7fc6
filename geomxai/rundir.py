"""The run directory, read in one place: ``config.json``, ``checkpoints/``, ``metrics.jsonl``.

:func:`geomxai.train.train` writes a run directory::

    config.json                 the run's TrainConfig as JSON
    checkpoints/epoch_0000.pt   the initial weights; epoch_0001.pt, ... one per trained epoch
    checkpoints/step_00000150.pt  sub-epoch checkpoints, where the config asks for them
                                (``checkpoint_every_steps``), named by global optimizer step
    metrics.jsonl               one JSON object per trained epoch (its "epoch" key says which)
    .geomxai.lock               only while a trainer writes the run: its pid, host and start

Every consumer (the trainer when it resumes, the analysis, notebooks, analysis scripts) reads it
through this module, so they agree on what a run holds. A leaf module: it imports no part of
geomxai but the leaf validator of typed values (when a file is read), so reading a run directory
loads no trainer. The writing side (appending metrics, resume checks) stays with the trainer.

Tolerance, the same everywhere: a last ``metrics.jsonl`` line that is not valid JSON is a line a
crash cut short while it was being appended, and is skipped; an invalid line before the last
one is damage that a skip would hide, and raises :class:`ValueError` naming the file and line.
Temporary files of an interrupted checkpoint write never match ``epoch_NNNN.pt`` and are ignored;
an ``epoch_NNNN.pt`` that is not a file (a folder of that name) is ignored with a warning. The same
holds for ``step_NNNNNNNN.pt``.

Training time: :func:`list_checkpoints` lists the epoch checkpoints (epoch -> path, the contract
the trainer's resume and most readers need); :func:`training_checkpoints` lists every checkpoint,
epoch and sub-epoch, in training order, each with its global optimizer step and its epoch as
training time (``step / steps_per_epoch``: 1.5 is half-way through the second epoch).

One writer at a time: the trainer and a study's claim on a run hold :class:`DirectoryLock` (an
OS lock on ``.geomxai.lock``, taken over from a process that died however it died). Hold it
yourself to change a run directory by hand while geomxai may write to it: a second holder gets
:class:`DirectoryLockedError` naming the first, and a lock name that holds a link or anything
but a plain file gets :class:`UnsafeLockError` (nothing is written through it). The three are
imported on first use, so reading a run loads no lock code.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers; read on first use by __getattr__
    from geomxai._lock import DirectoryLock, DirectoryLockedError, UnsafeLockError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".geomxai.lock"
_CHECKPOINT_RE = re.compile(r"^epoch_(\d{4,})\.pt$")
_STEP_CHECKPOINT_RE = re.compile(r"^step_(\d{8,})\.pt$")

log = logging.getLogger("geomxai.rundir")

_CONFIG_NEEDS = (
    ("dataset", str, "a string", True),
    ("regime", str, "a string", False),
    ("seed", int, "an integer", False),
)
"""Fields of ``config.json`` every reader of a run uses (the analysis labels results with them)."""

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "LOCK_FILE",
    "METRICS_FILE",
    "Checkpoint",
    "DirectoryLock",
    "DirectoryLockedError",
    "Run",
    "checkpoint_path",
    "list_checkpoints",
    "list_step_checkpoints",
    "read_config",
    "read_metrics",
    "read_metrics_file",
    "read_run",
    "run_name",
    "step_checkpoint_path",
    "steps_per_epoch",
    "training_checkpoints",
    "UnsafeLockError",
]

_LOCK_NAMES = ("DirectoryLock", "DirectoryLockedError", "UnsafeLockError")


def __getattr__(name: str):
    # The lock is a leaf of its own (geomxai._lock): loaded when one of its names is read.
    if name in _LOCK_NAMES:
        from geomxai import _lock

        return getattr(_lock, name)
    raise AttributeError(f"module 'geomxai.rundir' has no attribute {name!r}")


def _not_a_run(run_dir: Path, missing: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"no {missing}; is {str(run_dir)!r} a run directory written by `geomxai train`?"
    )


def checkpoint_path(run_dir, epoch: int) -> Path:
    """``run_dir/checkpoints/epoch_NNNN.pt``; epoch 0 holds the initial weights.

    Examples
    --------
    >>> checkpoint_path("runs/a", 3).as_posix()
    'runs/a/checkpoints/epoch_0003.pt'
    """
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch_{epoch:04d}.pt"


def run_name(cell, seed: int) -> str:
    """The one name of a study's run: ``<cell>-s<seed>``, its run directory's and its results'.

    The study engine names run directories with it and the analysis labels merged runs with it,
    so a run is found under the same name everywhere.

    Parameters
    ----------
    cell : str or object with a ``name``
        The cell's name (a regime, or a design's cell such as ``dbn-lam0.1``), or the cell.
    seed : int
        The run's seed.

    Examples
    --------
    >>> run_name("dbn", 0)
    'dbn-s0'
    """
    name = cell if isinstance(cell, str) else getattr(cell, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"cell must be a cell's name or a cell with a name; got {cell!r}")
    return f"{name}-s{int(seed)}"


def list_checkpoints(run_dir, *, missing_ok: bool = True) -> dict[int, Path]:
    """Epoch -> path of every complete checkpoint in a run directory, in epoch order.

    Temporary files of an interrupted write never match, so they are ignored; an entry named
    like a checkpoint that is not a file (a folder ``epoch_0001.pt``) is ignored with a warning.

    Parameters
    ----------
    run_dir : path-like
    missing_ok : bool
        With True (the trainer's case: a run not started yet), no checkpoint gives ``{}``; with
        False it raises.

    Raises
    ------
    FileNotFoundError
        ``missing_ok=False`` and there is no checkpoint: the message names the directory.
    """
    run_dir = Path(run_dir)
    found = _scan(run_dir / CHECKPOINT_DIR, _CHECKPOINT_RE)
    if not found and not missing_ok:
        raise _not_a_run(run_dir, f"checkpoints under {str(run_dir / CHECKPOINT_DIR)!r}")
    return found


def _scan(folder: Path, pattern: re.Pattern) -> dict[int, Path]:
    """Number -> path of the files in ``folder`` whose names match ``pattern``, sorted."""
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = pattern.match(path.name)
            if match and path.is_file():
                found[int(match.group(1))] = path
            elif match:
                log.warning("ignoring %s: it is not a checkpoint file", path)
    return dict(sorted(found.items()))


def step_checkpoint_path(run_dir, step: int) -> Path:
    """``run_dir/checkpoints/step_NNNNNNNN.pt``: the sub-epoch checkpoint after global optimizer
    step ``step`` (counted from 1 over the whole run, across epochs).

    Examples
    --------
    >>> step_checkpoint_path("runs/a", 150).as_posix()
    'runs/a/checkpoints/step_00000150.pt'
    """
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def list_step_checkpoints(run_dir) -> dict[int, Path]:
    """Global step -> path of every complete sub-epoch checkpoint, in step order (``{}`` when
    there is none). Ignored entries as in :func:`list_checkpoints`."""
    return _scan(Path(run_dir) / CHECKPOINT_DIR, _STEP_CHECKPOINT_RE)


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint on the run's time line (:func:`training_checkpoints`).

    Attributes
    ----------
    path : Path
    step : int or None
        Global optimizer steps taken when it was written (0 for the initial weights); None
        only where the run's steps per epoch are unknown (see :func:`steps_per_epoch`).
    epoch : float
        Training time in epochs: the epoch number of an epoch checkpoint, ``step /
        steps_per_epoch`` of a sub-epoch one (NaN where the steps per epoch are unknown).
    sub_epoch : bool
        True for a ``step_NNNNNNNN.pt`` checkpoint.
    """

    path: Path
    step: int | None
    epoch: float
    sub_epoch: bool


def steps_per_epoch(run_dir, metrics: list[dict[str, Any]] | None = None) -> int | None:
    """Optimizer steps per epoch of a run: from ``metrics.jsonl`` (a row's ``steps`` divided by
    its ``epoch``), else from the newest checkpoint's ``steps_per_epoch`` entry (checkpoints
    written since sub-epoch checkpoints exist carry it); None when neither says.

    Parameters
    ----------
    run_dir : path-like
    metrics : list of dict, optional
        The rows of :func:`read_metrics`, when the caller has them already.
    """
    rows = read_metrics(run_dir) if metrics is None else metrics
    for row in reversed(rows):
        steps, epoch = row.get("steps"), row.get("epoch")
        if isinstance(steps, int) and isinstance(epoch, int) and epoch > 0 and steps % epoch == 0:
            return steps // epoch
    paths = [*list_checkpoints(run_dir).values(), *list_step_checkpoints(run_dir).values()]
    for path in sorted(paths, key=lambda p: p.stat().st_mtime_ns, reverse=True)[:1]:
        # Only where metrics.jsonl cannot say (a run stopped in its first epoch): one checkpoint
        # is read, with torch's weights-only loader (tensors and plain data, never code).
        import torch

        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # an unreadable file says nothing; its reader reports it
            return None
        value = payload.get("steps_per_epoch") if isinstance(payload, dict) else None
        return value if isinstance(value, int) and value > 0 else None
    return None


def training_checkpoints(
    run_dir, *, metrics: list[dict[str, Any]] | None = None, missing_ok: bool = True
) -> list[Checkpoint]:
    """Every checkpoint of a run, epoch and sub-epoch, in training order.

    An epoch checkpoint's step is ``epoch * steps_per_epoch``; a sub-epoch checkpoint's epoch is
    ``step / steps_per_epoch`` (:func:`steps_per_epoch`). Where both kinds name the same step,
    the epoch checkpoint is listed (the trainer writes no sub-epoch checkpoint at an epoch's
    end, so this only happens to files put there by hand).

    Raises
    ------
    FileNotFoundError
        ``missing_ok=False`` and there is no checkpoint at all.
    """
    run_dir = Path(run_dir)
    epochs = list_checkpoints(run_dir)
    steps = list_step_checkpoints(run_dir)
    if not epochs and not steps:
        if not missing_ok:
            raise _not_a_run(run_dir, f"checkpoints under {str(run_dir / CHECKPOINT_DIR)!r}")
        return []
    per_epoch = steps_per_epoch(run_dir, metrics) if (steps or max(epochs, default=0)) else None
    out = {}
    for step, path in steps.items():
        epoch = step / per_epoch if per_epoch else math.nan
        out[step] = Checkpoint(path, step, epoch, True)
    for epoch, path in epochs.items():
        step = epoch * per_epoch if per_epoch else (0 if epoch == 0 else None)
        if step is not None:
            out[step] = Checkpoint(path, step, float(epoch), False)
        else:  # unknown steps: ordered by epoch, after the known ones
            out[(math.inf, epoch)] = Checkpoint(path, None, float(epoch), False)
    return [out[k] for k in sorted(out, key=lambda k: k if isinstance(k, tuple) else (k, 0))]


def read_metrics(run_dir) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` in file order; ``[]`` when the file does not exist.

    A last line that is not valid JSON (cut short by a crash) is skipped; blank lines are too.

    Raises
    ------
    ValueError
        A line before the last one is not valid JSON, a line is not a JSON object, or its
        ``epoch`` is not a non-negative integer (``"x"``, ``[1]``, ``null``, ``1e999``); the
        message names the file and the line.
    """
    return read_metrics_file(Path(run_dir) / METRICS_FILE)


def read_metrics_file(path) -> list[dict[str, Any]]:
    """The rows of one metrics file (a run's ``metrics.jsonl``, or a study's copy of it), read
    as :func:`read_metrics` reads them; ``[]`` when the file does not exist."""
    from geomxai._checks import Interval  # a leaf too; imported when a file is read

    path = Path(path)
    if not path.is_file():
        return []
    epoch_ok = Interval(Integral, 0, None)
    lines = [(i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    rows = []
    for k, (number, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if k == len(lines) - 1:
                break  # the line being appended when the run stopped
            raise ValueError(
                f"{str(path)!r} line {number} is not valid JSON ({err.msg}); only a last line "
                "cut short by a crash is skipped, so this file was damaged otherwise"
            ) from err
        if not isinstance(row, dict):
            raise ValueError(
                f"{str(path)!r} line {number} must be a JSON object; got {type(row).__name__}"
            )
        epoch = row.get("epoch", 0)
        if not epoch_ok.accepts(epoch):
            raise ValueError(
                f"{str(path)!r} line {number}: its 'epoch' must be a non-negative integer; got "
                f"{json.dumps(epoch)[:40]}, so this file was damaged or edited. Fix or remove "
                "that line (a resumed run restores lost lines from the checkpoints)"
            )
        rows.append(row)
    return rows


def read_config(run_dir) -> dict[str, Any]:
    """The run's config as saved in ``config.json`` (a plain dict of TrainConfig fields).

    Raises
    ------
    FileNotFoundError
        No ``config.json``: the message names the directory.
    ValueError
        ``config.json`` is not a JSON object, has no ``dataset`` string, or has a ``regime``
        that is not a string or a ``seed`` that is not an integer (the fields every reader
        labels results with); the message names the file.
    """
    from geomxai._checks import Interval  # a leaf too; imported when a file is read

    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise _not_a_run(run_dir, f"{CONFIG_FILE} in {str(run_dir)!r}")
    integer = Interval(Integral, None, None)
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object; got {type(config).__name__}")
    for key, kind, name, required in _CONFIG_NEEDS:
        value = config.get(key)
        if key not in config and not required:
            continue
        if not (integer.accepts(value) if kind is int else isinstance(value, kind)):
            got = "nothing" if key not in config else json.dumps(value)[:40]
            raise ValueError(
                f"{str(path)!r}: its {key!r} must be {name}; got {got}, so the file was edited "
                "or damaged. Restore it from a checkpoint's 'config' entry (every checkpoint "
                "holds the run's config) or retrain"
            )
    return config


@dataclass(frozen=True)
class Run:
    """What a run directory holds, read once by :func:`read_run`.

    Attributes
    ----------
    path : Path
        The run directory.
    config : dict
        ``config.json``.
    checkpoints : dict of int to Path
        Epoch -> checkpoint file, in epoch order (at least one).
    metrics : dict of int to dict
        Epoch -> its ``metrics.jsonl`` row; the last row wins where an epoch appears twice.
        Epoch 0 (the initial model) has no row.
    timeline : tuple of Checkpoint
        Every checkpoint, sub-epoch ones included, in training order
        (:func:`training_checkpoints`).
    """

    path: Path
    config: dict[str, Any]
    checkpoints: dict[int, Path]
    metrics: dict[int, dict[str, Any]]
    timeline: tuple[Checkpoint, ...] = ()

    @property
    def epochs(self) -> list[int]:
        """The checkpointed epochs, in order."""
        return list(self.checkpoints)


def read_run(run_dir) -> Run:
    """Checkpoints, config and metrics of a run directory.

    Raises
    ------
    FileNotFoundError
        ``run_dir`` holds no checkpoint or no ``config.json``: it is not a run directory (the
        message names it).
    ValueError
        ``metrics.jsonl`` is damaged before its last line (see :func:`read_metrics`), a row has
        no ``epoch``, or ``config.json`` is not a JSON object.
    """
    run_dir = Path(run_dir)
    checkpoints = list_checkpoints(run_dir, missing_ok=False)
    config = read_config(run_dir)
    metrics = {}
    rows = read_metrics(run_dir)
    for row in rows:
        if "epoch" not in row:
            raise ValueError(
                f"{str(run_dir / METRICS_FILE)!r} has a row without an 'epoch' key: {row}"
            )
        metrics[int(row["epoch"])] = row
    timeline = tuple(training_checkpoints(run_dir, metrics=rows))
    return Run(run_dir, config, checkpoints, metrics, timeline)
