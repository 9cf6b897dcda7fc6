"""Analysing runs: one Dataset over checkpoints, NaN only with a reason, cache, merge, dask, lazy files."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch
import xarray as xr

from geomxai.study import (
    AnalysisOptions,
    Probe,
    _analyze,
    analyze_run,
    analyze_runs,
    checkpoints_of,
    make_probe,
    open_results,
    save_results,
)

REGIMES = ("regular", "saliencydecor")
OPTIONS = AnalysisOptions(probe_size=32, fractions=4, top_k=4, n_examples=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, train_tiny) -> dict:
    """Two tiny runs of two epochs on digits: three checkpoints each (epoch 0 = the initial model)."""
    root = tmp_path_factory.mktemp("runs")
    return {regime: train_tiny(root / f"{regime}-s0", regime) for regime in REGIMES}


@pytest.fixture(scope="module")
def analysed(runs) -> xr.Dataset:
    return analyze_run(runs["regular"], options=OPTIONS, progress=False)


def _copy_run(run_dir, dest, *, cache: bool):
    """A copy of a run directory, with or without its analysis cache (tests may change either)."""
    ignore = None if cache else shutil.ignore_patterns("analysis")
    return shutil.copytree(run_dir, dest, ignore=ignore)


def _numeric(ds: xr.Dataset) -> list[str]:
    return [v for v in ds.data_vars if np.issubdtype(ds[v].dtype, np.number)]


def _count_measures(monkeypatch) -> list:
    calls = []
    real = _analyze.measure

    def counting(model, probe, options):
        calls.append(1)
        return real(model, probe, options)

    monkeypatch.setattr(_analyze, "measure", counting)
    return calls


def test_one_epoch_per_checkpoint(runs, analysed):
    epochs = [int(p.stem.split("_")[-1]) for p in checkpoints_of(runs["regular"])]
    assert epochs == [0, 1, 2]
    assert list(analysed["epoch"].values) == epochs
    assert list(analysed["layer"].values) == ["body"]
    for var in ("effective_rank", "morf_auc", "swap_rate", "saliency_stability", "test_acc"):
        assert analysed[var].dims[0] == "epoch", var
    assert analysed.attrs["regime"] == "regular" and analysed.attrs["dataset"] == "digits"
    assert analysed.attrs["analysis"] == OPTIONS.key()


def test_every_value_is_finite_or_says_why_not(analysed):
    for var in _numeric(analysed):
        values = analysed[var].values
        if np.isfinite(values).all():
            continue
        reason = analysed[var].attrs.get("nan_reason") or analysed.attrs.get(f"nan_reason_{var}")
        assert reason, f"{var} has NaN and no reason"
    # The metrics that need a previous checkpoint are NaN exactly at the first one.
    for var in ("swap_rate", "saliency_stability", "train_acc", "loss_ce"):
        first, rest = analysed[var].isel(epoch=0), analysed[var].isel(epoch=slice(1, None))
        assert bool(first.isnull().all()) and bool(rest.notnull().all()), var
    for var in ("effective_rank", "entanglement", "morf_auc", "lerf_auc", "gini", "probe_acc"):
        assert np.isfinite(analysed[var].values).all(), var


def test_a_second_analysis_reads_the_cache(runs, analysed, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("measure ran although every checkpoint is cached")

    monkeypatch.setattr(_analyze, "measure", fail)
    again = analyze_run(runs["regular"], options=OPTIONS, progress=False)
    xr.testing.assert_identical(again, analysed)


def test_deleting_one_cache_file_recomputes_only_that_one(runs, analysed, tmp_path, monkeypatch):
    run = _copy_run(runs["regular"], tmp_path / "run", cache=True)
    cached = sorted((run / "analysis").glob("*.nc"))
    assert len(cached) == 3
    before = {p.name: p.stat().st_mtime_ns for p in cached}
    cached[1].unlink()
    calls = _count_measures(monkeypatch)
    again = analyze_run(run, options=OPTIONS, progress=False)
    assert len(calls) == 1
    after = {p.name: p.stat().st_mtime_ns for p in (run / "analysis").glob("*.nc")}
    assert set(after) == set(before)  # the same key, so the same name again
    assert {n: t for n, t in after.items() if n != cached[1].name} == {
        n: t for n, t in before.items() if n != cached[1].name
    }
    for var in _numeric(analysed):
        np.testing.assert_allclose(again[var].values, analysed[var].values, err_msg=var)


def test_other_options_or_another_probe_are_not_answered_from_the_cache(
    runs, analysed, tmp_path, monkeypatch
):
    run = _copy_run(runs["regular"], tmp_path / "run", cache=True)
    for path in checkpoints_of(run)[1:]:
        path.unlink()  # one checkpoint is enough here
    calls = _count_measures(monkeypatch)
    analyze_run(run, options=OPTIONS, progress=False)
    assert calls == []
    probe = make_probe("digits", OPTIONS.probe_size)
    flipped = Probe(probe.images.flip(-1), probe.labels, None, probe.dataset)  # same size and name
    analyze_run(run, options=OPTIONS, probe=flipped, progress=False)
    assert len(calls) == 1
    analyze_run(run, options=OPTIONS, fractions=3, progress=False)
    assert len(calls) == 2


def test_runs_merge_along_regime_and_seed(runs, analysed):
    merged = analyze_runs([runs[r] for r in REGIMES], options=OPTIONS, progress=False)
    assert list(merged["regime"].values) == sorted(REGIMES)
    assert list(merged["seed"].values) == [0]
    assert merged["effective_rank"].dims == ("regime", "seed", "epoch", "layer")
    assert "top_eigvecs" not in merged and "probe_saliency" not in merged
    regular = merged.sel(regime="regular", seed=0)
    for var in _numeric(regular):
        np.testing.assert_allclose(regular[var].values, analysed[var].values, err_msg=var)
    assert not np.allclose(
        merged["morf_curve"].sel(regime="saliencydecor").values, regular["morf_curve"].values
    )
    # Variables keep their NaN reasons through the merge.
    assert "first epoch" in merged["swap_rate"].attrs["nan_reason"]
    assert "initial model" in merged["test_acc"].attrs["nan_reason"]
    assert set(json.loads(merged.attrs["configs"])) == {"regular-s0", "saliencydecor-s0"}
    with pytest.raises(ValueError, match="share a"):
        analyze_runs([runs["regular"], runs["regular"]], options=OPTIONS, progress=False)


def test_open_results_is_lazy_and_equals_the_eager_merge(runs, tmp_path):
    eager = analyze_runs([runs[r] for r in REGIMES], options=OPTIONS, progress=False)
    paths = [
        save_results(analyze_runs([runs[r]], options=OPTIONS, progress=False), tmp_path / f"{r}.nc")
        for r in REGIMES
    ]
    with open_results(paths) as lazy:
        assert list(lazy["regime"].values) == sorted(REGIMES)
        for var in _numeric(eager):
            assert lazy[var].chunks is not None, f"{var} is not dask-backed"
            np.testing.assert_allclose(
                lazy[var].transpose(*eager[var].dims).values, eager[var].values, err_msg=var
            )


def test_a_directory_without_checkpoints_says_what_it_expected(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="no checkpoints under .*written by `geomxai train`"
    ):
        analyze_run(tmp_path, options=OPTIONS, progress=False)


def test_a_model_without_a_feature_layer_asks_for_layers():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(ValueError, match=r"no feature layer named 'body'.*layers=\[\.\.\.\]"):
        _analyze.measure(model, make_probe("digits", 8), OPTIONS)


@pytest.mark.slow
def test_dask_workers_give_the_serial_numbers(runs, analysed, tmp_path):
    run = _copy_run(runs["regular"], tmp_path / "run", cache=False)
    start = time.perf_counter()
    parallel = analyze_run(run, options=OPTIONS, workers=2, progress=False)
    assert time.perf_counter() - start < 60
    assert len(list((run / "analysis").glob("*.nc"))) == 3  # the workers wrote the cache
    assert set(parallel.data_vars) == set(analysed.data_vars)
    for var in _numeric(analysed):
        np.testing.assert_allclose(parallel[var].values, analysed[var].values, err_msg=var)


@pytest.mark.slow
def test_runs_share_one_dask_cluster_and_give_the_serial_numbers(runs, tmp_path, monkeypatch):
    from geomxai.study import _parallel

    copies = [_copy_run(r, tmp_path / r.name, cache=False) for r in runs.values()]
    started = []
    real = _parallel.local_cluster

    def counting(workers):
        started.append(workers)
        return real(workers)

    monkeypatch.setattr(_parallel, "local_cluster", counting)
    parallel = analyze_runs(copies, options=OPTIONS, workers=2, progress=False)
    assert started == [2]  # one cluster for both runs, not one per run
    serial = analyze_runs(list(runs.values()), options=OPTIONS, progress=False)
    for var in _numeric(serial):
        np.testing.assert_allclose(parallel[var].values, serial[var].values, err_msg=var)


def test_a_probe_owns_its_images_not_a_view_of_the_test_set():
    probe = make_probe("digits", 8)
    for t in (probe.images, probe.labels):
        # A view would pickle (and be sent to every dask worker) with the whole test set.
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


def test_analyze_on_the_command_line_writes_linked_stamped_results(runs, tmp_path, capsys):
    from geomxai.cli import main

    out = tmp_path / "results.nc"
    dirs = [str(_copy_run(r, tmp_path / r.name, cache=True)) for r in runs.values()]
    assert main(["analyze", *dirs, "--probe-size", "32", "--out", str(out)]) == 0
    assert f"results: {out}" in capsys.readouterr().out
    with xr.open_dataset(out) as ds:
        assert {"created", "hardware", "commit"} <= set(ds.attrs)
        assert json.loads(ds.attrs["runs"]) == dirs
        # 2 regimes x 2 trained epochs: the link is computed and saved with the results.
        cell = ds["n_points"].sel(geometry="effective_rank", fidelity="morf_auc")
        assert int(cell) == 4 and ds["spearman"].attrs["min_epoch"] == 1


def test_a_checkpoint_refuses_separate_weights(runs):
    from geomxai.study import resolve_model

    checkpoint = checkpoints_of(runs["regular"])[-1]
    with pytest.raises(ValueError, match="carries its own weights; --weights goes with"):
        resolve_model(str(checkpoint), weights="other.pt")
