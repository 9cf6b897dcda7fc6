"""eigh_routine: the ZCA matrices take their eigendecomposition from the routine given."""

from __future__ import annotations

import pytest
import torch

from geomxai.whitening import GroupWhitening, eigh_routine, inv_sqrt_psd, zca_whiten


def _covs(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(3, 20, 4, generator=gen, dtype=torch.float64)
    return a.mT @ a / 20


def test_the_routine_is_called_and_gives_the_same_matrices():
    calls = []

    def host(sym):
        calls.append(tuple(sym.shape))
        return torch.linalg.eigh(sym)

    c = _covs()
    plain = inv_sqrt_psd(c, 1e-5)
    with eigh_routine(host):
        routed = inv_sqrt_psd(c, 1e-5)
        x = torch.randn(32, 8, dtype=torch.float64)
        zca_whiten(x, group_size=4)
        GroupWhitening(8, group_size=4, method="zca").train()(x.float())
    assert calls[0] == (3, 4, 4) and len(calls) == 3
    torch.testing.assert_close(routed, plain)
    inv_sqrt_psd(c, 1e-5)  # outside the block the default route again
    assert len(calls) == 3


def test_a_routine_that_does_not_converge_falls_back():
    def failing(sym):
        raise torch.linalg.LinAlgError("no convergence")

    c = _covs(1)
    with eigh_routine(failing):
        got = inv_sqrt_psd(c, 1e-5)
    torch.testing.assert_close(got, inv_sqrt_psd(c, 1e-5), rtol=1e-6, atol=1e-8)


def test_a_routine_must_be_callable():
    with pytest.raises(TypeError, match="fn must be a callable"):
        with eigh_routine("eigh"):
            pass
