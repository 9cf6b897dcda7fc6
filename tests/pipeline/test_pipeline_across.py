"""The question across settings (issue 25): from two settings' results files with planted
verdicts, the across table, the geometry table and the plain-words summary say what each
setting said, and the report shows it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from geomxai.cli import main
from geomxai.pipeline import across_status, load_across, run_across

DESIGN = """
[study]
name = "{name}"
title = "a planted setting"
seeds = [0]
out = "{out}"

[train]
dataset = "digits"
model = "cnn2"
epochs = 1

[[cells]]
name = "regular"
regime = "regular"

[[cells]]
name = "saliencydecor"
regime = "saliencydecor"
"""

METRICS = ["test_acc", "morf_auc__abs_gradient__zero", "morf_auc__integrated_gradients__zero"]
GEOMETRY = ["mean_abs_corr", "head_effective_rank"]
FIDELITY = ["morf_auc__abs_gradient__zero", "insertion_auc__abs_gradient"]


def _results(
    acc_verdict: str, within_q: float, head_change: float, *, pooled_q=0.5, within=True
) -> xr.Dataset:
    """A setting's results: SaliencyDecor against regular (every metric given ``acc_verdict``),
    the pooled and within-cell link tables (the head metric ~ insertion AUC at ``within_q``
    within cells; every pooled q ``pooled_q``), and the control (the head metric's relative
    change ``head_change``: 0 invariant, NaN undetermined, else moved)."""
    est = {"better": 0.02, "worse": -0.02, "not distinguishable": 0.001}[acc_verdict]
    q = {"better": 0.01, "worse": 0.01, "not distinguishable": 0.7}[acc_verdict]
    shape = (len(METRICS), 1)
    grid = (len(GEOMETRY), len(FIDELITY))
    within_grid = np.full(grid, 0.9)
    within_grid[GEOMETRY.index("head_effective_rank"), 1] = within_q
    link = {
        "link_partial_q_value": (("geometry", "fidelity"), np.full(grid, pooled_q)),
        "link_partial_spearman": (("geometry", "fidelity"), np.full(grid, 0.1)),
    }
    if within:
        link |= {
            "within_cell_partial_q_value": (("geometry", "fidelity"), within_grid),
            "within_cell_partial_spearman": (("geometry", "fidelity"), np.full(grid, 0.62)),
        }
    change = [[0.8, head_change, 0.0]]
    return xr.Dataset(
        {
            "contrasts_estimate": (("metric", "baseline"), np.full(shape, est)),
            "contrasts_ci_low": (("metric", "baseline"), np.full(shape, est - 0.01)),
            "contrasts_ci_high": (("metric", "baseline"), np.full(shape, est + 0.01)),
            "contrasts_q_value": (("metric", "baseline"), np.full(shape, q)),
            "contrasts_verdict": (("metric", "baseline"), np.full(shape, acc_verdict)),
            **link,
            "control_relative_change": (("control_run", "control_metric"), change),
            "control_invariant": (
                ("control_run", "control_metric"),
                np.nan_to_num(np.asarray(change), nan=1.0) < 1e-6,
            ),
        },
        coords={
            "metric": METRICS,
            "baseline": ["regular"],
            "geometry": GEOMETRY,
            "fidelity": FIDELITY,
            "control_run": ["regular-s0"],
            "control_metric": ["mean_abs_corr", "head_effective_rank", "accuracy"],
        },
        attrs={
            "design": json.dumps({"statistics": {"alpha": 0.05}}),
            # Computed from every run the planted design (DESIGN) plans.
            "run_configs": json.dumps({"regular-s0": {}, "saliencydecor-s0": {}}),
        },
    )


def _setting(tmp_path, name, results):
    out = tmp_path / "reports" / name
    out.mkdir(parents=True)
    results.to_netcdf(out / "results.nc", engine="h5netcdf")
    path = tmp_path / f"{name}.toml"
    path.write_text(DESIGN.format(name=name, out=out.as_posix()))
    return path


def _across(tmp_path, a: xr.Dataset, b: xr.Dataset):
    """The across-settings report of two planted settings; its index.html."""
    designs = [_setting(tmp_path, f"setting-{k}", r).as_posix() for k, r in (("a", a), ("b", b))]
    path = tmp_path / "across.toml"
    path.write_text(
        f'[across]\nname = "both"\ntitle = "both settings"\ndesigns = {json.dumps(designs)}\n'
        f'out = "{(tmp_path / "reports" / "both").as_posix()}"\n'
    )
    return run_across(load_across(path))


def test_the_across_table_reads_each_settings_verdicts_and_geometry(tmp_path):
    index = _across(tmp_path, _results("better", 0.01, 0.0), _results("worse", 0.01, 0.0))
    with xr.open_dataset(index.parent / "results.nc", engine="h5netcdf") as ds:
        settings = ["setting-a (digits, cnn2)", "setting-b (digits, cnn2)"]
        assert list(ds["setting"].values) == settings
        assert list(ds["verdict"].sel(claim="accuracy-regular").values) == ["better", "worse"]
        # A metric held only as variants gives one row per variant.
        assert "morf_auc-regular[morf_auc__integrated_gradients__zero]" in ds["claim"].values
        summary = json.loads(ds.attrs["summary"])
        assert any(
            s.startswith("SaliencyDecor is more accurate than regular") for s in summary["depends"]
        )
        assert (
            "SaliencyDecor is more accurate than regular: setting-a better; setting-b worse"
            in summary["depends"]
        )
        # The paper claims a better MoRF AUC; setting a says "better", so it is supported.
        assert not any("MoRF AUC" in s for s in summary["unsupported"])
        # Geometry: the head metric tracks insertion AUC within cells and passes the control
        # in both settings; mean |corr| tracks nothing and is moved.
        head = {"geometry": "head_effective_rank"}
        assert list(ds["geometry_within_tracked"].sel(head).values) == [1, 1]
        assert list(ds["geometry_pooled_tracked"].sel(head).values) == [0, 0]
        assert list(ds["geometry_control"].sel(head).values) == ["invariant", "invariant"]
        assert list(ds["geometry_control"].sel(geometry="mean_abs_corr").values) == ["moved"] * 2
        assert summary["tracks_within_everywhere"] == ["head_effective_rank"]
        assert summary["invariant_everywhere"] == ["head_effective_rank"]
        rho = ds["geometry_within_rho"].sel(head | {"setting": settings[0]})
        assert rho.sel(fidelity="insertion_auc__abs_gradient") == 0.62
        assert np.isnan(rho.sel(fidelity="morf_auc__abs_gradient__zero"))
    tables = (index.parent / "tables.md").read_text()
    assert (
        "| effective rank through the head | pooled 0/2, within cells 1/2 (insertion AUC (target "
        "probability) (\\|gradient\\|) +0.62); control: invariant |" in tables
    )
    assert (
        "Geometry the function-preserving control leaves unchanged in every setting:\n\n"
        "- effective rank through the head\n" in tables
    )
    # The claims the settings disagree on are one table: a row each, a column a setting.
    assert (
        "| depends on the setting | setting-a | setting-b |\n|---|---|---|\n"
        "| SaliencyDecor is more accurate than regular | better | worse |" in tables
    )
    assert "<ul><li>effective rank through the head</li></ul>" in index.read_text()


def test_a_claim_every_setting_contradicts_is_unsupported(tmp_path):
    index = _across(tmp_path, _results("worse", 0.9, 0.0), _results("worse", 0.9, 0.0))
    with xr.open_dataset(index.parent / "results.nc", engine="h5netcdf") as ds:
        summary = json.loads(ds.attrs["summary"])
    assert any(
        s.startswith("SaliencyDecor is more accurate than regular") for s in summary["holds"]
    )
    unsupported = summary["unsupported"]
    assert any(s.startswith("SaliencyDecor is more accurate than regular") for s in unsupported)
    # One entry per claim, whatever the saliency methods it was measured with.
    assert sum("MoRF AUC" in s for s in unsupported) == 1
    assert summary["tracks_within_everywhere"] == []


def test_a_metric_the_control_moves_in_one_setting_is_not_invariant_everywhere(tmp_path):
    index = _across(tmp_path, _results("better", 0.01, 0.0), _results("better", 0.9, 0.5))
    with xr.open_dataset(index.parent / "results.nc", engine="h5netcdf") as ds:
        summary = json.loads(ds.attrs["summary"])
        assert summary["invariant_everywhere"] == [] and summary["tracks_within_everywhere"] == []
        assert any(
            s.startswith("SaliencyDecor is more accurate than regular") for s in summary["holds"]
        )
        head = {"geometry": "head_effective_rank"}
        assert list(ds["geometry_within_tracked"].sel(head).values) == [1, 0]
        assert list(ds["geometry_control"].sel(head).values) == ["invariant", "moved"]


def test_each_table_keeps_its_own_count_and_a_missing_table_or_change_is_said(tmp_path):
    """Pooled and within-cell counts have their own denominators; a setting without a
    within-cell table says 'not measured'; a control change that is not a number is
    'undetermined', not 'moved'."""
    pooled_some = np.array([[0.01, np.nan], [0.01, 0.01]])  # mean |corr|: 1 finite pair
    a = _results("better", 0.01, np.nan, pooled_q=pooled_some)
    b = _results("better", 0.01, 0.0, within=False)
    index = _across(tmp_path, a, b)
    with xr.open_dataset(index.parent / "results.nc", engine="h5netcdf") as ds:
        corr = {"geometry": "mean_abs_corr"}
        assert list(ds["geometry_pooled_tracked"].sel(corr).values) == [1, 0]
        assert list(ds["geometry_pooled_pairs"].sel(corr).values) == [1, 2]
        assert list(ds["geometry_within_pairs"].sel(corr).values) == [2, -1]
        head = {"geometry": "head_effective_rank"}
        assert list(ds["geometry_control"].sel(head).values) == ["undetermined", "invariant"]
        assert json.loads(ds.attrs["summary"])["invariant_everywhere"] == []
    tables = (index.parent / "tables.md").read_text()
    assert (
        "| mean \\|corr\\| | pooled 1/1, within cells 0/2; control: moved | pooled 0/2, within cells not measured; control: moved |"
        in tables
    )
    assert "control: undetermined" in tables


def test_a_setting_whose_study_is_not_finished_is_listed_as_pending_not_compared(
    tmp_path, capsys, caplog
):
    """A design with no results yet, and one whose results.nc was computed from part of its
    plan, stay out of the tables and the summary; the report says how far each is and how to
    finish it. Only when no setting is whole is the comparison refused."""
    whole = _results("better", 0.01, 0.0)
    half = _results("worse", 0.01, 0.0)
    half.attrs["run_configs"] = json.dumps({"regular-s0": {}})
    paths = [_setting(tmp_path, "whole", whole), _setting(tmp_path, "half", half)]
    (tmp_path / "reports" / "half" / "runs").mkdir()
    (tmp_path / "reports" / "half" / "runs" / "regular-s0.nc").write_bytes(b"")
    fresh = tmp_path / "fresh.toml"  # designed, never run
    fresh.write_text(DESIGN.format(name="fresh", out=(tmp_path / "reports" / "fresh").as_posix()))
    path = tmp_path / "across.toml"
    designs = [p.as_posix() for p in (*paths, fresh)]
    path.write_text(
        f'[across]\nname = "all"\ndesigns = {json.dumps(designs)}\n'
        f'out = "{(tmp_path / "reports" / "all").as_posix()}"\n'
    )
    index = run_across(load_across(path))
    with xr.open_dataset(index.parent / "results.nc", engine="h5netcdf") as ds:
        assert list(ds["setting"].values) == ["whole (digits, cnn2)"]
        pending = json.loads(ds.attrs["pending"])
        assert pending["half (digits, cnn2)"]["analysed"] == 1
        assert pending["half (digits, cnn2)"]["planned"] == 2
        assert pending["fresh (digits, cnn2)"]["analysed"] == 0
        summary = json.loads(ds.attrs["summary"])
        # The half study's "worse" does not make accuracy depend on the setting.
        assert any(s.startswith("SaliencyDecor is more accurate") for s in summary["holds"])
    tables = (index.parent / "tables.md").read_text()
    assert "Not in these tables yet (2 of 3 settings)" in tables
    assert "half (digits, cnn2): 1 of 2 runs analysed" in tables
    assert f"`geomxai study {fresh.as_posix()} --stage runs`" in tables
    assert '"Every setting" below means the 1 settings in the tables' in tables

    # --plan says the same without writing; a stage, seeds or overrides are refused.
    assert main(["study", str(path), "--plan"]) == 0
    out = capsys.readouterr().out
    lines = {line.split(" (")[0].strip(): line for line in out.splitlines()[1:-1]}
    assert lines["whole"].endswith("in the tables")  # its results cover the plan
    assert "1/2 runs analysed  pending: finish it with" in lines["half"]
    assert "0/2 runs analysed  pending" in lines["fresh"]
    assert out.strip().endswith("1 in the tables, 2 pending")
    for refused in (["--stage", "runs"], ["--seeds", "0"], ["--set", "epochs=2"], ["--runs", "r"]):
        assert main(["study", str(path), *refused]) == 2
        assert "compares studies already run" in caplog.text and refused[0] in caplog.text
        caplog.clear()
    assert main(["study", str(path), "--stage", "report"]) == 0

    path.write_text(path.read_text().replace(paths[0].as_posix(), fresh.as_posix(), 1))
    with pytest.raises(FileNotFoundError, match="no setting of this comparison has the results"):
        run_across(load_across(path))


def _with_runs(results: xr.Dataset, sd_acc: float) -> xr.Dataset:
    """``results`` with its two runs' test accuracy (regular 0.8, saliencydecor ``sd_acc``)."""
    runs = xr.Dataset(
        {"test_acc": ("run", [0.8, sd_acc])},
        coords={
            "run": ["regular-s0", "saliencydecor-s0"],
            "cell": ("run", ["regular", "saliencydecor"]),
            "seed": ("run", [0, 0]),
        },
    )
    return results.merge(runs, combine_attrs="override")


def test_cells_that_are_one_computation_in_a_setting_are_named_beside_its_columns(tmp_path):
    same = _with_runs(_results("not distinguishable", 0.5, 0.0), 0.8)
    index = _across(tmp_path, same, _with_runs(_results("better", 0.5, 0.0), 0.85))
    with xr.open_dataset(index.parent / "results.nc", engine="h5netcdf") as ds:
        sources = json.loads(ds.attrs["sources"])
    assert sources["setting-a (digits, cnn2)"]["same_computation"] == [["regular", "saliencydecor"]]
    assert sources["setting-b (digits, cnn2)"]["same_computation"] == []
    tables = (index.parent / "tables.md").read_text()
    assert "them apart): setting-a (digits, cnn2): regular = saliencydecor. These" in tables
    assert "setting-b (digits, cnn2): regular" not in tables


def test_each_committed_setting_in_the_tables_is_the_statistics_of_all_its_committed_runs(
    monkeypatch,
):
    # What a fresh clone's `geomxai study across-settings` compares: a setting enters only
    # when its results.nc covers every planned run, and then every one of those runs has its
    # per-run file committed beside it, so `--stage report` rebuilds it without training.
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    status = across_status(load_across(root / "configs" / "across-settings.toml"))
    whole = [s for s in status if s["whole"]]
    assert len(whole) >= 5, [s["setting"] for s in status]
    for s in whole:
        assert (s["analysed"], s["next"]) == (s["planned"], ""), s
