"""Cascading parameter randomisation (Adebayo et al. 2018)."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from geomxai.attribution import cascading_randomization, saliency


def test_layers_order_values_and_model_untouched(tiny_cnn, images):
    x, y = images
    tiny_cnn.train()
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    rng_state = torch.get_rng_state()
    out = cascading_randomization(tiny_cnn, x, y, seed=0)
    assert out.dims == ("layer",)
    assert out["layer"].values.tolist() == ["head", "body.3", "body.0"]
    assert np.all(np.abs(out.values) <= 1)
    assert all(torch.equal(before[k], v) for k, v in tiny_cnn.state_dict().items())
    assert tiny_cnn.training
    assert torch.equal(torch.get_rng_state(), rng_state)
    again = cascading_randomization(tiny_cnn, x, y, seed=0)
    np.testing.assert_array_equal(out.values, again.values)


def test_first_step_matches_a_manual_reference(tiny_cnn, images):
    x, y = images
    out = cascading_randomization(tiny_cnn, x, y, layers=["head"], seed=3)
    import copy

    other = copy.deepcopy(tiny_cnn)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        other.head.reset_parameters()
    a = saliency(tiny_cnn, x, y).flatten(1).numpy()
    b = saliency(other, x, y).flatten(1).numpy()
    expected = np.mean([spearmanr(a[i], b[i]).statistic for i in range(len(a))])
    assert float(out.sel(layer="head")) == pytest.approx(expected)


def test_bad_layers(tiny_cnn, images):
    x, y = images
    with pytest.raises(ValueError, match="unknown layer"):
        cascading_randomization(tiny_cnn, x, y, layers=["nope"])
    with pytest.raises(ValueError, match="distinct"):
        cascading_randomization(tiny_cnn, x, y, layers=["head", "head"])
