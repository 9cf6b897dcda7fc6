"""``scripts/gpu_check.sh --dry-run``: every part of the GPU check runs its CPU version and writes
its JSON, so the one call a lent GPU gets is not spent finding a typo.

About a minute on idle cores (six Python processes, each importing torch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run(*args: str, out: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    return subprocess.run(
        ["bash", str(SCRIPT), *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    res = _run("--dry-run", out=out)
    return res, out


def test_the_dry_run_finishes_every_part(dry_run):
    res, out = dry_run
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["dry_run"] is True
    parts = {p["part"]: p for p in summary["parts"]}
    assert set(parts) == {"install", "pytest", "bench_cnn2", "bench_resnet18", "runs", "profile"}
    assert all(p["rc"] == 0 and p["timed_out"] is False for p in parts.values()), parts
    for key in ("date", "python", "hardware"):
        assert summary[key]
    assert summary["hardware"]["torch"]
    # The GPU tests are selected (collected only, on the CPU).
    assert summary["pytest_gpu"]["collected"] >= 10


def test_the_dry_run_writes_the_step_figures_with_the_machine(dry_run):
    _, out = dry_run
    bench = json.loads((out / "train_step_cpu_dryrun.json").read_text())
    for key in ("date", "hardware", "torch", "device", "threads"):
        assert bench[key], key
    assert set(bench["models"]) == {"cnn2_28", "resnet18_32"}
    cnn2 = bench["models"]["cnn2_28"]
    assert set(cnn2["regimes"]) == {
        "regular",
        "dbn",
        "sgt",
        "sgt_detached",
        "saliencydecor",
        "saliencydecor_detached",
    }
    assert cnn2["regimes"]["regular"]["ratio_to_regular"] == 1.0
    assert cnn2["masking_gradient_from"]["sgt"] == "clean_forward"  # cnn2 is mode-free
    assert cnn2["masking_gradient_from"]["saliencydecor"] == "eval_forward"
    resnet = bench["models"]["resnet18_32"]
    assert resnet["masking_gradient_from"]["sgt"] == "eval_forward"  # BatchNorm
    assert resnet["input"][0] == 2
    ratios = json.loads((out / "gpu_check.json").read_text())["step_ratios"]
    assert set(ratios["cnn2_28"]["met"]) == {"sgt", "sgt_detached", "whitening_over_sgt"}


def test_the_dry_run_resumes_each_regime_bitwise(dry_run):
    _, out = dry_run
    runs = json.loads((out / "gpu_check_runs_dryrun.json").read_text())
    assert runs["hardware"] and runs["date"] and runs["torch"]
    assert set(runs["runs"]) == {f"cnn2_{r}" for r in ("regular", "dbn", "sgt", "saliencydecor")}
    for name, run in runs["runs"].items():
        assert run["ok"], name
        assert run["resumed_vs_straight"]["bitwise_equal"], name
        assert run["straight"]["steps"] == run["resumed"]["steps"] == 8
        assert run["killed_before_step"] == 6  # in the middle of the second epoch
    assert not (out / "runs").exists()  # the run directories are cleaned up


def test_the_dry_run_writes_a_profile_summary(dry_run):
    _, out = dry_run
    prof = json.loads((out / "profile_cpu_dryrun.json").read_text())
    assert set(prof["regimes"]) == {"sgt", "saliencydecor"}
    assert prof["regimes"]["saliencydecor"]["top_operators"]
    assert (out / "profile_cpu_dryrun.txt").read_text().startswith("== cnn2_28 sgt")


def test_bad_arguments_are_refused_in_one_line(tmp_path):
    res = _run("--dry-run", "--budget-s", "soon", out=tmp_path, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "gpu_check.sh: --budget-s must be a whole number of seconds; got 'soon'"
    )
    res = _run("--dry-run", "--fast", out=tmp_path, timeout=60)
    assert res.returncode == 2 and "unknown option '--fast'" in res.stderr


def test_a_spent_budget_skips_the_parts_and_still_writes_the_summary(tmp_path):
    res = _run("--dry-run", "--budget-s", "0", out=tmp_path, timeout=120)
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res.returncode == 0, res.stderr
    assert summary["parts"] and all(p["skipped"] == "budget spent" for p in summary["parts"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal on a machine without CUDA")
def test_without_a_gpu_the_full_check_is_refused_with_the_fix(tmp_path):
    res = _run(out=tmp_path, timeout=120)
    assert res.returncode == 2
    assert "no CUDA device" in res.stderr and "--dry-run" in res.stderr
