"""Gradient entanglement: how much of the feature-layer gradient lies on correlated units.

Also the one hook that reads a layer's features and the gradients of the logits there
(:func:`layer_gradients`), which entanglement and the function-invariant geometry share.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from geomxai._features import as_float64, check_finite
from geomxai._finite import DEAD_UNIT_TOL, live_units
from geomxai._model_state import evaluating, module_device
from geomxai.attribution._layout import as_batch
from geomxai.attribution._utils import (
    as_labels,
    check_batch_size,
    compute_dtype,
    resolve_layer,
)


def _as_float64(a, *, name: str) -> np.ndarray:
    array = as_float64(a, name=name)
    check_finite(array, name=name)
    return array


def _correlation(h: np.ndarray, *, tol: float = DEAD_UNIT_TOL) -> np.ndarray:
    """Correlation matrix (d, d) of features (n, d); a dead unit correlates with nothing.

    A unit is dead by the threshold the correlation spectrum uses,
    :data:`geomxai._features.DEAD_UNIT_TOL` on variances relative to the largest
    (:func:`geomxai._features.live_units`), so entanglement and the geometry metrics agree on
    which units are dead. A dead unit has no meaningful correlation; 0 off the diagonal is the
    choice that lets its gradient count in the denominator without inventing shared mass in
    the numerator.
    """
    c = h - h.mean(axis=0)
    ss = np.einsum("ij,ij->j", c, c)
    live = live_units(ss, tol=tol)
    sd = np.sqrt(ss)
    z = np.zeros_like(c)
    z[:, live] = c[:, live] / sd[live]
    r = z.T @ z
    np.fill_diagonal(r, 1.0)
    return r


UNITS = ("live", "all")
"""Which units gradient entanglement is computed over (``units=``)."""


def entanglement_from_gradients(grads, correlation, *, live=None) -> float:
    """Gradient entanglement from per-sample feature gradients and a correlation matrix.

    For each sample ``g`` (d,):
    ``E(g) = sum_{i != j} |g_i| |g_j| |R_ij| / sum_{i != j} |g_i| |g_j|``, in [0, 1]: the share
    of gradient mass on pairs of correlated units. 0 when the units carrying the gradient are
    uncorrelated, 1 when they are perfectly (anti-)correlated. The result is the mean over
    samples; samples with fewer than two non-zero gradient entries have no pairs, are left out
    of the mean, and if no sample has pairs the result is NaN. Empty gradients (no sample or
    no unit) and NaN/inf entries are refused with a ValueError.

    Parameters
    ----------
    grads : array or Tensor (n, d)
        ``d logit_y / d h`` per sample.
    correlation : array or Tensor (d, d)
        Correlation matrix of the feature layer; its diagonal is ignored.
    live : array of bool (d,), optional
        Units to keep: the sum runs over live units only, so a dead unit's gradient counts in
        neither sum (with all units, it counts in the denominator and dilutes the value).

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> g = np.array([[1.0, 1.0, 0.0]])
    >>> r = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    >>> entanglement_from_gradients(g, r)
    0.5
    """
    g = _as_float64(grads, name="grads")
    r = _as_float64(correlation, name="correlation")
    if g.ndim != 2:
        raise ValueError(f"grads must be 2-D (n_samples, n_units); got shape {g.shape}")
    if g.size == 0:
        raise ValueError(
            "grads must hold at least one sample and one unit (n_samples, n_units); got shape "
            f"{g.shape}. Was the batch or the layer empty?"
        )
    d = g.shape[1]
    if r.shape != (d, d):
        raise ValueError(f"correlation must have shape ({d}, {d}); got shape {r.shape}")
    if live is not None:
        keep = np.asarray(live)
        if keep.shape != (d,) or keep.dtype != bool:
            raise ValueError(f"live must be a boolean mask of shape ({d},); got {keep.shape}")
        g, r = g[:, keep], r[np.ix_(keep, keep)]
    a = np.abs(g)
    abs_r = np.abs(r)
    # a^T |R| a counts the diagonal too; remove it instead of building a masked copy of R.
    diag = (a * a) @ np.diag(abs_r)
    num = np.einsum("ni,ij,nj->n", a, abs_r, a) - diag
    den = a.sum(axis=1) ** 2 - (a * a).sum(axis=1)
    ok = den > 1e-300
    if not ok.any():
        return float("nan")
    return float(np.mean(num[ok] / den[ok]))


class LayerGradients(NamedTuple):
    """A layer's features and the logits' gradients there, float64 on the CPU.

    Attributes
    ----------
    features : ndarray (n, d)
        The layer's output, flattened per sample.
    gradients : ndarray (n, d)
        ``d logit_{y_i} / d h`` of each sample's target.
    jacobians : ndarray (n, C, d) or None
        ``d logits / d h`` of every output (``outputs="all"``), else None.
    logits : ndarray (n, C)
    """

    features: np.ndarray
    gradients: np.ndarray
    jacobians: np.ndarray | None
    logits: np.ndarray


def layer_gradients(
    model: nn.Module,
    x,
    y,
    *,
    layer: str = "body",
    outputs: str = "target",
    batch_size: int | None = 256,
) -> LayerGradients:
    """Features of ``layer`` and the gradients of the logits with respect to them.

    A forward hook on ``layer`` replaces its output by a detached copy that requires grad, so
    the gradients come from ``torch.autograd.grad`` with respect to that copy only: the part of
    the model below the layer is not differentiated, no parameter ``.grad`` is touched, and the
    hook is removed in a ``finally`` block. The model runs in eval mode and every submodule
    gets its own train/eval flag back. Samples do not interact in eval mode, so the gradient
    of a sum of logits over the batch holds each sample's own gradient.

    Parameters
    ----------
    model : nn.Module
        Any module with a submodule named ``layer`` (a dotted ``named_modules()`` name).
    x : Tensor (n, c, h, w), (n, c, t) or (n, d)
        Finite inputs, cast to the model's floating parameter dtype.
    y : int or Tensor (n,)
        Each sample's target class.
    layer : str
        The layer; "body" (the feature layer) in every geomxai model.
    outputs : {"target", "all"}
        ``"all"`` also returns the Jacobian of every logit (one backward pass per output
        through the part of the model above ``layer``).
    batch_size : int or None

    Returns
    -------
    LayerGradients
    """
    if outputs not in ("target", "all"):
        raise ValueError(f"outputs must be 'target' or 'all'; got outputs={outputs!r}")
    x = as_batch(x)
    n = x.shape[0]
    labels = as_labels(y, n)
    batch_size = check_batch_size(batch_size, n)
    module = resolve_layer(model, layer)
    device = module_device(model, fallback=x.device)
    dtype = compute_dtype(model, x)
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer {layer!r} must output a tensor; got {type(output).__name__}")
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        # Hand on a copy: an in-place op after the layer (ReLU(inplace=True)) must not modify
        # the leaf the gradient is taken against, nor the features stored from it.
        return leaf.clone()

    feats, grads, jacs, outs = [], [], [], []
    handle = module.register_forward_hook(hook)
    try:
        with evaluating(model), torch.enable_grad():
            for start in range(0, n, batch_size):
                captured.clear()
                xb = x[start : start + batch_size].to(device, dtype)
                yb = labels[start : start + batch_size].to(device)
                logits = model(xb)
                if len(captured) != 1:
                    raise RuntimeError(
                        f"layer {layer!r} ran {len(captured)} times in one forward pass; "
                        "gradients at a layer need a layer that runs exactly once"
                    )
                h = captured[0]
                keep = outputs == "all"
                (g,) = torch.autograd.grad(
                    logits.gather(1, yb[:, None]).sum(), h, allow_unused=True, retain_graph=keep
                )
                if g is None:
                    raise ValueError(
                        f"the logits do not depend on the output of layer {layer!r}; choose a "
                        "layer on the path to the logits"
                    )
                if keep:
                    rows = []
                    for c in range(logits.shape[1]):
                        (gc,) = torch.autograd.grad(
                            logits[:, c].sum(), h, retain_graph=c + 1 < logits.shape[1]
                        )
                        rows.append(gc.flatten(1).to("cpu", torch.float64))
                    jacs.append(torch.stack(rows, dim=1))
                feats.append(h.detach().flatten(1).to("cpu", torch.float64))
                grads.append(g.flatten(1).to("cpu", torch.float64))
                outs.append(logits.detach().to("cpu", torch.float64))
    finally:
        handle.remove()
        captured.clear()
    return LayerGradients(
        torch.cat(feats).numpy(),
        torch.cat(grads).numpy(),
        torch.cat(jacs).numpy() if jacs else None,
        torch.cat(outs).numpy(),
    )


def gradient_entanglement(
    model: nn.Module,
    x,
    y,
    *,
    layer: str = "body",
    correlation=None,
    batch_size: int | None = 256,
    units: str = "live",
) -> float:
    """Gradient entanglement of ``model`` at ``layer`` (design.md, "Metric definitions").

    For each sample, ``g = d logit_y / d h`` at the output ``h`` of ``layer`` (flattened to
    (n, d), :func:`layer_gradients`); the correlation matrix ``R`` is that of ``h`` over the
    given batch (float64) unless ``correlation`` is given. The value is
    :func:`entanglement_from_gradients` of the two.

    ``units="live"`` (the default) sums over the live units only: those whose variance on the
    batch exceeds :data:`geomxai._finite.DEAD_UNIT_TOL` times the largest (the threshold of the
    correlation spectrum and of the study's live-unit counts). ``units="all"`` keeps every unit,
    a dead one correlating with nothing: its gradient then counts in the denominator and none
    of the numerator, so a layer whose gradient mass sits on dead units (a whitened model's
    can put most of it there) reads as disentangled whatever its live units do.

    Parameters
    ----------
    model : nn.Module
        Any module with a submodule named ``layer`` (a dotted ``named_modules()`` name).
    x : Tensor (n, c, h, w), (n, c, t) or (n, d)
        Finite images, sequences or tabular rows (NaN or inf values are refused), of any
        floating dtype: cast to the model's floating parameter dtype.
    y : int or Tensor (n,)
        Class whose logit is differentiated.
    layer : str
        The feature layer; "body" in every geomxai model.
    correlation : array or Tensor (d, d) or None
        A fixed correlation matrix, e.g. from a larger probe set.
    batch_size : int or None
    units : {"live", "all"}
        Which units the sums run over (above). Live units are judged on the batch ``x``, also
        when ``correlation`` is given.

    Returns
    -------
    float
        In [0, 1]; NaN when no sample has two non-zero gradient entries on those units.
    """
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}; got units={units!r}")
    grads = layer_gradients(model, x, y, layer=layer, batch_size=batch_size)
    return entanglement_of(grads.features, grads.gradients, correlation=correlation, units=units)


def entanglement_of(features, grads, *, correlation=None, units: str = "live") -> float:
    """Gradient entanglement from a layer's features (n, d) and gradients (n, d) there.

    :func:`gradient_entanglement` once the gradients are taken (:func:`layer_gradients`): the
    correlation of ``features`` (unless ``correlation`` is given), its live units by
    :data:`geomxai._finite.DEAD_UNIT_TOL`, and :func:`entanglement_from_gradients` over the
    ``units`` asked for.
    """
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}; got units={units!r}")
    h = _as_float64(features, name="features")
    if h.ndim != 2:
        raise ValueError(f"features must be 2-D (n_samples, n_units); got shape {h.shape}")
    if correlation is None:
        if h.shape[0] < 2:
            raise ValueError("a correlation over the batch needs at least 2 samples; got 1")
        correlation = _correlation(h)
    live = None
    if units == "live":
        c = h - h.mean(axis=0)
        live = live_units(np.einsum("ij,ij->j", c, c))
    return entanglement_from_gradients(grads, correlation, live=live)
