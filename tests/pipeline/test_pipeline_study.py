"""The engine end to end: a tiny design trains, analyses, reports, resumes; the converged study's
report is rebuilt from its committed per-run files with every estimate as before."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from geomxai.cli import main
from geomxai.pipeline import SCHEMA_VERSION, load_design, run_design
from geomxai.report import ResultsVersionError, build_study_report

ROOT = Path(__file__).resolve().parents[2]

TINY = """
[study]
name = "tiny-digits"
title = "A tiny digits study"
seeds = [0, 1, 2]

[train]
dataset = "digits"
model = "cnn2"
epochs = 2
train_subset = 240
test_subset = 120
batch_size = 40
lr = 0.05
device = "cpu"

[[cells]]
name = "regular"
regime = "regular"

[[cells]]
name = "sgt"
regime = "sgt"

[[cells]]
name = "dbn"
regime = "dbn"

[[cells]]
name = "saliencydecor"
regime = "saliencydecor"

[[cells]]
name = "sd-lambda0"
regime = "saliencydecor"
decor_weight = 0.0

[analysis]
probe_size = 64
fractions = 4
top_k = 4
n_examples = 2
checkpoints = "spread"
keep = "final"
control = true

[statistics]
treatment = "saliencydecor"
baselines = ["regular", "sgt", "dbn"]
fidelity = ["morf_auc", "fidelity_gap", "gini"]
geometry = ["effective_rank", "mean_abs_corr"]

[statistics.factorial]
regular = "regular"
sgt = "sgt"
dbn = "dbn"
saliencydecor = "saliencydecor"

[[statistics.dose]]
field = "decor_weight"
cells = ["sd-lambda0", "saliencydecor"]

[statistics.link]
n_boot = 200

[statistics.power]
contrasts = ["saliencydecor-regular", "interaction"]
metrics = ["test_acc"]
"""


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    path = root / "tiny.toml"
    path.write_text(TINY)
    rc = main(["study", str(path), "--runs", str(root / "runs"), "--reports", str(root / "out")])
    assert rc == 0
    return root, path


@pytest.mark.slow  # trains and analyses 15 tiny runs
def test_one_command_runs_a_design_end_to_end(tiny_study):
    root, _ = tiny_study
    out = root / "out" / "tiny-digits"
    assert sorted(p.name for p in (out / "runs").glob("*.nc")) == sorted(
        f"{c}-s{s}.nc"
        for c in ("regular", "sgt", "dbn", "saliencydecor", "sd-lambda0")
        for s in (0, 1, 2)
    )
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        # Results carry their design: per-run coords, configs and the design as JSON.
        assert ds.attrs["schema_version"] == SCHEMA_VERSION
        assert ds["cell"].dims == ("run",) and ds["regime"].dims == ("run",)
        assert ds["decor_weight"].dims == ("run",)
        acc = ds["test_acc"].groupby("cell").mean()
        assert set(acc["cell"].values) == {"regular", "sgt", "dbn", "saliencydecor", "sd-lambda0"}
        configs = json.loads(ds.attrs["run_configs"])
        assert configs["sd-lambda0-s2"]["decor_weight"] == 0.0 and configs["dbn-s1"]["seed"] == 1
        assert {c["train_subset"] for c in configs.values()} == {240}
        assert json.loads(ds.attrs["design"])["name"] == "tiny-digits"
        # Every family states its correction and calls by it.
        assert "Benjamini-Hochberg" in ds.attrs["contrasts_correction"]
        assert ds["contrasts_verdict"].dims == ("metric", "baseline")
        assert ds["factorial_q_value"].dims == ("metric", "effect")
        assert "within_cell_spearman" in ds and "control_invariant" in ds
        # The convergence summary is the statistics stage's, per cell, never the report's.
        cells = ["regular", "sgt", "dbn", "saliencydecor", "sd-lambda0"]
        assert sorted(ds["flat_cell"].values) == sorted(cells)
        assert ds["curve_final_n"].values.tolist() == [3] * 5
        assert set(ds["flat_from"].values) <= set(ds["train_epoch"].values)
        regular = ds["curve_test_acc"].where(ds["cell"] == "regular", drop=True)
        assert float(ds["curve_final_mean"].sel(flat_cell="regular")) == pytest.approx(
            float(regular.isel(train_epoch=-1).mean())
        )
    page = (out / "index.html").read_text()
    tables = (out / "tables.md").read_text()
    # The setting is generated from the design and the runs: digits, its true counts, cnn2.
    assert "Data: digits; 240 training images" in tables and "120 test images" in tables
    assert "Model: cnn2; 2 epochs" in tables
    assert "Fashion-MNIST" not in page and "10,000" not in page
    assert "A tiny digits study" in page
    # Every convergence row has its numbers; every link table names its correction.
    assert re.search(r"\| regular \| 3 \| \d+\.\d\d \| [\d.]+-[\d.]+ \| \d \|", tables)
    assert tables.count("Correction: Benjamini-Hochberg (false discovery rate) over the grid") == 2


@pytest.mark.slow
def test_a_second_run_does_nothing_and_the_report_stage_needs_no_checkpoint(tiny_study):
    root, path = tiny_study
    out = root / "out" / "tiny-digits"
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.nc")}
    shutil.rmtree(root / "runs")  # checkpoints gone: the per-run files are enough
    design = load_design(path, runs_dir=root / "runs", out_dir=out)
    run_design(design, stages=("train", "analyse"))
    assert not (root / "runs").exists() or not any((root / "runs").rglob("*.pt"))
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.nc")} == before
    (out / "index.html").unlink()
    index = run_design(design, stages=("report",))
    assert index == out / "index.html" and index.is_file()


@pytest.mark.slow
def test_the_report_stage_rebuilds_the_statistics_of_another_set_of_runs(tiny_study, tmp_path):
    # As after pulling a study's newer per-run results: `--stage report` alone must not
    # render the statistics of the runs results.nc was computed from.
    root, path = tiny_study
    out = tmp_path / "tiny-digits"
    shutil.copytree(root / "out" / "tiny-digits", out)
    design = load_design(path, runs_dir=root / "runs", out_dir=out)
    written = (out / "results.nc").stat().st_mtime_ns
    run_design(design, stages=("report",))
    assert (out / "results.nc").stat().st_mtime_ns == written  # the same runs: re-rendered only
    (out / "runs" / "sgt-s2.nc").unlink()
    run_design(design, stages=("report",))
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        assert len(json.loads(ds.attrs["run_configs"])) == 14
        assert "sgt-s2" not in json.loads(ds.attrs["run_configs"])


@pytest.mark.slow
def test_the_plan_says_where_each_run_stands_and_runs_nothing(tiny_study, tmp_path, capsys, caplog):
    root, path = tiny_study
    done = ["study", str(path), "--runs", str(root / "runs"), "--reports", str(root / "out")]
    assert main([*done, "--plan"]) == 0
    out = capsys.readouterr().out
    assert "tiny-digits" in out and out.strip().endswith("15 analysed")
    fresh = ["study", str(path), "--runs", str(tmp_path / "r"), "--reports", str(tmp_path / "o")]
    assert main([*fresh, "--plan", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "sd-lambda0-s1" in out and "sgt-s0" not in out
    assert out.strip().endswith("5 to do")
    assert not any(tmp_path.iterdir())  # nothing trained, claimed or written
    assert main([*fresh, "--plan", "--seeds", "7"]) == 2  # as the run itself would refuse
    assert "--seeds must be seeds of the design ([0, 1, 2]); got [7]" in caplog.text


@pytest.mark.slow
def test_a_report_of_older_results_names_the_layout_and_the_fix(tiny_study, tmp_path):
    root, _ = tiny_study
    with xr.open_dataset(root / "out" / "tiny-digits" / "results.nc", engine="h5netcdf") as ds:
        old = ds.load()
    old.attrs["schema_version"] = 1
    with pytest.raises(ResultsVersionError, match="layout 1.*--stage statistics"):
        build_study_report(old, tmp_path / "r")
    # Results of this layout written before the convergence summary: the section says how to
    # compute it, and shows no empty table or plot.
    old.attrs["schema_version"] = SCHEMA_VERSION
    summary = [v for v in old.data_vars if v.startswith("curve_") and v != "curve_test_acc"]
    build_study_report(old.drop_vars([*summary, "flat_from"]), tmp_path / "r2")
    section = (tmp_path / "r2" / "tables.md").read_text().split("## Convergence")[1]
    section = section.split("\n## ")[0]
    assert "predate the convergence summary" in section and "--stage statistics" in section
    assert "flat from epoch" not in section and "learning_curves" not in section


def test_a_claimed_run_is_skipped_by_a_second_process(tmp_path):
    from geomxai.rundir import DirectoryLock

    claim_file = ".geomxai.claim"  # a run's claim, as docs/study.md names it
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.replace("seeds = [0, 1, 2]", "seeds = [0]"))
    design = load_design(path, runs_dir=tmp_path / "runs", out_dir=tmp_path / "out")
    held = []
    for cell in design.cells:
        lock = DirectoryLock(tmp_path / "runs" / f"{cell.name}-s0", lock_name=claim_file)
        held.append(lock.acquire())
    try:
        run_design(design, stages=["train"])  # every run is held by "another process"
    finally:
        for lock in held:
            lock.release()
    assert not list((tmp_path / "runs").rglob("*.pt"))


def _committed_per_run_files_present() -> bool:
    return len(list((ROOT / "reports" / "fashion-mnist-converged" / "runs").glob("*.nc"))) == 40


@pytest.mark.slow  # reads 40 per-run files and bootstraps the link
@pytest.mark.skipif(not _committed_per_run_files_present(), reason="the committed per-run files")
def test_the_converged_report_is_rebuilt_with_every_estimate_as_before(tmp_path):
    """The engine's statistics of the committed per-run files equal those of the study's own
    script before the engine (tests/pipeline/data/converged-before-engine.nc): only the verdict
    words change, where the correction demands."""
    out = tmp_path / "fashion-mnist-converged"
    shutil.copytree(ROOT / "reports" / "fashion-mnist-converged" / "runs", out / "runs")
    shutil.copytree(ROOT / "reports" / "fashion-mnist-converged" / "protocol", out / "protocol")
    design = load_design(ROOT / "configs" / "fashion-mnist-converged.toml", out_dir=out)
    index = run_design(design, stages=("statistics", "report"))
    before = xr.open_dataset(
        ROOT / "tests" / "pipeline" / "data" / "converged-before-engine.nc", engine="h5netcdf"
    ).load()
    after = xr.open_dataset(out / "results.nc", engine="h5netcdf").load()
    # Entanglement of these runs was taken over every unit, dead ones included: the engine
    # names it so (entanglement_all_units), where the script called it entanglement.
    for coord in ("metric", "geometry", "control_metric"):
        if coord in before.coords:
            before = before.assign_coords(
                {
                    coord: [
                        ("entanglement_all_units" if str(m) == "entanglement" else str(m))
                        for m in before[coord].values
                    ]
                }
            )
    if "entanglement" in before.data_vars:
        before = before.rename({"entanglement": "entanglement_all_units"})
    renamed = {
        "factorial_": {"regime": "factorial_cell"},
        "control_": {"run": "control_run", "metric": "control_metric"},
    }
    compared = 0
    for name in before.data_vars:
        if (
            name.startswith("power_stated")
            or name.startswith("power_power_at")
            or name.startswith("power_seeds_needed")
        ):
            continue  # the stated differences are now typed into the design (equal to 1e-16)
        old = before[name]
        for prefix, dims in renamed.items():
            if name.startswith(prefix):
                old = old.rename({k: v for k, v in dims.items() if k in old.dims})
        assert name in after, name
        old, new = xr.align(old, after[name], join="inner")
        np.testing.assert_array_equal(
            np.asarray(old.values, float), np.asarray(new.values, float), err_msg=name
        )
        compared += 1
    assert compared > 60
    # The three calls the correction takes back, and the report says which.
    verdict = after["contrasts_verdict"]
    for metric, baseline in (
        ("test_acc", "dbn"),
        ("fidelity_gap", "sgt"),
        ("topq_contrast", "sgt"),
    ):
        assert (
            str(verdict.sel(metric=metric, baseline=baseline).values)
            == "not distinguishable after correction"
        )
    assert str(verdict.sel(metric="morf_auc", baseline="regular").values) == "worse"
    tables = (out / "tables.md").read_text()
    assert (
        "Calls the correction changed" in tables and "contrasts test_acc, dbn (q 0.056)" in tables
    )
    assert (
        "Data: fashion-mnist; 60,000 training images" in tables
        or "training images (count" in tables
    )
    # How far regular ends below the plateau the protocol trials measured (89.73%, lr 0.05 over
    # 15 epochs; regular's mean over seeds is read from the same table).
    final = float(re.search(r"\| regular \| 5 \| (\d+\.\d+) \| \d", tables).group(1))
    assert (
        f"`regular` ends at {final:.2f}% (mean over seeds), {89.73 - final:.2f} points below the "
        "best trial's final 89.73% (regular-lr0.05-wd0-e15)" in tables
    )
    assert index.is_file()


def test_the_committed_per_run_results_are_not_git_ignored():
    # The per-run results are what a fresh machine resumes from; an ignore pattern matching
    # them once kept a whole sitting's runs out of the repository.
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for target in (
        "reports/fashion-mnist-converged/runs/regular-s0.nc",
        "reports/digits/runs/regular-s0.nc",
    ):
        ignored = subprocess.run(["git", "check-ignore", "-q", target], cwd=ROOT)
        assert ignored.returncode == 1, f"{target} is git-ignored"
