"""decorrelation_loss: each kind against its definition, closed forms, gradients, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import whitening_reference as ref
from hypothesis import given
from hypothesis import strategies as st

from geomxai.whitening import GroupWhitening, decorrelation_loss, zca_whiten

F64 = torch.float64


@st.composite
def feature_batches(draw):
    d = draw(st.integers(2, 12))
    n = draw(st.integers(2, 40))
    group_size = draw(st.one_of(st.none(), st.integers(2, d)))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = 10.0 ** draw(st.sampled_from([-2, 0, 2]))
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)) * scale
    x[:, rng.integers(d)] = 1.5  # a dead unit in most batches
    return x, group_size


@given(feature_batches())
@ref.hyp_settings(25)
def test_offdiag_matches_the_definition(case):
    x, g = case
    got = decorrelation_loss(torch.tensor(x), group_size=g).item()
    assert got == pytest.approx(ref.offdiag_loss(x, g, 1e-5), rel=1e-9, abs=1e-12)


@given(feature_batches())
@ref.hyp_settings(15)
def test_covariance_kind_is_decov(case):
    x, g = case
    got = decorrelation_loss(torch.tensor(x), group_size=g, kind="covariance").item()
    assert got == pytest.approx(ref.decov_loss(x, g), rel=1e-9, abs=1e-12)


def test_zero_for_uncorrelated_features(seed):
    z = torch.randn(200, 16, dtype=F64)
    q, _ = torch.linalg.qr(z - z.mean(0))  # exactly orthogonal, centred columns
    for kind in ("offdiag", "covariance"):
        assert decorrelation_loss(q * 3.0 + 1.0, group_size=8, kind=kind).item() < 1e-20
    # ZCA-whitened features have (near) zero within-group correlation, hence near zero loss.
    white = zca_whiten(
        torch.randn(200, 16, dtype=F64) @ torch.randn(16, 16, dtype=F64), group_size=8
    )
    assert decorrelation_loss(white, group_size=8).item() < 1e-8


@pytest.mark.parametrize("width", [32, 256])
def test_offdiag_has_the_same_scale_at_any_width(seed, width):
    """Equicorrelated groups (rho = 0.5): the loss is rho^2 = 0.25 whatever d is."""
    n, g, rho = 4000, 16, 0.5
    common = torch.randn(n, width // g, 1, dtype=F64)
    own = torch.randn(n, width // g, g, dtype=F64)
    h = (rho**0.5 * common + (1 - rho) ** 0.5 * own).reshape(n, width)
    assert decorrelation_loss(h, group_size=g).item() == pytest.approx(rho**2, abs=0.02)


def test_gradients_are_finite_at_dead_and_duplicated_units(seed):
    h = torch.randn(8, 6, dtype=F64)
    h[:, 0] = 2.0
    h[:, 1] = 0.0
    h[:, 3] = h[:, 2]
    h.requires_grad_(True)
    for kind in ("offdiag", "covariance"):
        (g,) = torch.autograd.grad(decorrelation_loss(h, group_size=3, kind=kind), h)
        assert torch.isfinite(g).all()
    single = torch.randn(1, 4, requires_grad=True)
    loss = decorrelation_loss(single)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(single.grad).all()


def test_gradcheck_every_kind(seed):
    h = (torch.randn(10, 5, dtype=F64) @ torch.randn(5, 5, dtype=F64)).requires_grad_(True)
    layer = GroupWhitening(5, group_size=2, momentum=0.5).double()
    layer(torch.randn(30, 5, dtype=F64))
    assert torch.autograd.gradcheck(lambda t: decorrelation_loss(t, group_size=2), (h,))
    assert torch.autograd.gradcheck(lambda t: decorrelation_loss(t, kind="covariance"), (h,))
    assert torch.autograd.gradcheck(
        lambda t: decorrelation_loss(t, kind="whitened", whitening=layer), (h,)
    )


def test_whitened_kind_measures_distance_from_white_under_the_running_transform(seed):
    x = torch.randn(64, 8) @ torch.randn(8, 8)
    layer = GroupWhitening(8, group_size=4, momentum=1.0)
    layer(x)  # running statistics are now exactly those of x
    same = decorrelation_loss(x, kind="whitened", whitening=layer).item()
    other = decorrelation_loss(torch.randn(64, 8) * 3, kind="whitened", whitening=layer).item()
    assert same < 1e-6 < other
    h = torch.randn(64, 8, requires_grad=True)
    decorrelation_loss(h, kind="whitened", whitening=layer).backward()
    assert h.grad is not None and all(not b.requires_grad for b in layer.buffers())


def test_dtype_and_autocast(seed):
    h = torch.randn(16, 8)
    assert decorrelation_loss(h, group_size=4).dtype == torch.float32
    assert decorrelation_loss(h.double(), group_size=4).dtype == F64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = decorrelation_loss(h, group_size=4)
    torch.testing.assert_close(auto, decorrelation_loss(h, group_size=4))


def test_trainer_call_on_conv_maps_and_features(seed):
    h = torch.randn(128, 512, requires_grad=True)
    loss = decorrelation_loss(h, group_size=16, kind="offdiag")
    loss.backward()
    assert loss.shape == () and torch.isfinite(h.grad).all()
    maps = torch.randn(4, 6, 3, 3, dtype=F64)
    rows = maps.permute(0, 2, 3, 1).reshape(-1, 6)
    torch.testing.assert_close(
        decorrelation_loss(maps, group_size=3), decorrelation_loss(rows, group_size=3)
    )


def test_validation_messages():
    h = torch.randn(8, 512)
    msg = "group_size must divide into at least one group of 2 or more features; got group_size=1 for d=512"
    with pytest.raises(ValueError, match=msg):
        decorrelation_loss(h, group_size=1)
    with pytest.raises(
        ValueError, match="kind must be one of 'offdiag', 'covariance', 'whitened'; got kind='l1'"
    ):
        decorrelation_loss(h, kind="l1")
    with pytest.raises(ValueError, match="kind='whitened' needs whitening=<GroupWhitening>"):
        decorrelation_loss(h, kind="whitened")
    layer = GroupWhitening(512, group_size=16)
    with pytest.raises(ValueError, match="got group_size=8 for whitening.group_size=16"):
        decorrelation_loss(h, kind="whitened", whitening=layer, group_size=8)
    with pytest.raises(ValueError, match="h has 6 features on dim 1 but 512 were expected"):
        decorrelation_loss(torch.randn(8, 6), kind="whitened", whitening=layer)


class TestNonFiniteInput:
    """NaN or inf features are refused on the CPU; the loss is never a silent NaN there."""

    @pytest.mark.parametrize("kind", ["offdiag", "covariance", "whitened"])
    @pytest.mark.parametrize("bad", [float("nan"), float("inf")])
    def test_a_bad_value_is_refused_and_counted(self, kind, bad, seed):
        h = torch.randn(16, 8)
        h[3, 2] = bad
        extra = {"whitening": GroupWhitening(8, group_size=4)} if kind == "whitened" else {}
        with pytest.raises(ValueError, match=r"h contains 1 NaN or infinite value\(s\) out of 128"):
            decorrelation_loss(h, group_size=4, kind=kind, **extra)

    def test_conv_maps_are_checked_too(self, seed):
        h = torch.randn(4, 8, 3, 3)
        h[0, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="1 NaN"):
            decorrelation_loss(h, group_size=4)

    @pytest.mark.gpu
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    def test_on_cuda_the_hot_path_does_not_test_and_the_loss_is_not_finite(self, seed):
        h = torch.randn(16, 8, device="cuda")
        h[3, 2] = float("nan")
        loss = decorrelation_loss(h, group_size=4)  # no host sync, no error
        assert not torch.isfinite(loss).item()  # what the trainer's NaN stop reads
