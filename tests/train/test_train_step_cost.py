"""The eval-mode step of a model that computes the same in both modes skips its eval forward.

A model with no BatchNorm, whitening or dropout (``cnn2`` under ``sgt``) has one input gradient
in both modes, so :func:`geomxai.train.train_step` takes the eval-mode masking gradient from the
clean forward (one forward fewer, docs/training.md). These tests prove it changes nothing: the
same terms and weights, bitwise, as a step that runs the eval forward, and the eval forward
still runs wherever a layer tells the modes apart.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _internals import train_step as step_module
from torch import nn

from geomxai.train import (
    TrainConfig,
    TrainForward,
    build_from_spec,
    model_spec,
    same_in_both_modes,
    train_step,
)


def _config(regime, **changes):
    return TrainConfig(regime=regime, dataset="digits", group_size=8, **changes)


def _model(config, seed=0):
    torch.manual_seed(seed)
    return build_from_spec(model_spec(config, in_channels=1, num_classes=4, image_size=8))


def _batches(n, size=16):
    g = torch.Generator().manual_seed(2)
    return [
        (torch.rand(size, 1, 8, 8, generator=g), torch.randint(0, 4, (size,), generator=g))
        for _ in range(n)
    ]


def _run(model, config, batches, *, force_eval_pass, monkeypatch):
    """Three SGD steps; with ``force_eval_pass`` the model is treated as mode-dependent."""
    calls = []
    original = step_module.eval_input_gradient

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(step_module, "eval_input_gradient", counting)
        if force_eval_pass:
            patch.setattr(step_module, "same_in_both_modes", lambda model: False)
        params = list(model.parameters())
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(3)
        terms = []
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            terms.append(
                train_step(
                    TrainForward(model), model, x, y, config=config, params=params, generator=gen
                )
            )
            opt.step()
    return terms, len(calls)


@pytest.mark.parametrize("detach_clean", [False, True])
@pytest.mark.parametrize("mask_by", ["abs", "signed"])
def test_a_mode_free_model_skips_the_eval_forward_and_steps_bitwise_the_same(
    detach_clean, mask_by, monkeypatch
):
    config = _config("sgt", detach_clean=detach_clean, mask_by=mask_by)
    assert config.mask_gradient_mode == "eval"
    fast = _model(config)
    slow = copy.deepcopy(fast)
    assert same_in_both_modes(fast)
    batches = _batches(3)
    got, fast_calls = _run(fast, config, batches, force_eval_pass=False, monkeypatch=monkeypatch)
    want, slow_calls = _run(slow, config, batches, force_eval_pass=True, monkeypatch=monkeypatch)
    assert (fast_calls, slow_calls) == (0, 3)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(a, b), i
    for (name, a), b in zip(fast.state_dict().items(), slow.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("regime", ["saliencydecor"])
def test_a_model_whose_modes_differ_still_runs_the_eval_forward(regime, monkeypatch):
    config = _config(regime)
    model = _model(config)
    assert not same_in_both_modes(model)  # its whitening uses running statistics in eval mode
    _, calls = _run(model, config, _batches(2), force_eval_pass=False, monkeypatch=monkeypatch)
    assert calls == 2


def test_train_mode_never_runs_the_eval_forward(monkeypatch):
    config = _config("saliencydecor", mask_gradient_mode="train")
    _, calls = _run(
        _model(config), config, _batches(1), force_eval_pass=False, monkeypatch=monkeypatch
    )
    assert calls == 0


@pytest.mark.parametrize(
    ("module", "free"),
    [
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()), True),
        (nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.LayerNorm(4)), True),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), False),
        (nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1)), False),
        # A subclass may read self.training in its own forward: not trusted.
        (nn.Sequential(type("MyLinear", (nn.Linear,), {})(4, 4)), False),
    ],
)
def test_only_known_mode_free_layers_count_as_mode_free(module, free):
    assert same_in_both_modes(module) is free


def test_the_models_the_trainer_builds_are_classified_as_expected():
    sgt, dbn = _config("sgt"), _config("dbn")
    assert same_in_both_modes(_model(sgt))  # cnn2: conv, ReLU, max-pool, linear
    assert not same_in_both_modes(_model(dbn))  # its whitening layer
    resnet = TrainConfig(regime="sgt", dataset="digits", model="resnet18")
    model = build_from_spec(model_spec(resnet, in_channels=1, num_classes=4, image_size=8))
    assert not same_in_both_modes(model)  # BatchNorm
