"""FeatureCollector: what it stores, and that every hook goes away (style point 11)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from geomxai.collect import FeatureCollector


@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), nn.ReLU(inplace=True), nn.Linear(6, 2))


def test_active_only_inside_the_with_block(net):
    fc = FeatureCollector(net, ["0", "2"])
    assert not fc.active
    with fc:
        assert fc.active
    assert not fc.active


def test_an_output_without_a_tensor_is_refused():
    # A dict output with no tensor in it cannot be recorded: the hook itself raises.
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Identity()

        def forward(self, x):
            return {"x": self.inner(x)}

    model = nn.Sequential(Odd())
    with pytest.raises(TypeError, match="returned dict"), FeatureCollector(model, "0"):
        model(torch.randn(2, 3))


def test_stored_copy_survives_in_place_relu(net):
    x = torch.randn(16, 3)
    with FeatureCollector(net, "0") as fc:
        net(x)
        stored = fc.outputs["0"]
    expected = x @ net[0].weight.T + net[0].bias
    assert (expected < 0).any()  # the in-place ReLU would have zeroed these
    torch.testing.assert_close(stored, expected.detach())
    assert not stored.requires_grad


def test_outputs_are_detached_even_with_grad_enabled(net, hooks_left):
    with FeatureCollector(net, "2", reduce="flatten") as fc:
        net(torch.randn(4, 3)).sum().backward()
    assert not fc.outputs["2"].requires_grad
    assert hooks_left(net) == 0


def test_each_forward_pass_starts_afresh_and_repeated_calls_get_numbered():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu)
    # named_modules() lists a shared module once, under its first name: "1".
    with FeatureCollector(model, "1") as fc:
        model(torch.randn(2, 3))
        assert list(fc.outputs) == ["1", "1#1"]
        model(torch.randn(5, 3))
        assert list(fc.outputs) == ["1", "1#1"]
        assert fc.outputs["1#1"].shape == (5, 3)
        popped = fc.pop()
        assert list(popped) == ["1", "1#1"] and fc.outputs == {}


def test_collector_does_not_change_mode_or_grad_flags(net):
    net.train()
    net[2].weight.requires_grad_(False)
    with FeatureCollector(net, "0"):
        net(torch.randn(2, 3))
    assert net.training and all(m.training for m in net.modules())
    assert not net[2].weight.requires_grad and net[0].weight.requires_grad


def test_reduction_runs_in_the_hook_and_is_reported():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), FeatureCollector(model, ["layer3", "fc"], reduce="auto") as fc:
        model(x)
        out = fc.pop()
    assert out["layer3"].shape == (2, 256)
    assert fc.reductions == {"layer3": "mean", "fc": "flatten"}
    assert fc.output_shapes == {"layer3": (256, 2, 2), "fc": (1000,)}
    assert fc.module_types == {"layer3": "Sequential", "fc": "Linear"}


def test_reentering_is_refused(net, hooks_left):
    fc = FeatureCollector(net, "0")
    with fc, pytest.raises(RuntimeError, match="already active"), fc:
        pass
    assert hooks_left(net) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="DataParallel needs its GPUs there")
def test_data_parallel_wrapper_is_unwrapped(net, hooks_left):
    wrapped = nn.DataParallel(net)  # without a GPU it only wraps, and forward calls .module
    x = torch.randn(3, 3)
    with FeatureCollector(wrapped, "module.0") as fc:
        wrapped(x)
    assert fc.layers == ["0"]
    torch.testing.assert_close(fc.outputs["0"], net[0](x).detach())
    assert hooks_left(wrapped) == 0
