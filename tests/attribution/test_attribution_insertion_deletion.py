"""deletion_curve and insertion_curve (RISE): a slow reference, closed forms, invariances."""

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from geomxai.attribution import deletion_curve, gaussian_blur, insertion_curve, masking_auc

FRACTIONS = np.linspace(0, 1, 9)
CURVES = {"deletion": deletion_curve, "insertion": insertion_curve}


def slow_curve(model, x, target, s, fractions, mode, fill, blur_sigma=2.0):
    """Straight from the definition: per sample, per fraction, position by position."""
    n = x.shape[0]
    positions = s.shape[1:]
    p = int(np.prod(positions))
    out = np.zeros((n, len(fractions)))
    for i in range(n):
        flat = s[i].flatten().tolist()
        order = sorted(range(p), key=lambda j: (-flat[j], j))  # MoRF, ties row-major
        sample = x[i]
        if fill == "zero":
            values = torch.zeros_like(sample)
        elif fill == "blur":
            values = gaussian_blur(sample[None], blur_sigma)[0]
        elif x.ndim == 2:  # tabular mean: each feature over the batch
            values = x.mean(dim=0)
        else:  # mean over positions, per channel
            values = sample.flatten(1).mean(1).view(-1, *[1] * len(positions)).expand_as(sample)
        for col, f in enumerate(fractions):
            k = int(np.floor(f * p + 0.5))
            chosen = set(order[:k])
            xm = sample.clone()
            for j in range(p):
                replaced = j in chosen if mode == "deletion" else j not in chosen
                if replaced:
                    idx = np.unravel_index(j, positions)
                    if x.ndim == 2:
                        xm[idx] = values[idx]
                    else:
                        xm[(slice(None), *idx)] = values[(slice(None), *idx)]
            with torch.no_grad():
                prob = model(xm[None]).double().softmax(1)[0, int(target[i])]
            out[i, col] = float(prob)
    return out


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
def test_images_match_slow_reference(tiny_cnn, images, mode, fill):
    x, _ = images
    model = tiny_cnn.eval()
    with torch.no_grad():
        target = model(x).argmax(1)
    s = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(0))
    ds = CURVES[mode](model, x, target, s, fractions=FRACTIONS, fill=fill, batch_size=4)
    ref = slow_curve(model, x, target, s, FRACTIONS, mode, fill)
    np.testing.assert_allclose(ds.probability.values, ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_sequences_and_tabular_match_slow_reference(mode):
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(45, 4))
    mlp = nn.Sequential(nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 3))
    g = torch.Generator().manual_seed(2)
    for model, x, s in (
        (conv, torch.randn(5, 2, 15, generator=g), torch.rand(5, 15, generator=g)),
        (mlp, torch.randn(6, 7, generator=g), torch.rand(6, 7, generator=g)),
    ):
        target = torch.arange(x.shape[0]) % 3
        for fill in ("zero", "mean"):
            ds = CURVES[mode](model, x, target, s, fractions=FRACTIONS, fill=fill, batch_size=4)
            ref = slow_curve(model, x, target, s, FRACTIONS, mode, fill)
            np.testing.assert_allclose(ds.probability.values, ref, rtol=1e-6, atol=1e-9)


class LinearProbability(nn.Module):
    """p(class 0) = a + b * x_j for inputs in [0, 1], through logits (log p, log(1 - p))."""

    def __init__(self, j, a=0.1, b=0.8):
        super().__init__()
        self.j, self.a, self.b = j, a, b

    def forward(self, x):
        p = self.a + self.b * x.flatten(1)[:, self.j]
        return torch.stack([p.log(), (1 - p).log()], dim=1)


def test_probability_linear_in_one_known_feature():
    torch.manual_seed(0)
    n, d, j = 20, 5, 3
    x = torch.rand(n, d, dtype=torch.float64)
    model = LinearProbability(j)
    s = torch.rand(n, d, dtype=torch.float64) * 0.1
    s[:, j] = 1.0  # the feature that matters is the most salient
    fr = np.linspace(0, 1, d + 1)  # one feature per step
    p0 = (0.1 + 0.8 * x[:, j]).numpy()
    dele = deletion_curve(model, x, 0, s, fractions=fr)
    np.testing.assert_allclose(dele.probability.values[:, 0], p0)
    np.testing.assert_allclose(dele.probability.values[:, 1:], 0.1)
    # trapezoid over steps of 1/d: the first step falls from p0 to 0.1, then 0.1 throughout
    np.testing.assert_allclose(dele.auc.values, (p0 + 0.1) / 2 / d + 0.1 * (d - 1) / d)
    ins = insertion_curve(model, x, 0, s, fractions=fr, fill="zero")
    np.testing.assert_allclose(ins.probability.values[:, 0], 0.1)
    np.testing.assert_allclose(ins.probability.values[:, 1:], p0[:, None].repeat(d, 1))
    np.testing.assert_allclose(ins.auc.values, (p0 + 0.1) / 2 / d + p0 * (d - 1) / d)
    # a map that ranks the feature last: deletion keeps p0 until the end, insertion waits
    s_last = s.clone()
    s_last[:, j] = -1.0
    late = deletion_curve(model, x, 0, s_last, fractions=fr)
    np.testing.assert_allclose(late.probability.values[:, :-1], p0[:, None].repeat(d, 1))
    assert bool((late.auc > dele.auc).all())


class MeanProbability(nn.Module):
    """p(class 0) = mean of all inputs (in (0, 1))."""

    def forward(self, x):
        p = x.flatten(1).mean(1)
        return torch.stack([p.log(), (1 - p).log()], dim=1)


def test_mean_probability_closed_form_for_images():
    g = torch.Generator().manual_seed(0)
    x = 0.05 + 0.9 * torch.rand(4, 3, 4, 4, generator=g, dtype=torch.float64)
    s = torch.rand(4, 4, 4, generator=g, dtype=torch.float64)
    fr = np.linspace(0, 1, 17)  # one pixel per step
    ds = deletion_curve(MeanProbability(), x, 0, s, fractions=fr, fill="zero")
    # removing the k most salient pixels (all channels) removes their share of the mean
    pixel_sums = x.sum(dim=1).flatten(1)  # (n, 16)
    order = torch.argsort(s.flatten(1), dim=1, descending=True, stable=True)
    removed = torch.cumsum(pixel_sums.gather(1, order), dim=1)
    total = pixel_sums.sum(1, keepdim=True)
    expected = torch.cat([total, total - removed], dim=1) / 48
    np.testing.assert_allclose(ds.probability.values, expected.numpy(), atol=1e-12)
    ins = insertion_curve(MeanProbability(), x, 0, s, fractions=fr, fill="zero")
    np.testing.assert_allclose(
        ins.probability.values, (torch.cat([0 * total, removed], 1) / 48).numpy(), atol=1e-12
    )


def test_dataset_layout_and_auc_per_sample(tiny_cnn, images):
    x, y = images
    s = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(0))
    ds = deletion_curve(tiny_cnn, x, y, s, fractions=FRACTIONS)
    assert isinstance(ds, xr.Dataset)
    assert ds.probability.dims == ("sample", "fraction") and ds.auc.dims == ("sample",)
    assert ds["n_masked"].values.tolist() == [0, 8, 16, 24, 32, 40, 48, 56, 64]
    assert ds.attrs["mode"] == "deletion" and ds.attrs["fill"] == "zero"
    assert ds.attrs["n_positions"] == 64 and ds.attrs["layout"] == "image"
    assert ds.auc.attrs["direction"] == "lower"
    # the area is the trapezoid rule of each sample's curve, as masking_auc takes it
    np.testing.assert_allclose(
        ds.auc.values, np.trapezoid(ds.probability.values, FRACTIONS, axis=1)
    )
    np.testing.assert_allclose(ds.auc.values, masking_auc(ds.probability).values)
    # fraction 0 is the clean probability; insertion at fraction 1 too
    with torch.no_grad():
        clean = tiny_cnn(x).double().softmax(1).gather(1, y[:, None])[:, 0].numpy()
    np.testing.assert_allclose(ds.probability.values[:, 0], clean, rtol=1e-6)
    ins = insertion_curve(tiny_cnn, x, y, s, fractions=FRACTIONS)
    np.testing.assert_allclose(ins.probability.values[:, -1], clean, rtol=1e-6)
    assert ins.attrs["fill"] == "blur" and ins.auc.attrs["direction"] == "higher"


def test_default_insertion_start_is_the_mean_off_images():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 3))
    x = torch.randn(5, 4)
    ds = insertion_curve(mlp, x, 0, torch.rand(5, 4), fractions=[0, 1])
    assert ds.attrs["fill"] == "mean" and ds.attrs["layout"] == "tabular"
    with torch.no_grad():
        start = mlp(x.mean(0, keepdim=True).expand(5, 4)).double().softmax(1)[:, 0]
    np.testing.assert_allclose(ds.probability.values[:, 0], start.numpy(), rtol=1e-6)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_batching_and_random_fills(tiny_cnn, images, mode):
    x, y = images
    s = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(0))
    a = CURVES[mode](tiny_cnn, x, y, s, fractions=FRACTIONS, batch_size=None)
    b = CURVES[mode](tiny_cnn, x, y, s, fractions=FRACTIONS, batch_size=4)
    np.testing.assert_allclose(a.probability.values, b.probability.values, rtol=1e-6)
    u1 = CURVES[mode](tiny_cnn, x, y, s, fractions=FRACTIONS, fill="uniform", seed=3)
    u2 = CURVES[mode](tiny_cnn, x, y, s, fractions=FRACTIONS, fill="uniform", seed=3)
    xr.testing.assert_identical(u1, u2)
    road = CURVES[mode](tiny_cnn, x, y, s, fractions=FRACTIONS, fill="road")
    assert bool(((road.probability >= 0) & (road.probability <= 1)).all())


def test_model_left_as_it_was(tiny_cnn, images, hooks_left):
    x, y = images
    x_before = x.clone()
    tiny_cnn.train()
    tiny_cnn.body[1].eval()
    seen = []
    handle = tiny_cnn.head.register_forward_pre_hook(lambda m, i: seen.append(m.training))
    insertion_curve(tiny_cnn, x, y, torch.rand(6, 8, 8), fractions=[0, 0.5, 1])
    handle.remove()
    assert seen and not any(seen)
    assert tiny_cnn.training and not tiny_cnn.body[1].training
    assert hooks_left(tiny_cnn) == 0 and torch.equal(x, x_before)
    assert all(p.grad is None for p in tiny_cnn.parameters())


def test_invalid_arguments(tiny_cnn, images):
    x, y = images
    s = torch.rand(6, 8, 8)
    with pytest.raises(ValueError, match="at least 2 fractions"):
        deletion_curve(tiny_cnn, x, y, s, fractions=[0.5])
    with pytest.raises(ValueError, match="fill must be one of"):
        deletion_curve(tiny_cnn, x, y, s, fractions=[0, 1], fill="black")
    with pytest.raises(ValueError, match=r"\(6, 8, 8\)"):
        insertion_curve(tiny_cnn, x, y, torch.rand(6, 64), fractions=[0, 1])
    with pytest.raises(ValueError, match="target must be"):
        insertion_curve(tiny_cnn, x, y[:3], s, fractions=[0, 1])
    with pytest.raises(TypeError, match="softmax must be True or False"):
        insertion_curve(tiny_cnn, x, y, s, fractions=[0, 1], softmax="yes")
    mlp = nn.Linear(4, 2)
    with pytest.raises(ValueError, match="no neighbours"):
        insertion_curve(mlp, torch.rand(3, 4), 0, torch.rand(3, 4), fractions=[0, 1], fill="blur")
