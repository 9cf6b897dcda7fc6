"""The designs of the answer across settings (issue 25): settings 1-3 load as written, and a
tiny version of each, and of digits (setting 5), runs end to end (1 seed, 2 cells, tiny subsets,
1 epoch); the tabular setting 4 has its own test (test_pipeline_tabular.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import xarray as xr

from geomxai.pipeline import load_design, run_design

DESIGNS = {
    "fashion-mnist-cnn-gap": ("cnn_gap", 128),
    "fashion-mnist-resnet20": ("resnet20_w8", 32),
    "fashion-mnist-vit-micro": ("vit_micro_w64", 64),
}
FACTORIAL = ("regular", "sgt", "dbn", "saliencydecor")
TINY = {**DESIGNS, "digits": ("cnn2", 32), "digits-quick": ("cnn2", 32)}
"""Each design a tiny version runs of (the tabular one has its own test), its model and the
width of its feature layer."""


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_the_design_asks_the_question_of_issue_25(name):
    design = load_design(name)
    model, _ = DESIGNS[name]
    assert design.name == name and design.train["model"] == model
    assert design.train["dataset"] == "fashion-mnist"
    assert len(design.seeds) >= 5
    stats = design.statistics
    assert dict(stats.factorial) == {c: c for c in FACTORIAL}
    assert set(FACTORIAL) <= set(design.cell_names)
    (dose,) = stats.doses
    weights = [design.config(c, 0).decor_weight for c in dose.cells]
    assert dose.field == "decor_weight" and weights[0] == 0 and sum(w > 0 for w in weights) >= 3
    assert weights == sorted(weights)
    assert design.analysis["saliency_methods"] == ["abs_gradient", "integrated_gradients"]
    assert design.checkpoints == "spread" and design.control and design.keep_checkpoint
    assert design.train["checkpoint_every_steps"] and design.train["checkpoint_steps_epochs"] == 1
    assert stats.treatment == "saliencydecor" and stats.baselines == ("regular", "sgt", "dbn")
    assert stats.power_contrasts and stats.power_stated
    # Every cell is a valid run whose whitening fits the feature layer.
    for cell in design.cell_names:
        assert design.config(cell, 0).group_size <= DESIGNS[name][1]


def _tiny(design, tmp_path):
    """The design itself, cut to 1 seed, 2 cells, tiny subsets and 1 epoch."""
    cells = tuple(c for c in design.cells if c.name in ("regular", "saliencydecor"))
    train = {
        **design.train,
        "epochs": 1,
        "train_subset": 96,
        "test_subset": 64,
        "batch_size": 32,
        "checkpoint_every_steps": 1,
    }
    analysis = {
        **design.analysis,
        "probe_size": 24,
        "fractions": 3,
        "top_k": 4,
        "n_examples": 2,
        "saliency_kwargs": {"n_steps": 2},
    }
    statistics = dataclasses.replace(
        design.statistics,
        baselines=("regular",),
        factorial=None,
        doses=(),
        power_contrasts=(),
        power_metrics=(),
        power_stated={},
        link_n_boot=50,
        within_run_n_boot=50,
    )
    return dataclasses.replace(
        design,
        cells=cells,
        seeds=(0,),
        train=train,
        analysis=analysis,
        probe_size=24,
        statistics=statistics,
        paper={},
        runs_dir=tmp_path / "runs",
        out_dir=tmp_path / "out",
    )


@pytest.mark.filterwarnings("ignore::geomxai.study.ProbeSizeWarning")
@pytest.mark.parametrize("name", sorted(TINY))
def test_a_tiny_version_runs_end_to_end(tmp_path, name):
    design = _tiny(load_design(name), tmp_path)
    index = run_design(design)
    assert index.is_file()
    out = tmp_path / "out"
    model, width = TINY[name]
    for cell in ("regular", "saliencydecor"):
        # The final checkpoint is kept beside the small result, and step checkpoints exist.
        assert (out / "runs" / f"{cell}-s0.final.pt").is_file()
        steps = list((tmp_path / "runs" / f"{cell}-s0" / "checkpoints").glob("step_*.pt"))
        assert steps
        with xr.open_dataset(out / "runs" / f"{cell}-s0.nc", engine="h5netcdf") as run:
            several = len(design.analysis.get("saliency_methods", ())) > 1
            assert ("saliency_method" in run["morf_auc"].dims) == several
            assert 0 < int(run["n_live_units"].isel(epoch=-1).max()) <= width
            assert any(str(v).startswith("control_") for v in run.data_vars)
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        configs = json.loads(ds.attrs["run_configs"])
        assert {c["model"] for c in configs.values()} == {model}
        assert np.isfinite(ds["test_acc"]).all()
        assert "contrasts_verdict" in ds
