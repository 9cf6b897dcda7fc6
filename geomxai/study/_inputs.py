"""What :func:`geomxai.study.analyze_model` accepts, made into a model and a probe.

A model is a spec string (``torchvision:NAME``, ``timm:NAME``, a geomxai model name, a
checkpoint path) or an ``nn.Module``; data is a dataset name, a ``Dataset``, a ``DataLoader``,
an ``(inputs, labels)`` pair or inputs alone. The head is checked against the data's classes
before any work, with the fix named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Subset

from geomxai.data import as_tensors, load_dataset
from geomxai.models import MODELS
from geomxai.study._probe import Probe
from geomxai.study._sources import (
    SPEC_PREFIXES,
    ModelSource,
    head_size,
    is_model_file,
    load_state_dict_file,
    output_count,
    replace_head,
    resolve_model,
    timm_preprocessing,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The ImageNet channel statistics torchvision's and timm's ImageNet weights were trained with."""

PROBE_SPLITS = ("test", "all")
"""Where a dataset read by name gives its probe: the held-out test split, or every sample."""

# Datasets whose loader takes an image size (the others have a fixed one).
_SIZED = ("imagefolder:", "caltech101")


class _ImagenetNormalize:
    """ImageNet normalisation of RGB images, refusing other channel counts in one clear line
    (torchvision's ``Normalize`` fails on grey images with a broadcast error)."""

    def __init__(self):
        from torchvision.transforms import Normalize

        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def __call__(self, x):
        channels = x.shape[-3] if x.ndim >= 3 else None
        if channels != 3:
            raise ValueError(
                "normalize='imagenet' (--normalize imagenet) takes RGB images with 3 channels; "
                f"got images of shape {tuple(x.shape)}. Use --normalize none for grey or other "
                "data, or give your own transform"
            )
        return self.normalize(x)

    def __repr__(self) -> str:
        return repr(self.normalize)


def imagenet_normalization() -> Callable:
    """``torchvision.transforms.Normalize`` with the ImageNet mean and std, for RGB images in
    [0, 1]; other channel counts raise a ValueError that names the fix."""
    return _ImagenetNormalize()


@dataclass(frozen=True)
class DataSource:
    """The probe and what the results should say about the data it came from."""

    probe: Probe
    name: str
    num_classes: int | None  # None: the data does not say (tensors without class names)
    # A dataset that resized its images on loading: (the first image's (h, w) before, or None
    # where there is no file to read it from, the side it was loaded at).
    loaded: tuple[tuple[int, int] | None, int] | None = None


def _compose(*steps):
    steps = [s for s in steps if s is not None]
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]
    from torchvision.transforms import Compose

    return Compose(steps)


def _resize(image_size: int | None):
    if image_size is None:
        return None
    from torchvision.transforms import Resize

    return Resize((int(image_size), int(image_size)), antialias=True)


def _classes_of(data) -> int | None:
    """The class count a Dataset or DataLoader declares (``classes``, as ImageFolder has)."""
    for obj in (data, getattr(data, "dataset", None)):
        while obj is not None:
            classes = getattr(obj, "classes", None)
            if classes is not None:
                return len(classes)
            obj = getattr(obj, "dataset", None)  # Subset, a loader's dataset
    return None


def preprocessed_data(
    data,
    model,
    *,
    size: int,
    labels: bool,
    transform: Callable | None,
    image_size: int | None,
    normalize,
    where: str,
    split: str = "test",
    stacklevel: int = 2,
) -> tuple[DataSource, dict]:
    """:func:`resolve_data` through the model's preprocessing (:func:`preprocessing`), recording
    what it did: the data source and the preprocessing attrs. ``stacklevel`` is
    ``warnings.warn``'s, counted from this function, for a resize warning to point at the
    user's line."""
    from geomxai.study._preprocess import RecordingTransform, record

    steps, preferred = preprocessing(model, image_size, transform, normalize)
    # Data not read by name is resized to image_size inside the recording, so that resize is
    # on record (and warned about) as a transform's is; a dataset read by name says what its
    # loader did (DataSource.loaded).
    resize_here = image_size is not None and not isinstance(data, str)
    if resize_here:
        steps = _compose(_resize(image_size), steps)
    recorder = None if steps is None else RecordingTransform(steps)
    source = resolve_data(
        data,
        size=size,
        labels=labels,
        transform=recorder,
        image_size=None if resize_here else image_size,
        preferred_size=preferred,
        split=split,
    )
    return source, record(recorder, where=where, stacklevel=stacklevel + 1, loaded=source.loaded)


def resolve_data(
    data,
    *,
    size: int,
    labels: bool,
    transform: Callable | None,
    image_size: int | None,
    preferred_size: int | None = None,
    split: str = "test",
) -> DataSource:
    """The first ``size`` samples of ``data`` as a :class:`Probe` (see :func:`analyze_model`).

    ``split`` (data read by name): ``"test"`` takes the probe from the held-out test split when
    labelled; ``"all"`` from every sample (test split first), for a folder too small to hold
    one out (accuracy is then measured on images the model may have been trained on).

    ``image_size`` is the user's: images read by name are loaded at it (only the datasets that
    resize on loading take one), others are resized to it. ``preferred_size`` is the model's
    (a timm data config's input size): datasets that resize on loading use it when the user
    gave none.
    """
    if split not in PROBE_SPLITS:
        raise ValueError(f"probe split must be one of {', '.join(PROBE_SPLITS)}; got {split!r}")
    if isinstance(data, str):
        options = {}
        if image_size is not None:
            if not data.startswith(_SIZED):
                raise ValueError(
                    f"image_size applies to imagefolder:PATH and caltech101, whose images are "
                    f"resized on loading; {data!r} has a fixed size (resize with transform=)"
                )
            options["image_size"] = int(image_size)
        elif preferred_size is not None and data.startswith(_SIZED):
            options["image_size"] = int(preferred_size)
        bundle = load_dataset(data, **options)
        # Labelled: held-out test samples, as the training studies use. Unlabelled: nothing is
        # evaluated, so the training split serves as well (after the test one).
        source = bundle.test
        if not labels or split == "all":
            source = ConcatDataset([bundle.test, bundle.train])
        images, targets = as_tensors(source, limit=size, labels=labels, transform=transform)
        masks = None
        if labels and bundle.test_masks is not None:
            masks = bundle.test_masks[: len(images)].clone()
            if tuple(masks.shape[1:]) != tuple(images.shape[-2:]):
                masks = None  # a transform moved the pixels the masks mark
        probe = Probe(images.to(torch.float32), targets, masks, data)
        loaded = None
        if data.startswith(_SIZED):
            loaded = (_file_size(source), int(bundle.input_shape[-1]))
        return DataSource(probe, data, bundle.num_classes, loaded)
    if isinstance(data, (bytes, Path)):
        raise TypeError(
            f"data must be a dataset name, a Dataset, a DataLoader or tensors; got {data!r} "
            "(a folder of images is 'imagefolder:PATH')"
        )
    if split != "test":
        raise ValueError(
            f"probe split {split!r} applies to a dataset read by name (imagefolder:PATH, ...); "
            "a Dataset, DataLoader or tensors you pass are used as they are"
        )
    steps = _compose(_resize(image_size), transform)
    images, targets = as_tensors(data, limit=size, labels=labels, transform=steps)
    name = type(data).__name__ if not isinstance(data, (tuple, list)) else "tensors"
    if isinstance(data, DataLoader):
        name = f"DataLoader({type(data.dataset).__name__})"
    probe = Probe(images.to(torch.float32).contiguous(), targets, None, name)
    return DataSource(probe, name, _classes_of(data))


def _file_size(dataset) -> tuple[int, int] | None:
    """``(height, width)`` of the image file behind a dataset's first sample (an
    ``ImageFolder``, through ``Subset`` and ``ConcatDataset``), before any loading transform;
    None where there is no file to read it from (the header only is read)."""
    index = 0
    while isinstance(dataset, (ConcatDataset, Subset)):
        if isinstance(dataset, Subset):
            if len(dataset.indices) == 0:
                return None
            index, dataset = int(dataset.indices[index]), dataset.dataset
        else:
            parts = [d for d in dataset.datasets if len(d)]
            if not parts:
                return None
            dataset = parts[0]
    samples = getattr(dataset, "samples", None)
    if not samples:
        return None
    from PIL import Image

    try:
        with Image.open(samples[index][0]) as image:
            width, height = image.size
    except (OSError, ValueError):
        return None
    return int(height), int(width)


def probe_advice(data, *, got: int, asked: int, split: str) -> str | None:
    """What would enlarge a probe that the data, not ``probe_size``, kept at ``got`` samples.

    None when the probe has the ``asked`` size (a larger ``probe_size`` then helps, as the
    warning's default advice says).

    Examples
    --------
    >>> print(probe_advice("imagefolder:birds", got=12, asked=512, split="test"))
    the data gave only 12 samples (of probe_size=512), so a larger probe_size cannot help: analyse every sample instead of the held-out test split with --probe-split all (probe_split='all'), or add data
    >>> probe_advice("digits", got=512, asked=512, split="test") is None
    True
    """
    if got >= asked:
        return None
    text = f"the data gave only {got} samples (of probe_size={asked}), so a larger probe_size "
    text += "cannot help"
    if isinstance(data, str) and split == "test":
        return (
            f"{text}: analyse every sample instead of the held-out test split with "
            "--probe-split all (probe_split='all'), or add data"
        )
    return f"{text}: add data"


def _head_refusal(outputs: int, classes: int, what: str) -> ValueError:
    return ValueError(
        f"{what} has {outputs} outputs but the data has {classes} classes, so its accuracy and "
        f"every fidelity metric would compare logits with the wrong labels. Pass "
        f"num_classes={classes} (--num-classes {classes}) to rebuild the head at random for "
        f"these classes (the geometry of the layers below it is unchanged), or analyse the "
        "geometry only without labels (labels=False, --no-labels)"
    )


def _check_head(model: nn.Module, what: str, data: DataSource, labelled: bool) -> None:
    """Refuse a head whose size does not fit the labels, before any analysis."""
    if not labelled or data.probe.labels is None:
        return
    outputs = output_count(model, data.probe.images)
    if outputs is None:
        return
    if data.num_classes is not None and outputs != data.num_classes:
        raise _head_refusal(outputs, data.num_classes, what)
    seen = int(data.probe.labels.max()) + 1
    if data.num_classes is None and seen > outputs:
        raise _head_refusal(outputs, seen, what)


CHANNELS_LAST_FIX = (
    "images look channels-last (N, H, W, C); permute to (N, C, H, W): x.permute(0, 3, 1, 2)"
)


def check_image_layout(images: torch.Tensor, model: nn.Module | None = None) -> None:
    """Refuse image batches laid out (N, H, W, C), naming the permute that fixes them.

    Run before anything feeds the model (a head check runs one sample), so the user reads this
    rather than a convolution's "expected input to have 3 channels, but got 32". A batch is
    taken for channels-last when its last dim is a channel count (1, 3 or 4) and dims 1 and 2
    are not; a module whose first convolution does take ``shape[1]`` channels is trusted.
    """
    if images.ndim != 4:
        return
    n, c, h, w = images.shape
    if w not in (1, 3, 4) or c <= 4 or h <= 4:
        return
    if model is not None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is not None and first.in_channels == c:
            return
    raise ValueError(f"{CHANNELS_LAST_FIX} (got images of shape {tuple(images.shape)})")


def _spec_input(data: DataSource) -> tuple[int, int]:
    """``(in_channels, image_size)`` the data's images have (for building a geomxai model)."""
    x = data.probe.images
    if x.ndim == 4:
        return int(x.shape[1]), int(x.shape[-1])
    return int(x.shape[1]) if x.ndim == 3 else 3, 32


def resolve_source(
    model,
    data: DataSource,
    *,
    weights,
    num_classes: int | None,
    labels: bool,
) -> ModelSource:
    """The model of :func:`analyze_model`, its head checked against (or rebuilt for) the data."""
    labelled = labels and data.probe.labels is not None
    check_image_layout(data.probe.images, model if isinstance(model, nn.Module) else None)
    if isinstance(model, nn.Module):
        if weights is not None:
            state = load_state_dict_file(weights)
            model = _with_state(model, state, weights, num_classes)
        name = type(model).__name__
        source = "the module's own" if weights is None else str(weights)
        outputs = output_count(model, data.probe.images)
        if num_classes is not None and outputs is not None and outputs != num_classes:
            model = replace_head(model, num_classes)
            source += f", head rebuilt at random for {num_classes} classes"
        _check_head(model, name, data, labelled)
        return ModelSource(model, name, source)
    if not isinstance(model, str):
        raise TypeError(
            "model must be a spec (torchvision:NAME, timm:NAME, a geomxai model name, a "
            f"checkpoint path) or an nn.Module; got {type(model).__name__}"
        )
    in_channels, image_size = _spec_input(data)
    is_checkpoint = (
        not model.startswith(SPEC_PREFIXES) and model not in MODELS and not is_model_file(model)
    )
    classes = num_classes
    theirs = None
    if weights is not None:
        theirs = head_size(load_state_dict_file(weights))
    if classes is None and weights is None and labelled and not is_checkpoint:
        # Random init: a head made for the data's classes (a checkpoint keeps its own head, and
        # is checked against them below).
        classes = data.num_classes
        if classes is None:
            classes = int(data.probe.labels.max()) + 1
    net = resolve_model(
        model,
        weights=weights,
        num_classes=classes,
        in_channels=in_channels,
        image_size=image_size,
        rebuild_head=num_classes is not None,
    )
    if weights is not None:
        source = str(weights)
        if num_classes is not None and theirs is not None and theirs != num_classes:
            source += f", head rebuilt at random for {num_classes} classes (theirs: {theirs})"
    else:
        source = "the checkpoint's own" if is_checkpoint else "random init"
    _check_head(net, model, data, labelled)
    return ModelSource(net, model, source)


def _with_state(model: nn.Module, state: dict, weights, num_classes) -> nn.Module:
    """A copy of ``model`` with ``state`` loaded (its head left at init when it is rebuilt)."""
    import copy

    from geomxai.study._sources import _load, _mismatched

    model = copy.deepcopy(model)
    drop = _mismatched(model, state)
    if drop and num_classes is None:
        raise ValueError(
            f"the weights in {str(weights)!r} do not fit {type(model).__name__} at "
            f"{', '.join(drop[:4])} (a head of another size?); pass num_classes= to rebuild the "
            "head, or give weights of this architecture"
        )
    _load(model, state, name=type(model).__name__, weights=weights, drop=drop)
    return model


def preprocessing(model, image_size: int | None, transform, normalize: str | None):
    """``(transform, preferred image size)`` to read the data with.

    ``transform`` given: it is used as it is. Else ``normalize``: ``"imagenet"`` (ImageNet mean
    and std), ``"none"`` (nothing), or ``None``: a timm model's own data config (resize, crop,
    normalisation), nothing for the others.
    """
    if normalize not in (None, "none", "imagenet"):
        raise ValueError(f"normalize must be None, 'none' or 'imagenet'; got {normalize!r}")
    if transform is not None:
        if normalize not in (None, "none"):
            raise ValueError("give transform= or normalize=, not both")
        return transform, None
    if normalize == "imagenet":
        return imagenet_normalization(), None
    if normalize == "none":
        return None, None
    # The config's transform resizes itself; images read by name are loaded at its size.
    return timm_preprocessing(model, image_size)
