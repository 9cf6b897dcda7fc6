"""Per-pixel saliency maps through Captum, batched on the model's device."""

from __future__ import annotations

import contextlib
import warnings
from typing import Literal

import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from geomxai.attribution._utils import (
    as_images,
    as_labels,
    check_batch_size,
    eval_mode,
    model_device,
)

METHODS = ("gradient", "abs_gradient", "input_x_gradient", "smoothgrad", "integrated_gradients")
REDUCTIONS = ("abs_sum", "sum", "max_abs")

Method = Literal[
    "gradient", "abs_gradient", "input_x_gradient", "smoothgrad", "integrated_gradients"
]


def reduce_channels(attr: torch.Tensor, reduce: str) -> torch.Tensor:
    """(n, c, h, w) attribution to (n, h, w) per-pixel maps, one convention everywhere."""
    if reduce == "abs_sum":
        return attr.abs().sum(dim=1)
    if reduce == "sum":
        return attr.sum(dim=1)
    return attr.abs().amax(dim=1)


def _seeded(seed: int | None, device: torch.device):
    """Seed Captum's noise draws (they use the global generator) without changing its state."""
    if seed is None:
        return contextlib.nullcontext()
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    ctx = torch.random.fork_rng(devices=devices)

    @contextlib.contextmanager
    def seeded():
        with ctx:
            torch.manual_seed(seed)
            yield

    return seeded()


def saliency(
    model: nn.Module,
    x,
    target,
    *,
    method: Method = "gradient",
    reduce: Literal["abs_sum", "sum", "max_abs"] = "abs_sum",
    batch_size: int | None = 128,
    n_samples: int = 50,
    noise_level: float = 0.15,
    n_steps: int = 50,
    baseline: float | torch.Tensor = 0.0,
    seed: int | None = 0,
) -> torch.Tensor:
    """Per-pixel saliency maps of ``model`` for classes ``target``, computed with Captum.

    Attributions are computed for the logit of ``target`` with respect to the input, one batch
    of ``batch_size`` images at a time on the model's device, then reduced over channels to one
    value per pixel. The default reduction, ``reduce="abs_sum"``, is the sum over channels of
    ``|attribution|``, the convention design.md uses for training masks ("smallest |gradient|
    summed over channels"); every geomxai metric that takes saliency expects these maps.

    Methods (the Captum class in brackets):

    - ``"gradient"``: the signed input gradient (``Saliency(abs=False)``, Simonyan et al. 2014).
    - ``"abs_gradient"``: ``|gradient|`` per channel (``Saliency(abs=True)``). Under
      ``reduce="abs_sum"`` or ``"max_abs"`` it equals ``"gradient"``; they differ under ``"sum"``.
    - ``"input_x_gradient"``: ``x * gradient`` (``InputXGradient``, Shrikumar et al. 2016).
    - ``"smoothgrad"``: the mean signed gradient over ``n_samples`` noisy copies
      ``x + N(0, sigma^2)``, with ``sigma = noise_level * (max(x_i) - min(x_i))`` for each image
      ``x_i`` (Smilkov et al. 2017) (``NoiseTunnel(Saliency)``). Captum takes one noise level per
      input tensor, so images are rescaled by their range before the noise is added and the
      gradient is scaled back. The noise is drawn from a generator seeded with ``seed``; the
      global random state is left as it was.
    - ``"integrated_gradients"``: ``(x - baseline)`` times the mean gradient along the straight
      path from ``baseline``, ``n_steps`` Gauss-Legendre points (``IntegratedGradients``,
      Sundararajan et al. 2017).

    The model is left as it was: it runs in eval mode and every submodule gets its own
    train/eval flag back; no hooks are added; gradients are taken with respect to a copy of the
    input only, so no parameter ``.grad`` is touched and ``x`` is not modified.

    Parameters
    ----------
    model : nn.Module
        Maps images (n, c, h, w) to logits (n, k).
    x : Tensor (n, c, h, w)
        Images, on any device.
    target : int or Tensor (n,)
        Class whose logit is explained, per image or one for all.
    method : str
        One of ``"gradient"``, ``"abs_gradient"``, ``"input_x_gradient"``, ``"smoothgrad"``,
        ``"integrated_gradients"``.
    reduce : {"abs_sum", "sum", "max_abs"}
        Channel reduction: sum of ``|a|``, signed sum, or max of ``|a|``.
    batch_size : int or None
        Images per call to Captum (None: all at once). SmoothGrad and Integrated Gradients
        evaluate the model on at most this many (noisy or interpolated) images per forward.
    n_samples, noise_level : int, float
        SmoothGrad's number of noisy copies and noise level (fraction of each image's range).
    n_steps : int
        Integrated Gradients' number of integration points.
    baseline : float or Tensor broadcastable to (c, h, w)
        Integrated Gradients' reference input.
    seed : int or None
        Seed of SmoothGrad's noise (None: the global generator, not reproducible).

    Returns
    -------
    Tensor (n, h, w)
        Per-pixel saliency on ``x``'s device, detached, in ``x``'s dtype.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    >>> with torch.no_grad():
    ...     _ = model[1].weight.copy_(torch.tensor([[1.0, -2.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]]))
    >>> saliency(model, torch.ones(1, 1, 2, 2), 0)
    tensor([[[1., 2.],
             [0., 3.]]])
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got method={method!r}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}; got reduce={reduce!r}")
    x = as_images(x)
    n = x.shape[0]
    targets = as_labels(target, n, name="target")
    batch_size = check_batch_size(batch_size, n)
    if method == "smoothgrad":
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int; got n_samples={n_samples!r}")
        if not noise_level >= 0:
            raise ValueError(f"noise_level must be >= 0; got noise_level={noise_level!r}")
    if method == "integrated_gradients" and (not isinstance(n_steps, int) or n_steps < 1):
        raise ValueError(f"n_steps must be a positive int; got n_steps={n_steps!r}")

    device = model_device(model, fallback=x.device)
    out = []
    with eval_mode(model), _seeded(seed if method == "smoothgrad" else None, device):
        for start in range(0, n, batch_size):
            xb = x[start : start + batch_size].detach().to(device).clone()
            tb = targets[start : start + batch_size].to(device)
            with warnings.catch_warnings():
                # Captum announces that it sets requires_grad on the (copied) input; expected.
                warnings.filterwarnings("ignore", message="Input Tensor .* did not already")
                attr = _attribute(
                    model, xb, tb, method, batch_size, n_samples, noise_level, n_steps, baseline
                )
            out.append(reduce_channels(attr.detach(), reduce))
    return torch.cat(out).to(device=x.device, dtype=x.dtype)


def _attribute(model, xb, tb, method, batch_size, n_samples, noise_level, n_steps, baseline):
    if method in ("gradient", "abs_gradient"):
        return Saliency(model).attribute(xb, target=tb, abs=method == "abs_gradient")
    if method == "input_x_gradient":
        return InputXGradient(model).attribute(xb, target=tb)
    if method == "integrated_gradients":
        if isinstance(baseline, torch.Tensor):
            base = baseline.to(device=xb.device, dtype=xb.dtype).expand_as(xb).contiguous()
        else:
            base = float(baseline)
        return IntegratedGradients(model).attribute(
            xb, baselines=base, target=tb, n_steps=n_steps, internal_batch_size=batch_size
        )
    # SmoothGrad with noise relative to each image's range: Captum's NoiseTunnel accepts one
    # standard deviation per input tensor, so attribute on z = x / range with a forward that
    # multiplies the range back in; noise of std noise_level on z is noise of std
    # noise_level * range on x, and d/dz = range * d/dx. A constant image gets a tiny range
    # (float eps), i.e. no noise, instead of a division by zero.
    scale = (xb.amax(dim=(1, 2, 3)) - xb.amin(dim=(1, 2, 3))).clamp_min(torch.finfo(xb.dtype).eps)
    scale = scale.view(-1, 1, 1, 1)

    def forward(z, s):
        return model(z * s)

    tunnel = NoiseTunnel(Saliency(forward))
    grad_z = tunnel.attribute(
        xb / scale,
        nt_type="smoothgrad",
        nt_samples=n_samples,
        nt_samples_batch_size=max(1, batch_size // xb.shape[0]),
        stdevs=float(noise_level),
        target=tb,
        abs=False,
        additional_forward_args=(scale,),
    )
    return grad_z / scale
