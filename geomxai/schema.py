"""The result schema: every variable of a results Dataset, declared once.

The analysis (:func:`geomxai.study.measure` and :func:`geomxai.study.analyze_run`), the
geometry <-> fidelity link and the report all read names, dims, directions and labels from here,
so a metric is spelled in one place. :func:`annotate` writes the declarations into a Dataset's
variable attrs the way the CF conventions do (``long_name``, ``units``), plus ``direction`` and
``block``, so any xarray or netCDF tool reads them from a saved ``results.nc``.

A leaf module: it imports xarray and geomxai's stdlib-only ``_hints``, so every part of geomxai
(and a notebook that only opens a results file) may read it without loading torch.

Examples
--------
>>> from geomxai import schema
>>> schema.variable("morf_auc").direction, schema.label("morf_auc")
('lower', 'MoRF AUC')
>>> schema.geometry_metrics()[:2]
('effective_rank', 'participation_ratio')
>>> schema.names("entanglement")[:2]
('entanglement', 'entanglement_all_units')
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import xarray as xr

from geomxai._hints import did_you_mean

BLOCKS = (
    "geometry",
    "accuracy",
    "masking",
    "faithfulness_probability",
    "saliency",
    "localisation",
    "entanglement",
    "examples",
    "dynamics",
    "run_dynamics",
    "training",
    "link",
)
"""Analysis blocks, in the order :func:`geomxai.study.measure` runs the per-checkpoint ones.

Per checkpoint (``measure``): ``geometry`` (per layer), ``accuracy``, ``masking`` (masking
fidelity), ``faithfulness_probability`` (RISE's deletion and insertion curves of the target's
softmax probability), ``saliency`` (saliency quality without ground truth), ``localisation`` (against
ground-truth masks; only on data that has them), ``entanglement``, ``examples`` (saliency maps
kept for figures and the stability metric). Per run (``analyze_run``): ``dynamics`` (each
checkpoint against the previous one), ``run_dynamics`` (whole-run summaries of the dynamics, one
value per run: :mod:`geomxai.dynamics`'s ``run_mean``, ``settling_time``,
``area_over_training``) and ``training`` (from ``metrics.jsonl``). Per study:
``link`` (:func:`geomxai.study.link_geometry_fidelity`).
"""

DIRECTIONS = ("higher", "lower", None)
"""Which way is better: ``"higher"``, ``"lower"``, or ``None`` where the variable describes and
does not judge (geometry, curves, maps)."""

ROLES = ("geometry", "fidelity", None)
"""Side of the geometry <-> fidelity link a variable is on by default; ``None``: not linked."""


@dataclass(frozen=True)
class Variable:
    """One result variable.

    Attributes
    ----------
    name : str
        The variable's name in a results Dataset.
    dims : tuple of str
        Its dims at one checkpoint: a results Dataset of :func:`geomxai.study.analyze_runs` has
        ``("regime", "seed", "epoch", *dims)``. Link variables (block ``"link"``) and
        ``probe_images`` are not per checkpoint: their dims are the whole of them.
    block : str
        The analysis block that produces it (one of :data:`BLOCKS`).
    label : str
        Human text for reports and figure axes (the CF ``long_name``).
    direction : {"higher", "lower", None}
        Which way is better; ``None`` for variables that describe rather than judge.
    role : {"geometry", "fidelity", None}
        Linked by default as a geometry metric or a fidelity metric.
    units : str or None
        CF-style units where there are any (``None``: a dimensionless number).
    per_checkpoint : bool
        False for variables with no ``epoch`` dim: whole-run summaries (block
        ``"run_dynamics"``: ``(regime, seed, *dims)`` in :func:`geomxai.study.analyze_runs`),
        and those with no ``(regime, seed, epoch)`` dims at all (the link, the probe images).
    """

    name: str
    dims: tuple[str, ...]
    block: str
    label: str
    direction: str | None = None
    role: str | None = None
    units: str | None = None
    per_checkpoint: bool = True

    def __post_init__(self):
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}; got block={self.block!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"direction must be one of {DIRECTIONS}; got direction={self.direction!r}"
            )
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}; got role={self.role!r}")


def _v(name, dims, block, label, direction=None, role=None, **extra) -> Variable:
    return Variable(name, tuple(dims), block, label, direction, role, **extra)


_LAYER = ("layer",)
_LINK = ("geometry", "fidelity")

# The declaration order is also the default order of the link's geometry and fidelity metrics
# (geometry: the geometry block, then entanglement, then the whole-run dynamics; fidelity: masking, saliency
# quality, mean_saliency_stability, localisation, probabilistic faithfulness), so those blocks are listed in that
# order (the last one after localisation, so the link's older columns keep their places).
_DECLARED = (
    # ---- geometry of each measured layer on the probe set
    _v("effective_rank", _LAYER, "geometry", "effective rank", role="geometry"),
    _v("participation_ratio", _LAYER, "geometry", "participation ratio", role="geometry"),
    _v("mean_abs_corr", _LAYER, "geometry", "mean |corr|", role="geometry"),
    _v("corr_offdiag_fro", _LAYER, "geometry", "||R - I||_F / sqrt(d(d-1))", role="geometry"),
    _v("spectrum_alpha", _LAYER, "geometry", "spectrum alpha", role="geometry"),
    _v("spectrum_r2", _LAYER, "geometry", "R² of the spectrum's power-law fit"),
    # alpha-ReQ (Agrawal et al. 2022): the covariance spectrum's decay over ranks 6..100; stored
    # beside spectrum_alpha (the correlation spectrum's), not linked by default (docs/metrics.md)
    _v("spectrum_alpha_req", _LAYER, "geometry", "alpha-ReQ (covariance spectrum decay)"),
    _v("spectrum_alpha_req_r2", _LAYER, "geometry", "R² of the alpha-ReQ fit"),
    # Live-unit accounting (issue 23): one threshold, geomxai._finite.DEAD_UNIT_TOL on each
    # unit's variance over the probe relative to the layer's largest; n_live + n_dead = n_units
    _v("n_live_units", _LAYER, "geometry", "live units"),
    _v("n_dead_units", _LAYER, "geometry", "dead units"),
    _v("corr_spectrum", ("layer", "component"), "geometry", "correlation eigenvalue"),
    _v("top_eigvals", ("layer", "axis"), "geometry", "top covariance eigenvalues"),
    _v("top_eigvecs", ("layer", "unit", "axis"), "geometry", "top covariance eigenvectors"),
    # The probe as it was used, so a reader can judge every estimate above (issue 16); the
    # features themselves stay in memory for a run's similarity and are never saved in results.
    _v("n_units", _LAYER, "geometry", "units of the layer"),
    _v("probe_size", (), "geometry", "probe samples"),
    _v("probe_features", ("layer", "sample", "unit"), "geometry", "probe features"),
    # ---- accuracy on the probe set
    _v("probe_acc", (), "accuracy", "probe accuracy", "higher"),
    # ---- masking fidelity of the saliency maps
    _v("morf_curve", ("fraction",), "masking", "accuracy, most salient removed first"),
    _v("morf_auc", (), "masking", "MoRF AUC", "lower", "fidelity"),
    _v("morf_auc_paper", (), "masking", "MoRF AUC (paper scale)", "lower", units="percent^2"),
    _v("lerf_curve", ("fraction",), "masking", "accuracy, least salient removed first"),
    _v("lerf_auc", (), "masking", "LeRF AUC", "higher", "fidelity"),
    _v("lerf_auc_paper", (), "masking", "LeRF AUC (paper scale)", "higher", units="percent^2"),
    _v("random_curve", ("fraction",), "masking", "accuracy, random pixels removed"),
    _v("random_auc", (), "masking", "random-order AUC"),
    _v("random_auc_paper", (), "masking", "random-order AUC (paper scale)", units="percent^2"),
    _v("fidelity_gap", (), "masking", "LeRF − MoRF", "higher", "fidelity"),
    # ---- saliency quality without ground truth
    _v("topq_contrast", (), "saliency", "top-10% contrast", "higher", "fidelity"),
    _v("gini", (), "saliency", "Gini", "higher", "fidelity"),
    # ---- gradient entanglement at the model's feature layer (or AnalysisOptions'
    # entanglement_layer): over the live units (issue 23); the all-units value beside it, not
    # linked (a dead unit's gradient dilutes it)
    _v("entanglement", (), "entanglement", "entanglement (live units)", role="geometry"),
    _v("entanglement_all_units", (), "entanglement", "entanglement (all units)"),
    # Function-invariant geometry at the same layer (geomxai.geometry.head_geometry and
    # gradient_metric_geometry): no invertible map folded into the layer and out of its head
    # moves them, so the reparametrisation control can pass them (docs/metrics.md)
    _v("head_effective_rank", (), "entanglement", "effective rank through the head", role="geometry"),
    _v("head_participation_ratio", (), "entanglement", "participation ratio through the head", role="geometry"),
    _v("head_mean_abs_corr", (), "entanglement", "mean |corr| through the head", role="geometry"),
    _v("grad_metric_effective_rank", (), "entanglement", "effective rank of Σ G (gradient in the feature metric)", role="geometry"),
    _v("grad_metric_participation_ratio", (), "entanglement", "participation ratio of Σ G", role="geometry"),
    # ---- dynamics: each checkpoint against the previous one (NaN at the first)
    # The link uses the non-degenerate swaps: a swap between axes of nearly equal eigenvalue (at
    # either checkpoint) is an arbitrary relabelling, not a movement of the representation.
    _v("swap_rate", _LAYER, "dynamics", "swap rate (share of axes)"),
    _v("nondegenerate_swap_rate", _LAYER, "dynamics", "non-degenerate swap rate"),
    _v("matched_overlap", _LAYER, "dynamics", "matched axis overlap"),
    _v("subspace_overlap", _LAYER, "dynamics", "subspace overlap"),
    _v("degenerate_swap_rate", _LAYER, "dynamics", "near-degenerate swap rate"),
    # Representation similarity of each checkpoint's probe features to the previous checkpoint's
    # (NaN at the first) and to the final one's (linear CKA: 1 = the same up to rotation and
    # scale; Procrustes angular distance: 0 = the same shape)
    _v("cka_previous", _LAYER, "dynamics", "linear CKA to the previous checkpoint"),
    _v("cka_final", _LAYER, "dynamics", "linear CKA to the final checkpoint"),
    _v("procrustes_previous", _LAYER, "dynamics", "Procrustes distance to the previous checkpoint"),
    _v("procrustes_final", _LAYER, "dynamics", "Procrustes distance to the final checkpoint"),
    _v("cka_checkpoints", ("layer", "epoch_b"), "dynamics", "linear CKA between checkpoints"),
    _v("saliency_stability", (), "dynamics", "saliency stability", "higher"),
    # ---- whole-run summaries of the dynamics (issue 23): what the run-level link reads, in
    # place of the last pair's swap rate and stability (taken where the lr is about 0). One
    # value per run (no epoch dim); docs/dynamics.md defines each.
    _v("mean_nondegenerate_swap_rate", _LAYER, "run_dynamics", "mean non-degenerate swap rate over training", role="geometry", per_checkpoint=False),
    _v("subspace_settle_step", _LAYER, "run_dynamics", "step at which the top-k subspace settles", role="geometry", units="steps", per_checkpoint=False),
    _v("subspace_settle_epoch", _LAYER, "run_dynamics", "epoch at which the top-k subspace settles", units="epochs", per_checkpoint=False),
    _v("cka_final_auc", _LAYER, "run_dynamics", "area under CKA to the final checkpoint over training", role="geometry", per_checkpoint=False),
    _v("mean_saliency_stability", (), "run_dynamics", "mean saliency stability over training", "higher", "fidelity", per_checkpoint=False),
    # ---- localisation against ground-truth masks (datasets with masks only)
    _v("mask_auroc", (), "localisation", "mask AUROC", "higher", "fidelity"),
    _v("mass_inside", (), "localisation", "saliency mass inside the mask", "higher", "fidelity"),
    _v("pointing_game", (), "localisation", "pointing game", "higher", "fidelity"),
    # ---- probabilistic faithfulness (Petsiuk et al. 2018, RISE) of the same saliency maps: the
    # softmax probability of the target class as the most salient positions are deleted (zero
    # fill) or inserted into a blurred (images) or mean (sequences, tabular) start. Means over
    # the probe; the per-sample areas are kept in memory (measure, analyze_run, analyze_model)
    # for a distribution, not in a study's results file.
    _v("deletion_curve", ("fraction",), "faithfulness_probability", "target probability, most salient deleted first"),
    _v("deletion_auc", (), "faithfulness_probability", "deletion AUC (target probability)", "lower", "fidelity"),
    _v("insertion_curve", ("fraction",), "faithfulness_probability", "target probability, most salient inserted first"),
    _v("insertion_auc", (), "faithfulness_probability", "insertion AUC (target probability)", "higher", "fidelity"),
    _v("deletion_auc_per_sample", ("sample",), "faithfulness_probability", "deletion AUC of each probe sample", "lower"),
    _v("insertion_auc_per_sample", ("sample",), "faithfulness_probability", "insertion AUC of each probe sample", "higher"),
    # ---- saliency maps kept for figures and for the stability metric
    _v("saliency_maps", ("example", "height", "width"), "examples", "saliency map"),
    _v("probe_saliency", ("sample", "height", "width"), "examples", "probe saliency map"),
    _v(
        "probe_images",
        ("example", "channel", "height", "width"),
        "examples",
        "probe image",
        per_checkpoint=False,
    ),
    # ---- training metrics from the run's metrics.jsonl (epoch 0, the initial model: NaN)
    _v("test_acc", (), "training", "test accuracy", "higher"),
    _v("train_acc", (), "training", "training accuracy", "higher"),
    _v("loss_ce", (), "training", "cross-entropy loss", "lower"),
    _v("loss_kl", (), "training", "KL masking loss", "lower"),
    _v("loss_decor", (), "training", "decorrelation loss", "lower"),
    _v("loss_total", (), "training", "total training loss", "lower"),
    # ---- the geometry <-> fidelity link, over every (regime, seed, epoch)
    _v("spearman", _LINK, "link", "Spearman rank correlation over checkpoints", per_checkpoint=False),
    _v("spearman_low", _LINK, "link", "lower end of the percentile bootstrap CI", per_checkpoint=False),
    _v("spearman_high", _LINK, "link", "upper end of the percentile bootstrap CI", per_checkpoint=False),
    _v("p_value", _LINK, "link", "two-sided p-value of scipy.stats.spearmanr", per_checkpoint=False),
    _v("n_points", _LINK, "link", "checkpoints with both values finite", per_checkpoint=False),
)  # fmt: skip

VARIABLES: MappingProxyType[str, Variable] = MappingProxyType({v.name: v for v in _DECLARED})
"""Every declared result variable by name, in declaration order (read-only)."""

if len(VARIABLES) != len(_DECLARED):  # pragma: no cover - a guard on the table above
    raise RuntimeError("a result variable is declared twice in geomxai.schema")


def variable(name: str) -> Variable:
    """The declaration of one result variable.

    Raises
    ------
    KeyError
        For a name that is not declared; the message names the close matches.
    """
    try:
        return VARIABLES[name]
    except KeyError:
        hint = did_you_mean(name, VARIABLES)
        raise KeyError(f"{name!r} is not a result variable of geomxai.schema{hint}") from None


def names(block: str) -> tuple[str, ...]:
    """The variables one analysis block produces, in declaration order."""
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}; got block={block!r}")
    return tuple(v.name for v in _DECLARED if v.block == block)


def geometry_metrics() -> tuple[str, ...]:
    """Geometry metrics the link correlates by default (those present in the results)."""
    return tuple(v.name for v in _DECLARED if v.role == "geometry")


def fidelity_metrics() -> tuple[str, ...]:
    """Saliency-quality metrics the link correlates by default (those present in the results)."""
    return tuple(v.name for v in _DECLARED if v.role == "fidelity")


VERDICT_QUESTIONS = {
    "fidelity": (
        "morf_auc",
        "fidelity_gap",
        "deletion_auc",
        "insertion_auc",
        "topq_contrast",
        "gini",
    ),
    "interaction": ("test_acc", "morf_auc", "fidelity_gap"),
    "dose": ("mean_abs_corr", "morf_auc", "fidelity_gap", "test_acc"),
}
"""The metrics a study's verdict answers each of the paper's questions with: does the method
improve fidelity and sharpness over a baseline; is its benefit an interaction of masking and
whitening (accuracy, MoRF AUC, the LeRF - MoRF gap); does the decorrelation weight move them
(with mean |corr| as the check that it decorrelates at all). Every other metric is in the
tables."""

SCHEMA_VERSION = 2
"""The layout of results files this geomxai writes and reads, stored as
``attrs["schema_version"]``; a file without it has layout 1 (written before layouts were
numbered). Raise it when a variable, dim or attr that readers rely on changes, so an older file
is refused by name (``geomxai report``) instead of rendering with sections silently missing."""


MIN_GEOMETRY_SAMPLES = 16
"""Probe samples below which the spectrum metrics of a layer (effective rank, participation
ratio, correlation summaries, spectra), gradient entanglement, the axis swaps and the
representation similarity are NaN with a reason: with ``n`` samples the centred features have
rank at most ``n - 1`` and a correlation's sampling noise is about ``1 / sqrt(n)`` (0.25 at 16),
so below this the numbers describe the probe, not the layer (2 samples give an effective rank
and a mean |corr| of exactly 1 whatever the model)."""

MIN_ACCURACY_SAMPLES = 50
"""Probe samples below which the accuracy and the accuracy-based masking metrics are NaN with a
reason: the standard error of an accuracy on ``n`` samples is up to ``0.5 / sqrt(n)``, 7 points
at 50 (and one image moves it by 2)."""

SAMPLES_PER_UNIT = 2
"""Probe samples per unit of a layer below which the analysis warns (values kept): a spectrum
of a ``d``-unit layer estimated from fewer than ``2 d`` samples is visibly distorted (its
eigenvalues spread out, Marchenko-Pastur), and from fewer than ``d + 1`` it is cut at
``n - 1`` components."""

MIN_LIVE_UNITS = 8
"""Live units below which a layer's geometry is reported with a warning (values kept): with
``k`` live units the effective rank and participation ratio are at most ``k``, the correlation
spectrum has ``k`` points to fit a decay to, and alpha-ReQ (ranks 6 to 100) has at most
``k - 5``; below 8 the numbers say how few units are alive more than how they share the
variance."""

_NO_MINIMUM = frozenset(
    {
        "n_units",
        "n_live_units",
        "n_dead_units",
        "probe_size",
        "probe_features",
        "top_eigvals",
        "top_eigvecs",
    }
)


def min_samples(name: str) -> int | None:
    """The fewest probe samples a variable is reported on (below it: NaN with a reason).

    :data:`MIN_GEOMETRY_SAMPLES` for the geometry, entanglement and per-layer dynamics
    variables, :data:`MIN_ACCURACY_SAMPLES` for accuracy and masking, ``None`` (no minimum) for
    per-map metrics (saliency quality, localisation, stability), descriptions of the probe and
    everything not per checkpoint.

    Examples
    --------
    >>> min_samples("effective_rank"), min_samples("morf_auc"), min_samples("gini")
    (16, 50, None)
    """
    v = variable(name)
    if name in _NO_MINIMUM or not v.per_checkpoint:
        return None
    if v.block in ("accuracy", "masking"):
        return MIN_ACCURACY_SAMPLES
    if v.block in ("geometry", "entanglement") or (v.block == "dynamics" and "layer" in v.dims):
        return MIN_GEOMETRY_SAMPLES
    return None


# ---- several saliency methods and fills in one analysis (AnalysisOptions.saliency_methods and
# fills): the masking variables gain dims saliency_method and fill, the other saliency metrics
# saliency_method, each only where more than one is measured. A runs table holds one column per
# method (and fill): a *variant* of the base metric, named by variant_name.

VARIANT_DIMS = ("saliency_method", "fill")
"""The dims a saliency metric gains when an analysis measures several methods or fills."""

VARIANT_SEP = "__"
"""What joins a base metric, its saliency method and its fill in a variant's name."""

_DISPLAY = {
    "abs_gradient": "|gradient|",
    "gradient": "gradient",
    "input_x_gradient": "input × gradient",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "integrated gradients",
    "uniform": "uniform fill",
    "zero": "zero fill",
    "mean": "mean fill",
    "blur": "blur fill",
    "road": "ROAD",
}


def display(name: str) -> str:
    """Human text for a saliency method or a masking fill (``abs_gradient`` -> ``|gradient|``,
    ``zero`` -> ``zero fill``); another name with spaces for ``_``."""
    return _DISPLAY.get(str(name), str(name).replace("_", " "))


def variant_name(base: str, method: str, fill: str | None = None) -> str:
    """The runs-table name of ``base`` measured with saliency ``method`` (and masking ``fill``).

    ``base__method`` or ``base__method__fill``; :func:`split_variant` reads it back, and
    :func:`label` and :func:`direction` answer for it as for the base metric.

    Examples
    --------
    >>> variant_name("morf_auc", "integrated_gradients", "road")
    'morf_auc__integrated_gradients__road'
    >>> label("morf_auc__integrated_gradients__road"), direction("gini__smoothgrad")
    ('MoRF AUC (integrated gradients, ROAD)', 'higher')
    """
    parts = [base, method] + ([] if fill is None else [fill])
    for part in parts:
        if not isinstance(part, str) or not part or VARIANT_SEP in part:
            raise ValueError(
                f"a variant's base, method and fill must be non-empty names without "
                f"{VARIANT_SEP!r}; got {part!r}"
            )
    return VARIANT_SEP.join(parts)


def split_variant(name: str) -> tuple[str, str | None, str | None]:
    """``(base, method, fill)`` of a variant name; ``(name, None, None)`` for any other name.

    Examples
    --------
    >>> split_variant("morf_auc__smoothgrad__zero"), split_variant("deletion_auc__smoothgrad")
    (('morf_auc', 'smoothgrad', 'zero'), ('deletion_auc', 'smoothgrad', None))
    >>> split_variant("morf_auc")
    ('morf_auc', None, None)
    """
    parts = str(name).split(VARIANT_SEP)
    if len(parts) not in (2, 3) or not all(parts) or parts[0] not in VARIABLES:
        return str(name), None, None
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def with_variants(names, present) -> list[str]:
    """Each of ``names`` that ``present`` holds, or, where ``present`` holds a name only as its
    method/fill variants (:func:`variant_name`), those variants; in ``names``' order, each
    name's variants in ``present``'s order, names found in neither form left out.

    Examples
    --------
    >>> with_variants(["test_acc", "morf_auc", "gini"],
    ...               ["test_acc", "morf_auc__abs_gradient__zero", "morf_auc__smoothgrad__zero"])
    ['test_acc', 'morf_auc__abs_gradient__zero', 'morf_auc__smoothgrad__zero']
    """
    present = [str(p) for p in present]
    out = []
    for name in names:
        name = str(name)
        out += (
            [name]
            if name in present
            else [p for p in present if p != name and split_variant(p)[0] == name]
        )
    return list(dict.fromkeys(out))


def label(name: str) -> str:
    """Human text for a variable; an undeclared name is its own label with spaces for ``_``; a
    variant (:func:`variant_name`) is its base's label with the method and fill in brackets."""
    declared = VARIABLES.get(str(name))
    if declared is not None:
        return declared.label
    base, method, fill = split_variant(name)
    if method is not None:
        said = [display(p) for p in (method, fill) if p is not None]
        return f"{VARIABLES[base].label} ({', '.join(said)})"
    return str(name).replace("_", " ")


def direction(name: str) -> str | None:
    """``"higher"``, ``"lower"`` or ``None`` (not declared, or describes rather than judges); a
    variant's is its base metric's."""
    declared = VARIABLES.get(split_variant(name)[0])
    return None if declared is None else declared.direction


def cf_attrs(name: str) -> dict[str, str]:
    """The attrs :func:`annotate` writes for one declared variable.

    ``long_name`` (the label), ``block``, and ``direction`` and ``units`` where they are set
    (netCDF attrs cannot hold ``None``, so an unset one is left out).
    """
    v = variable(name)
    attrs = {"long_name": v.label, "block": v.block}
    if v.direction is not None:
        attrs["direction"] = v.direction
    if v.units is not None:
        attrs["units"] = v.units
    return attrs


PIXEL_COORDS = {
    "y": ("height", "pixel row (0 = the image's top row)"),
    "x": ("width", "pixel column (0 = the image's left column)"),
}
"""Pixel coordinates of image-shaped variables (saliency maps, probe images) along ``height`` and
``width``, so ``maps.plot.imshow(x="x", y="y")`` draws row 0 at the top, as the image is
(``.plot()``, a pcolormesh, needs ``yincrease=False`` for the same)."""


def with_pixel_coords(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with integer ``y`` and ``x`` coordinates along ``height`` and ``width`` (if absent).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> maps = with_pixel_coords(xr.Dataset({"m": (("height", "width"), np.zeros((2, 3)))}))
    >>> maps["y"].values.tolist(), maps["x"].values.tolist()
    ([0, 1], [0, 1, 2])
    """
    coords = {}
    for name, (dim, long_name) in PIXEL_COORDS.items():
        if dim in ds.dims and name not in ds.coords:
            values = np.arange(ds.sizes[dim])
            coords[name] = xr.Variable(dim, values, {"long_name": long_name, "units": "pixel"})
    return ds.assign_coords(coords) if coords else ds


def annotate(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy of ``ds`` whose declared variables carry the schema's attrs.

    Writes ``block``, ``direction`` and ``units`` (:func:`cf_attrs`) onto every declared variable
    present; ``long_name`` too, unless the variable already has one (a producer may write a more
    specific one, e.g. the link's interval with its coverage). Undeclared variables and every
    other attr (``nan_reason``, ...) are left as they are; the data are not copied.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = annotate(xr.Dataset({"morf_auc": 0.3, "mine": 1.0}))
    >>> ds["morf_auc"].attrs
    {'long_name': 'MoRF AUC', 'block': 'masking', 'direction': 'lower'}
    >>> ds["mine"].attrs
    {}
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds must be an xarray Dataset; got {type(ds).__name__}")
    out = with_pixel_coords(ds.copy())
    for name in out.data_vars:
        if name in VARIABLES:
            attrs = cf_attrs(str(name))
            if "long_name" in out[name].attrs:
                del attrs["long_name"]
            out[name].attrs.update(attrs)
    return out
