"""geomxai: representation geometry and gradient-saliency quality.

Subpackages: ``data``, ``models``, ``whitening``, ``train``, ``collect``, ``geometry``,
``attribution``, ``dynamics``, ``study``, ``report``, ``monitor``; top-level modules ``rundir`` (the one
reader of a run directory), ``moments`` (:class:`~geomxai.moments.FeatureMoments`),
``pipeline`` (train -> analyse -> report) and ``checks`` (the argument checks and the
:class:`~geomxai.checks.InvalidParameterError` they raise). The checkpoint functions are
re-exported here because every stage after training starts from them, and
:func:`tune_cpu_allocator` because it is a process's choice, made once before CPU work.

The package is lazy (Scientific Python SPEC 1): ``import geomxai`` loads nothing else, and each
name below is imported on first use. So ``import geomxai.geometry`` loads no trainer, and
``from geomxai import load_checkpoint`` loads :mod:`geomxai.train` only then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_SUBMODULES = (
    "attribution",
    "checks",
    "cli",
    "collect",
    "data",
    "dynamics",
    "geometry",
    "models",
    "moments",
    "monitor",
    "pipeline",
    "report",
    "rundir",
    "study",
    "train",
    "whitening",
)

# Public name -> the public module it is read from (the checkpoint format is geomxai.train's).
_ATTRIBUTES = {
    "CheckpointError": "geomxai.train",
    "GeometryMonitor": "geomxai.monitor",
    "load_checkpoint": "geomxai.train",
    "read_checkpoint": "geomxai.train",
    "save_checkpoint": "geomxai.train",
    "tune_cpu_allocator": "geomxai._allocator",
}

__all__ = [
    "CheckpointError",
    "GeometryMonitor",
    "__version__",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "tune_cpu_allocator",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from geomxai._allocator import tune_cpu_allocator
    from geomxai.monitor import GeometryMonitor
    from geomxai.train import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"geomxai.{name}")
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    from geomxai._hints import did_you_mean

    raise AttributeError(
        f"module 'geomxai' has no attribute {name!r}"
        + did_you_mean(name, [*_ATTRIBUTES, *_SUBMODULES])
    )


def __dir__() -> list[str]:
    return sorted({*__all__, *_SUBMODULES})
