"""Every public function that hooks a model leaves no hook behind, however it ends (style 11, 17).

One table lists each function that registers forward, pre-forward or backward hooks on a model,
directly or through :class:`~geomxai.collect.FeatureCollector`, and each function that runs a
user's model for attribution or training; one test runs each row in each way a call can end:

- ``returns``: a normal call;
- ``forward_raises``: the model's head raises ``RuntimeError`` once the layers below it (and the
  hooks on them) have run, the "invalid module" case of Captum's ``test_hook_removal.py``;
- ``interrupted``: the head raises ``KeyboardInterrupt``, a ``BaseException`` that an
  ``except Exception`` clean-up would miss;
- ``bad_argument``: an argument the function finds wrong, once its hooks are in place where it
  can only tell then (a reduction a layer's output cannot take, a target of a Captum instance)
  or up front where it checks first (a target class the model does not have, for the named
  saliency methods and the analysis).

After each, the model's hooks are exactly those it had before: the test's own hook is still
there and nothing else was added, on any submodule or globally; every submodule has its own
train/eval flag back and the global grad mode is unchanged. A new function that hooks a model
joins ``CASES`` instead of getting a hand-written copy of these checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from captum.attr import DeepLift, GuidedBackprop, LayerGradCam, Saliency
from torch import nn
from torch.nn.modules import module as torch_module

from geomxai.attribution import (
    cascading_randomization,
    deletion_curve,
    gradient_entanglement,
    insertion_curve,
    masking_curve,
)
from geomxai.attribution import saliency as saliency_maps
from geomxai.collect import (
    FeatureCollector,
    available_layers,
    collect_features,
    collect_features_to_netcdf,
    collect_moments,
    format_layers,
    layer_shapes,
)
from geomxai.models import cnn2
from geomxai.study import AnalysisOptions, Probe, measure, reparametrization_control
from geomxai.train import eval_input_gradient

MODES = ("returns", "forward_raises", "interrupted", "bad_argument")

# PyTorch's hook dicts, read (never written) to prove that the public code cleaned up.
MODULE_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
)
GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)

NO_CLASS = 99  # a target class the 10-logit model does not have


class Fails(nn.Linear):
    """Stands in for the head: raises ``error`` once the layers below it have run.

    A real ``nn.Linear`` of the head's shape, so functions that check the head's type still call
    the model.
    """

    def __init__(self, head: nn.Linear, error: type[BaseException]):
        super().__init__(head.in_features, head.out_features)
        self.error = error

    def forward(self, x):
        raise self.error("the model's forward failed")


@dataclass(frozen=True)
class Case:
    """One function of the table.

    ``call(model, x, y, tmp_path)`` makes a normal call; ``bad`` makes one that must raise
    ``bad_error`` (matching ``bad_match``) after the hooks are registered. ``restores`` says
    whose train/eval flag comes back: ``"every"`` submodule's (the contract of the collectors
    and the attribution functions), only the ``"root"``'s, or ``None`` for a function that
    leaves the model in eval mode.
    """

    name: str
    call: Callable
    bad: Callable
    bad_error: type[BaseException]
    bad_match: str
    restores: str | None = "every"


def _three_channels(x):
    """The images with one channel too many: the first convolution refuses them."""
    return torch.cat([x, x[:, :1]], dim=1)


def _with_collector(model, x, **kwargs):
    with FeatureCollector(model, ["body.0", "body"], **kwargs) as fc:
        model(x)
        fc.pop()


OPTIONS = AnalysisOptions(probe_size=6, fractions=3, top_k=2, n_examples=2, batch_size=4)
WRONG_CLASS = "out of bounds"
TARGET_RANGE = "target must hold class indices"  # refused up front, before any hook is placed
WRONG_CHANNELS = "expected input.* to have 2 channels"
CLS_ON_A_MAP = r"reduce='cls' expects a token sequence"
SALIENCY_METHODS = (
    "gradient",
    "abs_gradient",
    "input_x_gradient",
    "smoothgrad",
    "integrated_gradients",
)
MASKING_FILLS = ("uniform", "zero", "road")


def _saliency_case(method: str) -> Case:
    def call(model, x, y, tmp_path, *, target=None):
        target = y if target is None else target
        return saliency_maps(model, x, target, method=method, n_samples=2, n_steps=4, batch_size=4)

    def bad(model, x, y, tmp_path):
        return call(model, x, y, tmp_path, target=torch.full_like(y, NO_CLASS))

    return Case(f"saliency[{method}]", call, bad, ValueError, TARGET_RANGE)


def _masking_case(fill: str) -> Case:
    def call(model, x, y, tmp_path):
        s = torch.rand(x.shape[0], *x.shape[2:], generator=torch.Generator().manual_seed(0))
        return masking_curve(model, x, y, s, fractions=[0.0, 0.5], fill=fill, batch_size=4)

    def bad(model, x, y, tmp_path):
        return call(model, _three_channels(x), y, tmp_path)

    return Case(f"masking_curve[{fill}]", call, bad, RuntimeError, WRONG_CHANNELS)


# Captum instances (DeepLift and GuidedBackprop hook every ReLU, LayerGradCam its layer) and a
# plain-function forward_func (saliency counts the model's calls with a pre-hook).
CAPTUM_METHODS = {
    "DeepLift": DeepLift,
    "GuidedBackprop": GuidedBackprop,
    "LayerGradCam": lambda m: LayerGradCam(m, m.body[3]),
    "Saliency(function)": lambda m: Saliency(lambda inp: m(inp)),
}


def _captum_case(name: str, make) -> Case:
    def call(model, x, y, tmp_path, *, target=None):
        target = y if target is None else target
        return saliency_maps(model, x, target, method=make(model), batch_size=4)

    def bad(model, x, y, tmp_path):
        return call(model, x, y, tmp_path, target=torch.full_like(y, NO_CLASS))

    return Case(f"saliency[{name}]", call, bad, RuntimeError, WRONG_CLASS)


def _probability_case(curve) -> Case:
    def call(model, x, y, tmp_path, *, target=None):
        target = y if target is None else target
        s = torch.rand(x.shape[0], *x.shape[2:], generator=torch.Generator().manual_seed(0))
        return curve(model, x, target, s, fractions=[0.0, 0.5, 1.0], batch_size=4)

    def bad(model, x, y, tmp_path):
        return call(model, x, y, tmp_path, target=torch.full_like(y, NO_CLASS))

    return Case(curve.__name__, call, bad, RuntimeError, WRONG_CLASS)


CASES = [
    # ---- collection: FeatureCollector and everything built on it
    Case(
        "FeatureCollector",
        lambda m, x, y, tmp: _with_collector(m, x),
        lambda m, x, y, tmp: _with_collector(m, x, reduce="cls"),
        ValueError,
        CLS_ON_A_MAP,
    ),
    Case(
        "collect_features",
        lambda m, x, y, tmp: collect_features(m, x, ["body.0", "body"], batch_size=4),
        lambda m, x, y, tmp: collect_features(m, x, "body.0", reduce="cls"),
        ValueError,
        CLS_ON_A_MAP,
    ),
    Case(
        "collect_moments",
        lambda m, x, y, tmp: collect_moments(m, x, ["body.0", "body"], batch_size=4),
        lambda m, x, y, tmp: collect_moments(m, x, "body.0", reduce="cls"),
        ValueError,
        CLS_ON_A_MAP,
    ),
    Case(
        "collect_features_to_netcdf",
        lambda m, x, y, tmp: collect_features_to_netcdf(m, x, "body", tmp / "f.nc", batch_size=4),
        lambda m, x, y, tmp: collect_features_to_netcdf(m, x, "body.0", tmp / "f.nc", reduce="cls"),
        ValueError,
        CLS_ON_A_MAP,
    ),
    Case(
        "available_layers",
        lambda m, x, y, tmp: available_layers(m, x[:2]),
        lambda m, x, y, tmp: available_layers(m, _three_channels(x[:2])),
        RuntimeError,
        WRONG_CHANNELS,
    ),
    Case(
        "layer_shapes",
        lambda m, x, y, tmp: layer_shapes(m, x[:2]),
        lambda m, x, y, tmp: layer_shapes(m, _three_channels(x[:2])),
        RuntimeError,
        WRONG_CHANNELS,
    ),
    Case(
        "format_layers",
        lambda m, x, y, tmp: format_layers(m, x[:2]),
        lambda m, x, y, tmp: format_layers(m, _three_channels(x[:2])),
        RuntimeError,
        WRONG_CHANNELS,
    ),
    # ---- attribution
    *[_saliency_case(method) for method in SALIENCY_METHODS],
    Case(
        "gradient_entanglement",
        lambda m, x, y, tmp: gradient_entanglement(m, x, y, layer="body", batch_size=4),
        lambda m, x, y, tmp: gradient_entanglement(m, x, NO_CLASS, layer="body"),
        RuntimeError,
        WRONG_CLASS,
    ),
    *[_masking_case(fill) for fill in MASKING_FILLS],
    *[_captum_case(name, make) for name, make in CAPTUM_METHODS.items()],
    *[_probability_case(curve) for curve in (deletion_curve, insertion_curve)],
    Case(
        "cascading_randomization",
        lambda m, x, y, tmp: cascading_randomization(m, x, y, seed=0),
        lambda m, x, y, tmp: cascading_randomization(m, x, NO_CLASS, seed=0),
        ValueError,
        TARGET_RANGE,
    ),
    # ---- training: the trainer registers no hook and builds its own model; its one pass over
    # a model it is handed is the eval-mode masking gradient
    Case(
        "eval_input_gradient",
        lambda m, x, y, tmp: eval_input_gradient(m, x, y),
        lambda m, x, y, tmp: eval_input_gradient(m, x, torch.full_like(y, NO_CLASS)),
        IndexError,
        "out of bounds",
    ),
    # ---- study: the whole per-checkpoint analysis, and the reparametrisation control
    Case(
        "measure",
        lambda m, x, y, tmp: measure(m, Probe(x, y), OPTIONS),
        lambda m, x, y, tmp: measure(m, Probe(x, torch.full_like(y, NO_CLASS)), OPTIONS),
        ValueError,
        TARGET_RANGE,
    ),
    Case(
        "reparametrization_control",
        lambda m, x, y, tmp: reparametrization_control(m, x, y, batch_size=4),
        lambda m, x, y, tmp: reparametrization_control(m, x, torch.full_like(y, NO_CLASS)),
        RuntimeError,
        WRONG_CLASS,
    ),
]


def hook_state(model: nn.Module) -> dict:
    """Which hooks are registered where: the handle ids of every hook dict, module and global."""
    state = {
        (name, kind): tuple(getattr(module, kind))
        for name, module in model.named_modules()
        for kind in MODULE_HOOK_DICTS
    }
    for kind in GLOBAL_HOOK_DICTS:
        state[("<global>", kind)] = tuple(getattr(torch_module, kind, {}))
    return state


def mode_state(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    net = cnn2(in_channels=2, image_size=8, width=4, feature_channels=2)
    net.train()
    net.body[1].eval()  # a mixed state must come back exactly, not as train(True)
    return net


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 2, 8, 8, generator=g), torch.randint(0, 10, (6,), generator=g)


def test_the_table_names_each_function_once():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)), names


@pytest.mark.filterwarnings("ignore:the whitening of layer:RuntimeWarning")  # 6 samples, 8 units
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_no_hook_is_left_behind(case: Case, mode: str, model, data, tmp_path):
    x, y = data
    calls: list[int] = []
    # The user's own hooks: they must survive, and they are the only ones expected afterwards.
    own = [
        model.register_forward_pre_hook(lambda m, args: calls.append(1)),
        model.body.register_forward_hook(lambda m, args, out: None),
    ]
    if mode == "forward_raises":
        model.head = Fails(model.head, RuntimeError)
    elif mode == "interrupted":
        model.head = Fails(model.head, KeyboardInterrupt)
    hooks_before, modes_before = hook_state(model), mode_state(model)
    grad_before = torch.is_grad_enabled()

    if mode == "returns":
        case.call(model, x, y, tmp_path)
    elif mode == "bad_argument":
        with pytest.raises(case.bad_error, match=case.bad_match):
            case.bad(model, x, y, tmp_path)
    else:
        error = RuntimeError if mode == "forward_raises" else KeyboardInterrupt
        with pytest.raises(error, match="the model's forward failed"):
            case.call(model, x, y, tmp_path)

    assert hook_state(model) == hooks_before, f"{case.name} ({mode}) left hooks behind"
    if case.restores == "every":
        assert mode_state(model) == modes_before, f"{case.name} ({mode}) changed train/eval flags"
    elif case.restores == "root":
        assert model.training == modes_before[""], f"{case.name} ({mode}) changed train mode"
    assert torch.is_grad_enabled() == grad_before
    for handle in own:
        handle.remove()
    assert all(not getattr(m, kind) for m in model.modules() for kind in MODULE_HOOK_DICTS)
