"""The converged study's script end to end on tiny digits runs: every stage, resumable, and a
report rebuilt from the committed per-run results alone (no checkpoint)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

SCRIPT = Path(__file__).resolve().parents[2] / "analyses" / "geometry_question.py"


def _run(stage, tmp_path):
    cmd = [sys.executable, str(SCRIPT), stage, "--smoke", "--dataset", "digits"]
    cmd += ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True)


@pytest.mark.slow
def test_every_stage_runs_resumes_and_reports_without_checkpoints(tmp_path):
    _run("all", tmp_path)
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
