"""Training dynamics across checkpoints: axis swapping, saliency stability, whole-run summaries.

See ``docs/dynamics.md`` for the definitions and the choices made where they were open.
"""

from geomxai.dynamics._axis_swaps import axis_swap_sequence, axis_swaps, top_eigvecs
from geomxai.dynamics._saliency_stability import saliency_stability
from geomxai.dynamics._summaries import (
    SETTLED_OVERLAP,
    area_over_training,
    run_mean,
    settling_time,
)

__all__ = [
    "SETTLED_OVERLAP",
    "area_over_training",
    "axis_swap_sequence",
    "axis_swaps",
    "run_mean",
    "saliency_stability",
    "settling_time",
    "top_eigvecs",
]
