"""Analysing runs: one Dataset over checkpoints, NaN only with a reason, cache, merge, dask, lazy files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import xarray as xr
from _internals import merge_reasons as _merge_reasons
from _internals import study_cache as _cache

from geomxai.study import (
    AnalysisOptions,
    Probe,
    add_dynamics,
    analyze_run,
    analyze_runs,
    checkpoints_of,
    make_probe,
    measure,
    open_results,
    save_results,
)

REGIMES = ("regular", "saliencydecor")
# 64 probe images: the accuracy needs 50 (geomxai.schema.MIN_ACCURACY_SAMPLES), and the tiny
# cnn2's 32 units want 2 samples each.
OPTIONS = AnalysisOptions(probe_size=64, fractions=4, top_k=4, n_examples=2)


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
    real = _cache.measure

    def counting(model, probe, options):
        calls.append(1)
        return real(model, probe, options)

    monkeypatch.setattr(_cache, "measure", counting)
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


def test_a_subset_of_epochs_is_the_full_analysis_at_those_epochs(runs, analysed):
    part = analyze_run(runs["regular"], options=OPTIONS, progress=False, epochs=[2, 1])
    assert list(part["epoch"].values) == [1, 2]
    for var in ("effective_rank", "morf_auc", "probe_acc", "test_acc"):
        xr.testing.assert_allclose(part[var], analysed[var].sel(epoch=[1, 2]))
    assert np.isnan(part["swap_rate"].sel(epoch=1)).all()  # no analysed checkpoint before it
    with pytest.raises(ValueError, match=r"it has \[0, 1, 2\]"):
        analyze_run(runs["regular"], options=OPTIONS, progress=False, epochs=[3])


def test_every_value_is_finite_or_says_why_not(analysed):
    for var in _numeric(analysed):
        values = analysed[var].values
        if np.isfinite(values).all():
            continue
        assert analysed[var].attrs.get("nan_reason"), f"{var} has NaN and no reason"
    # One place for a reason: on its variable, never in the Dataset's attrs.
    assert not [k for k in analysed.attrs if k.startswith("nan_reason")]
    # The metrics that need a previous checkpoint are NaN exactly at the first one.
    for var in ("swap_rate", "saliency_stability", "train_acc", "loss_ce"):
        first, rest = analysed[var].isel(epoch=0), analysed[var].isel(epoch=slice(1, None))
        assert bool(first.isnull().all()) and bool(rest.notnull().all()), var
    for var in ("effective_rank", "entanglement", "morf_auc", "lerf_auc", "gini", "probe_acc"):
        assert np.isfinite(analysed[var].values).all(), var


def test_a_second_analysis_reads_the_cache(runs, analysed, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("measure ran although every checkpoint is cached")

    monkeypatch.setattr(_cache, "measure", fail)
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
    assert merged.attrs["saliency_method"] == OPTIONS.saliency_method
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
        measure(model, make_probe("digits", 8), OPTIONS)


@pytest.mark.slow
def test_dask_workers_give_the_serial_numbers(runs, analysed, tmp_path):
    run = _copy_run(runs["regular"], tmp_path / "run", cache=False)
    # Correctness only: speed is measured in benchmarks/, not asserted under a loaded machine.
    parallel = analyze_run(run, options=OPTIONS, workers=2, progress=False)
    assert len(list((run / "analysis").glob("*.nc"))) == 3  # the workers wrote the cache
    assert set(parallel.data_vars) == set(analysed.data_vars)
    for var in _numeric(analysed):
        np.testing.assert_allclose(parallel[var].values, analysed[var].values, err_msg=var)


@pytest.mark.slow
def test_runs_share_one_dask_cluster_and_give_the_serial_numbers(runs, tmp_path, monkeypatch):
    from _internals import study_parallel as _parallel

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
    assert main(["analyze", *dirs, "--probe-size", "64", "--out", str(out)]) == 0
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


# ---- the schema's blocks, the feature layer, the saliency method, the dynamics


def _regular_model(runs):
    from geomxai import load_checkpoint

    model, _ = load_checkpoint(checkpoints_of(runs["regular"])[-1])
    return model


class _Renamed(torch.nn.Module):
    """A geomxai model's body and head under other names; its feature layer is ``encoder``."""

    feature_layer = "encoder"

    def __init__(self, model):
        super().__init__()
        self.encoder, self.head = model.body, model.head

    def forward(self, x):
        return self.head(self.encoder(x))


def test_measure_is_the_schema_blocks_with_their_dims_and_attrs(runs):
    from geomxai import schema

    model = _regular_model(runs)
    probe = make_probe("digits", OPTIONS.probe_size)
    ds = measure(model, probe, OPTIONS)
    blocks = ("geometry", "accuracy", "masking", "faithfulness_probability", "saliency")
    blocks += ("entanglement", "examples")
    expected = [n for b in blocks for n in schema.names(b) if schema.variable(n).per_checkpoint]
    assert sorted(ds.data_vars) == sorted(expected)
    for name, da in ds.data_vars.items():
        v = schema.variable(name)
        assert da.dims == v.dims, name
        assert da.attrs["long_name"] == v.label and da.attrs["block"] == v.block, name
        assert da.attrs.get("direction") == v.direction, name
    assert ds.attrs["saliency_method"] == OPTIONS.saliency_method
    # (the degeneracy warnings, issue 23, sit beside the analysis' own attrs)
    assert set(ds.attrs) <= {"saliency_method", "reduction", "entanglement_layer", "warnings"}
    # Ground-truth masks add the localisation block, and only it.
    masked = Probe(probe.images, probe.labels, torch.rand(len(probe.labels), 8, 8) > 0.5)
    extra = set(measure(model, masked, OPTIONS).data_vars) - set(ds.data_vars)
    assert extra == set(schema.names("localisation"))


def test_a_run_has_every_variable_over_epoch_as_the_schema_declares(analysed):
    from geomxai import schema

    for name, da in analysed.data_vars.items():
        # Whole-run summaries (issue 23) have no epoch dim; everything else is per checkpoint.
        over = ("epoch",) if schema.variable(name).per_checkpoint else ()
        assert da.dims == (*over, *schema.variable(name).dims), name
        assert da.attrs["block"] == schema.variable(name).block, name
    blocks = {schema.variable(n).block for n in analysed.data_vars}
    assert blocks >= {"dynamics", "run_dynamics", "training"}
    assert analysed.attrs["saliency_method"] == OPTIONS.saliency_method


def test_entanglement_is_taken_at_the_models_own_feature_layer(runs):
    """A model whose feature layer is not called ``body`` gets entanglement there, not NaN."""
    from geomxai.attribution import gradient_entanglement

    model = _regular_model(runs)
    renamed = _Renamed(model).eval()
    probe = make_probe("digits", OPTIONS.probe_size)
    ours = measure(renamed, probe, OPTIONS)
    theirs = measure(model, probe, OPTIONS)
    assert list(ours["layer"].values) == ["encoder"]  # geometry's default layer
    value = float(ours["entanglement"])
    assert np.isfinite(value) and "nan_reason" not in ours["entanglement"].attrs
    reference = gradient_entanglement(renamed, probe.images, probe.labels, layer="encoder")
    assert value == pytest.approx(reference, rel=1e-12)
    # The regular model's whitening is the identity: the renamed one is the same function.
    for var in ("entanglement", "effective_rank", "morf_auc", "gini", "probe_acc"):
        np.testing.assert_allclose(ours[var].values, theirs[var].values, rtol=1e-10, err_msg=var)


def test_without_a_feature_layer_entanglement_is_nan_and_says_why_on_the_variable():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)
    )
    options = AnalysisOptions(probe_size=16, fractions=3, top_k=4, n_examples=2, layers=("2",))
    ds = measure(model, make_probe("digits", 16), options)
    assert list(ds["layer"].values) == ["2"]
    assert np.isfinite(ds["effective_rank"].values).all()
    assert np.isnan(float(ds["entanglement"]))
    reason = ds["entanglement"].attrs["nan_reason"]
    assert reason.startswith("the model has no feature layer named 'body'")
    assert "entanglement_layer=" in reason and "--entanglement-layer" in reason
    assert not [k for k in ds.attrs if k.startswith("nan_reason")]


def test_a_layer_without_live_units_says_why_on_its_variables():
    torch.manual_seed(0)
    dead = torch.nn.Linear(16, 4)
    torch.nn.init.zeros_(dead.weight)
    torch.nn.init.zeros_(dead.bias)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), dead, torch.nn.Linear(4, 10)
    )
    options = AnalysisOptions(probe_size=16, fractions=3, top_k=4, n_examples=2, layers=("2", "3"))
    ds = measure(model, make_probe("digits", 16), options)
    assert list(ds["layer"].values) == ["2", "3"]
    # The live-unit counts are defined on both layers (layer '3' is all dead).
    assert ds["n_live_units"].sel(layer="3") == 0 and ds["n_dead_units"].sel(layer="3") == 4
    assert ds["n_live_units"].sel(layer="2") + ds["n_dead_units"].sel(layer="2") == 16
    assert "layer '3' has 0 live unit(s)" in ds["effective_rank"].attrs["warnings"]
    for var in ("mean_abs_corr", "corr_offdiag_fro", "spectrum_alpha", "spectrum_r2"):
        assert np.isfinite(float(ds[var].sel(layer="2"))) and np.isnan(
            float(ds[var].sel(layer="3"))
        )
        reason = ds[var].attrs["nan_reason"]
        assert reason.startswith("layer '3': ") and "at least 2 live units" in reason, var
    assert np.isnan(ds["corr_spectrum"].sel(layer="3").values).all()
    assert "the whole spectrum where layer '3'" in ds["corr_spectrum"].attrs["nan_reason"]
    assert "nan_reason" not in ds["effective_rank"].attrs  # finite on both layers
    # The narrower layer is padded: 4 units and 4 axes of 16.
    assert np.isfinite(ds["top_eigvecs"].sel(layer="3").values).sum() == 16


def test_entanglement_switched_off_says_so(runs):
    options = AnalysisOptions(probe_size=16, fractions=3, top_k=4, n_examples=2, entanglement=False)
    ds = measure(_regular_model(runs), make_probe("digits", 16), options)
    assert np.isnan(float(ds["entanglement"]))
    assert ds["entanglement"].attrs["nan_reason"] == "the analysis ran with entanglement=False"


def test_reasons_that_differ_between_parts_are_each_kept_with_their_label():
    parts = [
        xr.Dataset({"a": xr.DataArray(np.nan, attrs={"nan_reason": "x"}), "b": 1.0}),
        xr.Dataset({"a": xr.DataArray(np.nan, attrs={"nan_reason": "y"}), "b": 2.0}),
        xr.Dataset({"a": 0.5, "b": xr.DataArray(np.nan, attrs={"nan_reason": "z"})}),
    ]
    merged = xr.concat(parts, dim="epoch", combine_attrs="drop_conflicts")
    _merge_reasons(merged, [(f"epoch {e}", p) for e, p in enumerate(parts)])
    assert merged["a"].attrs["nan_reason"] == "epoch 0: x; epoch 1: y"
    assert merged["b"].attrs["nan_reason"] == "z"  # one message, kept as it is


def _padded_run(rng, widths, top_k, epochs=4, n=40):
    """A run-shaped Dataset of layers of different widths, eigenpairs padded as measure pads them."""
    from geomxai.dynamics import top_eigvecs

    kmax = max(min(top_k, w) for w in widths)
    dmax = max(widths)
    vecs = np.full((epochs, len(widths), dmax, kmax), np.nan)
    vals = np.full((epochs, len(widths), kmax), np.nan)
    unpadded = {}
    for j, w in enumerate(widths):
        base = rng.normal(size=(n, w))
        for t in range(epochs):
            scale = np.linspace(3.0, 1.0, w) * rng.uniform(0.8, 1.2, w)
            value, vec = top_eigvecs(base * scale, min(top_k, w))
            vals[t, j, : value.size] = value.values
            vecs[t, j, :w, : value.size] = vec.values
            unpadded[t, j] = (value.values, vec.values)
    ds = xr.Dataset(
        {
            "top_eigvecs": (("epoch", "layer", "unit", "axis"), vecs),
            "top_eigvals": (("epoch", "layer", "axis"), vals),
            "probe_saliency": (
                ("epoch", "sample", "height", "width"),
                rng.uniform(size=(epochs, 5, 4, 4)),
            ),
        },
        coords={"epoch": np.arange(epochs), "layer": [f"l{w}" for w in widths]},
    )
    return ds, unpadded


def test_dynamics_equal_axis_swaps_of_each_pair_on_padded_layers(rng):
    """The slow reference: axis_swaps on every consecutive pair of each layer's unpadded axes."""
    from geomxai.dynamics import axis_swaps, saliency_stability

    widths = (7, 3)  # the second layer is narrower than the first and than top_k: padded both ways
    ds, unpadded = _padded_run(rng, widths, top_k=4)
    out = add_dynamics(ds.copy())
    for j in range(len(widths)):
        for t in range(1, ds.sizes["epoch"]):
            (la, va), (lb, vb) = unpadded[t - 1, j], unpadded[t, j]
            pair = axis_swaps(va, vb, eigvals_a=la, eigvals_b=lb)
            for name in (
                "swap_rate",
                "matched_overlap",
                "subspace_overlap",
                "degenerate_swap_rate",
            ):
                got = float(out[name].isel(epoch=t, layer=j))
                assert got == pytest.approx(float(pair[name]), abs=1e-12), (name, t, j)
    for name in ("swap_rate", "saliency_stability"):
        assert np.isnan(out[name].isel(epoch=0).values).all()
        assert out[name].attrs["nan_reason"] == "no previous checkpoint at the first epoch"
    maps = ds["probe_saliency"].values
    expected = [np.nanmean(saliency_stability(maps[t - 1], maps[t])) for t in range(1, 4)]
    np.testing.assert_allclose(out["saliency_stability"].values[1:], expected, rtol=1e-12)


# ---- representation similarity over checkpoints, probe honesty, options (issue 16)


def test_similarity_to_the_previous_and_final_checkpoint_against_a_slow_reference(runs, analysed):
    """CKA and Procrustes of each checkpoint's probe features, recomputed from the checkpoints."""
    from geomxai import load_checkpoint
    from geomxai.collect import collect_features
    from geomxai.geometry import linear_cka, procrustes_distance

    probe = make_probe("digits", OPTIONS.probe_size)
    feats = []
    for path in checkpoints_of(runs["regular"]):
        model, _ = load_checkpoint(path)
        feats.append(collect_features(model, probe.images, ["body"])["body"].values)
    last = feats[-1]
    for t, h in enumerate(feats):
        at = {"epoch": int(analysed.epoch[t]), "layer": "body"}
        # float32 features, as the analysis keeps them, give the same numbers to ~1e-6.
        assert float(analysed["cka_final"].sel(at)) == pytest.approx(linear_cka(h, last), abs=1e-5)
        assert float(analysed["procrustes_final"].sel(at)) == pytest.approx(
            procrustes_distance(h, last), abs=1e-4
        )
        if t == 0:
            for var in ("cka_previous", "procrustes_previous"):
                assert np.isnan(float(analysed[var].sel(at)))
                assert "no previous checkpoint" in analysed[var].attrs["nan_reason"]
            continue
        prev = feats[t - 1]
        assert float(analysed["cka_previous"].sel(at)) == pytest.approx(
            linear_cka(prev, h), abs=1e-5
        )
        assert float(analysed["procrustes_previous"].sel(at)) == pytest.approx(
            procrustes_distance(prev, h), abs=1e-4
        )
    final = analysed.isel(epoch=-1).sel(layer="body")
    assert float(final["cka_final"]) == pytest.approx(1.0, abs=1e-12)
    assert float(final["procrustes_final"]) == pytest.approx(0.0, abs=1e-6)
    # The features serve the similarity and are not kept in the results.
    assert "probe_features" not in analysed
    assert analysed["cka_final"].attrs["block"] == "dynamics"


def test_the_probe_size_is_recorded(analysed):
    assert analysed["probe_size"].dims == ("epoch",)
    assert analysed["probe_size"].values.tolist() == [OPTIONS.probe_size] * 3
    assert analysed["n_units"].sel(layer="body").values.tolist() == [32.0] * 3


def test_a_small_probe_warns_once_per_run_and_leaves_nan_with_reasons(runs, tmp_path):
    from geomxai.study import ProbeSizeWarning

    run = _copy_run(runs["regular"], tmp_path / "run", cache=False)
    probe = make_probe("digits", 8)
    with pytest.warns(ProbeSizeWarning) as caught:
        ds = analyze_run(run, options=OPTIONS, probe=probe, progress=False, cache=False)
    messages = [str(w.message) for w in caught if w.category is ProbeSizeWarning]
    assert len(messages) == len(set(messages)) == 2  # geometry and accuracy, once for 3 epochs
    for var in ("effective_rank", "probe_acc", "morf_auc", "swap_rate", "cka_final"):
        assert np.isnan(ds[var].values).all(), var
        assert "a probe of 8 samples is below" in ds[var].attrs["nan_reason"], var
    assert ds["probe_size"].values.tolist() == [8, 8, 8]
    # Per-map metrics need no minimum.
    assert np.isfinite(ds["gini"].values).all()


def test_a_probe_below_two_samples_per_unit_warns_and_keeps_the_values(runs, tmp_path):
    from geomxai.study import ProbeSizeWarning

    probe = make_probe("digits", 50)
    with pytest.warns(ProbeSizeWarning, match=r"below 2 x 32 = 64 for layer 'body'"):
        ds = measure(_regular_model(runs), probe, OPTIONS)
    assert np.isfinite(ds["effective_rank"].values).all()
    assert np.isfinite(float(ds["probe_acc"]))


def test_measure_restores_the_callers_train_and_eval_flags(runs):
    model = _regular_model(runs).train()
    model.body.eval()
    measure(model, make_probe("digits", 16), OPTIONS)
    assert model.training and not model.body.training and model.head.training


def test_saliency_method_takes_a_captum_instance_and_a_callable(runs):
    from captum.attr import IntegratedGradients

    from geomxai.attribution import saliency

    model = _regular_model(runs)
    probe = make_probe("digits", 16)
    options = AnalysisOptions(probe_size=16, fractions=3, top_k=4, n_examples=2)
    by_name = measure(model, probe, replace_method(options, "integrated_gradients"))
    captum = measure(model, probe, replace_method(options, IntegratedGradients(model)))
    assert captum.attrs["saliency_method"] == "IntegratedGradients"
    assert np.isfinite(float(captum["gini"]))

    def my_gradient(model, x, target):
        return saliency(model, x, target, method="gradient")

    own = measure(model, probe, replace_method(options, my_gradient))
    assert own.attrs["saliency_method"] == "callable:my_gradient"
    reference = measure(model, probe, replace_method(options, "gradient"))
    np.testing.assert_allclose(own["saliency_maps"].values, reference["saliency_maps"].values)
    assert by_name.attrs["saliency_method"] == "integrated_gradients"
    # The cache key names the method readably, and stays JSON.
    key = json.loads(replace_method(options, IntegratedGradients(model)).key())
    assert key["saliency_method"] == "IntegratedGradients"


def replace_method(options, method):
    from dataclasses import replace

    return replace(options, saliency_method=method)


@pytest.mark.parametrize(
    ("method", "error", "match"),
    [
        ("smoothgard", ValueError, "did you mean 'smoothgrad'"),
        (42, TypeError, "saliency_method must be a method name"),
        (torch.nn.Linear(2, 2), TypeError, "saliency_method must be a method name"),
    ],
)
def test_a_bad_saliency_method_is_refused_when_the_options_are_made(method, error, match):
    with pytest.raises(error, match=match):
        AnalysisOptions(saliency_method=method)


def test_the_cache_key_holds_no_deep_copy_of_a_captum_method(runs):
    from captum.attr import Saliency

    model = _regular_model(runs)
    options = AnalysisOptions(saliency_method=Saliency(model))
    assert options.as_dict()["saliency_method"].forward_func is model  # the same, not a copy
    assert json.loads(options.key())["saliency_method"] == "Saliency"


def test_an_unlabelled_probe_measures_the_geometry_only(runs):
    model = _regular_model(runs)
    probe = make_probe("digits", 64)
    ds = measure(model, Probe(probe.images, None), OPTIONS)
    assert np.isfinite(ds["effective_rank"].values).all()
    for var in ("probe_acc", "morf_auc", "morf_curve", "gini", "topq_contrast", "entanglement"):
        assert np.isnan(ds[var].values).all(), var
        assert "the probe has no labels" in ds[var].attrs["nan_reason"], var
    assert "saliency_maps" not in ds and "probe_saliency" not in ds


# ---- probabilistic faithfulness, attribution factories and saliency_kwargs (issue 16)


def test_deletion_and_insertion_are_the_reference_curves_of_the_same_saliency(runs):
    """The faithfulness_probability block against deletion_curve/insertion_curve called by hand
    on the saliency maps the other fidelity metrics use."""
    from geomxai.attribution import deletion_curve, insertion_curve, saliency

    model = _regular_model(runs)
    probe = make_probe("digits", OPTIONS.probe_size)
    ds = measure(model, probe, OPTIONS)
    sal = saliency(
        model,
        probe.images,
        probe.labels,
        method=OPTIONS.saliency_method,
        batch_size=OPTIONS.batch_size,
    )
    np.testing.assert_allclose(
        ds["saliency_maps"].values, sal[: OPTIONS.n_examples].numpy(), rtol=1e-6
    )
    fractions = np.linspace(0, 1, OPTIONS.fractions)
    for mode, curve_of in (("deletion", deletion_curve), ("insertion", insertion_curve)):
        ref = curve_of(model, probe.images, probe.labels, sal, fractions=fractions, seed=0)
        np.testing.assert_allclose(ds[f"{mode}_curve"].values, ref["probability"].mean("sample"))
        np.testing.assert_allclose(ds[f"{mode}_auc_per_sample"].values, ref["auc"].values)
        np.testing.assert_allclose(float(ds[f"{mode}_auc"]), float(ref["auc"].mean()))
        assert ds[f"{mode}_curve"].dims == ("fraction",)
        assert ds[f"{mode}_auc_per_sample"].dims == ("sample",)
    assert ds["deletion_auc"].attrs["direction"] == "lower"
    assert ds["insertion_auc"].attrs["direction"] == "higher"
    # Both ends in closed form: nothing deleted (everything inserted) is the probe as it is;
    # everything deleted (zero fill) is the all-zero input.
    with torch.no_grad():
        as_is = model(probe.images).double().softmax(1)
        zeros = model(torch.zeros_like(probe.images)).double().softmax(1)
    target = probe.labels[:, None]
    as_is, zeros = as_is.gather(1, target).mean(), zeros.gather(1, target).mean()
    assert ds["deletion_curve"].values[0] == pytest.approx(float(as_is), rel=1e-6)
    assert ds["insertion_curve"].values[-1] == pytest.approx(float(as_is), rel=1e-6)
    assert ds["deletion_curve"].values[-1] == pytest.approx(float(zeros), rel=1e-6)


def test_a_run_keeps_the_per_sample_areas_and_the_study_results_do_not(runs, analysed):
    from geomxai import schema

    assert analysed["deletion_auc_per_sample"].dims == ("epoch", "sample")
    assert analysed.sizes["sample"] == OPTIONS.probe_size
    merged = analyze_runs([runs["regular"]], options=OPTIONS, progress=False)
    assert "deletion_auc_per_sample" not in merged and "insertion_auc_per_sample" not in merged
    assert merged["deletion_auc"].dims == ("regime", "seed", "epoch")
    # The link picks the two areas up as fidelity metrics, with their directions.
    assert {"deletion_auc", "insertion_auc"} <= set(schema.fidelity_metrics())


def test_an_unlabelled_probe_leaves_the_probability_curves_nan_saying_why(runs):
    model = _regular_model(runs)
    probe = make_probe("digits", 64)
    ds = measure(model, Probe(probe.images, None), OPTIONS)
    for var in ("deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve"):
        assert np.isnan(ds[var].values).all(), var
        assert "the probe has no labels" in ds[var].attrs["nan_reason"], var


def _grad_cam(model):
    from captum.attr import LayerGradCam

    return LayerGradCam(model, model.body[0])


def test_a_factory_builds_one_captum_instance_per_checkpoint(runs, tmp_path):
    from captum.attr import InputXGradient

    from geomxai.attribution import saliency

    options = replace_method(OPTIONS, InputXGradient)  # the class: a factory of one argument
    ds = analyze_run(runs["regular"], options=options, progress=False, cache=False)
    assert ds.attrs["saliency_method"] == "InputXGradient"  # the method used, not the factory
    from geomxai import load_checkpoint

    first, _ = load_checkpoint(checkpoints_of(runs["regular"])[0])
    probe = make_probe("digits", OPTIONS.probe_size)
    reference = saliency(first, probe.images, probe.labels, method="input_x_gradient")
    np.testing.assert_allclose(
        ds["saliency_maps"].isel(epoch=0).values,
        reference[: OPTIONS.n_examples].numpy(),
        rtol=1e-5,
        atol=1e-7,
    )
    # A function of the model alone is a factory too; a layer method is named by its layer.
    cam = analyze_run(
        runs["regular"], options=replace_method(OPTIONS, _grad_cam), progress=False, cache=False
    )
    assert cam.attrs["saliency_method"] == "LayerGradCam(body.0)"
    assert np.isfinite(cam["deletion_auc"].values).all()


def test_a_captum_instance_is_refused_for_a_run_with_the_factory_named(runs):
    from captum.attr import IntegratedGradients

    options = replace_method(OPTIONS, IntegratedGradients(_regular_model(runs)))
    with pytest.raises(ValueError, match=r"saliency_method=IntegratedGradients \(the class\)"):
        analyze_run(runs["regular"], options=options, progress=False, cache=False)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda model: model, TypeError, "returned Sequential"),
        ("LayerGradCam", TypeError, "needs more than the model"),
    ],
)
def test_a_factory_that_cannot_build_says_what_to_give(factory, error, match):
    import captum.attr

    if isinstance(factory, str):
        factory = getattr(captum.attr, factory)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    options = AnalysisOptions(probe_size=4, fractions=2, layers=("1",), saliency_method=factory)
    probe = Probe(torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(error, match=match):
        measure(model, probe, options)


def test_factories_and_callables_are_told_apart_by_their_signature():
    from captum.attr import Saliency

    from geomxai.attribution import check_saliency_method

    def _check_saliency_method(method):  # as AnalysisOptions checks its saliency_method
        return check_saliency_method(method, argument="saliency_method", factories=True)

    def attribute(model, x, target, extra=1):
        return x

    def make(model, layer=None):
        return Saliency(model)

    assert _check_saliency_method(Saliency) == _check_saliency_method(make) == "factory"
    assert _check_saliency_method(attribute) == _check_saliency_method(print) == "callable"
    assert _check_saliency_method(lambda *args: args[1]) == "callable"
    with pytest.raises(TypeError, match="saliency_method must be a method name"):
        AnalysisOptions(saliency_method=torch.nn.Linear)  # a class, but no Attribution


@pytest.mark.parametrize(
    "method",
    ["smoothgard", 42, None, torch.nn.Linear(2, 2), torch.nn.Linear, object()],
    ids=["unknown-name", "int", "none", "module", "other-class", "object"],
)
def test_the_study_and_saliency_refuse_the_same_methods(method):
    """One check (geomxai.attribution.check_saliency_method) behind both: the same error, each
    naming its own parameter, about the same input."""
    from geomxai.attribution import saliency

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with pytest.raises((TypeError, ValueError)) as direct:
        saliency(model, torch.rand(2, 1, 2, 2), 0, method=method)
    with pytest.raises((TypeError, ValueError)) as study:
        AnalysisOptions(saliency_method=method)
    assert study.type is direct.type
    assert str(direct.value).startswith("method must be")
    assert str(study.value).startswith("saliency_method must be")
    got = str(direct.value).split("; got ")[-1]
    assert str(study.value).split("; got ")[-1] == got.replace("method=", "saliency_method=")


def test_only_the_study_takes_a_captum_class_as_a_factory():
    from captum.attr import IntegratedGradients

    from geomxai.attribution import saliency

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert (
        AnalysisOptions(saliency_method=IntegratedGradients).saliency_method is IntegratedGradients
    )
    with pytest.raises(TypeError, match=r"not the class: pass IntegratedGradients\(model\)"):
        saliency(model, torch.rand(2, 1, 2, 2), 0, method=IntegratedGradients)


def test_saliency_kwargs_reach_the_method(runs):
    from captum.attr import Occlusion

    from geomxai.attribution import saliency

    model = _regular_model(runs)
    probe = make_probe("digits", 16)
    options = AnalysisOptions(probe_size=16, fractions=3, top_k=4, n_examples=2)
    smooth = replace(options, saliency_method="smoothgrad", saliency_kwargs={"n_samples": 3})
    ds = measure(model, probe, smooth)
    reference = saliency(model, probe.images, probe.labels, method="smoothgrad", n_samples=3)
    np.testing.assert_allclose(ds["saliency_maps"].values, reference[:2].numpy(), rtol=1e-5)
    window = {"sliding_window_shapes": (1, 3, 3), "strides": (1, 2, 2)}
    occluded = measure(
        model, probe, replace(options, saliency_method=Occlusion, saliency_kwargs=window)
    )
    reference = saliency(
        model, probe.images, probe.labels, method=Occlusion(model), attribute_kwargs=window
    )
    np.testing.assert_allclose(occluded["saliency_maps"].values, reference[:2].numpy())
    with pytest.raises(ValueError, match="must be among"):
        replace(options, saliency_method="gradient", saliency_kwargs={"sliding_window_shapes": 3})
    with pytest.raises(TypeError, match="mapping"):
        replace(options, saliency_kwargs=[1, 2])


def replace(options, **changes):
    from dataclasses import replace as dataclass_replace

    return dataclass_replace(options, **changes)


def _keyed(method, **kwargs) -> dict:
    return json.loads(AnalysisOptions(saliency_method=method, **kwargs).key())


def test_the_key_is_json_and_tells_same_named_callables_apart():
    def one():
        def attribute(model, x, target):
            return x

        return attribute

    def other():
        def attribute(model, x, target):
            return -x

        return attribute

    a, b = _keyed(one()), _keyed(other())
    assert a["saliency_method"] == b["saliency_method"] == "callable:attribute"
    assert a["saliency_callable"] != b["saliency_callable"]
    assert a["saliency_callable"].endswith("one.<locals>.attribute")
    assert _keyed(one()) == a  # stable: the same definition gives the same key
    assert "saliency_callable" not in _keyed("gradient")
    baseline = torch.zeros(1, 8, 8)
    keyed = _keyed("integrated_gradients", saliency_kwargs={"baseline": baseline, "n_steps": 8})
    assert keyed["saliency_kwargs"]["n_steps"] == 8
    assert keyed["saliency_kwargs"]["baseline"]["shape"] == [1, 8, 8]
    other_baseline = {"baseline": baseline + 1, "n_steps": 8}
    assert _keyed("integrated_gradients", saliency_kwargs=other_baseline) != keyed
    # Given as a mapping or as the pairs it is stored as: the same options.
    pairs = AnalysisOptions(saliency_kwargs={"n_samples": 4, "noise_level": 0.1})
    assert pairs.saliency_kwargs == (("n_samples", 4), ("noise_level", 0.1))
    assert AnalysisOptions(saliency_kwargs=pairs.saliency_kwargs) == pairs


def test_a_device_runs_the_serial_analysis_there(runs, analysed, tmp_path):
    run = _copy_run(runs["regular"], tmp_path / "run", cache=False)
    on_cpu = analyze_run(run, options=OPTIONS, progress=False, cache=False, device="cpu")
    for var in ("effective_rank", "morf_auc", "cka_final"):
        np.testing.assert_allclose(on_cpu[var].values, analysed[var].values, err_msg=var)
    with pytest.raises(ValueError, match="device goes with the serial analysis"):
        analyze_run(run, options=OPTIONS, progress=False, device="cpu", workers=2)
