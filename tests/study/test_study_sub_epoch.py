"""The analysis reads sub-epoch checkpoints as training time (``step`` beside ``epoch``) and
summarises each run's dynamics over the whole run (issue 23)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from geomxai import schema
from geomxai.dynamics import SETTLED_OVERLAP
from geomxai.study import analyze_run, analyze_runs
from geomxai.train import train

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from tiny_runs import tiny_config  # noqa: E402

OPTIONS = {"probe_size": 64, "fractions": 3, "n_examples": 2, "cache": False, "progress": False}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [
        train(tiny_config(root / f"s{seed}", epochs=2, seed=seed, checkpoint_every_steps=3))
        for seed in (0, 1)
    ]


@pytest.fixture(scope="module")
def analysed(runs):
    return analyze_run(runs[0], **OPTIONS)


def test_sub_epoch_checkpoints_are_read_as_training_time(analysed):
    ds = analysed
    np.testing.assert_array_equal(ds["epoch"].values, [0, 0.75, 1, 1.5, 2])
    np.testing.assert_array_equal(ds["step"].values, [0, 3, 4, 6, 8])
    assert ds["step"].dtype == np.int64 and ds["step"].dims == ("epoch",)
    # The per-checkpoint measures exist at every checkpoint; metrics.jsonl only at epoch ends.
    assert np.isfinite(ds["probe_acc"].values).all()
    assert np.isnan(ds["test_acc"].sel(epoch=[0.75, 1.5]).values).all()
    assert "sub-epoch" in ds["train_acc"].attrs["nan_reason"]
    assert np.isfinite(ds["train_acc"].sel(epoch=[1, 2]).values).all()


def test_whole_run_summaries_follow_their_definitions(analysed):
    ds = analysed
    swap = ds["nondegenerate_swap_rate"].isel(layer=0).values
    assert ds["mean_nondegenerate_swap_rate"].dims == ("layer",)
    assert float(ds["mean_nondegenerate_swap_rate"][0]) == pytest.approx(np.nanmean(swap[1:]))
    stability = ds["saliency_stability"].values
    assert float(ds["mean_saliency_stability"]) == pytest.approx(np.nanmean(stability[1:]))
    # Settling: the first checkpoint after which every consecutive overlap stays settled.
    overlap = ds["subspace_overlap"].isel(layer=0).values[1:]
    steps, epochs = ds["step"].values, ds["epoch"].values
    after = [t for t in range(len(steps) - 1) if (overlap[t:] >= SETTLED_OVERLAP).all()]
    step, epoch = float(ds["subspace_settle_step"][0]), float(ds["subspace_settle_epoch"][0])
    if after:
        assert (step, epoch) == (steps[after[0]], epochs[after[0]])
    else:
        assert np.isnan(step) and np.isnan(epoch)
        assert "below" in ds["subspace_settle_step"].attrs["nan_reason"]
    assert ds["subspace_settle_step"].attrs["settled_overlap"] == SETTLED_OVERLAP
    # The CKA-to-final area over time rescaled to [0, 1] (steps: 0 3 4 6 8).
    cka = ds["cka_final"].isel(layer=0).values
    u = steps / steps[-1]
    assert float(ds["cka_final_auc"][0]) == pytest.approx(np.trapezoid(cka, u))
    for name in schema.names("run_dynamics"):
        assert "epoch" not in ds[name].dims and ds[name].attrs["block"] == "run_dynamics"


def test_checkpoints_chosen_by_step_or_epoch(runs):
    by_step = analyze_run(runs[0], steps=[3, 8], **OPTIONS)
    np.testing.assert_array_equal(by_step["step"].values, [3, 8])
    np.testing.assert_array_equal(by_step["epoch"].values, [0.75, 2])
    by_epoch = analyze_run(runs[0], epochs=[0, 2], **OPTIONS)
    assert by_epoch["epoch"].dtype.kind == "i"  # epoch checkpoints only: int epochs as before
    np.testing.assert_array_equal(by_epoch["step"].values, [0, 8])
    with pytest.raises(ValueError, match=r"steps must be global steps .* got \[5\] \(it has "):
        analyze_run(runs[0], steps=[5], **OPTIONS)


def test_runs_keep_their_own_steps(runs):
    merged = analyze_runs(runs, **OPTIONS)
    assert merged["step"].dims == ("regime", "seed", "epoch")
    np.testing.assert_array_equal(
        merged["step"].sel(regime="regular", seed=1).values, [0, 3, 4, 6, 8]
    )
    assert merged["cka_final_auc"].dims == ("regime", "seed", "layer")
