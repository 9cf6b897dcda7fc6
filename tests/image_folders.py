"""Image folders made in the tests (torchvision's ImageFolder layout), for the loaders and the
command line: no dataset is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image_folder(root: Path, classes, per_class: int, size: int, seed: int) -> Path:
    """``root/<class>/<i>.png``: ``per_class`` random ``size`` x ``size`` RGB PNGs per class,
    drawn class by class from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir()
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root
