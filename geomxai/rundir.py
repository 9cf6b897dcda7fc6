"""The run directory, read in one place: ``config.json``, ``checkpoints/``, ``metrics.jsonl``.

:func:`geomxai.train.train` writes a run directory::

    config.json                 the run's TrainConfig as JSON
    checkpoints/epoch_0000.pt   the initial weights; epoch_0001.pt, ... one per trained epoch
    metrics.jsonl               one JSON object per trained epoch (its "epoch" key says which)
    .geomxai.lock               only while a trainer writes the run: its pid, host and start

Every consumer (the trainer when it resumes, the analysis, notebooks, analysis scripts) reads it
through this module, so they agree on what a run holds. A leaf module: it imports no part of
geomxai, so reading a run directory loads no trainer. The writing side (appending metrics,
resume checks) stays with the trainer.

Tolerance, the same everywhere: a last ``metrics.jsonl`` line that is not valid JSON is a line a
crash cut short while it was being appended, and is skipped; an invalid line before the last
one is damage that a skip would hide, and raises :class:`ValueError` naming the file and line.
Temporary files of an interrupted checkpoint write never match ``epoch_NNNN.pt`` and are ignored;
an ``epoch_NNNN.pt`` that is not a file (a folder of that name) is ignored with a warning.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".geomxai.lock"
_CHECKPOINT_RE = re.compile(r"^epoch_(\d{4,})\.pt$")

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
    "Run",
    "checkpoint_path",
    "list_checkpoints",
    "read_config",
    "read_metrics",
    "read_run",
]


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
    folder = run_dir / CHECKPOINT_DIR
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = _CHECKPOINT_RE.match(path.name)
            if match and path.is_file():
                found[int(match.group(1))] = path
            elif match:
                log.warning("ignoring %s: it is not a checkpoint file", path)
    if not found and not missing_ok:
        raise _not_a_run(run_dir, f"checkpoints under {str(folder)!r}")
    return dict(sorted(found.items()))


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
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
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
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
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
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise _not_a_run(run_dir, f"{CONFIG_FILE} in {str(run_dir)!r}")
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
        if not isinstance(value, kind) or isinstance(value, bool):
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
    """

    path: Path
    config: dict[str, Any]
    checkpoints: dict[int, Path]
    metrics: dict[int, dict[str, Any]]

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
    for row in read_metrics(run_dir):
        if "epoch" not in row:
            raise ValueError(
                f"{str(run_dir / METRICS_FILE)!r} has a row without an 'epoch' key: {row}"
            )
        metrics[int(row["epoch"])] = row
    return Run(run_dir, config, checkpoints, metrics)
