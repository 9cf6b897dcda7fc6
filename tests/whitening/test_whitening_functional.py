"""zca_whiten and newton_schulz_whiten against slow references, invariances and degenerate input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import whitening_reference as ref
from _internals import zca_matrices
from hypothesis import given
from hypothesis import strategies as st

from geomxai.whitening import inv_sqrt_psd, newton_schulz_whiten, ns_inv_sqrt, zca_whiten

F64 = torch.float64


@st.composite
def full_rank_batches(draw, max_d: int = 10):
    """(x, group_size, eps): correlated, offset, full-rank float64 data at scales 1e-3 .. 1e3."""
    d = draw(st.integers(2, max_d))
    group_size = draw(st.one_of(st.none(), st.integers(2, d)))
    n = draw(st.integers(3 * d, 6 * d))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = 10.0 ** draw(st.sampled_from([-3, 0, 3]))
    rng = np.random.default_rng(seed)
    # Mixing matrix with condition number at most 10: well inside what float64 whitens exactly.
    mix = (
        ref.random_orthogonal(d, rng)
        @ np.diag(rng.uniform(0.3, 3.0, d))
        @ ref.random_orthogonal(d, rng)
    )
    x = (rng.normal(size=(n, d)) @ mix + 5.0 * rng.normal(size=d)) * scale
    # eps far below the smallest eigenvalue, so that the output is white to ~1e-8.
    return x, group_size, 1e-10 * scale**2


@st.composite
def degenerate_batches(draw):
    """Batches with dead, duplicated, rescaled-duplicate and zero units, few samples, odd scales."""
    d = draw(st.integers(2, 10))
    n = draw(st.integers(1, 12))
    group_size = draw(st.one_of(st.none(), st.integers(2, d)))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = 10.0 ** draw(st.sampled_from([-12, -6, 0, 6, 12]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    kinds = draw(
        st.lists(
            st.sampled_from(["normal", "dead", "dup", "scaled", "zero"]), min_size=d, max_size=d
        )
    )
    rng = np.random.default_rng(seed)
    cols = []
    for j, kind in enumerate(kinds):
        if kind == "dead":
            cols.append(np.full(n, rng.normal() * 3.0))
        elif kind == "zero":
            cols.append(np.zeros(n))
        elif kind in ("dup", "scaled") and j > 0:
            src = cols[rng.integers(j)]
            cols.append(src * (1.0 if kind == "dup" else rng.uniform(-4.0, 4.0)))
        else:
            cols.append(rng.normal(size=n))
    x = torch.tensor(np.stack(cols, axis=1) * scale, dtype=dtype)
    return x, group_size, seed


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


def _assert_finite_forward_backward(fn, x: torch.Tensor, seed: int) -> None:
    x = x.clone().requires_grad_(True)
    y = fn(x)
    assert torch.isfinite(y).all()
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    (y * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------------- ZCA: values


@given(full_rank_batches())
@ref.hyp_settings(25)
def test_zca_matches_reference(case):
    x, g, eps = case
    y = zca_whiten(_t(x), group_size=g, eps=eps).numpy()
    np.testing.assert_allclose(y, ref.zca_whiten(x, g, eps), rtol=1e-7, atol=1e-7)


@given(full_rank_batches())
@ref.hyp_settings(20)
def test_whitened_covariance_is_identity_within_groups(case):
    x, g, eps = case
    y = zca_whiten(_t(x), group_size=g, eps=eps).numpy()
    for sl in ref.group_slices(x.shape[1], g):
        np.testing.assert_allclose(ref.cov_biased(y[:, sl]), np.eye(sl.stop - sl.start), atol=1e-7)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-9)


@given(full_rank_batches())
@ref.hyp_settings(15)
def test_zca_matrix_is_symmetric_positive_definite_inverse_root(case):
    x, _, eps = case
    cov = ref.cov_biased(x)
    w = inv_sqrt_psd(_t(cov), eps).numpy()
    np.testing.assert_allclose(w, w.T, rtol=0, atol=1e-12 * np.abs(w).max())
    assert np.linalg.eigvalsh(w).min() > 0
    np.testing.assert_allclose(w @ (cov + eps * np.eye(len(cov))) @ w, np.eye(len(cov)), atol=1e-8)
    np.testing.assert_allclose(w, ref.zca_matrix(cov, eps), rtol=1e-8, atol=1e-10 * np.abs(w).max())


@given(full_rank_batches(max_d=8), st.integers(0, 2**31 - 1))
@ref.hyp_settings(20)
def test_zca_is_the_whitening_closest_to_the_input(case, seed):
    """Among all whitenings Q W_zca (Q orthogonal), ZCA minimises E||x_c - W x_c||^2."""
    x, _, eps = case
    xc = x - x.mean(axis=0)
    y = zca_whiten(_t(x), eps=eps).numpy()
    best = np.mean(np.sum((xc - y) ** 2, axis=1))
    rng = np.random.default_rng(seed)
    for _ in range(5):
        q = ref.random_orthogonal(x.shape[1], rng)
        other = y @ q.T  # still white: Q W is a whitening matrix
        assert np.mean(np.sum((xc - other) ** 2, axis=1)) >= best - 1e-9 * (1 + best)
    lam, u = np.linalg.eigh(ref.cov_biased(x))
    pca = xc @ u / np.sqrt(lam + eps)  # PCA whitening: rotates onto the eigenbasis
    np.testing.assert_allclose(ref.cov_biased(pca), np.eye(x.shape[1]), atol=1e-7)
    assert np.mean(np.sum((xc - pca) ** 2, axis=1)) >= best - 1e-9 * (1 + best)


@given(full_rank_batches())
@ref.hyp_settings(20)
def test_groupwise_equals_whitening_each_block_alone(case):
    x, g, eps = case
    y = zca_whiten(_t(x), group_size=g, eps=eps).numpy()
    for sl in ref.group_slices(x.shape[1], g):
        block = x[:, sl]
        if block.shape[1] == 1:
            # Documented: a 1-feature remainder group is standardised.
            alone = (block - block.mean(0)) / np.sqrt(block.var(0) + eps)
        else:
            alone = zca_whiten(_t(block), eps=eps).numpy()
        np.testing.assert_allclose(y[:, sl], alone, rtol=1e-9, atol=1e-9)


@given(full_rank_batches(), st.integers(0, 2**31 - 1))
@ref.hyp_settings(15)
def test_permuting_samples_permutes_the_output(case, seed):
    x, g, eps = case
    perm = np.random.default_rng(seed).permutation(len(x))
    for fn in (zca_whiten, newton_schulz_whiten):
        y = fn(_t(x), group_size=g, eps=eps).numpy()
        np.testing.assert_allclose(
            fn(_t(x[perm]), group_size=g, eps=eps).numpy(), y[perm], atol=1e-8
        )


def test_float32_input_with_large_mean_is_whitened_accurately(global_random_seed):
    """Statistics in float64: a float32 batch with mean 1e4 and spread 1 still whitens to ~1e-4."""
    rng = np.random.default_rng(global_random_seed)
    x = (1e4 + rng.normal(size=(512, 16)) @ rng.normal(size=(16, 16))).astype(np.float32)
    y = zca_whiten(torch.from_numpy(x), group_size=8)
    assert y.dtype == torch.float32
    np.testing.assert_allclose(y.numpy(), ref.zca_whiten(x.astype(np.float64), 8, 1e-5), atol=2e-4)


def test_conv_map_whitens_channels_over_all_positions(seed):
    x = torch.randn(4, 6, 5, 3, dtype=F64) * torch.arange(1, 7, dtype=F64)[:, None, None]
    rows = x.permute(0, 2, 3, 1).reshape(-1, 6)
    for fn in (zca_whiten, newton_schulz_whiten):
        expected = fn(rows, group_size=4).reshape(4, 5, 3, 6).permute(0, 3, 1, 2)
        torch.testing.assert_close(fn(x, group_size=4), expected)


def test_input_is_left_unchanged(global_random_seed):
    x = torch.randn(20, 5)
    before = x.clone()
    zca_whiten(x, group_size=2)
    newton_schulz_whiten(x, group_size=2)
    assert torch.equal(x, before)


# ------------------------------------------------------------------------------- Newton-Schulz


@given(full_rank_batches(), st.integers(1, 6))
@ref.hyp_settings(20)
def test_newton_schulz_matches_iternorm_reference(case, iters):
    x, g, _ = case
    eps = 1e-5
    y = newton_schulz_whiten(_t(x), group_size=g, iters=iters, eps=eps).numpy()
    np.testing.assert_allclose(y, ref.newton_schulz_whiten(x, g, eps, iters), rtol=1e-7, atol=1e-7)


@given(full_rank_batches(max_d=12))
@ref.hyp_settings(15)
def test_newton_schulz_approaches_zca_as_iterations_grow(case):
    x, _, eps = case
    cov = _t(ref.cov_biased(x))
    exact = inv_sqrt_psd(cov, eps)
    errors = [
        float(torch.linalg.matrix_norm(ns_inv_sqrt(cov, eps=eps, iters=t) - exact))
        for t in (1, 2, 4, 8, 16, 32, 64, 128)
    ]
    scale = float(torch.linalg.matrix_norm(exact))
    # Every eigenvalue's error shrinks monotonically, so the Frobenius error does too...
    assert all(b <= a + 1e-12 * scale for a, b in zip(errors, errors[1:], strict=False))
    # ...down to rounding, and it stays there (the coupled iteration is stable).
    assert errors[-2] < 1e-9 * scale and errors[-1] < 1e-9 * scale


# ----------------------------------------------------------------------------------- gradients


def test_gradcheck_zca_and_newton_schulz(global_random_seed):
    x = (torch.randn(9, 5, dtype=F64) @ torch.randn(5, 5, dtype=F64)).requires_grad_(True)
    # group_size=2 on d=5: two full groups and a 1-feature remainder, all in one check.
    assert torch.autograd.gradcheck(lambda t: zca_whiten(t, group_size=2, eps=1e-3), (x,))
    assert torch.autograd.gradcheck(lambda t: zca_whiten(t, eps=1e-3), (x,))
    assert torch.autograd.gradcheck(lambda t: newton_schulz_whiten(t, group_size=3, iters=4), (x,))


def test_gradcheck_inverse_root_at_repeated_eigenvalues(seed):
    """The Daleckii-Krein backward is exact where the generic eigh backward divides by zero."""
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=F64))
    for spectrum in ([1.0, 1.0, 1.0, 2.0], [0.5] * 4, [1e-3, 1e-3, 1.0, 1.0]):
        c = (q @ torch.diag(torch.tensor(spectrum, dtype=F64)) @ q.T).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda m: inv_sqrt_psd(m, 1e-3), (c,))
    # Where torch's own eigh gradient is NaN or inf, ours is finite.
    c = torch.eye(3, dtype=F64, requires_grad=True)
    inv_sqrt_psd(c, 1e-5).sum().backward()
    assert torch.isfinite(c.grad).all()


def test_remainder_group_shares_the_eigh_of_the_full_groups_exactly(seed):
    """zca_matrices embeds a remainder covariance as diag(C_r, I); values and gradients must be
    those of C_r alone, also when C_r has the padding's eigenvalue 1 (a shared eigenspace)."""
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=F64))
    full = torch.randn(4, 5, 5, dtype=F64)
    full = (full @ full.mT / 5).requires_grad_(True)
    for spectrum in ([1.0, 1.0, 0.2], [0.0, 1.0, 3.0]):
        rest = (q @ torch.diag(torch.tensor(spectrum, dtype=F64)) @ q.T)[None].requires_grad_(True)
        together = zca_matrices([full, rest], eps=1e-3)
        alone = [inv_sqrt_psd(full, 1e-3), inv_sqrt_psd(rest, 1e-3)]
        grads = [torch.randn_like(m) for m in alone]
        got = torch.autograd.grad(together, (full, rest), grads)
        want = torch.autograd.grad(alone, (full, rest), grads)
        for a, b in zip([*together, *got], [*alone, *want], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradcheck_through_rank_deficient_batches(seed):
    """Zero eigenvalues: fewer samples than features, and a duplicated unit.

    Checked through the data (a perturbed ``x`` keeps ``C = X^T X / n`` positive semi-definite);
    perturbing ``C`` itself would push a zero eigenvalue below 0, where the clamp has a kink.
    """
    few = torch.randn(3, 5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: zca_whiten(t, eps=0.1), (few,))
    dup = torch.randn(8, 4, dtype=F64)
    dup[:, 3] = dup[:, 0]
    dup.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: zca_whiten(t, eps=0.1), (dup,))


def test_gradient_matches_torch_eigh_where_eigenvalues_are_distinct(seed):
    a = torch.randn(6, 6, dtype=F64)
    c = (a @ a.T + 0.1 * torch.eye(6, dtype=F64)).requires_grad_(True)
    g = torch.randn(6, 6, dtype=F64)
    (ours,) = torch.autograd.grad((inv_sqrt_psd(c, 1e-5) * g).sum(), c)
    lam, u = torch.linalg.eigh(0.5 * (c + c.T))
    (theirs,) = torch.autograd.grad(((u / (lam + 1e-5).sqrt()) @ u.T * g).sum(), c)
    torch.testing.assert_close(0.5 * (ours + ours.T), 0.5 * (theirs + theirs.T))


# ---------------------------------------------------------------------------- degenerate input


@given(degenerate_batches())
@ref.hyp_settings(30)
def test_degenerate_batches_give_finite_values_and_gradients(case):
    x, g, seed = case
    _assert_finite_forward_backward(lambda t: zca_whiten(t, group_size=g), x, seed)
    _assert_finite_forward_backward(lambda t: newton_schulz_whiten(t, group_size=g), x, seed)


def test_dead_and_duplicated_units_pass_through_safely(seed):
    x = torch.randn(6, 4, dtype=F64)
    x[:, 1] = 3.0  # dead unit
    x[:, 3] = x[:, 2]  # duplicate
    y = zca_whiten(x, group_size=4)
    torch.testing.assert_close(y[:, 1], torch.zeros(6, dtype=F64))
    # The duplicated pair is whitened to identical columns, jointly of unit variance up to eps.
    torch.testing.assert_close(y[:, 2], y[:, 3])
    assert torch.isfinite(y).all()


def test_single_sample_whitens_to_zero():
    y = zca_whiten(torch.randn(1, 5), group_size=2)
    torch.testing.assert_close(y, torch.zeros(1, 5))


# ------------------------------------------------------------------------ autocast and dtypes


def test_autocast_runs_the_whitening_in_full_precision(seed):
    x = torch.randn(64, 8) @ torch.randn(8, 8)
    plain = zca_whiten(x, group_size=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = zca_whiten(x, group_size=4)
        auto_ns = newton_schulz_whiten(x, group_size=4)
        low = zca_whiten(x.bfloat16(), group_size=4)
    assert auto.dtype == torch.float32 and low.dtype == torch.bfloat16
    torch.testing.assert_close(auto, plain)
    torch.testing.assert_close(auto_ns, newton_schulz_whiten(x, group_size=4))
    ref_low = zca_whiten(x.bfloat16().float(), group_size=4)
    torch.testing.assert_close(low.float(), ref_low, atol=0.05, rtol=0.02)


def test_half_input_with_large_values_does_not_overflow(seed):
    x = (torch.randn(32, 4) * 1e4).clamp(-6e4, 6e4).half()  # x^2 would overflow float16
    y = zca_whiten(x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()


# ------------------------------------------------------------------------------ eigh fallback


@pytest.mark.parametrize(("failures", "tol"), [(1, 1e-12), (4, 1e-6)])
def test_eigh_failure_is_retried(monkeypatch, seed, failures, tol):
    """1 failure: a diagonal shift (same decomposition); 4: all shifts fail, a tiny perturbation."""
    x = torch.randn(40, 6, dtype=F64)
    expected = zca_whiten(x, group_size=3)
    real = torch.linalg.eigh
    calls = []

    def flaky(a):
        calls.append(a)
        if len(calls) <= failures:
            raise torch.linalg.LinAlgError("simulated non-convergence")
        return real(a)

    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    torch.testing.assert_close(zca_whiten(x, group_size=3), expected, atol=tol, rtol=tol)
    assert len(calls) == failures + 1


def test_eigh_that_never_converges_raises_a_clear_error(monkeypatch):
    def broken(a):
        raise torch.linalg.LinAlgError("simulated")

    monkeypatch.setattr(torch.linalg, "eigh", broken)
    with pytest.raises(torch.linalg.LinAlgError, match="did not converge"):
        zca_whiten(torch.randn(10, 4))
    # Finite input whose covariance overflows still reaches the solver's own clear error
    # (NaN/inf input is refused before, see TestNonFiniteInput).
    huge = 1e200 * torch.randn(
        10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        zca_whiten(huge)


# --------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("fn", [zca_whiten, newton_schulz_whiten])
def test_group_size_errors_say_what_was_expected_and_what_came(fn):
    msg = "group_size must divide into at least one group of 2 or more features; got group_size=1 for d=512"
    with pytest.raises(ValueError, match=msg):
        fn(torch.randn(4, 512), group_size=1)
    with pytest.raises(ValueError, match="got group_size=0 for d=8"):
        fn(torch.randn(4, 8), group_size=0)
    with pytest.raises(ValueError, match="got group_size=16 for d=8; use group_size=None"):
        fn(torch.randn(4, 8), group_size=16)
    with pytest.raises(ValueError, match="got group_size=None for d=1"):
        fn(torch.randn(4, 1))
    with pytest.raises(TypeError, match="group_size must be an integer or None"):
        fn(torch.randn(4, 8), group_size=2.0)


@pytest.mark.parametrize("fn", [zca_whiten, newton_schulz_whiten])
def test_other_arguments_are_validated(fn):
    with pytest.raises(ValueError, match="eps must be a positive finite number; got eps=0"):
        fn(torch.randn(4, 3), eps=0)
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        fn(torch.randn(4))
    with pytest.raises(TypeError, match="floating-point"):
        fn(torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="no samples"):
        fn(torch.randn(0, 3))
    with pytest.raises(
        ValueError, match=r"iters must be an int of at least 1 or 'auto' \(.*\); got iters=0"
    ):
        newton_schulz_whiten(torch.randn(4, 3), iters=0)


# ------------------------------------------------------------------------- non-finite input


class TestNonFiniteInput:
    """NaN or inf features are refused at the functions' boundary, with a count and a fix."""

    @pytest.mark.parametrize("fn", [zca_whiten, newton_schulz_whiten])
    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
    @pytest.mark.parametrize("shape", [(20, 6), (4, 6, 3, 3)], ids=["features", "conv-map"])
    def test_a_bad_value_is_refused_and_counted(self, fn, bad, shape, seed):
        x = torch.randn(*shape)
        x.view(-1)[5] = bad
        with pytest.raises(ValueError, match=r"x contains 1 NaN or infinite value\(s\) out of"):
            fn(x, group_size=3)

    @pytest.mark.parametrize("fn", [zca_whiten, newton_schulz_whiten])
    def test_the_message_says_what_to_do(self, fn, seed):
        x = torch.randn(20, 4, dtype=F64)
        x[:3, 0] = float("nan")
        with pytest.raises(ValueError, match="3 NaN .* drop or repair those samples"):
            fn(x)

    def test_the_input_is_left_unchanged(self, seed):
        x = torch.randn(20, 4)
        x[0, 0] = float("nan")
        before = x.clone()
        with pytest.raises(ValueError):
            zca_whiten(x)
        torch.testing.assert_close(x, before, equal_nan=True)

    def test_meta_tensors_hold_no_values_and_are_not_tested(self):
        from _internals import refuse_nonfinite

        refuse_nonfinite(torch.empty(4, 3, device="meta"))  # no error, no values read

    @pytest.mark.gpu
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    def test_the_functions_refuse_on_cuda_too(self, seed):
        x = torch.randn(20, 4, device="cuda")
        x[1, 1] = float("nan")
        for fn in (zca_whiten, newton_schulz_whiten):
            with pytest.raises(ValueError, match="1 NaN"):
                fn(x)
