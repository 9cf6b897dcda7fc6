"""Results files and their provenance: stamp, link, save, open; and the analysis of any model.

Training a study's runs and writing its report is :mod:`geomxai.pipeline`'s job, above this
package: ``geomxai.study`` only reads run directories and writes results.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import warnings
from dataclasses import replace
from pathlib import Path

import torch
import xarray as xr

from geomxai._fs import check_nonempty_path, write_bytes_atomic
from geomxai.study._link import link_geometry_fidelity
from geomxai.study._measure import measure
from geomxai.study._options import AnalysisOptions


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> str:
    """A one-line description of the machine, for reports."""
    text = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def stamp(ds: xr.Dataset, **extra) -> xr.Dataset:
    """Date, hardware and commit in a results Dataset's attrs.

    Parameters
    ----------
    ds : xr.Dataset
        Changed in place (its attrs) and returned.
    **extra
        More attrs; those that are None are left out.

    Returns
    -------
    xr.Dataset
        ``ds`` with ``created`` (UTC), ``hardware`` and ``commit`` (of the source tree) set.
    """
    ds.attrs.update(
        {
            "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "hardware": hardware(),
            "commit": commit(),
            **{k: v for k, v in extra.items() if v is not None},
        }
    )
    return ds


def linked(results: xr.Dataset, **attrs) -> xr.Dataset:
    """Results of several runs with their geometry <-> fidelity link, stamped.

    The link travels in the results file, so the report and any later reader see the same
    numbers; its variables have their own dims (geometry, fidelity). It covers trained
    checkpoints only: the untrained epoch-0 models would dominate the ranks.
    """
    link = link_geometry_fidelity(results, min_epoch=1)
    return stamp(results.merge(link, combine_attrs="override"), **attrs)


def save_results(ds: xr.Dataset, path) -> Path:
    """Write results to netCDF (h5netcdf) atomically: a temporary file renamed into place.

    A crash or a full disk leaves the previous file (if any) as it was, never a truncated one;
    temporary files that a killed writer of the same path left beside it are removed first.
    The file is serialised in memory first and written with checked ``os.write`` calls
    (:func:`geomxai._fs.write_bytes_atomic`): a disk without room for it is refused before
    anything is written, and no disk error reaches HDF5, which ends the process with SIGSEGV
    when its own writes meet a full disk.

    Raises
    ------
    ValueError
        ``path`` is empty or an existing folder.
    OSError
        The location cannot be written (read-only, no permission), naming ``path``; a full disk
        is ``ENOSPC`` "No space left on device (need about N MB, M MB free)" naming ``path``.
    """
    path = check_nonempty_path(path, "the results path")
    if path.is_dir():
        raise ValueError(
            f"the results path must be a file; {str(path)!r} is a folder (give a file path "
            f"such as {str(path / 'results.nc')!r})"
        )
    return write_bytes_atomic(path, ds.to_netcdf(engine="h5netcdf"))


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_results_path(path: Path) -> None:
    if path.is_dir():
        inside = path / "results.nc"
        raise ValueError(
            f"{str(path)!r} is a folder, not a results file; give the results.nc that "
            "`geomxai analyze --out` or `geomxai study` wrote"
            + (f" (this folder holds {str(inside)!r})" if inside.is_file() else "")
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"no results file at {str(path)!r}; write one with `geomxai analyze` "
            "(or `geomxai study`)"
        )
    _refuse_outside_reads(path)


def _outside_reads(path: Path) -> list[str]:
    """What in the HDF5 file at ``path`` would make a reader open another file: external links,
    datasets kept in external raw files, virtual datasets (each mapping other files' data).

    The file is walked with h5py without following any link, before xarray opens it. ``[]`` for
    a file h5py cannot open (the open that follows says what is wrong with it).
    """
    import h5py

    found: list[str] = []
    try:
        fh = h5py.File(path, "r")
    except OSError:
        return found
    with fh:
        seen: set = set()
        groups = [("", fh)]
        while groups:
            prefix, group = groups.pop()
            for name in group:
                where = f"{prefix}/{name}"
                link = group.get(name, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    found.append(f"{where!r} is an external link to {link.filename!r}")
                    continue
                if isinstance(link, h5py.SoftLink):
                    continue  # a name for an object of this file, walked where it lives
                obj = group[name]
                if obj.id in seen:
                    continue
                seen.add(obj.id)
                if isinstance(obj, h5py.Group):
                    groups.append((where, obj))
                elif isinstance(obj, h5py.Dataset):
                    if obj.external:
                        files = sorted({os.fsdecode(f[0]) for f in obj.external})
                        found.append(f"{where!r} is HDF5 external storage in {files}")
                    if obj.is_virtual:
                        files = sorted({m.file_name for m in obj.virtual_sources()})
                        found.append(f"{where!r} is a virtual dataset reading {files}")
    return found


def _refuse_outside_reads(path: Path) -> None:
    with open(path, "rb") as fh:
        if fh.read(8) != _HDF5_SIGNATURE:
            return
    found = _outside_reads(path)
    if found:
        raise ValueError(
            f"refused to open {str(path)!r}: it would read other files ("
            + "; ".join(found[:3])
            + (f"; and {len(found) - 3} more" if len(found) > 3 else "")
            + "). geomxai results keep all their data inside the file, so this one was made "
            "or edited by other code; write it again with `geomxai analyze` or `geomxai study`"
        )


def _unreadable(path: Path, err: Exception) -> ValueError:
    """Why a results file did not open, from its first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        what = "it is empty"
    elif head == _HDF5_SIGNATURE:
        what = "it is an HDF5/netCDF-4 file that is truncated or damaged (a write cut short?)"
    elif head[:3] == b"CDF":
        what = "it is a netCDF-3 file; geomxai results are netCDF-4 (HDF5) files"
    else:
        what = "it is not a netCDF-4 (HDF5) file"
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ValueError(
        f"{str(path)!r} is not a readable results file: {what} ({detail}). Write it again "
        "with `geomxai analyze` or `geomxai study`"
    )


def open_results(paths, *, parallel: bool = False) -> xr.Dataset:
    """Open one or many results files lazily (dask-backed ``open_mfdataset``).

    Raises
    ------
    FileNotFoundError
        A path holds no file (the message says how to write one).
    ValueError
        A path is a folder, or a file that is truncated or not a netCDF-4 results file, or an
        HDF5 file that would make the reader open other files (external links, external
        storage, virtual datasets: refused before xarray opens it); the message names it.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [check_nonempty_path(p, "a results path") for p in paths]
    for path in paths:
        _check_results_path(path)
    try:
        return xr.open_mfdataset(
            [str(p) for p in paths], engine="h5netcdf", combine="by_coords", parallel=parallel
        )
    except (OSError, ValueError) as err:
        if isinstance(err, PermissionError):
            raise
        # Which file: open each on its own (only on this failure path).
        for path in paths:
            open_results_file(path).close()
        raise


def open_results_file(path) -> xr.Dataset:
    """One results file, opened lazily with ``xr.open_dataset`` (h5netcdf), with the errors of
    :func:`open_results`."""
    path = check_nonempty_path(path, "a results path")
    _check_results_path(path)
    try:
        return xr.open_dataset(path, engine="h5netcdf")
    except (OSError, ValueError) as err:
        if isinstance(err, PermissionError):
            raise
        raise _unreadable(path, err) from err


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
    from geomxai.study._inputs import preprocessing, probe_advice, resolve_data, resolve_source
    from geomxai.study._probe import ProbeSizeWarning, warn_probe, widths_of
    from geomxai.study._progress import model_progress

    if not isinstance(labels, bool):
        raise TypeError(f"labels must be True or False; got labels={labels!r}")
    if num_classes is not None and (isinstance(num_classes, bool) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int; got num_classes={num_classes!r}")
    if options is None:
        if isinstance(layers, str):
            layers = (layers,)
        options = AnalysisOptions(probe_size=probe_size, layers=tuple(layers) if layers else None)
    if reduce is not None or entanglement_layer is not None:
        changes = {"reduce": reduce, "entanglement_layer": entanglement_layer}
        options = replace(options, **{k: v for k, v in changes.items() if v is not None})
    from geomxai.study._preprocess import RecordingTransform, record

    steps, preferred = preprocessing(model, image_size, transform, normalize)
    steps = None if steps is None else RecordingTransform(steps)
    source_data = resolve_data(
        data,
        size=options.probe_size,
        labels=labels,
        transform=steps,
        image_size=image_size,
        preferred_size=preferred,
        split=probe_split,
    )
    pre_attrs = record(steps, where="analyze_model")
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


def squeeze_results(results: xr.Dataset) -> xr.Dataset:
    """A results Dataset without its size-1 ``regime``, ``seed``, ``epoch`` and ``layer`` dims.

    The accessor for one model's results (:func:`analyze_model`, or one checkpoint of one run):
    each dropped dim stays as a scalar coordinate (so the regime and layer names are kept), and
    ``float(squeeze_results(ds).effective_rank)`` is a number. Dims of size other than 1 are
    kept as they are. The report needs the ``regime`` dim: give it the results unsqueezed.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset({"effective_rank": (("regime", "seed", "epoch", "layer"), [[[[3.5]]]])},
    ...                 coords={"regime": ["resnet"], "layer": ["avgpool"]})
    >>> one = squeeze_results(ds)
    >>> float(one.effective_rank), str(one.layer.values)
    (3.5, 'avgpool')
    """
    if not isinstance(results, xr.Dataset):
        raise TypeError(f"results must be an xarray Dataset; got {type(results).__name__}")
    dims = [d for d in ("regime", "seed", "epoch", "layer") if results.sizes.get(d) == 1]
    return results.squeeze(dims)
