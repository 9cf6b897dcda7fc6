"""Saliency masking: exact fraction, lowest-saliency pixels, fills in range, seeded, vectorised."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomxai.train import (
    fill_values,
    low_saliency_mask,
    mask_low_saliency,
    num_masked,
    random_flip_crop,
    saliency_scores,
)


def _reference_mask(grad: torch.Tensor, ratio: float, by: str) -> torch.Tensor:
    """Slow and obvious: per image, sort the pixel scores and take the first k."""
    n, _, h, w = grad.shape
    k = max(1, int(ratio * h * w))
    out = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        score = grad[i].abs().sum(0) if by == "abs" else -grad[i].sum(0)
        flat = score.flatten().tolist()
        chosen = sorted(range(h * w), key=lambda j: flat[j])[:k]
        for j in chosen:
            out[i, j // w, j % w] = True
    return out


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    c=st.integers(1, 3),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    ratio=st.floats(0.01, 0.99),
    by=st.sampled_from(["abs", "signed"]),
    seed=st.integers(0, 2**16),
)
def test_mask_matches_reference_and_masks_the_exact_count(n, c, h, w, ratio, by, seed):
    g = torch.Generator().manual_seed(seed)
    # Distinct scores (a permutation), so the k lowest are unambiguous.
    base = torch.randperm(n * h * w, generator=g).float().view(n, 1, h, w) + 1.0
    sign = torch.where(torch.rand(n, 1, h, w, generator=g) < 0.5, -1.0, 1.0)
    grad = (base * sign).expand(n, c, h, w) / c if by == "abs" else (base * sign).repeat(1, c, 1, 1)
    mask = low_saliency_mask(grad, ratio=ratio, by=by)
    k = num_masked(h, w, ratio)
    assert mask.shape == (n, h, w)
    assert mask.flatten(1).sum(1).tolist() == [k] * n
    assert torch.equal(mask, _reference_mask(grad, ratio, by))


def test_lowest_abs_gradient_pixels_are_replaced_in_every_channel(seed):
    x = torch.rand(3, 2, 6, 6)
    grad = torch.randn(3, 2, 6, 6)
    out = mask_low_saliency(x, grad, ratio=0.25, fill="zero")
    k = num_masked(6, 6, 0.25)
    score = grad.abs().sum(1).flatten(1)
    lowest = score.argsort(dim=1)[:, :k]
    changed = (out != x).any(dim=1).flatten(1)
    for i in range(3):
        assert set(changed[i].nonzero().flatten().tolist()) <= set(lowest[i].tolist())
        # Every channel of a masked pixel holds the fill (0 here), the rest is untouched.
        assert torch.all(out[i].flatten(1)[:, lowest[i]] == 0)
    keep = torch.ones_like(changed)
    keep.scatter_(1, lowest, False)
    assert torch.equal(out.flatten(2).transpose(1, 2)[keep], x.flatten(2).transpose(1, 2)[keep])


def test_signed_masks_pixels_whose_increase_lowers_the_class_probability():
    # dCE/dx > 0 means raising the pixel raises the loss: the most "negative evidence".
    grad = torch.tensor([[[[5.0, -5.0, 0.1, 0.0]]]])
    assert low_saliency_mask(grad, ratio=0.25, by="signed").flatten().tolist() == [
        True,
        False,
        False,
        False,
    ]
    assert low_saliency_mask(grad, ratio=0.25, by="abs").flatten().tolist() == [
        False,
        False,
        False,
        True,
    ]
    assert torch.equal(saliency_scores(grad, by="signed"), -grad.view(1, -1))


@pytest.mark.parametrize("fill", ["uniform", "mean", "zero"])
def test_fills_stay_within_each_images_range(fill, seed):
    x = torch.rand(4, 3, 5, 5) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1, 1) - 1.0
    values = fill_values(x, fill=fill, generator=torch.Generator().manual_seed(1))
    assert values.shape == x.shape
    if fill == "zero":
        assert torch.all(values == 0)
        return
    lo = x.flatten(1).amin(1).view(4, 1, 1, 1)
    hi = x.flatten(1).amax(1).view(4, 1, 1, 1)
    assert torch.all(values >= lo) and torch.all(values <= hi)
    if fill == "mean":
        torch.testing.assert_close(values[:, :, 0, 0], x.mean(dim=(2, 3)))
    else:
        # Independent draws, not one value per image.
        assert values.flatten(1).unique(dim=1).shape[1] > 1


def test_masking_is_deterministic_under_a_seeded_generator_and_leaves_x_alone():
    x = torch.rand(8, 1, 8, 8)
    grad = torch.randn(8, 1, 8, 8, requires_grad=False)
    x_before = x.clone()
    a = mask_low_saliency(x, grad, ratio=0.3, generator=torch.Generator().manual_seed(7))
    b = mask_low_saliency(x, grad, ratio=0.3, generator=torch.Generator().manual_seed(7))
    c = mask_low_saliency(x, grad, ratio=0.3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(x, x_before)
    assert not a.requires_grad


def test_masked_batch_is_detached_even_from_a_grad_requiring_input():
    x = torch.rand(2, 1, 4, 4, requires_grad=True)
    out = mask_low_saliency(x, torch.randn(2, 1, 4, 4), ratio=0.5)
    assert not out.requires_grad and out.grad_fn is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ratio": 0.0}, "ratio must lie in"),
        ({"ratio": 1.0}, "ratio must lie in"),
        ({"ratio": 0.5, "by": "max"}, "by must be one of"),
        ({"ratio": 0.5, "fill": "blur"}, "fill must be one of"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mask_low_saliency(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), **kwargs)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="same shape"):
        mask_low_saliency(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5), ratio=0.5)


def test_flip_crop_gives_crops_of_the_padded_or_flipped_image():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8) + 1
    out = random_flip_crop(x, padding=2, generator=torch.Generator().manual_seed(3))
    for i in range(2):
        candidates = []
        for img in (x[i], x[i].flip(-1)):
            padded = torch.nn.functional.pad(img, (2, 2, 2, 2))
            for oy in range(5):
                for ox in range(5):
                    candidates.append(padded[:, oy : oy + 8, ox : ox + 8])
        assert any(torch.equal(out[i], cand) for cand in candidates)
