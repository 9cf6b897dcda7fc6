"""collect_features and its streaming variants: run data through a model, keep layer features."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import xarray as xr
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler

from geomxai._checks import Interval, check
from geomxai._fs import atomic_path
from geomxai._model_state import evaluating, module_dtype, placed_on
from geomxai.collect._collector import FeatureCollector
from geomxai.collect._layers import LayerSelector, _is_wrapped, unwrap_model
from geomxai.collect._reduce import Reduction
from geomxai.moments import FeatureMoments

DataSource = DataLoader | Dataset | torch.Tensor | np.ndarray | tuple
"""What ``data`` accepts: a DataLoader, a Dataset of ``x`` or ``(x, y, ...)`` items, an (n, ...)
tensor or array, or a pair ``(x, y)`` of them."""

_RESERVED = ("sample", "label")


# -- data ------------------------------------------------------------------------------------
@dataclass
class _Batches:
    batches: Iterator[tuple[torch.Tensor, torch.Tensor | None]]
    sample_index: str  # "dataset": positions are dataset indices; "iteration": only the order


def _split(x: torch.Tensor, y: torch.Tensor | None, batch_size: int) -> Iterator:
    for start in range(0, x.shape[0], batch_size):
        stop = start + batch_size
        yield x[start:stop], None if y is None else y[start:stop]


def _as_tensor(a: object, what: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    raise TypeError(f"{what} must be a tensor or a numpy array; got {type(a).__name__}")


def _unpack(batch: object) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        y = batch[1] if len(batch) > 1 else None
        if y is not None and not isinstance(y, torch.Tensor):
            y = torch.as_tensor(np.asarray(y))
        return batch[0], y
    raise TypeError(
        "each batch must be a tensor x or a tuple/list (x, y, ...) whose first item is a tensor; "
        f"got {type(batch).__name__}"
    )


def _batches(data: DataSource, batch_size: int) -> _Batches:
    if isinstance(data, DataLoader):
        sequential = isinstance(data.sampler, SequentialSampler) and not isinstance(
            data.dataset, IterableDataset
        )
        return _Batches((_unpack(b) for b in data), "dataset" if sequential else "iteration")
    if isinstance(data, (torch.Tensor, np.ndarray)):
        x = _as_tensor(data, "data")
        if x.ndim == 0:
            raise ValueError("data must have a sample dim; got a 0-d tensor")
        return _Batches(_split(x, None, batch_size), "dataset")
    if isinstance(data, tuple) and len(data) == 2:
        x, y = _as_tensor(data[0], "data[0]"), _as_tensor(data[1], "data[1]")
        if x.ndim == 0 or y.shape[:1] != x.shape[:1]:
            raise ValueError(
                "data=(x, y) needs x and y with the same number of samples; got shapes "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        return _Batches(_split(x, y, batch_size), "dataset")
    if isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        order = "iteration" if isinstance(data, IterableDataset) else "dataset"
        return _Batches((_unpack(b) for b in loader), order)
    raise TypeError(
        "data must be a DataLoader, a Dataset, a tensor or array (n, ...), or a pair (x, y); "
        f"got {type(data).__name__}"
    )


# -- sinks: where each batch of features goes ---------------------------------------------------
@dataclass
class _Layout:
    """What the first batch fixed: the records, their widths and metadata."""

    records: list[str]
    widths: dict[str, int]
    dtypes: dict[str, np.dtype]
    has_labels: bool
    attrs: dict[str, str]
    var_attrs: dict[str, dict[str, object]]


class _Sink(Protocol):
    def start(self, layout: _Layout) -> None: ...

    def add(self, features: dict[str, torch.Tensor], labels, index: np.ndarray) -> None: ...

    def abort(self) -> None: ...


def _host(t: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    return t.to("cpu", torch.float64 if dtype == np.float64 else torch.float32).numpy()


def _labels_host(y: torch.Tensor | None) -> np.ndarray | None:
    return None if y is None else y.detach().cpu().numpy()


class _MemorySink:
    def __init__(self) -> None:
        self.chunks: dict[str, list[np.ndarray]] = {}
        self.labels: list[np.ndarray] = []
        self.index: list[np.ndarray] = []

    def start(self, layout: _Layout) -> None:
        self.layout = layout
        self.chunks = {key: [] for key in layout.records}

    def add(self, features, labels, index) -> None:
        for key, f in features.items():
            self.chunks[key].append(_host(f, self.layout.dtypes[key]))
        if labels is not None:
            self.labels.append(labels)
        self.index.append(index)

    def abort(self) -> None:
        self.chunks = {}

    def result(self) -> xr.Dataset:
        layout = self.layout
        data_vars = {}
        for key in layout.records:
            arr = np.concatenate(self.chunks.pop(key))
            data_vars[key] = xr.Variable(("sample", f"unit_{key}"), arr, layout.var_attrs[key])
        coords = {"sample": ("sample", np.concatenate(self.index))}
        if layout.has_labels:
            coords["label"] = ("sample", np.concatenate(self.labels))
        return xr.Dataset(data_vars, coords=coords, attrs=layout.attrs)


class _MomentsSink:
    def __init__(self) -> None:
        self.moments: dict[str, FeatureMoments] = {}

    def start(self, layout: _Layout) -> None:
        self.moments = {key: FeatureMoments.empty(layout.widths[key]) for key in layout.records}

    def add(self, features, labels, index) -> None:
        # from_batch reduces on the features' device in float64; only d + d^2 numbers move.
        for key, f in features.items():
            self.moments[key].merge(FeatureMoments.from_batch(f))

    def abort(self) -> None:
        self.moments = {}


class _NetCDFSink:
    """Appends each batch to an HDF5-backed netCDF-4 file along an unlimited ``sample`` dim.

    ``path`` is the temporary file of :func:`geomxai._fs.atomic_path`, which renames it into
    place once :meth:`finish` has closed it, so a failed run never leaves a truncated file under
    the final name.
    """

    # Chunks of about 1 MiB: large enough for fast appends, small enough that reading a few
    # samples of one layer does not decompress the whole layer.
    _CHUNK_BYTES = 1 << 20

    def __init__(self, path: Path, batch_size: int) -> None:
        self.path = path
        self.batch_size = batch_size
        self.file = None
        self.n = 0

    def start(self, layout: _Layout) -> None:
        try:
            import h5netcdf
        except ImportError as err:  # pragma: no cover - h5netcdf is a dependency
            raise ImportError("writing netCDF needs h5netcdf (pip install h5netcdf)") from err
        try:
            self.file = h5netcdf.File(self.path, "w")
        except (ImportError, ValueError) as err:
            raise ImportError(
                "writing netCDF needs h5netcdf with its h5py backend (pip install h5py); "
                f"h5netcdf said: {err}"
            ) from err
        self.layout = layout
        f = self.file
        f.dimensions["sample"] = None
        for key in layout.records:
            f.dimensions[f"unit_{key}"] = layout.widths[key]
        f.create_variable("sample", ("sample",), np.int64, chunks=(4096,))
        if layout.has_labels:
            self.label_var = None  # created at the first batch, when the label dtype is known
        for key in layout.records:
            width, dtype = layout.widths[key], layout.dtypes[key]
            cols = min(width, self._CHUNK_BYTES // dtype.itemsize)
            rows = max(1, min(self.batch_size, self._CHUNK_BYTES // (dtype.itemsize * cols)))
            var = f.create_variable(key, ("sample", f"unit_{key}"), dtype, chunks=(rows, cols))
            var.attrs.update(layout.var_attrs[key])
            if layout.has_labels:
                # CF convention, which xarray reads back as a non-index coordinate.
                var.attrs["coordinates"] = "label"
        f.attrs.update(layout.attrs)

    def add(self, features, labels, index) -> None:
        f = self.file
        n0, n1 = self.n, self.n + len(index)
        if self.layout.has_labels and self.label_var is None:
            self.label_var = f.create_variable("label", ("sample",), labels.dtype, chunks=(4096,))
        f.resize_dimension("sample", n1)
        f.variables["sample"][n0:n1] = index
        if labels is not None:
            self.label_var[n0:n1] = labels
        for key, t in features.items():
            f.variables[key][n0:n1, :] = _host(t, self.layout.dtypes[key])
        self.n = n1

    def finish(self) -> None:
        self.file.close()
        self.file = None

    def abort(self) -> None:
        # Close only: atomic_path removes the temporary file.
        if self.file is not None:
            try:
                self.file.close()
            finally:
                self.file = None


# -- the model's input -------------------------------------------------------------------------
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _model_input(x: torch.Tensor, device: torch.device, dtype: torch.dtype | None):
    """``x`` on the model's device; floating data in the model's floating parameter dtype.

    float16, bfloat16 or float64 data into a float32 model would crash in its first conv or
    linear layer; casting is what every caller means. Integer and boolean data are passed as
    they are: token ids for an embedding, or images a model converts itself; a model that
    cannot take them fails, and :func:`_input_error` explains why.
    """
    if x.is_floating_point() and dtype is not None and x.dtype != dtype:
        return x.to(device, dtype, non_blocking=True)
    return x.to(device, non_blocking=True)


def _first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first conv or linear layer in registration order: where the input most likely goes."""
    for name, module in model.named_modules():
        if isinstance(module, (*_CONVS, nn.Linear)):
            return name, module
    return None


def _expected_input(model: nn.Module, x: torch.Tensor) -> str | None:
    """What the model's first layer takes, when ``x`` (the batch as given) disagrees with it.

    Only a hint for an error that already happened: registration order is usually, not always,
    the order of the forward pass, so nothing is refused on this guess alone.
    """
    first = _first_layer(model)
    if first is None:
        return None
    name, layer = first
    shape = tuple(x.shape)
    if isinstance(layer, _CONVS):
        spatial = {3: "L", 4: "H, W", 5: "D, H, W"}[layer.weight.ndim]
        want = f"(n, {layer.in_channels}, {spatial})"
        if x.ndim == layer.weight.ndim and shape[1] == layer.in_channels:
            return None
        fix = ""
        if x.ndim == layer.weight.ndim - 1 and layer.in_channels == 1:
            fix = " (add the channel dim: x[:, None])"
        elif x.ndim == layer.weight.ndim and shape[-1] == layer.in_channels:
            fix = " (channels last? move them: x.movedim(-1, 1))"
        return (
            f"its first layer {name!r} ({type(layer).__name__}, in_channels="
            f"{layer.in_channels}) takes {want}{fix}"
        )
    width = layer.in_features
    per_sample = int(np.prod(shape[1:])) if x.ndim >= 2 else 1
    if x.ndim >= 2 and shape[-1] == width:
        return None
    if x.ndim >= 2 and per_sample == width:
        return None  # a flatten before the linear layer would fit; not the cause
    return (
        f"its first layer {name!r} (Linear) takes (n, {width}) features; the data has "
        f"{per_sample} value(s) per sample"
    )


def _input_error(model: nn.Module, x: torch.Tensor, err: BaseException) -> ValueError | None:
    """A ValueError naming what the model expects, for a first forward pass that failed.

    None when the failure is not explained by the input's dtype or shape (the model's own error
    is then re-raised as it was).
    """
    name = type(model).__name__
    said = (
        f" The model raised: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    )
    if not x.is_floating_point() and not x.is_complex():
        return ValueError(
            f"data holds integer values (dtype {x.dtype}), which {name} cannot take; convert "
            "images to floating point and scale them as the model was trained (e.g. "
            "x.float() / 255, then the training normalisation)." + said
        )
    expected = _expected_input(model, x)
    if expected is None:
        return None
    return ValueError(
        f"data gave inputs of shape {tuple(x.shape)} (samples first), which {name} cannot take: "
        f"{expected}." + said
    )


# -- the loop ----------------------------------------------------------------------------------
def _check_int(value: object, name: str, *, allow_none: bool) -> None:
    check(value, name, Interval(Integral, 1, None), *([None] if allow_none else []))


def _layout(
    fc: FeatureCollector,
    features: dict[str, torch.Tensor],
    model: nn.Module,
    *,
    has_labels: bool,
    sample_index: str,
) -> _Layout:
    missing = [name for name in fc.layers if name not in features]
    required = [name for name in missing if name in fc.required_layers]
    if required or not features:
        raise ValueError(
            f"layer(s) {', '.join(map(repr, required or missing))} did not run in the forward "
            f"pass of {type(unwrap_model(model)).__name__}; a module that forward() never calls "
            "has no features (available_layers(model, example) lists those that run)"
        )
    if missing:
        warnings.warn(
            f"{len(missing)} selected module(s) did not run in the forward pass and have no "
            f"features: {', '.join(missing)}",
            UserWarning,
            stacklevel=4,
        )
    clash = [key for key in features if key in _RESERVED]
    if clash:
        raise ValueError(
            f"layer name(s) {clash} collide with the coordinates {_RESERVED}; collect a parent "
            "or child module instead"
        )
    slash = [key for key in features if "/" in key]
    if slash:
        raise ValueError(f"layer name(s) {slash} contain '/', which netCDF names cannot")
    reductions, shapes, types = fc.reductions, fc.output_shapes, fc.module_types
    inner = unwrap_model(model)
    attrs = {
        "model": f"{type(inner).__module__}.{type(inner).__qualname__}",
        "layers": json.dumps(list(features)),
        "reduction": json.dumps({key: reductions[key] for key in features}),
        "sample_index": sample_index,
    }
    if _is_wrapped(model):
        attrs["model_wrapper"] = type(model).__qualname__
    var_attrs = {}
    for key in features:
        layer, _, call = key.partition("#")
        var_attrs[key] = {
            "layer": layer,
            "call": int(call or 0),
            "module_type": types[key],
            "reduction": reductions[key],
            "output_shape": json.dumps(list(shapes[key])),
        }
    return _Layout(
        records=list(features),
        widths={key: f.shape[1] for key, f in features.items()},
        dtypes={
            key: np.dtype(np.float64 if f.dtype == torch.float64 else np.float32)
            for key, f in features.items()
        },
        has_labels=has_labels,
        attrs=attrs,
        var_attrs=var_attrs,
    )


def _run(
    model: nn.Module,
    data: DataSource,
    layers: LayerSelector,
    sink: _Sink,
    *,
    reduce,
    max_samples: int | None,
    device,
    batch_size: int,
) -> _Layout:
    _check_int(batch_size, "batch_size", allow_none=False)
    _check_int(max_samples, "max_samples", allow_none=True)
    if reduce is None:
        raise ValueError(
            "reduce must give (n, d) features here: 'auto', a reduction name, a callable or a "
            "mapping of them; got None (whole outputs are what FeatureCollector(reduce=None) keeps)"
        )
    inner = unwrap_model(model)
    dtype = module_dtype(inner)
    collector = FeatureCollector(model, layers, reduce=reduce)
    source = _batches(data, batch_size)
    layout: _Layout | None = None
    nonfinite: dict[str, torch.Tensor] = {}
    seen = 0
    try:
        with (
            placed_on(inner, device) as target,
            evaluating(inner),
            torch.no_grad(),
            collector as fc,
        ):
            for x, y in source.batches:
                n = x.shape[0] if x.ndim else 0
                if max_samples is not None and seen + n > max_samples:
                    n = max_samples - seen
                    x, y = x[:n], None if y is None else y[:n]
                if n == 0:
                    continue
                labels = _labels_host(y)
                if labels is not None and labels.shape != (n,):
                    # Only one label per sample is a coordinate; masks and multi-labels are not.
                    labels = None
                if layout is None:
                    # The first batch: a failure the input's dtype or shape explains gets a
                    # message naming what the model takes, instead of torch's from deep inside.
                    try:
                        inner(_model_input(x, target, dtype))
                    except (RuntimeError, ValueError, TypeError) as err:
                        explained = _input_error(inner, x, err)
                        if explained is None:
                            raise
                        raise explained from err
                else:
                    inner(_model_input(x, target, dtype))
                features = fc.pop()
                if layout is None:
                    layout = _layout(
                        fc,
                        features,
                        model,
                        has_labels=labels is not None,
                        sample_index=source.sample_index,
                    )
                    sink.start(layout)
                _check_batch(features, layout, n, labels is not None, seen)
                for key, f in features.items():
                    # Counted on the device, read once at the end: no sync per batch.
                    bad = (~torch.isfinite(f)).any(dim=1).sum()
                    nonfinite[key] = nonfinite[key] + bad if key in nonfinite else bad
                sink.add(features, labels, np.arange(seen, seen + n, dtype=np.int64))
                seen += n
                if max_samples is not None and seen >= max_samples:
                    break
    except BaseException:
        sink.abort()
        raise
    if layout is None:
        raise ValueError("data yielded no samples; there is nothing to collect")
    _warn_nonfinite({key: int(c) for key, c in nonfinite.items()}, seen)
    return layout


def _check_batch(features, layout: _Layout, n: int, has_labels: bool, start: int) -> None:
    if list(features) != layout.records:
        raise RuntimeError(
            f"the batch starting at sample {start} recorded {list(features)}, the first batch "
            f"{layout.records}; a module's number of calls per forward pass must not change"
        )
    for key, f in features.items():
        if f.ndim != 2 or f.shape[0] != n:
            raise ValueError(
                f"layer {key!r} gave features of shape {tuple(f.shape)} for a batch of {n}; "
                "collect needs the batch in dim 0 (sequence-first modules need a callable reduce)"
            )
        if f.shape[1] != layout.widths[key]:
            raise ValueError(
                f"layer {key!r} gave {f.shape[1]} features at sample {start}, "
                f"{layout.widths[key]} in the first batch; inputs of varying size need a "
                "reduction to a fixed width (reduce='mean')"
            )
    if has_labels != layout.has_labels:
        raise ValueError(f"the batch starting at sample {start} changes whether labels exist")


def _warn_nonfinite(counts: dict[str, int], seen: int) -> None:
    bad = {key: c for key, c in counts.items() if c}
    if bad:
        listed = ", ".join(f"{key!r}: {c}" for key, c in bad.items())
        warnings.warn(
            f"non-finite (NaN or inf) features in {len(bad)} layer(s), samples affected out of "
            f"{seen}: {listed}. They are kept as they are; statistics over them are NaN.",
            RuntimeWarning,
            stacklevel=4,
        )


# -- public ----------------------------------------------------------------------------------
def collect_features(
    model: nn.Module,
    data: DataSource,
    layers: LayerSelector,
    *,
    reduce: Reduction | Mapping[str, Reduction] = "auto",
    max_samples: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 256,
) -> xr.Dataset:
    """Run data through a model and return the features of the selected layers.

    The model runs under ``torch.no_grad()`` in eval mode; each submodule's train/eval flag, the
    model's device and its hooks are restored afterwards, also when the forward pass raises.

    Parameters
    ----------
    model : nn.Module
        Any module; a DataParallel / DDP wrapper is unwrapped and ``model.module`` runs on one
        device.
    data : DataLoader, Dataset, Tensor (n, ...), ndarray (n, ...) or tuple (x, y)
        A DataLoader is iterated as it is (its own batch size); a Dataset's items are ``x`` or
        ``(x, y, ...)``; a tensor, array or ``(x, y)`` pair is cut into batches of ``batch_size``.
        ``y`` becomes the ``label`` coordinate when it holds one value per sample. Floating
        ``x`` of any dtype is cast to the model's floating parameter dtype (float16, bfloat16
        or float64 data into a float32 model would crash in its first layer); integer ``x`` is
        passed as it is (token ids, or images the model converts itself). Any shape the model
        takes is accepted; when the first forward pass fails on the input's dtype or shape, a
        ValueError names what the model's first conv or linear layer takes.
    layers : str, list of str, or callable
        Dotted ``named_modules()`` names, globs (``"layer4.*"``) or a predicate
        ``(name, module) -> bool``. An unknown name raises :class:`UnknownLayerError`.
    reduce : str, callable, or mapping of layer name to one of those, default "auto"
        How a layer's output (n, ...) becomes features (n, d), computed inside the hook on the
        model's device:

        - ``"flatten"``: every element a unit, (n, prod(...));
        - ``"mean"`` / ``"max"``: over the spatial dims of an (n, c, *spatial) map -> (n, c);
          (n, d) outputs pass unchanged;
        - ``"cls"``: token 0 of an (n, tokens, d) sequence (a ViT's class token) -> (n, d);
        - ``"token_mean"``: the mean over tokens -> (n, d);
        - a callable ``output (n, ...) -> (n, ...)``, flattened to (n, -1);
        - ``"auto"``: (n, d) as is; (n, c, h, w, ...) -> ``"mean"``; (n, t, d) -> ``"cls"``,
          except after a 1-d conv, pool or norm (n, c, length) -> ``"mean"``.

        A mapping sets the reduction per layer; layers it leaves out get ``"auto"``.
    max_samples : int, optional
        Stop after this many samples (the last batch is cut to fit).
    device : str or torch.device, optional
        Where the forward pass runs; default the model's own device. A model elsewhere is moved
        there for the call and moved back afterwards.
    batch_size : int, default 256
        Batch size for a tensor, an array or a Dataset; a DataLoader keeps its own.

    Returns
    -------
    xr.Dataset
        One variable per recorded layer, named by the layer's dotted name, dims
        (``sample``, ``unit_<name>``), float32 (float64 when the model computes in float64).
        A module called ``k`` times per forward pass gives ``name``, ``name#1``, ...
        Coordinates: ``sample`` (int64; the dataset index for a tensor, a Dataset or an
        unshuffled DataLoader, else the position in iteration order, as attr ``sample_index``
        says) and, when the data has one label per sample, ``label``. Attrs (netCDF-safe
        strings): ``model`` (class path), ``layers`` and ``reduction`` (JSON), ``sample_index``;
        each variable has ``layer``, ``call``, ``module_type``, ``reduction`` and
        ``output_shape`` (JSON, per sample, before reduction).

    Raises
    ------
    UnknownLayerError
        A layer name or glob that matches no module; the message lists the closest names.
    ValueError
        Empty data, a selected layer that never runs, bad arguments; integer images or
        inputs of a shape the model cannot take (the message says what it takes, e.g.
        (n, 1, H, W), and how to convert: ``x.float() / 255``, ``x[:, None]``).

    Warns
    -----
    RuntimeWarning
        When features contain NaN or inf. They are kept as they are (so the caller can find
        them), and the warning counts the affected samples per layer.

    See Also
    --------
    collect_moments : constant memory in the number of samples.
    collect_features_to_netcdf : the same Dataset, written batch by batch to disk.

    Examples
    --------
    >>> import torch
    >>> from geomxai.models import cnn2
    >>> model = cnn2(in_channels=1, image_size=8)
    >>> x, y = torch.randn(10, 1, 8, 8), torch.arange(10) % 3
    >>> ds = collect_features(model, (x, y), ["body.3", "body"], batch_size=4)
    >>> dict(ds.sizes)
    {'sample': 10, 'unit_body.3': 8, 'unit_body': 32}
    >>> ds["body.3"].attrs["reduction"], ds["body"].attrs["reduction"]
    ('mean', 'flatten')
    >>> ds.label.values.tolist()
    [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    """
    sink = _MemorySink()
    _run(
        model,
        data,
        layers,
        sink,
        reduce=reduce,
        max_samples=max_samples,
        device=device,
        batch_size=batch_size,
    )
    return sink.result()


def collect_moments(
    model: nn.Module,
    data: DataSource,
    layers: LayerSelector,
    *,
    reduce: Reduction | Mapping[str, Reduction] = "auto",
    max_samples: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 256,
) -> dict[str, FeatureMoments]:
    """Running mean and covariance of each layer's features, in memory constant in n.

    Same arguments and reductions as :func:`collect_features`, but each batch is folded into a
    :class:`FeatureMoments` (count, mean (d,), centred scatter (d, d), float64, merged with Chan
    et al.'s pairwise update) on the model's device and then dropped, so memory is O(d^2) per
    layer whatever the number of samples. Choose a reduction that keeps d moderate: a flattened
    conv map of 100k units would need a 100k x 100k scatter matrix.

    Returns
    -------
    dict of str to FeatureMoments
        By record name (``name``, ``name#1``, ... as in :func:`collect_features`), in call
        order. ``moments[name].covariance()`` equals ``np.cov`` of the collected features.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 5), nn.Tanh())
    >>> x = torch.randn(50, 3)
    >>> m = collect_moments(net, x, "1", batch_size=16)["1"]
    >>> ds = collect_features(net, x, "1")
    >>> m.count, bool(np.allclose(m.covariance(), np.cov(ds["1"].values, rowvar=False)))
    (50, True)
    """
    sink = _MomentsSink()
    _run(
        model,
        data,
        layers,
        sink,
        reduce=reduce,
        max_samples=max_samples,
        device=device,
        batch_size=batch_size,
    )
    return sink.moments


def collect_features_to_netcdf(
    model: nn.Module,
    data: DataSource,
    layers: LayerSelector,
    path: str | os.PathLike,
    *,
    reduce: Reduction | Mapping[str, Reduction] = "auto",
    max_samples: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 256,
) -> Path:
    """Like :func:`collect_features`, but append each batch to a netCDF file instead of memory.

    The file is netCDF-4 (HDF5, written with h5netcdf, which needs h5py) with an unlimited
    ``sample`` dimension; it is written under a unique temporary name beside ``path`` and
    renamed when complete, so a failed run leaves no file under ``path`` (an existing file there is replaced only on
    success). ``xr.open_dataset(path)`` gives the Dataset :func:`collect_features` would return,
    values, dims, coordinates and attrs alike; open it with ``chunks={}`` to read lazily with dask.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"path must be in an existing directory; got {str(path)!r}")
    rows = data.batch_size or batch_size if isinstance(data, DataLoader) else batch_size

    def write(tmp: Path) -> None:
        sink = _NetCDFSink(tmp, rows)
        _run(
            model,
            data,
            layers,
            sink,
            reduce=reduce,
            max_samples=max_samples,
            device=device,
            batch_size=batch_size,
        )
        try:
            sink.finish()
        except BaseException:
            sink.abort()
            raise

    return atomic_path(path, write)
