"""A tiny digits model the study tests share: as a class, and as the source of a file that the
command line imports (``--model net.py:TinyNet``), written from the class itself."""

from __future__ import annotations

import inspect
from pathlib import Path

from torch import nn


class TinyNet(nn.Module):
    """Flatten, a hidden layer of 16 units (``features``, the feature layer), a 10-class head:
    for scikit-learn's 8x8 digits."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.features(x))


def write_source(path: Path) -> Path:
    """``path`` holding :class:`TinyNet`'s own source, importable as ``path:TinyNet``."""
    path.write_text("from torch import nn\n\n\n" + inspect.getsource(TinyNet))
    return path
