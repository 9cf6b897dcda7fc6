"""The reparametrisation control: a function-preserving change of a feature layer's basis.

Input-gradient saliency is a property of the function ``x -> logits``; representation geometry
is a property of one particular parametrisation of it. Whitening a feature layer with an
invertible linear map and folding the inverse into the linear head changes the second and
leaves the first exactly as it was, so a geometry metric that this change moves cannot explain
saliency directly: whatever link it has with saliency quality runs through something else
(training, the architecture, the optimiser), not through the function that saliency reads.

The control is informative only if a geometry metric can pass it: the function-invariant
geometry (:func:`geomxai.geometry.head_geometry`, :func:`~geomxai.geometry.gradient_metric_geometry`)
is measured beside the layer's own, and each metric is flagged invariant or moved.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np
import torch
import xarray as xr
from torch import nn

from geomxai._checks import Interval, check
from geomxai.models import FEATURE_LAYER, FeatureModel

CONTROL_METRICS = (
    "effective_rank",
    "participation_ratio",
    "mean_abs_corr",
    "corr_offdiag_fro",
    "spectrum_alpha",
    "spectrum_r2",
    "entanglement",
    "entanglement_all_units",
    "head_effective_rank",
    "head_participation_ratio",
    "head_mean_abs_corr",
    "grad_metric_effective_rank",
    "grad_metric_participation_ratio",
    "accuracy",
)
"""Variables of :func:`reparametrization_control` with a ``model`` dim, in ``metric`` order.
``accuracy`` is a function of the logits and so a positive control: it must come out invariant."""

INVARIANT_BY_CONSTRUCTION = (
    "head_effective_rank",
    "head_participation_ratio",
    "head_mean_abs_corr",
    "grad_metric_effective_rank",
    "grad_metric_participation_ratio",
    "accuracy",
)
"""The metrics no invertible map folded into the head can move (docs/metrics.md,
"Function-invariant geometry"); the control checks that they pass."""

INVARIANCE_RTOL = 1e-6
"""Relative change below which a metric counts as invariant under the control.

Both networks run in float64, where the fold is exact to about 1e-12 relative (rounding times
the map's condition number), and the metrics are float64 too; 1e-6 is far above that noise and
far below the changes whitening makes to a metric that depends on the basis (it takes mean
|corr| to about 0 and the effective rank to about the number of live directions)."""

FUNCTION_RTOL = 1e-8
"""Largest change accepted as "the function is unchanged", relative to the thing's own scale:
the largest logit change over the logits' spread across the probe (their root mean square
deviation from each output's probe mean), and the largest per-sample change of a saliency map
over that map's own norm. Both networks run in float64, so rounding stays near 1e-12; a second
path from the layer to the logits does not (a skip path with weights of 1e-5 moves the logits
by about 1e-6 of their spread), and the control refuses it."""

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


def _as_inputs(images) -> torch.Tensor:
    """The attribution package's batch check (images, sequences or tabular rows), n >= 2."""
    from geomxai.attribution import as_batch

    x = as_batch(images, name="images")
    if x.shape[0] < 2:
        raise ValueError(
            f"images must hold at least 2 samples (a covariance is estimated); got {x.shape[0]}"
        )
    return x


def _as_labels(labels, n: int) -> torch.Tensor:
    from geomxai.attribution import as_labels

    return as_labels(labels, n, name="labels")


def _check_options(eps, batch_size, saliency_method) -> None:
    check(eps, "eps", Interval(Real, 0, None, closed="neither"))
    check(batch_size, "batch_size", Interval(Integral, 1, None))
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


def _resolve(model: nn.Module, name, what: str) -> str:
    """``name`` as the one dotted module name it selects, by geomxai.collect's resolver."""
    from geomxai.collect import UnknownLayerError, resolve_layers

    if not isinstance(name, str) or not name:
        raise ValueError(
            f"{what} must be the dotted name of a submodule (see "
            f"geomxai.collect.available_layers(model)); got {what}={name!r}"
        )
    try:
        names = resolve_layers(model, name)
    except UnknownLayerError as err:
        raise ValueError(f"unknown {what} {name!r}: {err}") from None
    if len(names) != 1:
        raise ValueError(
            f"{what} must name one module; {name!r} selects {len(names)}: {', '.join(names[:5])}"
        )
    return names[0]


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
        model(x[s : s + batch_size].to(dev, torch.float64)).detach().cpu()
        for s in range(0, len(x), batch_size)
    ]
    return torch.cat(out).to(torch.float64)


def _logit_change(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max_ic |a_ic - b_ic|`` over the logits' spread: the root mean square deviation of
    ``a`` from each output's mean over the probe (its largest magnitude if it has no spread;
    0/0 counts as 0)."""
    a, b = a.detach().cpu().to(torch.float64), b.detach().cpu().to(torch.float64)
    diff = float((a - b).abs().max())
    spread = float((a - a.mean(dim=0)).pow(2).mean().sqrt())
    scale = spread if spread > 0 else float(a.abs().max())
    if diff == 0:
        return 0.0
    return diff / scale if scale > 0 else math.inf


def _saliency_change(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max_i ||a_i - b_i||_2 / ||a_i||_2`` over samples (0/0 counts as 0, x/0 as inf)."""
    a = a.detach().cpu().to(torch.float64).flatten(1)
    b = b.detach().cpu().to(torch.float64).flatten(1)
    diff = (a - b).norm(dim=1)
    norm = a.norm(dim=1)
    rel = torch.where(
        diff == 0,
        torch.zeros_like(diff),
        torch.where(norm > 0, diff / norm.clamp_min(1e-300), torch.full_like(diff, math.inf)),
    )
    return float(rel.max())


def _geometry(h) -> tuple[dict[str, float], dict[str, str]]:
    from geomxai._finite import live_units
    from geomxai.geometry import correlation_summary, effective_rank, participation_ratio

    live = live_units(np.var(h, axis=0))
    out = {
        "effective_rank": float(effective_rank(h)),
        "participation_ratio": float(participation_ratio(h)),
        "n_live_units": float(live.sum()),
        "n_dead_units": float(live.size - live.sum()),
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
    except ValueError as err:  # fewer than 2 live units
        out.update(dict.fromkeys(keys, math.nan))
        reasons.update(dict.fromkeys(keys, str(err)))
    return out, reasons


def _measure(model, x, y, layer, batch_size, method, logits):
    """Every metric of :data:`CONTROL_METRICS` at ``layer``, the saliency maps, the features."""
    from geomxai.attribution import entanglement_of, layer_gradients, saliency
    from geomxai.geometry import gradient_metric_geometry, head_geometry

    grads = layer_gradients(model, x, y, layer=layer, outputs="all", batch_size=batch_size)
    values, reasons = _geometry(grads.features)
    values["entanglement"] = entanglement_of(grads.features, grads.gradients)
    values["entanglement_all_units"] = entanglement_of(grads.features, grads.gradients, units="all")
    head = head_geometry(grads.features, grads.jacobians)
    values.update({f"head_{k}": head[k] for k in ("effective_rank", "participation_ratio")})
    values["head_mean_abs_corr"] = head["mean_abs_corr"]
    if math.isnan(head["mean_abs_corr"]):
        reasons["head_mean_abs_corr"] = "fewer than 2 live head outputs"
    metric = gradient_metric_geometry(grads.features, grads.gradients)
    values["grad_metric_effective_rank"] = metric["effective_rank"]
    values["grad_metric_participation_ratio"] = metric["participation_ratio"]
    values["accuracy"] = float((logits.argmax(dim=1) == y).double().mean())
    sal = saliency(model, x.to(torch.float64), y, method=method, batch_size=batch_size)
    return values, reasons, sal, grads.features


def _relative_change(before: float, after: float) -> float:
    if math.isnan(before) or math.isnan(after):
        return math.nan
    scale = max(abs(before), abs(after))
    return 0.0 if scale == 0 else abs(after - before) / scale


def _copies(model: nn.Module, layer: str, head: str) -> tuple[nn.Module, nn.Module, str, str]:
    """Two eval-mode float64 deep copies of ``model``: the one measured as it is, and the one to
    reparametrise; ``layer`` and ``head`` resolved and checked to be separate submodules."""
    layer = _resolve(model, layer, "layer")
    head = _resolve(model, head, "head")
    from geomxai.collect import unwrap_model

    # float64: the fold is then exact to rounding near 1e-12, so a relative tolerance can tell a
    # second path of weight 1e-5 from rounding (float32 rounding alone is near 1e-6).
    base = copy.deepcopy(unwrap_model(model)).eval().to(torch.float64)
    if head == layer or head.startswith(layer + ".") or layer.startswith(head + "."):
        raise ValueError(
            f"layer {layer!r} and head {head!r} must be separate modules, neither inside the "
            "other; the head reads the layer's output"
        )
    return base, copy.deepcopy(base), layer, head


def _reparametrize(work: nn.Module, layer: str, head: str, feats, eps: float) -> dict[str, float]:
    """Insert the ZCA map of ``feats`` after ``layer`` and fold its inverse into ``head``, in
    place; the map's condition number and eigenvalue range."""
    matrix, inverse, mean, info = _zca(np.asarray(feats, dtype=np.float64), float(eps))
    dev = _device(work)
    modules = dict(work.named_modules())
    _set_submodule(work, head, _folded_head(modules[head], inverse, mean))
    _set_submodule(work, layer, _Whitened(modules[layer], matrix.to(dev), mean.to(dev)))
    work.eval()
    return info


def _function_change(
    logits: tuple[torch.Tensor, torch.Tensor],
    maps: tuple[torch.Tensor, torch.Tensor] | None,
    layer: str,
    head: str,
) -> tuple[float, float]:
    """The relative logit and saliency changes; raises above ``FUNCTION_RTOL`` (the function
    moved: the reparametrisation is then no control)."""
    logit_change = _logit_change(*logits)
    sal_change = math.nan if maps is None else _saliency_change(*maps)
    worst = max(logit_change, 0.0 if maps is None else sal_change)
    if not worst <= FUNCTION_RTOL:
        raise ValueError(
            f"the reparametrisation changed the logits by {logit_change:.3g} of their spread "
            + ("" if maps is None else f"and the saliency maps by {sal_change:.3g} of their norm ")
            + f"(tolerance {FUNCTION_RTOL:g}, both networks in float64), so it is NOT "
            f"function-preserving: the output of layer {layer!r} reaches the logits by another "
            f"path than head {head!r} (a skip connection, a second consumer). Choose a layer "
            "whose output only the head reads"
        )
    return logit_change, sal_change


def _control_dataset(
    before: dict[str, float], after: dict[str, float], logit_diff: float, sal_diff: float
) -> xr.Dataset:
    """The metrics of both models, their relative changes and verdicts, and the two checks."""
    ds = xr.Dataset(coords={"model": list(_MODELS), "metric": list(CONTROL_METRICS)})
    for k in CONTROL_METRICS:
        ds[k] = xr.DataArray([before[k], after[k]], dims="model")
    for k in ("n_live_units", "n_dead_units"):
        ds[k] = xr.DataArray([before[k], after[k]], dims="model")
    ds["logit_max_rel_diff"] = logit_diff
    ds["saliency_max_rel_diff"] = sal_diff
    change = [_relative_change(before[k], after[k]) for k in CONTROL_METRICS]
    ds["relative_change"] = xr.DataArray(change, dims="metric")
    ds["invariant"] = xr.DataArray(
        [not math.isnan(c) and c < INVARIANCE_RTOL for c in change], dims="metric"
    )
    ds["verdict"] = xr.DataArray(
        [
            "undetermined" if math.isnan(c) else "invariant" if c < INVARIANCE_RTOL else "moved"
            for c in change
        ],
        dims="metric",
    )
    ds["invariant_by_construction"] = xr.DataArray(
        [k in INVARIANT_BY_CONSTRUCTION for k in CONTROL_METRICS], dims="metric"
    )
    ds["relative_change"].attrs["long_name"] = "|after - before| / max(|before|, |after|)"
    ds["invariant"].attrs["long_name"] = f"relative change below {INVARIANCE_RTOL:g}"
    ds["verdict"].attrs["long_name"] = "invariant, moved, or undetermined (NaN)"
    ds["invariant_by_construction"].attrs["long_name"] = (
        "no map folded into the head can move it (docs/metrics.md)"
    )
    ds["logit_max_rel_diff"].attrs["long_name"] = (
        "max |dlogit| over the logits' RMS spread across the probe"
    )
    ds["saliency_max_rel_diff"].attrs["long_name"] = "max over samples of ||dS||_2 / ||S||_2"
    return ds


_INTERPRETATION = (
    "The reparametrised network computes the same function as the original "
    "(logit_max_rel_diff) and so has the same input-gradient saliency "
    "(saliency_max_rel_diff), but its representation at the layer is whitened. A "
    "geometry metric that is not invariant under this function-preserving change "
    "can only be an indirect explanation of saliency quality: saliency cannot "
    "depend on it, so any link between them runs through something else (training, "
    "architecture). An invariant metric is a property of the function and can be a "
    "direct one. The head_* and grad_metric_* metrics are invariant by construction "
    "(invariant_by_construction): they measure the layer as the head reads it."
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
        "function_rtol": FUNCTION_RTOL,
        "dtype": "float64",
        "passed": ",".join(
            k for k, c in zip(CONTROL_METRICS, change, strict=True) if c < INVARIANCE_RTOL
        ),
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
    not. The head becomes ``A W^{-1}`` with bias ``A mu + b``.

    **Both networks run in float64** (deep copies cast with ``.to(torch.float64)``), where the
    fold is exact to rounding near 1e-12; in float32 rounding alone moves the logits by about
    1e-6 of their spread, as much as a second path of weight 1e-5 would, and the check below
    could not tell them apart.

    **The function check is relative** to each thing's own scale: the largest logit change over
    the logits' spread across the probe (their root mean square deviation from each output's
    probe mean), and the largest per-sample saliency change over that map's own norm. Either
    above :data:`FUNCTION_RTOL` (1e-8) and the control refuses: the reparametrisation is NOT
    function-preserving (the layer reaches the logits by another path than the head).

    Both networks are measured at ``layer`` on ``images``, with geomxai's own functions:
    ``effective_rank``, ``participation_ratio``, ``mean_abs_corr`` and ``corr_offdiag_fro``
    (:func:`~geomxai.geometry.correlation_summary`), the correlation spectrum's decay
    ``spectrum_alpha`` with its ``spectrum_r2``, gradient ``entanglement`` on live units and
    ``entanglement_all_units`` (:func:`~geomxai.attribution.entanglement_of`), the
    function-invariant ``head_*`` (:func:`~geomxai.geometry.head_geometry` of the per-sample
    Jacobians of the logits at the layer) and ``grad_metric_*``
    (:func:`~geomxai.geometry.gradient_metric_geometry`), and ``accuracy`` on ``labels``. Each
    metric is flagged ``invariant`` or ``moved``; the ones of
    :data:`INVARIANT_BY_CONSTRUCTION` pass (a test holds them to it), so the control can
    discriminate.

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
        - ``n_live_units``, ``n_dead_units`` (``model``): live and dead units at the layer by
          :data:`geomxai._finite.DEAD_UNIT_TOL` (not metrics, context for them);
        - ``logit_max_rel_diff`` (scalar): the largest logit change over the logits' spread;
          ``saliency_max_rel_diff``: the largest per-sample ``||a_i - b_i||_2 / ||a_i||_2`` of
          the saliency maps, original ``a`` against reparametrised ``b``;
        - ``relative_change`` (``metric``): ``|after - before| / max(|before|, |after|)`` (0
          when both are 0, NaN when either is NaN);
        - ``invariant`` (``metric``, bool): ``relative_change < INVARIANCE_RTOL`` (1e-6); False
          where it is NaN, and those metrics are listed in ``attrs["undetermined"]``;
        - ``verdict`` (``metric``, str): ``"invariant"``, ``"moved"`` or ``"undetermined"``;
        - ``invariant_by_construction`` (``metric``, bool): in
          :data:`INVARIANT_BY_CONSTRUCTION`.

        ``attrs``: ``layer``, ``head``, ``eps``, ``n_samples``, ``n_units``,
        ``saliency_method``, ``folded_whitening``, ``invariance_rtol``, ``function_rtol``,
        ``dtype``, ``passed`` (the invariant metrics, comma-separated), the condition number
        and eigenvalue range of the map, ``interpretation``, and ``nan_reason_<metric>`` for
        metrics that could not be computed.

    Raises
    ------
    ValueError
        Unknown names, a layer whose output is not (n, d), a head that does not read it, a
        reparametrisation that changes the logits or the maps by more than ``FUNCTION_RTOL``
        of their own scale (the layer's output reaches the logits by another path than the
        head), bad arguments.
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
    >>> str(ds.verdict.sel(metric="head_effective_rank").values)
    'invariant'

    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    x = _as_inputs(images)
    n = x.shape[0]
    y = _as_labels(labels, n)
    _check_options(eps, batch_size, saliency_method)
    layer, head = _defaults(model, layer, head)
    base, work, layer, head = _copies(model, layer, head)
    folded = _fold_path_whitening(work, layer, head)
    d = _check_wiring(work, layer, head, x[: min(n, batch_size)].to(_device(work), torch.float64))
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
    # The logits first (refusing before the second network is measured), then the maps too.
    _function_change((logits_orig, logits_rep), None, layer, head)
    values_rep, reasons_rep, sal_rep, _ = _measure(
        work, x, y, layer, batch_size, saliency_method, logits_rep
    )
    logit_diff, sal_diff = _function_change(
        (logits_orig, logits_rep), (sal_orig, sal_rep), layer, head
    )
    ds = _control_dataset(values_orig, values_rep, logit_diff, sal_diff)
    ds.attrs.update(_control_attrs(ds, layer, head, eps, n, d, saliency_method, folded, info))
    for k, why in {**reasons_orig, **reasons_rep}.items():
        ds.attrs[f"nan_reason_{k}"] = why
    return ds
