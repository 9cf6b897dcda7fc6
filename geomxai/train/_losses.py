"""The loss terms of the four regimes, as pure functions of logits and features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geomxai.train._distributed import all_gather_cat


def classification_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy, computed in float32 whatever the autocast dtype of ``logits``.

    Parameters
    ----------
    logits : Tensor (n, k)
    target : Tensor (n,) of int

    Returns
    -------
    Tensor ()
    """
    return F.cross_entropy(logits.float(), target)


def kl_consistency(
    clean_logits: torch.Tensor, masked_logits: torch.Tensor, *, detach_clean: bool = False
) -> torch.Tensor:
    """``KL(p(x) || p(x_masked))``, averaged over the batch (design.md's direction).

    ``F.kl_div(input, target)`` is ``sum target * (log target - input)``, so the masked
    log-probabilities are the input and the clean ones the target, both as log-probabilities
    (``log_target=True``: no ``log(softmax)`` round trip, exact where a probability underflows).

    Parameters
    ----------
    clean_logits, masked_logits : Tensor (n, k)
    detach_clean : bool
        Stop the gradient through the clean predictions (then the KL only pulls the masked
        prediction towards the clean one, and a step needs no backward through the clean
        forward for this term).

    Returns
    -------
    Tensor ()
        Non-negative; 0 when both predictions agree.

    Examples
    --------
    >>> z = torch.randn(4, 3)
    >>> float(kl_consistency(z, z))
    0.0
    """
    log_p = F.log_softmax(clean_logits.float(), dim=1)
    if detach_clean:
        log_p = log_p.detach()
    log_q = F.log_softmax(masked_logits.float(), dim=1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def decorrelation_term(
    features: torch.Tensor,
    *,
    group_size: int | None,
    kind: str = "offdiag",
    whitening: nn.Module | None = None,
) -> torch.Tensor:
    """The decorrelation loss of the feature layer, over the global batch.

    In a multi-process run the features of all ranks are gathered first (differentiably), so the
    correlation matrix is that of the global batch, as one process would compute it; in one
    process this is :func:`geomxai.whitening.decorrelation_loss` on ``features``.

    Parameters
    ----------
    features : Tensor (n, d)
        Pre-whitening features (a whitened batch has identity covariance by construction, so a
        loss on it would be empty).
    group_size : int or None
    kind : {"offdiag", "covariance", "whitened"}
        Passed to :func:`~geomxai.whitening.decorrelation_loss`.
    whitening : GroupWhitening, optional
        The model's whitening layer; only ``kind="whitened"`` reads it (its running matrix).

    Returns
    -------
    Tensor ()
    """
    from geomxai.whitening import decorrelation_loss

    # float32 at least: correlations of bf16 features would lose the small off-diagonal terms.
    feats = features if features.dtype == torch.float64 else features.float()
    extra = {"whitening": whitening} if kind == "whitened" else {}
    return decorrelation_loss(all_gather_cat(feats), group_size=group_size, kind=kind, **extra)
