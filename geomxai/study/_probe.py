"""The probe set (:class:`Probe`, :func:`make_probe`) and probe honesty: what a probe of ``n``
samples can and cannot measure, said once.

The minimums are declared in :mod:`geomxai.schema` (:func:`~geomxai.schema.min_samples`,
:data:`~geomxai.schema.SAMPLES_PER_UNIT`); this module applies them to a measured Dataset (NaN
with a reason below a variable's minimum) and words the warnings, so :func:`measure`,
:func:`analyze_run` and :func:`analyze_model` say the same thing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from geomxai import schema

if TYPE_CHECKING:
    import torch


class ProbeSizeWarning(UserWarning):
    """The probe is too small for some metrics: they are NaN (below their minimum) or biased
    (a layer with more than half as many units as probe samples). Filter it with
    ``warnings.simplefilter("ignore", ProbeSizeWarning)`` once you know."""


_MORE = "use a larger probe (probe_size=, --probe-size) or more data"


def below_minimum_reason(name: str, n: int) -> str | None:
    """Why ``name`` is NaN on a probe of ``n`` samples, or None when ``n`` is enough.

    Examples
    --------
    >>> below_minimum_reason("probe_acc", 2)
    'a probe of 2 samples is below the 50 that probe_acc needs (geomxai.schema.MIN_ACCURACY_SAMPLES); use a larger probe (probe_size=, --probe-size) or more data'
    >>> below_minimum_reason("probe_acc", 64) is None
    True
    """
    need = schema.min_samples(name)
    if need is None or n >= need:
        return None
    constant = (
        "MIN_ACCURACY_SAMPLES" if need == schema.MIN_ACCURACY_SAMPLES else "MIN_GEOMETRY_SAMPLES"
    )
    return (
        f"a probe of {n} samples is below the {need} that {name} needs "
        f"(geomxai.schema.{constant}); {_MORE}"
    )


def apply_minimums(ds: xr.Dataset, n: int, *, skip=()) -> xr.Dataset:
    """``ds`` with every variable whose minimum exceeds ``n`` set to NaN, saying why.

    A reason the variable already had is replaced: below its minimum the value is not reported
    whatever else happened to it. Variables in ``skip`` (not measured at all, for a reason of
    their own) are left as they are.
    """
    for name in list(ds.data_vars):
        if name not in schema.VARIABLES or name in skip:
            continue
        reason = below_minimum_reason(str(name), n)
        if reason is None:
            continue
        attrs = {**ds[name].attrs, "nan_reason": reason}
        ds[name] = xr.DataArray(
            np.full(ds[name].shape, np.nan), dims=ds[name].dims, coords=ds[name].coords, attrs=attrs
        )
    return ds


def probe_messages(
    n: int, widths: Mapping[str, int], *, labelled: bool = True, advice: str | None = None
) -> list[str]:
    """The warnings a probe of ``n`` samples earns for layers of ``widths`` units.

    One message for the geometry minimum, one for the accuracy minimum (labelled data only),
    and one per layer with fewer than :data:`~geomxai.schema.SAMPLES_PER_UNIT` samples per unit.
    ``advice`` replaces the default fix ("use a larger probe ...") where that cannot help (the
    data ran out before ``probe_size``).

    Examples
    --------
    >>> probe_messages(600, {"body": 392})
    ["a probe of 600 samples is below 2 x 392 = 784 for layer 'body': its spectrum metrics are biased (kept, not NaN); use a probe of at least 784"]
    >>> probe_messages(1000, {"body": 392})
    []
    """
    out = []
    more = advice or _MORE
    if n < schema.MIN_GEOMETRY_SAMPLES:
        out.append(
            f"a probe of {n} samples is below the {schema.MIN_GEOMETRY_SAMPLES} the geometry, "
            f"entanglement and similarity metrics need: they are NaN; {more}"
        )
    if labelled and n < schema.MIN_ACCURACY_SAMPLES:
        out.append(
            f"a probe of {n} samples is below the {schema.MIN_ACCURACY_SAMPLES} the accuracy "
            f"and masking metrics need: they are NaN; {more}"
        )
    if n >= schema.MIN_GEOMETRY_SAMPLES:
        for layer, d in widths.items():
            need = schema.SAMPLES_PER_UNIT * int(d)
            if n < need:
                out.append(
                    f"a probe of {n} samples is below {schema.SAMPLES_PER_UNIT} x {int(d)} = "
                    f"{need} for layer {layer!r}: its spectrum metrics are biased (kept, not "
                    f"NaN); use a probe of at least {need}"
                )
    return out


def warn_probe(
    n: int, widths: Mapping[str, int], *, labelled: bool = True, advice=None, stacklevel=3
) -> None:
    """:func:`probe_messages` as :class:`ProbeSizeWarning` warnings."""
    for message in probe_messages(n, widths, labelled=labelled, advice=advice):
        warnings.warn(message, ProbeSizeWarning, stacklevel=stacklevel)


def widths_of(ds: xr.Dataset) -> dict[str, int]:
    """``{layer: units}`` from a measured Dataset's ``n_units`` (empty when it has none)."""
    if "n_units" not in ds or "layer" not in ds["n_units"].dims:
        return {}
    units = ds["n_units"]
    extra = [d for d in units.dims if d != "layer"]
    if extra:
        units = units.max(extra)
    return {
        str(layer): int(value)
        for layer, value in zip(units["layer"].values, units.values, strict=True)
        if np.isfinite(value)
    }


@dataclass
class Probe:
    """The fixed probe set: inputs, labels and (for ``blocks``) ground-truth masks.

    ``images`` are the model's inputs: image batches (n, c, h, w), sequences (n, c, t) or
    tabular rows (n, d). ``labels=None`` is an unlabelled probe: :func:`measure` then measures
    the geometry only (accuracy, saliency and fidelity are NaN and say why).
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    masks: torch.Tensor | None = None
    dataset: str = ""
    extra: dict = field(default_factory=dict)


def make_probe(dataset: str, size: int, **dataset_options) -> Probe:
    """The first ``size`` test images of a dataset: the same images at every checkpoint."""
    import torch

    # Here, not at the top: the datasets load torchvision, which the probe's checks do not need.
    from geomxai.data import dataset_tensors, load_dataset

    bundle = load_dataset(dataset, **dataset_options)
    images, labels = dataset_tensors(bundle.test)
    n = min(size, len(labels))
    masks = None if bundle.test_masks is None else bundle.test_masks[:n].clone()
    # Copies, not views: a view pickles (and is scattered to every dask worker) with the whole
    # test set behind it.
    images = images[:n].to(torch.float32, copy=True)
    return Probe(images, labels[:n].to(torch.long, copy=True), masks, dataset)
