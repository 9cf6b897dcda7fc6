"""What the benchmarks record about the machine they ran on, and how they write their figures."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import torch

from geomxai import tune_cpu_allocator
from geomxai.study import cpu_name

RESULTS = Path(__file__).resolve().parent / "results"

# What the geomxai command does, so the figures are what a user gets; GEOMXAI_MALLOC=default
# measures glibc's own behaviour instead (docs/training.md compares the two).
ALLOCATOR_TUNED = tune_cpu_allocator()


def hardware_name(device: torch.device | None = None) -> str:
    """The GPU's name for a CUDA device, else the CPU's model name."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def result_header(benchmark: str, device: torch.device) -> dict:
    """The fields every benchmark's JSON starts with: what ran, when, and on what."""
    return {
        "benchmark": benchmark,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device.type,
        "hardware": hardware_name(device),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "cpu_allocator": "tuned (geomxai.tune_cpu_allocator)" if ALLOCATOR_TUNED else "as is",
    }


def write_results(results: dict, out: str | None, default_name: str) -> Path:
    """Write ``results`` as JSON to ``out``, else to ``results/<default_name>``; say where."""
    path = Path(out) if out else RESULTS / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path
