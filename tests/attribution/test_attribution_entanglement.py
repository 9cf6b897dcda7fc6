"""Gradient entanglement on constructed features with known answers."""

import numpy as np
import pytest
import torch
from torch import nn

from geomxai.attribution import entanglement_from_gradients, gradient_entanglement


def slow_entanglement(g, r):
    values = []
    for row in g:
        d = len(row)
        num = sum(
            abs(row[i]) * abs(row[j]) * abs(r[i][j]) for i in range(d) for j in range(d) if i != j
        )
        den = sum(abs(row[i]) * abs(row[j]) for i in range(d) for j in range(d) if i != j)
        if den > 0:
            values.append(num / den)
    return sum(values) / len(values)


class Features(nn.Module):
    """A model whose feature layer ``body`` outputs ``x`` (n, d) reshaped; head is linear."""

    def __init__(self, d, k=3, duplicate=False):
        super().__init__()
        self.duplicate = duplicate
        self.body = nn.Flatten()
        self.head = nn.Linear(2 * d if duplicate else d, k)

    def forward(self, x):
        h = self.body(x)
        if self.duplicate:
            h = torch.cat([h, h], dim=1)
        return self.head(h)


def test_matches_slow_reference():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(7, 5))
    g[3] = 0.0  # no pairs: left out
    g[4, 1:] = 0.0  # one non-zero entry: left out
    h = rng.normal(size=(50, 5)) @ rng.normal(size=(5, 5))
    r = np.corrcoef(h, rowvar=False)
    assert entanglement_from_gradients(g, r) == pytest.approx(slow_entanglement(g, r))
    assert np.isnan(entanglement_from_gradients(np.zeros((2, 3)), np.eye(3)))


def test_independent_units_give_about_zero():
    torch.manual_seed(0)
    model = Features(d=6)
    x = torch.randn(4000, 1, 2, 3)
    assert gradient_entanglement(model, x, torch.randint(0, 3, (4000,))) < 0.03


def test_duplicated_units_carrying_the_gradient_give_one():
    torch.manual_seed(0)

    class Dup(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(1, 4))  # 4 copies of one signal
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.body(x))

    model = Dup()
    x = torch.randn(64, 1, 1, 1)
    assert gradient_entanglement(model, x, 1) == pytest.approx(1.0)


def test_matches_reference_on_a_model_and_given_correlation():
    torch.manual_seed(1)
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Flatten(), nn.Linear(8, 5), nn.Tanh()))
    model.add_module("head", nn.Linear(5, 3))
    x = torch.randn(40, 2, 2, 2)
    y = torch.randint(0, 3, (40,))
    h = model.body(x).detach().double()
    w = model.head.weight.detach().double()
    r = np.corrcoef(h.numpy(), rowvar=False)
    expected = slow_entanglement(w[y].numpy(), r)
    assert gradient_entanglement(model, x, y, batch_size=7) == pytest.approx(expected)
    eye = np.eye(5)
    assert gradient_entanglement(model, x, y, correlation=eye) == 0.0


def test_dead_units_correlate_with_nothing():
    torch.manual_seed(0)
    model = Features(d=3)
    x = torch.randn(500, 1, 1, 3)
    x[:, 0, 0, 2] = 1.0  # a constant unit with a non-zero gradient
    value = gradient_entanglement(model, x, 0)
    assert np.isfinite(value) and 0.0 <= value < 0.2


def test_model_left_as_it_was(tiny_cnn, images):
    x, y = images
    tiny_cnn.train()
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    value = gradient_entanglement(tiny_cnn, x, y)
    assert 0.0 <= value <= 1.0
    assert tiny_cnn.training
    assert all(p.grad is None for p in tiny_cnn.parameters())
    assert all(torch.equal(before[k], v) for k, v in tiny_cnn.state_dict().items())


def test_inplace_relu_after_layer(images):
    x, y = images
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Flatten(), nn.Linear(128, 6)))
    model.add_module("act", nn.ReLU(inplace=True))
    model.add_module("head", nn.Linear(6, 10))
    assert 0.0 <= gradient_entanglement(model, x, y) <= 1.0


def test_unknown_layer_and_bad_shapes(tiny_cnn, images):
    x, y = images
    with pytest.raises(ValueError, match="did you mean 'body'"):
        gradient_entanglement(tiny_cnn, x, y, layer="bodyy")
    with pytest.raises(ValueError, match=r"correlation must have shape \(3, 3\)"):
        entanglement_from_gradients(np.ones((2, 3)), np.eye(4))
    with pytest.raises(ValueError, match="2-D"):
        entanglement_from_gradients(np.ones(3), np.eye(3))
