"""Newton-Schulz with ``iters="auto"``: ZCA to a dtype's precision from a static step count.

The reference is eigh-based ZCA of the *same* regularised covariance,
``C + eps max(1, tr(C)/m) I`` (``whitening_reference.relative_floor``), never ZCA with another
``eps``: the claim is that the iteration has converged, not that the floors agree.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import numpy as np
import pytest
import torch
import whitening_reference as ref
from _internals import auto_lower_bound
from hypothesis import given
from hypothesis import strategies as st

from geomxai.whitening import GroupWhitening, newton_schulz_whiten, ns_inv_sqrt, ns_iterations

F32, F64 = torch.float32, torch.float64
EPS32 = torch.finfo(F32).eps


@st.composite
def hard_batches(draw, max_d: int = 16):
    """(x, group_size, seed): correlated, ill-conditioned and rank-deficient float64 data.

    Columns are mixed normal ones, weak ones (variance down to 1e-8 of the others, so condition
    numbers reach 1e8 and beyond the floor), dead (constant), zero, duplicated and rescaled
    duplicates; ``n`` goes down to 1, below the group size; the overall scale puts the mean
    variance on both sides of 1, so both branches of the floor are taken.
    """
    d = draw(st.integers(2, max_d))
    group_size = draw(st.one_of(st.none(), st.integers(2, d)))
    n = draw(st.integers(1, 3 * d))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = 10.0 ** draw(st.sampled_from([-6, -2, 0, 2, 6]))
    kinds = draw(
        st.lists(
            st.sampled_from(["normal", "normal", "weak", "dead", "zero", "dup", "scaled"]),
            min_size=d,
            max_size=d,
        )
    )
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d)) @ ref.random_orthogonal(d, rng)
    cols = []
    for j, kind in enumerate(kinds):
        if kind == "weak":
            cols.append(base[:, j] * 10.0 ** rng.uniform(-4.0, -1.0))
        elif kind == "dead":
            cols.append(np.full(n, rng.normal() * 3.0))
        elif kind == "zero":
            cols.append(np.zeros(n))
        elif kind in ("dup", "scaled") and j > 0:
            src = cols[rng.integers(j)]
            cols.append(src * (1.0 if kind == "dup" else rng.uniform(-4.0, 4.0)))
        else:
            cols.append(base[:, j])
    x = np.stack(cols, axis=1) * np.sqrt(scale) + rng.normal(size=d)
    return x, group_size, seed


@st.composite
def well_conditioned_batches(draw, max_d: int = 10):
    """(x, group_size): full-rank float64 data, mixing condition number at most 10, distinct
    eigenvalues almost surely; the scale puts the mean variance below and above 1."""
    d = draw(st.integers(2, max_d))
    group_size = draw(st.one_of(st.none(), st.integers(2, d)))
    n = draw(st.integers(3 * d, 6 * d))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([0.05, 20.0]))
    mix = (
        ref.random_orthogonal(d, rng)
        @ np.diag(rng.uniform(0.3, 3.0, d))
        @ ref.random_orthogonal(d, rng)
    )
    return (rng.normal(size=(n, d)) @ mix) * np.sqrt(scale) + rng.normal(size=d), group_size


def _group_covs(x: np.ndarray, group_size: int | None) -> list[np.ndarray]:
    return [ref.cov_biased(x[:, sl]) for sl in ref.group_slices(x.shape[1], group_size)]


def _spectral(a: np.ndarray) -> float:
    return float(np.linalg.norm(a, 2))


# ------------------------------------------------------------------------ (a) equals eigh ZCA


@given(hard_batches())
@ref.hyp_settings(25)
def test_auto_matrices_equal_eigh_zca_of_the_same_regularised_covariance(case):
    x, g, _ = case
    eps = 1e-5
    for c in _group_covs(x, g):
        want = ref.zca_matrix(c, ref.relative_floor(c, eps))
        scale = _spectral(want)
        # Run to float32's precision: every eigenvalue of W within float32's unit roundoff
        # (the scalar map's error) plus float64 rounding, about 1e-16 cond(Sigma) <= 1e-9.
        got32 = ns_inv_sqrt(torch.tensor(c), eps=eps, iters="auto", target_dtype=F32).numpy()
        assert _spectral(got32 - want) <= 4 * EPS32 * scale
        # To float64's, the scalar map's error is below rounding, which then dominates.
        got64 = ns_inv_sqrt(torch.tensor(c), eps=eps, iters="auto").numpy()
        assert _spectral(got64 - want) <= 1e-8 * scale


@given(hard_batches(), st.sampled_from([F32, F64]))
@ref.hyp_settings(25)
def test_auto_whitening_equals_eigh_zca_of_the_same_regularised_covariance(case, dtype):
    x, g, _ = case
    eps = 1e-5
    # The reference whitens the very input (float32-rounded for float32): rounding x moves an
    # ill-conditioned W far more than any error of the iteration.
    x = torch.tensor(x, dtype=dtype).double().numpy()
    want = ref.zca_whiten_floored(x, g, eps)
    got = newton_schulz_whiten(torch.tensor(x, dtype=dtype), group_size=g, iters="auto", eps=eps)
    assert got.dtype == dtype
    for sl, c in zip(ref.group_slices(x.shape[1], g), _group_covs(x, g), strict=True):
        # The error of y = x_c W^T is bounded by |x_c| ||dW||; float32 input adds the rounding
        # of x (at the scale of its mean) and of the float32 product.
        xc = x[:, sl] - x[:, sl].mean(axis=0)
        bound = (np.abs(x[:, sl]).max() + 1.0) * _spectral(ref.zca_matrix(c, eps))
        tol = (1e-8 if dtype == F64 else 2e-5) * bound + 1e-12 * np.abs(xc).max()
        np.testing.assert_allclose(got[:, sl].double().numpy(), want[:, sl], rtol=0, atol=tol)


def test_below_unit_mean_variance_auto_equals_zca_whiten_with_the_same_eps(seed):
    """The floor is eps itself for groups of mean variance at most 1: zca_whiten's own eps."""
    x = torch.randn(200, 12, dtype=F64) @ torch.randn(12, 12, dtype=F64) * 0.1
    x[:, 5] = 0.3  # a dead unit
    x[:, 7] = x[:, 6]  # a duplicate
    want = torch.tensor(ref.zca_whiten(x.numpy(), 4, 1e-5))
    torch.testing.assert_close(newton_schulz_whiten(x, group_size=4, iters="auto"), want)


def test_auto_runs_the_static_count_of_its_bound(seed):
    """At mean variance <= 1 the auto path is the int path with ns_iterations(bound) steps."""
    for m in (2, 5, 16):
        a = torch.randn(3 * m, m, dtype=F64) * 0.2
        c = a.T @ a / (3 * m)
        for target in (F32, F64):
            steps = ns_iterations(auto_lower_bound(m, 1e-5), target)
            got = ns_inv_sqrt(c, eps=1e-5, iters="auto", target_dtype=target)
            assert torch.equal(got, ns_inv_sqrt(c, eps=1e-5, iters=steps))


# ------------------------------------------------------------------------------ (b) gradients


def _eigh_whiten_floored(x: torch.Tensor, group_size: int | None, eps: float) -> torch.Tensor:
    """Per group, autograd through torch.linalg.eigh of C + eps max(1, tr(C)/m) I."""
    out = []
    for sl in ref.group_slices(x.shape[1], group_size):
        xc = x[:, sl] - x[:, sl].mean(0)
        c = xc.T @ xc / x.shape[0]
        m = c.shape[0]
        floor = eps * (torch.trace(c) / m).clamp_min(1.0)
        lam, u = torch.linalg.eigh(c + floor * torch.eye(m, dtype=x.dtype))
        out.append(xc @ ((u / lam.sqrt()) @ u.T).T)
    return torch.cat(out, dim=1)


@given(well_conditioned_batches(), st.integers(0, 2**31 - 1))
@ref.hyp_settings(25)
def test_auto_gradient_matches_autograd_through_eigh(case, seed):
    """Distinct eigenvalues (eigh's gradient is defined), float64, floor on both branches: the
    gradient through the floor's dependence on tr(C) is part of what must agree."""
    x_np, g = case
    x = torch.tensor(x_np, requires_grad=True)
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(x.shape, generator=gen, dtype=F64)
    (got,) = torch.autograd.grad(
        (newton_schulz_whiten(x, group_size=g, iters="auto") * weights).sum(), x
    )
    (want,) = torch.autograd.grad((_eigh_whiten_floored(x, g, 1e-5) * weights).sum(), x)
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-8 * float(want.abs().max()))


def test_float32_target_gradient_matches_eigh_to_float32_precision(seed):
    """The float32 count (one step fewer) also converges the derivative, to float32's level."""
    for m in (4, 16):
        a = torch.randn(4 * m, m, dtype=F64) @ torch.diag(torch.linspace(0.3, 3.0, m, dtype=F64))
        c = (a.T @ a / (4 * m)).requires_grad_(True)
        dw = torch.randn(m, m, dtype=F64)
        w = ns_inv_sqrt(c, eps=1e-5, iters="auto", target_dtype=F32)
        (got,) = torch.autograd.grad((w * dw).sum(), c)
        floor = 1e-5 * (torch.trace(c) / m).clamp_min(1.0)
        lam, u = torch.linalg.eigh(0.5 * (c + c.T) + floor * torch.eye(m, dtype=F64))
        (want,) = torch.autograd.grad((((u / lam.sqrt()) @ u.T) * dw).sum(), c)
        sym = 0.5 * (got + got.T), 0.5 * (want + want.T)
        assert float((sym[0] - sym[1]).abs().max()) <= 1e-5 * float(sym[1].abs().max())


@given(hard_batches(max_d=10))
@ref.hyp_settings(25)
def test_auto_gradients_are_finite_on_degenerate_batches(case):
    x_np, g, seed = case
    x = torch.tensor(x_np, requires_grad=True)
    y = newton_schulz_whiten(x, group_size=g, iters="auto")
    gen = torch.Generator().manual_seed(seed)
    (y * torch.randn(y.shape, generator=gen, dtype=F64)).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


# -------------------------------------------------------------------------------- (c) white


@given(hard_batches())
@ref.hyp_settings(25)
def test_auto_output_is_white_on_the_non_degenerate_subspace(case):
    """In C's eigenbasis the whitened covariance is diag(l / (l + floor)): the identity where
    l >> floor, zero on the null space (dead, duplicated units, n below the group size)."""
    x, g, _ = case
    eps = 1e-5
    y = newton_schulz_whiten(torch.tensor(x), group_size=g, iters="auto", eps=eps).numpy()
    for sl, c in zip(ref.group_slices(x.shape[1], g), _group_covs(x, g), strict=True):
        floor = ref.relative_floor(c, eps)
        lam, u = np.linalg.eigh(c)
        lam = np.clip(lam, 0.0, None)
        inner = u.T @ ref.cov_biased(y[:, sl]) @ u
        np.testing.assert_allclose(inner, np.diag(lam / (lam + floor)), rtol=0, atol=1e-7)
        live = lam > 1e6 * floor
        np.testing.assert_allclose(
            inner[np.ix_(live, live)], np.eye(int(live.sum())), rtol=0, atol=2e-6
        )


# --------------------------------------------------------------------- (d) the iteration count


def _decimal_error(lower_bound: float, steps: int) -> Decimal:
    """``1 - x_steps`` of the scalar map in 60-digit decimal arithmetic, from the exact float."""
    with localcontext() as ctx:
        ctx.prec = 60
        x = Decimal(lower_bound)
        for _ in range(steps):
            x = x * (3 - x) ** 2 / 4
        return 1 - x


@given(
    st.floats(min_value=1e-14, max_value=1.0, exclude_min=False),
    st.sampled_from([torch.bfloat16, torch.float16, F32, F64]),
)
@ref.hyp_settings(25)
def test_the_count_reaches_the_tolerance_at_t_and_not_before(bound, dtype):
    steps = ns_iterations(bound, dtype)
    tol = Decimal(torch.finfo(dtype).eps)
    assert _decimal_error(bound, steps) <= tol
    if steps:
        assert _decimal_error(bound, steps - 1) > tol


@given(
    st.lists(st.floats(min_value=1e-14, max_value=1.0), min_size=2, max_size=2),
    st.sampled_from([F32, F64]),
)
@ref.hyp_settings(25)
def test_the_count_is_monotone_in_the_bound(bounds, dtype):
    low, high = sorted(bounds)
    assert ns_iterations(low, dtype) >= ns_iterations(high, dtype)
    assert ns_iterations(low, F64) >= ns_iterations(low, F32)


def test_the_counts_at_the_default_eps():
    """The numbers docs and docstrings quote: groups of 16 and 64, eps=1e-5."""
    counts = {
        (m, dtype): ns_iterations(auto_lower_bound(m, 1e-5), dtype)
        for m in (16, 64)
        for dtype in (F32, F64)
    }
    assert counts == {(16, F32): 22, (16, F64): 23, (64, F32): 24, (64, F64): 25}
    assert ns_iterations(1.0, F32) == 0


@pytest.mark.parametrize("m", [2, 16, 64])
def test_the_worst_case_covariance_converges_at_t_and_not_before(m, seed):
    """A rank-one C with tr(C) >= m attains the bound eps / (m (1 + eps)): its smallest
    eigenvalue of W Sigma W is within float32's eps of 1 after T steps and not after T - 1."""
    eps = 1e-5
    q, _ = torch.linalg.qr(torch.randn(m, m, dtype=F64))
    c = 3.0 * m * q[:, :1] @ q[:, :1].T
    sigma = c + eps * 3.0 * torch.eye(m, dtype=F64)  # the auto floor: eps * tr(C) / m
    s_min = torch.linalg.eigvalsh(sigma / torch.trace(sigma))[0]
    assert float(s_min) == pytest.approx(auto_lower_bound(m, eps), rel=1e-9)
    steps = ns_iterations(auto_lower_bound(m, eps), F32)

    def worst(w: torch.Tensor) -> float:
        return float((1.0 - torch.linalg.eigvalsh(w @ sigma @ w)).abs().max())

    assert worst(ns_inv_sqrt(c, eps=eps, iters="auto", target_dtype=F32)) <= EPS32
    # The int path with the same Sigma = C + 3 eps I, one step short:
    assert worst(ns_inv_sqrt(c, eps=3.0 * eps, iters=steps)) <= EPS32
    assert worst(ns_inv_sqrt(c, eps=3.0 * eps, iters=steps - 1)) > EPS32


def test_the_count_validates_its_arguments():
    for bad in (0.0, -1e-3, 1.5, float("nan"), float("inf"), True, "1e-5"):
        with pytest.raises(ValueError, match=r"lower_bound must be a finite number in \(0, 1\]"):
            ns_iterations(bad)
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        ns_iterations(1e-3, torch.int64)
    with pytest.raises(ValueError, match="iters must be an int of at least 1 or 'auto'"):
        newton_schulz_whiten(torch.randn(8, 3), iters="Auto")
    with pytest.raises(ValueError, match="iters must be an int of at least 1 or 'auto'"):
        GroupWhitening(4, group_size=2, method="newton_schulz", iters=None)


# ----------------------------------------------------------------------------------- (e) layer


def _pair(d: int, g: int) -> tuple[GroupWhitening, GroupWhitening]:
    zca = GroupWhitening(d, group_size=g, method="zca")
    ns = GroupWhitening(d, group_size=g, method="newton_schulz", iters="auto")
    return zca, ns


@pytest.mark.parametrize("dtype", [F32, F64])
def test_layer_with_auto_iters_trains_and_evals_like_zca(global_random_seed, dtype):
    """Features of variance below 1 (the floor is eps, as for ZCA): the same outputs and input
    gradients in training, the same running statistics, the same eval forward and matrix."""
    d, g = 10, 4  # two groups of 4 and a remainder of 2
    zca, ns = _pair(d, g)
    zca, ns = zca.to(dtype), ns.to(dtype)
    mix = torch.randn(d, d, dtype=dtype) / d**0.5
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == F32 else {"rtol": 1e-9, "atol": 1e-9}
    for _ in range(4):
        x = (0.5 * torch.randn(96, d, dtype=dtype) @ mix + 2.0).requires_grad_(True)
        y_zca, y_ns = zca(x), ns(x)
        torch.testing.assert_close(y_ns, y_zca, **tol)
        dy = torch.randn_like(y_zca)
        (g_zca,) = torch.autograd.grad(y_zca, x, dy)
        (g_ns,) = torch.autograd.grad(y_ns, x, dy)
        torch.testing.assert_close(g_ns, g_zca, **tol)
    for key, value in zca.state_dict().items():
        assert torch.equal(ns.state_dict()[key], value), key
    zca.eval(), ns.eval()
    x = 0.5 * torch.randn(7, d, dtype=dtype) @ mix + 2.0
    torch.testing.assert_close(ns(x), zca(x), **tol)
    for a, b in zip(ns.whitening_matrix(), zca.whitening_matrix(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert "iters='auto'" in repr(ns)


def test_layer_eval_at_large_scale_is_zca_of_the_floored_running_covariance(seed):
    """Above unit mean variance the floor is relative; eval mode is ZCA of exactly that."""
    d, g, eps = 9, 4, 1e-5
    layer = GroupWhitening(d, group_size=g, momentum=1.0, method="newton_schulz", iters="auto")
    layer = layer.double()
    train_x = torch.randn(80, d, dtype=F64) @ torch.randn(d, d, dtype=F64) * 30.0
    train_x[:, 2] = 5.0  # a dead unit: a rank-deficient running covariance
    layer(train_x)
    layer.eval()
    test_x = torch.randn(7, d, dtype=F64) * 30.0
    got = layer(test_x).numpy()
    cov = np.cov(train_x.numpy(), rowvar=False)
    for sl in ref.group_slices(d, g):
        c = cov[sl, sl]
        assert np.trace(c) / c.shape[0] > 1.0
        w = ref.zca_matrix(c, ref.relative_floor(c, eps))
        want = (test_x.numpy()[:, sl] - train_x.numpy()[:, sl].mean(0)) @ w.T
        np.testing.assert_allclose(got[:, sl], want, rtol=0, atol=1e-8 * np.abs(want).max())
