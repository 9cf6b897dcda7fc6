"""Group-wise whitening: ZCA (batched eigh), Newton-Schulz (IterNorm), the DBN layer, losses.

``zca_whiten`` and ``newton_schulz_whiten`` whiten a batch with its own statistics;
``GroupWhitening`` is the layer (batch statistics in training, running statistics in eval) and
``fold_into_linear`` folds its eval-time map into a following ``nn.Linear``;
``decorrelation_loss`` is the SaliencyDecor regulariser. The math and the numerical choices are in
``docs/whitening.md``.
"""

from geomxai.whitening._layer import WHITENING_METHODS, GroupWhitening, fold_into_linear
from geomxai.whitening._losses import DECORRELATION_KINDS, decorrelation_loss
from geomxai.whitening._newton_schulz import newton_schulz_whiten
from geomxai.whitening._zca import zca_whiten

__all__ = [
    "DECORRELATION_KINDS",
    "WHITENING_METHODS",
    "GroupWhitening",
    "decorrelation_loss",
    "fold_into_linear",
    "newton_schulz_whiten",
    "zca_whiten",
]
