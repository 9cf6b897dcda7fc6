"""GroupWhitening.batch_moments: the one step a subclass overrides (SyncGroupWhitening does)."""

from __future__ import annotations

import pytest
import torch
import whitening_reference as ref

from geomxai.whitening import (
    STATS_DTYPE,
    GroupWhitening,
    split_chunks,
    within_group_products,
    zca_whiten,
)


def _batch(n: int, d: int) -> torch.Tensor:
    return torch.randn(n, d, dtype=torch.float64) @ torch.randn(d, d, dtype=torch.float64) + 2.0


def test_the_default_step_is_the_batch_mean_and_biased_group_covariances(seed):
    d, g = 10, 4  # groups [0:4], [4:8] and a remainder [8:10]
    layer = GroupWhitening(d, group_size=g)
    x = _batch(40, d)
    mean, centred, covs, count = layer.batch_moments(x)
    assert count == 40 and mean.dtype == centred.dtype == STATS_DTYPE
    torch.testing.assert_close(mean, x.mean(0))
    torch.testing.assert_close(centred, x - x.mean(0))
    blocks = [b for chunk in covs for b in chunk.unbind(0)]
    for block, sl in zip(blocks, ref.group_slices(d, g), strict=True):
        torch.testing.assert_close(block, torch.cov(x[:, sl].T, correction=0))


class _ReferenceStatistics(GroupWhitening):
    """Whitens every batch with the statistics of a fixed reference set, as a synchronised
    layer whitens its rows with those of the global batch."""

    def __init__(self, reference: torch.Tensor, **kwargs):
        super().__init__(reference.shape[1], **kwargs)
        self.reference = reference

    def batch_moments(self, rows):
        ref64 = self.reference.to(STATS_DTYPE)
        mean = ref64.mean(0)
        products = within_group_products(ref64 - mean, self.layout)
        count = torch.tensor(float(ref64.shape[0]), dtype=STATS_DTYPE)
        return mean, rows.to(STATS_DTYPE) - mean, split_chunks(products / count, self.layout), count


def test_the_forward_whitens_with_what_the_step_returns(seed):
    full = _batch(64, 8)
    layer = _ReferenceStatistics(full, group_size=4, momentum=1.0).double()
    part = full[:5]  # fewer rows than a group: only the override makes this well defined
    torch.testing.assert_close(layer(part), zca_whiten(full, group_size=4)[:5])
    # The running statistics come from the override's moments and count (unbiased).
    torch.testing.assert_close(layer.running_mean, full.mean(0))
    torch.testing.assert_close(layer.running_cov[0], torch.cov(full[:, :4].T))


def test_one_row_is_refused_by_the_default_step():
    with pytest.raises(ValueError, match="more than 1 value per feature in training mode"):
        GroupWhitening(8, group_size=4).batch_moments(torch.randn(1, 8))
