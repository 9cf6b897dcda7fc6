"""Layer names: resolving a ``layers`` argument to dotted ``named_modules()`` paths."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable

from torch import nn

from geomxai._hints import close_matches

LayerSelector = str | Iterable[str] | Callable[[str, nn.Module], bool]
"""What a ``layers`` argument accepts: a dotted name, a glob, a list of either, or a predicate."""

_GLOB_CHARS = frozenset("*?[")
_WRAPPER_PREFIX = "module."


class UnknownLayerError(KeyError, ValueError):
    """A requested layer name (or glob) matches no module of the model.

    Subclasses both ``KeyError`` (a failed lookup by name) and ``ValueError`` (a bad argument), so
    either ``except`` clause catches it. The message lists the closest existing names.
    """

    def __str__(self) -> str:
        # KeyError's str() quotes its argument, which would garble a multi-part message.
        return str(self.args[0]) if self.args else ""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module that does the work: ``.module`` of a DataParallel or DDP wrapper, else ``model``.

    Wrappers nest (DDP around DataParallel is unusual but legal), so this unwraps repeatedly.

    Examples
    --------
    >>> from torch import nn
    >>> inner = nn.Linear(2, 2)
    >>> unwrap_model(nn.DataParallel(inner)) is inner
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def _is_wrapped(model: nn.Module) -> bool:
    return isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))


def _module_names(module: nn.Module) -> list[str]:
    # The root ("") is left out: its output is the model's output, which the caller already has,
    # and an empty name cannot be a variable or dimension name.
    return [name for name, _ in module.named_modules() if name]


def _closest(query: str, names: list[str], n: int = 5) -> list[str]:
    close = close_matches(query, names, n=n, cutoff=0.5)
    if close:
        return close
    # Nothing similar overall: a dotted query often shares its leading part with real names.
    head = query.split(".")[0]
    return close_matches(head, names, n=n, cutoff=0.5)


def _unknown(
    kind: str, query: str, model: nn.Module, names: list[str], *, probe: str | None = None
) -> UnknownLayerError:
    close = _closest(probe or query, names)
    hint = f"; closest: {', '.join(close)}" if close else ""
    top = [name for name in names if "." not in name][:10]
    return UnknownLayerError(
        f"{kind} {query!r} matches no module of {type(model).__name__}{hint}. "
        f"Top-level modules: {', '.join(top) or '(none)'}; "
        f"geomxai.collect.available_layers(model) lists all {len(names)} names."
    )


def resolve_layers(model: nn.Module, layers: LayerSelector) -> list[str]:
    """Normalise a ``layers`` argument to a list of dotted module names of the unwrapped model.

    The one place where layer selections are interpreted, so every public function accepts the
    same forms.

    Parameters
    ----------
    model : nn.Module
        Any module; DataParallel and DistributedDataParallel wrappers are unwrapped first.
    layers : str, iterable of str, or callable
        - a dotted name from ``model.named_modules()``, e.g. ``"layer4.1.conv2"``;
        - a glob (``fnmatch``, so ``*`` also crosses dots): ``"layer4.*"`` selects every module
          under ``layer4``; a string is a glob only when it contains ``*``, ``?`` or ``[`` and is
          not itself a module name;
        - a list (or other iterable) of names and globs, kept in the order given, duplicates
          dropped;
        - a callable ``(name, module) -> bool``, called on every named submodule.

        For a wrapped model the names may carry the wrapper's ``module.`` prefix or not.

    Returns
    -------
    list of str
        Names without a wrapper prefix; glob and callable matches in ``named_modules()`` order.

    Raises
    ------
    UnknownLayerError
        A name or glob that matches nothing; the message lists the closest names.
    ValueError
        An empty selection.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2)))
    >>> resolve_layers(net, "2.*")
    ['2.0']
    >>> resolve_layers(net, lambda name, m: isinstance(m, nn.Linear))
    ['0', '2.0']
    >>> resolve_layers(nn.DataParallel(net), ["module.1", "0"])
    ['1', '0']
    """
    return [name for name, _ in resolve_layers_with_origin(model, layers)]


def resolve_layers_with_origin(model: nn.Module, layers: LayerSelector) -> list[tuple[str, bool]]:
    """:func:`resolve_layers`, each name paired with whether it was asked for literally.

    A literal name that never runs in the forward pass is an error; a module that a glob or a
    predicate swept in and that never runs (``out_proj`` inside ``nn.MultiheadAttention``, whose
    weights are used without calling it) is only left out.
    """
    inner = unwrap_model(model)
    names = _module_names(inner)
    known = set(names)
    wrapped = _is_wrapped(model)

    if callable(layers) and not isinstance(layers, str):
        picked = [
            (name, False) for name, module in inner.named_modules() if name and layers(name, module)
        ]
        if not picked:
            raise ValueError(
                f"the layer predicate selected no module of {type(inner).__name__} "
                f"({len(names)} named modules)"
            )
        return picked

    if isinstance(layers, str):
        queries = [layers]
    else:
        try:
            queries = list(layers)
        except TypeError:
            raise TypeError(
                "layers must be a name, a glob, a list of them, or a callable (name, module) -> "
                f"bool; got {type(layers).__name__}"
            ) from None
    if not queries:
        raise ValueError("layers selects no module; got an empty list")

    selected: dict[str, bool] = {}
    for query in queries:
        if not isinstance(query, str):
            raise TypeError(f"layer names must be strings; got {query!r} in layers")
        # A wrapped model's own named_modules() prefixes everything with "module."; accept that
        # spelling, but only where the bare name is not itself a module of the inner model.
        if wrapped and query not in known and query.startswith(_WRAPPER_PREFIX):
            query = query[len(_WRAPPER_PREFIX) :]
        if query in known:
            selected[query] = True
            continue
        if _GLOB_CHARS & set(query):
            matches = fnmatch.filter(names, query)
            if not matches:
                literal = query.split("*")[0].split("?")[0].split("[")[0]
                raise _unknown("glob", query, inner, names, probe=literal.rstrip(".") or query)
        else:
            raise _unknown("layer", query, inner, names)
        for name in matches:
            selected.setdefault(name, False)
    return list(selected.items())


def named_submodules(model: nn.Module, names: list[str]) -> dict[str, nn.Module]:
    """Map resolved names to the submodules of the unwrapped model."""
    inner = unwrap_model(model)
    modules = dict(inner.named_modules())
    return {name: modules[name] for name in names}
