"""FeatureCollector: forward hooks on named modules, all removed on exit."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from geomxai.collect._layers import (
    _WRAPPER_PREFIX,
    LayerSelector,
    _is_wrapped,
    named_submodules,
    resolve_layers_with_origin,
    unwrap_model,
)
from geomxai.collect._reduce import (
    Reduction,
    apply_reduction,
    auto_reduction,
    check_reduce_argument,
    reduction_label,
)


def record_name(layer: str, call: int) -> str:
    """Name under which the ``call``-th call (0-based) of a module in one forward pass is stored.

    >>> record_name("layer1.0.relu", 0), record_name("layer1.0.relu", 1)
    ('layer1.0.relu', 'layer1.0.relu#1')
    """
    return layer if call == 0 else f"{layer}#{call}"


def output_tensor(output: object, name: str) -> torch.Tensor:
    """The tensor a hook records: the output itself, or the first item of a tuple/list output.

    Tuple outputs are common (``nn.MultiheadAttention`` returns ``(output, weights)``, an LSTM
    ``(output, (h, c))``) and their first item is the layer's output proper.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"layer {name!r} returned {type(output).__name__}; FeatureCollector records a tensor "
        "output or the first item of a tuple/list output. Select a submodule that returns a tensor."
    )


def _strip_wrapper(name: str, known: list[str]) -> str:
    if name not in known and name.startswith(_WRAPPER_PREFIX):
        return name[len(_WRAPPER_PREFIX) :]
    return name


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


class FeatureCollector:
    """Context manager that records the outputs of named modules during forward passes.

    On entry it registers one forward hook per selected module (and a forward pre-hook on the
    model that starts a new pass); on exit it removes every one of them, also when the body
    raised. It changes nothing else about the model: train/eval mode, ``requires_grad`` and grad
    mode are the caller's (:func:`collect_features` sets eval mode and ``no_grad`` and restores
    them).

    What is stored is a detached copy, never a view of the module's output: an in-place op after
    the hooked module (``nn.ReLU(inplace=True)``) would otherwise change the stored features.
    With a reduction, the reduction runs inside the hook, on the output's device, and only the
    (n, d) result is kept, so a large conv map never needs a copy of its own.

    Parameters
    ----------
    model : nn.Module
        Any module. A DataParallel / DistributedDataParallel wrapper is unwrapped and the hooks
        go on ``model.module``'s submodules; names may carry the ``module.`` prefix or not.
    layers : str, list of str, or callable
        Dotted names from ``named_modules()``, globs (``"layer4.*"``) or a predicate
        ``(name, module) -> bool``; see :func:`~geomxai.collect.available_layers`.
    reduce : None, str, callable, or mapping of layer name to one of those, default None
        ``None`` stores each output tensor whole, shape (n, ...). Otherwise a reduction to (n, d):
        ``"auto"``, ``"flatten"``, ``"mean"``, ``"max"``, ``"cls"``, ``"token_mean"`` or a callable
        (see :func:`~geomxai.collect.collect_features`). A mapping sets it per layer; layers it
        leaves out get ``"auto"``.

    Attributes
    ----------
    layers : list of str
        The resolved module names, without any wrapper prefix.

    Notes
    -----
    A forward pass of the model (a call of the unwrapped model, which is what the wrapper calls)
    clears the outputs of the previous pass. A module that runs ``k`` times in one pass (a ReLU
    module reused inside a torchvision ``BasicBlock``, a weight-shared block) is recorded under
    ``name``, ``name#1``, ..., ``name#{k-1}``, in call order. When the model is driven through
    another method than ``__call__`` (``FeatureModel.forward_all``), call :meth:`pop` or
    :meth:`clear` between passes.

    The hooks are not thread-safe: with DataParallel over several GPUs every replica would
    record into the same store, so collect from ``model.module`` on one device (as
    :func:`collect_features` does).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 2))
    >>> x = torch.randn(5, 3)
    >>> with FeatureCollector(net, ["0", "2"]) as fc:
    ...     logits = net(x)
    ...     features = fc.pop()
    >>> sorted(features), tuple(features["0"].shape)
    (['0', '2'], (5, 4))
    >>> bool((features["0"] < 0).any())  # recorded before the in-place ReLU
    True
    >>> len(net[0]._forward_hooks)
    0
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSelector,
        *,
        reduce: Reduction | Mapping[str, Reduction] | None = None,
    ):
        self.model = model
        origin = resolve_layers_with_origin(model, layers)
        self.layers = [name for name, _ in origin]
        # Names asked for one by one must run; modules a glob swept in may not (see _layers).
        self._literal = frozenset(name for name, literal in origin if literal)
        if isinstance(reduce, Mapping) and _is_wrapped(model):
            # Keys may carry the wrapper's "module." prefix, as layer names may.
            reduce = {_strip_wrapper(key, self.layers): spec for key, spec in reduce.items()}
        self._reduce = check_reduce_argument(reduce, self.layers)
        self._modules = named_submodules(model, self.layers)
        self._handles: list[RemovableHandle] = []
        self._outputs: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}
        # Chosen at a record's first call and kept, so every batch is reduced the same way.
        self._resolved: dict[str, Reduction] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._types: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> FeatureCollector:
        if self._handles:
            raise RuntimeError("this FeatureCollector is already active; it cannot be re-entered")
        try:
            root = unwrap_model(self.model)
            self._handles.append(root.register_forward_pre_hook(self._start_pass))
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(partial(self._hook, name)))
        except BaseException:
            self.remove_hooks()
            raise
        self.clear()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove_hooks()

    def remove_hooks(self) -> None:
        """Remove every hook this collector registered; safe to call more than once."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    @property
    def active(self) -> bool:
        """Whether the hooks are registered (inside the ``with`` block)."""
        return bool(self._handles)

    @property
    def required_layers(self) -> frozenset[str]:
        """The layers named one by one, which must run in a forward pass.

        Modules a glob or a callable swept in may not run (a branch the forward skips); those
        only warn when they have no output, while a required one missing is an error.
        """
        return self._literal

    # -- hooks -------------------------------------------------------------------------------
    def _start_pass(self, module: nn.Module, args: tuple) -> None:
        self.clear()

    def _hook(self, name: str, module: nn.Module, args: tuple, output: object) -> None:
        call = self._calls.get(name, 0)
        self._calls[name] = call + 1
        key = record_name(name, call)
        self._store(key, name, module, output)

    def _store(self, key: str, name: str, module: nn.Module, output: object) -> None:
        tensor = output_tensor(output, key).detach()
        spec = self._reduce[name]
        if spec is None:
            stored = tensor.clone()
        else:
            how = self._resolved.get(key)
            if how is None:
                how = auto_reduction(tensor, module) if spec == "auto" else spec
                self._resolved[key] = how
            stored = apply_reduction(tensor, how, layer=key)
            if _shares_memory(stored, tensor):
                stored = stored.clone()
        self._shapes.setdefault(key, tuple(tensor.shape[1:]))
        self._types.setdefault(key, type(module).__name__)
        self._outputs[key] = stored

    # -- results -----------------------------------------------------------------------------
    @property
    def outputs(self) -> dict[str, torch.Tensor]:
        """Outputs of the current (last) pass, by record name, in call order.

        Each is (n, ...) without a reduction, (n, d) with one; on the output's device.
        """
        return dict(self._outputs)

    def pop(self) -> dict[str, torch.Tensor]:
        """:attr:`outputs`, then :meth:`clear`."""
        out = self._outputs
        self.clear()
        return out

    def clear(self) -> None:
        """Forget the stored outputs and the per-pass call counts."""
        self._outputs = {}
        self._calls = {}

    @property
    def reductions(self) -> dict[str, str]:
        """The reduction applied to each record so far (``"auto"`` resolved), as attrs strings."""
        return {key: reduction_label(how) for key, how in self._resolved.items()}

    @property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape (without the batch dim) of each record's output before reduction."""
        return dict(self._shapes)

    @property
    def module_types(self) -> dict[str, str]:
        """Class name of the module behind each record."""
        return dict(self._types)
