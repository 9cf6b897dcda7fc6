"""Checkpoints of any training loop, analysed as a run: ``analyze_checkpoints``.

A researcher's own loop saves ``state_dict``s (``torch.save`` or safetensors) or keeps them in
memory; with the model they fit and a probe, :func:`analyze_checkpoints` measures every one as
:func:`~geomxai.study.analyze_run` measures a geomxai run directory, dynamics included (axis
swaps, saliency stability, CKA across checkpoints), and returns the same per-epoch Dataset.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from numbers import Integral
from pathlib import Path

import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from geomxai import schema
from geomxai._checks import Interval, check
from geomxai.study._measure import measure
from geomxai.study._nan import _scalar
from geomxai.study._options import AnalysisOptions
from geomxai.study._probe import Probe
from geomxai.study._provenance import stamp
from geomxai.study._runs import _over_epochs
from geomxai.study._saliency_method import _check_per_checkpoint_method

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
"""File suffixes a folder of checkpoints is read for."""

_STRIPPED_PREFIXES = ("module.", "_orig_mod.")
"""Key prefixes that DataParallel/DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) add."""

_GLOB = re.compile(r"[*?\[]")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DIGITS = re.compile(r"(\d+)")
# "epoch3", "epoch=3", "epoch_3", "global_step-120": the key right before a number.
_KEYED = re.compile(r"(?:^|[^a-z])(epoch|step)s?[=_\-]?$", re.IGNORECASE)


def _natural(path: Path) -> list:
    """A file name's sort key in natural order: ``ckpt_2`` before ``ckpt_10``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in _DIGITS.split(path.name)]


def _files(pattern) -> list[Path]:
    """A folder's checkpoint files, a glob's matches (each in natural order of the file names:
    ``ckpt_2`` before ``ckpt_10``), or one file."""
    path = Path(pattern)
    if path.is_dir():
        found = sorted(
            (p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file()),
            key=_natural,
        )
        if not found:
            raise FileNotFoundError(
                f"no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}) in the folder {str(path)!r}"
            )
        return found
    if _GLOB.search(str(pattern)):
        found = sorted(
            (Path(p) for p in glob.glob(str(pattern)) if Path(p).is_file()), key=_natural
        )
        if not found:
            raise FileNotFoundError(f"no checkpoint file matches {str(pattern)!r}")
        return found
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}")
    return [path]


def step_from_name(path, index: str = "epoch") -> int:
    """The step or epoch in a checkpoint's file name.

    A number keyed by ``index`` (``epoch3``, ``epoch=3``, ``step_120``) wins; else the one
    number keyed by the other of ``epoch`` and ``step``; else the name's only number. Decimals
    such as the ``0.91`` of ``acc0.91`` are numbers too, never a step.

    Parameters
    ----------
    path : path-like
        The checkpoint file (only its name is read).
    index : {"epoch", "step"}
        Which number a name keyed both ways gives (Lightning's ``epoch=3-step=120.ckpt``).

    Returns
    -------
    int

    Raises
    ------
    ValueError
        The name holds no number, or several that no ``epoch``/``step`` key tells apart (the
        message names the fix: give the steps).

    Examples
    --------
    >>> step_from_name("model_epoch3_acc0.91.pt"), step_from_name("ckpt-step=1200.safetensors")
    (3, 1200)
    >>> step_from_name("epoch=3-step=120.ckpt"), step_from_name("epoch=3-step=120.ckpt", "step")
    (3, 120)
    >>> step_from_name("epoch_0003.pt")
    3
    """
    name = Path(path).name
    stem = Path(path).stem
    fix = (
        "give each checkpoint's step: steps=[...] in the natural order of the file names "
        "(--steps 1,2,3 on the command line), a mapping {step: checkpoint}, or a list of "
        "(step, checkpoint) pairs"
    )
    found = []  # (key or None, text of the number)
    for match in _NUMBER.finditer(stem):
        key = _KEYED.search(stem[: match.start()])
        found.append((key.group(1).lower() if key else None, match.group(0)))
    if not found:
        raise ValueError(
            f"cannot read a step or epoch from the file name {name!r} (it holds no number); {fix}"
        )
    other = "step" if index == "epoch" else "epoch"
    for key in (index, other):
        keyed = {text for k, text in found if k == key}
        if len(keyed) == 1:
            text = keyed.pop()
            if text.isdigit():
                return int(text)
            raise ValueError(
                f"the file name {name!r} gives {key} {text}, not a whole number; {fix}"
            )
        if len(keyed) > 1:
            raise ValueError(
                f"the file name {name!r} holds several {key} numbers ({', '.join(sorted(keyed))})"
                f"; {fix}"
            )
    if len(found) == 1 and found[0][1].isdigit():
        return int(found[0][1])
    numbers = ", ".join(text for _, text in found)
    raise ValueError(
        f"cannot tell the step or epoch in the file name {name!r}: it holds the numbers "
        f"{numbers} and none is keyed by 'epoch' or 'step' (as in epoch3 or step=120); {fix}"
    )


def _is_state(obj) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) for k in obj)


def _entries(checkpoints, steps, index: str = "epoch") -> list[tuple[int, object]]:
    """``(step, checkpoint)`` pairs in step order from every accepted form."""
    if isinstance(checkpoints, (str, os.PathLike)):
        checkpoints = _files(checkpoints)
    if _is_state(checkpoints):
        checkpoints = [checkpoints]  # one state_dict
    own_steps = isinstance(checkpoints, Mapping)
    if own_steps:
        pairs = list(checkpoints.items())
    elif isinstance(checkpoints, Sequence) and not isinstance(checkpoints, (str, bytes)):
        items = list(checkpoints)
        paired = items and all(
            isinstance(it, tuple) and len(it) == 2 and not isinstance(it[0], (str, os.PathLike))
            for it in items
        )
        if paired:
            own_steps, pairs = True, items
        elif steps is not None:
            steps = list(steps)
            if len(steps) != len(items):
                raise ValueError(
                    f"steps must give one step per checkpoint; got {len(steps)} steps for "
                    f"{len(items)} checkpoints"
                )
            pairs = list(zip(steps, items, strict=True))
        else:
            pairs = []
            for item in items:
                if not isinstance(item, (str, os.PathLike)):
                    raise ValueError(
                        "checkpoints held in memory carry no step; give a mapping {step: "
                        "state_dict}, a list of (step, state_dict) pairs, or steps=[...]"
                    )
                pairs.append((step_from_name(item, index), item))
    else:
        raise TypeError(
            "checkpoints must be a path, a folder, a glob, a list of paths or state_dicts, a "
            f"mapping {{step: checkpoint}} or a list of (step, checkpoint) pairs; got "
            f"{type(checkpoints).__name__}"
        )
    if steps is not None and own_steps:
        raise ValueError("steps= goes with a plain list of checkpoints, not with given steps")
    out = []
    for step, ckpt in pairs:
        if not Interval(Integral, None, None).accepts(step):
            raise TypeError(f"a checkpoint's step must be an int; got {step!r}")
        out.append((int(step.__index__()), ckpt))
    if not out:
        raise ValueError("analyze_checkpoints needs at least one checkpoint")
    seen = [s for s, _ in out]
    duplicated = sorted({s for s in seen if seen.count(s) > 1})
    if duplicated:
        raise ValueError(
            f"two checkpoints share the step(s) {duplicated}; give each its own (a mapping "
            "{step: checkpoint}, or file names with distinct numbers)"
        )
    return sorted(out, key=lambda pair: pair[0])


def _strip(state: dict) -> dict:
    for prefix in _STRIPPED_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_state(checkpoint) -> dict:
    """A checkpoint as a bare state_dict: a path (``.safetensors``, or ``torch.save`` read with
    ``weights_only=True``; ``{"state_dict": ...}`` and ``{"model": ...}`` wrappers unwrapped) or a
    mapping held in memory; ``module.`` and ``_orig_mod.`` key prefixes are removed."""
    if isinstance(checkpoint, (str, os.PathLike)):
        from geomxai.study._sources import load_state_dict_file

        return _strip(dict(load_state_dict_file(checkpoint)))
    if not isinstance(checkpoint, Mapping):
        raise TypeError(
            f"a checkpoint must be a file path or a state_dict; got {type(checkpoint).__name__}"
        )
    state = checkpoint
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state.get(key), Mapping):
            state = state[key]
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(
            f"a state_dict held in memory must map names to tensors; {bad[:3]} are not tensors "
            "(pass model.state_dict())"
        )
    return _strip(dict(state))


def _label(checkpoint) -> str:
    return str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "in memory"


def _load_into(model: nn.Module, state: dict, what: str, where: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        import geomxai

        first = str(err).strip().splitlines()
        raise geomxai.CheckpointError(
            f"the checkpoint {where} does not fit {what}: {' '.join(first[:3])[:400]} (give the "
            "model the checkpoints were saved from, built with the same arguments)"
        ) from err


def _base_model(model, state: dict, data_probe: Probe) -> tuple[nn.Module, str]:
    """A private copy of the module, or the spec built with the head the checkpoint has."""
    if isinstance(model, nn.Module):
        return copy.deepcopy(model), type(model).__name__
    if not isinstance(model, str):
        raise TypeError(
            "model must be an nn.Module or a spec (torchvision:NAME, timm:NAME, a geomxai model "
            f"name); got {type(model).__name__}"
        )
    from geomxai.study._sources import head_size, resolve_model

    x = data_probe.images
    in_channels = int(x.shape[1]) if x.ndim >= 3 else 3
    image_size = int(x.shape[-1]) if x.ndim == 4 else 32
    net = resolve_model(
        model, num_classes=head_size(state), in_channels=in_channels, image_size=image_size
    )
    return net, model


def _probe_of(data, model, options, *, labels, transform, image_size, normalize):
    """The probe, the data's name and class count, and the preprocessing attrs."""
    if isinstance(data, Probe):
        return data, data.dataset or "Probe", None, {"preprocessing": "none (a Probe given)"}
    from geomxai.study._inputs import preprocessed_data

    source, attrs = preprocessed_data(
        data,
        model,
        size=options.probe_size,
        labels=labels,
        transform=transform,
        image_size=image_size,
        normalize=normalize,
        where="analyze_checkpoints",
        stacklevel=4,
    )
    return source.probe, source.name, source, attrs


def analyze_checkpoints(
    model,
    checkpoints,
    data,
    *,
    steps=None,
    index: str = "epoch",
    layers=None,
    probe_size: int = 512,
    options: AnalysisOptions | None = None,
    transform=None,
    labels: bool = True,
    device=None,
    image_size: int | None = None,
    normalize: str | None = None,
    name: str | None = None,
    seed: int = 0,
    metrics: Mapping | None = None,
    progress: bool = True,
    **option_overrides,
) -> xr.Dataset:
    """Checkpoints of any training loop, measured on one probe, as one Dataset over ``epoch``.

    The per-checkpoint measurements are :func:`~geomxai.study.measure`'s and the dynamics those
    of :func:`~geomxai.study.analyze_run` (:func:`~geomxai.study.add_dynamics`): axis swaps and
    saliency stability against the previous checkpoint, linear CKA and Procrustes distance to
    the previous and the final one, and ``cka_checkpoints``, the CKA of every pair of
    checkpoints. On checkpoints written by geomxai's trainer it gives what ``analyze_run``
    gives.

    Parameters
    ----------
    model : nn.Module or str
        The architecture the checkpoints were saved from: a module (copied, never changed) or a
        spec (``torchvision:NAME``, ``timm:NAME``, a geomxai model name such as ``cnn2``; built
        with the head size the first checkpoint has).
    checkpoints : path, glob, folder, sequence or mapping
        State dicts, in any of these forms:

        - a glob (``"ckpts/*.pt"``), a folder (its ``.pt``, ``.pth``, ``.bin``, ``.ckpt`` and
          ``.safetensors`` files), one path, or a list of paths: each file a ``.safetensors``
          file or a state_dict saved with ``torch.save`` (read with ``weights_only=True``;
          ``{"state_dict": ...}`` and ``{"model": ...}`` wrappers are unwrapped); the step is
          read from the file name (:func:`step_from_name`: a number keyed ``epoch``/``step``,
          else the name's only number; a name it cannot tell apart is refused) unless ``steps``
          is given;
        - a mapping ``{step: checkpoint}`` or a list of ``(step, checkpoint)`` pairs, where a
          checkpoint is a path or a state_dict held in memory;
        - a list of in-memory state_dicts with ``steps=[...]``.

        Checkpoints are measured in step order; ``module.`` (DDP) and ``_orig_mod.``
        (``torch.compile``) key prefixes are removed.
    data : str, Dataset, DataLoader, (inputs, labels), inputs or Probe
        As :func:`~geomxai.study.analyze_model` takes it (the first ``probe_size`` samples are
        the probe, the same at every checkpoint), or a :class:`~geomxai.study.Probe`.
    steps : sequence of int, optional
        The step (or epoch) of each checkpoint of a plain list, or of each file of a glob or
        folder in the natural order of their names (``ckpt_2`` before ``ckpt_10``).
    index : {"epoch", "step"}
        What the numbers are, and which one a file name keyed both ways gives
        (``epoch=3-step=120.ckpt``). The results' dim is ``epoch`` in both cases (the layout of
        every results file); ``attrs["checkpoint_index"]`` says which it holds.
    layers, probe_size, options, transform, labels, device, image_size, normalize
        As :func:`~geomxai.study.analyze_model`. Keyword overrides of ``options``
        (``reduce="flatten"``, ``entanglement_layer="features"``, ``top_k=8``, ...) are
        applied on top.
    name : str, optional
        The ``regime`` attr (default the spec, or the module's class name).
    seed : int
        The ``seed`` attr.
    metrics : mapping, optional
        ``{step: {"test_acc": ..., "loss_ce": ...}}``: training metrics of the loop, stored as
        the training variables of :mod:`geomxai.schema` (NaN with a reason where missing).
    progress : bool
        A progress bar over checkpoints.

    Returns
    -------
    xr.Dataset
        The layout of :func:`~geomxai.study.analyze_run`: dims ``epoch`` (the steps), ``layer``,
        ``axis``, ``unit``, ``sample``, ...; ``attrs``: ``regime``, ``seed``, ``dataset``,
        ``model``, ``checkpoints`` (JSON: step -> path or "in memory"), ``checkpoint_index``,
        ``config`` (JSON of what was analysed), ``analysis``, ``saliency_method``,
        ``reduction``, ``entanglement_layer``, ``preprocessing`` (with ``input_size`` and
        ``resize_factor`` where images were resized), ``schema_version``, ``created``,
        ``hardware``, ``commit``. :func:`~geomxai.study.combine_runs` of one or several of
        them is what :func:`geomxai.report.build_report` reads.

    Raises
    ------
    geomxai.CheckpointError
        A checkpoint that cannot be read as plain tensors or does not fit the model (naming it).
    ValueError
        Steps that cannot be read from file names, or that repeat; a head that does not fit the
        data's classes.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    >>> states = {}
    >>> for epoch in range(3):
    ...     with torch.no_grad():
    ...         _ = net[1].weight.mul_(1.1)
    ...     states[epoch] = {k: v.clone() for k, v in net.state_dict().items()}
    >>> ds = analyze_checkpoints(net, states, "digits", layers=["2"], probe_size=64,
    ...                          progress=False)
    >>> ds.epoch.values.tolist(), ds.cka_checkpoints.dims
    ([0, 1, 2], ('epoch', 'layer', 'epoch_b'))
    """
    if index not in ("epoch", "step"):
        raise ValueError(f"index must be 'epoch' or 'step'; got index={index!r}")
    check(labels, "labels", bool)
    if options is None:
        if isinstance(layers, str):
            layers = (layers,)
        options = AnalysisOptions(probe_size=probe_size, layers=tuple(layers) if layers else None)
    if option_overrides:
        options = replace(options, **{k: v for k, v in option_overrides.items() if v is not None})
    _check_per_checkpoint_method(options.saliency_method)
    entries = _entries(checkpoints, steps, index)
    first = read_state(entries[0][1])
    probe, data_name, source, pre_attrs = _probe_of(
        data,
        model,
        options,
        labels=labels,
        transform=transform,
        image_size=image_size,
        normalize=normalize,
    )
    if not labels:
        probe = Probe(probe.images, None, None, probe.dataset)
    work, what = _base_model(model, first, probe)
    _load_into(work, first, what, _label(entries[0][1]))
    if source is not None:
        from geomxai.study._inputs import _check_head

        _check_head(work, what, source, labels)
    from geomxai.study._probe import ProbeSizeWarning

    parts = []
    with warnings.catch_warnings():
        # Said once for all checkpoints (by _over_epochs), not once per checkpoint.
        warnings.simplefilter("ignore", ProbeSizeWarning)
        for i, (_, ckpt) in enumerate(
            tqdm(entries, desc="analyse checkpoints", disable=not progress, unit="ckpt")
        ):
            if i > 0:
                # Every parameter and buffer is replaced (strict=True), so one working copy
                # serves all checkpoints.
                _load_into(work, read_state(ckpt), what, _label(ckpt))
            extra = {} if device is None else {"device": device}
            parts.append(measure(work, probe, options, **extra))
    labels_ = [s for s, _ in entries]
    ds = _over_epochs(parts, labels_, probe)
    if index == "step":
        ds = ds.assign_coords(step=("epoch", labels_))
        ds["step"].attrs["long_name"] = "global optimizer steps taken at the checkpoint"
    if metrics is not None:
        ds = _with_metrics(ds, metrics, labels_)
    label = name or what
    ds.attrs.update(
        {
            "config": json.dumps({"model": what, "dataset": data_name}, sort_keys=True),
            "regime": label,
            "seed": int(seed),
            "dataset": data_name,
            "model": what,
            "checkpoints": json.dumps({str(s): _label(c) for s, c in entries}),
            "checkpoint_index": index,
            "analysis": options.key(),
            "saliency_method": parts[0].attrs.get("saliency_method", ""),
            "reduction": parts[0].attrs.get("reduction", ""),
            "entanglement_layer": parts[0].attrs.get("entanglement_layer", ""),
            "labels": "yes" if probe.labels is not None else "no",
            **pre_attrs,
        }
    )
    if probe.images.ndim == 4 and "saliency_maps" in ds:
        n_ex = int(ds.sizes.get("example", 0))
        ds["probe_images"] = xr.DataArray(
            probe.images[:n_ex].numpy(), dims=("example", "channel", "height", "width")
        )
    return stamp(schema.annotate(ds))


def _with_metrics(ds: xr.Dataset, metrics: Mapping, steps: list[int]) -> xr.Dataset:
    """The loop's own metrics as the schema's training variables, NaN with a reason if missing."""
    metrics = {int(k): dict(v) for k, v in metrics.items()}
    for key in schema.names("training"):
        values = [_scalar(metrics.get(s, {}).get(key)) for s in steps]
        ds[key] = xr.DataArray(values, dims="epoch")
        missing = [s for s, v in zip(steps, values, strict=True) if v != v]
        if missing:
            ds[key].attrs["nan_reason"] = f"metrics= gives no finite {key} at step(s) {missing}"
    return ds
