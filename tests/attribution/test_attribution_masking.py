"""masking_curve, masking_auc, fidelity_gap and ROAD imputation."""

import numpy as np
import pytest
import torch
import xarray as xr
from _internals import road_impute_scipy as _road_impute_scipy
from scipy.ndimage import gaussian_filter

from geomxai.attribution import fidelity_gap, masking_auc, masking_curve, road_impute


def slow_curve(model, x, y, s, fractions, order, fill, blur_sigma=2.0):
    """Straight from the definition: per image, per fraction, pixel by pixel."""
    n, c, h, w = x.shape
    p = h * w
    acc = []
    for f in fractions:
        k = int(np.floor(f * p + 0.5))
        correct = 0
        for i in range(n):
            flat = s[i].flatten().tolist()
            # stable ranking: equal saliency -> lower row-major index first
            idx = sorted(range(p), key=lambda j: (-flat[j] if order == "morf" else flat[j], j))
            img = x[i].clone()
            if fill == "mean":
                values = x[i].mean(dim=(1, 2), keepdim=True).expand(c, h, w)
            elif fill == "blur":
                values = torch.stack(
                    [
                        torch.from_numpy(
                            gaussian_filter(
                                x[i, ch].double().numpy(), blur_sigma, mode="nearest", truncate=3.0
                            )
                        ).to(x.dtype)
                        for ch in range(c)
                    ]
                )
            else:
                values = torch.zeros(c, h, w)
            for j in idx[:k]:
                r, col = divmod(j, w)
                for ch in range(c):
                    img[ch, r, col] = values[ch, r, col]
            with torch.no_grad():
                correct += int(model(img[None]).argmax(1).item() == int(y[i]))
        acc.append(correct / n)
    return np.array(acc)


def test_hand_computed_curve(pixel_sum):
    # 4 pixels of 1; class 0 is predicted while more than 2.5 of them are left.
    x = torch.ones(2, 1, 2, 2)
    x[1, 0, 0, 0] = 4.0  # the big pixel: predicted 0 until it goes
    s = torch.tensor([[[0.1, 0.2], [0.3, 0.4]], [[1.0, 0.0], [0.0, 0.0]]])
    y = torch.tensor([0, 0])
    fr = [0, 0.25, 0.5, 0.75, 1]
    morf = masking_curve(pixel_sum(2.5), x, y, s, fractions=fr, fill="zero")
    lerf = masking_curve(pixel_sum(2.5), x, y, s, fractions=fr, order="lerf", fill="zero")
    # image 0 (sum 4): masking 1 keeps 3 > 2.5, masking 2 leaves 2 < 2.5, either order.
    # image 1 (sum 7): MoRF removes the 4 first (3 left, > 2.5), then a 1 (2 left).
    #                  LeRF removes ones (ties: row-major) and keeps the 4 until the end.
    np.testing.assert_array_equal(morf.values, [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(lerf.values, [1, 1, 0.5, 0.5, 0])
    assert morf.dims == ("fraction",)
    assert morf["n_masked"].values.tolist() == [0, 1, 2, 3, 4]
    assert morf.attrs["order"] == "morf" and lerf.attrs["fill"] == "zero"
    assert float(masking_auc(morf)) == pytest.approx(0.375)
    assert float(masking_auc(lerf)) == pytest.approx(0.625)
    assert float(fidelity_gap(lerf, morf)) == pytest.approx(0.25)
    assert float(fidelity_gap(lerf, morf, scale="paper")) == pytest.approx(2500)


@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_matches_slow_reference(tiny_cnn, images, fill, order):
    x, _ = images
    with torch.no_grad():
        y = tiny_cnn(x).argmax(1)  # accuracy 1 at fraction 0, so the curve moves
    s = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(0))
    s[0] = 0.5  # an image of ties
    fr = [0.0, 0.1, 0.3, 0.5, 0.8, 1.0]
    curve = masking_curve(tiny_cnn, x, y, s, fractions=fr, order=order, fill=fill, batch_size=4)
    np.testing.assert_allclose(curve.values, slow_curve(tiny_cnn, x, y, s, fr, order, fill))


def test_uniform_fill_stays_in_each_image_range_and_is_seeded(tiny_cnn, images):
    x, y = images
    x = x * torch.arange(1, 7).view(6, 1, 1, 1)  # different ranges per image
    seen = []
    handle = tiny_cnn.register_forward_pre_hook(lambda m, i: seen.append(i[0].clone()))
    s = torch.rand(6, 8, 8)
    a = masking_curve(tiny_cnn, x, y, s, fractions=[1.0], seed=5)
    handle.remove()
    masked = seen[0]
    assert not torch.equal(masked, x)
    lo, hi = x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))
    assert torch.all(masked.amin(dim=(1, 2, 3)) >= lo) and torch.all(
        masked.amax(dim=(1, 2, 3)) <= hi
    )
    b = masking_curve(tiny_cnn, x, y, s, fractions=[1.0], seed=5)
    xr.testing.assert_identical(a, b)


def test_all_channels_of_a_pixel_are_masked(tiny_cnn, images):
    x, y = images
    seen = []
    handle = tiny_cnn.register_forward_pre_hook(lambda m, i: seen.append(i[0].clone()))
    s = torch.zeros(6, 8, 8)
    s[:, 2, 3] = 1.0  # the one most salient pixel
    masking_curve(tiny_cnn, x, y, s, fractions=[1 / 64], fill="zero")
    handle.remove()
    changed = (seen[0] != x).any(dim=1)
    expected = torch.zeros(6, 8, 8, dtype=torch.bool)
    expected[:, 2, 3] = True
    assert torch.equal(changed, expected)
    assert torch.all(seen[0][:, :, 2, 3] == 0)


@pytest.mark.parametrize("fill", ["uniform", "zero", "road"])
def test_model_state_restored(tiny_cnn, images, fill):
    x, y = images
    tiny_cnn.train()
    tiny_cnn.body[0].eval()
    masking_curve(
        tiny_cnn, x, y, torch.rand(6, 8, 8), fractions=[0, 0.5], fill=fill, order="random"
    )
    assert tiny_cnn.training and not tiny_cnn.body[0].training
    assert all(p.grad is None for p in tiny_cnn.parameters())


def test_batching_invariance_for_deterministic_fills(tiny_cnn, images):
    x, y = images
    s = torch.rand(6, 8, 8)
    kw = dict(fractions=np.linspace(0, 1, 7), order="morf", fill="blur")
    xr.testing.assert_identical(
        masking_curve(tiny_cnn, x, y, s, batch_size=None, **kw),
        masking_curve(tiny_cnn, x, y, s, batch_size=4, **kw),
    )


def test_random_order_is_seeded(tiny_cnn, images):
    x, y = images
    s = torch.rand(6, 8, 8)
    kw = dict(fractions=np.linspace(0, 1, 9), order="random", fill="zero")
    a = masking_curve(tiny_cnn, x, y, s, seed=1, **kw)
    xr.testing.assert_identical(a, masking_curve(tiny_cnn, x, y, s, seed=1, **kw))
    # the random order ignores the saliency
    xr.testing.assert_identical(a, masking_curve(tiny_cnn, x, y, -s + 5, seed=1, **kw))


def test_road_matches_scipy_sparse_solve():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 9, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 1, 9, 7, generator=g) < torch.tensor([0.1, 0.5, 0.9, 0.97]).view(
        4, 1, 1, 1
    )
    mask[3, 0, 0, 0] = False  # keep at least one pixel so the system is non-singular
    out = road_impute(x, mask, noise=0.0, tol=1e-12)
    for i in range(4):
        ref = _road_impute_scipy(x[i].numpy(), mask[i, 0].numpy())
        np.testing.assert_allclose(out[i].numpy(), ref, atol=1e-9)
    kept = ~mask.expand_as(x)
    assert torch.equal(out[kept], x[kept])


def test_road_noise_and_fully_masked_images():
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    mask[1, 0, :3] = False
    out = road_impute(x, mask, noise=0.0)
    assert torch.isfinite(out).all()
    assert torch.all(out[0] == 0)  # nothing kept: the (empty) kept mean, 0
    noisy = road_impute(x, mask, noise=0.05, generator=torch.Generator().manual_seed(0))
    assert 0.02 < float((noisy - out)[1, 0, 3:].std()) < 0.1


def test_auc_scales_and_extra_dims():
    curve = xr.DataArray(
        [1.0, 0.8, 0.2],
        dims="fraction",
        coords={"fraction": [0.0, 0.25, 1.0]},
        attrs={"order": "morf", "fill": "zero"},
    )
    expected = 0.25 * (1 + 0.8) / 2 + 0.75 * (0.8 + 0.2) / 2
    assert float(masking_auc(curve)) == pytest.approx(expected)
    assert float(masking_auc(curve, scale="paper")) == pytest.approx(10000 * expected)
    assert float(masking_auc(curve.isel(fraction=[2, 0, 1]))) == pytest.approx(expected)
    stacked = xr.concat([curve, curve * 0.5], dim="regime")
    np.testing.assert_allclose(masking_auc(stacked).values, [expected, expected / 2])


def test_auc_and_gap_are_dataarrays_for_every_curve():
    """One return type: a DataArray over the curve's other dims, 0-d for a single curve."""
    curve = xr.DataArray(
        [1.0, 0.5, 0.0],
        dims="fraction",
        coords={"fraction": [0.0, 0.5, 1.0]},
        attrs={"order": "lerf", "fill": "uniform"},
    )
    stacked = xr.concat([curve, curve * 0.5], dim="regime")
    for c, dims in ((curve, ()), (stacked, ("regime",))):
        for scale in ("unit", "paper"):
            auc = masking_auc(c, scale=scale)
            assert isinstance(auc, xr.DataArray) and auc.dims == dims
            assert auc.name == "auc" and auc.attrs["scale"] == scale
            assert auc.attrs["order"] == "lerf" and auc.attrs["fill"] == "uniform"
        morf = (c * 0.5).assign_attrs(order="morf")
        gap = fidelity_gap(c, morf)
        assert isinstance(gap, xr.DataArray) and gap.dims == dims
        assert gap.name == "fidelity_gap"
        np.testing.assert_allclose(gap.values, (masking_auc(c) - masking_auc(morf)).values)


@pytest.mark.parametrize(
    ("fractions", "match"),
    [([0.0, 1.5], r"\[0, 1\]"), ([-0.1], r"\[0, 1\]"), ([0.2, 0.2], "distinct"), ([], "non-empty")],
)
def test_bad_fractions(tiny_cnn, images, fractions, match):
    x, y = images
    with pytest.raises(ValueError, match=match):
        masking_curve(tiny_cnn, x, y, torch.rand(6, 8, 8), fractions=fractions)


def test_bad_arguments(tiny_cnn, images):
    x, y = images
    s = torch.rand(6, 8, 8)
    with pytest.raises(ValueError, match="order must be one of"):
        masking_curve(tiny_cnn, x, y, s, fractions=[0], order="best")
    with pytest.raises(ValueError, match="fill must be one of"):
        masking_curve(tiny_cnn, x, y, s, fractions=[0], fill="black")
    with pytest.raises(ValueError, match=r"\(6, 8, 8\)"):
        masking_curve(tiny_cnn, x, y, torch.rand(6, 2, 8, 8), fractions=[0])
    with pytest.raises(ValueError, match="NaN"):
        masking_curve(tiny_cnn, x, y, torch.full((6, 8, 8), float("nan")), fractions=[0])
    with pytest.raises(ValueError, match="accuracies"):
        masking_auc(xr.DataArray([0.0, 2.0], dims="fraction", coords={"fraction": [0, 1]}))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        masking_auc(xr.DataArray([0.0, 1.0], dims="fraction", coords={"fraction": [0, 50]}))
    morf = xr.DataArray(
        [1.0, 0.0], dims="fraction", coords={"fraction": [0, 1]}, attrs={"order": "morf"}
    )
    lerf = morf.copy().assign_attrs(order="lerf")
    with pytest.raises(ValueError, match="lerf_curve must be"):
        fidelity_gap(morf, lerf)
    with pytest.raises(ValueError, match="share their fractions"):
        fidelity_gap(lerf, morf.assign_coords(fraction=[0, 0.5]))
