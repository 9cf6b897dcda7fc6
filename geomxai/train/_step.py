"""One optimisation step of each regime, written for the fewest forward and backward passes.

Cost in units of one forward pass (a backward is about two: activation and weight gradients):

- ``regular``/``dbn``: forward + backward = 3.
- ``sgt``/``saliencydecor`` take the masking gradient ``dCE/dx`` in the model's eval mode by default
  (``mask_gradient_mode="eval"``, as the saliency-guided training reference does): an eval forward
  and its input gradient (2), then, with ``detach_clean=False`` (the default, as the reference),
  the clean forward (1), the masked forward (1) and one backward of the total loss through both
  graphs (4): 8, i.e. 8/3 of a regular step.
- ``mask_gradient_mode="train"`` takes ``dCE/dx`` from the training-mode clean forward instead,
  saving the eval forward: with ``detach_clean=False`` by ``autograd.grad`` with the graph kept
  (7, i.e. 7/3); with ``detach_clean=True`` *one* backward of CE yields both the weight gradients
  and the input gradient (clean forward 1, backward 2, masked forward 1, backward of the auxiliary
  terms 2: 6, i.e. 2x a regular step).
- With ``detach_clean=True`` the clean graph carries CE only, and the decorrelation term is computed
  on the features of the masked forward (see docs/training.md).
- A model whose every layer computes the same in both modes (:func:`same_in_both_modes`: no
  BatchNorm, whitening or dropout, e.g. ``cnn2`` under ``sgt``) has one gradient for both modes,
  so the eval-mode step takes it from the clean forward as the train mode does (7/3 and 2, not
  8/3): the same numbers, one forward fewer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from geomxai._model_state import evaluating
from geomxai.models import FeatureModel
from geomxai.train._config import TrainConfig
from geomxai.train._losses import classification_loss, decorrelation_term, kl_consistency
from geomxai.train._masking import mask_low_saliency

TERMS = ("loss_ce", "loss_kl", "loss_decor", "loss_total", "correct")
"""Order of the entries of the tensor :func:`train_step` returns."""


class TrainForward(nn.Module):
    """``model.forward_all`` with mixed precision where it is safe; the module DDP wraps.

    The body runs under bf16 autocast when ``amp`` is on; the features are cast to float32 before
    the whitening (its covariance, eigendecomposition and matrix products must not see bf16) and
    the head and losses also run in float32. Without ``amp`` this is exactly ``forward_all``.

    Parameters
    ----------
    model : FeatureModel
    amp : bool
        Use bf16 autocast for the body (CUDA only; ignored elsewhere).

    Returns (from ``forward``)
    -------
    logits : Tensor (n, num_classes), float32
    features : Tensor (n, d), float32
    whitened : Tensor (n, d), float32
    """

    def __init__(self, model: FeatureModel, *, amp: bool = False):
        super().__init__()
        self.model = model
        self.amp = amp

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        use_amp = self.amp and x.device.type == "cuda"
        # A CUDA graph must not capture autocast's cache of cast weights (PyTorch's
        # make_graphed_callables refuses it too): while capturing, each cast is made where it
        # is used, which gives the same values.
        cache = not (use_amp and torch.cuda.is_current_stream_capturing())
        with torch.autocast(
            x.device.type, dtype=torch.bfloat16, enabled=use_amp, cache_enabled=cache
        ):
            features = model.body(x)
        with torch.autocast(x.device.type, enabled=False):
            features = features.float()
            whitened = model.whiten(features)
            logits = model.head(whitened if model.whiten_in_path else features)
        return logits, features, whitened


@contextlib.contextmanager
def frozen_running_stats(model: nn.Module) -> Iterator[None]:
    """Undo any change the enclosed forward makes to the model's buffers.

    The masked forward runs in training mode (BatchNorm and whitening use the statistics of the
    masked batch, as the reference does), but running statistics must describe clean images,
    which is what the model sees in eval mode; so BatchNorm running moments, whitening running
    covariances and batch counters are restored afterwards. A restore, not a momentum trick,
    works for any module with buffers.
    """
    # Grouped by dtype and device, so a ResNet's ~60 BatchNorm buffers are saved and restored
    # by a handful of fused ``_foreach`` kernels instead of one launch per buffer each way (on a
    # GPU a step is bound by kernel launches at batch 128; see docs/training.md).
    groups: dict[tuple, list[torch.Tensor]] = {}
    for b in model.buffers():
        if b is not None:
            groups.setdefault((b.dtype, b.device), []).append(b.data)
    saved = {key: torch._foreach_mul(bufs, 1) for key, bufs in groups.items()}
    try:
        yield
    finally:
        # Written through ``.data``, which leaves the version counter alone, exactly as
        # BatchNorm's own in-kernel running update does: the clean graph saved these buffers for
        # backward (a training-mode backward never reads their values), and a counted in-place
        # write would make that backward refuse to run.
        for key, bufs in groups.items():
            torch._foreach_copy_(bufs, saved[key])


# Layers whose forward never reads ``self.training`` (matched by exact type: a subclass may
# override ``forward``). Anything else (BatchNorm, whitening, dropout, a custom module) is taken
# to differ between the modes.
_MODE_FREE_TYPES = frozenset(
    {
        FeatureModel,
        nn.Sequential,
        nn.ModuleList,
        nn.ModuleDict,
        nn.Identity,
        nn.Flatten,
        nn.Unflatten,
        nn.Linear,
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.ReLU,
        nn.ReLU6,
        nn.LeakyReLU,
        nn.GELU,
        nn.SiLU,
        nn.Tanh,
        nn.Sigmoid,
        nn.Softplus,
        nn.MaxPool1d,
        nn.MaxPool2d,
        nn.MaxPool3d,
        nn.AvgPool1d,
        nn.AvgPool2d,
        nn.AvgPool3d,
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveAvgPool3d,
        nn.AdaptiveMaxPool2d,
        nn.LayerNorm,
        nn.GroupNorm,
    }
)


def same_in_both_modes(model: nn.Module) -> bool:
    """Whether ``model`` computes the same function in training and in eval mode.

    True when every submodule is of a type known never to read ``self.training`` (convolutions,
    linear layers, activations, pooling, layer and group norm, containers; matched by exact
    type, so a subclass is not trusted). Then the eval-mode masking gradient equals the one of
    the training-mode clean forward, and :func:`train_step` takes it from there instead of
    running an eval forward of its own. Conservative: a model with an unknown layer is taken
    to differ.

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    bool

    Examples
    --------
    >>> same_in_both_modes(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten()))
    True
    >>> same_in_both_modes(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    False
    """
    return all(type(m) in _MODE_FREE_TYPES for m in model.modules())


def _decor(features: torch.Tensor, model: FeatureModel, config: TrainConfig) -> torch.Tensor:
    return decorrelation_term(
        features, group_size=config.group_size, kind=config.decor_kind, whitening=model.whiten
    )


def eval_input_gradient(
    model: FeatureModel, x: torch.Tensor, y: torch.Tensor, *, amp: bool = False
) -> torch.Tensor:
    """``dCE/dx`` with the model in eval mode: the saliency the model shows at test time.

    This is the masking gradient of the saliency-guided training reference (Ismail et al. 2021
    switch the model to ``eval()`` to compute it). In eval mode BatchNorm and whitening use their
    running statistics, so each image's gradient depends on that image alone; in training mode
    the batch statistics couple the images of a batch, and on a ``saliencydecor`` model the two
    masks overlap with a Jaccard index of only about 0.3 (docs/training.md). Only the input
    gradient is computed (no weight gradients), and every module's mode is restored on any exit.

    Parameters
    ----------
    model : FeatureModel
        The unwrapped model (never its DDP wrapper: this pass must not take part in the
        gradient all-reduce).
    x : Tensor (n, c, h, w)
    y : Tensor (n,)
    amp : bool
        bf16 autocast for the body on CUDA, as in :class:`TrainForward`.

    Returns
    -------
    Tensor (n, c, h, w)
        Detached.
    """
    # Every submodule's own flag comes back (a part frozen in eval mode stays so).
    with evaluating(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits, _, _ = TrainForward(model, amp=amp)(x)
        (grad,) = torch.autograd.grad(classification_loss(logits, y), x)
    return grad


def train_step(
    net: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    model: FeatureModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    config: TrainConfig,
    params: list[torch.Tensor],
    generator: torch.Generator | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """Forward and backward of one batch; gradients are accumulated into ``params``' ``.grad``.

    The optimiser step and ``zero_grad`` are the caller's.

    Parameters
    ----------
    net : callable
        ``x -> (logits, features, whitened)``: a :class:`TrainForward`, possibly wrapped in DDP
        or compiled.
    model : FeatureModel
        The unwrapped model (its buffers are protected during the masked forward).
    x : Tensor (n, c, h, w)
        Images on the device.
    y : Tensor (n,)
        Labels.
    config : TrainConfig
        Regime, weights and masking options.
    params : list of Tensor
        The parameters that get gradients.
    generator : torch.Generator, optional
        On the device; drives the uniform fill of the masked pixels.
    no_sync : callable
        ``DistributedDataParallel.no_sync`` in a multi-process run: the first of the two backward
        passes of a detached step must accumulate locally, not all-reduce.

    Returns
    -------
    Tensor (5,), float32, detached
        ``loss_ce, loss_kl, loss_decor, loss_total, correct`` (see :data:`TERMS`); kept on the
        device, so a step never waits for the host.
    """
    zero = torch.zeros((), device=x.device)
    kl = decor = zero
    if not config.uses_masking or config.kl_weight == 0:
        # Without a KL term the mask would feed nothing: skip the input gradient and the
        # masked forward (this is also the paper's literal ViT objective, CE + decorrelation).
        logits, features, _ = net(x)
        ce = classification_loss(logits, y)
        total = ce
        if config.uses_decorrelation:
            decor = _decor(features, model, config)
            total = ce + config.decor_weight * decor
        total.backward(inputs=params)
    else:
        x = x.detach()
        # With no layer that tells the modes apart, the eval-mode gradient is the clean
        # forward's: the same numbers without a forward of its own.
        grad_from_clean = config.mask_gradient_mode == "train" or same_in_both_modes(model)
        if not grad_from_clean:
            grad_x = eval_input_gradient(model, x, y, amp=config.amp)
        else:
            x = x.requires_grad_(True)
        # A detached step backpropagates CE alone first; in a multi-process run that backward
        # must accumulate locally, not all-reduce.
        with no_sync() if config.detach_clean else contextlib.nullcontext():
            logits, features, _ = net(x)
            ce = classification_loss(logits, y)
            if config.detach_clean:
                # One backward gives the weight gradients of CE (and dCE/dx for the mask).
                ce.backward(inputs=[x, *params] if grad_from_clean else params)
                if grad_from_clean:
                    grad_x = x.grad
            elif grad_from_clean:
                # The graph is kept: the total loss below backpropagates through it once more.
                (grad_x,) = torch.autograd.grad(ce, x, retain_graph=True)
        x_masked = mask_low_saliency(
            x.detach(),
            grad_x,
            ratio=config.mask_ratio,
            by=config.mask_by,
            fill=config.mask_fill,
            generator=generator,
        )
        with frozen_running_stats(model):
            masked_logits, masked_features, _ = net(x_masked)
        clean = logits.detach() if config.detach_clean else logits
        kl = kl_consistency(clean, masked_logits, detach_clean=config.detach_clean)
        # A detached clean graph carries CE only, so the decorrelation term goes on the masked
        # forward's features (docs/training.md); attached, it is on the clean features.
        aux = config.kl_weight * kl
        if config.uses_decorrelation:
            decor = _decor(masked_features if config.detach_clean else features, model, config)
        if config.detach_clean:
            if config.uses_decorrelation:
                aux = aux + config.decor_weight * decor
            aux.backward(inputs=params)
            total = ce.detach() + aux.detach()
        else:
            total = ce + aux
            if config.uses_decorrelation:
                total = total + config.decor_weight * decor
            total.backward(inputs=params)
    with torch.no_grad():
        correct = (logits.detach().argmax(dim=1) == y).sum().float()
        terms = [ce, kl, decor, total, correct]
        return torch.stack([t.detach().float() for t in terms])
