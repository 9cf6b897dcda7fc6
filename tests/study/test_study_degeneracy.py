"""Degeneracy warnings (issue 23): planted degenerate set-ups raise theirs, healthy ones do not."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from geomxai.study import AnalysisOptions, Probe, measure, warnings_of

K = 4


class IntensityReader(nn.Module):
    """Reads the class from an image's (weighted) mean intensity alone:
    logit_c = -100 (mean - centre_c)^2, with fixed positive pixel weights (so its |gradient|
    map is not constant).

    On data whose intensity carries the class it is perfect, and any fill that keeps each
    image's own range (``uniform``) leaves the class readable at every masked fraction.
    """

    def __init__(self):
        super().__init__()
        self.body = nn.Flatten()
        self.head = nn.Identity()
        self.register_buffer("centres", (torch.arange(K) + 0.5) / K)
        weights = torch.rand(64, generator=torch.Generator().manual_seed(5)) + 0.1
        self.register_buffer("weights", weights / weights.sum())

    def forward(self, x):
        mean = (self.head(self.body(x)) * self.weights).sum(dim=1, keepdim=True)
        return -100.0 * (mean - self.centres) ** 2


def intensity_probe(n=120, seed=0):
    """8x8 images of class c drawn uniformly in [c/K, (c+1)/K]: the intensity is the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    x = (y[:, None, None, None] + torch.rand(n, 1, 8, 8, generator=g)) / K
    return Probe(x, y, dataset="planted")


def options(**kw):
    return AnalysisOptions(probe_size=120, fractions=5, top_k=4, n_examples=2, **kw)


def test_a_planted_leaking_fill_raises_its_warning_and_names_a_fill_that_does_not():
    ds = measure(IntensityReader(), intensity_probe(), options(fill="uniform"))
    assert float(ds.probe_acc) == 1.0
    assert float(ds.morf_curve[-1]) > 0.9  # the class survives every position masked
    for name in ("morf_auc", "lerf_auc", "fidelity_gap", "morf_curve"):
        messages = warnings_of(ds[name])
        assert any("leaks the class" in m and "fill='zero'" in m for m in messages), name
    recorded = json.loads(ds.attrs["warnings"])  # a JSON list, each warning once
    assert any("leaks the class" in m for m in recorded) and len(set(recorded)) == len(recorded)
    assert not warnings_of(ds["probe_acc"])
    # The zero fill makes every fully masked image the same: no leak, no warning.
    ds = measure(IntensityReader(), intensity_probe(), options(fill="zero"))
    labels = np.asarray(intensity_probe().labels)
    chance = np.bincount(labels).max() / labels.size  # the best constant prediction
    assert float(ds.morf_curve[-1]) <= chance + 1e-9
    assert not any("leaks" in m for m in warnings_of(ds["morf_auc"]))


def constant_map(model, x, target):
    return torch.ones_like(x)


def test_a_planted_constant_map_raises_its_warning():
    ds = measure(IntensityReader(), intensity_probe(), options(saliency_method=constant_map))
    assert float(ds.gini) == pytest.approx(0.0, abs=1e-12)
    gini = warnings_of(ds["gini"])
    assert any("constant or nearly so" in m for m in gini)
    assert any("MoRF and LeRF curves agree" in m for m in gini)
    assert any("constant or nearly so" in m for m in warnings_of(ds["fidelity_gap"]))
    # |gradient| maps of the same model are not constant: no such warning.
    ds = measure(IntensityReader(), intensity_probe(), options(fill="zero"))
    assert not any("constant" in m for m in warnings_of(ds["gini"]))


def test_a_model_at_chance_is_flagged():
    class Constant(IntensityReader):
        def forward(self, x):
            return super().forward(x) * 0 + torch.tensor([1.0, 0.0, 0.0, 0.0])

    ds = measure(Constant(), intensity_probe(), options(fill="zero"))
    assert float(ds.probe_acc) == pytest.approx(0.25)
    for name in ("probe_acc", "morf_auc", "gini", "deletion_auc"):
        assert any("chance level" in m for m in warnings_of(ds[name])), name
    ds = measure(IntensityReader(), intensity_probe(), options(fill="zero"))
    assert not warnings_of(ds["probe_acc"])


def test_planted_dead_channels_give_the_live_and_dead_counts_and_live_entanglement():
    from geomxai.attribution import gradient_entanglement
    from geomxai.models import cnn2

    torch.manual_seed(0)
    model = cnn2(feature_channels=4, image_size=8).eval()
    with torch.no_grad():
        model.body[3].weight[[1, 3]] = 0.0  # channels 1 and 3 never fire
        model.body[3].bias[[1, 3]] = -1.0
        model.body[3].bias[[0, 2]] = 2.0  # and channels 0 and 2 always do
    g = torch.Generator().manual_seed(2)
    probe = Probe(torch.rand(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g))
    ds = measure(model, probe, AnalysisOptions(probe_size=64, fractions=3, top_k=4, n_examples=2))
    # 4 channels x 2 x 2 pixels; 2 channels dead: 8 live, 8 dead.
    assert int(ds.n_units.sel(layer="body")) == 16
    assert int(ds.n_live_units.sel(layer="body")) == 8
    assert int(ds.n_dead_units.sel(layer="body")) == 8
    live = gradient_entanglement(model, probe.images, probe.labels)
    every = gradient_entanglement(model, probe.images, probe.labels, units="all")
    assert float(ds.entanglement) == pytest.approx(live, rel=1e-9)
    assert float(ds.entanglement_all_units) == pytest.approx(every, rel=1e-9)
    assert every < live
    assert ds.entanglement.attrs["units"] == "live" and ds.entanglement.attrs["layer"] == "body"
    # The invariant geometry is measured at the same layer (a linear head: 10 logits).
    assert 1.0 <= float(ds.head_effective_rank) <= 10.0
    assert 1.0 <= float(ds.grad_metric_effective_rank) <= 8.0 + 1e-9
