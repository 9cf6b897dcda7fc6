"""The run directory: ``config.json``, ``checkpoints/epoch_NNNN.pt`` and ``metrics.jsonl``."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from geomxai.train._config import ConfigError, TrainConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_RE = re.compile(r"^epoch_(\d{4,})\.pt$")

RESUMABLE_CHANGES = frozenset({"epochs", "resume", "progress", "out_dir"})
"""Fields a resumed run may change: how long to go on, display, and where the directory now is."""


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    """``run_dir/checkpoints/epoch_NNNN.pt``; epoch 0 holds the initial weights."""
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch_{epoch:04d}.pt"


def list_checkpoints(run_dir: Path) -> dict[int, Path]:
    """Epoch -> checkpoint path of every complete checkpoint in a run directory (sorted).

    Temporary files of an interrupted write never match, so they are ignored.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = _CHECKPOINT_RE.match(path.name)
            if match and path.is_file():
                found[int(match.group(1))] = path
    return dict(sorted(found.items()))


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


def write_atomic(path: Path, write: Callable[[IO], object], *, binary: bool = False) -> Path:
    """Write through ``write(fh)`` to a temporary file beside ``path``, fsync, then rename.

    A crash leaves either the old file or the new one, never a half-written one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda fh: fh.write(text))


def append_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Append one JSON line to ``metrics.jsonl`` and flush it to disk."""
    path = Path(run_dir) / METRICS_FILE
    with open(path, "a") as fh:
        fh.write(json.dumps(metrics, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The metric lines of a run, skipping a trailing line cut short by a crash."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def rewrite_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    write_text_atomic(Path(run_dir) / METRICS_FILE, text)
