"""Attribution: Captum-backed saliency maps and the metrics that judge them.

- :func:`saliency`: per-position maps (per pixel (n, h, w), per time step (n, t), per feature
  (n, d)) by a named method (gradient, |gradient|, input x gradient, SmoothGrad, Integrated
  Gradients), any Captum ``Attribution`` instance or a callable; :func:`method_name` names it,
  :func:`check_saliency_method` checks it for a caller that passes it on.
- Masking fidelity: :func:`masking_curve`, :func:`masking_auc`, :func:`fidelity_gap`;
  :func:`road_impute` and :func:`gaussian_blur`, the ``"road"`` and ``"blur"`` fills.
- Probabilistic faithfulness (RISE): :func:`deletion_curve`, :func:`insertion_curve`.
- Saliency gaps: :func:`topq_contrast`, :func:`gini`, and against ground-truth masks
  :func:`mask_auroc`, :func:`mass_inside`, :func:`pointing_game`.
- :func:`gradient_entanglement` (on live units by default), :func:`entanglement_from_gradients`
  and :func:`entanglement_of`; :func:`layer_gradients`, the features of a layer and the logits'
  gradients there, which they and the function-invariant geometry share.
- :func:`cascading_randomization`, the parameter-randomisation sanity check.
- :func:`as_batch` and :func:`as_labels`, the input checks every function here applies, for a
  caller that takes the same inputs.

Formulas and conventions: ``docs/metrics.md``.
"""

from geomxai._fill import gaussian_blur
from geomxai.attribution._entanglement import (
    LayerGradients,
    entanglement_from_gradients,
    entanglement_of,
    gradient_entanglement,
    layer_gradients,
)
from geomxai.attribution._gaps import gini, mask_auroc, mass_inside, pointing_game, topq_contrast
from geomxai.attribution._insertion_deletion import deletion_curve, insertion_curve
from geomxai.attribution._layout import as_batch
from geomxai.attribution._masking import fidelity_gap, masking_auc, masking_curve
from geomxai.attribution._road import road_impute
from geomxai.attribution._saliency import METHODS as SALIENCY_METHODS
from geomxai.attribution._saliency import check_saliency_method, method_name, saliency
from geomxai.attribution._sanity import cascading_randomization
from geomxai.attribution._utils import as_labels

__all__ = [
    "LayerGradients",
    "SALIENCY_METHODS",
    "as_batch",
    "as_labels",
    "cascading_randomization",
    "check_saliency_method",
    "deletion_curve",
    "entanglement_from_gradients",
    "entanglement_of",
    "fidelity_gap",
    "gaussian_blur",
    "gini",
    "gradient_entanglement",
    "insertion_curve",
    "layer_gradients",
    "mask_auroc",
    "masking_auc",
    "masking_curve",
    "mass_inside",
    "method_name",
    "pointing_game",
    "road_impute",
    "saliency",
    "topq_contrast",
]
