"""What users bring as data, as tensors: a ``Dataset``, a ``DataLoader``, an ``(inputs, labels)``
pair, or inputs alone."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from numbers import Integral

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from geomxai._checks import Interval, check

_INPUT_KEYS = ("image", "images", "input", "inputs", "x", "pixel_values")
_LABEL_KEYS = ("label", "labels", "target", "targets", "y")


def _as_input(x, transform: Callable | None) -> torch.Tensor:
    """One sample (or a batch) as a float tensor; PIL images and uint8 arrays scaled to [0, 1]."""
    if transform is not None:
        x = transform(x)
    if not isinstance(x, torch.Tensor):
        if hasattr(x, "mode") and hasattr(x, "size") and hasattr(x, "convert"):  # a PIL image
            from torchvision.transforms.functional import to_tensor

            return to_tensor(x)
        x = torch.as_tensor(np.asarray(x))
    if x.dtype == torch.uint8:
        # The ToTensor convention: 8-bit pixel values to [0, 1].
        return x.to(torch.float32) / 255.0
    return x if x.is_floating_point() else x.to(torch.float32)


def _split_item(item) -> tuple[object, object | None]:
    """``(input, label or None)`` of one dataset item or one loader batch."""
    if isinstance(item, Mapping):
        x = next((item[k] for k in _INPUT_KEYS if k in item), None)
        if x is None:
            raise ValueError(
                f"a data item that is a mapping must hold its input under one of {_INPUT_KEYS}; "
                f"got keys {sorted(map(str, item))}"
            )
        return x, next((item[k] for k in _LABEL_KEYS if k in item), None)
    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError("a data item must not be empty; expected (input, label) or input")
        return item[0], item[1] if len(item) > 1 else None
    return item, None


def _labels_tensor(labels) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        if y.is_floating_point() and torch.equal(y, y.round()):
            return y.to(torch.long)
        raise ValueError(
            f"labels must be integer class indices; got dtype {y.dtype} (one-hot or soft labels: "
            "pass labels.argmax(1))"
        )
    return y.to(torch.long).reshape(-1)


def _from_items(items: Iterable, limit: int | None, transform, batched: bool):
    xs, ys, unlabelled = [], [], False
    count = 0
    for item in items:
        x, y = _split_item(item)
        if batched:
            batch = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
            samples = list(batch.unbind(0))
            labels = None if y is None else list(_labels_tensor(y))
        else:
            samples, labels = [x], None if y is None else [y]
        for i, sample in enumerate(samples):
            if limit is not None and count >= limit:
                break
            xs.append(_as_input(sample, transform))
            if labels is None:
                unlabelled = True
            else:
                ys.append(int(labels[i]))
            count += 1
        if limit is not None and count >= limit:
            break
    if not xs:
        raise ValueError("the data is empty; expected at least one sample")
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise ValueError(
            f"every sample must have the same shape; got {sorted(shapes)[:3]} (resize the images "
            "with a transform, e.g. torchvision.transforms.Resize((64, 64)))"
        )
    labels = None if unlabelled else torch.as_tensor(ys, dtype=torch.long)
    return torch.stack(xs), labels


def as_tensors(
    data,
    *,
    limit: int | None = None,
    labels: bool = True,
    transform: Callable | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs and labels of what a user holds, as two tensors.

    Parameters
    ----------
    data : Dataset, DataLoader, (inputs, labels), or inputs
        - a ``torch.utils.data.Dataset`` whose items are ``(input, label, ...)``, an input alone,
          or a mapping with an ``image``/``input``/``x`` and a ``label``/``target``/``y`` key;
        - a ``DataLoader`` (its batches are read the same way, in the order it yields them; a
          shuffling loader gives other samples on every call);
        - a pair ``(inputs, labels)`` of tensors or arrays, inputs (n, ...) and labels (n,);
        - inputs alone, a tensor or array (n, ...): unlabelled.

        Inputs may be tensors, arrays or PIL images; PIL images and ``uint8`` values are
        scaled to [0, 1] as ``torchvision.transforms.ToTensor`` does.
    limit : int, optional
        Read at most this many samples (the first ones).
    labels : bool
        False drops the labels even where the data has them.
    transform : callable, optional
        Applied to every sample (one input, before it is stacked): a resize, a normalisation
        (``torchvision.transforms.Normalize(mean, std)``), a timm data config's transform.

    Returns
    -------
    inputs : Tensor (n, ...) of float
    labels : Tensor (n,) of int64, or None
        None when ``labels=False`` or the data has none.

    Examples
    --------
    >>> x, y = as_tensors((torch.zeros(5, 3), torch.arange(5)), limit=3)
    >>> tuple(x.shape), y.tolist()
    ((3, 3), [0, 1, 2])
    >>> x, y = as_tensors(torch.zeros(4, 1, 8, 8))
    >>> tuple(x.shape), y
    ((4, 1, 8, 8), None)
    """
    check(limit, "limit", Interval(Integral, 1, None), None)
    if isinstance(data, (str, bytes)):
        raise TypeError(
            "data must be a Dataset, a DataLoader, an (inputs, labels) pair or inputs; a dataset "
            f"name goes to geomxai.data.load_dataset; got {data!r}"
        )
    if isinstance(data, DataLoader):
        x, y = _from_items(data, limit, transform, batched=True)
    elif isinstance(data, Dataset):
        n = len(data)  # type: ignore[arg-type]
        stop = n if limit is None else min(n, limit)
        x, y = _from_items((data[i] for i in range(stop)), None, transform, batched=False)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        inputs, targets = data
        inputs = inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(np.asarray(inputs))
        targets = _labels_tensor(targets)
        if len(targets) != len(inputs):
            raise ValueError(
                f"inputs and labels must have one label per sample; got {len(inputs)} inputs and "
                f"{len(targets)} labels"
            )
        x, y = _from_items([(inputs, targets)], limit, transform, batched=True)
    elif isinstance(data, (torch.Tensor, np.ndarray)):
        x, y = _from_items([data], limit, transform, batched=True)
    else:
        raise TypeError(
            "data must be a Dataset, a DataLoader, an (inputs, labels) pair or inputs (a tensor "
            f"or array); got {type(data).__name__}"
        )
    return x, (y if labels else None)
