"""Group-wise whitening: ZCA (batched eigh), Newton-Schulz (IterNorm), the DBN layer, losses.

``zca_whiten`` and ``newton_schulz_whiten`` whiten a batch with its own statistics;
``GroupWhitening`` is the layer (batch statistics in training, running statistics in eval) and
``fold_into_linear`` folds its eval-time map into a following ``nn.Linear``;
``decorrelation_loss`` is the SaliencyDecor regulariser. ``ns_iterations`` is the Newton-Schulz
step count that ``iters="auto"`` derives from the spectrum bound (ZCA to a dtype's precision
with no eigendecomposition and no host synchronisation). The matrix functions under them are
public too: ``inv_sqrt_psd`` (the ZCA matrices ``(C + eps I)^-1/2``, whose eigendecomposition
route ``eigh_routine`` chooses) and ``ns_inv_sqrt`` (the Newton-Schulz ones). The math and the
numerical choices are in ``docs/whitening.md``.

For layers that compute their statistics elsewhere (``geomxai.train.SyncGroupWhitening`` sums
them over processes), :meth:`GroupWhitening.batch_moments` is the step to override, and the
group helpers it needs are public: :class:`GroupLayout` (``GroupWhitening.layout``),
:func:`within_group_products`, :func:`split_chunks` and ``STATS_DTYPE`` (float64, the dtype of
every statistic).
"""

from geomxai.whitening._groups import (
    STATS_DTYPE,
    GroupLayout,
    check_iters,
    split_chunks,
    within_group_products,
)
from geomxai.whitening._layer import WHITENING_METHODS, GroupWhitening, fold_into_linear
from geomxai.whitening._losses import DECORRELATION_KINDS, decorrelation_loss
from geomxai.whitening._newton_schulz import newton_schulz_whiten, ns_inv_sqrt, ns_iterations
from geomxai.whitening._zca import eigh_routine, inv_sqrt_psd, zca_whiten

__all__ = [
    "DECORRELATION_KINDS",
    "STATS_DTYPE",
    "WHITENING_METHODS",
    "GroupLayout",
    "GroupWhitening",
    "check_iters",
    "decorrelation_loss",
    "eigh_routine",
    "fold_into_linear",
    "inv_sqrt_psd",
    "newton_schulz_whiten",
    "ns_inv_sqrt",
    "ns_iterations",
    "split_chunks",
    "within_group_products",
    "zca_whiten",
]
