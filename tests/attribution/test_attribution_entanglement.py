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


# ---- live units (issue 23): a dead unit's gradient must not dilute entanglement


def planted_dead_cnn(dead=(0, 2), channels=4):
    """cnn2 whose feature channels ``dead`` never fire (zero weights, negative bias)."""
    from geomxai.models import cnn2

    torch.manual_seed(0)
    model = cnn2(feature_channels=channels).eval()
    with torch.no_grad():
        model.body[3].weight[list(dead)] = 0.0
        model.body[3].bias[list(dead)] = -1.0
    return model


def test_live_unit_entanglement_on_planted_dead_channels():
    from geomxai.attribution import layer_gradients

    model = planted_dead_cnn()
    torch.manual_seed(1)
    x, y = torch.rand(120, 1, 28, 28), torch.randint(0, 10, (120,))
    h = model.body(x).detach().double().numpy()
    g = model.head.weight.detach().double().numpy()[y.numpy()]
    live = np.ones(4 * 49, dtype=bool)
    for c in (0, 2):
        live[c * 49 : (c + 1) * 49] = False
    assert np.all(h[:, ~live] == 0) and np.all(h[:, live].std(0) > 0)
    r_live = np.corrcoef(h[:, live], rowvar=False)
    expected_live = slow_entanglement(g[:, live], r_live)
    r_all = np.zeros((4 * 49, 4 * 49))
    r_all[np.ix_(live, live)] = r_live
    expected_all = slow_entanglement(g, r_all)
    assert gradient_entanglement(model, x, y) == pytest.approx(expected_live, rel=1e-6)
    assert gradient_entanglement(model, x, y, units="all") == pytest.approx(expected_all, rel=1e-6)
    # Half the gradient mass sits on dead units: all-units entanglement is diluted by it.
    assert gradient_entanglement(model, x, y, units="all") < 0.6 * expected_live
    grads = layer_gradients(model, x, y, outputs="all")
    np.testing.assert_allclose(grads.features, h, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grads.gradients, g, rtol=1e-6)
    w = model.head.weight.detach().double().numpy()
    np.testing.assert_allclose(grads.jacobians, np.broadcast_to(w, (120, *w.shape)), rtol=1e-6)


def test_live_mask_of_entanglement_from_gradients():
    g = np.array([[1.0, 1.0, 5.0]])
    r = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    live = np.array([True, True, False])
    assert entanglement_from_gradients(g, r, live=live) == pytest.approx(0.5)
    assert entanglement_from_gradients(g, r) < 0.5
    with pytest.raises(ValueError, match="boolean mask of shape"):
        entanglement_from_gradients(g, r, live=np.array([1, 1, 0]))
    with pytest.raises(ValueError, match="units must be one of"):
        gradient_entanglement(nn.Linear(2, 2), torch.zeros(3, 2), 0, units="some")
