"""Model-parameter randomisation sanity check (Adebayo et al. 2018), cascading version."""

from __future__ import annotations

import copy

import numpy as np
import torch
import xarray as xr
from captum.attr import Attribution
from scipy.stats import rankdata
from torch import nn

from geomxai._model_state import module_device
from geomxai.attribution._layout import as_batch
from geomxai.attribution._saliency import method_name
from geomxai.attribution._saliency import saliency as _saliency
from geomxai.attribution._utils import resolve_layer


def _default_layers(model: nn.Module) -> list[str]:
    """Modules that own parameters directly, from the output end down (reverse registration)."""
    names = [
        name
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    return names[::-1]


def _randomise(module: nn.Module, seed: int, device: torch.device) -> None:
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    # A private generator state: re-initialisers draw from the global one.
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
            return
        for p in module.parameters(recurse=False):
            std = float(p.float().std()) if p.numel() > 1 else 0.0
            p.normal_(0.0, std if std > 0 else 0.02)


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``a`` with the same row of ``b`` (midranks)."""
    ra = rankdata(a, axis=1)
    rb = rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(axis=1) / den, np.nan)


def cascading_randomization(
    model: nn.Module,
    x,
    target,
    *,
    method="gradient",
    layers: list[str] | None = None,
    seed: int = 0,
    **saliency_kwargs,
) -> xr.DataArray:
    """Cascading model-parameter randomisation test (Adebayo et al. 2018).

    On a deep copy of ``model`` (the model passed in is never modified), the parameters of
    ``layers`` are re-initialised one after the other, from the output end down and
    cumulatively: after step ``i`` the first ``i + 1`` listed layers are random. After each step
    the saliency maps of ``x`` are recomputed and compared with those of the trained model by
    the Spearman rank correlation of their pixels, per image; the result is the mean over
    images. A method that explains the model should lose its similarity quickly (values near
    0); one that stays near 1 is insensitive to the parameters.

    Re-initialisation uses the module's own ``reset_parameters`` (PyTorch's default
    initialiser, as the paper re-initialises with the training initialiser); parameters of a
    module without one are redrawn from ``N(0, std^2)`` with their own standard deviation. Step
    ``i`` is seeded with ``seed + i`` through a forked generator, so the global random state
    is left as it was.

    Parameters
    ----------
    model : nn.Module
    x : Tensor (n, c, h, w), (n, c, t) or (n, d)
    target : int or Tensor (n,)
    method : str or callable
        A :func:`geomxai.attribution.saliency` method name or callable ``(model, x, target)``.
        A Captum instance is refused: it is bound to the trained model, and the test runs the
        method on randomised copies (wrap it: ``lambda m, x, t: IntegratedGradients(m)
        .attribute(x, target=t)``).
    layers : list of str or None
        Dotted module names, in the order they are randomised (top first). None: every module
        that owns parameters directly, in reverse registration order (for a sequential model,
        the output layer first).
    seed : int
    **saliency_kwargs
        Passed on to :func:`geomxai.attribution.saliency` (``reduce``, ``batch_size``, ...).

    Returns
    -------
    DataArray (layer,)
        Named ``"spearman"``; coordinate ``layer`` is the layer randomised at each step.
        Images whose map becomes constant (no rank correlation defined) are left out of the
        mean; a step where that holds for every image gives NaN.
    """
    if isinstance(method, Attribution):
        raise TypeError(
            "method must be a method name or a callable (model, x, target) -> attributions, "
            f"not a Captum {method_name(method)} instance: an instance is bound to one model, "
            "and the test runs the method on randomised copies of it (wrap it: lambda m, x, t: "
            f"{type(method).__name__}(m).attribute(x, target=t))"
        )
    x = as_batch(x)
    names = _default_layers(model) if layers is None else list(layers)
    if not names:
        raise ValueError("model has no parameters to randomise; got layers=[]")
    for name in names:
        resolve_layer(model, name)
    if len(set(names)) != len(names):
        raise ValueError(f"layers must be distinct; got {names}")

    reference = _saliency(model, x, target, method=method, **saliency_kwargs)
    ref = reference.detach().to("cpu", torch.float64).flatten(1).numpy()
    randomised = copy.deepcopy(model)
    device = module_device(randomised, fallback=x.device)
    values = []
    for i, name in enumerate(names):
        _randomise(resolve_layer(randomised, name), seed + i, device)
        maps = _saliency(randomised, x, target, method=method, **saliency_kwargs)
        rho = _spearman_rows(ref, maps.detach().to("cpu", torch.float64).flatten(1).numpy())
        values.append(float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan"))
    return xr.DataArray(
        np.asarray(values),
        dims=("layer",),
        coords={"layer": np.asarray(names, dtype=object)},
        name="spearman",
        attrs={"method": method_name(method), "seed": int(seed), "n_samples": int(x.shape[0])},
    )
