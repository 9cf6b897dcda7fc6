"""Tabular (n, d) and sequence (n, c, t) inputs: saliency, masking, gaps, entanglement."""

import numpy as np
import pytest
import torch
from _internals import batch_stats, impute_road, layout_of, position_fill
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam
from torch import nn

from geomxai.attribution import (
    as_batch,
    fidelity_gap,
    gini,
    gradient_entanglement,
    masking_auc,
    masking_curve,
    mass_inside,
    saliency,
    topq_contrast,
)

FRACTIONS = np.linspace(0, 1, 11)


def fit(model, x, y, *, steps, lr=0.05, seed=0):
    """Full-batch Adam; returns the model in eval mode, its grads cleared."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


@pytest.fixture(scope="module")
def breast_cancer():
    """scikit-learn's breast cancer set (569 x 30, shipped with it), standardised, and an MLP."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = torch.tensor(data.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(data.target, dtype=torch.long)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2))
    fit(model, x, y, steps=150, lr=0.01)
    return model, x, y


class OneFeature(nn.Module):
    """Uses feature ``j`` alone: logits (-5 x_j, 5 x_j), so class 1 exactly when x_j > 0."""

    def __init__(self, j: int):
        super().__init__()
        self.j = j
        self.w = nn.Parameter(torch.tensor(5.0))

    def forward(self, x):
        v = self.w * x[:, self.j]
        return torch.stack([-v, v], dim=1)


# ---- tabular (n, d)


def test_tabular_mlp_end_to_end(breast_cancer):
    model, x, y = breast_cancer
    with torch.no_grad():
        assert float((model(x).argmax(1) == y).float().mean()) > 0.95
    s = saliency(model, x, y, method="input_x_gradient")
    assert s.shape == (569, 30) and bool((s >= 0).all())
    curves = {
        order: masking_curve(model, x, y, s, fractions=FRACTIONS, order=order, fill="mean")
        for order in ("morf", "lerf", "random")
    }
    assert curves["morf"].attrs["layout"] == "tabular"
    assert curves["morf"].attrs["n_positions"] == 30 and "n_pixels" not in curves["morf"].attrs
    assert curves["morf"]["n_masked"].values.tolist() == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    morf, lerf, rnd = (float(masking_auc(curves[o])) for o in ("morf", "lerf", "random"))
    assert morf < rnd < lerf
    assert float(fidelity_gap(curves["lerf"], curves["morf"])) > 0.1
    # every feature at the batch mean: one prediction for all rows, so one class's share
    shares = (float((y == 0).double().mean()), float((y == 1).double().mean()))
    assert curves["lerf"].values[-1] == curves["morf"].values[-1]
    assert min(abs(curves["morf"].values[-1] - p) for p in shares) < 1e-12
    g, q = gini(s), topq_contrast(s)
    assert g.dims == ("sample",) and bool(((g > 0) & (g < 1)).all())
    assert bool((q > 0).all())
    e = gradient_entanglement(model, x, y, layer="1")
    assert 0 < e < 1


def test_masking_the_one_feature_drops_accuracy_at_once():
    torch.manual_seed(0)
    x = torch.randn(200, 6)
    model = OneFeature(j=4)
    y = (x[:, 4] > 0).long()
    s = saliency(model, x, y)
    expected = torch.zeros(200, 6)
    expected[:, 4] = 5.0
    torch.testing.assert_close(s, expected)
    fr = np.arange(7) / 6
    morf = masking_curve(model, x, y, s, fractions=fr, fill="zero")
    lerf = masking_curve(model, x, y, s, fractions=fr, order="lerf", fill="zero")
    # x_4 = 0 ties the logits and argmax picks class 0: accuracy is the share of class 0
    p0 = float((y == 0).float().mean())
    np.testing.assert_allclose(morf.values, [1.0] + [p0] * 6)
    # LeRF removes the zero-saliency features first (ties in index order), feature 4 last
    np.testing.assert_allclose(lerf.values, [1.0] * 6 + [p0])


def slow_tabular_curve(model, x, y, s, fractions, fill):
    """From the definition, row by row: features ranked MoRF, replaced by the batch statistic."""
    n, d = x.shape
    fill_values = torch.zeros(d) if fill == "zero" else x.mean(dim=0)
    acc = []
    for f in fractions:
        k = int(np.floor(f * d + 0.5))
        correct = 0
        for i in range(n):
            order = sorted(range(d), key=lambda j: (-float(s[i, j]), j))
            row = x[i].clone()
            for j in order[:k]:
                row[j] = fill_values[j]
            with torch.no_grad():
                correct += int(model(row[None]).argmax(1).item() == int(y[i]))
        acc.append(correct / n)
    return np.array(acc)


@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_tabular_curve_matches_slow_reference(breast_cancer, fill):
    model, x, y = breast_cancer
    x, y = x[:40], y[:40]
    s = torch.rand(40, 30, generator=torch.Generator().manual_seed(0))
    ours = masking_curve(model, x, y, s, fractions=FRACTIONS, fill=fill, batch_size=16)
    np.testing.assert_allclose(ours.values, slow_tabular_curve(model, x, y, s, FRACTIONS, fill))


def test_tabular_uniform_fill_draws_from_each_feature_over_the_batch():
    x = torch.stack([torch.linspace(0, 1, 50), torch.linspace(100, 200, 50)], dim=1)
    layout = layout_of(x)
    stats = batch_stats(x, layout)
    g = torch.Generator().manual_seed(0)
    v = position_fill(x, "uniform", layout, stats=stats, generator=g)
    assert v.shape == x.shape
    assert bool(((v[:, 0] >= 0) & (v[:, 0] <= 1)).all())
    assert bool(((v[:, 1] >= 100) & (v[:, 1] <= 200)).all())
    # drawn per row, not one value per feature
    assert v[:, 1].std() > 10
    mean = position_fill(x, "mean", layout, stats=stats)
    torch.testing.assert_close(mean, x.mean(0).expand_as(x))


def test_tabular_fills_without_neighbours_are_refused(breast_cancer):
    model, x, y = breast_cancer
    s = torch.rand(569, 30)
    for fill in ("blur", "road"):
        with pytest.raises(ValueError, match="no neighbours: use one of"):
            masking_curve(model, x, y, s, fractions=[0, 1], fill=fill)


def test_tabular_captum_instance_and_layer_refusal(breast_cancer):
    model, x, y = breast_cancer
    ig = IntegratedGradients(model)
    ours = saliency(model, x[:8], y[:8], method=ig, attribute_kwargs={"n_steps": 8})
    theirs = ig.attribute(x[:8].clone(), target=y[:8], n_steps=8).detach().abs()
    torch.testing.assert_close(ours, theirs)
    with pytest.raises(ValueError, match="do not correspond to the features"):
        saliency(model, x[:8], y[:8], method=LayerGradCam(model, model[0]))


def test_maps_that_do_not_match_x_are_refused(breast_cancer):
    model, x, y = breast_cancer
    with pytest.raises(ValueError, match=r"\(n, d\) of shape \(569, 30\) for x of tabular layout"):
        masking_curve(model, x, y, torch.rand(569, 31), fractions=[0, 1])
    with pytest.raises(ValueError, match="image batch"):
        saliency(model, x[None, None, None], 0)
    with pytest.raises(ValueError, match="at least one non-empty sample"):
        as_batch(torch.zeros(3, 0))


# ---- sequences (n, c, t)


WINDOW = slice(8, 13)


@pytest.fixture(scope="module")
def series():
    """Two-channel series of 32 steps; the class is the sign of a bump in channel 0, steps 8-12."""
    g = torch.Generator().manual_seed(0)
    n, t = 256, 32
    x = torch.randn(n, 2, t, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    x[:, 0, WINDOW] += (2.0 * y - 1.0)[:, None]
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * t, 2)
    )
    fit(model, x, y, steps=60, lr=0.02)
    return model, x, y


def test_sequence_conv1d_end_to_end(series):
    model, x, y = series
    with torch.no_grad():
        assert float((model(x).argmax(1) == y).float().mean()) > 0.95
    s = saliency(model, x, y)
    assert s.shape == (256, 32)
    masks = torch.zeros(256, 32, dtype=torch.bool)
    masks[:, WINDOW] = True
    # 5 of 32 steps hold the evidence: the maps put more than 5/32 = 0.16 of their mass there
    # (the untrained weights outside the window keep some gradient) and peak inside it
    assert float(mass_inside(s, masks).mean()) > 0.3
    assert 8 <= int(s.mean(0).argmax()) <= 12
    for fill in ("uniform", "zero", "mean", "blur", "road"):
        # a blur of 2 steps keeps the 5-step bump's sign (the fill leaks the evidence, Hooker
        # et al. 2019); one of 8 steps smears it out
        kw = {"blur_sigma": 8.0} if fill == "blur" else {}
        morf = masking_curve(model, x, y, s, fractions=FRACTIONS, fill=fill, **kw)
        lerf = masking_curve(model, x, y, s, fractions=FRACTIONS, order="lerf", fill=fill, **kw)
        assert morf.attrs["layout"] == "sequence" and morf.attrs["n_positions"] == 32
        assert float(fidelity_gap(lerf, morf)) > 0.1, fill
    g, q = gini(s), topq_contrast(s)
    assert g.dims == q.dims == ("sample",)
    assert bool(((g > 0) & (g < 1 - 1 / 32)).all()) and bool(((q > 0) & (q <= 32 / 3)).all())
    assert 0 <= gradient_entanglement(model, x, y, layer="1") <= 1


def test_sequence_layer_method_upsampled_along_time(series):
    model, x, y = series
    method = LayerGradCam(model, model[0])
    ours = saliency(model, x[:8], y[:8], method=method, interpolate_mode="linear")
    layer_map = method.attribute(x[:8].clone(), target=y[:8]).detach()
    up = LayerAttribution.interpolate(layer_map, (32,), interpolate_mode="linear")
    torch.testing.assert_close(ours, up.abs().sum(1))
    with pytest.raises(ValueError, match="interpolate_mode must be one of"):
        saliency(model, x[:8], y[:8], method=method, interpolate_mode="bilinear")


def slow_sequence_curve(model, x, y, s, fractions, fill):
    n, c, t = x.shape
    acc = []
    for f in fractions:
        k = int(np.floor(f * t + 0.5))
        correct = 0
        for i in range(n):
            order = sorted(range(t), key=lambda j: (-float(s[i, j]), j))
            seq = x[i].clone()
            values = torch.zeros(c) if fill == "zero" else x[i].mean(dim=1)
            for j in order[:k]:
                seq[:, j] = values
            with torch.no_grad():
                correct += int(model(seq[None]).argmax(1).item() == int(y[i]))
        acc.append(correct / n)
    return np.array(acc)


@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_sequence_curve_matches_slow_reference(series, fill):
    model, x, y = series
    x, y = x[:24], y[:24]
    s = torch.rand(24, 32, generator=torch.Generator().manual_seed(1))
    ours = masking_curve(model, x, y, s, fractions=FRACTIONS, fill=fill, batch_size=10)
    np.testing.assert_allclose(ours.values, slow_sequence_curve(model, x, y, s, FRACTIONS, fill))


def test_sequence_road_interpolates_linearly_in_time():
    x = torch.tensor([[[0.0, 9.0, 9.0, 3.0, 5.0]]], dtype=torch.float64)
    mask = torch.tensor([[[False, True, True, False, False]]])
    out = impute_road(x, mask, layout_of(x), noise=0.0, generator=None)
    torch.testing.assert_close(
        out, torch.tensor([[[0.0, 1.0, 2.0, 3.0, 5.0]]], dtype=torch.float64)
    )


def test_sequence_blur_is_along_time_only():
    x = torch.zeros(1, 2, 21)
    x[0, 0, 10] = 1.0
    v = position_fill(x, "blur", layout_of(x), blur_sigma=2.0)
    assert v.shape == x.shape
    assert float(v[0, 1].abs().max()) == 0.0  # channels are not mixed
    assert float(v[0, 0].sum()) == pytest.approx(1.0, abs=1e-6)  # mass kept along time
    assert float(v[0, 0, 10]) < 1.0 and float(v[0, 0, 12]) > 0.0


@pytest.mark.parametrize("shape", [(5, 6), (5, 2, 7)], ids=["tabular", "sequence"])
def test_named_methods_on_a_linear_model(shape):
    torch.manual_seed(0)
    d = int(np.prod(shape[1:]))
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, 3))
    x = torch.rand(*shape)
    y = torch.tensor([0, 1, 2, 0, 1])
    g = model[1].weight.detach()[y].view(shape)  # the exact input gradient of logit_y

    def per_position(a):
        return a.abs() if len(shape) == 2 else a.abs().sum(1)

    torch.testing.assert_close(saliency(model, x, y), per_position(g))
    torch.testing.assert_close(
        saliency(model, x, y, method="input_x_gradient"), per_position(x * g)
    )
    ig = saliency(model, x, y, method="integrated_gradients", baseline=0.5)
    torch.testing.assert_close(ig, per_position((x - 0.5) * g), rtol=1e-5, atol=1e-6)
    sg = saliency(model, x, y, method="smoothgrad", n_samples=4)  # a constant gradient
    torch.testing.assert_close(sg, per_position(g), rtol=1e-5, atol=1e-6)
    signed = saliency(model, x, y, reduce="sum")
    torch.testing.assert_close(signed, g if len(shape) == 2 else g.sum(1))


def test_tabular_fills_in_a_float64_model():
    """The batch statistics follow each chunk to the model's dtype (and device)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2)).double()
    x = torch.randn(10, 4)
    s = torch.rand(10, 4)
    for fill in ("uniform", "mean", "zero"):
        curve = masking_curve(model, x, 0, s, fractions=[0, 0.5, 1], fill=fill, batch_size=3)
        assert curve.sizes == {"fraction": 3}


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(12, 5), (12, 2, 9)], ids=["tabular", "sequence"])
def test_cuda_model_with_cpu_inputs(shape):
    from geomxai.attribution import deletion_curve, insertion_curve

    torch.manual_seed(0)
    d = int(np.prod(shape[1:]))
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, 3)).cuda()
    x = torch.randn(*shape)
    y = torch.arange(12) % 3
    s = saliency(model, x, y, method=IntegratedGradients(model))
    assert s.device.type == "cpu" and s.shape == (12, shape[-1])  # one value per position
    fills = ("uniform", "mean", "zero") + (("blur", "road") if len(shape) == 3 else ())
    for fill in fills:
        curve = masking_curve(model, x, y, s, fractions=[0, 0.5, 1], fill=fill, batch_size=5)
        assert np.isfinite(curve.values).all()
        for fn in (deletion_curve, insertion_curve):
            ds = fn(model, x, y, s, fractions=[0, 0.5, 1], fill=fill, batch_size=5)
            assert np.isfinite(ds.auc.values).all()
