"""`make lab` starts JupyterLab for root too (issue 26): --allow-root is added for uid 0 only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lab_command(user_id: int) -> str:
    # -n prints the recipe without running it; STAMP=Makefile: a file that exists, so the
    # install rule is not part of the plan.
    out = subprocess.run(
        ["make", "-n", "-s", "lab", f"USER_ID={user_id}", "STAMP=Makefile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return next(line for line in out.splitlines() if "jupyter lab" in line)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_lab_allows_root_only_for_root():
    assert _lab_command(0).split()[-1] == "--allow-root"
    assert "--allow-root" not in _lab_command(1000)
