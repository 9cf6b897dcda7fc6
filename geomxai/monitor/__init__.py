"""Watch a training while it runs: probe geometry and saliency snapshots, logged to TensorBoard.

:class:`GeometryMonitor` serves any loop (``monitor.step(model, step)``); the Lightning callback
(:class:`LightningGeometryCallback`, extra ``lightning``) and the Hugging Face ``TrainerCallback``
(:class:`HFGeometryCallback`, extra ``transformers``) are built on it and imported only when
named, so ``import geomxai.monitor`` loads neither framework.
"""

from __future__ import annotations

import importlib

from geomxai.monitor._monitor import GeometryMonitor

_OPTIONAL = {
    "LightningGeometryCallback": "geomxai.monitor._lightning",
    "HFGeometryCallback": "geomxai.monitor._transformers",
}

__all__ = ["GeometryMonitor", "HFGeometryCallback", "LightningGeometryCallback"]


def __getattr__(name: str):
    if name in _OPTIONAL:
        return getattr(importlib.import_module(_OPTIONAL[name]), name)
    raise AttributeError(f"module 'geomxai.monitor' has no attribute {name!r}")
