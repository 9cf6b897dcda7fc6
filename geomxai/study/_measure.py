"""Measure one model on the probe set: one ``xr.Dataset`` per analysis block (geomxai.schema
names the blocks and their variables), merged."""

from __future__ import annotations

import json

import torch
import xarray as xr

from geomxai import schema
from geomxai.models import FEATURE_LAYER
from geomxai.study._entanglement_block import _entanglement_block
from geomxai.study._geometry_block import _geometry_block
from geomxai.study._nan import _unmeasured
from geomxai.study._options import AnalysisOptions
from geomxai.study._probe import Probe
from geomxai.study._saliency_blocks import (
    _examples_block,
    _faithfulness_block,
    _localisation_block,
    _masking_block,
    _saliency_block,
)
from geomxai.study._saliency_method import _bound_method, _saliency_arguments
from geomxai.study._variants import _VARIANT_NAMES, _add_checked, _variant_blocks


def _feature_layer(model: torch.nn.Module, options: AnalysisOptions) -> str:
    """The model's own feature layer (``model.feature_layer``, else geomxai's ``body``).

    Geometry measures it when no layers are named, and entanglement always does; a model without
    it needs ``layers`` (and then has NaN entanglement).
    """
    layer = getattr(model, "feature_layer", None) or FEATURE_LAYER
    if options.layers is None and layer not in dict(model.named_modules()):
        top = [name for name, _ in model.named_children()][:10]
        raise ValueError(
            f"{type(model).__name__} has no feature layer named {layer!r} (geomxai's models "
            "have one); name the layers to measure with layers=[...] (--layers on the command "
            f"line). Top-level modules: {', '.join(top) or '(none)'}"
        )
    return layer


def _accuracy_block(model, probe: Probe, options: AnalysisOptions) -> xr.Dataset:
    from geomxai._model_state import module_device, module_dtype

    device = module_device(model, fallback=probe.images.device)
    dtype = module_dtype(model, fallback=probe.images.dtype)
    with torch.no_grad():
        logits = torch.cat(
            [model(xb.to(device, dtype)).cpu() for xb in probe.images.split(options.batch_size)]
        )
    return xr.Dataset({"probe_acc": float((logits.argmax(1) == probe.labels).float().mean())})


def measure(
    model: torch.nn.Module, probe: Probe, options: AnalysisOptions, *, device=None
) -> xr.Dataset:
    """Every geometry and attribution metric of one model on the probe set.

    One block per analysis (:data:`geomxai.schema.BLOCKS`): geometry of each layer, accuracy,
    masking fidelity, probabilistic faithfulness (RISE's deletion and insertion curves of the
    target's softmax probability, :func:`geomxai.attribution.deletion_curve` and
    :func:`~geomxai.attribution.insertion_curve`, on the same saliency maps and fractions as
    the masking curves; means over the probe, and each sample's area over ``sample``),
    saliency quality, localisation (probes with ground-truth masks only), entanglement at the
    model's feature layer, example maps; their Datasets are merged.

    The model runs in eval mode and gets every submodule's own train/eval flag back afterwards
    (:func:`geomxai._model_state.evaluating`); with ``device`` it runs there and is moved back.

    Parameters
    ----------
    model : nn.Module
        Maps ``probe.images`` to logits (n, k).
    probe : Probe
        Image batches (n, c, h, w), sequences (n, c, t) or tabular rows (n, d). With
        ``probe.labels=None`` only the geometry is measured: accuracy, masking, saliency
        quality and entanglement are NaN saying so, and no saliency maps are kept.
    options : AnalysisOptions
    device : str or torch.device, optional
        Where the passes run; default the model's own device.

    Returns
    -------
    xr.Dataset
        The variables of :mod:`geomxai.schema` with those blocks, without ``epoch``, ``regime`` or
        ``seed`` dims (:func:`analyze_run` adds them), annotated by
        :func:`geomxai.schema.annotate`. A variable that cannot be computed is NaN and says why
        in its ``attrs["nan_reason"]``; so is every variable whose minimum probe size
        (:func:`geomxai.schema.min_samples`) the probe is below, with a
        :class:`~geomxai.study.ProbeSizeWarning` (also for a layer with more units than half the
        probe). ``probe_size`` is the number of probe samples used, ``n_units`` each layer's
        width, ``probe_features`` each layer's features (for :func:`analyze_run`'s similarity;
        the run drops them). ``attrs["saliency_method"]`` names the saliency method every
        saliency metric used (:func:`geomxai.attribution.method_name`; for a factory, of the
        instance it built for ``model``).
    """
    from geomxai._model_state import evaluating, placed_on
    from geomxai.attribution import method_name, saliency
    from geomxai.study._probe import apply_minimums, warn_probe

    layer = _feature_layer(model, options)
    tangle_layer = options.entanglement_layer or layer
    n = len(probe.images)
    labelled = probe.labels is not None
    method = options.saliency_method
    variants = xr.Dataset()
    with evaluating(model), placed_on(model, device):
        # The blocks run in this order (saliency after the geometry and accuracy passes), as
        # before the split, so a method that draws random numbers sees the same generator state.
        parts = [_geometry_block(model, probe, list(options.layers or (layer,)), options)]
        if not labelled:
            why = (
                "the probe has no labels (labels=False, or unlabelled data): only the geometry "
                "is measured; accuracy, saliency and fidelity need a class per sample"
            )
            blocks = ("accuracy", "masking", "faithfulness_probability", "saliency", "entanglement")
            parts.append(_unmeasured(blocks, why, options))
        else:
            if n < schema.MIN_ACCURACY_SAMPLES:
                # NaN below their minimum whatever they give (apply_minimums): not computed.
                blocks = ("accuracy",) if options.variants else ("accuracy", "masking")
                parts.append(_unmeasured(blocks, "", options))
            else:
                parts.append(_accuracy_block(model, probe, options))
            method = _bound_method(method, model)
            if options.variants:
                variants, sal = _variant_blocks(model, probe, options, parts[-1])
                parts.append(variants)
            else:
                sal = saliency(
                    model,
                    probe.images,
                    probe.labels,
                    method=method,
                    batch_size=options.batch_size,
                    **_saliency_arguments(method, options.saliency_kwargs),
                )
                if n >= schema.MIN_ACCURACY_SAMPLES:
                    parts.append(_masking_block(model, probe, sal, options))
                parts += [
                    _faithfulness_block(model, probe, sal, options),
                    _saliency_block(sal),
                    _localisation_block(sal, probe.masks),
                ]
            parts += [
                _entanglement_block(model, probe, tangle_layer, options),
                _examples_block(sal, options),
            ]
    ds = xr.merge(parts, compat="no_conflicts", join="outer", combine_attrs="drop_conflicts")
    unmeasured = () if labelled else set(parts[1].data_vars)
    ds = apply_minimums(ds, n, skip=unmeasured)
    widths = dict(zip(map(str, ds["layer"].values), ds["n_units"].values.astype(int), strict=True))
    warn_probe(n, widths, labelled=labelled)
    ds.attrs = {
        "saliency_method": method_name(method),
        "reduction": parts[0].attrs["reduction"],
        "entanglement_layer": tangle_layer,
    }
    from geomxai.study._degeneracy import add_degeneracy_warnings

    # After the attrs are set: the warnings go on the variables and on the Dataset itself.
    if options.variants and labelled:
        # Each (method, fill) slice was checked before stacking (_variant_blocks); here the
        # rest: the live units and the model at chance on the other variables.
        rest = ds.drop_vars([*_VARIANT_NAMES, "probe_saliency"], errors="ignore")
        _add_checked(ds, rest, probe.labels, options)
        from geomxai.study._degeneracy import add_warning, warnings_of

        for message in warnings_of(variants):
            add_warning(ds, message)
        ds.attrs["saliency_methods"] = json.dumps([method_name(m) for m in options.method_variants])
        ds.attrs["fills"] = json.dumps(list(options.fill_variants))
    else:
        add_degeneracy_warnings(ds, labels=probe.labels, fill=options.fill)
    return schema.annotate(ds)
