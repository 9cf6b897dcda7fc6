"""geomxai: representation geometry and gradient-saliency quality.

Subpackages: ``data``, ``models``, ``whitening``, ``train``, ``collect``, ``geometry``,
``attribution``, ``dynamics``, ``study``, ``report``. The checkpoint reader is re-exported here
because every stage after training starts from it.
"""

from geomxai._checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__version__ = "0.1.0"

__all__ = ["CheckpointError", "__version__", "load_checkpoint", "save_checkpoint"]
