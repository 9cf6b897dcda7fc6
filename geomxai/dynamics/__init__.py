"""Training dynamics across checkpoints: axis swapping and saliency stability.

See ``docs/dynamics.md`` for the definitions and the choices made where they were open.
"""

from geomxai.dynamics._axis_swaps import axis_swap_sequence, axis_swaps, top_eigvecs
from geomxai.dynamics._saliency_stability import saliency_stability

__all__ = ["axis_swap_sequence", "axis_swaps", "saliency_stability", "top_eigvecs"]
