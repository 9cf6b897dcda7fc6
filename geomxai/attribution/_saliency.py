"""Per-position saliency maps: a named method, any Captum ``Attribution``, or a callable.

Batched on the model's device; images, sequences and tabular rows alike (see
:mod:`geomxai.attribution._layout` for what a position is).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Literal

import torch
from captum.attr import (
    Attribution,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    NeuronAttribution,
    NoiseTunnel,
    Saliency,
)
from torch import nn

from geomxai._hints import did_you_mean
from geomxai._model_state import evaluating, module_device
from geomxai.attribution._layout import REDUCTIONS, Layout, as_batch, layout_of, reduce_channels
from geomxai.attribution._utils import (
    as_labels,
    check_batch_size,
    check_count,
    check_number,
    check_seed,
    check_targets,
    compute_dtype,
)

METHODS = ("gradient", "abs_gradient", "input_x_gradient", "smoothgrad", "integrated_gradients")

Method = Literal[
    "gradient", "abs_gradient", "input_x_gradient", "smoothgrad", "integrated_gradients"
]
AnyMethod = Method | Attribution | Callable[..., object]
"""What ``method`` accepts: a name, a Captum ``Attribution`` instance, or a callable."""

# Arguments saliency passes to Captum itself, or whose result it could not take.
_RESERVED_KWARGS = ("inputs", "target", "return_convergence_delta")
# Interpolation modes of torch.nn.functional.interpolate, by the number of position dims.
_INTERPOLATE_MODES = {
    2: ("nearest", "nearest-exact", "bilinear", "bicubic", "area"),
    1: ("nearest", "nearest-exact", "linear", "area"),
}


def _innermost(method: Attribution) -> Attribution:
    """The attribution a (possibly nested) NoiseTunnel wraps; the method itself otherwise."""
    while isinstance(method, NoiseTunnel):
        method = method.attribution_method
    return method


def _is_layer(method: Attribution) -> bool:
    return isinstance(_innermost(method), LayerAttribution)


def _owner(forward_func) -> nn.Module | None:
    """The module a Captum ``forward_func`` is, or is a bound method of; None for a function."""
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def _layers(method: Attribution) -> list[nn.Module]:
    layer = getattr(_innermost(method), "layer", None)
    if layer is None:
        return []
    return list(layer) if isinstance(layer, (list, tuple)) else [layer]


def _layer_label(method: Attribution) -> str:
    owner = _owner(method.forward_func)
    names = {id(m): name for name, m in owner.named_modules()} if owner is not None else {}
    return "+".join(names.get(id(m)) or type(m).__name__ for m in _layers(method))


def method_name(method: AnyMethod) -> str:
    """A stable, human-readable name of a saliency method, for result attrs and reports.

    A method name is itself; a Captum instance is its class name, a ``NoiseTunnel`` names what
    it wraps, a layer or neuron method names its layer by its dotted ``named_modules()`` path
    in the model it is bound to (its class name where that path is unknown); a callable is
    ``"callable:"`` and its ``__name__`` (a ``functools.partial``: the function it wraps; an
    object with ``__call__``: its class name).

    Parameters
    ----------
    method : str, captum.attr.Attribution or callable
        As :func:`saliency` accepts it.

    Returns
    -------
    str

    Examples
    --------
    >>> from captum.attr import IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency
    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    >>> method_name("smoothgrad"), method_name(IntegratedGradients(model))
    ('smoothgrad', 'IntegratedGradients')
    >>> method_name(NoiseTunnel(Saliency(model))), method_name(LayerGradCam(model, model[0]))
    ('NoiseTunnel(Saliency)', 'LayerGradCam(0)')
    >>> def my_fn(model, x, target):
    ...     return x
    >>> method_name(my_fn)
    'callable:my_fn'
    """
    if isinstance(method, str):
        return method
    if isinstance(method, NoiseTunnel):
        return f"NoiseTunnel({method_name(method.attribution_method)})"
    if isinstance(method, Attribution):
        name = type(method).__name__
        if isinstance(method, (LayerAttribution, NeuronAttribution)) and _layers(method):
            return f"{name}({_layer_label(method)})"
        return name
    if isinstance(method, functools.partial):
        return method_name(method.func)
    if callable(method):
        name = getattr(method, "__name__", None)
        return f"callable:{name if isinstance(name, str) else type(method).__name__}"
    raise TypeError(
        "method must be a method name, a Captum Attribution instance or a callable; "
        f"got {type(method).__name__}"
    )


def _takes_model_alone(method) -> bool:
    """Whether a callable has exactly one required positional parameter, as a factory
    ``model -> Attribution`` has (a callable ``(model, x, target)`` has three)."""
    try:
        params = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: not ours to guess
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in params if p.kind in positional and p.default is p.empty]
    return len(required) == 1


def check_saliency_method(
    method, *, argument: str = "method", factories: bool = False
) -> Literal["name", "captum", "factory", "callable"]:
    """Check a saliency method and say which kind it is; refuse anything else, naming the fix.

    The one check of what :func:`saliency` accepts as ``method``, for every function that takes
    a method and passes it on (the study's ``AnalysisOptions.saliency_method`` among them).

    Parameters
    ----------
    method : str, captum.attr.Attribution, type or callable
        A name from :data:`SALIENCY_METHODS`, a Captum ``Attribution`` instance, a callable
        ``(model, x, target) -> attributions`` or, where ``factories``, a factory
        ``model -> Attribution``: a Captum ``Attribution`` class, or a callable of exactly one
        required positional parameter (``lambda model: LayerGradCam(model, model.body[-1])``).
    argument : str
        The caller's name of the parameter, which the error messages name.
    factories : bool
        Whether a factory is accepted. Without, a Captum class is refused (pass an instance)
        and a one-parameter callable counts as a callable.

    Returns
    -------
    {"name", "captum", "factory", "callable"}
        A method name, a Captum instance, a factory (only where ``factories``), a callable.

    Raises
    ------
    ValueError
        An unknown method name (the close names are suggested).
    TypeError
        Anything else: a Captum class where factories are not accepted, another class, a
        module (the model, not a method), an object that is not callable.

    Examples
    --------
    >>> from captum.attr import IntegratedGradients
    >>> model = nn.Linear(4, 2)
    >>> check_saliency_method("smoothgrad"), check_saliency_method(IntegratedGradients(model))
    ('name', 'captum')
    >>> check_saliency_method(IntegratedGradients, factories=True)
    'factory'
    >>> check_saliency_method(lambda model, x, target: x)
    'callable'

    The messages name the caller's parameter and the close names:

    >>> try:
    ...     check_saliency_method("smoothgard", argument="saliency_method")
    ... except ValueError as err:
    ...     print(str(err).split("; got ")[-1])
    saliency_method='smoothgard' (did you mean 'smoothgrad'?)
    """
    factory = " a factory model -> Attribution (a Captum class)," if factories else ""
    accepted = (
        f"a Captum Attribution instance (built on the model: IntegratedGradients(model)),"
        f"{factory} or a callable (model, x, target) -> attributions"
    )
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(
                f"{argument} must be one of {METHODS}, {accepted}; got {argument}={method!r}"
                f"{did_you_mean(method, METHODS)}"
            )
        return "name"
    expected = f"{argument} must be a method name (one of {METHODS}), {accepted}"
    if isinstance(method, type):
        if not issubclass(method, Attribution):
            raise TypeError(f"{expected}; got the class {method.__name__}, not an Attribution")
        if not factories:
            raise TypeError(
                f"{argument} must be a Captum Attribution instance, not the class: pass "
                f"{method.__name__}(model) (built on the model it explains)"
            )
        return "factory"
    if isinstance(method, Attribution):
        return "captum"
    if isinstance(method, nn.Module):
        raise TypeError(
            f"{expected}; got the module {type(method).__name__}, which is a model, not a "
            "method (the model goes in the first argument)"
        )
    if not callable(method):
        raise TypeError(f"{expected}; got {type(method).__name__}")
    return "factory" if factories and _takes_model_alone(method) else "callable"


def _check_captum(method: Attribution, model: nn.Module, layout: Layout) -> bool:
    """Refuse a Captum instance bound to another model; True if binding must be watched.

    A ``forward_func`` that is ``model``, a bound method of it, or a module that holds it (a
    wrapper such as ``nn.Sequential(model, nn.Softmax(1))``) is accepted; another module is
    refused. A plain function cannot be inspected: the first batch checks that it calls
    ``model`` (True is returned).
    """
    owner = _owner(method.forward_func)
    inner = _innermost(method)
    if owner is not None and owner is not model and not any(m is model for m in owner.modules()):
        args = "model, layer" if _layers(method) else "model"
        raise ValueError(
            f"method is a Captum {method_name(method)} bound to another model: its "
            f"forward_func is a {type(owner).__name__} that is not the model passed to saliency "
            f"(a {type(model).__name__}) and does not hold it. Build the method on that model: "
            f"{type(inner).__name__}({args})"
        )
    layers = _layers(method)
    if _is_layer(method):
        if layout.kind == "tabular":
            raise ValueError(
                f"method {method_name(method)} attributes to a layer's units, which do not "
                "correspond to the features of a tabular batch (n, d); use an input attribution "
                "method (Saliency, IntegratedGradients, DeepLift, Occlusion, ...)"
            )
        if len(layers) != 1:
            raise ValueError(
                f"method {method_name(method)} attributes to {len(layers)} layers; saliency "
                "needs one map per input, so give a layer method a single layer"
            )
    scope = owner if owner is not None else model
    for layer in layers:
        if not any(m is layer for m in scope.modules()):
            raise ValueError(
                f"method {method_name(method)}'s layer, a {type(layer).__name__}, is not a "
                f"submodule of the model passed to saliency; build it with one of "
                "model.named_modules()"
            )
    return owner is None


@contextlib.contextmanager
def _counting_calls(model: nn.Module, watch: bool):
    """Count the model's forward calls (a pre-hook removed on exit), when ``watch``."""
    calls = [0]
    if not watch:
        yield calls
        return

    def count(_module, _inputs):
        calls[0] += 1

    handle = model.register_forward_pre_hook(count)
    try:
        yield calls
    finally:
        handle.remove()


def _check_kwargs(attribute_kwargs, kind: str) -> dict:
    if attribute_kwargs is None:
        return {}
    if not isinstance(attribute_kwargs, Mapping):
        raise TypeError(
            f"attribute_kwargs must be a mapping of keyword arguments; got "
            f"{type(attribute_kwargs).__name__}"
        )
    if kind == "name":
        raise ValueError(
            "attribute_kwargs is for a Captum instance or a callable method; the named methods "
            "take n_samples, noise_level, n_steps and baseline"
        )
    bad = [k for k in attribute_kwargs if k in _RESERVED_KWARGS]
    if bad:
        raise ValueError(
            f"attribute_kwargs must not hold {bad}: saliency passes the inputs and the target "
            "itself and needs the attributions alone"
        )
    return dict(attribute_kwargs)


def _batch_kwargs(kwargs: dict, n: int, ndim: int, start: int, stop: int, device, dtype) -> dict:
    """Per-batch keyword arguments: a tensor with one entry per sample is sliced like ``x``."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            if value.ndim == ndim and value.shape[0] == n:
                value = value[start:stop]
            value = value.to(device, dtype) if value.is_floating_point() else value.to(device)
        out[key] = value
    return out


def _takes_target(method: Attribution) -> bool:
    """Whether ``attribute`` takes a ``target`` (neuron methods do not)."""
    inner = _innermost(method)
    params = inspect.signature(inner.attribute).parameters
    return "target" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _check_mode(interpolate_mode: str, layout: Layout) -> None:
    modes = _INTERPOLATE_MODES[len(layout.positions)] if layout.kind != "tabular" else ()
    if interpolate_mode not in modes:
        raise ValueError(
            f"interpolate_mode must be one of {modes} for {layout.kind} inputs; got "
            f"interpolate_mode={interpolate_mode!r}"
        )


def _as_maps(attr, xb: torch.Tensor, layout: Layout, reduce: str, method, mode: str):
    """A method's attributions for one batch as per-position maps (b, *positions)."""
    if isinstance(attr, (tuple, list)) and len(attr) == 1:
        attr = attr[0]
    if not isinstance(attr, torch.Tensor):
        try:
            attr = torch.as_tensor(attr)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"method {method_name(method)} must return a tensor of attributions; got "
                f"{type(attr).__name__}"
            ) from err
    attr = attr.detach()
    if not attr.is_floating_point():
        attr = attr.to(xb.dtype)
    b = xb.shape[0]
    shape = tuple(attr.shape)
    if shape in (tuple(xb.shape), (b, *layout.positions)):
        return reduce_channels(attr.to(xb.device), reduce, layout)
    if (
        isinstance(method, Attribution)
        and _is_layer(method)
        and attr.ndim == xb.ndim
        and shape[0] == b
    ):
        # Layer maps (b, c', h', w') or (b, c', t') onto the input's positions, as Captum
        # users upsample Grad-CAM; then reduced over c' like any attribution.
        _check_mode(mode, layout)
        up = LayerAttribution.interpolate(attr, layout.positions, interpolate_mode=mode)
        return reduce_channels(up.to(xb.device), reduce, layout)
    per_position = f"({b}, {', '.join(map(str, layout.positions))})"
    layer_hint = (
        "; a layer method's layer must keep positions (a conv layer's (b, c, h', w') or "
        "(b, c, t'), not a flattened or pooled one)"
        if isinstance(method, Attribution) and _is_layer(method)
        else ""
    )
    raise ValueError(
        f"method {method_name(method)} returned attributions of shape {shape} for inputs of "
        f"shape {tuple(xb.shape)}; saliency needs the inputs' shape or per-position maps "
        f"{per_position}{layer_hint}"
    )


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
    method: AnyMethod = "gradient",
    reduce: Literal["abs_sum", "sum", "max_abs"] = "abs_sum",
    batch_size: int | None = 128,
    n_samples: int = 50,
    noise_level: float = 0.15,
    n_steps: int = 50,
    baseline: float | torch.Tensor = 0.0,
    seed: int | None = 0,
    attribute_kwargs: Mapping | None = None,
    interpolate_mode: str = "nearest",
) -> torch.Tensor:
    """Per-position saliency maps of ``model`` for classes ``target``.

    Attributions of the logit of ``target`` with respect to the input are computed one batch of
    ``batch_size`` samples at a time on the model's device, then reduced to one value per
    position: per pixel (h, w) of an image batch (n, c, h, w), per time step (t,) of a sequence
    batch (n, c, t), per feature (d,) of a tabular batch (n, d). The default reduction,
    ``reduce="abs_sum"``, is the sum over channels of ``|attribution|``, the convention
    design.md uses for training masks ("smallest |gradient| summed over channels"); tabular
    attributions have no channel axis and become ``|attribution|``. Every geomxai metric that
    takes saliency expects these maps. The same reduction applies whatever the method.

    ``method`` is one of three things:

    - a **name** (the Captum class in brackets):

      - ``"gradient"``: the signed input gradient (``Saliency(abs=False)``, Simonyan et al.
        2014).
      - ``"abs_gradient"``: ``|gradient|`` per channel (``Saliency(abs=True)``). Under
        ``reduce="abs_sum"`` or ``"max_abs"`` it equals ``"gradient"``; they differ under
        ``"sum"``.
      - ``"input_x_gradient"``: ``x * gradient`` (``InputXGradient``, Shrikumar et al. 2016).
      - ``"smoothgrad"``: the mean signed gradient over ``n_samples`` noisy copies
        ``x + N(0, sigma^2)``, with ``sigma = noise_level * (max(x_i) - min(x_i))`` for each
        sample ``x_i`` (Smilkov et al. 2017) (``NoiseTunnel(Saliency)``). Captum takes one
        noise level per input tensor, so samples are rescaled by their range before the noise
        is added and the gradient is scaled back.
      - ``"integrated_gradients"``: ``(x - baseline)`` times the mean gradient along the
        straight path from ``baseline``, ``n_steps`` Gauss-Legendre points
        (``IntegratedGradients``, Sundararajan et al. 2017).

    - any **Captum** ``Attribution`` **instance** built on ``model``: ``IntegratedGradients
      (model)``, ``DeepLift(model)``, ``GuidedBackprop(model)``, ``Occlusion(model)``,
      ``NoiseTunnel(Saliency(model))``, ``LayerGradCam(model, model.layer4)``, ... Its
      ``attribute(x_batch, target=target_batch, **attribute_kwargs)`` is called per batch
      (``target`` is left out for neuron methods, which take none). A layer method's
      attributions (b, c', h', w') are upsampled to the input's positions with
      ``captum.attr.LayerAttribution.interpolate(attr, (h, w), interpolate_mode)``, as Captum
      users upsample Grad-CAM, then reduced over c'. An instance whose ``forward_func`` is
      another model is refused with a ValueError (a wrapper module that holds ``model`` is
      accepted; a plain function must call ``model``, which the first batch checks).
    - a **callable** ``method(model, x_batch, target_batch, **attribute_kwargs)`` returning
      attributions of ``x_batch``'s shape, or per-position maps (b, *positions) (then a
      single channel: ``"abs_sum"`` gives their absolute value). ``x_batch`` is a copy on the
      model's device in its dtype, without grad; grad mode is on during the call.

    Use :func:`method_name` to record which method was used.

    The model is left as it was: it runs in eval mode and every submodule gets its own
    train/eval flag back; saliency adds no hooks of its own (a plain-function
    ``forward_func`` gets a counting pre-hook, removed before return); gradients are taken
    with respect to a copy of the input only, so no parameter ``.grad`` is touched by the named
    methods and ``x`` is not modified. The random draws of every method but the deterministic
    named ones run under a generator state seeded with ``seed`` and forked from the global one,
    which is left as it was.

    Parameters
    ----------
    model : nn.Module
        Maps inputs (n, c, h, w), (n, c, t) or (n, d) to logits (n, k).
    x : Tensor (n, c, h, w), (n, c, t) or (n, d)
        Inputs, on any device and of any floating dtype: they are cast to the model's floating
        parameter dtype (float16, bfloat16 or float64 images into a float32 model would crash
        in its first conv). NaN or inf values are refused with a ValueError.
    target : int or Tensor (n,)
        Class whose logit is explained, per sample or one for all.
    method : str, captum.attr.Attribution or callable
        A name (``"gradient"``, ``"abs_gradient"``, ``"input_x_gradient"``, ``"smoothgrad"``,
        ``"integrated_gradients"``), a Captum instance or a callable, as above.
    reduce : {"abs_sum", "sum", "max_abs"}
        Channel reduction: sum of ``|a|``, signed sum, or max of ``|a|``.
    batch_size : int or None
        Samples per call to the method (None: all at once). SmoothGrad and Integrated
        Gradients by name evaluate the model on at most this many (noisy or interpolated)
        samples per forward; a Captum instance takes its own ``internal_batch_size`` or
        ``nt_samples_batch_size`` through ``attribute_kwargs``.
    n_samples, noise_level : int, float
        SmoothGrad's number of noisy copies and noise level (fraction of each sample's range).
        Named methods only.
    n_steps : int
        Integrated Gradients' number of integration points. Named methods only.
    baseline : float or Tensor broadcastable to one sample
        Integrated Gradients' reference input. Named methods only.
    seed : int or None
        Seed of the random draws (SmoothGrad's noise, a Captum instance's or a callable's);
        None: the global generator, not reproducible.
    attribute_kwargs : mapping or None
        Keyword arguments of a Captum instance's ``attribute`` or of a callable (e.g.
        ``{"sliding_window_shapes": (1, 3, 3)}`` for ``Occlusion``, ``{"baselines": b}``). A
        tensor with one entry per sample (first dim ``n``, as many dims as ``x``) is sliced
        with the batches; other tensors are moved to the model's device. ``inputs``,
        ``target`` and ``return_convergence_delta`` are refused (saliency passes the first two
        and needs the attributions alone).
    interpolate_mode : str
        How a layer method's maps are upsampled (``torch.nn.functional.interpolate`` modes:
        ``"nearest"``, Captum's default, ``"bilinear"``, ... for images; ``"nearest"``,
        ``"linear"``, ... for sequences).

    Returns
    -------
    Tensor (n, h, w), (n, t) or (n, d)
        Per-position saliency on ``x``'s device, detached, in the dtype the attributions were
        computed in: the model's floating parameter dtype for the named methods (``x``'s own
        for a model without floating parameters), so float32 for a float32 model whatever the
        dtype of ``x``.

    Raises
    ------
    ValueError
        An unknown method name, a Captum instance bound to another model (or with a layer
        outside it, or a layer method on tabular inputs), attributions of a shape that is
        neither ``x``'s nor per position, an input that is not 2-, 3- or 4-D.
    TypeError
        A ``method`` that is none of the three (a Captum class instead of an instance, another
        class, a module); :func:`check_saliency_method` is the check.

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

    Tabular rows, and a Captum instance:

    >>> from captum.attr import InputXGradient
    >>> saliency(model, torch.full((1, 4), 2.0), 0, method=InputXGradient(model))
    tensor([[2., 4., 0., 6.]])
    """
    kind = check_saliency_method(method)
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}; got reduce={reduce!r}")
    x = as_batch(x)
    layout = layout_of(x)
    n = x.shape[0]
    targets = as_labels(target, n, name="target")
    batch_size = check_batch_size(batch_size, n)
    kwargs = _check_kwargs(attribute_kwargs, kind)
    seed = check_seed(seed)
    if kind == "name" and method == "smoothgrad":
        check_count(n_samples, "n_samples")
        check_number(noise_level, "noise_level")
    if kind == "name" and method == "integrated_gradients":
        check_count(n_steps, "n_steps")
        _check_baseline(baseline)
    watch = False
    if kind == "captum":
        watch = _check_captum(method, model, layout)
        if _is_layer(method):
            _check_mode(interpolate_mode, layout)
    seeded = seed if kind != "name" or method == "smoothgrad" else None

    device = module_device(model, fallback=x.device)
    dtype = compute_dtype(model, x)
    if kind == "name" and method == "integrated_gradients":
        _check_baseline_reach(baseline, x, dtype)
    if kind == "name":
        # The class range of a named method's target, from one sample's logits (torch's
        # gather would say "index out of bounds" with no argument named).
        with evaluating(model), torch.no_grad():
            n_classes = model(x[:1].detach().to(device, dtype)).shape[-1]
        check_targets(targets, n_classes)
    out = []
    with (
        evaluating(model),
        _seeded(seeded, device),
        _counting_calls(model, watch) as calls,
    ):
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            xb = x[start:stop].detach().to(device, dtype).clone()
            tb = targets[start:stop].to(device)
            kw = _batch_kwargs(kwargs, n, x.ndim, start, stop, device, dtype)
            with warnings.catch_warnings():
                # Captum announces that it sets requires_grad on the (copied) input; expected.
                warnings.filterwarnings("ignore", message="Input Tensor .* did not already")
                if kind == "name":
                    attr = _attribute(
                        model, xb, tb, method, batch_size, n_samples, noise_level, n_steps, baseline
                    )
                elif kind == "captum":
                    if _takes_target(method):
                        kw["target"] = tb
                    attr = method.attribute(xb, **kw)
                else:
                    with torch.enable_grad():
                        attr = method(model, xb, tb, **kw)
            if watch and calls[0] == 0:
                raise ValueError(
                    f"method {method_name(method)}'s forward_func never called the model passed "
                    "to saliency; build the method on that model"
                )
            out.append(_as_maps(attr, xb, layout, reduce, method, interpolate_mode))
    return torch.cat(out).to(device=x.device)


def _check_baseline(baseline) -> None:
    """Integrated Gradients' baseline: a finite number or a finite floating tensor (a NaN or
    inf baseline gives all-NaN or infinite maps)."""
    if isinstance(baseline, torch.Tensor):
        if not baseline.is_floating_point() or not bool(torch.isfinite(baseline).all()):
            raise ValueError(
                "baseline must be a finite number or a tensor of finite floats; got a "
                f"{baseline.dtype} tensor that is not"
            )
        return
    try:
        ok = not isinstance(baseline, bool) and math.isfinite(float(baseline))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"baseline must be a finite number or tensor; got baseline={baseline!r}")


def _check_baseline_reach(baseline, x: torch.Tensor, dtype: torch.dtype) -> None:
    """A finite baseline whose difference to the inputs overflows the dtype the model computes
    in (``baseline=1e308`` in float32): the path's points and ``x - baseline`` are then inf and
    the maps non-finite. Checked once, before any batch, from the two largest magnitudes
    (|x - b| <= |x| + |b|): one scalar read, never a copy of the inputs."""
    with torch.no_grad():
        if isinstance(baseline, torch.Tensor):
            far = float(baseline.detach().abs().amax().double())
        else:
            far = abs(float(baseline))
        reach = float(x.detach().abs().amax().double()) + far
    if not reach <= torch.finfo(dtype).max:
        if isinstance(baseline, torch.Tensor):
            shown = f"a baseline tensor of magnitude up to {far:.3g}"
        else:
            shown = f"baseline={baseline!r}"
        name = str(dtype).removeprefix("torch.")
        raise ValueError(
            f"baseline is too far from the inputs: x - baseline overflows {name} (what the "
            f"model computes in), so every map would be inf or NaN; use a baseline on the "
            f"inputs' scale; got {shown}"
        )


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
    # noise_level * range on x, and d/dz = range * d/dx. A constant sample gets a tiny range
    # (float eps), i.e. no noise, instead of a division by zero.
    flat = xb.flatten(1)
    scale = (flat.amax(dim=1) - flat.amin(dim=1)).clamp_min(torch.finfo(xb.dtype).eps)
    scale = scale.view(-1, *([1] * (xb.ndim - 1)))

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
