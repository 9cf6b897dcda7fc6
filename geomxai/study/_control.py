"""The reparametrisation control: a function-preserving change of a feature layer's basis.

Input-gradient saliency is a property of the function ``x -> logits``; representation geometry
is a property of one particular parametrisation of it. Whitening a feature layer with an
invertible linear map and folding the inverse into the linear head changes the second and
leaves the first exactly as it was, so a geometry metric that this change moves cannot explain
saliency directly: whatever link it has with saliency quality runs through something else
(training, the architecture, the optimiser), not through the function that saliency reads.
"""

from __future__ import annotations

import copy
import difflib
import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
import xarray as xr
from torch import nn

from geomxai.models import FEATURE_LAYER, FeatureModel

CONTROL_METRICS = (
    "effective_rank",
    "participation_ratio",
    "mean_abs_corr",
    "corr_offdiag_fro",
    "spectrum_alpha",
    "spectrum_r2",
    "entanglement",
    "accuracy",
)
"""Variables of :func:`reparametrization_control` with a ``model`` dim, in ``metric`` order.
``accuracy`` is a function of the logits and so a positive control: it must come out invariant."""

INVARIANCE_RTOL = 1e-3
"""Relative change below which a metric counts as invariant under the control.

The reparametrisation is exact in exact arithmetic; what remains is float32 rounding of the
forward pass (relative 1e-7 to 1e-5 on the logits) and float64 rounding of the metrics. 1e-3 is
two orders above that noise and far below the changes whitening makes to a metric that depends
on the basis (it takes mean |corr| to about 0 and the effective rank to about the number of
live directions), so the verdict does not hinge on the tolerance."""

FUNCTION_RTOL = 1e-3
"""Largest relative logit change accepted as "the function is unchanged"; above it the layer's
output reaches the logits by some path other than the head, and the control refuses."""

_MODELS = ("original", "reparametrized")


class _Whitened(nn.Module):
    """``module`` followed by the fixed affine map ``h -> W (h - mu)``.

    The map is applied in float64 and the result cast back to the module's output dtype, so the
    only rounding added is that of storing ``W (h - mu)`` in that dtype.
    """

    def __init__(self, module: nn.Module, matrix: torch.Tensor, mean: torch.Tensor):
        super().__init__()
        self.module = module
        self.register_buffer("matrix", matrix)
        self.register_buffer("mean", mean)

    def forward(self, *args, **kwargs):
        h = self.module(*args, **kwargs)
        z = (h.to(torch.float64) - self.mean) @ self.matrix.T
        return z.to(h.dtype)


# ---- validation -------------------------------------------------------------------------------


def _as_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.ndim < 2 or not images.is_floating_point():
        raise ValueError(
            "images must be a floating-point batch (n, ...) with n >= 2 samples; "
            f"got shape {tuple(images.shape)} and dtype {images.dtype}"
        )
    if images.shape[0] < 2:
        raise ValueError(
            f"images must hold at least 2 samples (a covariance is estimated); got {images.shape[0]}"
        )
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or infinite values; expected finite inputs")
    return images


def _as_labels(labels, n: int) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(np.asarray(labels))
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},); got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer class indices; got dtype {labels.dtype}")
    return labels.long()


def _check_options(eps, batch_size, saliency_method) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < math.inf):
        raise ValueError(f"eps must be a positive finite float; got eps={eps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got batch_size={batch_size!r}")
    try:
        from captum.attr import Attribution
    except ImportError:  # pragma: no cover - captum is a dependency
        Attribution = ()
    if isinstance(saliency_method, Attribution):
        raise TypeError(
            "saliency_method must be a method name or a callable (model, x, target) -> "
            "attributions, not a Captum Attribution instance: an instance is bound to one model, "
            "and the control runs the method on two (wrap it: lambda m, x, t: "
            "YourMethod(m).attribute(x, target=t))"
        )
    if not (isinstance(saliency_method, str) or callable(saliency_method)):
        raise TypeError(
            "saliency_method must be a method name or a callable; "
            f"got {type(saliency_method).__name__}"
        )


def _resolve(modules: dict[str, nn.Module], name, what: str, model: nn.Module) -> nn.Module:
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"{what} must be the dotted name of a submodule (see "
            f"geomxai.collect.available_layers(model)); got {what}={name!r}"
        )
    if name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, [k for k in modules if k], n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown {what} {name!r} for {type(model).__name__}; {what} must be a dotted name of "
        f"model.named_modules(){hint}"
    )


def _defaults(model: nn.Module, layer, head) -> tuple[str, str]:
    if isinstance(model, FeatureModel):
        return layer if layer is not None else FEATURE_LAYER, head if head is not None else "head"
    if layer is None or head is None:
        raise ValueError(
            f"layer and head must both be named for a {type(model).__name__} (only a geomxai "
            "FeatureModel has defaults): layer='<dotted name of the module whose (n, d) output is "
            "the feature layer>', head='<dotted name of the nn.Linear that consumes it>'; "
            "geomxai.collect.available_layers(model) lists the names"
        )
    return layer, head


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


def _device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


# ---- the map ----------------------------------------------------------------------------------


def _fold_path_whitening(work: nn.Module, layer: str, head: str) -> str:
    """Fold a FeatureModel's eval-time GroupWhitening into its head; what was done, in words."""
    if not (isinstance(work, FeatureModel) and layer == FEATURE_LAYER and head == "head"):
        return "none"
    if not work.whiten_in_path or isinstance(work.whiten, nn.Identity):
        return "none"
    if not isinstance(work.head, nn.Linear):
        return "none"  # refused, with its reason, by the wiring check
    from geomxai.whitening import GroupWhitening, fold_into_linear

    if not isinstance(work.whiten, GroupWhitening):
        raise ValueError(
            f"model.whiten is a {type(work.whiten).__name__} in the path from body to head; only "
            "a GroupWhitening (whose eval-time map is folded into the head) or nn.Identity can "
            "sit there; pass layer='whiten', head='head' to reparametrise after it"
        )
    work.head = fold_into_linear(work.whiten, work.head)
    work.whiten = nn.Identity()
    return "GroupWhitening (eval mode) folded into head with geomxai.whitening.fold_into_linear"


@torch.no_grad()
def _check_wiring(work: nn.Module, layer: str, head: str, xb: torch.Tensor) -> int:
    """The width ``d`` of ``layer``; raises unless ``head`` reads its (n, d) output unchanged."""
    modules = dict(work.named_modules())
    layer_mod, head_mod = modules[layer], modules[head]
    outs: list = []
    ins: list = []

    def on_layer(_m, _args, output):
        outs.append(output.detach().clone() if isinstance(output, torch.Tensor) else output)

    def on_head(_m, args):
        ins.append(args[0].detach().clone() if args and isinstance(args[0], torch.Tensor) else None)

    handles = [
        layer_mod.register_forward_hook(on_layer),
        head_mod.register_forward_pre_hook(on_head),
    ]
    try:
        work(xb)
    finally:
        for h in handles:
            h.remove()
    if len(outs) != 1 or len(ins) != 1:
        raise ValueError(
            f"layer {layer!r} ran {len(outs)} and head {head!r} ran {len(ins)} time(s) in one "
            "forward pass; the control needs a layer and a head that each run exactly once"
        )
    out = outs[0]
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"layer {layer!r} must output features of shape (n, d); got {shape}. Name the "
            "module that flattens or pools it (e.g. the nn.Flatten or pooling layer just "
            "before the head) as layer"
        )
    # Checked after the forward pass, not before: a head that is no nn.Linear still runs (and
    # any error it raises surfaces as itself), and the message can then say what it reads.
    if not isinstance(head_mod, nn.Linear):
        raise TypeError(
            f"head {head!r} must be an nn.Linear (the map whose weight absorbs the inverse "
            f"whitening); got {type(head_mod).__name__}. Name the linear classifier that reads "
            "the layer's output as head"
        )
    d = out.shape[1]
    if head_mod.in_features != d:
        raise ValueError(
            f"head {head!r} must be an nn.Linear taking the layer's width; got in_features="
            f"{head_mod.in_features} for layer {layer!r} of width {d}. Name the nn.Linear that "
            "reads the layer's output as head"
        )
    if ins[0] is None or ins[0].shape != out.shape or not torch.equal(ins[0], out):
        raise ValueError(
            f"head {head!r} must consume the output of layer {layer!r} unchanged; something "
            "between them (an activation, a normalisation) transforms it. Name as layer the "
            "module whose output enters the head (or as head the nn.Linear right after layer)"
        )
    return d


def _zca(h: np.ndarray, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """``W = (Sigma + eps I)^(-1/2)``, its inverse and the mean, float64, from features (n, d)."""
    x = torch.from_numpy(h)
    mean = x.mean(dim=0)
    c = x - mean
    sigma = c.T @ c / (x.shape[0] - 1)
    sigma = (sigma + sigma.T) / 2
    # eigh in float64: W's small eigenvalues set its condition number, and float32 would round
    # them; clipping at 0 removes the tiny negatives rounding gives a rank-deficient Sigma, so
    # l + eps stays >= eps > 0 and W stays invertible even for dead units.
    eig, v = torch.linalg.eigh(sigma)
    eig = eig.clamp_min(0.0)
    root = (eig + eps).sqrt()
    matrix = (v / root) @ v.T
    inverse = (v * root) @ v.T
    info = {
        "whitening_condition_number": float(root.max() / root.min()),
        "covariance_eigenvalue_max": float(eig.max()),
        "covariance_eigenvalue_min": float(eig.min()),
    }
    return matrix, inverse, mean, info


@torch.no_grad()
def _folded_head(head: nn.Linear, inverse: torch.Tensor, mean: torch.Tensor) -> nn.Linear:
    """``head(h)`` with ``h = W^{-1} z + mu``: weight ``A W^{-1}``, bias ``A mu + b``."""
    dev, dtype = head.weight.device, head.weight.dtype
    a = head.weight.to(torch.float64)
    b = (
        head.bias.to(torch.float64)
        if head.bias is not None
        else torch.zeros(a.shape[0], dtype=torch.float64)
    )
    inverse, mean, b = inverse.to(dev), mean.to(dev), b.to(dev)
    out = nn.Linear(head.in_features, head.out_features, bias=True, device=dev, dtype=dtype)
    out.weight.copy_(a @ inverse)
    out.bias.copy_(a @ mean + b)
    return out


# ---- measurements -----------------------------------------------------------------------------


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = _device(model)
    out = [
        model(x[s : s + batch_size].to(dev)).detach().cpu() for s in range(0, len(x), batch_size)
    ]
    return torch.cat(out).to(torch.float64)


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max_i ||a_i - b_i||_inf / ||a_i||_inf`` over samples ``i`` (0/0 counts as 0)."""
    a = a.detach().cpu().to(torch.float64).flatten(1)
    b = b.detach().cpu().to(torch.float64).flatten(1)
    diff = (a - b).abs().amax(dim=1)
    scale = a.abs().amax(dim=1)
    rel = torch.where(diff == 0, torch.zeros_like(diff), diff / scale)
    return float(rel.max())


def _geometry(h) -> tuple[dict[str, float], dict[str, str]]:
    from geomxai.geometry import correlation_summary, effective_rank, participation_ratio

    out = {
        "effective_rank": float(effective_rank(h)),
        "participation_ratio": float(participation_ratio(h)),
    }
    reasons: dict[str, str] = {}
    keys = {
        "mean_abs_corr": "mean_abs_offdiag",
        "corr_offdiag_fro": "offdiag_fro",
        "spectrum_alpha": "alpha",
        "spectrum_r2": "alpha_r2",
    }
    try:
        summary = correlation_summary(h)
        out.update({k: float(summary[v]) for k, v in keys.items()})
        out["n_dead"] = float(summary["n_dead"])
    except ValueError as err:  # fewer than 2 live units
        out.update(dict.fromkeys(keys, math.nan))
        out["n_dead"] = math.nan
        reasons.update(dict.fromkeys(keys, str(err)))
    return out, reasons


def _measure(model, x, y, layer, batch_size, method, logits):
    from geomxai.attribution import gradient_entanglement, saliency
    from geomxai.collect import collect_features

    feats = collect_features(model, x, [layer], batch_size=batch_size)[layer]
    values, reasons = _geometry(feats)
    values["entanglement"] = float(
        gradient_entanglement(model, x, y, layer=layer, batch_size=batch_size)
    )
    values["accuracy"] = float((logits.argmax(dim=1) == y).double().mean())
    sal = saliency(model, x, y, method=method, batch_size=batch_size)
    return values, reasons, sal, feats


def _relative_change(before: float, after: float) -> float:
    if math.isnan(before) or math.isnan(after):
        return math.nan
    scale = max(abs(before), abs(after))
    return 0.0 if scale == 0 else abs(after - before) / scale


def _copies(model: nn.Module, layer: str, head: str) -> tuple[nn.Module, nn.Module]:
    """Two eval-mode deep copies of ``model``: the one measured as it is, and the one to
    reparametrise; ``layer`` and ``head`` checked to be separate submodules."""
    base = copy.deepcopy(model).eval()
    modules = dict(base.named_modules())
    _resolve(modules, layer, "layer", base)
    _resolve(modules, head, "head", base)
    if head == layer or head.startswith(layer + ".") or layer.startswith(head + "."):
        raise ValueError(
            f"layer {layer!r} and head {head!r} must be separate modules, neither inside the "
            "other; the head reads the layer's output"
        )
    return base, copy.deepcopy(base)


def _reparametrize(work: nn.Module, layer: str, head: str, feats, eps: float) -> dict[str, float]:
    """Insert the ZCA map of ``feats`` after ``layer`` and fold its inverse into ``head``, in
    place; the map's condition number and eigenvalue range."""
    matrix, inverse, mean, info = _zca(np.asarray(feats.values, dtype=np.float64), float(eps))
    dev = _device(work)
    modules = dict(work.named_modules())
    _set_submodule(work, head, _folded_head(modules[head], inverse, mean))
    _set_submodule(work, layer, _Whitened(modules[layer], matrix.to(dev), mean.to(dev)))
    work.eval()
    return info


def _function_change(before: torch.Tensor, after: torch.Tensor, layer: str, head: str) -> float:
    """The largest relative logit change; raises above ``FUNCTION_RTOL`` (the function moved)."""
    logit_diff = _max_rel_diff(before, after)
    if not logit_diff <= FUNCTION_RTOL:
        raise ValueError(
            f"the reparametrisation changed the logits by {logit_diff:.3g} (relative), so it "
            f"does not preserve the function: the output of layer {layer!r} reaches the logits "
            f"by another path than head {head!r} (a skip connection, a second consumer). Choose "
            "a layer whose output only the head reads"
        )
    return logit_diff


def _control_dataset(
    before: dict[str, float], after: dict[str, float], logit_diff: float, sal_diff: float
) -> xr.Dataset:
    """The metrics of both models, their relative changes and verdicts, and the two checks."""
    ds = xr.Dataset(coords={"model": list(_MODELS), "metric": list(CONTROL_METRICS)})
    for k in CONTROL_METRICS:
        ds[k] = xr.DataArray([before[k], after[k]], dims="model")
    ds["n_dead"] = xr.DataArray([before["n_dead"], after["n_dead"]], dims="model")
    ds["logit_max_rel_diff"] = logit_diff
    ds["saliency_max_rel_diff"] = sal_diff
    change = [_relative_change(before[k], after[k]) for k in CONTROL_METRICS]
    ds["relative_change"] = xr.DataArray(change, dims="metric")
    ds["invariant"] = xr.DataArray(
        [not math.isnan(c) and c < INVARIANCE_RTOL for c in change], dims="metric"
    )
    ds["relative_change"].attrs["long_name"] = "|after - before| / max(|before|, |after|)"
    ds["invariant"].attrs["long_name"] = f"relative change below {INVARIANCE_RTOL:g}"
    ds["logit_max_rel_diff"].attrs["long_name"] = (
        "max over samples of ||dlogits||_inf/||logits||_inf"
    )
    ds["saliency_max_rel_diff"].attrs["long_name"] = "max over samples of ||dS||_inf / ||S||_inf"
    return ds


_INTERPRETATION = (
    "The reparametrised network computes the same function as the original "
    "(logit_max_rel_diff) and so has the same input-gradient saliency "
    "(saliency_max_rel_diff), but its representation at the layer is whitened. A "
    "geometry metric that is not invariant under this function-preserving change "
    "can only be an indirect explanation of saliency quality: saliency cannot "
    "depend on it, so any link between them runs through something else (training, "
    "architecture). An invariant metric is a property of the function and can be a "
    "direct one."
)


def _control_attrs(
    ds: xr.Dataset, layer, head, eps, n: int, d: int, saliency_method, folded: str, info: dict
) -> dict:
    """What the control did (names, sizes, the map and its conditioning) and how to read it."""
    change = ds["relative_change"].values
    return {
        "analysis": "reparametrization_control",
        "layer": layer,
        "head": head,
        "eps": float(eps),
        "n_samples": int(n),
        "n_units": int(d),
        "saliency_method": _method_name(saliency_method),
        "folded_whitening": folded,
        "map": "T h = W (h - mu), W = (Sigma + eps I)^(-1/2) (ZCA) after layer; "
        "head (A, b) -> (A W^-1, A mu + b)",
        "invariance_rtol": INVARIANCE_RTOL,
        "undetermined": ",".join(
            k for k, c in zip(CONTROL_METRICS, change, strict=True) if math.isnan(c)
        ),
        **info,
        "interpretation": _INTERPRETATION,
    }


def _method_name(saliency_method) -> str:
    """The name a saliency method is recorded under: itself, or a callable's ``__name__``."""
    if isinstance(saliency_method, str):
        return str(saliency_method)
    return str(getattr(saliency_method, "__name__", type(saliency_method).__name__))


def reparametrization_control(
    model: nn.Module,
    images,
    labels,
    *,
    layer: str | None = None,
    head: str | None = None,
    eps: float = 1e-5,
    batch_size: int = 256,
    saliency_method: str | Callable = "abs_gradient",
) -> xr.Dataset:
    """Geometry before and after a function-preserving whitening of a feature layer.

    An invertible linear map ``T`` is inserted right after ``layer`` and its inverse folded into
    ``head`` (an ``nn.Linear`` that reads the layer's output), so the network computes the same
    function and every input-gradient saliency map stays the same, while the representation at
    ``layer`` is replaced by ``T h``. ``T`` is the ZCA whitening of the layer's output on
    ``images``: ``T h = W (h - mu)`` with ``W = (Sigma + eps I)^(-1/2)`` (one group over all
    units; ``Sigma`` the unbiased covariance), computed by ``torch.linalg.eigh`` in float64.
    ``eps`` keeps ``W`` invertible when ``Sigma`` is rank deficient (dead or collinear units);
    those directions stay (nearly) constant after the map, so the whitened layer has identity
    covariance on the directions the data spans and is not full rank where the original was
    not. The head becomes ``A W^{-1}`` with bias ``A mu + b``, in float64 and cast to the head's
    dtype; the map itself runs in float64 and hands on its output in the layer's dtype.

    Both networks (the original, the reparametrised) are then measured at ``layer`` on
    ``images``, with geomxai's own functions: ``effective_rank``, ``participation_ratio``,
    ``mean_abs_corr`` and ``corr_offdiag_fro`` (:func:`~geomxai.geometry.correlation_summary`),
    the correlation spectrum's decay ``spectrum_alpha`` with its ``spectrum_r2``, gradient
    ``entanglement`` (:func:`~geomxai.attribution.gradient_entanglement`), and ``accuracy`` on
    ``labels``. The logits and the saliency maps (:func:`~geomxai.attribution.saliency` for
    ``labels`` with ``saliency_method``) of the two are compared.

    Defaults: for a geomxai :class:`~geomxai.models.FeatureModel`, ``layer="body"`` and
    ``head="head"``; if a :class:`~geomxai.whitening.GroupWhitening` sits in the path
    (``model.whiten``, ``whiten_in_path=True``), its eval-time affine map is first folded into
    the head (:func:`~geomxai.whitening.fold_into_linear`), so the head reads ``body``'s output
    directly; the "original" model is measured as it is, whitening layer included. Any other
    model must name both ``layer`` and ``head`` (dotted ``named_modules()`` names).

    The user's model is not modified: everything runs on deep copies in eval mode, so no
    parameter, buffer, train/eval flag or hook of ``model`` changes (hooks the user had
    registered on ``model`` are copied with it, and so also run on the copies). Memory: two
    copies of the model.

    Parameters
    ----------
    model : nn.Module
        A classifier, on any device.
    images : Tensor (n, ...)
        Inputs the model takes, n >= 2; the whitening is estimated on them and every metric is
        measured on them. Fewer samples than twice the layer's width give a ``RuntimeWarning``
        (the covariance, and so the whitening, is then poorly estimated).
    labels : Tensor (n,)
        Integer classes: the saliency and entanglement targets and the accuracy labels.
    layer, head : str, optional
        Dotted names; ``layer``'s output must be (n, d) and ``head`` an ``nn.Linear`` with
        ``in_features == d`` that reads that output unchanged and runs once per forward pass.
    eps : float
        Added to the covariance eigenvalues.
    batch_size : int
        Samples per forward/backward pass.
    saliency_method : str or callable
        Passed to :func:`~geomxai.attribution.saliency` as ``method``. A Captum ``Attribution``
        instance is refused (it is bound to one model); wrap it in a callable.

    Returns
    -------
    xr.Dataset
        - one variable per name in :data:`CONTROL_METRICS`, dim ``model`` =
          ``["original", "reparametrized"]``;
        - ``n_dead`` (``model``): dead units at the layer (not a metric, context for them);
        - ``logit_max_rel_diff``, ``saliency_max_rel_diff`` (scalars): the largest per-sample
          ``||a_i - b_i||_inf / ||a_i||_inf`` of the logits and of the saliency maps, original
          ``a`` against reparametrised ``b``;
        - ``relative_change`` (``metric``): ``|after - before| / max(|before|, |after|)`` (0
          when both are 0, NaN when either is NaN);
        - ``invariant`` (``metric``, bool): ``relative_change < INVARIANCE_RTOL`` (1e-3); False
          where it is NaN, and those metrics are listed in ``attrs["undetermined"]``.

        ``attrs``: ``layer``, ``head``, ``eps``, ``n_samples``, ``n_units``,
        ``saliency_method``, ``folded_whitening``, ``invariance_rtol``, the condition number
        and eigenvalue range of the map, ``interpretation``, and ``nan_reason_<metric>`` for
        metrics that could not be computed.

    Raises
    ------
    ValueError
        Unknown names, a layer whose output is not (n, d), a head that does not read it, a
        reparametrisation that changes the logits by more than ``FUNCTION_RTOL`` (the layer's
        output reaches the logits by another path than the head), bad arguments.
    TypeError
        ``head`` is not an ``nn.Linear``; a Captum instance as ``saliency_method``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.Tanh(), nn.Linear(6, 3))
    >>> x, y = torch.randn(64, 1, 4, 4), torch.randint(0, 3, (64,))
    >>> ds = reparametrization_control(net, x, y, layer="2", head="3")
    >>> bool(ds.logit_max_rel_diff < 1e-5), bool(ds.saliency_max_rel_diff < 1e-4)
    (True, True)
    >>> round(float(ds.mean_abs_corr.sel(model="reparametrized")), 3)
    0.0
    >>> bool(ds.invariant.sel(metric="accuracy")), bool(ds.invariant.sel(metric="mean_abs_corr"))
    (True, False)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    x = _as_images(images)
    n = x.shape[0]
    y = _as_labels(labels, n)
    _check_options(eps, batch_size, saliency_method)
    layer, head = _defaults(model, layer, head)
    base, work = _copies(model, layer, head)
    folded = _fold_path_whitening(work, layer, head)
    d = _check_wiring(work, layer, head, x[: min(n, batch_size)].to(_device(work)))
    if n < 2 * d:
        warnings.warn(
            f"the whitening of layer {layer!r} ({d} units) is estimated from {n} samples; with "
            "fewer than twice the units the covariance, and so the map and every spectrum, are "
            "poorly estimated",
            RuntimeWarning,
            stacklevel=2,
        )

    logits_orig = _logits(base, x, batch_size)
    values_orig, reasons_orig, sal_orig, feats = _measure(
        base, x, y, layer, batch_size, saliency_method, logits_orig
    )
    info = _reparametrize(work, layer, head, feats, eps)
    logits_rep = _logits(work, x, batch_size)
    logit_diff = _function_change(logits_orig, logits_rep, layer, head)
    values_rep, reasons_rep, sal_rep, _ = _measure(
        work, x, y, layer, batch_size, saliency_method, logits_rep
    )
    ds = _control_dataset(values_orig, values_rep, logit_diff, _max_rel_diff(sal_orig, sal_rep))
    ds.attrs.update(_control_attrs(ds, layer, head, eps, n, d, saliency_method, folded, info))
    for k, why in {**reasons_orig, **reasons_rep}.items():
        ds.attrs[f"nan_reason_{k}"] = why
    return ds
