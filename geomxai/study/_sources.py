"""Turn what a user names or holds into a model: a checkpoint, a torchvision or timm model, ours,
or an ``nn.Module``; weights from a state_dict or a safetensors file; the head fitted to the data."""

from __future__ import annotations

import ast
import copy
import importlib.util
import logging
import pickle
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import geomxai
from geomxai._hints import close_matches
from geomxai.models import MODELS, build_model

# The checkpoint format belongs to geomxai.train; its names are read from the lazy package root
# when a checkpoint is met, so `import geomxai.study` loads no trainer.

SPEC_PREFIXES = ("torchvision:", "timm:")
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model")
"""Keys under which training scripts keep a model's state_dict inside a checkpoint dict."""

log = logging.getLogger("geomxai")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# What torch's weights_only refusal names when the pickle holds a module class.
_MODULE_GLOBAL = re.compile(r"torch\.nn\.modules|__main__\.|GLOBAL [\w.]+\.[A-Z]\w*")
MODEL_FILE_SPEC = "path/to/file.py:ClassName"


def is_model_file(spec) -> bool:
    """Whether ``spec`` names a class in a Python file (``path/to/file.py:ClassName``).

    Examples
    --------
    >>> is_model_file("my_models.py:SmallCNN"), is_model_file("torchvision:resnet18")
    (True, False)
    """
    if not isinstance(spec, str):
        return False
    path, sep, name = spec.rpartition(":")
    return bool(sep) and path.endswith(".py") and name.isidentifier()


def parse_model_args(pairs: Iterable[str] | None) -> dict:
    """``{"k": value}`` from ``["k=v", ...]`` (``--model-arg k=v``): each value read as a Python
    literal (``10``, ``0.5``, ``True``, ``(3, 32)``, ``'a'``), else kept as the string.

    Examples
    --------
    >>> parse_model_args(["num_classes=10", "width=0.5", "act=relu", "dims=(8, 16)"])
    {'num_classes': 10, 'width': 0.5, 'act': 'relu', 'dims': (8, 16)}
    """
    out = {}
    for pair in pairs or ():
        key, sep, value = str(pair).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(
                f"--model-arg takes KEY=VALUE with KEY a Python name (num_classes=10); got {pair!r}"
            )
        try:
            out[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key] = value.strip()
    return out


def load_model_file(spec: str, model_args: Mapping | None = None) -> nn.Module:
    """Build ``ClassName(**model_args)`` from ``path/to/file.py:ClassName``.

    The file is imported (its code runs) only here, on this explicit request, by path: nothing
    on ``sys.path`` is searched, though the file's own folder is put on it while it imports, so
    the file may import its neighbours. ``ClassName`` may also be a function returning a module.
    """
    path_text, _, name = spec.rpartition(":")
    path = Path(path_text)
    if not is_model_file(spec):
        raise ValueError(f"expected {MODEL_FILE_SPEC}; got {spec!r}")
    if not path.is_file():
        raise ValueError(f"no Python file at {path_text!r} (from {spec!r}); check the path")
    module_name = f"_geomxai_model_file_{abs(hash(str(path.resolve())))}"
    module = sys.modules.get(module_name)
    if module is None:
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        folder = str(path.resolve().parent)
        sys.path.insert(0, folder)
        sys.modules[module_name] = module  # dataclasses and pickling look their module up
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[module_name]
            raise ValueError(
                f"importing {path_text!r} failed: {type(err).__name__}: {err}; fix the file "
                "(run `python " + path_text + "` to see where)"
            ) from err
        finally:
            sys.path.remove(folder)
    factory = getattr(module, name, None)
    if factory is None:
        found = [
            k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module)
        ]
        close = close_matches(name, found)
        raise ValueError(
            f"{path_text!r} has no {name!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + (f" (its nn.Module classes: {', '.join(sorted(found))})" if found else "")
        )
    try:
        model = factory(**dict(model_args or {}))
    except TypeError as err:
        raise ValueError(
            f"{name}({', '.join(f'{k}={v!r}' for k, v in (model_args or {}).items())}) failed: "
            f"{err}; give its constructor arguments as --model-arg KEY=VALUE (model_args=)"
        ) from err
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec} made a {type(model).__name__}, not an nn.Module")
    return model


def load_state_dict_file(path) -> dict:
    """A bare state_dict: a ``.safetensors`` file, or a file saved with ``torch.save`` and read
    with ``weights_only=True``.

    Accepts the wrappers common training scripts write (``{"model_state_dict": ...}`` of the
    PyTorch tutorial, ``{"state_dict": ...}``, ``{"model": ...}``), saying so in a log line. A
    pickled module (``torch.save(model)``) is refused, naming the re-save that fixes it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise geomxai.CheckpointError(
                f"cannot read {str(path)!r} as a safetensors file: {err}"
            ) from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message spans lines, carries terminal colour codes and suggests
        # add_safe_globals, which would run the file's code; the fix is a state_dict.
        raise geomxai.CheckpointError(_pickled_message(path, err)) from err
    except Exception as err:  # truncation, not a torch file: say so on one line
        raise geomxai.CheckpointError(
            f"cannot read {str(path)!r} as plain tensors (weights_only=True): {_one_line(err)}"
        ) from err
    for key in STATE_DICT_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            log.info("%s: reading the state_dict under its %r key", path, key)
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = list(state)[:6] if isinstance(state, dict) else None
        raise geomxai.CheckpointError(
            f"{str(path)!r} does not hold a state_dict of tensors"
            + (
                f" (its keys: {keys})"
                if keys is not None
                else f" (it holds a {type(state).__name__})"
            )
            + f"; re-save with torch.save(model.state_dict(), {str(path)!r})"
        )
    return state


def _one_line(err: BaseException) -> str:
    """An exception's message without terminal colour codes, on one line."""
    text = _ANSI.sub("", str(err)).strip()
    return " ".join(text.split())


def _pickled_message(path: Path, err: BaseException) -> str:
    text = _ANSI.sub("", str(err))
    what = "a pickled module" if _MODULE_GLOBAL.search(text) else "pickled Python objects"
    return (
        f"{str(path)!r} holds {what}, not a state_dict; re-save with "
        f"torch.save(model.state_dict(), {str(path)!r})"
    )


def _torchvision(arch: str, num_classes: int | None) -> nn.Module:
    import torchvision  # here, not at the top: torchvision takes seconds to import

    available = torchvision.models.list_models()
    if arch not in available:
        close = close_matches(arch, available)
        raise ValueError(
            f"unknown torchvision model {arch!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
        )
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return torchvision.models.get_model(arch, weights=None, **kwargs)


def _timm(arch: str, num_classes: int | None, in_channels: int) -> nn.Module:
    try:
        import timm
    except ImportError as err:  # pragma: no cover - timm is a dependency
        raise ValueError("timm:NAME models need timm (pip install timm)") from err
    available = timm.list_models()
    if arch not in available:
        close = close_matches(arch, available)
        raise ValueError(
            f"unknown timm model {arch!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
        )
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    # pretrained=False: nothing is downloaded; pretrained weights come from `weights`.
    return timm.create_model(arch, pretrained=False, in_chans=in_channels, **kwargs)


def _build(name: str, num_classes, in_channels: int, image_size: int) -> nn.Module:
    if name.startswith("torchvision:"):
        return _torchvision(name.split(":", 1)[1], num_classes)
    if name.startswith("timm:"):
        return _timm(name.split(":", 1)[1], num_classes, in_channels)
    return build_model(
        name, in_channels=in_channels, num_classes=num_classes or 10, image_size=image_size
    )


def head_size(state: dict) -> int | None:
    """The class count of a state_dict's head: the rows of its last 2-D weight (None if none)."""
    for key in reversed(list(state)):
        value = state[key]
        if key.endswith("weight") and isinstance(value, torch.Tensor) and value.ndim == 2:
            return int(value.shape[0])
    return None


def _mismatched(model: nn.Module, state: dict) -> list[str]:
    own = model.state_dict()
    return [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]


def _load(model: nn.Module, state: dict, *, name: str, weights, drop: list[str]) -> None:
    """``state`` into ``model``, leaving the keys in ``drop`` (a head to rebuild) at their init."""
    kept = {k: v for k, v in state.items() if k not in drop}
    try:
        missing, unexpected = model.load_state_dict(kept, strict=False)
    except RuntimeError as err:
        raise geomxai.CheckpointError(
            f"weights in {str(weights)!r} do not fit {name}: {err}"
        ) from err
    missing = [k for k in missing if k not in drop]
    if missing or unexpected:
        raise geomxai.CheckpointError(
            f"weights in {str(weights)!r} do not fit {name}: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}"
        )


def resolve_model(
    name: str,
    *,
    weights=None,
    num_classes: int | None = None,
    in_channels: int = 3,
    image_size: int = 32,
    rebuild_head: bool = False,
    model_args: Mapping | None = None,
) -> nn.Module:
    """A model in eval mode from a name the CLI accepts.

    Parameters
    ----------
    name : str
        A geomxai checkpoint path (``*.pt``), ``torchvision:ARCH`` (any architecture of
        ``torchvision.models.list_models()``), ``timm:NAME`` (any of ``timm.list_models()``,
        built with ``pretrained=False``: nothing is downloaded), or a geomxai registry name
        (``cnn2``, ``resnet18``, ...), or ``path/to/file.py:ClassName``: your own class,
        built as ``ClassName(**model_args)`` (the file is imported only for such a name).
        Random weights unless ``weights`` is given.
    weights : path-like, optional
        A ``.safetensors`` file or a state_dict saved with ``torch.save`` (read with
        ``weights_only=True``), for a torchvision, timm or geomxai name.
    num_classes : int, optional
        Outputs of the head; default the architecture's own (1000 for torchvision and timm, 10
        for geomxai's models), or with ``weights`` the head size the weights have.
    in_channels, image_size : int
        Input channels (geomxai and timm models) and image side (geomxai models).
    rebuild_head : bool
        With ``weights`` whose head has another size than ``num_classes``: leave the head at a
        fresh random init (``num_classes`` outputs) and load every other weight. Without it such
        weights are refused, naming the fix.
    model_args : mapping, optional
        Constructor arguments of a ``path/to/file.py:ClassName`` model.

    Raises
    ------
    ValueError
        An unknown name, or ``weights`` whose head does not have ``num_classes`` outputs (the
        message names ``num_classes=``/``--num-classes`` to rebuild it).
    geomxai.CheckpointError
        Weights that cannot be read or do not fit the architecture.
    """
    if not isinstance(name, str):
        raise TypeError(f"model must be a name or an nn.Module; got {type(name).__name__}")
    if model_args and not is_model_file(name):
        raise ValueError(
            f"model_args (--model-arg) go with a {MODEL_FILE_SPEC} model; {name!r} is not one"
        )
    own_class = is_model_file(name)
    if not own_class and not name.startswith(SPEC_PREFIXES) and name not in MODELS:
        if Path(name).suffix in (".pt", ".pth") or Path(name).is_file():
            if weights is not None:
                raise ValueError(
                    f"{name!r} is a geomxai checkpoint and carries its own weights; --weights "
                    "goes with torchvision:ARCH, timm:NAME or a geomxai model name"
                )
            model, _ = geomxai.load_checkpoint(name)
            if num_classes is not None and output_count(model) != num_classes:
                model = replace_head(model, num_classes)
            return model.eval()
        raise ValueError(
            f"cannot make a model of {name!r}: expected a checkpoint file, torchvision:ARCH, "
            f"timm:NAME, {MODEL_FILE_SPEC} (your own class; constructor arguments as "
            f"--model-arg KEY=VALUE) or one of {', '.join(sorted(MODELS))}"
        )
    state = None if weights is None else load_state_dict_file(weights)
    theirs = None if state is None else head_size(state)
    classes = num_classes if num_classes is not None else theirs
    if own_class:  # its constructor decides the head; model_args may set its size
        model = load_model_file(name, model_args)
    else:
        model = _build(name, classes, in_channels, image_size)
    if state is not None:
        drop = _mismatched(model, state)
        if drop and not rebuild_head:
            raise ValueError(
                f"the weights in {str(weights)!r} have a head of {theirs} classes, and {name} was "
                f"asked for {num_classes} (mismatching {', '.join(drop[:4])}): pass "
                f"num_classes={theirs} (--num-classes {theirs}) to keep their head, or rebuild "
                f"a {num_classes}-class head at random (analyze_model does with num_classes=)"
            )
        _load(model, state, name=name, weights=weights, drop=drop)
    if own_class and num_classes is not None and output_count(model) not in (None, num_classes):
        model = replace_head(model, num_classes)
    return model.eval()


def classifier(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The dotted name and module of a model's classification head (None if none is found).

    timm's ``get_classifier()`` where the model has it, else the last ``nn.Linear`` of
    ``named_modules()`` (torchvision's ``fc``, ``classifier.6``, ``heads.head``; geomxai's
    ``head``).
    """
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        for name, module in model.named_modules():
            if module is head and isinstance(module, nn.Linear):
                return name, module
    linear = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linear[-1] if linear else None


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A copy of ``model`` with a fresh ``num_classes``-way head (the original is left as it is).

    timm models through ``reset_classifier``; others by replacing the module
    :func:`classifier` finds with an ``nn.Linear`` of the same input width.
    """
    found = classifier(model)
    if found is None and not hasattr(model, "reset_classifier"):
        raise ValueError(
            f"cannot rebuild the head of {type(model).__name__}: it has no nn.Linear "
            "classifier; give a model whose head has as many outputs as the data has classes, "
            "or analyse without labels (labels=False, --no-labels)"
        )
    model = copy.deepcopy(model)
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(num_classes)
        return model
    name, head = found
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    new = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    new.to(device=head.weight.device, dtype=head.weight.dtype)
    if isinstance(parent, nn.Sequential) and attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)
    return model


def output_count(model: nn.Module, example: torch.Tensor | None = None) -> int | None:
    """The number of logits: from a forward pass of one sample of ``example`` when given, else
    the ``out_features`` of the head :func:`classifier` finds (None when neither says)."""
    if example is not None:
        from geomxai._model_state import evaluating, module_device, module_dtype

        device = module_device(model, fallback=example.device)
        with evaluating(model), torch.no_grad():
            out = model(example[:1].to(device, module_dtype(model, fallback=example.dtype)))
        if isinstance(out, torch.Tensor) and out.ndim == 2:
            return int(out.shape[1])
        return None
    found = classifier(model)
    return None if found is None else int(found[1].out_features)


@dataclass(frozen=True)
class ModelSource:
    """A model made ready for the analysis, and what the results should say about it.

    Attributes
    ----------
    model : nn.Module
    name : str
        The ``regime`` label of the results (the spec string, or the module's class name).
    weights : str
        Where its weights came from: a path, ``"random init"``, ``"the checkpoint's own"`` or
        ``"the module's own"``; plus the rebuilt head, if any.
    transform : callable or None
        The preprocessing the model's own data config asks for (timm models), applied to every
        input sample.
    image_size : int or None
        The image side the model expects (timm's data config), for data read by name.
    """

    model: nn.Module
    name: str
    weights: str
    transform: Callable | None = None
    image_size: int | None = None


def timm_preprocessing(model, image_size: int | None = None):
    """``(transform, image_size)`` from a timm model's own data config (``(None, None)`` if none).

    ``model`` is a timm module (it has a ``pretrained_cfg``) or a ``timm:NAME`` spec. The
    transform is timm's evaluation transform of ``timm.data.resolve_data_config`` through
    ``timm.data.create_transform`` (resize, centre crop, normalisation with the config's mean
    and std); it takes float image tensors (c, h, w) in [0, 1] as well as PIL images.
    ``image_size`` overrides the config's input size.
    """
    if isinstance(model, str):
        if not model.startswith("timm:"):
            return None, None
        import timm

        arch = model.split(":", 1)[1]
        cfg = timm.get_pretrained_cfg(arch) if timm.is_model(arch) else None
        pretrained_cfg = None if cfg is None else cfg.to_dict()
    else:
        pretrained_cfg = getattr(model, "pretrained_cfg", None)
    if not pretrained_cfg:
        return None, None
    from timm.data import create_transform, resolve_data_config

    args = {}
    if image_size is not None:
        channels = int((pretrained_cfg.get("input_size") or (3,))[0])
        args["input_size"] = (channels, int(image_size), int(image_size))
    config = resolve_data_config(args, pretrained_cfg=pretrained_cfg)
    return create_transform(**config), int(config["input_size"][-1])
