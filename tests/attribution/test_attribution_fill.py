"""One fill definition: masking_curve replaces pixels exactly as saliency-guided training does."""

from __future__ import annotations

import pytest
import torch

from geomxai.attribution import masking_curve
from geomxai.models import cnn2
from geomxai.train import fill_values


def _masked_input(model, x, y, *, fill, seed):
    """The batch the model sees when every pixel is removed (fraction 1, MoRF, one batch)."""
    seen = []
    handle = model.register_forward_pre_hook(lambda m, i: seen.append(i[0].clone()))
    try:
        masking_curve(
            model, x, y, torch.rand(x.shape[0], *x.shape[2:]), fractions=[1.0], fill=fill, seed=seed
        )
    finally:
        handle.remove()
    return seen[0]


def _old_uniform(x, generator):
    """The analysis fill before the fills were shared: one [min, max] per image, all channels."""
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return lo + (hi - lo) * torch.rand(x.shape, generator=generator, dtype=x.dtype)


@pytest.mark.parametrize("fill", ["uniform", "mean", "zero"])
def test_curve_fill_is_the_trainer_fill(seed, fill):
    torch.manual_seed(0)
    model = cnn2(in_channels=3, image_size=8, width=4, feature_channels=2)
    g = torch.Generator().manual_seed(3)
    # Channels on very different ranges, as normalised colour images are.
    x = torch.rand(5, 3, 8, 8, generator=g) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1)
    y = torch.zeros(5, dtype=torch.long)
    masked = _masked_input(model, x, y, fill=fill, seed=11)
    expected = fill_values(x, fill=fill, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(masked, expected, rtol=0, atol=0)
    if fill == "uniform":
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        assert torch.all(masked >= lo) and torch.all(masked <= hi)
        # Channel 2 spans at most 0.1: an image-wide range would put values far outside it.
        assert float(masked[:, 2].max()) <= 0.1


def test_grey_images_give_the_same_uniform_fill_as_before(seed):
    torch.manual_seed(0)
    model = cnn2(in_channels=1, image_size=8, width=4, feature_channels=2)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 1, 8, 8, generator=g) * torch.arange(1, 7).view(6, 1, 1, 1)
    y = torch.randint(0, 10, (6,), generator=g)
    masked = _masked_input(model, x, y, fill="uniform", seed=5)
    torch.testing.assert_close(
        masked, _old_uniform(x, torch.Generator().manual_seed(5)), rtol=0, atol=0
    )
