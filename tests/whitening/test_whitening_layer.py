"""GroupWhitening: train vs eval, running statistics, state_dict, conv maps, folding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import whitening_reference as ref
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from geomxai.whitening import GroupWhitening, fold_into_linear, newton_schulz_whiten, zca_whiten

F64 = torch.float64


def _batch(n: int, d: int, *, dtype=torch.float32, offset: float = 2.0) -> torch.Tensor:
    return (torch.randn(n, d) @ torch.randn(d, d) + offset * torch.randn(d)).to(dtype)


@pytest.mark.parametrize("method", ["zca", "newton_schulz"])
def test_train_mode_equals_the_functional_whitening(global_random_seed, method):
    x = _batch(64, 10)
    layer = GroupWhitening(10, group_size=4, method=method)
    fn = zca_whiten if method == "zca" else newton_schulz_whiten
    torch.testing.assert_close(layer(x), fn(x, group_size=4))


def test_running_statistics_follow_the_momentum_update(seed):
    d, g, m = 10, 4, 0.1  # groups [0:4], [4:8] and a remainder [8:10]
    layer = GroupWhitening(d, group_size=g, momentum=m).double()
    x = _batch(50, d, dtype=F64)
    layer(x)
    mean = x.mean(0)
    torch.testing.assert_close(layer.running_mean, m * mean)
    cov = torch.cov(x.T)  # unbiased, as BatchNorm keeps its running variance
    for k, sl in enumerate(ref.group_slices(d, g)):
        r = sl.stop - sl.start
        expected = (1 - m) * torch.eye(r, dtype=F64) + m * cov[sl, sl]
        torch.testing.assert_close(layer.running_cov[k, :r, :r], expected)
    # The unused corner of the remainder block stays the identity.
    torch.testing.assert_close(layer.running_cov[2, 2:, 2:], torch.eye(2, dtype=F64))
    assert int(layer.num_batches_tracked) == 1


def test_momentum_none_keeps_a_cumulative_average(seed):
    layer = GroupWhitening(6, group_size=3, momentum=None).double()
    a, b = _batch(30, 6, dtype=F64), _batch(30, 6, dtype=F64)
    layer(a)
    layer(b)
    torch.testing.assert_close(layer.running_mean, (a.mean(0) + b.mean(0)) / 2)
    expected = (torch.cov(a.T) + torch.cov(b.T)) / 2
    torch.testing.assert_close(layer.running_cov[0], expected[:3, :3])


@pytest.mark.parametrize("method", ["zca", "newton_schulz"])
def test_eval_mode_uses_the_running_statistics(global_random_seed, method):
    d, g, eps = 9, 4, 1e-5
    layer = GroupWhitening(d, group_size=g, momentum=1.0, method=method).double()
    train_x, test_x = _batch(80, d, dtype=F64), _batch(7, d, dtype=F64)
    layer(train_x)
    layer.eval()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    got = layer(test_x).numpy()
    for k, v in layer.state_dict().items():  # eval never touches the buffers
        assert torch.equal(v, before[k])
    tx, sx = train_x.numpy(), test_x.numpy()
    cov = np.cov(tx, rowvar=False)
    for sl in ref.group_slices(d, g):
        c = cov[sl, sl]
        if method == "zca":
            w = ref.zca_matrix(c, eps)
        else:
            w = ref.newton_schulz_matrix(c, eps, 5)
        np.testing.assert_allclose(
            got[:, sl], (sx[:, sl] - tx[:, sl].mean(0)) @ w.T, rtol=1e-7, atol=1e-9
        )


def test_eval_before_training_is_nearly_the_identity():
    layer = GroupWhitening(8, group_size=4).eval()
    x = torch.randn(5, 8)
    torch.testing.assert_close(layer(x), x / (1 + 1e-5) ** 0.5)


def test_eval_gradients_reach_the_input_not_the_buffers(seed):
    layer = GroupWhitening(8, group_size=4)
    layer(_batch(32, 8))
    layer.eval()
    x = torch.randn(4, 8, requires_grad=True)
    (g,) = torch.autograd.grad(layer(x).pow(2).sum(), x, create_graph=True)
    # Double backward works in eval mode (a fixed linear map), as input-gradient methods need.
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert torch.isfinite(gg).all()
    assert all(not b.requires_grad for b in layer.buffers())


def test_state_dict_round_trip(seed):
    layer = GroupWhitening(10, group_size=4, momentum=0.3, affine=True)
    for _ in range(3):
        layer(_batch(40, 10))
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.normal_()
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert set(state) == {"running_mean", "running_cov", "num_batches_tracked", "weight", "bias"}
    clone = GroupWhitening(10, group_size=4, momentum=0.3, affine=True)
    clone.load_state_dict(state)
    x = torch.randn(6, 10)
    torch.testing.assert_close(clone.eval()(x), layer.eval()(x))
    with pytest.raises(RuntimeError, match="size mismatch"):
        GroupWhitening(10, group_size=5).load_state_dict(state, strict=False)


@pytest.mark.parametrize("training", [True, False])
def test_conv_map_equals_whitening_the_reshaped_channels(seed, training):
    n, c, h, w = 3, 10, 4, 5
    a = GroupWhitening(c, group_size=4, affine=True)
    b = GroupWhitening(c, group_size=4, affine=True)
    with torch.no_grad():
        a.weight.normal_()
        b.weight.copy_(a.weight)
    warm = torch.randn(6, c, h, w) * 2 + 1
    a(warm)
    b(warm.permute(0, 2, 3, 1).reshape(-1, c))
    a.train(training)
    b.train(training)
    x = torch.randn(n, c, h, w)
    expected = b(x.permute(0, 2, 3, 1).reshape(-1, c)).reshape(n, h, w, c).permute(0, 3, 1, 2)
    torch.testing.assert_close(a(x), expected)
    torch.testing.assert_close(a.running_cov, b.running_cov)


def test_affine_parameters_scale_shift_and_learn(seed):
    layer = GroupWhitening(6, group_size=3, affine=True)
    with torch.no_grad():
        layer.weight.fill_(2.0)
        layer.bias.fill_(0.5)
    x = _batch(20, 6)
    torch.testing.assert_close(layer(x), 2.0 * zca_whiten(x, group_size=3) + 0.5)
    layer(x).pow(3).sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None


def test_whitening_matrix_is_block_diagonal_and_reproduces_eval(seed):
    layer = GroupWhitening(10, group_size=4)
    layer(_batch(64, 10))
    layer.eval()
    matrix, mean = layer.whitening_matrix()
    assert matrix.shape == (10, 10) and matrix.dtype == F64
    mask = torch.block_diag(torch.ones(4, 4), torch.ones(4, 4), torch.ones(2, 2)).bool()
    assert torch.all(matrix[~mask] == 0)
    x = torch.randn(5, 10)
    torch.testing.assert_close(((x.double() - mean) @ matrix.T).float(), layer(x))


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_fold_into_linear_equals_linear_after_eval_whitening(seed, affine, bias):
    layer = GroupWhitening(12, group_size=5, affine=affine)
    for _ in range(2):
        layer(_batch(40, 12, offset=3.0))
    if affine:
        with torch.no_grad():
            layer.weight.uniform_(0.5, 2.0)
            layer.bias.normal_()
    layer.eval()
    head = nn.Linear(12, 3, bias=bias)
    folded = fold_into_linear(layer, head)
    x = torch.randn(7, 12) * 2 + 1
    torch.testing.assert_close(folded(x), head(layer(x)), atol=1e-5, rtol=1e-5)
    assert folded is not head and folded.in_features == 12 and folded.out_features == 3


def test_fold_into_linear_validates(seed):
    layer = GroupWhitening(8, group_size=4)
    with pytest.raises(ValueError, match="got in_features=6 for num_features=8"):
        fold_into_linear(layer, nn.Linear(6, 2))
    with pytest.raises(TypeError, match="must be a GroupWhitening"):
        fold_into_linear(nn.Identity(), nn.Linear(8, 2))


def test_fewer_samples_than_group_size_and_single_sample(seed):
    layer = GroupWhitening(32, group_size=16)
    x = torch.randn(3, 32, requires_grad=True)
    y = layer(x)
    y.pow(2).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(layer.running_cov).all()
    with pytest.raises(ValueError, match="more than 1 value per feature in training mode"):
        layer(torch.randn(1, 32))
    assert torch.isfinite(layer.eval()(torch.randn(1, 32))).all()


@given(
    st.integers(2, 12),
    st.sampled_from(["zca", "newton_schulz"]),
    st.sampled_from([1e-9, 1.0, 1e9]),
    st.integers(0, 2**31 - 1),
)
@ref.hyp_settings(15)
def test_degenerate_batches_through_the_layer(n, method, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen) * scale
    x[:, 2] = 1.0  # dead
    x[:, 5] = x[:, 4]  # duplicate
    layer = GroupWhitening(8, group_size=4, method=method, affine=True)
    for mode in (True, False):
        layer.train(mode)
        xx = x.clone().requires_grad_(True)
        y = layer(xx)
        (y * torch.randn(y.shape, generator=gen)).sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(xx.grad).all()
        assert torch.isfinite(layer.weight.grad).all()
    assert all(torch.isfinite(b.float()).all() for b in layer.buffers())


def test_autocast_keeps_the_layer_in_full_precision(seed):
    layer = GroupWhitening(8, group_size=4)
    x = _batch(32, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, zca_whiten(x, group_size=4))


def test_constructor_validates_its_arguments():
    msg = "group_size must divide into at least one group of 2 or more features; got group_size=1 for d=512"
    with pytest.raises(ValueError, match=msg):
        GroupWhitening(512, group_size=1)
    with pytest.raises(
        ValueError, match="method must be one of 'zca', 'newton_schulz'; got method='svd'"
    ):
        GroupWhitening(8, group_size=4, method="svd")
    with pytest.raises(
        ValueError, match=r"momentum must be a finite number in \(0, 1\] or None; got momentum=0"
    ):
        GroupWhitening(8, group_size=4, momentum=0)
    with pytest.raises(ValueError, match="eps must be"):
        GroupWhitening(8, group_size=4, eps=-1.0)
    with pytest.raises(
        ValueError, match="num_features must be an integer >= 2; got num_features=1"
    ):
        GroupWhitening(1, group_size=None)
    layer = GroupWhitening(8, group_size=4)
    with pytest.raises(ValueError, match="has 6 features on dim 1 but 8 were expected"):
        layer(torch.randn(4, 6))


def test_trainer_signature_and_defaults():
    layer = GroupWhitening(512, group_size=16, eps=1e-5, momentum=0.1, method="zca")
    assert layer.running_cov.shape == (32, 16, 16) and layer.weight is None
    assert "group_size=16" in repr(layer)


# ------------------------------------------------------------------------- non-finite input


def _state(layer: GroupWhitening) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in layer.state_dict().items()}


def _assert_state(layer: GroupWhitening, before: dict[str, torch.Tensor]) -> None:
    after = layer.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)


class TestNonFiniteInput:
    """One NaN batch never poisons the running statistics, on the CPU or (guarded) elsewhere."""

    @pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
    @pytest.mark.parametrize("method", ["zca", "newton_schulz"])
    def test_the_cpu_refuses_before_any_statistic_changes(self, training, bad, method, seed):
        layer = GroupWhitening(10, group_size=4, momentum=0.3, method=method)
        layer(_batch(32, 10))  # running statistics that are not the initial ones
        layer.train(training)
        before = _state(layer)
        x = _batch(32, 10)
        x[7, 3] = bad
        with pytest.raises(ValueError, match=r"x contains 1 NaN or infinite value\(s\) out of 320"):
            layer(x)
        _assert_state(layer, before)
        assert int(layer.num_batches_tracked) == 1

    def test_conv_maps_are_refused_too(self, seed):
        layer = GroupWhitening(6, group_size=3)
        before = _state(layer)
        x = torch.randn(4, 6, 5, 5)
        x[1, 2, 3, 4] = float("nan")
        with pytest.raises(ValueError, match="1 NaN"):
            layer(x)
        _assert_state(layer, before)

    @pytest.mark.parametrize("method", ["zca", "newton_schulz"])
    @pytest.mark.parametrize("momentum", [0.1, None])
    def test_where_the_forward_does_not_test_a_bad_batch_still_leaves_the_state(
        self, monkeypatch, momentum, method, seed
    ):
        # What an accelerator does: the forward's test is skipped (on_accelerator=False), and
        # the running update is guarded on the device instead.
        from _internals import whitening_layer as layer_module

        calls = []

        def skipped(rows, *, name="x", on_accelerator=True):
            calls.append(on_accelerator)

        monkeypatch.setattr(layer_module, "refuse_nonfinite", skipped)
        good_a, good_b = _batch(32, 10, dtype=F64), _batch(32, 10, dtype=F64)
        bad = _batch(32, 10, dtype=F64)
        bad[0, 0] = float("nan")
        layer = GroupWhitening(10, group_size=4, momentum=momentum, method=method).double()
        reference = GroupWhitening(10, group_size=4, momentum=momentum, method=method).double()
        layer(good_a)
        reference(good_a)
        before = _state(layer)
        try:
            y = layer(bad)
        except FloatingPointError:  # ZCA: eigh may refuse a NaN covariance itself
            assert method == "zca"
        else:
            assert torch.isnan(y).any()  # not finite: the trainer's NaN stop sees it
        assert calls and not any(calls)  # the layer asks to be skipped off the CPU
        _assert_state(layer, before)
        layer(good_b)
        reference(good_b)
        _assert_state(layer, _state(reference))  # as if the bad batch had never come

    def test_inf_input_whose_moments_are_not_finite_is_not_tracked(self, monkeypatch, seed):
        from _internals import whitening_layer as layer_module

        monkeypatch.setattr(layer_module, "refuse_nonfinite", lambda rows, **kw: None)
        layer = GroupWhitening(4, group_size=2, momentum=0.5)
        before = _state(layer)
        x = torch.randn(16, 4)
        x[2, 1] = float("inf")
        layer(x)
        _assert_state(layer, before)

    def test_the_guarded_update_reads_nothing_back_to_the_host(self, monkeypatch, seed):
        # The guard must cost no host synchronisation on a GPU: no Tensor -> Python value read
        # anywhere in a training forward once the forward's own test is skipped.
        from _internals import whitening_layer as layer_module

        monkeypatch.setattr(layer_module, "refuse_nonfinite", lambda rows, **kw: None)
        layer = GroupWhitening(8, group_size=4, momentum=0.1, method="newton_schulz")
        x = _batch(32, 8)
        x[0, 0] = float("nan")

        def no_host_read(*args, **kwargs):
            raise AssertionError("a tensor value was read on the host")

        for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
            monkeypatch.setattr(torch.Tensor, name, no_host_read)
        before = _state(layer)
        layer(x)
        monkeypatch.undo()
        _assert_state(layer, before)

    @pytest.mark.gpu
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    def test_on_cuda_a_bad_training_batch_is_not_tracked(self, seed):
        layer = GroupWhitening(8, group_size=4).cuda()
        layer(_batch(32, 8).cuda())
        before = _state(layer)
        x = _batch(32, 8).cuda()
        x[0, 0] = float("nan")
        assert torch.isnan(layer(x)).any()
        _assert_state(layer, before)
