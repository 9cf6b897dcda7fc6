"""saliency: equal to Captum, exact on linear models, and leaves the model as it was."""

import numpy as np
import pytest
import torch
from captum.attr import Saliency
from torch import nn

from geomxai.attribution import saliency

METHODS = ["gradient", "abs_gradient", "input_x_gradient", "smoothgrad", "integrated_gradients"]


def linear_model(c=2, hw=4, k=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * hw * hw, k))


def test_gradient_equals_captum_saliency(tiny_cnn, images):
    x, y = images
    ours = saliency(tiny_cnn, x, y, method="gradient", batch_size=4)
    theirs = Saliency(tiny_cnn).attribute(x.clone().requires_grad_(), target=y).sum(dim=1)
    torch.testing.assert_close(ours, theirs)
    assert ours.shape == (6, 8, 8)


def test_reductions_and_methods_on_a_linear_model():
    model = linear_model()
    w = model[1].weight.detach().view(3, 2, 4, 4)
    x = torch.rand(5, 2, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    g = w[y]  # the exact input gradient of logit_y
    torch.testing.assert_close(saliency(model, x, y, reduce="sum"), g.sum(1))
    torch.testing.assert_close(saliency(model, x, y), g.abs().sum(1))
    torch.testing.assert_close(saliency(model, x, y, reduce="max_abs"), g.abs().amax(1))
    torch.testing.assert_close(
        saliency(model, x, y, method="abs_gradient", reduce="sum"), g.abs().sum(1)
    )
    torch.testing.assert_close(
        saliency(model, x, y, method="input_x_gradient", reduce="sum"), (x * g).sum(1)
    )
    ig = saliency(model, x, y, method="integrated_gradients", reduce="sum", baseline=0.5)
    torch.testing.assert_close(ig, ((x - 0.5) * g).sum(1), rtol=1e-5, atol=1e-6)
    # the gradient of a linear model is constant, so SmoothGrad must return it exactly
    sg = saliency(model, x, y, method="smoothgrad", reduce="sum", n_samples=4)
    torch.testing.assert_close(sg, g.sum(1), rtol=1e-5, atol=1e-6)


class Cubic(nn.Module):
    """logit_0 = sum(x^3) / 3, so d logit_0 / dx = x^2 and SmoothGrad gives x^2 + sigma^2."""

    def forward(self, x):
        s = (x**3).flatten(1).sum(1) / 3
        return torch.stack([s, -s], dim=1)


def test_smoothgrad_noise_is_a_fraction_of_each_image_range():
    x = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 2.0, 4.0  # ranges 2 and 4
    out = saliency(
        Cubic(),
        x,
        0,
        method="smoothgrad",
        reduce="sum",
        n_samples=1500,
        noise_level=0.1,
        batch_size=None,
        seed=3,
    )
    excess = (out - x[:, 0] ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(
        excess, torch.tensor([0.04, 0.16], dtype=torch.float64), rtol=0.1, atol=0
    )


def test_smoothgrad_is_seeded_and_leaves_global_rng(tiny_cnn, images):
    x, y = images
    state = torch.get_rng_state()
    a = saliency(tiny_cnn, x, y, method="smoothgrad", n_samples=5, seed=7)
    b = saliency(tiny_cnn, x, y, method="smoothgrad", n_samples=5, seed=7)
    c = saliency(tiny_cnn, x, y, method="smoothgrad", n_samples=5, seed=8)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("method", METHODS)
def test_model_and_input_left_as_they_were(tiny_cnn, images, method):
    x, y = images
    x_before = x.clone()
    tiny_cnn.train()
    tiny_cnn.body[1].eval()  # a mixed state must come back exactly
    seen = []
    handle = tiny_cnn.head.register_forward_pre_hook(lambda m, i: seen.append(m.training))
    saliency(tiny_cnn, x, y, method=method, n_samples=2, n_steps=4, batch_size=4)
    handle.remove()
    assert seen and not any(seen)  # eval mode during the call
    assert tiny_cnn.training and tiny_cnn.head.training and not tiny_cnn.body[1].training
    assert all(p.grad is None for p in tiny_cnn.parameters())
    assert torch.equal(x, x_before) and not x.requires_grad


def test_batching_does_not_change_maps(tiny_cnn, images):
    x, y = images
    torch.testing.assert_close(
        saliency(tiny_cnn, x, y, method="integrated_gradients", n_steps=8, batch_size=None),
        saliency(tiny_cnn, x, y, method="integrated_gradients", n_steps=8, batch_size=2),
    )


def test_numpy_input_and_int_target(tiny_cnn, images):
    x, _ = images
    out = saliency(tiny_cnn, x.numpy(), 3)
    torch.testing.assert_close(out, saliency(tiny_cnn, x, torch.full((6,), 3)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "gradcam"}, "method must be one of"),
        ({"reduce": "mean"}, "reduce must be one of"),
        ({"batch_size": 0}, "batch_size"),
        ({"method": "smoothgrad", "n_samples": 0}, "n_samples"),
        ({"method": "integrated_gradients", "n_steps": 0}, "n_steps"),
    ],
)
def test_invalid_arguments(tiny_cnn, images, kwargs, match):
    x, y = images
    with pytest.raises(ValueError, match=match):
        saliency(tiny_cnn, x, y, **kwargs)


def test_invalid_shapes(tiny_cnn, images):
    x, y = images
    # 1-D and 5-D inputs are no layout; a 3-D x[0] would be a batch of sequences
    for bad in (x[0, 0, 0], x[None]):
        with pytest.raises(ValueError, match=r"image batch \(n, c, h, w\), a sequence batch"):
            saliency(tiny_cnn, bad, y)
    with pytest.raises(ValueError, match="target must be"):
        saliency(tiny_cnn, x, y[:2])
    with pytest.raises(ValueError, match="integer class"):
        saliency(tiny_cnn, x, np.zeros(6))
