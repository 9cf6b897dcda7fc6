"""The converged study's script end to end on tiny digits runs: every stage, resumable, and a
report rebuilt from the committed per-run results alone (no checkpoint)."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

SCRIPT = Path(__file__).resolve().parents[2] / "analyses" / "geometry_question.py"


def _command(stage, tmp_path):
    cmd = [sys.executable, str(SCRIPT), stage, "--smoke", "--dataset", "digits"]
    return cmd + ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]


def _run(stage, tmp_path):
    return subprocess.run(
        _command(stage, tmp_path), capture_output=True, text=True, timeout=900, check=True
    )


@pytest.mark.slow
def test_every_stage_runs_resumes_and_reports_without_checkpoints(tmp_path):
    # Two `runs` processes share the plan: each run is trained and analysed once.
    workers = [
        subprocess.Popen(_command("runs", tmp_path), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    logs = [w.communicate(timeout=900)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    trained = [
        line.split()[-1] for log in logs for line in log.splitlines() if " training " in line
    ]
    assert sorted(trained) == sorted(set(trained)) and len(trained) == 16  # each once
    _run("all", tmp_path)  # finds everything done and builds the report
    out = tmp_path / "out"
    per_run = sorted((out / "runs").glob("*.nc"))
    assert len(per_run) == 16  # 8 cells x 2 seeds
    assert len(list((out / "runs").glob("*.metrics.jsonl"))) == 16
    with xr.open_dataset(per_run[0]) as ds:
        assert "control_invariant" in ds and "epoch" in ds["test_acc"].dims
        assert "probe_saliency" not in ds and "top_eigvecs" not in ds  # kept small
    # Resumable: a second analyse does nothing, it only finds the per-run files.
    stamps = {p: p.stat().st_mtime_ns for p in per_run}
    _run("analyse", tmp_path)
    assert {p: p.stat().st_mtime_ns for p in per_run} == stamps
    # The report needs only the per-run results.
    shutil.rmtree(tmp_path / "runs")
    (out / "index.html").unlink()
    _run("report", tmp_path)
    html = (out / "index.html").read_text()
    for heading in (
        "Verdict",
        "2x2 factorial",
        "Dose-response",
        "reparametrisation control",
        "Power",
    ):
        assert heading in html
    tables = (out / "tables.md").read_text()
    assert "| regular | 2 | 2 |" in tables  # runs analysed per cell
    with xr.open_dataset(out / "results.nc") as results:
        assert {"factorial_estimate", "link_partial_spearman", "dose_slope"} <= set(results)
        assert json.loads(results.attrs["wall_time"])["training_s"] > 0
        assert results.attrs["commit"] and results.attrs["hardware"]


def _script(name="geometry_question"):
    """A module of analyses/ (which imports its siblings by their bare names)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPT.parent))


def test_a_claimed_run_is_refused_to_a_second_claimant_until_released(tmp_path):
    script = _script()
    args = script.parse_args(["runs", "--runs", str(tmp_path)])
    with script.claimed(args, "regular-s0") as first:
        with script.claimed(args, "regular-s0") as second, script.claimed(args, "sgt-s0") as other:
            assert (first, second, other) == (True, False, True)
    with script.claimed(args, "regular-s0") as again:
        assert again


def test_the_committed_per_run_results_are_not_git_ignored():
    # The per-run results are what a fresh machine resumes from; an ignore pattern matching
    # them once kept a whole sitting's runs out of the repository.
    root = SCRIPT.parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    target = "reports/fashion-mnist-converged/runs/regular-s0.nc"
    ignored = subprocess.run(["git", "check-ignore", "-q", target], cwd=root)
    assert ignored.returncode == 1, f"{target} is git-ignored"


def test_the_report_lists_the_protocol_trials_by_length(tmp_path):
    protocol_trials = _script("_question_report").protocol_trials
    folder = tmp_path / "protocol"
    folder.mkdir()
    for name, accs in {"regular-lr0.05-wd0-e3": [0.8, 0.86, 0.85], "a-e2": [0.7, 0.75]}.items():
        records = [{"epoch": e, "test_acc": a, "seconds": 1.0} for e, a in enumerate(accs, 1)]
        (folder / f"{name}.metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in records)
        )
    assert protocol_trials(folder) == [
        ("a-e2", 2, 0.75, 0.75),
        ("regular-lr0.05-wd0-e3", 3, 0.85, 0.86),
    ]
