"""axis_swaps / axis_swap_sequence: planted answers, invariances, and a brute-force reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from geomxai.dynamics import axis_swap_sequence, axis_swaps, top_eigvecs

SETTINGS = settings(max_examples=25, deadline=None)


def orthonormal(rng: np.random.Generator, d: int, k: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q[:, :k]


def brute_force_matching(overlap: np.ndarray) -> tuple[float, tuple[int, ...], float]:
    """Best total overlap over every permutation, its permutation, and the runner-up's total."""
    k = overlap.shape[0]
    totals = sorted(
        ((overlap[np.arange(k), list(p)].sum(), p) for p in itertools.permutations(range(k))),
        reverse=True,
    )
    runner_up = totals[1][0] if len(totals) > 1 else -np.inf
    return float(totals[0][0]), totals[0][1], float(runner_up)


@st.composite
def basis_pairs(draw, max_k: int = 5):
    """Two (d, k) bases: b is a noisy, optionally permuted and sign-flipped version of a."""
    k = draw(st.integers(1, max_k))
    d = draw(st.integers(k, k + 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    u_a = orthonormal(rng, d, k)
    perm = rng.permutation(k) if draw(st.booleans()) else np.arange(k)
    noise = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0, 3.0]))
    q, _ = np.linalg.qr(u_a[:, perm] + noise * rng.normal(size=(d, k)))
    u_b = q * rng.choice([-1.0, 1.0], size=k)
    eigvals = np.sort(rng.uniform(0.5, 2.0, size=k))[::-1]
    return u_a, u_b, eigvals


# ---------------------------------------------------------------- planted answers


def test_planted_swap_of_two_columns(rng):
    k = 5
    u_a = orthonormal(rng, 8, k)
    u_b = u_a[:, [0, 3, 2, 1, 4]]
    out = axis_swaps(u_a, u_b)
    assert float(out.swap_rate) == pytest.approx(2 / k)
    assert out.matching.values.tolist() == [1, 4, 3, 2, 5]  # 1-based ranks
    assert out.component.values.tolist() == [1, 2, 3, 4, 5]
    assert out.swapped.values.tolist() == [False, True, False, True, False]
    assert float(out.matched_overlap) == pytest.approx(1.0)
    assert float(out.subspace_overlap) == pytest.approx(1.0)
    # Without eigenvalues the split is unknown, not zero.
    assert np.isnan(float(out.degenerate_swap_rate))
    assert np.isnan(float(out.nondegenerate_swap_rate))
    assert out.attrs["degenerate_reference"] == "none"


def test_sign_flips_are_not_swaps(rng):
    u_a = orthonormal(rng, 6, 4)
    out = axis_swaps(u_a, u_a * [-1.0, 1.0, -1.0, -1.0], eigvals_a=[4.0, 3.0, 2.0, 1.0])
    assert float(out.swap_rate) == 0.0
    assert float(out.matched_overlap) == pytest.approx(1.0)
    assert float(out.degenerate_swap_rate) == 0.0
    assert float(out.nondegenerate_swap_rate) == 0.0


@pytest.mark.parametrize("theta", [0.05, 0.3, 0.7])
def test_axes_tilting_out_of_the_subspace_keep_their_place(rng, theta):
    # Every axis tilts by theta towards its own direction of the complement: O = cos(theta) I.
    d, k = 10, 4
    q = orthonormal(rng, d, d)
    u_a, v = q[:, :k], q[:, k : 2 * k]
    u_b = np.cos(theta) * u_a + np.sin(theta) * v
    out = axis_swaps(u_a, u_b)
    assert float(out.swap_rate) == 0.0
    assert float(out.matched_overlap) == pytest.approx(np.cos(theta))
    assert float(out.subspace_overlap) == pytest.approx(np.cos(theta) ** 2)


def plane_rotation(u: np.ndarray, i: int, j: int, theta: float) -> np.ndarray:
    out = u.copy()
    c, s = np.cos(theta), np.sin(theta)
    out[:, i] = c * u[:, i] + s * u[:, j]
    out[:, j] = -s * u[:, i] + c * u[:, j]
    return out


def test_small_rotation_in_a_plane_is_not_a_swap(rng):
    k, theta = 4, 0.2
    u_a = orthonormal(rng, 7, k)
    out = axis_swaps(u_a, plane_rotation(u_a, 1, 2, theta))
    assert float(out.swap_rate) == 0.0
    assert out.axis_overlap.values == pytest.approx([1, np.cos(theta), np.cos(theta), 1])
    assert float(out.subspace_overlap) == pytest.approx(1.0)


def test_ninety_degree_rotation_in_a_plane_is_a_swap(rng):
    k = 4
    u_a = orthonormal(rng, 7, k)
    out = axis_swaps(u_a, plane_rotation(u_a, 0, 2, np.pi / 2))
    assert out.matching.values.tolist() == [3, 2, 1, 4]
    assert float(out.swap_rate) == pytest.approx(2 / k)
    assert float(out.matched_overlap) == pytest.approx(1.0)


def test_exact_tie_at_45_degrees_is_not_a_swap(rng):
    u_a = orthonormal(rng, 5, 2)
    out = axis_swaps(u_a, plane_rotation(u_a, 0, 1, np.pi / 4))
    assert float(out.swap_rate) == 0.0


def test_exact_tie_between_staying_and_swapping_keeps_axes_in_place():
    # |U_a^T U_b| = [[0, .5], [.25, .75]] exactly: staying and swapping both total 0.75 (scipy's
    # solver alone returns the swap here).
    u_a = np.eye(4)[:, :2]
    z = -0.1875 / np.sqrt(1 - 0.25**2)
    b0 = [0.0, 0.25, np.sqrt(1 - 0.25**2), 0.0]
    b1 = [0.5, 0.75, z, np.sqrt(1 - 0.5**2 - 0.75**2 - z**2)]
    out = axis_swaps(u_a, np.array([b0, b1]).T)
    assert out.overlap.values.tolist() == [[0.0, 0.5], [0.25, 0.75]]
    assert out.matching.values.tolist() == [1, 2]
    assert float(out.swap_rate) == 0.0


def test_random_rotation_inside_the_subspace_keeps_subspace_overlap_one(rng):
    k = 5
    u_a = orthonormal(rng, 12, k)
    out = axis_swaps(u_a, u_a @ orthonormal(rng, k, k))
    assert float(out.subspace_overlap) == pytest.approx(1.0, abs=1e-12)
    assert float(out.matched_overlap) < 1.0


def test_near_degenerate_swaps_are_reported_apart(rng):
    # Axes 1 <-> 2 have eigenvalues 2% apart (degenerate at tol 0.05); 0 <-> 3 are far apart.
    k = 5
    u_a = orthonormal(rng, 9, k)
    u_b = u_a[:, [3, 2, 1, 0, 4]]
    eigvals = np.array([10.0, 5.0, 4.9, 2.0, 1.0])
    out = axis_swaps(u_a, u_b, eigvals_a=eigvals)
    assert float(out.swap_rate) == pytest.approx(4 / k)
    assert float(out.degenerate_swap_rate) == pytest.approx(2 / k)
    assert float(out.nondegenerate_swap_rate) == pytest.approx(2 / k)
    assert out.attrs["degenerate_reference"] == "eigvals_a"
    # A tighter tolerance turns the 2% gap into a real swap; eigvals_b alone is used as fallback.
    strict = axis_swaps(u_a, u_b, eigvals_b=eigvals, degenerate_tol=0.01)
    assert float(strict.degenerate_swap_rate) == 0.0
    assert float(strict.nondegenerate_swap_rate) == pytest.approx(4 / k)
    assert strict.attrs["degenerate_reference"] == "eigvals_b"


def test_zero_eigenvalues_count_as_degenerate(rng):
    u_a = orthonormal(rng, 4, 3)
    out = axis_swaps(u_a, u_a[:, [0, 2, 1]], eigvals_a=[1.0, 0.0, 0.0])
    assert float(out.degenerate_swap_rate) == pytest.approx(2 / 3)


def test_dataset_layout(rng):
    u_a = orthonormal(rng, 6, 3)
    out = axis_swaps(u_a, u_a)
    assert isinstance(out, xr.Dataset)
    for name in (
        "swap_rate",
        "matched_overlap",
        "subspace_overlap",
        "degenerate_swap_rate",
        "nondegenerate_swap_rate",
    ):
        assert out[name].dims == ()
    assert out.matching.dims == ("component",)
    assert out.matching.dtype == np.int64
    assert out.overlap.dims == ("component", "component_b")
    assert out.attrs["d"] == 6 and out.attrs["k"] == 3


def test_torch_and_dataarray_inputs_agree_with_numpy(rng):
    u_a = orthonormal(rng, 6, 3)
    u_b = u_a[:, [1, 0, 2]]
    expected = axis_swaps(u_a, u_b)
    # A DataArray may come in either dim order; a float32 tensor with grad is fine.
    da = xr.DataArray(u_b.T, dims=("component", "unit"))
    tensor = torch.tensor(u_a, dtype=torch.float32, requires_grad=True)
    got = axis_swaps(tensor, da)
    assert got.matching.values.tolist() == expected.matching.values.tolist()
    np.testing.assert_allclose(got.overlap.values, expected.overlap.values, atol=1e-6)


def test_inputs_are_left_unchanged(rng):
    u_a = orthonormal(rng, 6, 3)
    u_b = u_a[:, [2, 1, 0]] * -1.0
    before = (u_a.copy(), u_b.copy())
    axis_swaps(u_a, u_b, eigvals_a=np.array([3.0, 2.0, 1.0]))
    np.testing.assert_array_equal(u_a, before[0])
    np.testing.assert_array_equal(u_b, before[1])


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda u: (u, u[:, :2]), "same shape"),
        (lambda u: (u.T, u.T), "transposed"),
        (lambda u: (u, np.where(np.arange(u.size).reshape(u.shape) == 0, np.nan, u)), "NaN"),
        (lambda u: (u, 2.0 * u), "orthonormal"),
        (lambda u: (u, np.ones_like(u)), "orthonormal"),
        (lambda u: (u[:, 0], u[:, 0]), "2-D"),
    ],
)
def test_bad_eigvecs_raise(rng, make, match):
    u = orthonormal(rng, 5, 3)
    with pytest.raises(ValueError, match=match):
        axis_swaps(*make(u))


def test_bad_eigvals_and_tol_raise(rng):
    u = orthonormal(rng, 5, 3)
    with pytest.raises(ValueError, match="one eigenvalue per"):
        axis_swaps(u, u, eigvals_a=[1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        axis_swaps(u, u, eigvals_a=[1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="degenerate_tol"):
        axis_swaps(u, u, degenerate_tol=-0.1)


def test_float32_rounding_is_accepted(rng):
    u = orthonormal(rng, 300, 20).astype(np.float32)
    assert float(axis_swaps(u, u).swap_rate) == 0.0


# ---------------------------------------------------------------- properties


@SETTINGS
@given(basis_pairs())
def test_matching_is_optimal_against_brute_force(pair):
    u_a, u_b, _ = pair
    out = axis_swaps(u_a, u_b)
    overlap = np.abs(u_a.T @ u_b)
    best, best_perm, runner_up = brute_force_matching(overlap)
    k = overlap.shape[0]
    assert float(out.matched_overlap) * k == pytest.approx(best, abs=1e-8)
    if best - runner_up > 1e-6:
        assert tuple(out.matching.values.tolist()) == tuple(j + 1 for j in best_perm)
    np.testing.assert_allclose(out.overlap.values, overlap)
    assert float(out.subspace_overlap) == pytest.approx(np.linalg.norm(u_a.T @ u_b) ** 2 / k)
    assert 0.0 <= float(out.subspace_overlap) <= 1.0 + 1e-12


@SETTINGS
@given(basis_pairs(), st.integers(0, 2**32 - 1))
def test_consistent_relabelling_and_sign_flips_change_nothing(pair, seed):
    u_a, u_b, eigvals = pair
    k = u_a.shape[1]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(k)
    base = axis_swaps(u_a, u_b, eigvals_a=eigvals)

    relabelled = axis_swaps(u_a[:, perm], u_b[:, perm], eigvals_a=eigvals[perm])
    flipped = axis_swaps(
        u_a * rng.choice([-1.0, 1.0], size=k),
        u_b * rng.choice([-1.0, 1.0], size=k),
        eigvals_a=eigvals,
    )
    for name in ("swap_rate", "degenerate_swap_rate", "nondegenerate_swap_rate"):
        assert float(relabelled[name]) == float(base[name])
        assert float(flipped[name]) == float(base[name])
    for name in ("matched_overlap", "subspace_overlap"):
        assert float(relabelled[name]) == pytest.approx(float(base[name]), abs=1e-12)
        assert float(flipped[name]) == pytest.approx(float(base[name]), abs=1e-12)
    # Relabelling conjugates the matching: axis perm[i] -> m[perm[i]] becomes i -> inv[m[perm[i]]].
    inverse = np.argsort(perm)
    expected = inverse[base.matching.values[perm] - 1] + 1  # matching holds 1-based ranks
    np.testing.assert_array_equal(relabelled.matching.values, expected)
    np.testing.assert_array_equal(flipped.matching.values, base.matching.values)


# ---------------------------------------------------------------- sequences


def planted_features(rng, variances_per_checkpoint, n=200, d=6):
    """Features whose covariance is exactly Q diag(variance) Q^T at every checkpoint."""
    centred = rng.normal(size=(n, d))
    centred -= centred.mean(axis=0)
    # QR of centred columns gives orthonormal columns that stay centred: Z^T Z = (n - 1) I.
    z = np.linalg.qr(centred)[0] * np.sqrt(n - 1)
    q = orthonormal(rng, d, d)
    return [z @ np.diag(np.sqrt(v)) @ q.T for v in variances_per_checkpoint]


def test_sequence_of_features_detects_an_eigenvalue_crossing(rng):
    variances = [
        [5.0, 3.0, 2.0, 1.99, 0.5, 0.1],
        [5.0, 3.0, 2.0, 1.99, 0.5, 0.1],
        [3.0, 5.0, 2.0, 1.99, 0.5, 0.1],  # axes 0 and 1 cross, 40% apart: a real swap
        [3.0, 5.0, 1.99, 2.0, 0.5, 0.1],  # axes 2 and 3 cross, 0.5% apart: degenerate
    ]
    feats = planted_features(rng, variances)
    bases = [top_eigvecs(f, 4) for f in feats]
    seq = axis_swap_sequence(bases, labels=[10, 20, 30, 40])
    assert seq.sizes["step"] == 3
    assert seq.swap_rate.dims == ("step",)
    np.testing.assert_allclose(seq.swap_rate.values, [0.0, 0.5, 0.5])
    np.testing.assert_allclose(seq.nondegenerate_swap_rate.values, [0.0, 0.5, 0.0])
    np.testing.assert_allclose(seq.degenerate_swap_rate.values, [0.0, 0.0, 0.5])
    np.testing.assert_allclose(seq.matched_overlap.values, 1.0)
    assert seq.checkpoint_a.values.tolist() == [10, 20, 30]
    assert seq.checkpoint_b.values.tolist() == [20, 30, 40]
    assert seq.overlap.dims == ("step", "component", "component_b")
    # Stepwise results equal the pairwise function on the same eigenvectors.
    pair = axis_swaps(bases[1][1], bases[2][1], eigvals_a=bases[1][0], eigvals_b=bases[2][0])
    step = seq.isel(step=1).drop_vars(["step", "checkpoint_a", "checkpoint_b"])
    xr.testing.assert_allclose(step, pair)
    assert step.attrs == pair.attrs


def test_sequence_takes_eigenpairs_with_or_without_eigvals(rng):
    u = orthonormal(rng, 6, 4)
    plain = axis_swap_sequence([(None, u), (None, u[:, [1, 0, 2, 3]]), (None, u)])
    np.testing.assert_allclose(plain.swap_rate.values, [0.5, 0.5])
    assert np.isnan(plain.degenerate_swap_rate.values).all()
    assert plain.attrs["degenerate_reference"] == "none"
    # k takes the leading columns (and eigenvalues).
    vals = np.array([4.0, 3.98, 2.0, 1.0])
    pairs = axis_swap_sequence([(vals, u), (vals, u[:, [1, 0, 2, 3]])], 3)
    assert float(pairs.degenerate_swap_rate[0]) == pytest.approx(2 / 3)
    assert pairs.attrs["k"] == 3
    mixed = axis_swap_sequence([(vals, u), (None, u), (None, u)])
    assert mixed.attrs["degenerate_reference"] == "mixed"
    # Tensors and DataArrays (unit, component) are read the same way.
    da = xr.DataArray(u.T, dims=("component", "unit"))
    same = axis_swap_sequence([(torch.tensor(vals), da)] * 3)
    np.testing.assert_allclose(same.swap_rate.values, 0.0)


def test_sequence_takes_one_input_form(rng):
    """Features, bare eigenvectors or a kind= switch are refused, never guessed."""
    u = orthonormal(rng, 6, 3)
    x = rng.normal(size=(20, 6))
    for entry, got in (
        (x, r"got ndarray of shape \(20, 6\)"),
        (xr.DataArray(u, dims=("unit", "component")), "got DataArray"),
        ((np.ones(3), u, 5), "got a tuple of length 3"),
    ):
        with pytest.raises(
            ValueError, match=r"checkpoints\[0\] must be a pair \(eigvals, eigvecs\).*" + got
        ):
            axis_swap_sequence([entry, entry])
    with pytest.raises(TypeError, match="kind"):
        axis_swap_sequence([(None, u), (None, u)], kind="eigvecs")


def test_sequence_validation(rng):
    u = orthonormal(rng, 6, 3)
    x = rng.normal(size=(20, 6))
    with pytest.raises(ValueError, match="at least 2"):
        axis_swap_sequence([top_eigvecs(x, 2)])
    with pytest.raises(ValueError, match="probe set"):
        axis_swap_sequence([top_eigvecs(x, 2), top_eigvecs(x[:10], 2)])
    with pytest.raises(ValueError, match="same shape"):
        axis_swap_sequence([(None, u), (None, u[:, :2])])
    with pytest.raises(ValueError, match="k=4 asked for"):
        axis_swap_sequence([(None, u), (None, u)], 4)
    with pytest.raises(ValueError, match="labels"):
        axis_swap_sequence([(None, u), (None, u)], labels=[1, 2, 3])


# ---------------------------------------------------------------- degeneracy at both checkpoints


def reference_degenerate_split(matching, eigvals_a, eigvals_b, tol):
    """(degenerate, non-degenerate) swap counts, axis by axis, straight from the definition."""
    degenerate = nondegenerate = 0
    for i, j in enumerate(matching):
        if i == j:
            continue
        near = False
        for vals in (eigvals_a, eigvals_b):
            if vals is None:
                continue
            scale = max(abs(vals[i]), abs(vals[j]))
            gap = abs(vals[i] - vals[j]) / scale if scale > 0 else 0.0
            near = near or gap < tol
        degenerate += near
        nondegenerate += not near
    return degenerate, nondegenerate


class TestDegeneracyAtBothCheckpoints:
    """A swap explained by a near-tie at either checkpoint is not counted as a genuine swap."""

    def test_a_near_tie_at_the_second_checkpoint_alone_makes_a_swap_degenerate(self, rng):
        u_a = orthonormal(rng, 5, 3)
        u_b = u_a[:, [1, 0, 2]]
        wide_a = [3.0, 2.0, 1.0]  # axes 0 and 1 are 33% apart at a
        tie_b = [2.0, 1.99, 1.0]  # and 0.5% apart at b
        only_a = axis_swaps(u_a, u_b, eigvals_a=wide_a)
        both = axis_swaps(u_a, u_b, eigvals_a=wide_a, eigvals_b=tie_b)
        assert float(only_a.nondegenerate_swap_rate) == pytest.approx(2 / 3)
        assert float(both.swap_rate) == pytest.approx(2 / 3)
        assert float(both.degenerate_swap_rate) == pytest.approx(2 / 3)
        assert float(both.nondegenerate_swap_rate) == 0.0
        assert both.attrs["degenerate_reference"] == "both"
        # The same tie at a, a wide gap at b: degenerate either way round.
        flipped = axis_swaps(u_a, u_b, eigvals_a=tie_b, eigvals_b=wide_a)
        assert float(flipped.nondegenerate_swap_rate) == 0.0

    def test_the_output_stores_every_rate(self, rng):
        u_a = orthonormal(rng, 7, 4)
        out = axis_swaps(
            u_a, u_a[:, [1, 0, 3, 2]], eigvals_a=[4.0, 3.0, 2.0, 1.99], eigvals_b=[4, 3, 2, 1]
        )
        rates = {
            n: float(out[n])
            for n in ("swap_rate", "degenerate_swap_rate", "nondegenerate_swap_rate")
        }
        assert rates == pytest.approx(
            {"swap_rate": 1.0, "degenerate_swap_rate": 0.5, "nondegenerate_swap_rate": 0.5}
        )

    @SETTINGS
    @given(
        pair=basis_pairs(),
        seed=st.integers(0, 2**16),
        tol=st.sampled_from([0.0, 0.01, 0.05, 0.3]),
        given_=st.sampled_from(["both", "a", "b", "none"]),
    )
    def test_matches_the_axis_by_axis_definition(self, pair, seed, tol, given_):
        u_a, u_b, eigvals_a = pair
        k = u_a.shape[1]
        gen = np.random.default_rng(seed)
        # Clustered eigenvalues at b, so near-ties are common.
        eigvals_b = np.sort(gen.choice([1.0, 1.005, 2.0, 2.01, 4.0], size=k))[::-1]
        vals_a = eigvals_a if given_ in ("both", "a") else None
        vals_b = eigvals_b if given_ in ("both", "b") else None
        out = axis_swaps(u_a, u_b, eigvals_a=vals_a, eigvals_b=vals_b, degenerate_tol=tol)
        if given_ == "none":
            assert np.isnan(float(out.degenerate_swap_rate))
            return
        # matching holds 1-based ranks; the reference works on positions.
        deg, nondeg = reference_degenerate_split(out.matching.values - 1, vals_a, vals_b, tol)
        assert float(out.degenerate_swap_rate) == pytest.approx(deg / k)
        assert float(out.nondegenerate_swap_rate) == pytest.approx(nondeg / k)
        assert float(out.swap_rate) == pytest.approx((deg + nondeg) / k)

    @SETTINGS
    @given(pair=basis_pairs(), seed=st.integers(0, 2**16))
    def test_the_split_does_not_depend_on_which_checkpoint_comes_first(self, pair, seed):
        u_a, u_b, eigvals_a = pair
        eigvals_b = np.sort(np.random.default_rng(seed).uniform(0.9, 1.1, size=u_a.shape[1]))[::-1]
        forward = axis_swaps(u_a, u_b, eigvals_a=eigvals_a, eigvals_b=eigvals_b)
        backward = axis_swaps(u_b, u_a, eigvals_a=eigvals_b, eigvals_b=eigvals_a)
        for name in ("swap_rate", "degenerate_swap_rate", "nondegenerate_swap_rate"):
            assert float(forward[name]) == pytest.approx(float(backward[name])), name

    def test_the_sequence_judges_both_checkpoints_of_each_step(self, rng):
        variances = [
            [5.0, 3.0, 1.0],  # axes 0 and 1 far apart here
            [3.0, 3.01, 1.0],  # and crossing into a near-tie here: not a genuine swap
        ]
        bases = [top_eigvecs(f, 2) for f in planted_features(rng, variances, d=3)]
        seq = axis_swap_sequence(bases)
        assert seq.swap_rate.values.tolist() == [1.0]
        assert seq.degenerate_swap_rate.values.tolist() == [1.0]
        assert seq.nondegenerate_swap_rate.values.tolist() == [0.0]
        assert seq.attrs["degenerate_reference"] == "both"
