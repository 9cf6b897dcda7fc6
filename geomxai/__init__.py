"""geomxai: representation geometry and gradient-saliency quality.

Subpackages: ``data``, ``models``, ``whitening``, ``train``, ``collect``, ``geometry``,
``attribution``, ``dynamics``, ``study``, ``report``. The checkpoint functions are re-exported here
because every stage after training starts from them, and :func:`tune_cpu_allocator` because it
is a process's choice, made once before CPU work.
"""

from geomxai._allocator import tune_cpu_allocator
from geomxai.train._checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "__version__",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "tune_cpu_allocator",
]
