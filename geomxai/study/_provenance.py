"""Where a result came from: the date, the machine and the commit in its attrs (:func:`stamp`)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

import torch
import xarray as xr


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> str:
    """A one-line description of the machine, for reports."""
    text = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def stamp(ds: xr.Dataset, **extra) -> xr.Dataset:
    """Date, hardware and commit in a results Dataset's attrs.

    Parameters
    ----------
    ds : xr.Dataset
        Changed in place (its attrs) and returned.
    **extra
        More attrs; those that are None are left out.

    Returns
    -------
    xr.Dataset
        ``ds`` with ``created`` (UTC), ``hardware`` and ``commit`` (of the source tree) set,
        and ``schema_version`` (:data:`geomxai.schema.SCHEMA_VERSION`) where it has none: every
        results file says which layout it has.
    """
    from geomxai.schema import SCHEMA_VERSION

    ds.attrs.setdefault("schema_version", SCHEMA_VERSION)
    ds.attrs.update(
        {
            "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "hardware": hardware(),
            "commit": commit(),
            **{k: v for k, v in extra.items() if v is not None},
        }
    )
    return ds
