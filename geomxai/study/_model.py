"""The analysis of any model: :func:`analyze_model` measures one model (a geomxai name, a
torchvision or timm name, a module or a checkpoint file) on any data."""

from __future__ import annotations

import warnings
from dataclasses import replace
from numbers import Integral

import xarray as xr

from geomxai._checks import Interval, check
from geomxai.study._measure import measure
from geomxai.study._options import AnalysisOptions
from geomxai.study._provenance import stamp


def analyze_model(
    model,
    data,
    *,
    weights=None,
    layers=None,
    probe_size: int = 512,
    options: AnalysisOptions | None = None,
    transform=None,
    num_classes: int | None = None,
    labels: bool = True,
    device=None,
    image_size: int | None = None,
    normalize: str | None = None,
    name: str | None = None,
    reduce=None,
    entanglement_layer: str | None = None,
    probe_split: str = "test",
    progress: bool | None = None,
) -> xr.Dataset:
    """Analyse any model on any data: what a researcher brings, in the layout of a study.

    Parameters
    ----------
    model : str or nn.Module
        ``torchvision:NAME`` (any of ``torchvision.models.list_models()``), ``timm:NAME`` (any
        of ``timm.list_models()``; its own data config gives the preprocessing), a geomxai
        model name (``cnn2``, ...), a geomxai checkpoint path, or an ``nn.Module`` you hold
        (analysed as it is; never changed: a rebuilt head or loaded weights go on a copy).
        Spec models get random weights (``pretrained=False``: nothing is downloaded) unless
        ``weights`` is given.
    data : str, Dataset, DataLoader, (inputs, labels) or inputs
        A dataset name (``geomxai.data.load_dataset``: ``digits``, ``imagefolder:PATH``,
        ``breast-cancer``, ...; the probe is the first ``probe_size`` test samples), a
        ``torch.utils.data.Dataset``, a ``DataLoader`` (the first ``probe_size`` samples it
        yields), an ``(inputs, labels)`` pair of tensors or arrays, or inputs alone
        (unlabelled). Inputs are image batches (n, c, h, w), sequences (n, c, t) or tabular
        rows (n, d).
    weights : path-like, optional
        A ``.safetensors`` file or a state_dict file (read with ``weights_only=True``).
    layers : str or list of str, optional
        Layers whose geometry is measured (dotted names or globs); default the model's feature
        layer (``feature_layer`` attribute, else ``body``), which models not made by geomxai
        lack: name one (``geomxai layers MODEL`` lists them).
    probe_size : int
        Samples in the probe (fewer if the data has fewer).
    options : AnalysisOptions, optional
        Every analysis option; when given, ``layers`` and ``probe_size`` come from it.
    transform : callable, optional
        Applied to every input sample before the analysis (a resize, a normalisation such as
        ``torchvision.transforms.Normalize(mean, std)``); replaces a timm model's own.
    num_classes : int, optional
        Rebuild the head at random with this many outputs when it has another size (the
        weights of every other layer kept): the fix for a 1000-class head on a 2-class folder.
    labels : bool
        False analyses the geometry only (features, ranks, spectra, axes, similarity): the
        accuracy, saliency and fidelity variables are NaN saying why. Unlabelled data
        (inputs alone) is analysed the same way. A dataset read by name then also lends its
        training split to the probe (no accuracy is measured, so nothing needs holding out).
    device : str or torch.device, optional
        Where the passes run; default the model's own device.
    image_size : int, optional
        Image side: datasets that resize on loading (``imagefolder:``, ``caltech101``) load at
        it (default 64, or a timm model's own input size); other data are resized to it.
    normalize : {None, "none", "imagenet"}
        Without ``transform``: ``"imagenet"`` normalises with the ImageNet mean and std (for
        ImageNet weights), ``"none"`` does nothing, ``None`` (default) applies a timm model's
        own data config and nothing to other models.
    name : str, optional
        The ``regime`` label; default the spec string or the module's class name.
    reduce, entanglement_layer : optional
        :class:`AnalysisOptions` fields set on top of ``options``: how each layer's output
        becomes one vector per sample (``"auto"``, ``"mean"``, ``"flatten"``, ``"cls"``,
        ``"token_mean"``, a token index, or a mapping by layer) and the layer of gradient
        entanglement.
    probe_split : {"test", "all"}
        Data read by name: the probe comes from the held-out test split (``"test"``), or from
        every sample (``"all"``), for an image folder too small to hold out enough.
    progress : bool, optional
        A tqdm bar counting the samples the model runs on: True always, False never, None
        (default) on a terminal or in a notebook.

    Returns
    -------
    xr.Dataset
        The layout of :func:`analyze_runs` with one regime (the model), seed 0 and epoch 0, so
        :func:`geomxai.report.build_report` and the notebooks read it as they read a study;
        :func:`squeeze_results` drops those size-1 dims for scalar access. The dynamics compare
        checkpoints, so they are absent. ``probe_size`` holds the samples used;
        ``probe_images`` the first ``n_examples`` inputs (image data). ``attrs``: ``dataset``,
        ``model``, ``weights`` (where they came from), ``labels`` ("yes"/"no"),
        ``saliency_method``, ``reduction`` (JSON: the reduction applied to each layer),
        ``entanglement_layer``, ``preprocessing`` (the transform applied to every input; with
        ``input_size`` and ``resize_factor`` when it resized images: a resize by more than 2x
        also warns, :class:`~geomxai.study.PreprocessingWarning`), ``created``, ``hardware``,
        ``commit``.

    Raises
    ------
    ValueError
        A head whose size does not fit the data's classes, before any work, naming the fix
        (``num_classes=`` / ``--num-classes``, or ``labels=False`` / ``--no-labels``); an
        unknown spec; a model without a feature layer and no ``layers``.
    """
    from geomxai.study._inputs import preprocessed_data, probe_advice, resolve_source
    from geomxai.study._probe import ProbeSizeWarning, warn_probe, widths_of
    from geomxai.study._progress import model_progress

    check(labels, "labels", bool)
    check(num_classes, "num_classes", Interval(Integral, 1, None), None)
    if options is None:
        if isinstance(layers, str):
            layers = (layers,)
        options = AnalysisOptions(probe_size=probe_size, layers=tuple(layers) if layers else None)
    if reduce is not None or entanglement_layer is not None:
        changes = {"reduce": reduce, "entanglement_layer": entanglement_layer}
        options = replace(options, **{k: v for k, v in changes.items() if v is not None})
    source_data, pre_attrs = preprocessed_data(
        data,
        model,
        size=options.probe_size,
        labels=labels,
        transform=transform,
        image_size=image_size,
        normalize=normalize,
        where="analyze_model",
        split=probe_split,
        stacklevel=3,
    )
    source = resolve_source(
        model, source_data, weights=weights, num_classes=num_classes, labels=labels
    )
    probe = source_data.probe
    with warnings.catch_warnings():
        # Said below, pointing at the caller's line rather than this one.
        warnings.simplefilter("ignore", ProbeSizeWarning)
        with model_progress(source.model, f"analysing {source.name}", enable=progress):
            ds = measure(source.model, probe, options, device=device)
    n = len(probe.images)
    # Unlabelled data read by name already lends every split to the probe.
    split = probe_split if labels else "all"
    advice = probe_advice(data, got=n, asked=options.probe_size, split=split)
    warn_probe(n, widths_of(ds), labelled=probe.labels is not None, advice=advice)
    ds = ds.drop_vars(["probe_saliency", "top_eigvecs", "probe_features"], errors="ignore")
    label = name or source.name
    ds = ds.expand_dims(regime=[label], seed=[0], epoch=[0])
    if probe.images.ndim == 4 and "saliency_maps" in ds:
        n_ex = int(ds.sizes.get("example", 0))
        ds["probe_images"] = xr.DataArray(
            probe.images[:n_ex].numpy(), dims=("example", "channel", "height", "width")
        )
    from geomxai import schema

    ds = schema.annotate(ds)
    return stamp(
        ds,
        dataset=source_data.name,
        model=source.name,
        weights=source.weights,
        labels="yes" if probe.labels is not None else "no",
        probe_split=probe_split,
        **pre_attrs,
    )
