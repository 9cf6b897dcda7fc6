"""The report says what its x axis counts: optimizer steps for a training callback's snapshots
(``attrs["checkpoint_index"] == "step"``), epochs otherwise; and a single model's report has no
"geometry vs fidelity" scatter of one dot per panel."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure
from synthetic_results import make_results, read_page
from torch import nn

from geomxai import GeometryMonitor
from geomxai.report import build_report
from geomxai.study import AnalysisOptions, analyze_model, combine_runs, make_probe

matplotlib.use("Agg")


@pytest.fixture
def x_labels(monkeypatch):
    """The x-axis labels of every figure the report saves, by file name."""
    labels: dict[str, set[str]] = {}
    real = Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        labels[str(fname).rsplit("/", 1)[-1]] = {
            ax.get_xlabel() for ax in fig.axes if ax.get_visible() and ax.get_xlabel()
        }
        return real(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return labels


OVER_TRAINING = ("effective_rank_over_epochs.png", "swap_rate_over_epochs.png")


def test_step_results_are_drawn_over_optimizer_steps(x_labels, tmp_path):
    results = make_results()
    results.attrs["checkpoint_index"] = "step"
    page = read_page(build_report(results, tmp_path / "steps"))
    assert "Axis-swap rate over optimizer steps" in page.headings
    assert not [h for h in page.headings if "over epochs" in h]
    for name in (*OVER_TRAINING, "representation_similarity.png"):
        assert x_labels[name] == {"optimizer step"}, name


def test_epoch_results_keep_their_epoch_axis(x_labels, tmp_path):
    page = read_page(build_report(make_results(), tmp_path / "epochs"))
    assert "Axis-swap rate over epochs" in page.headings
    for name in OVER_TRAINING:
        assert x_labels[name] == {"epoch"}, name


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x))


def test_a_monitored_loop_reports_over_optimizer_steps(x_labels, tmp_path):
    probe = make_probe("digits", 192)
    x, y = probe.images, probe.labels
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    monitor = GeometryMonitor(
        (x[:128], y[:128]), ["body"], every_n_steps=3, out_dir=tmp_path, tensorboard=False
    )
    for step in range(7):
        monitor.step(model, step)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[128:]), y[128:]).backward()
        opt.step()
    monitor.close()
    ds = monitor.analyze(Net(), progress=False, fractions=3)
    assert ds.attrs["checkpoint_index"] == "step"
    page = read_page(build_report(combine_runs([ds]), tmp_path / "report"))
    assert "Axis-swap rate over optimizer steps" in page.headings
    assert x_labels["swap_rate_over_epochs.png"] == {"optimizer step"}


def test_a_single_models_report_has_no_scatter_of_one_point(tmp_path):
    torch.manual_seed(0)
    probe = make_probe("digits", 64)
    options = AnalysisOptions(probe_size=64, layers=("body",), fractions=3, n_examples=2)
    single = analyze_model(Net(), (probe.images, probe.labels), options=options)
    page = read_page(build_report(single, tmp_path / "one"))
    assert "Geometry vs fidelity" not in page.headings
    assert not (tmp_path / "one" / "figures" / "geometry_vs_fidelity.png").exists()
    # Several points (epochs, seeds, regimes) keep it.
    many = read_page(build_report(make_results(), tmp_path / "many"))
    assert "Geometry vs fidelity" in many.headings
